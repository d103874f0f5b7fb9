import assert from "node:assert/strict";
import { emptyGraph, node } from "@clipq/onnx/graph";
import { float32, int64 } from "@clipq/onnx/tensor";
import { planQuantization } from "./plan.ts";
import { floatTwin } from "./quantize.ts";
import { smallNet, yoloLike } from "./testdata/models.ts";

Deno.test("planQuantization() asks for the Relu/Clip output's range, not the conv's", () => {
  const plan = planQuantization(smallNet());
  const fused = Object.fromEntries(plan.fusedActivations);
  assert.equal(Object.keys(fused).length, 2);
  assert.ok(fused["conv1"]?.startsWith("relu"));
  assert.ok(fused["conv3"]?.startsWith("clip"));
  assert.ok(!plan.activations.includes("conv1") && !plan.activations.includes("conv3"));
  assert.ok(plan.activations.includes(fused["conv1"]!));
  // LeakyRelu does not fold: conv2's own output needs a range.
  assert.ok(plan.activations.includes("conv2"));
  // MaxPool and Resize share their input's scale: no range of their own.
  assert.ok(!plan.activations.some((t) => /^(maxpool|resize)/.test(t)));
});

Deno.test("planQuantization() lists weighted layers with their channel axes", () => {
  const plan = planQuantization(smallNet());
  const axes = Object.fromEntries(plan.weightedLayers.map((w) => [w.node, w.channelAxis]));
  // conv1 reads the RGB input padded to 4 channels (ops/lower.ts): listed under its own name, as
  // quantize writes it (its float twin is in floatTwin()).
  assert.deepEqual(axes, { conv1: 0, conv2: 0, conv3: 0, conv4: 0, fc: 0 });
});

Deno.test("planQuantization() head auto keeps the decode float and asks no range for head outputs", () => {
  const plan = planQuantization(yoloLike());
  assert.ok(!plan.activations.includes("head8") && !plan.activations.includes("head4"));
  const reasons = new Set(plan.excluded.map((e) => e.reason));
  assert.deepEqual([...reasons], ["decodes detections after the last weighted layer (head: auto)"]);
  // 2 × (Reshape, Transpose, Sigmoid, Mul, Reshape) + Concat, and per 1×1 head conv (run as an
  // int8 MatMul with a float output, ops/lower.ts) its transpose back and bias Add.
  assert.equal(plan.excluded.length, 15);
  // Every layer as quantize writes it: the stem conv on its padded input and the two 1×1 head convs
  // run as channels-last MatMuls (weight [in, out]: channel axis 1) included.
  const ops = new Map(floatTwin(yoloLike()).nodes.map((n) => [n.name, n.op]));
  assert.deepEqual(plan.weightedLayers.map((w) => [ops.get(w.node), w.channelAxis]), [
    ["Conv", 0],
    ["Conv", 0],
    ["MatMul", 1],
    ["Conv", 0],
    ["MatMul", 1],
  ]);
  // headOutputs narrows the rule; head false drops it.
  assert.equal(planQuantization(yoloLike(), { exclude: { head: false } }).excluded.length, 0);
});

