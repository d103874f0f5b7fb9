import assert from "node:assert/strict";
import { ortMatMul } from "./matmul.ts";

Deno.test("ortMatMul() matches a triple loop on non-square shapes and reuses its session", async () => {
  const mm = ortMatMul({ threads: 1 });
  for (const [m, k, n] of [[3, 5, 2], [17, 33, 9]] as const) {
    const a = Float32Array.from({ length: m * k }, (_, i) => Math.sin(i));
    const b = Float32Array.from({ length: k * n }, (_, i) => Math.cos(i));
    const c = await mm(a, b, m, k, n);
    assert.equal(c.length, m * n);
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let p = 0; p < k; p++) s += a[i * k + p]! * b[p * n + j]!;
        assert.ok(Math.abs(c[i * n + j]! - s) < 1e-4, `C[${i}][${j}] = ${c[i * n + j]} vs ${s}`);
      }
    }
  }
});

Deno.test("ortMatMul() rejects mismatched lengths and bad thread counts", async () => {
  await assert.rejects(
    () => ortMatMul()(new Float32Array(5), new Float32Array(6), 2, 3, 2),
    /Expected A of 2×3 = 6 and B of 3×2 = 6 elements but found 5 and 6/,
  );
  assert.throws(() => ortMatMul({ threads: -1 }), /threads/);
});
