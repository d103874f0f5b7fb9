import assert from "node:assert/strict";
import { type Graph, ModelBuilder, node, tensor } from "@clipq/onnx";
import { planQuantization, quantize } from "@clipq/quantize";
import { collectStatistics, rangesFromStatistics } from "@clipq/calibrate";
import { createSession } from "@clipq/runtime";
import { analyze, sideBySideGraph, slowerInt8Note } from "./analysis.ts";
import type { FeedBatch, StepContext } from "./step.ts";

/** A conv net (opset 11, raised to 13 by the quantizer) with a head conv as its output. */
function model(): Graph {
  const b = new ModelBuilder({ seed: 4, opset: 11 });
  let x = b.input("x", [1, 3, 24, 24]);
  x = b.relu(b.conv(x, { outChannels: 8, kernel: 3 }));
  x = b.leakyRelu(b.conv(x, { outChannels: 16, kernel: 3, stride: 2 }), 0.1);
  b.output(b.conv(x, { outChannels: 6, kernel: 1 }), "y");
  return b.build();
}

function images(n: number): FeedBatch[] {
  return Array.from({ length: n }, (_, k) => ({
    feeds: {
      x: tensor(
        "float32",
        [1, 3, 24, 24],
        Float32Array.from({ length: 1728 }, (_, i) => Math.sin(i * 0.1 + k)),
      ),
    },
    files: [`${k}.png`],
  }));
}

function context(batches: FeedBatch[]): Pick<StepContext, "batches" | "hasData"> {
  return {
    hasData: (set) => set === "calibration",
    batches: async function* () {
      yield* batches;
    },
  };
}

async function int8Of(g: Graph, batches: FeedBatch[]): Promise<Graph> {
  const stats = await collectStatistics(g, batches.map((b) => b.feeds), {
    tensors: planQuantization(g).activations,
  });
  return quantize(g, { ranges: rangesFromStatistics(stats, { method: "minmax" }) }).graph;
}

/** SQNR of `tensor` computed in JavaScript from two sessions' outputs. */
async function reference(
  float: Graph,
  int8: Graph,
  t: string,
  batches: FeedBatch[],
): Promise<number> {
  const a = await createSession(float, { taps: [t], optimizationLevel: "basic" });
  const b = await createSession(int8, { taps: [t], optimizationLevel: "basic" });
  let signal = 0, noise = 0;
  for (const { feeds } of batches) {
    const x = (await a.run(feeds, { outputs: [t] }))[t]!.data as Float32Array;
    const y = (await b.run(feeds, { outputs: [t] }))[t]!.data as Float32Array;
    for (let i = 0; i < x.length; i++) {
      signal += x[i]! * x[i]!;
      noise += (x[i]! - y[i]!) ** 2;
    }
  }
  await a.release();
  await b.release();
  return 10 * Math.log10(signal / noise);
}

Deno.test("analyze() measures each layer's SQNR inside one graph holding both models, as two sessions would", async () => {
  const g = model();
  const batches = images(3);
  const int8 = await int8Of(g, batches);
  // The two layers and the output are reduced inside the graph: six numbers come out of it.
  const layers = g.nodes.filter((n) => n.op === "Conv").map((n) => n.outputs[0]!).slice(0, 2);
  const both = sideBySideGraph(g, int8, { taps: layers, outputs: ["y"] });
  assert.deepEqual([both?.sums.size, both?.pairs.size, both?.graph.outputs.length], [3, 0, 6]);
  const a = await analyze(g, int8, context(batches), { runs: 1, warmup: 0 });
  assert.equal(a.images, 3);
  assert.deepEqual(a.layers.map((l) => l.op), ["Conv", "Conv"]);
  assert.deepEqual(a.outputs.map((l) => l.tensor), ["y"]);
  for (const l of [...a.layers, ...a.outputs]) {
    const want = await reference(g, int8, l.tensor, batches);
    assert.ok(l.sqnr > 15 && l.sqnr < 100, `${l.tensor}: ${l.sqnr} dB`);
    // float32 sums inside onnxruntime against float64 ones here.
    assert.ok(Math.abs(l.sqnr - want) < 1e-3, `${l.tensor}: ${l.sqnr} vs ${want} dB`);
  }
  assert.ok(a.latency && a.latency.speedup > 0);
  // Where each model spends its time, from onnxruntime's profiler.
  const k = a.latency.kernels!;
  assert.ok(k.float.weightedMs > 0 && k.int8.weightedMs > 0, JSON.stringify(k));
  assert.ok(k.int8.ops.some((o) => o.op === "QLinearConv"), JSON.stringify(k.int8.ops));
  assert.ok(!k.float.ops.some((o) => /QLinear|QuantizeLinear/.test(o.op)), JSON.stringify(k.float));
});

