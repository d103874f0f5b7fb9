import assert from "node:assert/strict";
import { float32 } from "@clipq/onnx/tensor";
import { seededRandom } from "@clipq/onnx/builder";
import { mulberry32 } from "@clipq/onnx/random";
import { BIAS_LIMIT, biasScaleFloor, quantizeBias, quantizeWeight } from "./weights.ts";

function sqErr(w: Float32Array, q: ArrayLike<number>, scales: Float32Array, inner: number): number {
  let e = 0;
  for (let i = 0; i < w.length; i++) {
    const s = scales[Math.floor(i / inner) % scales.length]!;
    e += (w[i]! - q[i]! * s) ** 2;
  }
  return e;
}

Deno.test("quantizeWeight() scales each output channel to ±127 on axis 0", () => {
  const q = quantizeWeight(float32([2, 3], [0.5, -1, 0.25, 2, 1, -2]), { axis: 0 });
  assert.deepEqual([...q.values.data], [64, -127, 32, 127, 64, -127]);
  assert.deepEqual([...q.scales], [Math.fround(1 / 127), Math.fround(2 / 127)]);
  assert.deepEqual(q.values.dims, [2, 3]);
});

Deno.test("quantizeWeight() handles an inner channel axis (ConvTranspose axis 1)", () => {
  // dims [2, 2, 1]: channel c holds elements (0, c) and (1, c).
  const q = quantizeWeight(float32([2, 2, 1], [1, 4, -2, 2]), { axis: 1 });
  assert.deepEqual([...q.scales], [Math.fround(2 / 127), Math.fround(4 / 127)]);
  assert.deepEqual([...q.values.data], [64, 127, -127, 64]);
});

Deno.test("quantizeWeight() per tensor uses one scale; reduceRange stays in [-63, 63]", () => {
  const q = quantizeWeight(float32([4], [-2, 2, 0.6, 1.2]), { qmax: 63 });
  assert.equal(q.scales.length, 1);
  assert.deepEqual([...q.values.data], [-63, 63, 19, 38]);
});

Deno.test("quantizeWeight() gives an all-zero channel scale 1 and zero values", () => {
  const q = quantizeWeight(float32([2, 2], [0, 0, 1, 1]), { axis: 0 });
  assert.equal(q.scales[0], 1);
  assert.deepEqual([...q.values.data].slice(0, 2), [0, 0]);
});

Deno.test("quantizeWeight() mse clip lowers the error of a heavy-tailed channel", () => {
  const r = seededRandom(3);
  // Cubed normals: a heavy tail whose max |w| wastes levels on a few values.
  const w = r.normals(4096, 1).map((x) => x * x * x);
  const t = float32([1, 4096], w);
  const max = quantizeWeight(t, { axis: 0, clip: "max" });
  const mse = quantizeWeight(t, { axis: 0, clip: "mse" });
  assert.ok(mse.clipRatios[0]! < 1, `expected a clip below max but found ${mse.clipRatios[0]}`);
  assert.ok(
    sqErr(w, mse.values.data as Int8Array, mse.scales, 4096) <
      sqErr(w, max.values.data as Int8Array, max.scales, 4096),
  );
  assert.ok(max.clipRatios[0] === 1);
});

Deno.test("quantizeWeight() refuses an axis outside the rank", () => {
  assert.throws(() => quantizeWeight(float32([2], [1, 2]), { axis: 1 }), /axis in 0\.\.0/);
});

Deno.test("quantizeBias() uses scale s_in·s_w per channel and repeats scales by group", () => {
  const b = quantizeBias(float32([4], [1, 1, 1, 1]), 0.5, Float32Array.of(0.5, 0.25));
  assert.deepEqual([...b.scales], [0.25, 0.125, 0.25, 0.125]);
  assert.deepEqual([...b.values.data], [4, 8, 4, 8]);
  assert.equal(b.values.dtype, "int32");
  assert.throws(() => quantizeBias(float32([3], [1, 1, 1]), 1, Float32Array.of(1, 1)), /multiple/);
});

