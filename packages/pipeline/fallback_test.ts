import assert from "node:assert/strict";
import { emptyGraph, float32, type Graph, ModelBuilder, type TensorRange } from "@clipq/onnx";
import { seededRandom } from "@clipq/onnx/builder";
import { planQuantization, quantize } from "@clipq/quantize";
import { createSession } from "@clipq/runtime";
import { accuracyFallback, floatRegion, layerSensitivity, stepFallback } from "./fallback.ts";
import type { FeedBatch, StepContext } from "./step.ts";
import { quantizeStep } from "./steps/quantize.ts";

/** Conv net of four layers; the third gets a far too narrow input range in `badRanges`. */
function net(): Graph {
  const b = new ModelBuilder({ seed: 3 });
  let x = b.input("x", [1, 3, 16, 16]);
  x = b.relu(b.conv(x, { outChannels: 8, kernel: 3, pad: 1, name: "c1" }));
  x = b.relu(b.conv(x, { outChannels: 8, kernel: 3, pad: 1, name: "c2" }));
  x = b.relu(b.conv(x, { outChannels: 8, kernel: 3, pad: 1, name: "c3" }));
  b.output(b.conv(x, { outChannels: 4, kernel: 1, name: "c4" }), "y");
  return b.build();
}

const rnd = seededRandom(5);
const feeds = Array.from({ length: 3 }, () => ({
  x: float32([1, 3, 16, 16], rnd.uniforms(3 * 16 * 16, 0, 1)),
}));

/** Min/max ranges over the feeds, with the input of layer c3 clipped to a tenth of its range. */
async function badRanges(graph: Graph): Promise<Map<string, TensorRange>> {
  const plan = planQuantization(graph);
  const taps = plan.activations.filter((t) => t !== "x");
  const s = await createSession(graph, { taps, optimizationLevel: "basic" });
  const ranges = new Map<string, TensorRange>();
  for (const f of feeds) {
    const out = await s.run(f, { outputs: [...taps, "y"] });
    for (const t of plan.activations) {
      const d = (t === "x" ? f.x.data : out[t]!.data) as Float32Array;
      let { min, max } = ranges.get(t) ?? { min: 0, max: 0 };
      for (const v of d) {
        min = Math.min(min, v);
        max = Math.max(max, v);
      }
      ranges.set(t, { min, max, source: "minmax" });
    }
  }
  await s.release();
  const c3 = graph.nodes.find((n) => n.name === "c3")!;
  const r = ranges.get(c3.inputs[0]!)!;
  ranges.set(c3.inputs[0]!, { ...r, max: r.max / 10 });
  return ranges;
}

function context(graph: Graph): StepContext {
  const batches: FeedBatch[] = feeds.map((f, i) => ({ feeds: f, files: [`img${i}.png`] }));
  return {
    input: { name: "x" },
    ranges: new Map(),
    report: {},
    methods: [],
    log: { info: () => {}, warn: () => {} },
    progress: () => ({ tick() {}, done() {} }),
    hasData: (set) => set === "calibration",
    batches: (set) =>
      (async function* () {
        if (set === "calibration") yield* batches;
      })(),
    floatGraph: graph,
  };
}

Deno.test("layerSensitivity() ranks first the layer whose input range is clipped", async () => {
  const graph = net();
  const int8 = quantize(graph, { ranges: await badRanges(graph) }).graph;
  const ranked = await layerSensitivity({ float: graph, int8 }, feeds);
  assert.deepEqual(ranked.map((l) => l.node).sort(), ["c1", "c2", "c3", "c4"]);
  assert.equal(ranked[0]!.node, "c3");
  assert.ok(ranked[0]!.added > 10 * ranked[1]!.added, JSON.stringify(ranked));
  assert.ok(ranked.every((l) => Math.abs(l.added - (l.outputNsr - l.inputNsr)) < 1e-15));
});

