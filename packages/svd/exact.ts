/**
 * Exact SVD of small matrices by one-sided (Hestenes) Jacobi in float64: slow (O(m·n²) per sweep)
 * but accurate to a few ulps in every singular value, large or small, so tests and small layers
 * use it.
 *
 * @module
 */

/** A thin SVD: A = U·diag(s)·Vᵀ with r = min(m, n). */
export interface Svd {
  /** m×r, row-major, orthonormal columns (a zero singular value gets a zero column). */
  readonly u: Float64Array;
  /** r singular values, descending. */
  readonly s: Float64Array;
  /** n×r, row-major, orthonormal columns. */
  readonly v: Float64Array;
  /** Rows of A. */
  readonly m: number;
  /** Columns of A. */
  readonly n: number;
  /** min(m, n). */
  readonly r: number;
}

/** Options of {@linkcode svd}. */
export interface SvdOptions {
  /** Sweeps before giving up (each sweep rotates every column pair once). */
  maxSweeps?: number;
}

/** Defaults of {@linkcode SvdOptions}. */
export const defaults = { maxSweeps: 60 } satisfies SvdOptions;

/**
 * Thin SVD of a row-major m×n matrix by one-sided Jacobi.
 *
 * @param a The matrix (float32 or float64), m×n row-major.
 * @param shape [m, n].
 * @param options Sweep limit.
 * @returns U, s, V with A = U·diag(s)·Vᵀ.
 *
 * @example Singular values of a diagonal matrix
 * ```ts
 * import { svd } from "@clipq/svd/exact";
 * import assert from "node:assert/strict";
 * const { s } = svd(new Float64Array([3, 0, 0, -5]), [2, 2]);
 * assert.deepEqual([...s], [5, 3]);
 * ```
 */
export function svd(
  a: Float32Array | Float64Array,
  shape: readonly [number, number],
  options: SvdOptions = {},
): Svd {
  const { maxSweeps } = { ...defaults, ...options };
  const [m, n] = shape;
  if (!Number.isInteger(m) || !Number.isInteger(n) || m < 0 || n < 0 || a.length !== m * n) {
    throw new RangeError(
      `Expected a ${m}×${n} matrix (${m * n} elements) but found ${a.length} elements`,
    );
  }
  if (m < n) {
    // SVD of Aᵀ = V Σ Uᵀ: work on the side with fewer columns.
    const t = new Float64Array(m * n);
    for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) t[j * m + i] = a[i * n + j]!;
    const r = svd(t, [n, m], options);
    return { u: r.v, s: r.s, v: r.u, m, n, r: r.r };
  }
  if (m >= 2 * n && n > 0) return tallSvd(a, m, n, options);
  // Columns of A as contiguous rows (cols[j] = column j), V likewise (vs[j] = column j of V).
  const cols: Float64Array[] = [];
  const vs: Float64Array[] = [];
  for (let j = 0; j < n; j++) {
    const c = new Float64Array(m);
    for (let i = 0; i < m; i++) c[i] = a[i * n + j]!;
    cols.push(c);
    const v = new Float64Array(n);
    v[j] = 1;
    vs.push(v);
  }
  const eps = 2.220446049250313e-16;
  for (let sweep = 0; sweep < maxSweeps; sweep++) {
    let rotated = false;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        const x = cols[p]!, y = cols[q]!;
        let alpha = 0, beta = 0, gamma = 0;
        for (let i = 0; i < m; i++) {
          const xi = x[i]!, yi = y[i]!;
          alpha += xi * xi;
          beta += yi * yi;
          gamma += xi * yi;
        }
        if (gamma === 0 || Math.abs(gamma) <= eps * Math.sqrt(alpha * beta)) continue;
        rotated = true;
        const zeta = (beta - alpha) / (2 * gamma);
        const t = (zeta >= 0 ? 1 : -1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t);
        const s = c * t;
        for (let i = 0; i < m; i++) {
          const xi = x[i]!, yi = y[i]!;
          x[i] = c * xi - s * yi;
          y[i] = s * xi + c * yi;
        }
        const vx = vs[p]!, vy = vs[q]!;
        for (let i = 0; i < n; i++) {
          const xi = vx[i]!, yi = vy[i]!;
          vx[i] = c * xi - s * yi;
          vy[i] = s * xi + c * yi;
        }
      }
    }
    if (!rotated) break;
  }
  const norms = cols.map((c) => Math.sqrt(c.reduce((acc, x) => acc + x * x, 0)));
  const order = norms.map((_, i) => i).sort((i, j) => norms[j]! - norms[i]!);
  const r = n;
  const u = new Float64Array(m * r), s = new Float64Array(r), v = new Float64Array(n * r);
  order.forEach((src, dst) => {
    const sigma = norms[src]!;
    s[dst] = sigma;
    const c = cols[src]!, vv = vs[src]!;
    if (sigma > 0) { for (let i = 0; i < m; i++) u[i * r + dst] = c[i]! / sigma; }
    for (let i = 0; i < n; i++) v[i * r + dst] = vv[i]!;
  });
  return { u, s, v, m, n, r };
}

/**
 * A = Q·R by Householder reflections (float64), then Jacobi on the n×n R: the sweeps then cost
 * O(n³) instead of O(m·n²), which is what makes a 6625×120 classifier take milliseconds.
 */
function tallSvd(a: Float32Array | Float64Array, m: number, n: number, options: SvdOptions): Svd {
  const cols: Float64Array[] = [];
  for (let j = 0; j < n; j++) {
    const c = new Float64Array(m);
    for (let i = 0; i < m; i++) c[i] = a[i * n + j]!;
    cols.push(c);
  }
  const vs: Float64Array[] = []; // Householder vectors, v[j] non-zero from index j on
  const betas = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    const x = cols[j]!;
    let norm = 0;
    for (let i = j; i < m; i++) norm += x[i]! * x[i]!;
    norm = Math.sqrt(norm);
    const v = new Float64Array(m);
    if (norm === 0) {
      vs.push(v);
      continue;
    }
    const alpha = x[j]! > 0 ? -norm : norm;
    for (let i = j; i < m; i++) v[i] = x[i]!;
    v[j] = v[j]! - alpha;
    let vv = 0;
    for (let i = j; i < m; i++) vv += v[i]! * v[i]!;
    betas[j] = vv > 0 ? 2 / vv : 0;
    vs.push(v);
    for (let c = j; c < n; c++) applyReflector(cols[c]!, v, betas[j]!, j, m);
  }
  const r = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = i; j < n; j++) r[i * n + j] = cols[j]![i]!;
  const inner = svd(r, [n, n], options);
  // U = Q·[U_R; 0]: apply the reflectors in reverse to each padded column.
  const u = new Float64Array(m * n);
  const col = new Float64Array(m);
  for (let k = 0; k < n; k++) {
    col.fill(0);
    for (let i = 0; i < n; i++) col[i] = inner.u[i * n + k]!;
    for (let j = n - 1; j >= 0; j--) applyReflector(col, vs[j]!, betas[j]!, j, m);
    for (let i = 0; i < m; i++) u[i * n + k] = col[i]!;
  }
  return { u, s: inner.s, v: inner.v, m, n, r: n };
}

function applyReflector(x: Float64Array, v: Float64Array, beta: number, from: number, m: number) {
  if (beta === 0) return;
  let dot = 0;
  for (let i = from; i < m; i++) dot += v[i]! * x[i]!;
  const f = beta * dot;
  for (let i = from; i < m; i++) x[i] = x[i]! - f * v[i]!;
}
