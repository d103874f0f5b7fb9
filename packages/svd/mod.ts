/**
 * @clipq/svd (in progress).
 *
 * @module
 */
export {};
