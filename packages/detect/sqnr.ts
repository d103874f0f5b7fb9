/**
 * Signal-to-quantization-noise ratio between a reference tensor and its quantized counterpart.
 *
 * @module
 */

/**
 * SQNR in dB: `10 · log10(Σ ref² / Σ (ref − test)²)`. Identical inputs give `Infinity`; a zero
 * reference with any error gives `-Infinity`.
 *
 * @param reference The float model's values.
 * @param test The quantized model's values, same length.
 * @returns SQNR in decibels.
 * @throws {RangeError} When the lengths differ.
 *
 * @example Noise at a tenth of the signal amplitude is 20 dB
 * ```ts
 * import { sqnr } from "@clipq/detect/sqnr";
 * import assert from "node:assert/strict";
 * assert.equal(sqnr(new Float32Array([1, -1]), new Float32Array([1.25, -0.75])), 20 * Math.log10(4));
 * assert.equal(sqnr(new Float32Array([3]), new Float32Array([3])), Infinity);
 * ```
 */
export function sqnr(reference: ArrayLike<number>, test: ArrayLike<number>): number {
  if (reference.length !== test.length) {
    throw new RangeError(
      `Expected tensors of equal length but found ${reference.length} and ${test.length}`,
    );
  }
  let signal = 0, noise = 0;
  for (let i = 0; i < reference.length; i++) {
    const r = reference[i]!, e = r - test[i]!;
    signal += r * r;
    noise += e * e;
  }
  if (noise === 0) return Infinity;
  return 10 * Math.log10(signal / noise);
}
