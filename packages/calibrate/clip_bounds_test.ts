import assert from "node:assert/strict";
import { emptyGraph, float32, type Graph, type Node, node, type Tensor } from "@clipq/onnx";
import { clipBounds } from "./clip_bounds.ts";

function graph(nodes: Node[], initializers: [string, Tensor][] = [], opset = 13): Graph {
  return emptyGraph({
    inputs: [{ name: "x", dtype: "float32", shape: [1, 3, 4, 4] }],
    nodes,
    initializers: new Map(initializers),
    outputs: [{ name: nodes.at(-1)!.outputs[0]!, dtype: "float32" }],
    opsetImports: [{ domain: "", version: opset }],
  });
}

const scalar = (v: number) => float32([], [v]);

Deno.test("clipBounds() gives [0, 6] after Relu6 and after Clip(0, 6) in both forms", () => {
  const g = graph([
    node({ name: "r6", op: "Relu6", inputs: ["x"], outputs: ["a"] }),
    node({ name: "c", op: "Clip", inputs: ["x", "lo", "hi"], outputs: ["b"] }),
    node({
      name: "k",
      op: "Constant",
      inputs: [],
      outputs: ["six"],
      attributes: { value: { type: "tensor", value: scalar(6) } },
    }),
    node({ name: "c2", op: "Clip", inputs: ["x", "", "six"], outputs: ["d"] }),
  ], [["lo", scalar(0)], ["hi", scalar(6)]]);
  const { ranges, unbounded, partial } = clipBounds(g);
  assert.deepEqual(ranges.get("a"), { min: 0, max: 6, source: "clip-bound" });
  assert.deepEqual(ranges.get("b"), { min: 0, max: 6, source: "clip-bound" });
  // Clip with only a max is one-sided.
  assert.ok(unbounded.includes("d"));
  assert.deepEqual(partial.get("d"), { min: -Infinity, max: 6 });
  assert.ok(!unbounded.includes("six"), "constants are not activations");
  const old = graph(
    [
      node({
        name: "c",
        op: "Clip",
        inputs: ["x"],
        outputs: ["y"],
        attributes: { min: { type: "float", value: 0 }, max: { type: "float", value: 6 } },
      }),
    ],
    [],
    9,
  );
  assert.deepEqual(clipBounds(old).ranges.get("y"), { min: 0, max: 6, source: "clip-bound" });
});

Deno.test("clipBounds() gives [0, 12] after Add of two Relu6 outputs", () => {
  const g = graph([
    node({ name: "a", op: "Relu6", inputs: ["x"], outputs: ["p"] }),
    node({ name: "b", op: "Relu6", inputs: ["x"], outputs: ["q"] }),
    node({ name: "s", op: "Add", inputs: ["p", "q"], outputs: ["y"] }),
  ]);
  assert.deepEqual(clipBounds(g).ranges.get("y"), { min: 0, max: 12, source: "propagated" });
});

Deno.test("clipBounds() gives [0, 1] after HardSigmoid, Sigmoid and Softmax, [-1, 1] after Tanh", () => {
  const g = graph([
    node({
      name: "h",
      op: "HardSigmoid",
      inputs: ["x"],
      outputs: ["h"],
      attributes: { alpha: { type: "float", value: 1 / 6 } },
    }),
    node({ name: "s", op: "Sigmoid", inputs: ["x"], outputs: ["s"] }),
    node({ name: "m", op: "Softmax", inputs: ["x"], outputs: ["m"] }),
    node({ name: "t", op: "Tanh", inputs: ["x"], outputs: ["t"] }),
  ]);
  const { ranges } = clipBounds(g);
  for (const k of ["h", "s", "m"]) {
    assert.deepEqual(ranges.get(k), { min: 0, max: 1, source: "clip-bound" }, k);
  }
  assert.deepEqual(ranges.get("t"), { min: -1, max: 1, source: "clip-bound" });
});

