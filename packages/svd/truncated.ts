/**
 * Truncated SVD A ≈ U_k·diag(s_k)·V_kᵀ: exact (one-sided Jacobi) for small matrices, randomized
 * (Halko–Martinsson–Tropp range finder with power iterations) for big ones, with every heavy step
 * a matrix product through an injectable backend.
 *
 * @module
 */
import { svd } from "./exact.ts";
import { symmetricEigenFactored } from "./eigen.ts";
import { jsMatMul, type MatMulBackend, transpose } from "./matmul.ts";
import { orthonormalize } from "./orthonormalize.ts";
import { gaussianArray } from "./random.ts";

/** A rank-k factorization of an m×n matrix. */
export interface TruncatedSvd {
  /** m×k row-major, orthonormal columns. */
  readonly u: Float32Array;
  /** k singular values, descending. */
  readonly s: Float64Array;
  /** k×n row-major, orthonormal rows (V_kᵀ). */
  readonly vt: Float32Array;
  /** The rank kept. */
  readonly k: number;
  /** Every singular value the method computed (min(m, n) when exact, k + oversample otherwise). */
  readonly spectrum: Float64Array;
  /** ‖A‖_F², in float64. */
  readonly frobenius2: number;
  /** Which method ran. */
  readonly method: "exact" | "randomized" | "randomized-gram";
}

/** Options of {@linkcode truncatedSvd}. */
export interface TruncatedSvdOptions {
  /** Matrix multiply backend for the randomized method; pure TypeScript by default. */
  matmul?: MatMulBackend;
  /**
   * "exact": one-sided Jacobi. "randomized": power iterations on A (2q + 2 products with A).
   * "randomized-gram": power iterations on the Gram matrix AᵀA of the short side, formed once
   * (one m·n² product, then each iteration costs n²·(k + p)): cheaper when n + k < (2q + 2)·(k + p),
   * e.g. VGG16 fc6 at rank 1024. "auto" uses exact when min(m, n) ≤ exactMaxDim or
   * k + oversample ≥ min(m, n), else the cheaper randomized one.
   */
  method?: "auto" | "exact" | "randomized" | "randomized-gram";
  /** Largest min(m, n) the "auto" method decomposes exactly. */
  exactMaxDim?: number;
  /** Extra random columns p beyond k. */
  oversample?: number;
  /** Power iterations q, each re-orthonormalized. */
  power?: number;
  /** Seed of the Gaussian test matrix. */
  seed?: number;
}

/** Defaults of {@linkcode TruncatedSvdOptions}. */
export const defaults = {
  method: "auto",
  exactMaxDim: 256,
  oversample: 10,
  power: 2,
  seed: 0,
} satisfies TruncatedSvdOptions;

/**
 * Rank-k truncated SVD of a row-major m×n float32 matrix.
 *
 * @param a The matrix, m×n row-major.
 * @param shape [m, n, k]: rows, columns, rank kept (1 ≤ k ≤ min(m, n)).
 * @param options Method, backend, oversampling, power iterations, seed.
 * @returns U_k, s_k, V_kᵀ and what was computed of the spectrum.
 *
 * @example A rank-1 matrix
 * ```ts
 * import { truncatedSvd } from "@clipq/svd/truncated";
 * import assert from "node:assert/strict";
 * const a = new Float32Array([1, 2, 2, 4, 3, 6]); // [1, 2, 3]ᵀ · [1, 2]
 * const r = await truncatedSvd(a, [3, 2, 1]);
 * assert.ok(Math.abs(r.s[0]! - Math.sqrt(14 * 5)) < 1e-5);
 * ```
 */
