/**
 * Symmetric eigendecomposition in float64: Householder reduction to tridiagonal form, then the
 * implicit QL algorithm with shifts. O(n³) with every inner loop running over contiguous memory
 * (eigenvectors are kept as rows), which is what makes n ≈ 1000 take seconds, not minutes.
 *
 * @module
 */

import { matmulSync } from "./matmul.ts";
import { gaussian } from "./random.ts";

/** Eigenvalues (descending) and eigenvectors of a symmetric matrix. */
export interface SymmetricEigen {
  /** n eigenvalues, descending. */
  readonly values: Float64Array;
  /** n×n row-major; row i is the unit eigenvector of values[i]. */
  readonly vectors: Float64Array;
}

/** Eigenvectors kept factored: eigenvector i = Σ_c tridiagonal[i·n + c] · basis row c. */
export interface FactoredSymmetricEigen {
  /** n eigenvalues, descending. */
  readonly values: Float64Array;
  /** n×n row-major; row i is the unit eigenvector of the tridiagonal form for values[i]. */
  readonly tridiagonal: Float64Array;
  /** n×n row-major orthogonal basis of the tridiagonal form (row c = column c of Q, A = Q·T·Qᵀ). */
  readonly basis: Float64Array;
}

/**
 * Eigendecomposition of a symmetric n×n matrix with the eigenvectors left as the product
 * tridiagonal·basis, so the O(n³) back-transform can run on a fast matrix-multiply backend.
 *
 * @param a The matrix, n×n row-major (the lower triangle is read).
 * @param n Its order.
 * @returns Eigenvalues (descending) and the two factors of the eigenvectors.
 *
 * @example Eigenvalues of a 2×2 matrix
 * ```ts
 * import { symmetricEigenFactored } from "@clipq/svd/eigen";
 * import assert from "node:assert/strict";
 * const { values } = symmetricEigenFactored(new Float64Array([2, 1, 1, 2]), 2);
 * assert.ok(Math.abs(values[0]! - 3) < 1e-12 && Math.abs(values[1]! - 1) < 1e-12);
 * ```
 */
export function symmetricEigenFactored(
  a: Float32Array | Float64Array,
  n: number,
): FactoredSymmetricEigen {
  if (!Number.isInteger(n) || n < 0 || a.length !== n * n) {
    throw new RangeError(`Expected a ${n}×${n} matrix but found ${a.length} elements`);
  }
  if (n === 0) {
    const z = new Float64Array(0);
    return { values: z, tridiagonal: z, basis: z };
  }
  // W[c][r] stores element (r, c) of the working matrix V (the transpose), so every loop that
  // walks down a column of V walks along a row of W.
  const W: Float64Array[] = [];
  for (let c = 0; c < n; c++) {
    const row = new Float64Array(n);
    for (let r = 0; r < n; r++) row[r] = a[Math.max(r, c) * n + Math.min(r, c)]!;
    W.push(row);
  }
  const d = new Float64Array(n), e = new Float64Array(n);
  tridiagonalize(W, d, e, n);
  // Eigenvalues by QL without vectors (O(n²)) and vectors of the tridiagonal matrix by inverse
  // iteration (O(n²)): accumulating every QL rotation into the vectors would cost ~6n³.
  const off = e.slice(1); // T[i][i+1]
  const diag = d.slice();
  ql(null, d, e, n);
  const order = Array.from(d.keys()).sort((i, j) => d[j]! - d[i]!);
  const values = Float64Array.from(order, (i) => d[i]!);
  const tridiagonal = tridiagonalVectors(diag, off, values);
  const basis = new Float64Array(n * n);
  W.forEach((row, c) => basis.set(row, c * n));
  return { values, tridiagonal, basis };
}

/**
 * Eigendecomposition of a symmetric n×n matrix (only symmetry is assumed; the lower triangle is
 * read).
 *
 * @param a The matrix, n×n row-major.
 * @param n Its order.
 * @returns Eigenvalues (descending) and eigenvectors (as rows).
 *
 * @example A 2×2 symmetric matrix
 * ```ts
 * import { symmetricEigen } from "@clipq/svd/eigen";
 * import assert from "node:assert/strict";
 * const { values } = symmetricEigen(new Float64Array([2, 1, 1, 2]), 2);
 * assert.ok(Math.abs(values[0]! - 3) < 1e-12 && Math.abs(values[1]! - 1) < 1e-12);
 * ```
 */
export function symmetricEigen(a: Float32Array | Float64Array, n: number): SymmetricEigen {
  const f = symmetricEigenFactored(a, n);
  return { values: f.values, vectors: matmulSync(f.tridiagonal, f.basis, n, n, n) };
}