Deno.test("Relu and HardSwish give one-sided bounds that stay unbounded", () => {
  const g = graph([
    node({ name: "r", op: "Relu", inputs: ["x"], outputs: ["r"] }),
    node({ name: "w", op: "HardSwish", inputs: ["x"], outputs: ["w"] }),
  ]);
  const { ranges, unbounded, partial } = clipBounds(g);
  assert.equal(ranges.size, 0);
  assert.deepEqual(unbounded, ["x", "r", "w"]);
  assert.deepEqual(partial.get("r"), { min: 0, max: Infinity });
  assert.deepEqual(partial.get("w"), { min: -0.375, max: Infinity });
});

Deno.test("SiLU written as x · Sigmoid(x) is bounded below by −0.2785, and on both sides for a bounded x", () => {
  const g = graph([
    node({ name: "s", op: "Sigmoid", inputs: ["x"], outputs: ["s"] }),
    node({ name: "m", op: "Mul", inputs: ["x", "s"], outputs: ["m"] }),
    node({ name: "c", op: "Clip", inputs: ["x", "lo", "hi"], outputs: ["c"] }),
    node({ name: "cs", op: "Sigmoid", inputs: ["c"], outputs: ["cs"] }),
    node({ name: "cm", op: "Mul", inputs: ["cs", "c"], outputs: ["cm"] }),
  ], [["lo", scalar(-4)], ["hi", scalar(2)]]);
  const { ranges, unbounded, partial } = clipBounds(g);
  assert.ok(unbounded.includes("m"));
  const p = partial.get("m")!;
  assert.equal(p.max, Infinity);
  assert.ok(Math.abs(p.min - -0.278464542761074) < 1e-12, `found ${p.min}`);
  // x in [−4, 2]: the minimum inside, the maximum at 2 · σ(2).
  const r = ranges.get("cm")!;
  assert.ok(Math.abs(r.min - -0.278464542761074) < 1e-12);
  assert.ok(Math.abs(r.max - 2 / (1 + Math.exp(-2))) < 1e-12);
});

