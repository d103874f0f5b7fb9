import assert from "node:assert/strict";
import { emptyGraph, float32, type Graph, node } from "@clipq/onnx";
import { extremes, sampleStep, samplingPlan } from "./_sampling.ts";
import { collectStatistics } from "./collect.ts";

/** a = Neg(x), then monotone functions of it with constants, each tapped. */
function chain(): Graph {
  const c = (v: number) => float32([], [v]);
  return emptyGraph({
    opsetImports: [{ domain: "", version: 13 }],
    nodes: [
      node({ name: "neg", op: "Neg", inputs: ["x"], outputs: ["a"] }),
      node({ name: "add", op: "Add", inputs: ["a", "three"], outputs: ["b"] }),
      node({ name: "mul", op: "Mul", inputs: ["minusHalf", "b"], outputs: ["c"] }),
      node({ name: "div", op: "Div", inputs: ["c", "six"], outputs: ["d"] }),
      node({ name: "sub", op: "Sub", inputs: ["two", "d"], outputs: ["e"] }),
      node({ name: "clip", op: "Clip", inputs: ["e", "minusOne", "one"], outputs: ["f"] }),
      node({ name: "relu", op: "Relu", inputs: ["e"], outputs: ["g"] }),
      node({
        name: "leaky",
        op: "LeakyRelu",
        inputs: ["e"],
        outputs: ["h"],
        attributes: { alpha: { type: "float", value: 0.2 } },
      }),
      // Not monotone in its input: sampled itself.
      node({ name: "sq", op: "Mul", inputs: ["e", "e"], outputs: ["y"] }),
    ],
    initializers: new Map([
      ["three", c(3)],
      ["minusHalf", c(-0.5)],
      ["six", c(6)],
      ["two", c(2)],
      ["minusOne", c(-1)],
      ["one", c(1)],
    ]),
    inputs: [{ name: "x", dtype: "float32", shape: ["n", 4, 32, 32] }],
    outputs: [{ name: "y", dtype: "float32" }],
  });
}

const TAPS = ["a", "b", "c", "d", "e", "f", "g", "h", "y"];

Deno.test("samplingPlan() reads monotone functions of a sampled tensor off its sample", () => {
  const plan = samplingPlan(chain(), {
    tensors: TAPS,
    samples: 100,
    seed: 0,
    inputDims: { x: [2, 4, 32, 32] },
  });
  assert.deepEqual(plan.tensors.map((t) => t.name), ["a", "y"]);
  assert.deepEqual(plan.derived.map((d) => [d.name, d.from, d.decreasing]), [
    ["b", "a", false],
    ["c", "b", true],
    ["d", "c", false],
    ["e", "d", true],
    ["f", "e", false],
    ["g", "e", false],
    ["h", "e", false],
  ]);
  // 4096 values per item: every 40th (the largest step keeping at least 100) from the seeded
  // offset 6, so 103 of them; the step need not divide the item's size.
  assert.deepEqual(plan.tensors.map((t) => t.sampled), [103, 103]);
  assert.equal(sampleStep(4096, 100), 40);
  assert.equal(sampleStep(97, 10), 9);
  assert.equal(sampleStep(19, 10), 1);
});

Deno.test("derived tensors get the exact min, max and, unsampled, the exact histogram", async () => {
  const g = chain();
  const values = (n: number, k: number) =>
    Float32Array.from({ length: n * 4096 }, (_, i) => Math.sin(i * 0.37 + k) * (3 + (i % 7)));
  const batches = [1, 2].map((n, k) => ({ x: float32([n, 4, 32, 32], values(n, k)) }));
  const exact = await collectStatistics(g, batches, { tensors: TAPS, samples: "all" });
  const sampled = await collectStatistics(g, batches, { tensors: TAPS, samples: 100 });
  const whole = await collectStatistics(g, batches, { tensors: TAPS, samples: 4096 });
  for (const t of TAPS) {
    const e = exact.get(t)!, s = sampled.get(t)!, w = whole.get(t)!;
    assert.deepEqual([s.populationMin, s.populationMax], [e.min, e.max], t);
    assert.ok(s.exponent <= e.exponent, t);
    assert.deepEqual([s.count, s.population], [3 * 103, 3 * 4096], t);
    // Taken whole, a derived tensor's histogram is the exact one.
    const a = w.toJSON(), b = e.toJSON();
    assert.deepEqual({ ...a, sum: 0, sumSquares: 0 }, { ...b, sum: 0, sumSquares: 0 }, t);
  }
});

