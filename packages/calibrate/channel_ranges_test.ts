import assert from "node:assert/strict";
import { emptyGraph, node } from "@clipq/onnx/graph";
import { float32 } from "@clipq/onnx/tensor";
import { ConfigError, ModelError } from "@clipq/onnx/errors";
import { measureChannelRanges } from "./channel_ranges.ts";

const graph = emptyGraph({
  inputs: [{ name: "x", dtype: "float32", shape: [2, 3, 2] }],
  outputs: [{ name: "y", dtype: "float32" }, { name: "s", dtype: "float32" }],
  nodes: [
    node({ name: "r", op: "Relu", inputs: ["x"], outputs: ["y"] }),
    node({ name: "n", op: "Neg", inputs: ["x"], outputs: ["m"] }),
    node({
      name: "sum",
      op: "ReduceSum",
      inputs: ["m"],
      outputs: ["s"],
      attributes: { keepdims: { type: "int", value: 0 } },
    }),
  ],
});
// Batch of two, three channels of two values each.
const a = float32([2, 3, 2], [1, -2, 3, 4, -5, 6, 7, 8, 9, -10, 11, 12]);
const b = float32([2, 3, 2], [0, 0, 0, 0, 0, 100, 0, 0, 0, 0, 0, 0]);

Deno.test("measureChannelRanges() takes each channel's extremes over batch items and batches, for tapped and output tensors", async () => {
  const r = await measureChannelRanges(graph, [{ x: a }, { x: b }], { tensors: ["m", "y"] });
  assert.deepEqual([...r.get("m")!.min], [-8, -9, -100]);
  assert.deepEqual([...r.get("m")!.max], [2, 10, 5]);
  assert.deepEqual([...r.get("y")!.max], [8, 9, 100]);
  assert.deepEqual([...r.get("y")!.min], [0, 0, 0]);
});

Deno.test("measureChannelRanges() wants tensors, batches, and tensors with a channel axis", async () => {
  await assert.rejects(measureChannelRanges(graph, [{ x: a }], { tensors: [] }), ConfigError);
  await assert.rejects(measureChannelRanges(graph, [], { tensors: ["y"] }), /at least one batch/);
  await assert.rejects(
    measureChannelRanges(graph, [{ x: a }], { tensors: ["s"] }),
    (e) => e instanceof ModelError && /tensor "s".*rank ≥ 2/.test(e.message),
  );
});
