/**
 * @clipq/pipeline (in progress).
 *
 * @module
 */
export {};
