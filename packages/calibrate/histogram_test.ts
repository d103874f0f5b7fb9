import assert from "node:assert/strict";
import { Histogram } from "./histogram.ts";
import {
  mergeStatistics,
  saveStatistics,
  statisticsFromJSON,
  statisticsToJSON,
} from "./statistics.ts";
import { mulberry32 } from "@clipq/onnx/random";
import { DataError } from "@clipq/onnx/errors";

function sample(n: number, seed: number, scale: number, shift = 0): Float32Array {
  const r = mulberry32(seed);
  return Float32Array.from({ length: n }, () => (r() - 0.5) * scale + shift);
}

Deno.test("Histogram bins every value where a direct count at the final width puts it", () => {
  const data = sample(5000, 1, 20, 3);
  const h = new Histogram({ bins: 256 }).add(data);
  const w = h.width;
  const direct = new Map<number, number>();
  for (const v of data) direct.set(Math.floor(v / w), (direct.get(Math.floor(v / w)) ?? 0) + 1);
  for (const [a, c] of direct) assert.equal(h.counts[a - h.offset], c);
  assert.equal(h.count, 5000);
  assert.equal(h.min, Math.min(...data));
  assert.equal(h.max, Math.max(...data));
  // The smallest power of two at which the span fits in 256 bins.
  assert.ok((h.max - h.min) / w < 256 && (h.max - h.min) / (w / 2) >= 255);
});

Deno.test("merging shards equals one pass over all the data", () => {
  const shards = [sample(1000, 2, 1), sample(1000, 3, 50, 20), sample(10, 4, 0.001, -7)];
  const one = new Histogram();
  for (const s of shards) one.add(s);
  const parts = shards.map((s) => new Histogram().add(s));
  const merged = parts[2]!.clone().merge(parts[0]!).merge(parts[1]!);
  assert.deepEqual(merged.toJSON().counts, one.toJSON().counts);
  assert.equal(merged.exponent, one.exponent);
  assert.equal(merged.min, one.min);
  assert.equal(merged.max, one.max);
  assert.equal(merged.count, one.count);
  // Sums may differ in the last float bit with the order of addition.
  assert.ok(Math.abs(merged.sum - one.sum) < 1e-6 * Math.abs(one.sum));
});

Deno.test("batches in any order give the same histogram", () => {
  const a = sample(300, 5, 4), b = sample(300, 6, 400, -100), c = sample(300, 7, 0.01);
  const x = new Histogram().add(a).add(b).add(c);
  const y = new Histogram().add(c).add(b).add(a);
  assert.deepEqual(x.toJSON().counts, y.toJSON().counts);
  assert.equal(x.toJSON().offset, y.toJSON().offset);
});

Deno.test("Histogram ignores NaN and Infinity but counts them", () => {
  const h = new Histogram().add([1, NaN, Infinity, -Infinity, 2, 0]);
  assert.equal(h.count, 3);
  assert.equal(h.nonFinite, 3);
  assert.equal(h.zeros, 1);
  assert.equal(h.max, 2);
});

Deno.test("Histogram JSON round trip keeps every field", () => {
  const h = new Histogram({ bins: 64 }).add(sample(100, 8, 3));
  const back = Histogram.fromJSON(JSON.parse(JSON.stringify(h.toJSON())));
  assert.deepEqual(back.toJSON(), h.toJSON());
  assert.throws(() => Histogram.fromJSON({ counts: [1], bins: "x" }, "t.json"), /t\.json.*bins/);
});

Deno.test("merging histograms of different grids is refused", () => {
  assert.throws(
    () => new Histogram({ bins: 64 }).merge(new Histogram({ bins: 128 })),
    /same grid/,
  );
});

Deno.test("mergeStatistics leaves its inputs unchanged and survives JSON", () => {
  const a = new Map([["t", new Histogram().add([1, 2])]]);
  const b = new Map([["t", new Histogram().add([100])], ["u", new Histogram().add([-1])]]);
  const m = mergeStatistics([a, b]);
  assert.equal(a.get("t")!.count, 2);
  assert.equal(m.get("t")!.count, 3);
  assert.equal(m.get("u")!.min, -1);
  const back = statisticsFromJSON(JSON.parse(JSON.stringify(statisticsToJSON(m))));
  assert.deepEqual(back.get("t")!.toJSON(), m.get("t")!.toJSON());
});

