import assert from "node:assert/strict";
import { Histogram } from "./histogram.ts";
import { rangeFromHistogram, rangesFromStatistics } from "./range_methods.ts";
import { ConfigError } from "@clipq/onnx/errors";
import { mulberry32 } from "@clipq/onnx/random";

/** Laplace(0, b) samples. */
function laplace(n: number, b: number, seed: number): Float32Array {
  const r = mulberry32(seed);
  return Float32Array.from({ length: n }, () => {
    const u = r() - 0.5;
    return -b * Math.sign(u) * Math.log(1 - 2 * Math.abs(u));
  });
}

/** Mean squared error of u8 fake quantization of `data` with range [lo, hi] (0 representable). */
function fakeQuantMse(data: Float32Array, lo: number, hi: number): number {
  const a = Math.min(lo, 0), b = Math.max(hi, 0);
  const s = (b - a) / 255;
  const z = Math.round(-a / s);
  let e = 0;
  for (const x of data) {
    const q = Math.min(255, Math.max(0, Math.round(x / s) + z));
    const d = (q - z) * s - x;
    e += d * d;
  }
  return e / data.length;
}

Deno.test("minmax is exact", () => {
  const data = laplace(1000, 1, 1);
  const h = new Histogram().add(data);
  const r = rangeFromHistogram(h, { method: "minmax" });
  assert.equal(r.min, Math.min(...data));
  assert.equal(r.max, Math.max(...data));
  assert.equal(r.source, "minmax");
  const s = rangeFromHistogram(h, { method: "minmax", symmetric: true });
  assert.equal(s.max, Math.max(...data.map(Math.abs)));
  assert.equal(s.min, -s.max);
});

Deno.test("the 90th percentile of 0..99 is 89 within one bin", () => {
  const h = new Histogram().add(Array.from({ length: 100 }, (_, i) => i));
  for (const symmetric of [false, true]) {
    const r = rangeFromHistogram(h, { method: "percentile", percentile: 90, symmetric });
    assert.ok(Math.abs(r.max - 89) <= h.width, `${r.max} (symmetric ${symmetric})`);
  }
  // An asymmetric range searches the negative tail on its own.
  const g = new Histogram().add(Array.from({ length: 200 }, (_, i) => i < 100 ? i : -(i - 99)));
  const r = rangeFromHistogram(g, { method: "percentile", percentile: 90 });
  assert.ok(Math.abs(r.max - 89) <= g.width && Math.abs(r.min + 90) <= g.width, `${r.min}`);
});

Deno.test("entropy clips a lone large outlier", () => {
  // pytorch-quantization's case: uniform [0, 1) plus one 10.
  const r = mulberry32(2);
  const data = Float32Array.from({ length: 20001 }, (_, i) => i === 20000 ? 10 : r());
  const h = new Histogram().add(data);
  const u = rangeFromHistogram(h, { method: "entropy" });
  // 256 levels need at least 256 bins (2.0 at this grid's width 2^-7): the outlier is cut.
  assert.ok(u.max <= 2.01 && u.max >= 0.99, `unsigned entropy clip ${u.max}`);
  const s = rangeFromHistogram(h, { method: "entropy", symmetric: true });
  assert.ok(s.max <= 1.2 && s.max >= 0.9, `symmetric entropy clip ${s.max}`);
});

Deno.test("mse picks the better of two clips", () => {
  // Laplace data: the minmax clip wastes levels on the rare tail, a moderate clip does better.
  const data = laplace(20000, 1, 3);
  const h = new Histogram().add(data);
  const r = rangeFromHistogram(h, { method: "mse" });
  const mm = rangeFromHistogram(h, { method: "minmax" });
  const tight = { min: -1, max: 1 };
  const errs = [r, mm, tight].map((x) => fakeQuantMse(data, x.min, x.max));
  assert.ok(errs[0]! < errs[1]! && errs[0]! < errs[2]!, errs.join(" "));
  // With two clips of known quality, the mse choice lies nearer the better one.
  const better = [mm, tight].reduce((a, b) =>
    fakeQuantMse(data, a.min, a.max) < fakeQuantMse(data, b.min, b.max) ? a : b
  );
  assert.ok(Math.abs(r.max - better.max) < Math.abs(mm.max - tight.max));
});

