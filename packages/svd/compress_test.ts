import assert from "node:assert/strict";
import * as ort from "onnxruntime-node";
import { emptyGraph, encode, float32, type Graph, node, type Tensor } from "@clipq/onnx";
import { ConfigError } from "@clipq/onnx/errors";
import { svdCompress } from "./compress.ts";
import { svd } from "./exact.ts";
import { matmulSync } from "./matmul.ts";
import { gaussianArray } from "./random.ts";

async function run(graph: Graph, feeds: Record<string, Tensor>): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(encode(graph), { intraOpNumThreads: 1 });
  const inputs: Record<string, ort.Tensor> = {};
  for (const [k, v] of Object.entries(feeds)) {
    inputs[k] = new ort.Tensor("float32", v.data as Float32Array, [...v.dims]);
  }
  const out = await s.run(inputs);
  await s.release();
  return out[graph.outputs[0]!.name]!.data as Float32Array;
}

/** An exactly rank-r rows×cols matrix. */
function lowRank(rows: number, cols: number, r: number, seed: number): Float32Array {
  return Float32Array.from(
    matmulSync(gaussianArray(rows * r, seed), gaussianArray(r * cols, seed + 1), rows, r, cols),
  );
}

function relDiff(a: Float32Array, b: Float32Array): number {
  let d = 0, n = 0;
  for (let i = 0; i < a.length; i++) {
    d += (a[i]! - b[i]!) ** 2;
    n += b[i]! ** 2;
  }
  return Math.sqrt(d / n);
}

function matmulModel(w: Float32Array, dims: [number, number], x: number[]): Graph {
  return emptyGraph({
    nodes: [node({ name: "fc", op: "MatMul", inputs: ["x", "w"], outputs: ["y"] })],
    initializers: new Map([["w", float32(dims, w)]]),
    inputs: [{ name: "x", dtype: "float32", shape: x }],
    outputs: [{ name: "y", dtype: "float32", shape: [...x.slice(0, -1), dims[1]] }],
  });
}

function gemmModel(
  w: Float32Array,
  rows: number,
  cols: number,
  opts: { transB: number; alpha: number; beta: number; bias: boolean; batch: number },
): Graph {
  const stored = opts.transB
    ? Float32Array.from(
      { length: rows * cols },
      (_, i) => w[(i % rows) * cols + Math.floor(i / rows)]!,
    )
    : w;
  const init = new Map<string, Tensor>([
    ["W", float32(opts.transB ? [cols, rows] : [rows, cols], stored)],
  ]);
  if (opts.bias) init.set("C", float32([cols], gaussianArray(cols, 99)));
  return emptyGraph({
    nodes: [node({
      name: "gemm",
      op: "Gemm",
      inputs: ["x", "W", ...(opts.bias ? ["C"] : [])],
      outputs: ["y"],
      attributes: {
        transB: { type: "int", value: opts.transB },
        alpha: { type: "float", value: opts.alpha },
        beta: { type: "float", value: opts.beta },
      },
    })],
    initializers: init,
    inputs: [{ name: "x", dtype: "float32", shape: [opts.batch, rows] }],
    outputs: [{ name: "y", dtype: "float32", shape: [opts.batch, cols] }],
  });
}

Deno.test("svdCompress() keeps a MatMul's outputs at full rank of its weight", async () => {
  const w = lowRank(96, 80, 12, 1);
  const g = matmulModel(w, [96, 80], [4, 96]);
  const { graph, layers } = await svdCompress(g, { rank: 12 });
  assert.equal(layers[0]?.rank, 12);
  assert.deepEqual(graph.nodes.map((n) => n.name), ["fc_svd_a", "fc_svd_b"]);
  assert.deepEqual(graph.nodes.map((n) => n.op), ["MatMul", "MatMul"]);
  assert.deepEqual([...graph.initializers.keys()].sort(), ["w_svd_a", "w_svd_b"]);
  assert.deepEqual(graph.initializers.get("w_svd_a")?.dims, [96, 12]);
  assert.deepEqual(graph.valueInfo.find((v) => v.name === "y_svd")?.shape, [4, 12]);
  assert.ok(layers[0]!.relativeError < 1e-5);
  const x = { x: float32([4, 96], gaussianArray(4 * 96, 5)) };
  assert.ok(relDiff(await run(graph, x), await run(g, x)) < 1e-4);
});