Deno.test("planQuantization() keeps filter ops float and walks back from what they filter", () => {
  // conv → sigmoid → TopK(scores); conv2 → output: the sigmoid decodes scores, conv's output is raw.
  const g = emptyGraph({
    inputs: [{ name: "x", dtype: "float32", shape: [1, 4] }],
    outputs: [{ name: "y", dtype: "float32" }, { name: "idx", dtype: "int64" }],
    initializers: new Map([
      ["w", float32([4, 4], new Float32Array(16).fill(0.1))],
      ["k", int64([1], [2])],
    ]),
    nodes: [
      node({ name: "fc", op: "MatMul", inputs: ["x", "w"], outputs: ["h"] }),
      node({ name: "relu", op: "Relu", inputs: ["h"], outputs: ["r"] }),
      node({ name: "fc2", op: "MatMul", inputs: ["r", "w"], outputs: ["s"] }),
      node({ name: "sig", op: "Sigmoid", inputs: ["s"], outputs: ["p"] }),
      node({ name: "topk", op: "TopK", inputs: ["p", "k"], outputs: ["vals", "idx"] }),
      node({ name: "fc3", op: "MatMul", inputs: ["r", "w"], outputs: ["y"] }),
    ],
  });
  const plan = planQuantization(g, { headOutputs: ["y"] });
  const why = Object.fromEntries(plan.excluded.map((e) => [e.node, e.reason]));
  assert.match(why["topk"]!, /filters or selects detections/);
  assert.match(why["sig"]!, /decodes detections/);
  assert.equal(why["fc"], undefined);
  assert.equal(plan.fusedActivations.get("h"), "r");
  assert.deepEqual(plan.activations, ["x", "r"]);
});

Deno.test("planQuantization() keeps a head conv's output raw when only an index of it reaches the output", () => {
  // conv 3×3 → relu → 1×1 head conv → sigmoid heatmap → ArgMax (MoveNet's keypoint peaks) or a
  // Cast to int32: no float path leads back from the output, but the 1×1 conv is lowered to a
  // MatMul with a float output all the same, whose channels-last output has no original tensor.
  const graph = (reader: "ArgMax" | "Cast") =>
    emptyGraph({
      inputs: [{ name: "x", dtype: "float32", shape: [1, 4, 8, 8] }],
      outputs: [{ name: "y", dtype: reader === "ArgMax" ? "int64" : "int32" }],
      initializers: new Map([
        ["w", float32([4, 4, 3, 3], new Float32Array(144).fill(0.05))],
        ["w1", float32([2, 4, 1, 1], new Float32Array(8).fill(0.2))],
        ["b1", float32([2], [0.1, -0.1])],
      ]),
      nodes: [
        node({
          name: "conv",
          op: "Conv",
          inputs: ["x", "w"],
          outputs: ["c"],
          attributes: { pads: { type: "ints", value: [1, 1, 1, 1] } },
        }),
        node({ name: "relu", op: "Relu", inputs: ["c"], outputs: ["r"] }),
        node({ name: "head", op: "Conv", inputs: ["r", "w1", "b1"], outputs: ["h"] }),
        node({ name: "sig", op: "Sigmoid", inputs: ["h"], outputs: ["p"] }),
        reader === "ArgMax"
          ? node({
            name: "peak",
            op: "ArgMax",
            inputs: ["p"],
            outputs: ["y"],
            attributes: { axis: { type: "int", value: 1 } },
          })
          : node({
            name: "peak",
            op: "Cast",
            inputs: ["p"],
            outputs: ["y"],
            attributes: { to: { type: "int", value: 6 } },
          }),
      ],
    });
  for (const reader of ["ArgMax", "Cast"] as const) {
    const g = graph(reader);
    const plan = planQuantization(g);
    const made = new Set([...g.inputs.map((v) => v.name), ...g.nodes.flatMap((n) => n.outputs)]);
    // Every tensor asked for is one calibration can tap in the graph as given.
    assert.deepEqual(plan.activations, ["x", "r"], reader);
    assert.ok(plan.activations.every((t) => made.has(t)), reader);
    const why = Object.fromEntries(plan.excluded.map((e) => [e.node, e.reason]));
    if (reader === "ArgMax") assert.match(why["peak"]!, /filters or selects detections/);
    assert.ok(!plan.excluded.some((e) => e.node === "head"), JSON.stringify(plan.excluded));
  }
});

