import assert from "node:assert/strict";
import { matmulSync } from "./matmul.ts";
import { gaussianArray } from "./random.ts";
import { truncatedSvd } from "./truncated.ts";
import { orthogonal, orthonormalityError } from "./_test_util.ts";

function known(m: number, n: number, sigma: number[]): Float32Array {
  const u = orthogonal(m, 17), v = orthogonal(n, 18);
  const us = new Float64Array(m * sigma.length);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < sigma.length; j++) us[i * sigma.length + j] = u[i * m + j]! * sigma[j]!;
  }
  const vt = v.slice(0, sigma.length * n); // rows of an orthogonal matrix are orthonormal
  return Float32Array.from(matmulSync(us, vt, m, sigma.length, n));
}

for (
  const [method, m, n] of [["randomized", 400, 300], ["randomized-gram", 400, 300], [
    "randomized-gram",
    300,
    400,
  ]] as const
) {
  Deno.test(`truncatedSvd() ${method} recovers a ${m}×${n} rank-r matrix exactly at rank r`, async () => {
    const r = 12;
    const a = Float32Array.from(
      matmulSync(gaussianArray(m * r, 1), gaussianArray(r * n, 2), m, r, n),
    );
    const d = await truncatedSvd(a, [m, n, r], { method });
    assert.equal(d.method, method);
    assert.ok(orthonormalityError(d.u, m, r) < 1e-5);
    const v = new Float32Array(n * r);
    for (let i = 0; i < r; i++) for (let j = 0; j < n; j++) v[j * r + i] = d.vt[i * n + j]!;
    assert.ok(orthonormalityError(v, n, r) < 1e-5);
    const us = d.u.map((x, i) => x * d.s[i % r]!);
    const rec = matmulSync(us, d.vt, m, r, n);
    let err = 0, norm = 0;
    for (let i = 0; i < a.length; i++) {
      err += (rec[i]! - a[i]!) ** 2;
      norm += a[i]! ** 2;
    }
    assert.ok(Math.sqrt(err / norm) < 1e-5, `relative error ${Math.sqrt(err / norm)}`);
  });
}

for (const method of ["randomized", "randomized-gram"] as const) {
  Deno.test(`truncatedSvd() ${method} finds known singular values within 1e-5`, async () => {
    const sigma = Array.from({ length: 40 }, (_, i) => 100 * 0.6 ** i);
    const a = known(200, 150, sigma);
    const d = await truncatedSvd(a, [200, 150, 8], { method, power: 2 });
    for (let i = 0; i < 8; i++) {
      assert.ok(
        Math.abs(d.s[i]! - sigma[i]!) <= 1e-5 * sigma[i]!,
        `σ${i}: ${d.s[i]} vs ${sigma[i]}`,
      );
    }
  });
}

Deno.test("truncatedSvd() exact and randomized agree on the kept energy", async () => {
  const a = gaussianArray(300 * 260, 7);
  for (let i = 0; i < 300; i++) for (let j = 0; j < 260; j++) a[i * 260 + j]! *= 1 / (1 + j);
  const exact = await truncatedSvd(a, [300, 260, 30], { method: "exact" });
  const kept = (s: Float64Array) => s.reduce((acc, x) => acc + x * x, 0);
  const optimal = Math.sqrt(exact.frobenius2 - kept(exact.s));
  for (const method of ["randomized", "randomized-gram"] as const) {
    const rand = await truncatedSvd(a, [300, 260, 30], { method, power: 3 });
    const ours = Math.sqrt(rand.frobenius2 - kept(rand.s));
    assert.ok(
      ours >= optimal * (1 - 1e-4) && ours <= optimal * 1.01,
      `${method}: ${ours} vs ${optimal}`,
    );
  }
});

Deno.test("truncatedSvd() gives the same bytes for the same seed and differs otherwise", async () => {
  const a = gaussianArray(200 * 180, 3);
  const x = await truncatedSvd(a, [200, 180, 10], { method: "randomized", seed: 1 });
  const y = await truncatedSvd(a, [200, 180, 10], { method: "randomized", seed: 1 });
  const z = await truncatedSvd(a, [200, 180, 10], { method: "randomized", seed: 2 });
  assert.deepEqual(x.u, y.u);
  assert.deepEqual(x.vt, y.vt);
  assert.notDeepEqual(x.u, z.u);
});

Deno.test("truncatedSvd() rejects a rank outside [1, min(m, n)]", async () => {
  await assert.rejects(
    () => truncatedSvd(new Float32Array(6), [2, 3, 3]),
    /Expected rank to be an integer in \[1, 2\] but found 3/,
  );
});
