/**
 * Matrix multiplication for the SVD: the injectable backend type and the pure TypeScript default
 * (cache-blocked, float64 accumulation), plus a blocked transpose.
 *
 * @module
 */

/**
 * Row-major C = A·B with A m×k and B k×n, returned as a new m×n Float32Array. The SVD does all its
 * heavy work through this function, so a native backend (onnxruntime's MatMul, a GPU) can be passed
 * in while the package itself stays pure TypeScript.
 */
export type MatMulBackend = (
  a: Float32Array,
  b: Float32Array,
  m: number,
  k: number,
  n: number,
) => Promise<Float32Array>;

// Blocks sized so a B panel (KB×NB float32 = 128 KiB) stays in L2 while rows of A stream past it.
const KB = 128;
const NB = 256;

function checkShapes(a: ArrayLike<number>, b: ArrayLike<number>, m: number, k: number, n: number) {
  for (const [name, v] of [["m", m], ["k", k], ["n", n]] as const) {
    if (!Number.isInteger(v) || v < 0) {
      throw new RangeError(`Expected ${name} to be an integer ≥ 0 but found ${v}`);
    }
  }
  if (a.length !== m * k || b.length !== k * n) {
    throw new RangeError(
      `Expected A of ${m}×${k} = ${m * k} and B of ${k}×${n} = ${
        k * n
      } elements but found ${a.length} and ${b.length}`,
    );
  }
}

/**
 * Synchronous cache-blocked matrix product in pure TypeScript, accumulating in float64.
 *
 * @param a A, m×k row-major.
 * @param b B, k×n row-major.
 * @param m Rows of A.
 * @param k Columns of A = rows of B.
 * @param n Columns of B.
 * @returns C = A·B, m×n row-major float64.
 *
 * @example Multiply 2×2 matrices
 * ```ts
 * import { matmulSync } from "@clipq/svd/matmul";
 * import assert from "node:assert/strict";
 * const c = matmulSync(new Float64Array([1, 2, 3, 4]), new Float64Array([5, 6, 7, 8]), 2, 2, 2);
 * assert.deepEqual([...c], [19, 22, 43, 50]);
 * ```
 */
export function matmulSync(
  a: Float32Array | Float64Array,
  b: Float32Array | Float64Array,
  m: number,
  k: number,
  n: number,
): Float64Array {
  checkShapes(a, b, m, k, n);
  const c = new Float64Array(m * n);
  for (let p0 = 0; p0 < k; p0 += KB) {
    const p1 = Math.min(k, p0 + KB);
    for (let j0 = 0; j0 < n; j0 += NB) {
      const j1 = Math.min(n, j0 + NB);
      for (let i = 0; i < m; i++) {
        const ci = i * n;
        const ai = i * k;
        for (let p = p0; p < p1; p++) {
          const av = a[ai + p]!;
          if (av === 0) continue;
          const bp = p * n;
          for (let j = j0; j < j1; j++) c[ci + j]! += av * b[bp + j]!;
        }
      }
    }
  }
  return c;
}

/**
 * The default backend: {@linkcode matmulSync} rounded to float32. Pure TypeScript, so it runs in
 * a browser; about 1–2 GFLOP/s, fine for layers up to a few million weights.
 *
 * @param a A, m×k row-major.
 * @param b B, k×n row-major.
 * @param m Rows of A.
 * @param k Columns of A = rows of B.
 * @param n Columns of B.
 * @returns C = A·B, m×n row-major.
 *
 * @example Multiply by the identity
 * ```ts
 * import { jsMatMul } from "@clipq/svd/matmul";
 * import assert from "node:assert/strict";
 * const c = await jsMatMul(new Float32Array([1, 2, 3, 4]), new Float32Array([1, 0, 0, 1]), 2, 2, 2);
 * assert.deepEqual([...c], [1, 2, 3, 4]);
 * ```
 */
export function jsMatMul(
  a: Float32Array,
  b: Float32Array,
  m: number,
  k: number,
  n: number,
): Promise<Float32Array> {
  return Promise.resolve(Float32Array.from(matmulSync(a, b, m, k, n)));
}

/**
 * Transposes a row-major rows×cols matrix (blocked, so both sides stay in cache).
 *
 * @param a The matrix.
 * @param rows Rows of `a`.
 * @param cols Columns of `a`.
 * @returns The cols×rows transpose, same array type.
 *
 * @example Transpose a 2×3 matrix
 * ```ts
 * import { transpose } from "@clipq/svd/matmul";
 * import assert from "node:assert/strict";
 * assert.deepEqual([...transpose(new Float32Array([1, 2, 3, 4, 5, 6]), 2, 3)], [1, 4, 2, 5, 3, 6]);
 * ```
 */
export function transpose<T extends Float32Array | Float64Array>(
  a: T,
  rows: number,
  cols: number,
): T {
  if (a.length !== rows * cols) {
    throw new RangeError(
      `Expected ${rows}×${cols} = ${rows * cols} elements but found ${a.length}`,
    );
  }
  const out = new (a.constructor as { new (n: number): T })(rows * cols);
  const B = 32;
  for (let i0 = 0; i0 < rows; i0 += B) {
    const i1 = Math.min(rows, i0 + B);
    for (let j0 = 0; j0 < cols; j0 += B) {
      const j1 = Math.min(cols, j0 + B);
      for (let i = i0; i < i1; i++) {
        const ai = i * cols;
        for (let j = j0; j < j1; j++) out[j * rows + i] = a[ai + j]!;
      }
    }
  }
  return out;
}
