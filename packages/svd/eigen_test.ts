import assert from "node:assert/strict";
import { symmetricEigen } from "./eigen.ts";
import { orthogonal, orthonormalityError } from "./_test_util.ts";

Deno.test("symmetricEigen() finds known eigenvalues and orthonormal eigenvectors", () => {
  const n = 60;
  const q = orthogonal(n, 9);
  const lambda = Array.from({ length: n }, (_, i) => (i % 2 ? -1 : 1) * (i + 1) * 0.5);
  // A = Q·diag(λ)·Qᵀ
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += q[i * n + k]! * lambda[k]! * q[j * n + k]!;
      a[i * n + j] = s;
    }
  }
  const { values, vectors } = symmetricEigen(a, n);
  const sorted = [...lambda].sort((x, y) => y - x);
  sorted.forEach((l, i) => assert.ok(Math.abs(values[i]! - l) < 1e-10, `${values[i]} vs ${l}`));
  // Rows are eigenvectors: check A·v = λ·v.
  for (let r = 0; r < n; r++) {
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let j = 0; j < n; j++) s += a[i * n + j]! * vectors[r * n + j]!;
      assert.ok(Math.abs(s - values[r]! * vectors[r * n + i]!) < 1e-10);
    }
  }
  const cols = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) cols[i * n + j] = vectors[j * n + i]!;
  assert.ok(orthonormalityError(cols, n, n) < 1e-12);
});

Deno.test("symmetricEigen() handles a zero and a 1×1 matrix", () => {
  assert.deepEqual([...symmetricEigen(new Float64Array(9), 3).values], [0, 0, 0]);
  assert.deepEqual([...symmetricEigen(new Float64Array([4]), 1).values], [4]);
});

Deno.test("symmetricEigen() gives orthonormal vectors for repeated eigenvalues", () => {
  const n = 40;
  const q = orthogonal(n, 3);
  const lambda = Array.from({ length: n }, (_, i) => (i < 15 ? 2 : i < 30 ? 0 : -1));
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += q[i * n + k]! * lambda[k]! * q[j * n + k]!;
      a[i * n + j] = s;
    }
  }
  const { values, vectors } = symmetricEigen(a, n);
  [...lambda].sort((x, y) => y - x).forEach((l, i) => assert.ok(Math.abs(values[i]! - l) < 1e-12));
  const cols = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) cols[i * n + j] = vectors[j * n + i]!;
  assert.ok(orthonormalityError(cols, n, n) < 1e-10);
  for (let r = 0; r < n; r++) {
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let j = 0; j < n; j++) s += a[i * n + j]! * vectors[r * n + j]!;
      assert.ok(Math.abs(s - values[r]! * vectors[r * n + i]!) < 1e-10);
    }
  }
});
