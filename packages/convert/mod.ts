/**
 * @clipq/convert (in progress).
 *
 * @module
 */
export {};
