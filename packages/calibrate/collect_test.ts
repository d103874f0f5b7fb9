import assert from "node:assert/strict";
import { emptyGraph, float32, type Graph, int64, node, type Tensor } from "@clipq/onnx";
import { ModelBuilder } from "@clipq/onnx/builder";
import { mulberry32 } from "@clipq/onnx/random";
import { createSession } from "@clipq/runtime";
import { collectStatistics } from "./collect.ts";
import { measureBiasShifts } from "./bias_shifts.ts";
import { Histogram } from "./histogram.ts";
import { clipBounds } from "./clip_bounds.ts";
import { mergeStatistics } from "./statistics.ts";
import { rangesFromStatistics } from "./range_methods.ts";
import { DataError } from "@clipq/onnx/errors";

function model(): { graph: Graph; tensors: string[]; batches: Record<string, Tensor>[] } {
  const b = new ModelBuilder({ seed: 7 });
  const x = b.input("x", [2, 3, 8, 8]);
  const c1 = b.conv(x, { outChannels: 4, kernel: 3 });
  const r = b.clip(c1, 0, 6);
  const c2 = b.conv(r, { outChannels: 4, kernel: 1 });
  const h = b.hardSigmoid(c2);
  const m = b.mul(c2, h);
  b.output(b.conv(m, { outChannels: 2, kernel: 1 }), "y");
  const batches = [0, 1, 2].map(() => ({
    x: float32([2, 3, 8, 8], b.random.normals(2 * 3 * 64, 1.5)),
  }));
  return { graph: b.build(), tensors: ["x", c1, r, c2, h, m, "y"], batches };
}

Deno.test('collectStatistics() with samples "all" equals histograms of the taps computed directly', async () => {
  const { graph, tensors, batches } = model();
  const progress: number[] = [];
  const stats = await collectStatistics(graph, batches, {
    tensors,
    samples: "all",
    onProgress: (p) => progress.push(p.items),
  });
  assert.deepEqual(progress, [2, 4, 6]);
  const direct = new Map(tensors.map((t) => [t, new Histogram()]));
  const s = await createSession(graph, { taps: tensors.filter((t) => t !== "x") });
  for (const feeds of batches) {
    const out: Record<string, Tensor> = { ...await s.run(feeds), x: feeds.x! };
    for (const t of tensors) direct.get(t)!.add(out[t]!.data as Float32Array);
  }
  await s.release();
  for (const t of tensors) {
    assert.deepEqual(stats.get(t)!.toJSON(), direct.get(t)!.toJSON(), t);
    assert.equal(stats.get(t)!.count, batches.length * (t === "x" ? 384 : t === "y" ? 256 : 512));
  }
  // Clip and HardSigmoid outputs stay within their clip bounds, which clipBounds() states.
  const { ranges } = clipBounds(graph);
  for (const t of [tensors[2]!, tensors[4]!]) {
    const r = ranges.get(t)!;
    assert.ok(stats.get(t)!.min >= r.min && stats.get(t)!.max <= r.max, t);
  }
});

Deno.test("collectStatistics() takes tensors no larger than the sample whole, as the exact path does", async () => {
  const { graph, tensors, batches } = model();
  // 256 values per image at most: every value is in the sample.
  const sampled = await collectStatistics(graph, batches, { tensors, samples: 256 });
  const exact = await collectStatistics(graph, batches, { tensors, samples: "all" });
  for (const t of tensors) {
    const a = sampled.get(t)!.toJSON(), b = exact.get(t)!.toJSON();
    // Sums are added per image instead of per batch: equal up to rounding.
    assert.ok(Math.abs(a.sumSquares - b.sumSquares) <= 1e-12 * b.sumSquares, t);
    assert.deepEqual({ ...a, sum: 0, sumSquares: 0 }, { ...b, sum: 0, sumSquares: 0 }, t);
  }
});