Deno.test("a batch that leaves the grid midway gives the same histogram as one pass", () => {
  const a = new Histogram().add([1, 2]).add([1.5, NaN, 3e6, -2, 0, 2]);
  const b = new Histogram().add([1, 2, 1.5, NaN, 3e6, -2, 0, 2]);
  assert.deepEqual(a.toJSON(), b.toJSON());
  assert.equal(a.count, 7);
  assert.equal(a.nonFinite, 1);
  assert.equal(a.zeros, 1);
});

Deno.test("a long batch that leaves the grid twice, with NaN and ±Infinity on either side of a pair, bins every finite value where a direct count puts it", () => {
  const h = new Histogram({ bins: 64 }).add(sample(101, 8, 2));
  // An odd length, non-finite values at even and odd positions, two widenings (×40, then ×-900).
  const data = Float32Array.from(
    sample(1001, 9, 2),
    (v, i) =>
      i === 10
        ? NaN
        : i === 11
        ? Infinity
        : i === 500
        ? 80
        : i === 501
        ? -Infinity
        : i === 777
        ? -900
        : v,
  );
  h.add(data);
  const all = [...sample(101, 8, 2), ...data].filter((v) => Number.isFinite(v));
  const w = h.width;
  const direct = new Map<number, number>();
  for (const v of all) direct.set(Math.floor(v / w), (direct.get(Math.floor(v / w)) ?? 0) + 1);
  for (const [a, c] of direct) assert.equal(h.counts[a - h.offset], c);
  assert.deepEqual([h.count, h.nonFinite, h.population], [all.length, 3, 1102]);
  assert.deepEqual([h.min, h.max], [-900, 80]);
  assert.ok(Math.abs(h.sum - all.reduce((a, b) => a + b, 0)) < 1e-9 * all.length * 900);
});

Deno.test("addSample() bins the sample as add() does and keeps the whole set's extremes beside it", () => {
  const all = sample(10000, 11, 2);
  const picked = all.filter((_, i) => i % 50 === 7);
  const min = Math.min(...all), max = Math.max(...all);
  const h = new Histogram().addSample(picked, { min, max, population: all.length });
  const full = new Histogram().add(all);
  assert.deepEqual([h.populationMin, h.populationMax], [full.min, full.max]);
  assert.deepEqual([h.count, h.population], [picked.length, all.length]);
  // Counts, extremes and grid are the sample's, whether or not the set's extremes were measured:
  // a calibration that measures them and one that does not give the same histogram methods' input.
  const alone = new Histogram().add(picked);
  alone.population = all.length;
  assert.deepEqual(
    { ...h.toJSON(), populationMin: 0, populationMax: 0 },
    { ...alone.toJSON(), populationMin: 0, populationMax: 0 },
  );
  assert.ok(h.min >= min && h.max <= max && (h.min > min || h.max < max), "a narrower sample");
  // The JSON keeps them and reads them back.
  const back = Histogram.fromJSON(JSON.parse(JSON.stringify(h.toJSON())));
  assert.deepEqual([back.populationMin, back.populationMax, back.min], [min, max, h.min]);
  assert.throws(() => h.addSample([1, 2], { min: 0, max: 1, population: 1 }), /population/);
  assert.throws(() => h.addSample([1], { min: 2, max: 1, population: 5 }), /min ≤ max/);
});

Deno.test("addSample() ignores a non-finite min or max and keeps the sample's extremes", () => {
  const h = new Histogram().addSample([1, 4], { min: NaN, max: Infinity, population: 9 });
  assert.deepEqual([h.min, h.max, h.count, h.population], [1, 4, 2, 9]);
});