/**
 * Unit eigenvectors (as rows) of the symmetric tridiagonal matrix (diag, off) for the given
 * eigenvalues (descending), by inverse iteration. Vectors of eigenvalues closer than ~1e-9·‖T‖
 * are re-orthogonalized against each other, so repeated eigenvalues get orthogonal vectors.
 */
function tridiagonalVectors(
  diag: Float64Array,
  off: Float64Array,
  values: Float64Array,
): Float64Array {
  const n = diag.length;
  let norm = 0;
  for (let i = 0; i < n; i++) {
    norm = Math.max(norm, Math.abs(diag[i]!) + Math.abs(off[i] ?? 0) + Math.abs(off[i - 1] ?? 0));
  }
  const tiny = Math.max(norm, Number.MIN_VALUE) * 2.220446049250313e-16;
  const out = new Float64Array(n * n);
  const dg = new Float64Array(n), u1 = new Float64Array(n), u2 = new Float64Array(n);
  const mult = new Float64Array(n);
  const swapped = new Uint8Array(n);
  const x = new Float64Array(n);
  let clusterStart = 0;
  const rand = gaussian(12345);
  for (let v = 0; v < n; v++) {
    const lambda = values[v]!;
    if (v > 0 && values[v - 1]! - lambda > 1e-9 * norm) clusterStart = v;
    // LU with partial pivoting of T − λI: U has two superdiagonals.
    for (let i = 0; i < n; i++) {
      dg[i] = diag[i]! - lambda;
      u1[i] = off[i] ?? 0;
      u2[i] = 0;
    }
    for (let i = 0; i < n - 1; i++) {
      const lower = off[i]!;
      if (Math.abs(dg[i]!) >= Math.abs(lower)) {
        if (dg[i] === 0) dg[i] = tiny;
        const m = lower / dg[i]!;
        mult[i] = m;
        swapped[i] = 0;
        dg[i + 1] = dg[i + 1]! - m * u1[i]!;
      } else {
        const m = dg[i]! / lower;
        mult[i] = m;
        swapped[i] = 1;
        const oldU1 = u1[i]!, nextDg = dg[i + 1]!, nextU1 = u1[i + 1]!;
        dg[i] = lower;
        u1[i] = nextDg;
        u2[i] = nextU1;
        dg[i + 1] = oldU1 - m * nextDg;
        u1[i + 1] = -m * nextU1;
      }
    }
    if (dg[n - 1] === 0) dg[n - 1] = tiny;
    for (let i = 0; i < n; i++) x[i] = rand();
    for (let iter = 0; iter < 3; iter++) {
      // Forward: apply the row swaps and multipliers.
      for (let i = 0; i < n - 1; i++) {
        if (swapped[i]) {
          const t = x[i]!;
          x[i] = x[i + 1]!;
          x[i + 1] = t - mult[i]! * x[i + 1]!;
        } else {
          x[i + 1] = x[i + 1]! - mult[i]! * x[i]!;
        }
      }
      // Back substitution with U.
      for (let i = n - 1; i >= 0; i--) {
        let s = x[i]!;
        if (i + 1 < n) s -= u1[i]! * x[i + 1]!;
        if (i + 2 < n) s -= u2[i]! * x[i + 2]!;
        x[i] = s / dg[i]!;
      }
      // Orthogonalize against the earlier vectors of the cluster, then normalize.
      for (let p = clusterStart; p < v; p++) {
        let dot = 0;
        for (let i = 0; i < n; i++) dot += out[p * n + i]! * x[i]!;
        for (let i = 0; i < n; i++) x[i] = x[i]! - dot * out[p * n + i]!;
      }
      let nrm = 0;
      for (let i = 0; i < n; i++) nrm += x[i]! * x[i]!;
      nrm = Math.sqrt(nrm);
      if (!(nrm > 0)) {
        for (let i = 0; i < n; i++) x[i] = rand();
        continue;
      }
      for (let i = 0; i < n; i++) x[i] = x[i]! / nrm;
    }
    out.set(x, v * n);
  }
  return out;
}

