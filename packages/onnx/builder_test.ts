import assert from "node:assert/strict";
import * as ort from "onnxruntime-node";
import { ModelBuilder, seededRandom, yoloLikeModel } from "./builder.ts";
import type { Graph } from "./graph.ts";
import { encode } from "./proto.ts";

async function runOrt(graph: Graph, feeds: Record<string, Float32Array>) {
  const session = await ort.InferenceSession.create(encode(graph));
  const inputs: Record<string, ort.Tensor> = {};
  for (const v of graph.inputs) {
    inputs[v.name] = new ort.Tensor("float32", feeds[v.name]!, v.shape as number[]);
  }
  const out = await session.run(inputs);
  await session.release();
  return out;
}

Deno.test("seededRandom() gives uniforms in [0, 1) and normals with mean 0, std 1", () => {
  const r = seededRandom(42);
  const u = r.uniforms(10000, 0, 1);
  assert.ok(u.every((v) => v >= 0 && v < 1));
  const n = r.normals(20000);
  const mean = n.reduce((a, b) => a + b, 0) / n.length;
  const variance = n.reduce((a, b) => a + (b - mean) ** 2, 0) / n.length;
  assert.ok(Math.abs(mean) < 0.03, `mean ${mean}`);
  assert.ok(Math.abs(variance - 1) < 0.05, `variance ${variance}`);
});

Deno.test("ModelBuilder builds every layer kind into a model ORT runs with the tracked shapes", async () => {
  const b = new ModelBuilder({ seed: 3 });
  const x = b.input("x", [1, 4, 16, 16]);
  let y = b.relu(b.batchNorm(b.conv(x, { outChannels: 8, kernel: 3 })));
  y = b.leakyRelu(b.conv(y, { outChannels: 8, kernel: 3, group: 2, dilation: 2, stride: 2 }), 0.2);
  y = b.relu6(b.convTranspose(y, { outChannels: 4, kernel: 2, stride: 2, group: 2 }));
  y = b.clip(b.hardSwish(y), -1, 3);
  y = b.add(b.mul(b.hardSigmoid(y), 2), b.tanh(b.sigmoid(y)));
  y = b.concat([y, b.resize(b.maxPool(y, { kernel: 2 }), 2)], 1);
  const pooled = b.averagePool(y, { kernel: 2, stride: 2 });
  b.output(pooled, "pooled");
  const flat = b.flatten(b.globalAveragePool(y));
  let z = b.softmax(b.gemm(flat, { out: 6 }));
  z = b.gemm(z, { out: 5, transB: false });
  z = b.matmul(b.reshape(z, [1, 1, 5]), { out: 3 });
  b.output(b.transpose(z, [0, 2, 1]), "z");
  const g = b.build();
  assert.deepEqual(g.outputs.map((o) => o.shape), [[1, 8, 8, 8], [1, 3, 1]]);
  const out = await runOrt(g, { x: seededRandom(1).normals(4 * 16 * 16) });
  assert.deepEqual(out.pooled!.dims, [1, 8, 8, 8]);
  assert.deepEqual(out.z!.dims, [1, 3, 1]);
  const zd = out.z!.data as Float32Array;
  assert.ok(zd.every(Number.isFinite));
  assert.ok(new Set(zd).size === 3, "outputs differ per feature");
});

Deno.test("ModelBuilder writes Clip and Resize in the form of older opsets", async () => {
  for (const opset of [9, 10, 11, 13]) {
    const b = new ModelBuilder({ opset });
    const x = b.input("x", [1, 2, 3, 3]);
    b.output(b.resize(b.clip(x, -0.5, 0.5), 2), "y");
    const g = b.build();
    assert.equal(g.nodes[0]!.inputs.length, opset >= 11 ? 3 : 1);
    assert.equal(g.nodes[1]!.op, opset >= 10 ? "Resize" : "Upsample");
    const input = Float32Array.from({ length: 18 }, (_, i) => i / 10 - 0.9);
    const y = (await runOrt(g, { x: input })).y!;
    assert.deepEqual(y.dims, [1, 2, 6, 6]);
    const d = y.data as Float32Array;
    assert.equal(d[0], -0.5);
    assert.equal(d[7], -0.5);
    assert.equal(d[71], 0.5);
  }
});

Deno.test("ModelBuilder conv weights are seeded and He-scaled", () => {
  const weight = (seed: number) => {
    const b = new ModelBuilder({ seed });
    b.output(b.conv(b.input("x", [1, 64, 4, 4]), { outChannels: 64, kernel: 3 }));
    return b.build().initializers.get("conv_0.weight")!.data as Float32Array;
  };
  const w = weight(5);
  assert.deepEqual(w, weight(5));
  assert.notDeepEqual(w, weight(6));
  const std = Math.sqrt(w.reduce((a, v) => a + v * v, 0) / w.length);
  assert.ok(Math.abs(std - Math.sqrt(2 / (64 * 9))) < 0.003, `std ${std}`);
});

Deno.test("ModelBuilder rejects unknown tensors and a reused name", () => {
  const b = new ModelBuilder();
  b.input("x", [1, 3, 4, 4]);
  assert.throws(() => b.relu("nope"), /"nope"/);
  assert.throws(() => b.input("x", [1]), /"x" is already used/);
  assert.throws(() => new ModelBuilder().build(), /no outputs/);
});

Deno.test("yoloLikeModel() has YOLOv3's 75 convs and ~62 M parameters at full width", () => {
  const g = yoloLikeModel({ width: 1, depth: 1, inputSize: 416 });
  let params = 0;
  for (const t of g.initializers.values()) params += t.data.length;
  assert.equal(g.nodes.filter((n) => n.op === "Conv").length, 75);
  assert.ok(params > 61e6 && params < 63e6, `params ${params}`);
  assert.deepEqual(g.outputs.map((o) => o.shape), [[1, 255, 13, 13], [1, 255, 26, 26], [
    1,
    255,
    52,
    52,
  ]]);
});

Deno.test("yoloLikeModel() small variants run in ORT", async () => {
  const g = yoloLikeModel({ width: 0.125, depth: 0.25, inputSize: 64, classes: 3 });
  const out = await runOrt(g, { images: seededRandom(2).uniforms(3 * 64 * 64, 0, 1) });
  assert.deepEqual(out.out8!.dims, [1, 24, 8, 8]);
  assert.ok((out.out32!.data as Float32Array).every(Number.isFinite));
});

Deno.test("ModelBuilder names layers and their weights after a given name", () => {
  const b = new ModelBuilder();
  const y = b.conv(b.input("x", [1, 2, 4, 4]), { outChannels: 2, kernel: 1, name: "stem" });
  assert.equal(y, "stem");
  b.output(b.batchNorm(y, { name: "stem_bn" }));
  const g = b.build();
  assert.deepEqual([...g.initializers.keys()], [
    "stem.weight",
    "stem.bias",
    "stem_bn.scale",
    "stem_bn.bias",
    "stem_bn.mean",
    "stem_bn.var",
  ]);
  assert.deepEqual(g.nodes.map((n) => n.name), ["stem", "stem_bn"]);
  assert.throws(
    () => b.relu6(b.conv(y, { outChannels: 2, kernel: 1, name: "stem" })),
    /"stem" is already used/,
  );
});