Deno.test("collectStatistics() samples large tensors, keeping the exact min and max beside the sample", async () => {
  const b = new ModelBuilder({ seed: 11 });
  const x = b.input("x", ["n", 3, 32, 32]);
  const c = b.conv(x, { outChannels: 8, kernel: 3, pad: 1 });
  const r = b.leakyRelu(c, 0.1);
  b.output(b.conv(r, { outChannels: 2, kernel: 1 }), "y");
  const graph = b.build();
  const batches = [2, 1, 2].map((n) => ({
    x: float32([n, 3, 32, 32], b.random.normals(n * 3 * 1024, 2)),
  }));
  const tensors = [c, r, "y"];
  const exact = await collectStatistics(graph, batches, { tensors, samples: "all" });
  const sampled = await collectStatistics(graph, batches, { tensors, samples: 500 });
  for (const t of tensors) {
    const e = exact.get(t)!, s = sampled.get(t)!;
    const perImage = t === "y" ? 2048 : 8192;
    assert.deepEqual([s.populationMin, s.populationMax], [e.min, e.max], t);
    assert.ok(s.min >= e.min && s.max <= e.max && s.exponent <= e.exponent, t);
    // Every 16th (of 8192) or 4th (of 2048) value: the largest step keeping at least 500.
    assert.deepEqual([s.count, s.population, e.population], [5 * 512, 5 * perImage, 5 * perImage]);
    // A regular sample of 512 values per image: the mean is close to the exact one.
    assert.ok(Math.abs(s.mean - e.mean) < 0.1 * Math.sqrt(e.sumSquares / e.count), t);
  }
  // Fixed positions per tensor: two shards of the images merge into the single pass exactly.
  const first = await collectStatistics(graph, batches.slice(0, 1), { tensors, samples: 500 });
  const rest = await collectStatistics(graph, batches.slice(1), { tensors, samples: 500 });
  const merged = mergeStatistics([first, rest]);
  for (const t of tensors) {
    const m = merged.get(t)!.toJSON(), s = sampled.get(t)!.toJSON();
    assert.ok(Math.abs(m.sumSquares - s.sumSquares) <= 1e-12 * s.sumSquares, t);
    assert.deepEqual({ ...m, sum: 0, sumSquares: 0 }, { ...s, sum: 0, sumSquares: 0 }, t);
  }
  // Without the exact extremes (what a run of a histogram method collects) the histogram is the
  // same: a run that saves its statistics and one that does not calibrate alike.
  const light = await collectStatistics(graph, batches, {
    tensors,
    samples: 500,
    extremes: "sample",
  });
  for (const t of tensors) {
    const { populationMin: _, populationMax: __, ...s } = sampled.get(t)!.toJSON();
    assert.deepEqual({ ...s, extremesExact: false }, light.get(t)!.toJSON(), t);
  }
  // Another seed draws other positions; the exact range is the same.
  const other = await collectStatistics(graph, batches, { tensors: [c], samples: 500, seed: 9 });
  assert.deepEqual(
    [other.get(c)!.populationMin, other.get(c)!.populationMax],
    [exact.get(c)!.min, exact.get(c)!.max],
  );
  assert.notDeepEqual(other.get(c)!.toJSON().counts, sampled.get(c)!.toJSON().counts);
  await assert.rejects(
    collectStatistics(graph, batches, { tensors, samples: 0 }),
    /samples: expected "all" or an integer/,
  );
});

Deno.test("collectStatistics() fetches whole a tensor without a batch axis", async () => {
  // A rank-1 view of a hidden tensor: no batch axis to sample along, so it comes out whole.
  const graph = emptyGraph({
    nodes: [
      node({ name: "r", op: "Relu", inputs: ["x"], outputs: ["h"] }),
      node({ name: "f", op: "Reshape", inputs: ["h", "shape"], outputs: ["flat"] }),
      node({ name: "n", op: "Neg", inputs: ["flat"], outputs: ["y"] }),
    ],
    initializers: new Map([["shape", int64([1], [-1])]]),
    inputs: [{ name: "x", dtype: "float32", shape: [1, 2, 4, 4] }],
    outputs: [{ name: "y", dtype: "float32", shape: [32] }],
  });
  const values = Array.from({ length: 32 }, (_, i) => (i * 7) % 11 - 5);
  const batches = [{ x: float32([1, 2, 4, 4], values) }];
  const sampled = await collectStatistics(graph, batches, { tensors: ["flat", "h"], samples: 4 });
  const exact = await collectStatistics(graph, batches, { tensors: ["flat"], samples: "all" });
  assert.deepEqual(sampled.get("flat")!.toJSON(), exact.get("flat")!.toJSON());
  assert.equal(exact.get("flat")!.count, 32);
  const h = sampled.get("h")!;
  assert.deepEqual([h.count, h.population, h.populationMin, h.populationMax], [4, 32, 0, 5]);
});