Deno.test("accuracyFallback() reverts the fewest ranked layers that meet the target", async () => {
  // Layer i costs 0.02 · (8 − i) of the score; reverting the first k ranked ones removes their cost.
  const names = ["l0", "l1", "l2", "l3", "l4", "l5", "l6", "l7"];
  const cost = (n: string) => 0.02 * (8 - Number(n.slice(1)));
  const quantizedScores: number[] = [];
  const r = await accuracyFallback({
    quantize: (exclude) => emptyGraph({ name: exclude.join(",") }),
    score: (g) => {
      const kept = new Set(g.name ? g.name.split(",") : []);
      const s = 1 - names.filter((n) => !kept.has(n)).reduce((a, n) => a + cost(n), 0);
      quantizedScores.push(s);
      return Promise.resolve(s);
    },
    rank: () => Promise.resolve(names),
  }, { maxDrop: 0.2 });
  // Total cost 0.72; reverting l0..l3 (0.16+0.14+0.12+0.10) leaves 0.2: four layers, no fewer.
  assert.deepEqual(r.reverted, ["l0", "l1", "l2", "l3"]);
  assert.equal(r.met, true);
  assert.ok(Math.abs(r.score - 0.8) < 1e-12);
  assert.ok(Math.abs(r.initialScore - 0.28) < 1e-12);
  // 0, then 1, 2, 4 (met), then the bisection tries 3 (missed).
  assert.deepEqual(r.trials.map((t) => t.reverted), [0, 1, 2, 4, 3]);
});

Deno.test("accuracyFallback() keeps the best graph and says so when the target cannot be met", async () => {
  const r = await accuracyFallback({
    quantize: (exclude) => emptyGraph({ name: String(exclude.length) }),
    score: (g) => Promise.resolve(0.5 + 0.1 * Number(g.name)),
    rank: () => Promise.resolve(["a", "b"]),
  }, { maxDrop: 0.01 });
  assert.equal(r.met, false);
  assert.deepEqual(r.reverted, ["a", "b"]);
  assert.ok(Math.abs(r.score - 0.7) < 1e-12);
  await assert.rejects(
    () =>
      accuracyFallback({
        quantize: () => emptyGraph(),
        score: () => Promise.resolve(1),
        rank: () => Promise.resolve([]),
      }, { maxDrop: 2 }),
    /quantize\.maxDrop: expected a number in \[0, 1\]; found 2/,
  );
});

Deno.test("stepFallback() reverts the clipped layer through onnxruntime and reports it", async () => {
  const graph = net();
  const ranges = await badRanges(graph);
  const ctx = context(graph);
  const q = (exclude: readonly string[]) =>
    quantize(graph, { ranges, exclude: { names: [...exclude] } }).graph;
  const quantizedNodes = quantize(graph, { ranges }).report.quantizedNodes;
  const result = await stepFallback(graph, ctx, { quantize: q, quantizedNodes }, {
    maxDrop: 0.05,
    latencyRuns: 2,
  });
  assert.equal(result.met, true);
  // c2's region ends with the Relu whose output is c3's clipped input; c3's starts with it.
  assert.ok(result.reverted.length <= 2, String(result.reverted));
  assert.ok(["c2", "c3"].includes(result.reverted[0]!), String(result.reverted));
  assert.ok(result.initialScore < 0.95, `initial score ${result.initialScore}`);
  assert.ok(result.score >= 0.95, `score ${result.score}`);
  const report = ctx.report.fallback as Record<string, unknown>;
  assert.deepEqual(report.reverted, result.reverted);
  assert.equal(report.metric, "1 - relative output error");
  assert.equal(typeof (report.latency as { slowdown: number }).slowdown, "number");
  // The clipped tensor is float in the chosen graph: no QuantizeLinear reads it.
  const clipped = graph.nodes.find((n) => n.name === "c3")!.inputs[0]!;
  assert.ok(!result.graph.nodes.some((n) => n.op === "QuantizeLinear" && n.inputs[0] === clipped));
});

Deno.test("stepFallback() warns when the target holds only with most layers float", async () => {
  const graph = net();
  const ranges = await badRanges(graph);
  const warnings: string[] = [];
  const ctx = { ...context(graph), log: { info: () => {}, warn: (m: string) => warnings.push(m) } };
  const q = (exclude: readonly string[]) =>
    quantize(graph, { ranges, exclude: { names: [...exclude] } }).graph;
  const quantizedNodes = quantize(graph, { ranges }).report.quantizedNodes;
  // No drop allowed: only the float model itself scores 1.
  const strict = await stepFallback(graph, ctx, { quantize: q, quantizedNodes }, {
    maxDrop: 0,
    latencyRuns: 0,
  });
  assert.equal(strict.met, true);
  assert.equal(strict.reverted.length, 4);
  assert.equal((ctx.report.fallback as { weightedLayers: number }).weightedLayers, 4);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]!, /quantize\.maxDrop 0: met only with 4 of 4 weighted layers float/);
  // Met with half the layers float (the clipped layer's two regions) is no warning.
  warnings.length = 0;
  await stepFallback(graph, ctx, { quantize: q, quantizedNodes }, {
    maxDrop: 0.05,
    latencyRuns: 0,
  });
  assert.deepEqual(warnings, []);
});

