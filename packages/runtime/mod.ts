/**
 * @clipq/runtime (in progress).
 *
 * @module
 */
export {};
