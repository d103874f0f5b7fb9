/**
 * @clipq/detect (in progress).
 *
 * @module
 */
export {};
