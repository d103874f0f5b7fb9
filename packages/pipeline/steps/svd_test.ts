import assert from "node:assert/strict";
import { emptyGraph, float32, node } from "@clipq/onnx";
import type { StepContext } from "../step.ts";
import { svdStep, type SvdStepOptions } from "./svd.ts";
import { loadExpressions } from "../expression.ts";

function fcModel() {
  const w = Float32Array.from(
    { length: 64 * 48 },
    (_, i) => Math.sin(i * 0.37) + Math.cos(i * 0.011),
  );
  return emptyGraph({
    nodes: [node({ name: "fc", op: "MatMul", inputs: ["x", "w"], outputs: ["y"] })],
    initializers: new Map([["w", float32([64, 48], w)]]),
    inputs: [{ name: "x", dtype: "float32", shape: [1, 64] }],
    outputs: [{ name: "y", dtype: "float32", shape: [1, 48] }],
  });
}

function context(): StepContext {
  const info: string[] = [];
  return {
    input: {},
    batches: () => (async function* () {})(),
    hasData: () => false,
    ranges: new Map(),
    report: {},
    progress: () => ({ tick() {}, done() {} }),
    log: { info: (m) => info.push(m), warn: () => {} },
    methods: [],
  } as StepContext;
}

Deno.test("svdStep() compiles a rank expression and reports every layer", async () => {
  const ctx = context();
  await loadExpressions();
  const step = svdStep({ rank: "ceil(0.25 * min(rows, cols))" as unknown as number });
  const out = await step.run(fcModel(), ctx);
  assert.deepEqual(out.nodes.map((n) => n.name), ["fc_svd_a", "fc_svd_b"]);
  const report = ctx.report["svd-fc"] as { layers: { rank: number }[]; paramsAfter: number };
  assert.equal(report.layers[0]!.rank, 12);
  assert.equal(report.paramsAfter, 12 * (64 + 48));
  assert.deepEqual(ctx.methods, ["svd-fc"]);
});

Deno.test("svdStep() applies per-layer overrides and rejects two policies", async () => {
  const ctx = context();
  const out = await svdStep({ energy: 0.5, overrides: [{ name: "fc", rank: 3 }], backend: "js" })
    .run(fcModel(), ctx);
  assert.deepEqual(out.initializers.get("w_svd_a")?.dims, [64, 3]);
  assert.throws(() => svdStep({ rank: 4, ratio: 0.5 }), /svd-fc: expected at most one/);
  assert.throws(() => svdStep({ energy: 2 }), /svd-fc\.energy/);
});

Deno.test("svdStep() refuses override rules that would do nothing, naming the rule", async () => {
  assert.throws(
    () => svdStep({ overrides: [{ rank: 4 }] }),
    /svd-fc\.overrides\[0\]: expected exactly one of name, pattern; found neither/,
  );
  assert.throws(
    () => svdStep({ overrides: [{ name: "fc", rank: 4, skip: true }] }),
    /svd-fc\.overrides\[0\]: expected exactly one of rank, energy, skip; found rank, skip/,
  );
  const run = (options: SvdStepOptions) =>
    svdStep({ backend: "js", ...options }).run(fcModel(), context());
  await assert.rejects(
    run({ overrides: [{ name: "fc", rank: 4 }, { name: "fc2", rank: 4 }] }),
    /svd-fc\.overrides\[1\]\.name: expected the name of a Gemm or MatMul node; found "fc2", which no node has \(fully connected layers: fc\)/,
  );
  // The rank was clamped to 48 and the layer then left unsplit, silently.
  await assert.rejects(
    run({ overrides: [{ name: "fc", rank: 500 }] }),
    /svd-fc\.overrides\[0\]\.rank: expected at most min\(rows, cols\) = 48 for layer "fc" \(64×48\); found 500/,
  );
  // @clipq/svd's own key lands under the step's.
  await assert.rejects(
    run({ rank: ((v: { rows: number }) => 10 - v.rows) as unknown as number }),
    /^ConfigError: svd-fc\.rank: expected a rank ≥ 1 for layer "fc"/,
  );
});

Deno.test("svdStep() warns when a pattern matches no layer or nothing is split", async () => {
  const warnings: string[] = [];
  const ctx = { ...context(), log: { info: () => {}, warn: (m: string) => warnings.push(m) } };
  const out = await svdStep({
    rank: 100,
    overrides: [{ pattern: "^head", skip: true }],
    backend: "js",
  })
    .run(fcModel(), ctx);
  assert.deepEqual(out.nodes.map((n) => n.name), ["fc"]);
  assert.equal(warnings.length, 2, warnings.join("\n"));
  assert.match(
    warnings[0]!,
    /^svd-fc\.overrides\[0\]\.pattern: \/\^head\/ matches no fully connected layer \(fc\)/,
  );
  assert.match(
    warnings[1]!,
    /^svd-fc: none of the 1 fully connected layers was split \(rank 48 saves no parameters/,
  );
  warnings.length = 0;
  await svdStep({ backend: "js" }).run(emptyGraph(), ctx);
  assert.deepEqual(warnings, [
    "svd-fc: the model has no Gemm or MatMul with a constant 2-D weight; nothing was split",
  ]);
});
