/**
 * One seeded generator for everything in clipq that must repeat itself: builder weights, data
 * augmentation, calibration sampling and tests.
 *
 * @module
 */

/**
 * Seeded uniform numbers in [0, 1) (mulberry32: small, fast, well distributed over 32 bits).
 *
 * @param seed Any number; its low 32 bits pick the sequence.
 * @returns A function returning the next number of the sequence.
 *
 * @example The same seed gives the same sequence
 * ```ts
 * import { mulberry32 } from "@clipq/onnx/random";
 * import assert from "node:assert/strict";
 * const a = mulberry32(7), b = mulberry32(7);
 * const first = a();
 * assert.equal(first, b());
 * assert.ok(first >= 0 && first < 1);
 * assert.notEqual(mulberry32(8)(), first);
 * ```
 */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
