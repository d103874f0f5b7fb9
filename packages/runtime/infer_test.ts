import assert from "node:assert/strict";
import { emptyGraph, float32, int64, node } from "@clipq/onnx";
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

Deno.test("withObservedValueInfo() leaves unknown the dims of what NonMaxSuppression keeps", async () => {
  // Static inputs, but how many boxes NMS keeps follows their values: the one run's count (2
  // here) would be wrong for the next image.
  const g = emptyGraph({
    opsetImports: [{ domain: "", version: 13 }],
    nodes: [
      node({
        name: "nms",
        op: "NonMaxSuppression",
        inputs: ["boxes", "scores", "most", "iou"],
        outputs: ["keep"],
      }),
      node({
        name: "f",
        op: "Cast",
        inputs: ["keep"],
        outputs: ["kept"],
        attributes: { to: { type: "int", value: 1 } },
      }),
      // An op static inference does not model: the run alone says what it gives.
      node({ name: "e", op: "EyeLike", inputs: ["kept"], outputs: ["eye"] }),
      node({ name: "r", op: "Relu", inputs: ["eye"], outputs: ["y"] }),
    ],
    initializers: new Map([
      ["most", int64([1], [10n])],
      ["iou", float32([1], [0.5])],
    ]),
    inputs: [
      { name: "boxes", dtype: "float32", shape: [1, 3, 4] },
      { name: "scores", dtype: "float32", shape: [1, 1, 3] },
    ],
    outputs: [{ name: "y", dtype: "float32" }],
  });
  const out = await withObservedValueInfo(g, {
    boxes: float32([1, 3, 4], [0, 0, 1, 1, 0, 0, 1, 1, 5, 5, 6, 6]),
    scores: float32([1, 1, 3], [0.9, 0.8, 0.7]),
  });
  const shapes = Object.fromEntries(out.valueInfo.map((v) => [v.name, v.shape]));
  assert.deepEqual(shapes, { keep: [null, 3], kept: [null, 3], eye: [null, null] });
});