Deno.test("slowerInt8Note() tells slow int8 convolutions from slow kernels around fast ones", () => {
  const kernels = (int8WeightedMs: number) => ({
    float: { weightedMs: 1.67, otherMs: 0.91, ops: [{ op: "Conv", ms: 1.67, count: 69 }] },
    int8: {
      weightedMs: int8WeightedMs,
      otherMs: 0.51,
      ops: [{ op: "QLinearConv", ms: int8WeightedMs, count: 65 }, {
        op: "QLinearAdd",
        ms: 0.38,
        count: 31,
      }],
    },
  });
  // BlazeFace: 65 depthwise and narrow convs.
  assert.equal(
    slowerInt8Note(0.78, kernels(2.6)),
    "int8 runs at 0.78× float's speed on this machine: its int8 convolutions and matmuls run " +
      "slower than float's (1.67 → 2.60 ms a run; small and depthwise convs gain nothing from " +
      "int8); int8's largest kernels: QLinearConv ×65 2.60, QLinearAdd ×31 0.38 ms; keep this " +
      "model float, or keep its slowest layers float (quantize.exclude)",
  );
  assert.match(slowerInt8Note(0.95, kernels(1.6)), /convolutions and matmuls are no faster/);
  assert.match(
    slowerInt8Note(0.95, kernels(0.8)),
    /gain 2\.09× .* other kernels take 0\.91 → 0\.51/,
  );
});

Deno.test("analyze() compares models with subgraphs in two sessions, with the same figures", async () => {
  // An If whose branches both give y: the side-by-side graph is not built for subgraphs.
  const g = model();
  const batches = images(2);
  const int8 = await int8Of(g, batches);
  const branch = (name: string): Graph => ({
    ...g,
    name,
    nodes: [node({ name: `${name}.id`, op: "Identity", inputs: ["y"], outputs: [`${name}.out`] })],
    initializers: new Map(),
    inputs: [],
    outputs: [{ name: `${name}.out`, dtype: "float32" }],
    valueInfo: [],
    opsetImports: [],
    irVersion: 0,
    metadata: new Map(),
  });
  const withIf = (m: Graph): Graph => ({
    ...m,
    nodes: [
      ...m.nodes.map((n) => n.outputs[0] === "y" ? { ...n, outputs: ["test.y_raw"] } : n).map((
        n,
      ) => ({
        ...n,
        inputs: n.inputs.map((i) => (i === "y" ? "test.y_raw" : i)),
      })),
      node({ name: "test.id", op: "Identity", inputs: ["test.y_raw"], outputs: ["y"] }),
      node({
        name: "test.if",
        op: "If",
        inputs: ["test.cond"],
        outputs: ["test.z"],
        attributes: {
          then_branch: { type: "graph", value: branch("then") },
          else_branch: { type: "graph", value: branch("else") },
        },
      }),
    ],
    initializers: new Map([...m.initializers, [
      "test.cond",
      tensor("bool", [], new Uint8Array([1])),
    ]]),
    outputs: [{ name: "test.z", dtype: "float32" }],
  });
  assert.equal(
    sideBySideGraph(withIf(g), withIf(int8), { taps: [], outputs: ["test.z"] }),
    undefined,
  );
  const a = await analyze(withIf(g), withIf(int8), context(batches), { runs: 1, warmup: 0 });
  const b = await analyze(g, int8, context(batches), { runs: 1, warmup: 0 });
  // The head conv's output is a layer here (the If reads it), the graph output there.
  assert.deepEqual(a.layers.map((l) => l.tensor), [...b.layers.map((l) => l.tensor), "test.y_raw"]);
  b.layers.forEach((l, i) => assert.ok(Math.abs(l.sqnr - a.layers[i]!.sqnr) < 1e-3, l.tensor));
  assert.ok(Math.abs(a.layers[2]!.sqnr - b.outputs[0]!.sqnr) < 1e-3);
});