Deno.test("planQuantization() reports ops without a quantizer and non-float inputs", () => {
  const g = emptyGraph({
    inputs: [{ name: "x", dtype: "float32", shape: [2] }, {
      name: "i",
      dtype: "int64",
      shape: [2],
    }],
    outputs: [{ name: "y", dtype: "float32" }, { name: "j", dtype: "int64" }],
    initializers: new Map([["shape", int64([1], [2])]]),
    nodes: [
      node({ name: "erf", op: "Erf", inputs: ["x"], outputs: ["y"] }),
      node({ name: "rs", op: "Reshape", inputs: ["i", "shape"], outputs: ["j"] }),
    ],
  });
  const plan = planQuantization(g, { exclude: { head: false } });
  assert.deepEqual(plan.excluded, [
    { node: "erf", op: "Erf", reason: "no quantizer for op Erf" },
    { node: "rs", op: "Reshape", reason: "computes shapes or indices (no float32 output)" },
  ]);
});

Deno.test("planQuantization() quantizes FC layers after RoiAlign; only the last one's output is raw", () => {
  const fc = (name: string, x: string, y: string) =>
    node({
      name,
      op: "Gemm",
      inputs: [x, "w"],
      outputs: [y],
      attributes: { transB: { type: "int", value: 1 } },
    });
  const g = emptyGraph({
    inputs: [
      { name: "feat", dtype: "float32", shape: [1, 4, 8, 8] },
      { name: "rois", dtype: "float32", shape: [2, 4] },
      { name: "bi", dtype: "int64", shape: [2] },
    ],
    outputs: [{ name: "cls", dtype: "float32" }],
    initializers: new Map([["w", float32([4, 4], new Float32Array(16).fill(0.1))]]),
    nodes: [
      node({
        name: "roi",
        op: "RoiAlign",
        inputs: ["feat", "rois", "bi"],
        outputs: ["pooled"],
        attributes: {
          output_height: { type: "int", value: 1 },
          output_width: { type: "int", value: 1 },
        },
      }),
      node({ name: "flat", op: "Flatten", inputs: ["pooled"], outputs: ["f"] }),
      fc("fc6", "f", "h6"),
      node({ name: "relu6", op: "Relu", inputs: ["h6"], outputs: ["r6"] }),
      fc("cls_score", "r6", "cls"),
    ],
  });
  const plan = planQuantization(g);
  const why = Object.fromEntries(plan.excluded.map((e) => [e.node, e.reason]));
  assert.deepEqual(Object.keys(why), ["roi"]);
  assert.match(why["roi"]!, /filters or selects detections/);
  assert.deepEqual(plan.activations, ["pooled", "r6"]);
  assert.deepEqual(plan.weightedLayers.map((w) => [w.node, w.channelAxis]), [["fc6", 0], [
    "cls_score",
    0,
  ]]);
});

Deno.test("planQuantization() plans the graph quantize marks: an opset-10 HardSigmoid folds into its conv there too", () => {
  const g = emptyGraph({
    opsetImports: [{ domain: "", version: 10 }],
    inputs: [{ name: "x", dtype: "float32", shape: [1, 2, 4, 4] }],
    outputs: [{ name: "y", dtype: "float32" }],
    initializers: new Map([
      ["w", float32([2, 2, 1, 1], [1, 0.5, -0.5, 1])],
      ["b", float32([2], [0.1, -0.1])],
    ]),
    nodes: [
      node({ name: "conv", op: "Conv", inputs: ["x", "w", "b"], outputs: ["c"] }),
      node({ name: "gate", op: "HardSigmoid", inputs: ["c"], outputs: ["h"] }),
      node({ name: "conv2", op: "Conv", inputs: ["h", "w", "b"], outputs: ["y"] }),
    ],
  });
  // quantize raises the opset to 13 and folds the HardSigmoid (a Clip from opset 11 on) into the
  // conv: the conv's own output needs no range, as it would have at opset 10.
  const plan = planQuantization(g);
  assert.deepEqual(plan.activations, ["x", "h"]);
  assert.equal(plan.fusedActivations.get("c"), "h");
  // Per-tensor weights need opset 10 only: nothing is raised, the HardSigmoid stays between DQ/Q.
  assert.deepEqual(planQuantization(g, { weights: "per-tensor" }).activations, ["x", "c", "h"]);
});
