/**
 * @clipq/quantize (in progress).
 *
 * @module
 */
export {};