Deno.test("svdCompress() keeps Gemm outputs with transB, alpha, beta and bias", async () => {
  const w = lowRank(72, 64, 10, 3);
  for (const transB of [0, 1]) {
    for (const bias of [false, true]) {
      const g = gemmModel(w, 72, 64, { transB, alpha: 0.5, beta: 2, bias, batch: 3 });
      const { graph, layers } = await svdCompress(g, { rank: 10 });
      assert.equal(layers[0]?.rows, 72);
      assert.equal(layers[0]?.cols, 64);
      assert.deepEqual(graph.nodes.map((n) => n.op), ["Gemm", "Gemm"]);
      const wa = graph.initializers.get("W_svd_a")!;
      assert.deepEqual(wa.dims, transB ? [10, 72] : [72, 10]);
      const x = { x: float32([3, 72], gaussianArray(3 * 72, 7)) };
      const d = relDiff(await run(graph, x), await run(g, x));
      assert.ok(d < 1e-4, `transB=${transB} bias=${bias}: relative difference ${d}`);
    }
  }
});

Deno.test("svdCompress() error at reduced rank matches the truncated spectrum", async () => {
  const rows = 120, cols = 90, k = 20;
  // A slowly decaying spectrum: W = L·R with full rank.
  const w = gaussianArray(rows * cols, 11);
  for (let j = 0; j < cols; j++) {
    for (let i = 0; i < rows; i++) w[i * cols + j]! *= 1 / (1 + j / 10);
  }
  const g = matmulModel(w, [rows, cols], [8, rows]);
  const { graph, layers } = await svdCompress(g, { rank: k });
  const exact = svd(w, [rows, cols]);
  let tail = 0, total = 0;
  exact.s.forEach((s, i) => {
    total += s * s;
    if (i >= k) tail += s * s;
  });
  const predicted = Math.sqrt(tail / total);
  assert.ok(Math.abs(layers[0]!.relativeError - predicted) < 1e-5 * predicted + 1e-7);
  // Measured: W_k from the two factors.
  const a = graph.initializers.get("w_svd_a")!.data as Float32Array;
  const b = graph.initializers.get("w_svd_b")!.data as Float32Array;
  const wk = matmulSync(a, b, rows, k, cols);
  let err = 0;
  for (let i = 0; i < w.length; i++) err += (w[i]! - wk[i]!) ** 2;
  const measured = Math.sqrt(err / total);
  assert.ok(Math.abs(measured - predicted) / predicted < 1e-4, `${measured} vs ${predicted}`);
  // Outputs: ‖x·(W − W_k)‖_F ≤ ‖x‖_F·σ_{k+1}.
  const xs = gaussianArray(8 * rows, 13);
  const y0 = await run(g, { x: float32([8, rows], xs) });
  const y1 = await run(graph, { x: float32([8, rows], xs) });
  let dy = 0, nx = 0;
  for (let i = 0; i < y0.length; i++) dy += (y0[i]! - y1[i]!) ** 2;
  for (const v of xs) nx += v * v;
  const bound = Math.sqrt(nx) * exact.s[k]!;
  assert.ok(Math.sqrt(dy) <= bound * (1 + 1e-4), `${Math.sqrt(dy)} > ${bound}`);
  assert.ok(Math.sqrt(dy) > 0.1 * bound);
});

Deno.test("svdCompress() splits a MatMul with 3-D activations", async () => {
  const w = lowRank(64, 96, 8, 21);
  const g = matmulModel(w, [64, 96], [2, 5, 64]);
  const { graph } = await svdCompress(g, { rank: 8 });
  assert.deepEqual(graph.valueInfo.find((v) => v.name === "y_svd")?.shape, [2, 5, 8]);
  const x = { x: float32([2, 5, 64], gaussianArray(640, 23)) };
  assert.ok(relDiff(await run(graph, x), await run(g, x)) < 1e-4);
});

Deno.test("svdCompress() skips a layer when the split saves no parameters", async () => {
  const g = matmulModel(gaussianArray(64 * 64, 1), [64, 64], [1, 64]);
  const { graph, layers } = await svdCompress(g, { rank: 32 });
  assert.equal(graph, g);
  assert.match(layers[0]!.skipped!, /saves no parameters: 32·\(64 \+ 64\) ≥ 64·64/);
  assert.equal(layers[0]!.paramsAfter, 4096);
});