Deno.test("sampled shards merge into exactly the single-pass histogram", () => {
  const images = [0, 1, 2, 3, 4].map((k) => sample(2000, 20 + k, 1 + k));
  const take = (v: Float32Array) => v.filter((_, i) => i % 16 === 3);
  const feed = (h: Histogram, v: Float32Array) =>
    h.addSample(take(v), { min: Math.min(...v), max: Math.max(...v), population: v.length });
  const once = new Histogram();
  for (const v of images) feed(once, v);
  const a = new Histogram(), b = new Histogram();
  for (const v of images.slice(0, 2)) feed(a, v);
  for (const v of images.slice(2)) feed(b, v);
  const merged = Histogram.fromJSON(JSON.parse(JSON.stringify(b.toJSON()))).merge(a).toJSON();
  const single = once.toJSON();
  // Counts, extremes and grid are exact; the sums are float64 sums added in another order.
  assert.deepEqual({ ...merged, sum: 0, sumSquares: 0 }, { ...single, sum: 0, sumSquares: 0 });
  assert.ok(Math.abs(merged.sum - single.sum) <= 1e-12 * single.sumSquares);
  assert.ok(Math.abs(merged.sumSquares - single.sumSquares) <= 1e-12 * single.sumSquares);
  assert.equal(once.population, 10000);
});

Deno.test("population is count + nonFinite for full passes and for older JSON without it", () => {
  const h = new Histogram().add([1, NaN, 3]);
  assert.equal(h.population, 3);
  const { population: _, ...old } = h.toJSON();
  assert.equal(Histogram.fromJSON(old).population, 3);
});

Deno.test("addSample() counts a NaN in the sample as non-finite and bins the rest", () => {
  const h = new Histogram().addSample([1, NaN, 2, 3], { min: 0, max: 5, population: 40 });
  const ref = new Histogram().add([1, 2, 3]);
  assert.deepEqual([h.count, h.nonFinite, h.population, h.min, h.max], [3, 1, 40, 1, 3]);
  assert.deepEqual([h.populationMin, h.populationMax], [0, 5]);
  // The grid is the one the sample's finite values need.
  assert.deepEqual([h.sum, h.sumSquares, h.exponent], [ref.sum, ref.sumSquares, ref.exponent]);
  assert.equal([...h.counts].reduce((a, c) => a + c, 0), 3);
});

Deno.test("fromJSON() refuses by name a histogram its fields contradict (a hand edit had looped forever)", () => {
  const good = new Histogram().add([-3, 0.5, 0.5, 7]).toJSON();
  assert.deepEqual(Histogram.fromJSON(good, "f").toJSON(), good);
  const cases: [Partial<Record<keyof typeof good, unknown>>, RegExp][] = [
    [{ offset: 1e18 }, /f: expected min and max in the first and last of the \d+ counts/],
    [{ offset: 0.5 }, /f: expected an integer at "offset" but found 0.5/],
    [
      { offset: good.offset + 1 },
      /f: expected min and max in the first and last of the \d+ counts/,
    ],
    [{ bins: 0 }, /f: expected an integer in \[16, 16777216\] at "bins" but found 0/],
    [{ exponent: 2000 }, /at "exponent"/],
    [{ counts: good.counts.map(() => 0) }, /f: expected counts summing to count 4 but found 0/],
    [{ zeros: 9 }, /at "zeros"/],
    [{ populationMin: 0 }, /f: expected populationMin ≤ min/],
  ];
  for (const [edit, error] of cases) {
    assert.throws(
      () => Histogram.fromJSON({ ...good, ...edit }, "f"),
      (e: Error) => e instanceof DataError && error.test(e.message),
      JSON.stringify(edit),
    );
  }
});

Deno.test("saveStatistics() leaves no temporary file when the write fails", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // A folder at the target: the temporary file is written, the rename fails.
    const target = `${dir}/s.json`;
    await Deno.mkdir(`${target}/inner`, { recursive: true });
    await assert.rejects(saveStatistics(target, new Map([["x", new Histogram().add([1, 2])]])));
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["s.json"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("fromJSON() reads back what toJSON wrote for a large constant and for float64 values", () => {
  // A constant keeps the finest width, 2^-32: its offset is value · 2^32, far past 2^50.
  const constant = new Histogram().add(new Float32Array(10).fill(300000));
  // A float64 value just below a bin's edge had been binned one bin high, past the last count
  // the JSON keeps: the count was lost, and the JSON then failed to load.
  const doubles = new Histogram().add([-1000.3, 999.9999999999999]);
  for (const h of [constant, doubles]) {
    assert.deepEqual(Histogram.fromJSON(h.toJSON()).toJSON(), h.toJSON());
  }
  assert.equal(doubles.toJSON().counts.reduce((a, c) => a + c, 0), 2);
});
