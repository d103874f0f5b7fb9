import assert from "node:assert/strict";
import { emptyGraph, float32, node } from "@clipq/onnx";
import { inferShapesByRunning, withObservedValueInfo } from "./infer.ts";

const eye = (shape: (number | string)[]) =>
  emptyGraph({
    nodes: [
      node({ name: "e", op: "EyeLike", inputs: ["x"], outputs: ["h"] }),
      node({ name: "t", op: "Transpose", inputs: ["h"], outputs: ["t"] }),
      node({ name: "r", op: "Relu", inputs: ["t"], outputs: ["y"] }),
    ],
    inputs: [{ name: "x", dtype: "float32", shape }],
    outputs: [{ name: "y", dtype: "float32" }],
  });

Deno.test("inferShapesByRunning() reports every node output and the inputs", async () => {
  const shapes = await inferShapesByRunning(eye([2, 3]), {
    x: float32([2, 3], new Float32Array(6)),
  });
  assert.deepEqual([...shapes.keys()].sort(), ["h", "t", "x", "y"]);
  assert.deepEqual(shapes.get("t"), { dtype: "float32", shape: [3, 2] });
});

Deno.test("withObservedValueInfo() fills what static inference misses, keeping dims unknown when inputs are symbolic", async () => {
  const x = float32([2, 3], new Float32Array(6));
  const fixed = await withObservedValueInfo(eye([2, 3]), { x });
  assert.deepEqual(fixed.valueInfo, [
    { name: "h", dtype: "float32", shape: [2, 3] },
    { name: "t", dtype: "float32", shape: [3, 2] },
  ]);
  const symbolic = await withObservedValueInfo(eye(["n", 3]), { x });
  assert.deepEqual(symbolic.valueInfo, [
    { name: "h", dtype: "float32", shape: [null, null] },
    { name: "t", dtype: "float32", shape: [null, null] },
  ]);
});