Deno.test("aciq uses 9.89·b symmetric and 11.16·b one-sided for Laplace data", () => {
  const data = laplace(50000, 0.5, 4);
  const h = new Histogram().add(data);
  const s = rangeFromHistogram(h, { method: "aciq", symmetric: true });
  assert.ok(Math.abs(s.max - 9.89 * 0.5) < 0.15, `${s.max}`);
  const relu = new Histogram().add(data.map(Math.abs));
  const u = rangeFromHistogram(relu, { method: "aciq" });
  const max = Math.max(...data.map(Math.abs));
  assert.ok(Math.abs(u.max - Math.min(11.16 * 0.5, max)) < 0.15, `${u.max}`);
  assert.equal(u.min, relu.min);
});

Deno.test("a ReLU's exact zeros move neither aciq's fit nor the entropy clip", () => {
  // A real ReLU output is half zeros: they are the half the ReLU cut, so b = E[x | x > 0]; counted
  // in, they halved b (BlazeFace: 1.6 dB). In entropy's bin 0 their spike made the narrowest
  // candidate win (BlazeFace: 0.1 dB).
  const data = laplace(50000, 0.5, 4);
  const positive = new Histogram().add(data.filter((x) => x > 0));
  const relu = new Histogram().add(data.map((x) => Math.max(x, 0)));
  assert.ok(relu.zeros > 20000, `${relu.zeros}`);
  for (const distribution of ["laplace", "gaussian"] as const) {
    for (const symmetric of [false, true]) {
      const a = rangeFromHistogram(positive, { method: "aciq", distribution, symmetric });
      const b = rangeFromHistogram(relu, { method: "aciq", distribution, symmetric });
      assert.ok(
        Math.abs(a.max - b.max) < 0.02 * a.max,
        `${distribution} ${symmetric}: ${b.max} vs ${a.max}`,
      );
    }
  }
  const laplaceClip = rangeFromHistogram(relu, { method: "aciq" }).max;
  assert.ok(Math.abs(laplaceClip - Math.min(11.16 * 0.5, relu.max)) < 0.15, `${laplaceClip}`);
  // On the s8 grid one-sided data has 127 steps, as each side of two-sided data: 9.89·b.
  const s8Clip = rangeFromHistogram(relu, { method: "aciq", symmetric: true }).max;
  assert.ok(Math.abs(s8Clip - 9.89 * 0.5) < 0.15, `${s8Clip}`);
  const e = rangeFromHistogram(positive, { method: "entropy" });
  const z = rangeFromHistogram(relu, { method: "entropy" });
  assert.ok(Math.abs(e.max - z.max) < 0.02 * e.max, `${z.max} vs ${e.max}`);
});

Deno.test("loss-aware clipping tightens the clip as λ grows and λ = 0 matches mse", () => {
  const data = laplace(20000, 1, 5);
  const h = new Histogram().add(data);
  const mse = rangeFromHistogram(h, { method: "mse" });
  const zero = rangeFromHistogram(h, { method: "mse", lossAware: { lambda: 0 } });
  assert.ok(Math.abs(zero.max - mse.max) < 1e-9);
  const strong = rangeFromHistogram(h, { method: "minmax", lossAware: { lambda: 0.5 } });
  assert.ok(strong.max < zero.max, `${strong.max} < ${zero.max}`);
  assert.equal(strong.source, "minmax+loss-aware");
  const capped = rangeFromHistogram(h, {
    method: "percentile",
    percentile: 90,
    lossAware: { lambda: 0 },
  });
  const p90 = rangeFromHistogram(h, { method: "percentile", percentile: 90 });
  assert.ok(capped.max <= p90.max + 1e-9);
});

Deno.test("loss-aware λ bounds the error it costs: at most (1 + λ)× the mse clip's, on any scale", () => {
  // Against the tensor's energy (8-bit errors ~1e-4 of it), λ = 0.01 once outweighed the error
  // term and clipped most of a tensor away; λ now weighs the error relative to the least reachable.
  for (const scale of [1e-3, 1, 1e4]) {
    const data = laplace(20000, scale, 7);
    const h = new Histogram().add(data);
    const mse = rangeFromHistogram(h, { method: "mse" });
    const floor = fakeQuantMse(data, mse.min, mse.max);
    let previous = mse;
    for (const lambda of [0.01, 0.1, 1]) {
      const r = rangeFromHistogram(h, { method: "mse", lossAware: { lambda } });
      assert.ok(r.max <= previous.max && -r.min <= -previous.min, `λ ${lambda} tightens`);
      // The histogram's estimate of the error is within a few % of the data's.
      const ratio = fakeQuantMse(data, r.min, r.max) / floor;
      assert.ok(ratio <= 1 + lambda + 0.05, `scale ${scale} λ ${lambda}: ${ratio}`);
      previous = r;
    }
    // λ = 1 does tighten (the error curve is flat near its optimum).
    assert.ok(previous.max < mse.max && previous.min > mse.min, `${previous.max} vs ${mse.max}`);
  }
});

