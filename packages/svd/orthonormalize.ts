/**
 * Orthonormalization of tall matrices through a matrix-multiply backend: shifted CholeskyQR
 * followed by two CholeskyQR passes (CholeskyQR3). All O(rows·cols²) work is matrix products the
 * backend does; only the cols×cols Cholesky factor and its inverse are computed here, in float64.
 *
 * @module
 */
import { jsMatMul, type MatMulBackend, transpose } from "./matmul.ts";

/** Options of {@linkcode orthonormalize}. */
export interface OrthonormalizeOptions {
  /** Matrix multiply backend; pure TypeScript by default. */
  matmul?: MatMulBackend;
  /**
   * Plain CholeskyQR passes after the shifted one. 2 gives columns orthonormal to float32
   * precision; 0 gives a well-conditioned basis of the same span, enough between power iterations.
   */
  passes?: number;
}

/** Defaults of {@linkcode OrthonormalizeOptions}. */
export const defaults = { passes: 2 } satisfies OrthonormalizeOptions;

/**
 * An orthonormal basis Q (rows×cols) of the column span of Y. Directions of Y below float32
 * resolution are noise either way; they come back as arbitrary unit directions orthogonal to the
 * rest, so Q always has `cols` orthonormal columns.
 *
 * @param y Y, rows×cols row-major, rows ≥ cols.
 * @param shape [rows, cols].
 * @param options Backend and passes.
 * @returns Q, rows×cols row-major.
 *
 * @example Orthonormalize two columns
 * ```ts
 * import { orthonormalize } from "@clipq/svd/orthonormalize";
 * import assert from "node:assert/strict";
 * const q = await orthonormalize(new Float32Array([3, 1, 4, 1, 0, 1]), [3, 2]);
 * const dot = q[0]! * q[1]! + q[2]! * q[3]! + q[4]! * q[5]!;
 * assert.ok(Math.abs(dot) < 1e-6);
 * assert.ok(Math.abs(q[0]! ** 2 + q[2]! ** 2 + q[4]! ** 2 - 1) < 1e-6);
 * ```
 */
export async function orthonormalize(
  y: Float32Array,
  shape: readonly [number, number],
  options: OrthonormalizeOptions = {},
): Promise<Float32Array> {
  const { matmul = jsMatMul, passes } = { ...defaults, ...options };
  const [rows, cols] = shape;
  if (y.length !== rows * cols) {
    throw new RangeError(
      `Expected ${rows}×${cols} = ${rows * cols} elements but found ${y.length}`,
    );
  }
  if (cols > rows) {
    throw new RangeError(`Expected rows ≥ cols but found ${rows}×${cols}`);
  }
  let q = await pass(y, rows, cols, matmul, true);
  for (let i = 0; i < passes; i++) q = await pass(q, rows, cols, matmul, false);
  return q;
}

async function pass(
  y: Float32Array,
  rows: number,
  cols: number,
  matmul: MatMulBackend,
  shifted: boolean,
): Promise<Float32Array> {
  let { g, dscale } = await scaledGram(y, rows, cols, matmul);
  let shift = shifted ? SHIFT : 0;
  if (shifted) {
    // A column whose part outside the span of the previous ones is below float32 resolution
    // carries no information: replace it with a pseudo-random one so Q keeps full column rank.
    const pivots = cholesky(g, cols, shift)?.pivots;
    const dependent = pivots
      ? [...pivots.keys()].filter((i) => pivots[i]! - shift < DEPENDENT)
      : [...dscale.keys()].filter((i) => dscale[i] === 0);
    if (dependent.length > 0) {
      y = y.slice();
      for (const j of dependent) {
        for (let i = 0; i < rows; i++) y[i * cols + j] = Math.sin(1 + i * 12.9898 + j * 78.233);
      }
      ({ g, dscale } = await scaledGram(y, rows, cols, matmul));
    }
  }
  for (let attempt = 0; attempt < 12; attempt++) {
    const chol = cholesky(g, cols, shift);
    if (chol) {
      const x = invertUpper(chol.r, cols);
      const x32 = new Float32Array(cols * cols);
      for (let i = 0; i < cols; i++) {
        for (let j = 0; j < cols; j++) x32[i * cols + j] = dscale[i]! * x[i * cols + j]!;
      }
      return await matmul(y, x32, rows, cols, cols);
    }
    shift = shift === 0 ? 1e-6 : shift * 10;
  }
  throw new Error(`orthonormalize: Cholesky failed on a ${rows}×${cols} matrix even with a shift`);
}

