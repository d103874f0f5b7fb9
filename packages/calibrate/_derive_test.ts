import assert from "node:assert/strict";
import { emptyGraph, node } from "@clipq/onnx";
import { derivation, inverseDerivation } from "./_derive.ts";

const leaky = (alpha: number) =>
  node({
    name: "leaky",
    op: "LeakyRelu",
    inputs: ["a"],
    outputs: ["b"],
    attributes: { alpha: { type: "float", value: alpha } },
  });

Deno.test("LeakyRelu's derivations apply, branch-free or not, what f gives for each value", () => {
  const values = Float32Array.from([
    -3.5,
    -1e-30,
    -0,
    0,
    2.25,
    1e30,
    -Infinity,
    Infinity,
    NaN,
    ...Array.from({ length: 64 }, (_, i) => Math.sin(i * 1.7) * (1 + i)),
  ]);
  // 0.1 and 3 take the branch-free loop; 10⁻¹³ keeps the branching one (α − 1 rounds).
  const tiny = Math.fround(1e-13);
  assert.notEqual(1 + (tiny - 1), tiny);
  for (const alpha of [0.1, tiny, 3]) {
    const forward = derivation(emptyGraph(), leaky(alpha), 13)!;
    const inverse = inverseDerivation(leaky(alpha))!;
    for (const d of [forward, inverse]) {
      const out = new Float32Array(values.length);
      d.apply(values, out);
      const expected = Float32Array.from(values, (v) => d.f(v));
      assert.deepEqual(out, expected, `alpha ${alpha}`);
    }
  }
});