Deno.test("svdCompress() applies rankFn, ratio, energy and overrides", async () => {
  const w = gaussianArray(100 * 80, 31);
  for (let j = 0; j < 80; j++) for (let i = 0; i < 100; i++) w[i * 80 + j]! *= 0.8 ** j;
  const g = matmulModel(w, [100, 80], [1, 100]);
  const byFn = await svdCompress(g, {
    rankFn: ({ rows, cols }) => Math.ceil(0.25 * Math.min(rows, cols)),
  });
  assert.equal(byFn.layers[0]!.rank, 20);
  const byRatio = await svdCompress(g, { ratio: 0.2 });
  assert.equal(byRatio.layers[0]!.rank, Math.floor(0.2 * 8000 / 180));
  const byEnergy = await svdCompress(g, { energy: 0.99 });
  const s = svd(w, [100, 80]).s;
  const total = s.reduce((a, v) => a + v * v, 0);
  let acc = 0, want = 0;
  while (acc < 0.99 * total) acc += s[want++]! ** 2;
  assert.equal(byEnergy.layers[0]!.rank, want);
  assert.ok(byEnergy.layers[0]!.keptEnergy >= 0.99);
  const over = await svdCompress(g, { rank: 10, overrides: [{ pattern: "^f", rank: 3 }] });
  assert.equal(over.layers[0]!.rank, 3);
  const skip = await svdCompress(g, { rank: 10, overrides: [{ name: "fc", skip: true }] });
  assert.equal(skip.layers[0]!.skipped, "skipped by an override");
});

Deno.test("svdCompress() gives the same bytes for the same seed", async () => {
  const w = gaussianArray(300 * 280, 41);
  const g = matmulModel(w, [300, 280], [1, 300]);
  const a = await svdCompress(g, { rank: 16, seed: 5 });
  const b = await svdCompress(g, { rank: 16, seed: 5 });
  assert.equal(a.layers[0]!.method, "randomized");
  assert.deepEqual(encode(a.graph), encode(b.graph));
});

Deno.test("svdCompress() reads weights from Constant nodes and removes them", async () => {
  const w = lowRank(48, 40, 4, 51);
  const g = emptyGraph({
    nodes: [
      node({
        name: "c",
        op: "Constant",
        inputs: [],
        outputs: ["w"],
        attributes: { value: { type: "tensor", value: float32([48, 40], w) } },
      }),
      node({ name: "fc", op: "MatMul", inputs: ["x", "w"], outputs: ["y"] }),
    ],
    inputs: [{ name: "x", dtype: "float32", shape: [1, 48] }],
    outputs: [{ name: "y", dtype: "float32", shape: [1, 40] }],
  });
  const { graph } = await svdCompress(g, { rank: 4 });
  assert.deepEqual(graph.nodes.map((n) => n.op), ["MatMul", "MatMul"]);
  const x = { x: float32([1, 48], gaussianArray(48, 53)) };
  assert.ok(relDiff(await run(graph, x), await run(g, x)) < 1e-4);
});

Deno.test("svdCompress() rejects conflicting or invalid options naming the key", async () => {
  const g = matmulModel(gaussianArray(64 * 64, 1), [64, 64], [1, 64]);
  await assert.rejects(() => svdCompress(g, { rank: 4, energy: 0.9 }), ConfigError);
  await assert.rejects(() => svdCompress(g, { energy: 1.5 }), /^ConfigError: energy: expected/);
  await assert.rejects(
    () => svdCompress(g, { rank: 4, overrides: [{ pattern: "(", rank: 2 }] }),
    /overrides\[0\]\.pattern/,
  );
  await assert.rejects(
    () => svdCompress(g, { rankFn: () => Number.NaN }),
    /layer "fc" \(64×64\)/,
  );
});

Deno.test("svdCompress() gives the first Gemm a zero bias where opset < 11 requires C", async () => {
  const w = lowRank(40, 36, 5, 61);
  const g = {
    ...gemmModel(w, 40, 36, { transB: 1, alpha: 1, beta: 1, bias: true, batch: 2 }),
    opsetImports: [{ domain: "", version: 9 }],
  };
  const { graph } = await svdCompress(g, { rank: 5 });
  assert.deepEqual(graph.nodes[0]!.inputs, ["x", "W_svd_a", "W_svd_zero_bias"]);
  assert.deepEqual([...graph.initializers.get("W_svd_zero_bias")!.data], [0, 0, 0, 0, 0]);
  const x = { x: float32([2, 40], gaussianArray(80, 63)) };
  assert.ok(relDiff(await run(graph, x), await run(g, x)) < 1e-4);
});

