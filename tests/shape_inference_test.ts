/**
 * Static shape inference (@clipq/onnx/shapes) against what onnxruntime reports when every tensor
 * of the real PP-OCR models is tapped.
 */
import assert from "node:assert/strict";
import { decode, float32, type Graph } from "@clipq/onnx";
import { inferShapes } from "@clipq/onnx/shapes";
import { ModelBuilder, yoloLikeModel } from "@clipq/onnx/builder";
import { upgradeOpset } from "@clipq/onnx/upgrade";
import { inferShapesByRunning } from "@clipq/runtime";
import { ppocrModel } from "../tools/assets.ts";

function seeded(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

async function agree(graph: Graph, dims: number[], input = "x") {
  const x = float32(dims, seeded(dims.reduce((a, b) => a * b, 1), 11));
  const observed = await inferShapesByRunning(graph, { [input]: x });
  const inferred = inferShapes(graph, { inputShapes: { [input]: dims } });
  const wrong: string[] = [];
  let checked = 0;
  for (const n of graph.nodes) {
    for (const name of n.outputs) {
      const want = observed.get(name);
      assert.ok(want, `onnxruntime reported ${name}`);
      const got = inferred.get(name);
      checked++;
      if (got?.dtype !== want.dtype || JSON.stringify(got?.shape) !== JSON.stringify(want.shape)) {
        wrong.push(
          `${n.op} ${name}: inferred ${got?.dtype} ${
            JSON.stringify(got?.shape)
          }, ORT ${want.dtype} ${JSON.stringify(want.shape)}`,
        );
      }
    }
  }
  assert.deepEqual(wrong, []);
  assert.equal(checked, graph.nodes.reduce((a, n) => a + n.outputs.length, 0));
}

for (
  const [which, dims] of [
    ["det", [1, 3, 320, 320]],
    ["rec", [1, 3, 48, 320]],
    ["cls", [1, 3, 48, 192]],
  ] as const
) {
  Deno.test(`inferShapes() matches onnxruntime on every tensor of PP-OCR ${which}`, async () => {
    await agree(decode(Deno.readFileSync(await ppocrModel(which))), [...dims]);
  });
}

Deno.test("inferShapes() keeps symbolic batch and width through PP-OCR rec", async () => {
  const g = decode(Deno.readFileSync(await ppocrModel("rec")));
  const shapes = inferShapes(g);
  const out = shapes.get(g.outputs[0]!.name)!;
  assert.equal(out.dtype, "float32");
  assert.equal(out.shape?.[0], "p2o.DynamicDimension.0");
  assert.equal(out.shape?.[2], 6625);
});

Deno.test("inferShapes() matches onnxruntime on PP-OCR rec upgraded to opset 17", async () => {
  const g = upgradeOpset(decode(Deno.readFileSync(await ppocrModel("rec"))), { target: 17 });
  await agree(g, [2, 3, 48, 160]);
});

Deno.test("inferShapes() matches onnxruntime on a YOLOv3-like builder model", async () => {
  const g = yoloLikeModel({ width: 0.0625, depth: 0.1, inputSize: 96, classes: 3 });
  await agree(g, [1, 3, 96, 96], "images");
});

Deno.test("inferShapes() matches onnxruntime on odd sizes: ceil-mode pools, strided convs, Gemm", async () => {
  const b = new ModelBuilder({ seed: 1 });
  let x = b.input("x", [1, 3, 37, 29]);
  x = b.conv(x, { outChannels: 6, kernel: [3, 5], stride: 2, pad: 1 });
  x = b.op("MaxPool", [x], {
    attributes: {
      kernel_shape: { type: "ints", value: [3, 3] },
      strides: { type: "ints", value: [2, 2] },
      ceil_mode: { type: "int", value: 1 },
    },
    shape: [1, 6, 9, 7], // the builder needs it for the next layer; ORT below is the judge
  });
  x = b.convTranspose(x, { outChannels: 4, kernel: 3, stride: 2, pad: 1, outputPadding: 1 });
  x = b.averagePool(x, { kernel: 2, stride: 2 });
  x = b.flatten(x);
  x = b.gemm(x, { out: 5 });
  b.output(b.softmax(x));
  const g = b.build();
  await agree(g, [1, 3, 37, 29]);
});
