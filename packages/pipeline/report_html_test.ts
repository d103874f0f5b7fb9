import assert from "node:assert/strict";
import { renderHtml } from "./report_html.ts";
import type { Report } from "./report.ts";

const base: Report = {
  clipq: "0",
  config: { file: "", hash: "" },
  model: { input: "m", output: "o" },
  methods: [],
  sizes: { float: 4, int8: 1, ratio: 0.25 },
  timings: [],
  ranges: [],
  unbounded: [],
  excluded: [],
  sqnr: { layers: [], outputs: [], images: 0 },
  histograms: [],
  details: {},
  notes: [],
};

type KernelTimes = NonNullable<NonNullable<Report["latency"]>["kernels"]>;

/** A report whose latency section holds these kernel times (the timings themselves matter not). */
function withKernels(kernels: KernelTimes): Report {
  const run = { median: 1, min: 1, mean: 1 };
  return { ...base, latency: { float: run, int8: run, speedup: 1, kernels } };
}

Deno.test("renderHtml() shows both models' kernel times and the most int8 can gain with its convolutions as they are", () => {
  const html = renderHtml(withKernels({
    // NanoDet's measured kernel times: float fuses its LeakyRelus into the convs.
    float: { weightedMs: 9.85, otherMs: 0.93, ops: [{ op: "Conv", ms: 9.85, count: 34 }] },
    int8: {
      weightedMs: 3.14,
      otherMs: 1.43,
      ops: [{ op: "QLinearConv", ms: 3.1, count: 31 }, {
        op: "QLinearLeakyRelu",
        ms: 0.6,
        count: 28,
      }],
    },
  }));
  assert.match(html, /<td>all kernels<\/td><td>10\.8<\/td><td>4\.57<\/td>/);
  // (9.85 + 0.93) / 3.14
  assert.match(html, /int8 would run at most 3\.43× as fast as float: float's kernel time/);
  assert.match(html, /QLinearLeakyRelu ×28 0\.6</);
  // A profile without weighted kernels says nothing it cannot measure.
  const none = renderHtml(withKernels({
    float: { weightedMs: 0, otherMs: 1, ops: [] },
    int8: { weightedMs: 0, otherMs: 1, ops: [] },
  }));
  assert.doesNotMatch(none, /at most/);
  assert.match(none, /<td>other kernels<\/td>/);
});