function tridiagonalize(W: Float64Array[], d: Float64Array, e: Float64Array, n: number): void {
  const last = W.map((row) => row[n - 1]!);
  d.set(last);
  for (let i = n - 1; i > 0; i--) {
    let scale = 0, h = 0;
    for (let k = 0; k < i; k++) scale += Math.abs(d[k]!);
    if (scale === 0) {
      e[i] = d[i - 1]!;
      for (let j = 0; j < i; j++) {
        d[j] = W[j]![i - 1]!;
        W[j]![i] = 0;
        W[i]![j] = 0;
      }
    } else {
      for (let k = 0; k < i; k++) {
        d[k] = d[k]! / scale;
        h += d[k]! * d[k]!;
      }
      let f = d[i - 1]!;
      let g = Math.sqrt(h);
      if (f > 0) g = -g;
      e[i] = scale * g;
      h -= f * g;
      d[i - 1] = f - g;
      for (let j = 0; j < i; j++) e[j] = 0;
      for (let j = 0; j < i; j++) {
        f = d[j]!;
        const wj = W[j]!;
        W[i]![j] = f;
        g = e[j]! + wj[j]! * f;
        for (let k = j + 1; k < i; k++) {
          g += wj[k]! * d[k]!;
          e[k] = e[k]! + wj[k]! * f;
        }
        e[j] = g;
      }
      f = 0;
      for (let j = 0; j < i; j++) {
        e[j] = e[j]! / h;
        f += e[j]! * d[j]!;
      }
      const hh = f / (h + h);
      for (let j = 0; j < i; j++) e[j] = e[j]! - hh * d[j]!;
      for (let j = 0; j < i; j++) {
        f = d[j]!;
        g = e[j]!;
        const wj = W[j]!;
        for (let k = j; k < i; k++) wj[k] = wj[k]! - (f * e[k]! + g * d[k]!);
        d[j] = wj[i - 1]!;
        wj[i] = 0;
      }
    }
    d[i] = h;
  }
  // Accumulate the transformations.
  for (let i = 0; i < n - 1; i++) {
    W[i]![n - 1] = W[i]![i]!;
    W[i]![i] = 1;
    const h = d[i + 1]!;
    const wi1 = W[i + 1]!;
    if (h !== 0) {
      for (let k = 0; k <= i; k++) d[k] = wi1[k]! / h;
      for (let j = 0; j <= i; j++) {
        const wj = W[j]!;
        let g = 0;
        for (let k = 0; k <= i; k++) g += wi1[k]! * wj[k]!;
        for (let k = 0; k <= i; k++) wj[k] = wj[k]! - g * d[k]!;
      }
    }
    for (let k = 0; k <= i; k++) wi1[k] = 0;
  }
  for (let j = 0; j < n; j++) {
    d[j] = W[j]![n - 1]!;
    W[j]![n - 1] = 0;
  }
  W[n - 1]![n - 1] = 1;
  e[0] = 0;
}

/** Implicit QL on the tridiagonal (d, e); rotates the rows of W too when given. */
function ql(W: Float64Array[] | null, d: Float64Array, e: Float64Array, n: number): void {
  for (let i = 1; i < n; i++) e[i - 1] = e[i]!;
  e[n - 1] = 0;
  let f = 0, tst1 = 0;
  const eps = 2.220446049250313e-16;
  for (let l = 0; l < n; l++) {
    tst1 = Math.max(tst1, Math.abs(d[l]!) + Math.abs(e[l]!));
    let m = l;
    while (m < n) {
      if (Math.abs(e[m]!) <= eps * tst1) break;
      m++;
    }
    if (m > l) {
      for (let iter = 0;; iter++) {
        if (iter > 200) throw new Error(`symmetricEigen: QL did not converge at index ${l}`);
        let g = d[l]!;
        let p = (d[l + 1]! - g) / (2 * e[l]!);
        let r = hypot(p, 1);
        if (p < 0) r = -r;
        d[l] = e[l]! / (p + r);
        d[l + 1] = e[l]! * (p + r);
        const dl1 = d[l + 1]!;
        let h = g - d[l]!;
        for (let i = l + 2; i < n; i++) d[i] = d[i]! - h;
        f += h;
        p = d[m]!;
        let c = 1, c2 = 1, c3 = 1, s = 0, s2 = 0;
        const el1 = e[l + 1]!;
        for (let i = m - 1; i >= l; i--) {
          c3 = c2;
          c2 = c;
          s2 = s;
          g = c * e[i]!;
          h = c * p;
          r = hypot(p, e[i]!);
          e[i + 1] = s * r;
          s = e[i]! / r;
          c = p / r;
          p = c * d[i]! - s * g;
          d[i + 1] = h + s * (c * g + s * d[i]!);
          if (W) {
            const wa = W[i + 1]!, wb = W[i]!;
            for (let k = 0; k < n; k++) {
              const hk = wa[k]!;
              wa[k] = s * wb[k]! + c * hk;
              wb[k] = c * wb[k]! - s * hk;
            }
          }
        }
        p = -s * s2 * c3 * el1 * e[l]! / dl1;
        e[l] = s * p;
        d[l] = c * p;
        if (Math.abs(e[l]!) <= eps * tst1) break;
      }
    }
    d[l] = d[l]! + f;
    e[l] = 0;
  }
}

function hypot(a: number, b: number): number {
  const x = Math.abs(a), y = Math.abs(b);
  if (x > y) {
    const r = y / x;
    return x * Math.sqrt(1 + r * r);
  }
  if (y === 0) return 0;
  const r = x / y;
  return y * Math.sqrt(1 + r * r);
}
