// Helpers shared by the tests: known orthogonal matrices and orthonormality checks.
import { gaussianArray } from "./random.ts";

/** A random n×n orthogonal matrix: the product of n Householder reflections. */
export function orthogonal(n: number, seed: number): Float64Array {
  const q = new Float64Array(n * n);
  for (let i = 0; i < n; i++) q[i * n + i] = 1;
  const g = gaussianArray(n * n, seed);
  for (let r = 0; r < n; r++) {
    const v = g.subarray(r * n, r * n + n);
    let vv = 0;
    for (const x of v) vv += x * x;
    // Q ← Q·(I − 2vvᵀ/vᵀv)
    for (let i = 0; i < n; i++) {
      let dot = 0;
      for (let j = 0; j < n; j++) dot += q[i * n + j]! * v[j]!;
      const f = 2 * dot / vv;
      for (let j = 0; j < n; j++) q[i * n + j]! -= f * v[j]!;
    }
  }
  return q;
}

/** max |XᵀX − I| over the k columns of a rows×k row-major matrix. */
export function orthonormalityError(x: ArrayLike<number>, rows: number, k: number): number {
  let worst = 0;
  for (let a = 0; a < k; a++) {
    for (let b = a; b < k; b++) {
      let dot = 0;
      for (let i = 0; i < rows; i++) dot += x[i * k + a]! * x[i * k + b]!;
      worst = Math.max(worst, Math.abs(dot - (a === b ? 1 : 0)));
    }
  }
  return worst;
}