export async function truncatedSvd(
  a: Float32Array,
  shape: readonly [number, number, number],
  options: TruncatedSvdOptions = {},
): Promise<TruncatedSvd> {
  const opts = { ...defaults, ...options };
  const [m, n, k] = shape;
  if (!Number.isInteger(m) || !Number.isInteger(n) || m < 1 || n < 1 || a.length !== m * n) {
    throw new RangeError(
      `Expected a ${m}×${n} matrix (${m * n} elements) but found ${a.length} elements`,
    );
  }
  const r = Math.min(m, n);
  if (!Number.isInteger(k) || k < 1 || k > r) {
    throw new RangeError(`Expected rank to be an integer in [1, ${r}] but found ${k}`);
  }
  for (const key of ["oversample", "power", "exactMaxDim"] as const) {
    const v = opts[key];
    if (!Number.isInteger(v) || v < 0) {
      throw new RangeError(`Expected ${key} to be an integer ≥ 0 but found ${v}`);
    }
  }
  let frobenius2 = 0;
  for (let i = 0; i < a.length; i++) frobenius2 += a[i]! * a[i]!;
  const exact = opts.method === "exact" ||
    (opts.method === "auto" && (r <= opts.exactMaxDim || k + opts.oversample >= r));
  if (exact) {
    const d = svd(a, [m, n]);
    const u = new Float32Array(m * k), vt = new Float32Array(k * n);
    for (let i = 0; i < m; i++) for (let j = 0; j < k; j++) u[i * k + j] = d.u[i * r + j]!;
    for (let j = 0; j < k; j++) for (let i = 0; i < n; i++) vt[j * n + i] = d.v[i * r + j]!;
    return { u, s: d.s.slice(0, k), vt, k, spectrum: d.s, frobenius2, method: "exact" };
  }
  const l = Math.min(k + opts.oversample, m, n);
  const gram = opts.method === "randomized-gram" ||
    (opts.method === "auto" && Math.min(m, n) + k < (2 * opts.power + 2) * l);
  if (gram && m < n) {
    // Work on Aᵀ so the Gram matrix is of the short side; swap the factors back.
    const t = await truncatedSvd(transpose(a, m, n), [n, m, k], {
      ...options,
      method: "randomized-gram",
    });
    return { ...t, u: transpose(t.vt, k, m), vt: transpose(t.u, n, k) };
  }
  const dec = gram ? await randomizedGram(a, m, n, k, opts) : await randomized(a, m, n, k, opts);
  return { ...dec, frobenius2 };
}

/** The top-k eigenvectors of a symmetric l×l matrix as the columns of an l×k float32 matrix. */
async function topEigenvectors(
  g: Float32Array,
  l: number,
  k: number,
  mm: MatMulBackend,
): Promise<{ values: Float64Array; wk: Float32Array }> {
  const { values, tridiagonal, basis } = symmetricEigenFactored(g, l);
  // W_k = Q·X_kᵀ: Q[r][c] = basis[c][r], X_k = the first k tridiagonal eigenvectors (rows).
  const q = new Float32Array(l * l);
  for (let c = 0; c < l; c++) for (let r = 0; r < l; r++) q[r * l + c] = basis[c * l + r]!;
  const xkt = new Float32Array(l * k);
  for (let j = 0; j < k; j++) for (let c = 0; c < l; c++) xkt[c * k + j] = tridiagonal[j * l + c]!;
  return { values, wk: await mm(q, xkt, l, l, k) };
}

