/**
 * Static shape inference (@clipq/onnx/shapes) against what onnxruntime reports when every tensor
 * of the real PP-OCR models is tapped.
 */
import assert from "node:assert/strict";
import { decode, float32, type Graph } from "@clipq/onnx";
import { inferShapes } from "@clipq/onnx/shapes";
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

async function agree(graph: Graph, dims: number[]) {
  const x = float32(dims, seeded(dims.reduce((a, b) => a * b, 1), 11));
  const observed = await inferShapesByRunning(graph, { x });
  const inferred = inferShapes(graph, { inputShapes: { x: dims } });
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
