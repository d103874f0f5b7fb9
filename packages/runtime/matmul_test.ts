import assert from "node:assert/strict";
import { ortGram, ortMatMul } from "./matmul.ts";

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

Deno.test("ortGram() gives each matrix of a batch its AᵀA, and rejects a wrong length", async () => {
  const gram = ortGram({ threads: 1 });
  for (const [batch, m, n] of [[1, 7, 3], [5, 11, 4]] as const) {
    const a = Float32Array.from({ length: batch * m * n }, (_, i) => Math.sin(i * 0.7));
    const g = await gram(a, { batch, m, n });
    assert.equal(g.length, batch * n * n);
    for (let b = 0; b < batch; b++) {
      for (let i = 0; i < n; i++) {
        for (let j = 0; j < n; j++) {
          let s = 0;
          for (let r = 0; r < m; r++) s += a[(b * m + r) * n + i]! * a[(b * m + r) * n + j]!;
          const got = g[(b * n + i) * n + j]!;
          assert.ok(Math.abs(got - s) < 1e-4, `G[${b}][${i}][${j}] = ${got} vs ${s}`);
        }
      }
    }
  }
  await assert.rejects(() => gram(new Float32Array(5), { batch: 1, m: 2, n: 3 }), /2×3 = 6/);
  assert.throws(() => ortGram({ threads: 1.5 }), /threads/);
});
