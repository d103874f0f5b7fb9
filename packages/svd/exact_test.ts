import assert from "node:assert/strict";
import { svd } from "./exact.ts";
import { matmulSync } from "./matmul.ts";
import { gaussianArray } from "./random.ts";
import { orthogonal, orthonormalityError } from "./_test_util.ts";

Deno.test("svd() returns the sorted absolute diagonal of a diagonal matrix", () => {
  const d = [2, -7, 0.5, 3];
  const a = new Float64Array(16);
  d.forEach((v, i) => a[i * 4 + i] = v);
  assert.deepEqual([...svd(a, [4, 4]).s], [7, 3, 2, 0.5]);
});

Deno.test("svd() finds the singular values of orthogonal × diagonal × orthogonal", () => {
  const m = 90, n = 30; // m ≥ 2n: the Householder QR path; its transpose goes through it too
  const sigma = Array.from({ length: n }, (_, i) => 10 * 0.7 ** i);
  const u = orthogonal(m, 1), v = orthogonal(n, 2);
  // A = U[:, :n]·diag(σ)·Vᵀ
  const us = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) us[i * n + j] = u[i * m + j]! * sigma[j]!;
  const vt = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) vt[i * n + j] = v[j * n + i]!;
  const a = matmulSync(us, vt, m, n, n);
  for (const [shape, mat] of [[[m, n], a], [[n, m], transposeF64(a, m, n)]] as const) {
    const r = svd(mat, shape as [number, number]);
    sigma.forEach((s, i) => {
      assert.ok(Math.abs(r.s[i]! - s) <= 1e-5 * s, `σ${i}: ${r.s[i]} vs ${s}`);
    });
    assert.ok(orthonormalityError(r.u, shape[0], r.r) < 1e-5);
    assert.ok(orthonormalityError(r.v, shape[1], r.r) < 1e-5);
  }
});

Deno.test("svd() recovers a rank-r matrix exactly from r components", () => {
  const m = 50, n = 35, r = 6;
  const a = matmulSync(gaussianArray(m * r, 3), gaussianArray(r * n, 4), m, r, n);
  const d = svd(a, [m, n]);
  assert.ok(d.s[r]! < 1e-10 * d.s[0]!);
  let err = 0, norm = 0;
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let x = 0;
      for (let k = 0; k < r; k++) x += d.u[i * d.r + k]! * d.s[k]! * d.v[j * d.r + k]!;
      err += (x - a[i * n + j]!) ** 2;
      norm += a[i * n + j]! ** 2;
    }
  }
  assert.ok(Math.sqrt(err / norm) < 1e-12);
});

Deno.test("svd() rejects a length that does not match the shape", () => {
  assert.throws(() => svd(new Float64Array(5), [2, 3]), /Expected a 2×3 matrix \(6 elements\)/);
});

function transposeF64(a: Float64Array, rows: number, cols: number): Float64Array {
  const t = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) t[j * rows + i] = a[i * cols + j]!;
  return t;
}
