import assert from "node:assert/strict";
import { ModelBuilder } from "@clipq/onnx/builder";
import { float32, type Graph, type Tensor } from "@clipq/onnx";
import { collectStatistics, measureBiasShifts, rangesFromStatistics } from "@clipq/calibrate";
import { floatTwin, planQuantization, quantize } from "@clipq/quantize";
import { createSession } from "@clipq/runtime";

/** Conv → hard-swish x·clip(x + 3, 0, 6)/6 → a·h + b, read by a padded and an unpadded conv. */
function hardSwishAffine(): Graph {
  const b = new ModelBuilder({ seed: 21 });
  const x = b.conv(b.input("x", [1, 4, 8, 8]), { outChannels: 8, kernel: 3, pad: 1 });
  const hs = b.op("Div", [b.mul(x, b.clip(b.add(x, 3), 0, 6)), b.initializer(6)], {
    shape: [1, 8, 8, 8],
  });
  const y = b.add(
    b.mul(b.initializer(float32([1], [0.5])), hs),
    b.initializer(float32([1], [0.25])),
  );
  const dw = b.relu(b.conv(y, { outChannels: 8, kernel: 3, pad: 1, group: 8 }));
  b.output(b.conv(dw, { outChannels: 4, kernel: 1 }), "dw");
  b.output(b.conv(y, { outChannels: 4, kernel: 1 }), "pw");
  return b.build();
}

Deno.test("bias correction measures the layers quantize rewrote against floatTwin(): every conv is corrected, by small shifts", async () => {
  const g = hardSwishAffine();
  const b = new ModelBuilder({ seed: 5 });
  const feeds: Record<string, Tensor>[] = [0, 1, 2].map(() => ({
    x: float32([1, 4, 8, 8], b.random.normals(256, 1.5)),
  }));
  const options = { exclude: { head: false as const } };
  const plan = planQuantization(g, options);
  const stats = await collectStatistics(g, feeds, { tensors: plan.activations, samples: "all" });
  const ranges = rangesFromStatistics(stats, { method: "minmax" });
  const q = quantize(g, { ...options, ranges });
  const twin = floatTwin(g, options);
  const conv = new Set(twin.nodes.filter((n) => n.op === "Conv").flatMap((n) => n.outputs));
  const layers = plan.weightedLayers
    .filter((l) => q.report.quantizedNodes.includes(l.node))
    .map((l) => ({ node: l.node, output: l.output, channelAxis: conv.has(l.output) ? 1 : -1 }));
  // All four convs, the two that read the folded hard-swish chain (weights ×k) among them.
  assert.equal(layers.length, 4, JSON.stringify(layers));
  const shifts = await measureBiasShifts(twin, q.graph, feeds, { layers });
  assert.equal(shifts.size, 4);
  const largest = (m: Map<string, Float32Array>) =>
    Math.max(...[...m.values()].flatMap((s) => [...s].map(Math.abs)));
  // Against the graph as given, a folded conv's float twin reads p instead of k·p + b: the
  // "shift" is the fold itself, not quantization noise.
  const wrong = await measureBiasShifts(g, q.graph, feeds, { layers });
  assert.ok(largest(shifts) < 0.05 * largest(wrong), `${largest(shifts)} vs ${largest(wrong)}`);
  // Applied, the shifts keep the corrected model at least as close to float on these images.
  const corrected = quantize(g, { ...options, ranges, biasShifts: shifts });
  const error = async (m: Graph) => {
    const [f, s] = [await createSession(g), await createSession(m)];
    let e = 0;
    for (const feed of feeds) {
      const [a, c] = [await f.run(feed), await s.run(feed)];
      for (const k of ["dw", "pw"]) {
        const u = a[k]!.data as Float32Array, v = c[k]!.data as Float32Array;
        for (let i = 0; i < u.length; i++) e += (u[i]! - v[i]!) ** 2;
      }
    }
    await f.release();
    await s.release();
    return e;
  };
  assert.ok(await error(corrected.graph) <= await error(q.graph) * 1.02);
});

Deno.test("quantizeStep() warns when exclude.ops or exclude.pattern keeps no node float", async () => {
  const { smallDetector } = await import("../_fixtures_test.ts");
  const { quantizeStep } = await import("./quantize.ts");
  const g = smallDetector();
  const warnings: string[] = [];
  const ranges = new Map(
    [...g.inputs, ...g.nodes.flatMap((n) => n.outputs.map((name) => ({ name })))].map((
      t,
    ) => [t.name, { min: -1, max: 6, source: "test" }]),
  );
  const run = async (exclude: { ops?: string[]; pattern?: string }) => {
    warnings.length = 0;
    const ctx = {
      input: {},
      batches: () => (async function* () {})(),
      hasData: () => false,
      ranges: new Map(ranges),
      report: {},
      progress: () => ({ tick() {}, done() {} }),
      log: { info: () => {}, warn: (m: string) => warnings.push(m) },
      methods: [],
    };
    await quantizeStep({ exclude }).run(g, ctx);
    return ctx.report as { excluded: { reason: string }[] };
  };
  // Matching exclusions: quiet, and the nodes are float.
  const report = await run({ ops: ["MaxPool"], pattern: "^conv_1$" });
  assert.deepEqual(warnings, []);
  assert.ok(report.excluded.some((e) => e.reason === "excluded by op type MaxPool"));
  assert.ok(report.excluded.some((e) => e.reason.startsWith("excluded by pattern")));
  // A misspelt op, an op the model lacks, a pattern that matches nothing: one warning each.
  await run({ ops: ["maxpool", "Gemm"], pattern: "^head_" });
  assert.deepEqual(warnings, [
    'quantize.exclude.ops: "maxpool" kept no node float (did you mean MaxPool?)',
    'quantize.exclude.ops: "Gemm" kept no node float (the model has no such op)',
    "quantize.exclude.pattern: /^head_/ matches no node name",
  ]);
});

Deno.test("quantizeStep() refuses fallbackRank without maxDrop", async () => {
  const { quantizeStep } = await import("./quantize.ts");
  assert.throws(
    () => quantizeStep({ fallbackRank: "noise" }),
    /quantize\.fallbackRank: expected only with maxDrop .*; found no maxDrop/,
  );
  assert.equal(quantizeStep({ fallbackRank: "noise", maxDrop: 0.05 }).name, "quantize");
});