Deno.test("the input spec bounds the input and propagates through pooling, resize and concat", () => {
  const g = graph([
    node({
      name: "p",
      op: "MaxPool",
      inputs: ["x"],
      outputs: ["p"],
      attributes: { kernel_shape: { type: "ints", value: [2, 2] } },
    }),
    node({ name: "u", op: "Resize", inputs: ["p", "", "sc"], outputs: ["u"] }),
    node({ name: "r6", op: "Relu6", inputs: ["x"], outputs: ["r"] }),
    node({
      name: "c",
      op: "Concat",
      inputs: ["u", "r"],
      outputs: ["c"],
      attributes: { axis: { type: "int", value: 1 } },
    }),
    node({ name: "pad", op: "Pad", inputs: ["c", "pads", "pv"], outputs: ["d"] }),
    node({ name: "g", op: "GlobalAveragePool", inputs: ["d"], outputs: ["g"] }),
    node({ name: "f", op: "Flatten", inputs: ["g"], outputs: ["f"] }),
  ], [["sc", float32([4], [1, 1, 2, 2])], ["pv", scalar(-9)]]);
  const spec = { scale: 1 / 255, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
  const { ranges, unbounded } = clipBounds(g, { inputs: { x: spec } });
  const lo = Math.min(-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225);
  const hi = Math.max(0.515 / 0.229, 0.544 / 0.224, 0.594 / 0.225);
  const x = ranges.get("x")!;
  assert.equal(x.source, "input-spec");
  assert.ok(Math.abs(x.min - lo) < 1e-12 && Math.abs(x.max - hi) < 1e-12);
  assert.deepEqual(ranges.get("u"), { min: x.min, max: x.max, source: "propagated" });
  // Relu6 of the input is [0, x.max]: the union with it is the input's range.
  assert.deepEqual(ranges.get("r"), { min: 0, max: x.max, source: "clip-bound" });
  assert.deepEqual(ranges.get("c"), { min: x.min, max: x.max, source: "propagated" });
  assert.deepEqual(ranges.get("f"), { min: -9, max: x.max, source: "propagated" });
  assert.deepEqual(unbounded, []);
});

Deno.test("Mul, Sub and Div use interval arithmetic; Div by an interval holding 0 is unbounded", () => {
  const g = graph([
    node({ name: "a", op: "Relu6", inputs: ["x"], outputs: ["a"] }),
    node({ name: "t", op: "Tanh", inputs: ["x"], outputs: ["t"] }),
    node({ name: "m", op: "Mul", inputs: ["a", "t"], outputs: ["m"] }),
    node({ name: "k", op: "Mul", inputs: ["a", "neg"], outputs: ["k"] }),
    node({ name: "s", op: "Sub", inputs: ["a", "t"], outputs: ["s"] }),
    node({ name: "d", op: "Div", inputs: ["a", "two"], outputs: ["d"] }),
    node({ name: "z", op: "Div", inputs: ["a", "t"], outputs: ["z"] }),
    node({ name: "mx", op: "Max", inputs: ["t", "a"], outputs: ["mx"] }),
  ], [["neg", float32([3], [-0.5, 1, 2])], ["two", scalar(2)]]);
  const { ranges, unbounded } = clipBounds(g);
  const mm = (k: string) => [ranges.get(k)?.min, ranges.get(k)?.max];
  assert.deepEqual(mm("m"), [-6, 6]);
  assert.deepEqual(mm("k"), [-3, 12]);
  assert.deepEqual(mm("s"), [-1, 7]);
  assert.deepEqual(mm("d"), [0, 3]);
  assert.deepEqual(mm("mx"), [0, 6]);
  assert.ok(unbounded.includes("z"));
});

Deno.test("a Conv feeding only a Clip takes the clip bound as one fused group", () => {
  const w = float32([2, 3, 1, 1], [1, 2, 3, 4, 5, 6]);
  const g = graph([
    node({ name: "conv", op: "Conv", inputs: ["x", "w"], outputs: ["c"] }),
    node({ name: "clip", op: "Clip", inputs: ["c", "lo", "hi"], outputs: ["y"] }),
    node({ name: "conv2", op: "Conv", inputs: ["y", "w2"], outputs: ["c2"] }),
    node({ name: "relu", op: "Relu", inputs: ["c2"], outputs: ["z"] }),
  ], [["w", w], ["w2", float32([1, 2, 1, 1], [1, 1])], ["lo", scalar(0)], ["hi", scalar(4)]]);
  const { ranges, fused, unbounded } = clipBounds(g);
  assert.deepEqual(ranges.get("c"), { min: 0, max: 4, source: "clip-bound" });
  assert.deepEqual([...fused], [["c", "y"]]);
  // Relu is one-sided: no fusion bound.
  assert.ok(unbounded.includes("c2") && unbounded.includes("z"));
});

Deno.test("shape computations are not activations", () => {
  const g = graph([
    node({ name: "s", op: "Shape", inputs: ["x"], outputs: ["s"] }),
    node({ name: "g", op: "Gather", inputs: ["s", "i"], outputs: ["g"] }),
    node({ name: "r", op: "Reshape", inputs: ["x", "s"], outputs: ["y"] }),
  ], [["i", float32([], [0])]]);
  assert.deepEqual(clipBounds(g).unbounded, ["x", "y"]);
});

Deno.test("malformed input specs are refused with the key path", () => {
  const g = graph([node({ name: "r", op: "Relu", inputs: ["x"], outputs: ["y"] })]);
  assert.throws(
    () => clipBounds(g, { inputs: { x: { scale: 1, mean: [0], std: [0] } } }),
    /inputs\.x\.std/,
  );
  assert.throws(() => clipBounds(g, { inputs: { nope: { min: 0, max: 1 } } }), /inputs\.nope/);
  assert.throws(() => clipBounds(g, { inputs: { x: { min: 2, max: 1 } } }), /min ≤ max/);
});