/** Squared residual (relative to the column's norm) below which a column counts as dependent. */
const DEPENDENT = 1e-7;

/** Relative diagonal shift of the first pass: above the ~1e-7 relative error of float32 Gram sums. */
const SHIFT = 1e-6;

/** D·YᵀY·D in float64 with D scaling every column to unit norm (0 for a zero column). */
async function scaledGram(
  y: Float32Array,
  rows: number,
  cols: number,
  matmul: MatMulBackend,
): Promise<{ g: Float64Array; dscale: Float64Array }> {
  const g32 = await matmul(transpose(y, rows, cols), y, cols, rows, cols);
  const dscale = new Float64Array(cols);
  for (let i = 0; i < cols; i++) {
    const gi = g32[i * cols + i]!;
    dscale[i] = gi > 0 ? 1 / Math.sqrt(gi) : 0;
  }
  const g = new Float64Array(cols * cols);
  // Symmetrize: the backend's float32 sums need not be exactly symmetric.
  for (let i = 0; i < cols; i++) {
    for (let j = 0; j <= i; j++) {
      const v = 0.5 * (g32[i * cols + j]! + g32[j * cols + i]!) * dscale[i]! * dscale[j]!;
      g[i * cols + j] = v;
      g[j * cols + i] = v;
    }
  }
  return { g, dscale };
}

/** Upper R with RᵀR = G + shift·I and its squared pivots, or undefined when one is not positive. */
function cholesky(
  g: Float64Array,
  n: number,
  shift: number,
): { r: Float64Array; pivots: Float64Array } | undefined {
  const pivots = new Float64Array(n);
  const r = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const ri = i * n;
    // Row i of R: r[i][j] = (g[i][j] - Σ_k<i r[k][i] r[k][j]) / r[i][i]
    for (let j = i; j < n; j++) r[ri + j] = g[ri + j]! + (j === i ? shift : 0);
  }
  for (let k = 0; k < n; k++) {
    const rk = k * n;
    const pivot = r[rk + k]!;
    if (!(pivot > 0)) return undefined;
    pivots[k] = pivot;
    const d = Math.sqrt(pivot);
    for (let j = k; j < n; j++) r[rk + j] = r[rk + j]! / d;
    // Right-looking update of the trailing rows, contiguous along j.
    for (let i = k + 1; i < n; i++) {
      const f = r[rk + i]!;
      if (f === 0) continue;
      const ri = i * n;
      for (let j = i; j < n; j++) r[ri + j] = r[ri + j]! - f * r[rk + j]!;
    }
  }
  for (let i = 1; i < n; i++) for (let j = 0; j < i; j++) r[i * n + j] = 0;
  return { r, pivots };
}

/** X = R⁻¹ for upper-triangular R (row-major), solved row by row from the bottom. */
function invertUpper(r: Float64Array, n: number): Float64Array {
  const x = new Float64Array(n * n);
  for (let i = n - 1; i >= 0; i--) {
    const ri = i * n;
    const inv = 1 / r[ri + i]!;
    // X[i][·] = (e_i - Σ_{k>i} R[i][k] X[k][·]) / R[i][i]; rows k > i are already done.
    const xi = x.subarray(ri, ri + n);
    xi[i] = 1;
    for (let k = i + 1; k < n; k++) {
      const f = r[ri + k]!;
      if (f === 0) continue;
      const xk = k * n;
      for (let j = k; j < n; j++) xi[j] = xi[j]! - f * x[xk + j]!;
    }
    for (let j = i; j < n; j++) xi[j] = xi[j]! * inv;
  }
  return x;
}