async function randomizedGram(
  a: Float32Array,
  m: number,
  n: number,
  k: number,
  opts: Required<Omit<TruncatedSvdOptions, "matmul">> & TruncatedSvdOptions,
): Promise<Omit<TruncatedSvd, "frobenius2">> {
  const mm = opts.matmul ?? jsMatMul;
  const l = Math.min(k + opts.oversample, n);
  // C = AᵀA (n×n), once. Its float32 rounding is ~1e-7·σ₁², far below the σ_k² of any rank worth
  // keeping, and each power iteration is then an n×n×l product instead of two m×n×l ones.
  const c = await mm(transpose(a, m, n), a, n, m, n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < i; j++) {
      const v = 0.5 * (c[i * n + j]! + c[j * n + i]!);
      c[i * n + j] = v;
      c[j * n + i] = v;
    }
  }
  // span(C^(q+1)·Ω) is the row space the classic method with q power iterations ends in.
  let z = gaussianArray(n * l, opts.seed);
  for (let it = 0; it <= opts.power; it++) {
    z = await orthonormalize(await mm(c, z, n, n, l), [n, l], {
      matmul: mm,
      passes: it === opts.power ? 2 : 0,
    });
  }
  // Rayleigh–Ritz: eigenvectors W of Zᵀ·C·Z give V = Z·W; then A·V_k = U_k·Σ_k directly, with no
  // division by small singular values.
  const cz = await mm(c, z, n, n, l);
  const g = await mm(transpose(z, n, l), cz, l, n, l);
  const { values, wk } = await topEigenvectors(g, l, k, mm);
  const spectrum = Float64Array.from(values, (v) => Math.sqrt(Math.max(0, v)));
  const v = await mm(z, wk, n, l, k); // n×k
  const us = await mm(a, v, m, n, k); // m×k = U_k·Σ_k
  const s = new Float64Array(k);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < k; j++) s[j] = s[j]! + us[i * k + j]! ** 2;
  }
  for (let j = 0; j < k; j++) s[j] = Math.sqrt(s[j]!);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < k; j++) us[i * k + j] = s[j]! > 0 ? us[i * k + j]! / s[j]! : 0;
  }
  return { u: us, s, vt: transpose(v, n, k), k, spectrum, method: "randomized-gram" };
}

async function randomized(
  a: Float32Array,
  m: number,
  n: number,
  k: number,
  opts: Required<Omit<TruncatedSvdOptions, "matmul">> & TruncatedSvdOptions,
): Promise<Omit<TruncatedSvd, "frobenius2">> {
  const mm = opts.matmul ?? jsMatMul;
  const l = Math.min(k + opts.oversample, m, n);
  const omega = gaussianArray(n * l, opts.seed);
  // Y₀ = A·Ω; then q times Z = orth(Aᵀ·Y), Y = A·Z. Only the short side (n×l) is
  // re-orthonormalized inside the loop: with Z orthonormal, cond(A·Z) ≤ σ₁/σ_l, which the shifted
  // CholeskyQR of the next step absorbs, and the tall m×l side, the costly one, is orthonormalized
  // once at the end.
  let y = await mm(a, omega, m, n, l);
  for (let it = 0; it < opts.power; it++) {
    // Zᵀ = Yᵀ·A is l×n: transposing the thin factors instead of A keeps memory at one copy of A.
    const zt = await mm(transpose(y, m, l), a, l, m, n);
    const z = await orthonormalize(transpose(zt, l, n), [n, l], { matmul: mm, passes: 0 });
    y = await mm(a, z, m, n, l);
  }
  const q = await orthonormalize(y, [m, l], { matmul: mm, passes: 2 });
  const qt = transpose(q, m, l);
  const b = await mm(qt, a, l, m, n); // l×n
  // Eigenvectors of B·Bᵀ are the left singular vectors of B; the best rank-k approximation of A
  // in span(Q) is Q·W_k·W_kᵀ·B, which needs no division by small singular values.
  const c32 = await mm(b, transpose(b, l, n), l, n, l);
  const { values, wk } = await topEigenvectors(c32, l, k, mm);
  const spectrum = Float64Array.from(values, (v) => Math.sqrt(Math.max(0, v)));
  const u = await mm(q, wk, m, l, k);
  const svt = await mm(transpose(wk, l, k), b, k, l, n); // Σ_k·V_kᵀ
  const s = spectrum.slice(0, k);
  const vt = svt;
  for (let j = 0; j < k; j++) {
    // Rows of Σ_k·V_kᵀ have norm σ_j; rescale by the measured norm so V_kᵀ rows are unit even
    // where σ_j from the Gram eigenvalue is imprecise.
    let nrm = 0;
    for (let i = 0; i < n; i++) nrm += svt[j * n + i]! ** 2;
    nrm = Math.sqrt(nrm);
    const inv = nrm > 0 ? 1 / nrm : 0;
    for (let i = 0; i < n; i++) vt[j * n + i] = svt[j * n + i]! * inv;
    s[j] = nrm;
  }
  return { u, s, vt, k, spectrum, method: "randomized" };
}
