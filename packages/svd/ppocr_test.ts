import assert from "node:assert/strict";
import * as ort from "onnxruntime-node";
import { decode, encode, type Graph } from "@clipq/onnx";
import { ppocrModel } from "../../tools/assets.ts";
import { svdCompress } from "./compress.ts";
import { gaussianArray } from "./random.ts";

async function recognize(
  graph: Graph,
  x: Float32Array,
): Promise<{ dims: readonly number[]; data: Float32Array }> {
  const s = await ort.InferenceSession.create(encode(graph), { intraOpNumThreads: 1 });
  const out = await s.run({ x: new ort.Tensor("float32", x, [1, 3, 48, 320]) });
  await s.release();
  const y = out[graph.outputs[0]!.name]!;
  return { dims: y.dims, data: y.data as Float32Array };
}

Deno.test("svdCompress() splits the FC MatMuls of PP-OCRv4 rec and the model still runs", async () => {
  const g = decode(Deno.readFileSync(await ppocrModel("rec")));
  const { graph, layers } = await svdCompress(g, {
    rankFn: ({ rows, cols }) => Math.ceil(0.5 * Math.min(rows, cols)),
  });
  console.table(layers.map((l) => ({
    node: l.node,
    shape: `${l.rows}×${l.cols}`,
    rank: l.rank,
    keptEnergy: l.keptEnergy.toFixed(4),
    relativeError: l.relativeError.toFixed(4),
    skipped: l.skipped ?? "",
  })));
  const split = layers.filter((l) => !l.skipped);
  // 120×360, 120×240, 240×120 (twice each) and the 120×6625 classifier; 120×120 saves nothing at 60.
  assert.deepEqual(split.map((l) => `${l.rows}×${l.cols}@${l.rank}`), [
    "120×360@60",
    "120×240@60",
    "240×120@60",
    "120×360@60",
    "120×240@60",
    "240×120@60",
    "120×6625@60",
  ]);
  assert.equal(layers.filter((l) => l.skipped?.includes("saves no parameters")).length, 2);
  for (const l of split) {
    assert.ok(l.relativeError > 0 && l.relativeError < 1);
    assert.ok(Math.abs(l.relativeError ** 2 + l.keptEnergy - 1) < 1e-9);
  }
  assert.equal(graph.nodes.filter((n) => n.op === "MatMul").length, 13 + split.length);

  const x = gaussianArray(3 * 48 * 320, 1).map((v) => 0.5 * v);
  const before = await recognize(g, x);
  const after = await recognize(graph, x);
  assert.deepEqual(after.dims, before.dims);
  assert.equal(after.dims[2], 6625);
  // Softmax rows still sum to 1: the compressed model computes a real distribution.
  const t = after.dims[1]!;
  for (let i = 0; i < t; i++) {
    let s = 0;
    for (let c = 0; c < 6625; c++) s += after.data[i * 6625 + c]!;
    assert.ok(Math.abs(s - 1) < 1e-3);
  }
  // Near-lossless at 99.99 % energy: the same best class at every time step.
  const fine = await svdCompress(g, { energy: 0.9999 });
  const close = await recognize(fine.graph, x);
  for (let i = 0; i < t; i++) {
    const row = (d: Float32Array) => d.subarray(i * 6625, (i + 1) * 6625);
    const argmax = (r: Float32Array) => r.indexOf(Math.max(...r));
    assert.equal(argmax(row(close.data)), argmax(row(before.data)), `time step ${i}`);
  }
});
