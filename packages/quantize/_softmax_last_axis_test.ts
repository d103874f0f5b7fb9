import assert from "node:assert/strict";
import { ModelBuilder } from "@clipq/onnx/builder";
import { float32 } from "@clipq/onnx/tensor";
import { softmaxLastAxis } from "./_softmax_last_axis.ts";
import { runGraph } from "./testdata/ort.ts";

/** Ultralytics' DFL on [1, 4·16, A]: Reshape → Transpose → Softmax(axis 1) → Conv 0..15 → Reshape. */
function dfl(anchors: number, opset = 17, bias = false) {
  const b = new ModelBuilder({ opset, seed: 3 });
  const x = b.reshape(b.input("x", [1, 64, anchors]), [1, 4, 16, anchors]);
  const s = b.softmax(b.transpose(x, [0, 2, 1, 3]), 1);
  const w = b.initializer(float32([1, 16, 1, 1], Array.from({ length: 16 }, (_, i) => i)));
  const inputs = bias ? [s, w, b.initializer(float32([1], [0.25]))] : [s, w];
  const y = b.op("Conv", inputs, { name: "dfl", shape: [1, 1, 4, anchors] });
  b.output(b.reshape(y, [1, 4, anchors]), "y");
  return b.build();
}

Deno.test("softmaxLastAxis() takes a DFL's Softmax over the last axis and gives the same boxes through onnxruntime", async () => {
  for (const bias of [false, true]) {
    const g = dfl(50, 17, bias);
    const { graph, notes } = softmaxLastAxis(g);
    assert.equal(notes.length, 1);
    assert.deepEqual(
      graph.nodes.map((n) => n.op),
      [
        "Reshape",
        "Transpose",
        "Transpose",
        "Softmax",
        "MatMul",
        ...(bias ? ["Add"] : []),
        "Transpose",
        "Reshape",
      ],
    );
    const sm = graph.nodes.find((n) => n.op === "Softmax")!;
    assert.deepEqual(sm.attributes.axis, { type: "int", value: -1 });
    const x = Float32Array.from({ length: 64 * 50 }, (_, i) => 3 * Math.sin(i * 0.7));
    const ya = (await runGraph(g, { x })).y!;
    const yb = (await runGraph(graph, { x })).y!;
    let max = 0;
    for (let i = 0; i < ya.length; i++) max = Math.max(max, Math.abs(ya[i]! - yb[i]!));
    assert.ok(max < 1e-5, `expected the same expectations but they differ by ${max}`);
    assert.ok(ya.some((v) => v > 1), "the test input should move the expectations off 7.5");
  }
});

Deno.test("softmaxLastAxis() leaves a Softmax below opset 13 alone (it flattens from the axis there)", () => {
  const g = dfl(10, 12);
  assert.equal(softmaxLastAxis(g).graph, g);
});
