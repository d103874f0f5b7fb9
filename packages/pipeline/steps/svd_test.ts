import assert from "node:assert/strict";
import { emptyGraph, float32, node } from "@clipq/onnx";
import type { StepContext } from "../step.ts";
import { svdStep } from "./svd.ts";

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
