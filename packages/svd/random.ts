/**
 * Seeded random numbers: the same seed gives the same draws on every platform, so the same
 * compression config gives the same bytes.
 *
 * @module
 */

/**
 * A seeded generator of standard normal draws (xoshiro128** state seeded by splitmix32, Box–Muller).
 *
 * @param seed Any integer.
 * @returns A function returning the next N(0, 1) draw.
 *
 * @example Same seed, same draws
 * ```ts
 * import { gaussian } from "@clipq/svd/random";
 * import assert from "node:assert/strict";
 * const a = gaussian(7), b = gaussian(7);
 * assert.equal(a(), b());
 * ```
 */
export function gaussian(seed: number): () => number {
  let x = seed | 0;
  const split = () => {
    x = (x + 0x9e3779b9) | 0;
    let z = x;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
  let s0 = split(), s1 = split(), s2 = split(), s3 = split();
  if ((s0 | s1 | s2 | s3) === 0) s0 = 1;
  const next = () => {
    const r = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = s1 << 9;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = rotl(s3, 11);
    return r;
  };
  let spare: number | undefined;
  return () => {
    if (spare !== undefined) {
      const v = spare;
      spare = undefined;
      return v;
    }
    // (0, 1] so the logarithm is finite.
    const u1 = (next() + 1) / 4294967296;
    const u2 = next() / 4294967296;
    const r = Math.sqrt(-2 * Math.log(u1));
    spare = r * Math.sin(2 * Math.PI * u2);
    return r * Math.cos(2 * Math.PI * u2);
  };
}

function rotl(v: number, k: number): number {
  return (v << k) | (v >>> (32 - k));
}

/**
 * A Float32Array of seeded standard normal draws.
 *
 * @param length Number of draws.
 * @param seed Any integer.
 * @returns The draws.
 *
 * @example Usage
 * ```ts
 * import { gaussianArray } from "@clipq/svd/random";
 * import assert from "node:assert/strict";
 * assert.deepEqual(gaussianArray(4, 1), gaussianArray(4, 1));
 * ```
 */
export function gaussianArray(length: number, seed: number): Float32Array {
  const g = gaussian(seed);
  const out = new Float32Array(length);
  for (let i = 0; i < length; i++) out[i] = g();
  return out;
}