Deno.test("collectStatistics() accepts an async iterable and continues given statistics", async () => {
  const { graph, tensors, batches } = model();
  async function* gen() {
    for (const b of batches.slice(0, 2)) yield b;
  }
  const first = await collectStatistics(graph, gen(), { tensors });
  const both = await collectStatistics(graph, batches.slice(2), { tensors, into: first });
  const once = await collectStatistics(graph, batches, { tensors });
  for (const t of tensors) {
    assert.deepEqual(both.get(t)!.toJSON().counts, once.get(t)!.toJSON().counts);
  }
});

Deno.test("collectStatistics() names a tensor the model does not have", async () => {
  const { graph, batches } = model();
  await assert.rejects(
    collectStatistics(graph, batches, { tensors: ["nope"] }),
    /nope/,
  );
});

Deno.test("measureBiasShifts() recovers a known per-channel output shift", async () => {
  const b = new ModelBuilder({ seed: 3 });
  const x = b.input("x", [1, 3, 6, 6]);
  const c = b.conv(x, { outChannels: 3, kernel: 3, name: "conv" });
  b.output(b.relu(c), "y");
  const graph = b.build();
  const conv = graph.nodes.find((n) => n.op === "Conv")!;
  const biasName = conv.inputs[2]!;
  const bias = graph.initializers.get(biasName)!.data as Float32Array;
  const delta = [0.25, -0.5, 0.125];
  const shifted = Float32Array.from(bias, (v, i) => v + delta[i]!);
  const quant: Graph = {
    ...graph,
    initializers: new Map([...graph.initializers, [biasName, float32([3], shifted)]]),
  };
  const batches = [1, 2].map(() => ({ x: float32([1, 3, 6, 6], b.random.normals(108)) }));
  const shifts = await measureBiasShifts(graph, quant, batches, {
    layers: [{ node: conv.name, output: conv.outputs[0]!, channelAxis: 1 }],
  });
  const got = [...shifts.get(conv.name)!];
  got.forEach((v, i) => assert.ok(Math.abs(v - delta[i]!) < 1e-5, `${v} vs ${delta[i]}`));
  await assert.rejects(
    measureBiasShifts(graph, quant, batches, {
      layers: [{ node: conv.name, output: conv.outputs[0]!, channelAxis: 4 }],
    }),
    /channelAxis/,
  );
});

Deno.test("measureBiasShifts() charges each layer only its own shift by default", async () => {
  const b = new ModelBuilder({ seed: 4 });
  const x = b.input("x", [1, 2, 5, 5]);
  const c1 = b.conv(x, { outChannels: 2, kernel: 1, name: "c1" });
  b.output(b.conv(c1, { outChannels: 2, kernel: 1, name: "c2" }), "y");
  const graph = b.build();
  const [n1, n2] = graph.nodes;
  const bias = n1!.inputs[2]!;
  const quant: Graph = {
    ...graph,
    initializers: new Map([
      ...graph.initializers,
      [bias, float32([2], (graph.initializers.get(bias)!.data as Float32Array).map((v) => v + 1))],
    ]),
  };
  const batches = [{ x: float32([1, 2, 5, 5], b.random.normals(50)) }];
  const layers = [n1!, n2!].map((n) => ({ node: n.name, output: n.outputs[0]!, channelAxis: 1 }));
  const own = await measureBiasShifts(graph, quant, batches, { layers });
  assert.ok([...own.get(n1!.name)!].every((v) => Math.abs(v - 1) < 1e-5));
  assert.ok([...own.get(n2!.name)!].every((v) => Math.abs(v) < 1e-5));
  const total = await measureBiasShifts(graph, quant, batches, { layers, reference: "model" });
  assert.ok([...total.get(n2!.name)!].some((v) => Math.abs(v) > 1e-3));
});

Deno.test("collectStatistics() reports a bad batch while the next one is in flight", async () => {
  const { graph, tensors, batches } = model();
  const bad = [batches[0]!, { y: batches[1]!.x! }, batches[2]!];
  await assert.rejects(collectStatistics(graph, bad, { tensors }), /feed for input "x"/);
  async function* failing() {
    yield batches[0]!;
    throw new Error("unreadable image calib/3.jpg");
  }
  await assert.rejects(collectStatistics(graph, failing(), { tensors }), /calib\/3\.jpg/);
});