Deno.test("svdCompress() grows the randomized rank until it covers the energy", async () => {
  const rows = 200, cols = 160;
  const w = gaussianArray(rows * cols, 71);
  for (let j = 0; j < cols; j++) for (let i = 0; i < rows; i++) w[i * cols + j]! *= 0.97 ** j;
  const g = matmulModel(w, [rows, cols], [1, rows]);
  // exactMaxDim 0 forces the randomized path, which starts at rank 16 and must double.
  const { layers } = await svdCompress(g, { energy: 0.95, exactMaxDim: 0, power: 3 });
  const s = svd(w, [rows, cols]).s;
  const total = s.reduce((a, v) => a + v * v, 0);
  let acc = 0, want = 0;
  while (acc < 0.95 * total) acc += s[want++]! ** 2;
  assert.ok(want > 16);
  assert.notEqual(layers[0]!.method, "exact");
  assert.ok(Math.abs(layers[0]!.rank - want) <= 1, `rank ${layers[0]!.rank} vs ${want}`);
  assert.ok(layers[0]!.keptEnergy >= 0.95);
});

Deno.test("svdCompress() leaves a layer with a non-finite weight or a ratio below rank 1 as it is, and keeps a float64 Gemm's types", async () => {
  const rows = 64, cols = 64;
  const layer = (w: Float32Array) =>
    emptyGraph({
      nodes: [node({ name: "fc", op: "MatMul", inputs: ["x", "W"], outputs: ["y"] })],
      initializers: new Map([["W", float32([rows, cols], w)]]),
      inputs: [{ name: "x", dtype: "float32", shape: [1, rows] }],
      outputs: [{ name: "y", dtype: "float32", shape: [1, cols] }],
    });
  // One NaN had made both factors all NaN and the report call the layer lossless.
  const nan = gaussianArray(rows * cols, 3);
  nan[5] = NaN;
  const a = await svdCompress(layer(nan), { rank: 4, minParams: 0 });
  assert.equal(a.graph.nodes.length, 1);
  assert.match(a.layers[0]!.skipped ?? "", /its weight "W" holds NaN \(at 5\)/);
  // Rank 1 costs 128 weights; a ratio of 0.001 allows 4.1: it had taken rank 1 anyway.
  const b = await svdCompress(layer(gaussianArray(rows * cols, 4)), { ratio: 0.001, minParams: 0 });
  assert.equal(b.graph.nodes.length, 1);
  assert.match(
    b.layers[0]!.skipped ?? "",
    /ratio 0\.001 allows 4\.1 weights, fewer than rank 1's 128/,
  );
  // Before opset 11 a Gemm's C is required: the zero bias takes the weight's float64.
  const w = Float64Array.from(gaussianArray(40 * 36, 5));
  const g: Graph = {
    ...emptyGraph({
      nodes: [node({ name: "gemm", op: "Gemm", inputs: ["x", "W", "C"], outputs: ["y"] })],
      initializers: new Map<string, Tensor>([
        ["W", { dtype: "float64", dims: [40, 36], data: w }],
        ["C", { dtype: "float64", dims: [36], data: new Float64Array(36).fill(0.5) }],
      ]),
      inputs: [{ name: "x", dtype: "float64", shape: [2, 40] }],
      outputs: [{ name: "y", dtype: "float64", shape: [2, 36] }],
    }),
    opsetImports: [{ domain: "", version: 9 }],
  };
  const { graph } = await svdCompress(g, { rank: 5, minParams: 0 });
  const types = graph.nodes[0]!.inputs.slice(1).map((n) => graph.initializers.get(n)?.dtype);
  assert.deepEqual(types, ["float64", "float64"]);
  const x = new ort.Tensor("float64", Float64Array.from(gaussianArray(80, 9)), [2, 40]);
  const s = await ort.InferenceSession.create(encode(graph));
  await s.run({ x });
  await s.release();
});