Deno.test("a narrow band far from zero takes a coarser magnitude grid, not millions of bins", () => {
  // 10⁶ moved by at most 1: the histogram's bins are 2⁻¹¹ wide, so magnitudes from 0 at that width
  // would take 2·10⁹ bins (an allocation that failed on a real face-mesh model's coordinates).
  const rnd = mulberry32(3);
  const values = Array.from({ length: 4000 }, () => 1e6 + rnd());
  const h = new Histogram().add(values);
  const max = Math.max(...values);
  for (const method of ["minmax", "percentile", "mse", "entropy", "aciq"] as const) {
    const r = rangeFromHistogram(h, { method, percentile: 99.99 });
    // Within 1/8192 of the largest magnitude (the coarser grid) and never past it.
    assert.ok(r.max <= max && r.max >= max * (1 - 1 / 4096), `${method}: ${r.max}`);
    assert.equal(r.min, Math.min(...values), method);
  }
  // A constant far from 0 (a face mesh's half turn, π everywhere): [π, π], every method.
  const pi = new Histogram().add(new Float32Array(64).fill(Math.PI));
  for (const method of ["percentile", "mse", "entropy", "aciq"] as const) {
    const r = rangeFromHistogram(pi, { method });
    assert.deepEqual([r.min, r.max], [pi.min, pi.min], method);
  }
  // Below 10⁶·2⁻¹¹·4·2048 the grid is the histogram's own: the percentile stays one bin exact.
  const near = new Histogram().add(Array.from({ length: 100 }, (_, i) => 1 + i / 100));
  const p = rangeFromHistogram(near, { method: "percentile", percentile: 90 });
  assert.ok(Math.abs(p.max - 1.89) <= near.width, String(p.max));
});

Deno.test("all-positive data keeps its exact lower bound", () => {
  const h = new Histogram().add([0.5, 1, 2, 3]);
  for (const method of ["percentile", "mse", "entropy", "aciq"] as const) {
    assert.equal(rangeFromHistogram(h, { method }).min, 0.5, method);
  }
});

Deno.test("range options are checked up front", () => {
  const h = new Histogram().add([1]);
  // deno-lint-ignore no-explicit-any
  assert.throws(() => rangeFromHistogram(h, { method: "kl" as any }), ConfigError);
  assert.throws(() => rangeFromHistogram(h, { percentile: 0 }), /percentile/);
  assert.throws(() => rangeFromHistogram(h, { lossAware: { lambda: -1 } }), /lambda/);
  assert.throws(() => rangeFromHistogram(new Histogram(), {}), RangeError);
});

Deno.test("rangesFromStatistics names the method as the source", () => {
  const stats = new Map([["a", new Histogram().add([0, 1])], ["b", new Histogram()]]);
  const r = rangesFromStatistics(stats, { method: "entropy" });
  assert.deepEqual([...r.keys()], ["a"]);
  assert.equal(r.get("a")!.source, "entropy");
});

Deno.test("minmax of a sampled histogram reads the whole set's extremes, not the sample's", () => {
  const h = new Histogram().addSample([1, 2], { min: -8, max: 30, population: 1000 });
  assert.deepEqual(rangeFromHistogram(h, { method: "minmax" }), {
    min: -8,
    max: 30,
    source: "minmax",
  });
  assert.deepEqual(rangeFromHistogram(h, { method: "minmax", symmetric: true }), {
    min: -30,
    max: 30,
    source: "minmax",
  });
  // The histogram methods read the sample: its 99.99th percentile lies within its values.
  const p = rangeFromHistogram(h, { method: "percentile" });
  assert.ok(p.min >= 0 && p.max <= 2 + h.width, JSON.stringify(p));
});

Deno.test("minmax with loss-aware clipping reads the histogram, so a sample's serves", () => {
  // Measured exact extremes or not, the histogram is the same; plain minmax alone needs them.
  const values = Float32Array.from({ length: 2000 }, (_, i) => Math.sin(i) * 2);
  const exact = new Histogram().addSample(values, { min: -8, max: 30, population: 40000 });
  const sampled = new Histogram().add(values);
  sampled.population = 40000;
  sampled.extremesExact = false;
  const o = { method: "minmax" as const, lossAware: { lambda: 0.1 } };
  assert.deepEqual(rangeFromHistogram(sampled, o), rangeFromHistogram(exact, o));
  assert.throws(() => rangeFromHistogram(sampled, { method: "minmax" }), /exact extremes/);
});
