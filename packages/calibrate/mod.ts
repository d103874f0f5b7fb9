/**
 * @clipq/calibrate (in progress).
 *
 * @module
 */
export {};