Deno.test("quantizeWeight() mse picks the clip an exhaustive search by QuantizeLinear's rounding picks", () => {
  // The reference: every clip's whole error, each value rounded half to even by floor and compare.
  const halfEven = (x: number) => {
    const f = Math.floor(x), d = x - f;
    return d > 0.5 ? f + 1 : d < 0.5 ? f : f % 2 === 0 ? f : f + 1;
  };
  const reference = (w: Float32Array, qmax: number) => {
    let maxAbs = 0;
    for (const v of w) maxAbs = Math.max(maxAbs, Math.abs(v));
    let best = Infinity, ratio = 1;
    for (let k = 0; k < 26; k++) {
      const r = 1 - k * 0.02;
      const s = Math.fround((maxAbs * r) / qmax);
      let err = 0;
      for (const v of w) {
        const q = Math.max(-qmax, Math.min(qmax, halfEven(Math.fround(v / s))));
        err += (v - q * s) ** 2;
      }
      if (err < best) [best, ratio] = [err, r];
    }
    return Math.fround(ratio);
  };
  const random = mulberry32(5);
  for (let c = 0; c < 400; c++) {
    const n = 1 + Math.floor(random() * 300);
    const kind = c % 4;
    const w = Float32Array.from({ length: n }, () => {
      const u = random() - 0.5;
      if (kind === 0) return u;
      if (kind === 1) return (random() + random() + random() - 1.5) * 0.1;
      // Values on the grid of max/127 and halfway between: rounding ties at the max clip.
      if (kind === 2) return Math.round(u * 508) / 508;
      return (random() < 0.02 ? 10 : 1) * u;
    });
    for (const qmax of [127, 63]) {
      const got = quantizeWeight(float32([1, n], w), { axis: 0, clip: "mse", qmax }).clipRatios[0];
      assert.equal(got, reference(w, qmax), `channel ${c}, qmax ${qmax}`);
    }
  }
});

Deno.test("quantizeWeight() raises a channel's scale to its bias floor, so that the int32 bias fits", () => {
  // Channel 0 is dead (weights ×1e-7, as BatchNorm folding leaves a channel of gamma ≈ 0) but has
  // a bias of 1: at its own scale the bias would need ~5·10¹⁰, far beyond int32.
  const w = float32([2, 3], [1e-7, -2e-7, 0.5e-7, 0.4, -0.2, 0.1]);
  const bias = float32([2], [1, 0.5]);
  const sIn = 2 / 255;
  const plain = quantizeWeight(w, { axis: 0 });
  assert.equal(plain.raisedScales, 0);
  assert.equal(quantizeBias(bias, sIn, plain.scales).values.data[0], 2147483647, "saturates");
  const floors = biasScaleFloor(bias, sIn);
  const q = quantizeWeight(w, { axis: 0, minScales: floors });
  assert.equal(q.raisedScales, 1);
  assert.ok(q.scales[0]! >= floors[0]!, "not below the floor in float32");
  assert.equal(q.scales[1], plain.scales[1], "a channel above its floor keeps its scale");
  const b = quantizeBias(bias, sIn, q.scales);
  const v = b.values.data as Int32Array;
  assert.ok(Math.abs(v[0]!) <= BIAS_LIMIT);
  // Dequantized, the bias is the float one again (to within a bias step).
  assert.ok(Math.abs(v[0]! * b.scales[0]! - 1) <= b.scales[0]!);
  // The tiny weights take a level or two at that scale, still within half a step.
  const wq = q.values.data as Int8Array, wf = w.data as Float32Array;
  for (let i = 0; i < 3; i++) {
    assert.ok(Math.abs(wq[i]! * q.scales[0]! - wf[i]!) <= q.scales[0]! / 2);
  }
  assert.throws(() => quantizeWeight(w, { axis: 0, minScales: [1, 2, 3] }), /minScales of 1 or 2/);
});

Deno.test("quantizeBias() refuses an infinite bias (it had saturated to 2^31 without a word)", () => {
  assert.throws(
    () => quantizeBias(float32([2], [0.5, Infinity]), 0.5, Float32Array.of(0.25, 0.5)),
    /Expected finite biases but found Infinity in channel 1/,
  );
});