Deno.test("samplingPlan() reads a LeakyRelu's input off its output, to within float32 rounding", async () => {
  // a = Neg(x) has no source to be derived from; its LeakyRelu's output b is tapped as well.
  const g = emptyGraph({
    opsetImports: [{ domain: "", version: 13 }],
    nodes: [
      node({ name: "neg", op: "Neg", inputs: ["x"], outputs: ["a"] }),
      node({
        name: "leaky",
        op: "LeakyRelu",
        inputs: ["a"],
        outputs: ["b"],
        attributes: { alpha: { type: "float", value: 0.1 } },
      }),
      node({ name: "sq", op: "Mul", inputs: ["b", "b"], outputs: ["y"] }),
    ],
    inputs: [{ name: "x", dtype: "float32", shape: ["n", 4, 32, 32] }],
    outputs: [{ name: "y", dtype: "float32" }],
  });
  const taps = ["a", "b"];
  const plan = samplingPlan(g, {
    tensors: taps,
    samples: 100,
    seed: 0,
    inputDims: { x: [1, 4, 32, 32] },
  });
  assert.deepEqual(plan.tensors.map((t) => t.name), ["b"]);
  assert.deepEqual(plan.derived.map((d) => [d.name, d.from]), [["a", "b"]]);
  // Nothing but the LeakyRelu reads a: onnxruntime may fuse it with a's producer.
  assert.deepEqual(plan.graph.nodes.filter((n) => n.inputs.includes("a")).map((n) => n.op), [
    "LeakyRelu",
  ]);
  const values = (n: number, k: number) =>
    Float32Array.from({ length: n * 4096 }, (_, i) => Math.sin(i * 0.37 + k) * (3 + (i % 7)));
  const batches = [1, 2].map((n, k) => ({ x: float32([n, 4, 32, 32], values(n, k)) }));
  const exact = await collectStatistics(g, batches, { tensors: taps, samples: "all" });
  const whole = await collectStatistics(g, batches, { tensors: taps, samples: 4096 });
  const sampled = await collectStatistics(g, batches, { tensors: taps, samples: 100 });
  const e = exact.get("a")!, w = whole.get("a")!, s = sampled.get("a")!;
  // Within one float32 rounding of the exact extremes, on the same grid, every value counted.
  for (const got of [w, s]) {
    const [min, max] = [got.populationMin, got.populationMax];
    assert.ok(Math.abs(min - e.min) <= 1e-6 * Math.abs(e.min), `${min} vs ${e.min}`);
    assert.equal(max, e.max);
  }
  assert.equal(w.exponent, e.exponent);
  assert.deepEqual([s.count, s.population, w.count], [3 * 103, 3 * 4096, 3 * 4096]);
  const counts = (h: typeof e) => h.toJSON().counts as number[];
  const moved = counts(w).reduce((m, c, i) => m + Math.abs(c - (counts(e)[i] ?? 0)), 0);
  assert.ok(moved <= 2, `${moved} values in another bin`);
  // Asked for a alone, the plan samples b in its place and gives b no histogram of its own.
  const alone = samplingPlan(g, {
    tensors: ["a"],
    samples: 100,
    seed: 0,
    inputDims: { x: [1, 4, 32, 32] },
  });
  assert.deepEqual(alone.tensors.map((t) => [t.name, t.internal]), [["b", true]]);
  assert.deepEqual(alone.derived.map((d) => [d.name, d.from]), [["a", "b"]]);
  const only = await collectStatistics(g, batches, { tensors: ["a"], samples: 100 });
  assert.deepEqual([...only.keys()], ["a"]);
  assert.deepEqual([only.get("a")!.populationMax, only.get("a")!.count], [e.max, 3 * 103]);
});

Deno.test("samplingPlan() takes larger tensors whole below opset 10 (Slice has no step there)", () => {
  const g = { ...chain(), opsetImports: [{ domain: "", version: 9 }] };
  const big = samplingPlan(g, {
    tensors: ["a"],
    samples: 100,
    seed: 0,
    inputDims: { x: [1, 4, 32, 32] },
  });
  assert.deepEqual([big.tensors.length, big.whole], [0, ["a"]]);
  const small = samplingPlan(g, {
    tensors: ["a"],
    samples: 4096,
    seed: 0,
    inputDims: { x: [1, 4, 32, 32] },
  });
  assert.deepEqual(small.tensors.map((t) => [t.name, t.sampled]), [["a", 4096]]);
  assert.ok(!small.graph.nodes.some((n) => n.op === "Slice"));
});

