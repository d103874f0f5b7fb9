import assert from "node:assert/strict";
import { jsMatMul, matmulSync, transpose } from "./matmul.ts";
import { gaussian, gaussianArray } from "./random.ts";

Deno.test("jsMatMul() matches the textbook triple loop across block edges", async () => {
  const m = 37, k = 300, n = 270; // k and n cross the 128/256 block sizes
  const a = gaussianArray(m * k, 1), b = gaussianArray(k * n, 2);
  const c = await jsMatMul(a, b, m, k, n);
  for (const [i, j] of [[0, 0], [36, 269], [17, 255], [5, 256]] as const) {
    let s = 0;
    for (let p = 0; p < k; p++) s += a[i * k + p]! * b[p * n + j]!;
    assert.ok(Math.abs(c[i * n + j]! - s) < 1e-4 * Math.max(1, Math.abs(s)));
  }
});

Deno.test("matmulSync() rejects mismatched shapes", () => {
  assert.throws(
    () => matmulSync(new Float32Array(6), new Float32Array(6), 2, 3, 3),
    /Expected A of 2×3 = 6 and B of 3×3 = 9 elements but found 6 and 6/,
  );
});

Deno.test("transpose() twice is the identity", () => {
  const a = gaussianArray(70 * 45, 3);
  assert.deepEqual(transpose(transpose(a, 70, 45), 45, 70), a);
});

Deno.test("gaussian() draws have mean ≈ 0 and variance ≈ 1", () => {
  const g = gaussian(123);
  let s = 0, s2 = 0;
  const n = 100000;
  for (let i = 0; i < n; i++) {
    const x = g();
    s += x;
    s2 += x * x;
  }
  assert.ok(Math.abs(s / n) < 0.02);
  assert.ok(Math.abs(s2 / n - 1) < 0.02);
});