Deno.test("quantizeStep({ maxDrop }) keeps the clipped layer float and reports the fallback", async () => {
  const graph = net();
  const ctx = context(graph);
  ctx.ranges = await badRanges(graph);
  const int8 = await quantizeStep({ maxDrop: 0.05 }).run(graph, ctx);
  const report = ctx.report.fallback as { reverted: string[]; score: number; met: boolean };
  assert.equal(report.met, true);
  assert.ok(["c2", "c3"].includes(report.reverted[0]!), String(report.reverted));
  assert.ok(ctx.methods.includes("fallback:0.05"));
  assert.ok((ctx.report.excluded as { node: string }[] | string[]).length > 0);
  const c3 = int8.nodes.find((n) => n.name === "c3")!;
  assert.ok(
    !int8.nodes.some((n) => n.outputs.includes(c3.inputs[0]!) && n.op === "DequantizeLinear"),
  );
  assert.throws(() => quantizeStep({ maxDrop: 2 }), /quantize\.maxDrop/);
});

Deno.test("quantizeStep({ maxDrop, fallbackRank }) finds the clipped layer by either ranking", async () => {
  const graph = net();
  for (const fallbackRank of ["isolated", "noise"] as const) {
    const ctx = context(graph);
    ctx.ranges = await badRanges(graph);
    await quantizeStep({ maxDrop: 0.05, fallbackRank }).run(graph, ctx);
    const report = ctx.report.fallback as { reverted: string[]; met: boolean };
    assert.equal(report.met, true, fallbackRank);
    assert.ok(["c2", "c3"].includes(report.reverted[0]!), `${fallbackRank}: ${report.reverted}`);
  }
  assert.throws(
    () => quantizeStep({ maxDrop: 0.05, fallbackRank: "best" as "noise" }),
    /quantize\.fallbackRank/,
  );
});

Deno.test("floatRegion() reaches back and forward through every non-weighted op to the next layers", () => {
  const b = new ModelBuilder({ seed: 1 });
  let x = b.input("x", [1, 3, 8, 8]);
  const c1 = b.conv(x, { outChannels: 4, kernel: 1, name: "c1" });
  x = b.relu(b.add(b.relu(c1), c1));
  x = b.conv(x, { outChannels: 4, kernel: 1, name: "c2" });
  x = b.clip(b.relu(x), 0, 6);
  b.output(b.conv(x, { outChannels: 4, kernel: 1, name: "c3" }), "y");
  const g = b.build();
  const ops = (names: string[]) => names.map((n) => g.nodes.find((m) => m.name === n)!.op);
  assert.deepEqual(ops(floatRegion(g, ["c2"])), ["Relu", "Add", "Relu", "Conv", "Relu", "Clip"]);
  assert.deepEqual(ops(floatRegion(g, ["c1", "c3"])).filter((op) => op === "Conv").length, 2);
  assert.deepEqual(
    floatRegion(g, ["missing"]),
    ["missing"].filter((n) => g.nodes.some((m) => m.name === n)),
  );
});

Deno.test("floatRegion() of several layers is the union of their regions, whatever their order", () => {
  const b = new ModelBuilder({ seed: 2 });
  const a = b.relu(b.conv(b.input("x", [1, 3, 8, 8]), { outChannels: 4, kernel: 1, name: "c1" }));
  const side = b.relu(a);
  const y = b.add(b.conv(a, { outChannels: 4, kernel: 1, name: "c2" }), side);
  b.output(b.conv(y, { outChannels: 4, kernel: 1, name: "c3" }), "y");
  const g = b.build();
  const sideNode = g.nodes.find((n) => n.outputs.includes(side))!.name;
  // c1's region reaches the side Relu forward; c2's walk back must not cut that walk short.
  assert.ok(floatRegion(g, ["c1"]).includes(sideNode));
  assert.deepEqual(floatRegion(g, ["c2", "c1"]), floatRegion(g, ["c1", "c2"]));
  assert.ok(floatRegion(g, ["c2", "c1"]).includes(sideNode));
});

