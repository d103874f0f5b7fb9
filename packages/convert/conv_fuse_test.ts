import assert from "node:assert/strict";
import * as ort from "onnxruntime-node";
import { emptyGraph, type Graph, node } from "@clipq/onnx/graph";
import { float32, int64 } from "@clipq/onnx/tensor";
import { encode } from "@clipq/onnx/proto";
import { fuseConvPadBias } from "./conv_fuse.ts";

function padPool(value: number, pads: number[]): Graph {
  return emptyGraph({
    inputs: [{ name: "x", dtype: "float32", shape: [1, 2, 5, 5] }],
    outputs: [{ name: "y", dtype: "float32" }],
    initializers: new Map([["p", int64([8], pads)], ["v", float32([], [value])]]),
    nodes: [
      node({ name: "pad", op: "Pad", inputs: ["x", "p", "v"], outputs: ["xp"] }),
      node({
        name: "pool",
        op: "MaxPool",
        inputs: ["xp"],
        outputs: ["y"],
        attributes: {
          kernel_shape: { type: "ints", value: [3, 3] },
          strides: { type: "ints", value: [2, 2] },
        },
      }),
    ],
  });
}

async function run(g: Graph, x: Float32Array): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(encode(g));
  const out = await s.run({ x: new ort.Tensor("float32", x, [1, 2, 5, 5]) });
  await s.release();
  return out.y!.data as Float32Array;
}

Deno.test("fuseConvPadBias() moves a −∞ Pad into the MaxPool's pads, same outputs", async () => {
  const g = padPool(-Infinity, [0, 0, 0, 1, 0, 0, 2, 1]);
  const fused = fuseConvPadBias(g);
  assert.deepEqual(fused.nodes.map((n) => n.op), ["MaxPool"]);
  assert.deepEqual(fused.nodes[0]!.attributes.pads?.value, [0, 1, 2, 1]);
  assert.equal(fused.initializers.size, 0);
  const x = Float32Array.from({ length: 50 }, (_, i) => Math.sin(i) - 2);
  assert.deepEqual(await run(fused, x), await run(g, x));
});

Deno.test("fuseConvPadBias() keeps a Pad of another value, or one as wide as the kernel", () => {
  assert.equal(fuseConvPadBias(padPool(0, [0, 0, 0, 1, 0, 0, 2, 1])).nodes.length, 2);
  assert.equal(fuseConvPadBias(padPool(-Infinity, [0, 0, 3, 0, 0, 0, 0, 0])).nodes.length, 2);
});