Deno.test("collectStatistics() frees each batch's outputs once histogrammed", async () => {
  const n = 1 << 20; // 4 MiB per tapped tensor per batch
  const graph = emptyGraph({
    nodes: [
      node({ name: "r", op: "Relu", inputs: ["x"], outputs: ["h"] }),
      node({ name: "n", op: "Neg", inputs: ["h"], outputs: ["y"] }),
    ],
    inputs: [{ name: "x", dtype: "float32", shape: [1, n] }],
    outputs: [{ name: "y", dtype: "float32", shape: [1, n] }],
  });
  const x = float32([1, n], new Float32Array(n).map((_, i) => (i % 7) - 3));
  const before = Deno.memoryUsage().external;
  let most = 0;
  const stats = await collectStatistics(graph, Array.from({ length: 40 }, () => ({ x })), {
    tensors: ["h"],
    samples: "all",
    threads: 1,
    onProgress: () => most = Math.max(most, Deno.memoryUsage().external - before),
  });
  assert.equal(stats.get("h")!.max, 3);
  // Two batches are in flight at most; left to the garbage collector, dead outputs pile up to
  // tens of MiB between collections.
  assert.ok(most < 3 * 4 * n, `external memory grew by ${most} bytes`);
});

Deno.test("collectStatistics() samples a graph input at the positions the graph samples a copy of it", async () => {
  // y = x + 0 is computed by the model, so onnxruntime samples it; x is sampled in JavaScript.
  const graph = emptyGraph({
    nodes: [node({ name: "a", op: "Add", inputs: ["x", "zero"], outputs: ["y"] })],
    initializers: new Map([["zero", float32([1], [0])]]),
    inputs: [{ name: "x", dtype: "float32", shape: ["n", 3, 16, 16] }],
    outputs: [{ name: "y", dtype: "float32", shape: ["n", 3, 16, 16] }],
  });
  const random = mulberry32(5);
  const batches = [2, 1].map((n) => ({
    x: float32([n, 3, 16, 16], Array.from({ length: n * 768 }, () => random() * 8 - 3)),
  }));
  const stats = await collectStatistics(graph, batches, { tensors: ["x", "y"], samples: 100 });
  const x = stats.get("x")!.toJSON(), y = stats.get("y")!.toJSON();
  // Every 7th of 768 values per item (the largest step keeping ≥ 100) from offset 6: 109 values.
  assert.deepEqual([x.count, x.population], [3 * 109, 3 * 768]);
  assert.deepEqual(x, y);
  // The step does not divide 768, yet each image is sampled at the same positions whatever the
  // batch: shards of one image each merge into the two-image batch's statistics.
  const shards = await Promise.all(
    [0, 1].map((i) =>
      collectStatistics(graph, [{
        x: float32(
          [1, 3, 16, 16],
          (batches[0]!.x!.data as Float32Array).slice(i * 768, (i + 1) * 768),
        ),
      }], {
        tensors: ["y"],
        samples: 100,
      })
    ),
  );
  const first = await collectStatistics(graph, batches.slice(0, 1), {
    tensors: ["y"],
    samples: 100,
  });
  const merged = mergeStatistics(shards).get("y")!.toJSON();
  assert.deepEqual({ ...merged, sum: 0, sumSquares: 0 }, {
    ...first.get("y")!.toJSON(),
    sum: 0,
    sumSquares: 0,
  });
  const all = await collectStatistics(graph, batches, { tensors: ["x"], samples: "all" });
  assert.deepEqual([stats.get("x")!.populationMin, stats.get("x")!.populationMax], [
    all.get("x")!.min,
    all.get("x")!.max,
  ]);
});