/**
 * conv → ConvTranspose (kernel = stride: quantized as a 1×1 Conv + DepthToSpace, and a
 * ConvTranspose again in a trial that keeps it float) → conv → head conv.
 */
function withUpsampling(): Graph {
  const b = new ModelBuilder({ seed: 3 });
  let x = b.input("x", [1, 3, 16, 16]);
  x = b.relu(b.conv(x, { outChannels: 8, kernel: 3, pad: 1, stride: 2, name: "c1" }));
  x = b.relu(b.convTranspose(x, { outChannels: 8, kernel: 2, stride: 2, name: "c2" }));
  x = b.relu(b.conv(x, { outChannels: 8, kernel: 3, pad: 1, name: "c3" }));
  b.output(b.conv(x, { outChannels: 4, kernel: 1, name: "c4" }), "y");
  return b.build();
}

Deno.test('quantizeStep({ weightRounding: "gptq" }) rounds every quantized layer by GPTQ, lowers their output error, and keeps it through bias correction and the fallback', async () => {
  // As below: "c2" is measured as a 1×1 Conv (its ConvTranspose rewritten) and is a ConvTranspose
  // again in a trial that keeps it float; a moment measured on the other form must not be used.
  const graph = withUpsampling();
  const ctx = context(graph);
  ctx.ranges = await badRanges(graph);
  ctx.biasCorrection = true;
  const int8 = await quantizeStep({ weightRounding: "gptq", maxDrop: 0.05 }).run(graph, ctx);
  const wr = ctx.report.weightRounding as {
    layers: number;
    outputError: { nearest: number; gptq: number };
  };
  assert.equal(wr.layers, 4);
  assert.ok(wr.outputError.gptq < wr.outputError.nearest, JSON.stringify(wr));
  assert.ok(ctx.methods.some((m) => m.endsWith("-gptq")), String(ctx.methods));
  assert.equal((ctx.report.fallback as { met: boolean }).met, true);
  assert.ok(int8.nodes.some((n) => n.op === "DequantizeLinear"));

  const noData = { ...context(graph), hasData: () => false };
  await assert.rejects(
    () => quantizeStep({ weightRounding: "gptq" }).run(graph, noData),
    /quantize\.weightRounding: expected calibration images/,
  );
  assert.throws(() => quantizeStep({ weightRounding: "exact" as "gptq" }), /weightRounding/);
  // The object form sets the measurement: blocks of one input channel (9 values) compensate less.
  const blocked = { ...context(graph), ranges: ctx.ranges };
  await quantizeStep({ weightRounding: { method: "gptq", maxBlock: 9, positions: 64 } })
    .run(graph, blocked);
  const wb = blocked.report.weightRounding as typeof wr;
  assert.equal(wb.layers, 4);
  assert.ok(
    wb.outputError.gptq > wr.outputError.gptq,
    `${JSON.stringify(wb)} vs ${JSON.stringify(wr)}`,
  );
  assert.throws(
    () => quantizeStep({ weightRounding: { method: "gptq", blocks: 4 } as never }),
    /weightRounding/,
  );
});

Deno.test("quantizeStep({ maxDrop }) with bias correction gives no shift to a layer kept float or rewritten otherwise", async () => {
  // "up" (kernel = stride) is quantized as a 1×1 Conv + DepthToSpace, and its shift measured on
  // that form (4·8 channels); each trial that keeps it float has it as a ConvTranspose (8).
  const graph = withUpsampling();
  const ctx = context(graph);
  ctx.ranges = await badRanges(graph);
  ctx.biasCorrection = true;
  await quantizeStep({ maxDrop: 0.05 }).run(graph, ctx);
  assert.equal((ctx.report.biasCorrection as { layers: number }).layers, 4);
  const report = ctx.report.fallback as { reverted: string[]; met: boolean };
  assert.equal(report.met, true);
  assert.ok(report.reverted.includes("c3"), String(report.reverted));
});
