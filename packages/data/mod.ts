/**
 * @clipq/data (in progress).
 *
 * @module
 */
export {};