Deno.test("collectStatistics() takes whole a tensor whose length follows NonMaxSuppression, even with a traced static shape", async () => {
  // A two-stage detector's RoI features: their count is what NMS keeps, which differs per image.
  // A traced export records the tracing run's count in value_info as if it were static.
  const graph = emptyGraph({
    nodes: [
      node({
        name: "nms",
        op: "NonMaxSuppression",
        inputs: ["boxes", "scores", "max", "iou"],
        outputs: ["selected"],
      }),
      node({
        name: "keep",
        op: "Gather",
        inputs: ["selected", "two"],
        outputs: ["keep"],
        attributes: { axis: { type: "int", value: 1 } },
      }),
      node({ name: "flat", op: "Reshape", inputs: ["boxes", "rows"], outputs: ["flat"] }),
      node({ name: "pick", op: "Gather", inputs: ["flat", "keep"], outputs: ["picked"] }),
      node({ name: "unsq", op: "Unsqueeze", inputs: ["picked", "zero"], outputs: ["rois"] }),
      node({ name: "mul", op: "Mul", inputs: ["rois", "ten"], outputs: ["y"] }),
    ],
    initializers: new Map([
      ["max", int64([1], [8])],
      ["iou", float32([1], [0.25])],
      ["two", int64([], [2])],
      ["rows", int64([2], [8, 4])],
      ["zero", int64([1], [0])],
      ["ten", float32([], [10])],
    ]),
    inputs: [
      { name: "boxes", dtype: "float32", shape: [1, 8, 4] },
      { name: "scores", dtype: "float32", shape: [1, 1, 8] },
    ],
    outputs: [{ name: "y", dtype: "float32" }],
    opsetImports: [{ domain: "", version: 13 }],
  });
  // Eight unit boxes along a row, 0.5 apart (IoU 1/3 with the next), or 1 apart (IoU 0): NMS at
  // 0.25 keeps every other one in the first image, all eight in the second.
  const row = (gap: number) =>
    float32([1, 8, 4], Array.from({ length: 8 }, (_, i) => [i * gap, 0, i * gap + 1, 1]).flat());
  const scores = float32([1, 1, 8], [8, 7, 6, 5, 4, 3, 2, 1]);
  const batches = [{ boxes: row(0.5), scores }, { boxes: row(1), scores }];
  // What tracing on the first image (4 boxes kept) declares.
  const traced = {
    ...graph,
    valueInfo: [
      { name: "selected", dtype: "int64" as const, shape: [4, 3] },
      { name: "keep", dtype: "int64" as const, shape: [4] },
      { name: "flat", dtype: "float32" as const, shape: [8, 4] },
      { name: "picked", dtype: "float32" as const, shape: [4, 4] },
      { name: "rois", dtype: "float32" as const, shape: [1, 4, 4] },
    ],
  };
  const exact = await collectStatistics(traced, batches, { tensors: ["y"], samples: "all" });
  // 4 values wanted of the 16 traced would be every 4th: the second image has 32, not 16.
  const sampled = await collectStatistics(traced, batches, { tensors: ["y"], samples: 4 });
  assert.equal(exact.get("y")!.count, 4 * 4 + 8 * 4);
  assert.deepEqual(sampled.get("y")!.toJSON(), exact.get("y")!.toJSON());
});

Deno.test('collectStatistics() with extremes "sample" takes min and max from the sample, marks them, and minmax refuses them', async () => {
  const b = new ModelBuilder({ seed: 13 });
  const x = b.input("x", ["n", 3, 32, 32]);
  const c = b.conv(x, { outChannels: 8, kernel: 3, pad: 1 });
  const r = b.leakyRelu(c, 0.1);
  b.output(b.conv(r, { outChannels: 2, kernel: 1 }), "y");
  const graph = b.build();
  const batches = [2, 1].map((n) => ({
    x: float32([n, 3, 32, 32], b.random.normals(n * 3 * 1024, 2)),
  }));
  const tensors = ["x", c, r, "y"];
  const exact = await collectStatistics(graph, batches, { tensors, samples: 500 });
  const sampled = await collectStatistics(graph, batches, {
    tensors,
    samples: 500,
    extremes: "sample",
  });
  for (const t of tensors) {
    const e = exact.get(t)!, s = sampled.get(t)!;
    // The same positions, so the same counts; the extremes lie within the exact ones.
    assert.deepEqual([s.count, s.population, s.sum], [e.count, e.population, e.sum], t);
    assert.ok(s.min >= e.min && s.max <= e.max, t);
    // The graph input, sampled in JavaScript, takes its sample's extremes too.
    assert.equal(s.extremesExact, false, t);
    assert.equal(e.extremesExact, true, t);
  }
  // The sample missed the largest values here, so its extremes are strictly inside.
  assert.ok(sampled.get(c)!.max < exact.get(c)!.populationMax);
  // Percentile reads the counts; minmax refuses the sample's extremes, naming the tensor.
  assert.ok(rangesFromStatistics(sampled, { method: "percentile" }).has(c));
  assert.throws(
    () => rangesFromStatistics(sampled, { method: "minmax" }),
    (e: Error) => e instanceof DataError && e.message.includes(`tensor "x"`),
  );
  // The mark survives JSON and a merge with exact statistics.
  const json = Histogram.fromJSON(JSON.parse(JSON.stringify(sampled.get(c)!.toJSON())));
  assert.equal(json.extremesExact, false);
  assert.equal(exact.get(c)!.clone().merge(json).extremesExact, false);
  assert.equal(exact.get(c)!.toJSON().extremesExact, undefined);
  await assert.rejects(
    collectStatistics(graph, batches, { tensors, extremes: "none" as "exact" }),
    /extremes: expected "exact" or "sample"/,
  );
});