Deno.test("samplingPlan() derives through untapped monotone steps, exactly", async () => {
  // b, c and d are not tapped: e = 2 − (−0.5 · (a + 3)) / 6 and f = Clip(e) still follow from a.
  const taps = ["a", "e", "f", "y"];
  const plan = samplingPlan(chain(), {
    tensors: taps,
    samples: 100,
    seed: 0,
    inputDims: { x: [1, 4, 32, 32] },
  });
  assert.deepEqual(plan.tensors.map((t) => t.name), ["a", "y"]);
  assert.deepEqual(plan.derived.map((d) => [d.name, d.from, d.decreasing]), [
    ["e", "a", false],
    ["f", "e", false],
  ]);
  const g = chain();
  const values = (n: number, k: number) =>
    Float32Array.from({ length: n * 4096 }, (_, i) => Math.sin(i * 0.37 + k) * (3 + (i % 7)));
  const batches = [1, 2].map((n, k) => ({ x: float32([n, 4, 32, 32], values(n, k)) }));
  const exact = await collectStatistics(g, batches, { tensors: taps, samples: "all" });
  const whole = await collectStatistics(g, batches, { tensors: taps, samples: 4096 });
  for (const t of taps) {
    const a = whole.get(t)!.toJSON(), b = exact.get(t)!.toJSON();
    assert.deepEqual({ ...a, sum: 0, sumSquares: 0 }, { ...b, sum: 0, sumSquares: 0 }, t);
  }
});

Deno.test("samplingPlan() only anchors a tensor taken whole; extremes() reads it as ORT would", () => {
  const plan = samplingPlan(chain(), {
    tensors: ["a", "y"],
    samples: 4096,
    seed: 0,
    inputDims: { x: [1, 4, 32, 32] },
  });
  assert.deepEqual(plan.tensors.map((t) => [t.sample, t.min, t.max, t.sampled]), [
    ["a", undefined, undefined, 4096],
    ["y", undefined, undefined, 4096],
  ]);
  // The model pruned to what a and y need, and one ReduceMax each that only orders the run.
  assert.deepEqual(plan.graph.nodes.map((n) => n.op), [
    ...["Neg", "Add", "Mul", "Div", "Sub", "Mul"],
    ...["ReduceMax", "ReduceMax"],
  ]);
  assert.deepEqual(plan.graph.outputs.map((o) => o.name), [
    "a",
    "y",
    "a.calibration.anchor",
    "y.calibration.anchor",
  ]);
  // The first tapped tensor's node has the highest index: the walk reaches it first.
  assert.deepEqual(plan.graph.nodes.slice(-2).map((n) => n.inputs[0]), ["y", "a"]);
  assert.deepEqual(extremes(new Float32Array([2, -Infinity, 5])), { min: -Infinity, max: 5 });
  assert.deepEqual(extremes(new Float32Array([2, NaN, 5])), { min: NaN, max: NaN });
});

Deno.test("samplingPlan() slices a [batch, P] tensor as it is, at the flat path's positions", async () => {
  const g = emptyGraph({
    opsetImports: [{ domain: "", version: 13 }],
    nodes: [node({ name: "neg", op: "Neg", inputs: ["x"], outputs: ["a"] })],
    inputs: [{ name: "x", dtype: "float32", shape: ["n", 4096] }],
    outputs: [{ name: "a", dtype: "float32" }],
  });
  const plan = samplingPlan(g, {
    tensors: ["a"],
    samples: 100,
    seed: 0,
    inputDims: { x: [2, 4096] },
  });
  assert.deepEqual(plan.graph.nodes.map((n) => n.op), ["Neg", "ReduceMin", "ReduceMax", "Slice"]);
  // The same values as the [batch, 4, 32, 32] tensor of the same size, sliced flat.
  const values = Float32Array.from({ length: 2 * 4096 }, (_, i) => Math.sin(i * 0.37) * (i % 7));
  const flat = await collectStatistics(g, [{ x: float32([2, 4096], values) }], {
    tensors: ["a"],
    samples: 100,
  });
  const nchw = await collectStatistics(chain(), [{ x: float32([2, 4, 32, 32], values) }], {
    tensors: ["a"],
    samples: 100,
  });
  assert.deepEqual(flat.get("a")!.toJSON(), nchw.get("a")!.toJSON());
});

Deno.test("samplingPlan() drops the initializers of the nodes it prunes", () => {
  // Tapping only a: the nodes after it go, and so do their constants (three … one), which
  // onnxruntime would otherwise remove itself with a warning per initializer.
  const plan = samplingPlan(chain(), {
    tensors: ["a"],
    samples: 64,
    seed: 0,
    inputDims: { x: [1, 4, 32, 32] },
  });
  assert.deepEqual(plan.graph.nodes.filter((n) => n.name === "neg").length, 1);
  const read = new Set(plan.graph.nodes.flatMap((n) => n.inputs));
  const unread = [...plan.graph.initializers.keys()].filter((k) => !read.has(k));
  assert.deepEqual(unread, []);
  assert.ok(!plan.graph.initializers.has("three"));
});
