// Calibrate and quantize options in combination, on a real detector (BlazeFace, MediaPipe's face
// detector, tfjs import; small enough for 21 runs in under a minute): a pairwise covering set,
// every pair of values of any two options in at least one run, so that an option which breaks only
// next to another one, or which another one silently switches off, fails here. Each option must
// show in what the run writes, and no run may collapse: a seeded sweep of such combinations found
// loss-aware clipping at λ 0.01 taking PP-OCRv4 det's output to 0.2 dB SQNR, and this test found
// entropy at 0.1 dB on BlazeFace.
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadModel } from "@clipq/onnx/io";
import { toFloat64 } from "@clipq/onnx/tensor";
import { parseConfig } from "@clipq/pipeline/config";
import { runPipeline } from "../packages/pipeline/runner.ts";
import { darknetPhotoDir, humanModel } from "../tools/assets.ts";

// Generated offline by a greedy pairwise cover of the 14 options below (21 rows for 7 × 2¹³
// values), leaving out s8 activations in QOperator format, which the config refuses. "cb-" is
// clip-bounds with that fallback (its `float` fallback leaves BlazeFace's ReLU net all float).
const ROWS = [
  "entropy biasCorrection samplesAll s8 weightClipMse gptq reduceRange static",
  "percentile lossAware splitChannels perTensor noHead",
  "aciq lossAware refine samplesAll qoperator gptq static noHead",
  "mse lossAware biasCorrection refine splitChannels qoperator perTensor weightClipMse reduceRange static",
  "minmax refine samplesAll s8 perTensor gptq reduceRange",
  "cb-percentile splitChannels qoperator weightClipMse noHead",
  "cb-percentile lossAware biasCorrection refine samplesAll s8 perTensor reduceRange static noHead",
  "percentile biasCorrection refine s8 weightClipMse gptq static",
  "aciq biasCorrection refine samplesAll splitChannels s8 perTensor weightClipMse gptq reduceRange",
  "cb-mse gptq static",
  "mse biasCorrection samplesAll s8 gptq noHead",
  "entropy lossAware refine qoperator perTensor",
  "minmax lossAware biasCorrection splitChannels qoperator weightClipMse gptq static noHead",
  "cb-mse s8 perTensor weightClipMse gptq reduceRange noHead",
  "percentile biasCorrection samplesAll splitChannels qoperator perTensor gptq reduceRange noHead",
  "aciq lossAware biasCorrection qoperator static noHead",
  "entropy lossAware biasCorrection refine samplesAll splitChannels qoperator perTensor gptq static noHead",
  "cb-percentile lossAware refine qoperator perTensor weightClipMse gptq",
  "cb-mse qoperator perTensor weightClipMse reduceRange",
  "mse samplesAll splitChannels weightClipMse static noHead",
  "minmax lossAware samplesAll splitChannels s8 weightClipMse noHead",
];

/** The calibrate and quantize steps of one row. */
function steps(row: string): [Record<string, unknown>, Record<string, unknown>] {
  const [method, ...flags] = row.split(" ") as [string, ...string[]];
  const on = new Set(flags);
  const calibrate: Record<string, unknown> = method.startsWith("cb-")
    ? { use: "calibrate", method: "clip-bounds", fallback: method.slice(3) }
    : { use: "calibrate", method };
  if (on.has("lossAware")) calibrate.lossAware = { lambda: 0.1 };
  if (on.has("biasCorrection")) calibrate.biasCorrection = true;
  // One image and one factor: the combination matters here, not how far refinement gets.
  if (on.has("refine")) calibrate.refine = { images: 1, factors: [1.4] };
  if (on.has("samplesAll")) calibrate.samples = "all";
  if (on.has("splitChannels")) calibrate.splitChannels = true;
  const quantize: Record<string, unknown> = {
    use: "quantize",
    format: on.has("qoperator") ? "qoperator" : "qdq",
    activations: on.has("s8") ? "s8" : "u8",
    weights: on.has("perTensor") ? "per-tensor" : "per-channel",
    weightClip: on.has("weightClipMse") ? "mse" : "max",
    weightRounding: on.has("gptq") ? { method: "gptq", positions: 256 } : "nearest",
    reduceRange: on.has("reduceRange"),
    exclude: { head: on.has("noHead") ? false : "auto" },
  };
  return [calibrate, quantize];
}

// BlazeFace's lowest output SQNR over these rows measured 4.8–15.3 dB with minmax, percentile, mse
// and clip-bounds (lowest with per-tensor weights and reduceRange together), 1.7–7.5 dB with aciq
// and entropy, which clip its heavy tails hard. The collapses this test was written against gave
// 0.1–0.3 dB: loss-aware λ 0.01 weighed against the tensor's energy, and entropy over a ReLU's
// zeros.
const floorDb = (row: string) => /^(aciq|entropy) /.test(row) ? 1 : 4;

// BlazeFace's own preprocessing: 256² RGB scaled to [−1, 1].
const INPUT = { size: [256, 256], layout: "NHWC", scale: 2 / 255, mean: [1, 1, 1], std: [1, 1, 1] };

Deno.test({
  name:
    "calibrate × quantize options, pairwise on BlazeFace: each run takes effect and none collapses",
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "clipq_options_" });
    try {
      const model = await humanModel("blazeface");
      const images = await darknetPhotoDir();
      for (const [i, row] of ROWS.entries()) {
        const [calibrate, quantize] = steps(row);
        const output = join(dir, `${i}.onnx`);
        const config = await parseConfig({
          model: { tfjs: model },
          output,
          // The analysis (output SQNR) runs when there is a report to write.
          report: join(dir, `${i}.json`),
          input: { ...INPUT, static: row.includes("static") },
          data: { calibration: { images, limit: 3 } },
          steps: [{ use: "normalize" }, calibrate, quantize],
        }, { baseDir: dir });
        const { report } = await runPipeline(config, { quiet: true, analyze: true });
        assert.equal(report.sqnr?.outputs.length, 4, `${row}: BlazeFace's four outputs`);
        const sqnr = Math.min(...report.sqnr!.outputs.map((o) => o.sqnr));
        assert.ok(sqnr >= floorDb(row), `${row}: lowest output SQNR ${sqnr.toFixed(1)} dB`);

        // Each option shows in the report and the model.
        const methods = report.methods.join(" ");
        const q = quantize as Record<string, string | boolean | { method: string }>;
        const rounding = row.includes("gptq") ? "-gptq" : "";
        assert.ok(
          methods.includes(
            `quantize:${q.format}-${q.activations}-${q.weights}-${q.weightClip}${rounding}`,
          ),
          `${row}: ${methods}`,
        );
        const details = report.details as Record<string, unknown>;
        for (
          const [flag, key] of [["gptq", "weightRounding"], ["refine", "rangeRefinement"], [
            "splitChannels",
            "splitChannels",
          ], ["biasCorrection", "biasCorrection"]] as const
        ) {
          assert.equal(key in details, row.includes(flag), `${row}: details.${key}`);
        }
        const sources = report.ranges.map((r) => r.source);
        assert.equal(
          sources.some((s) => s.includes("+loss-aware")),
          row.includes("lossAware"),
          `${row}: loss-aware sources`,
        );
        const headFloat = report.excluded.some((e) => /head|decode|raw output/i.test(e.reason));
        assert.equal(headFloat, !row.includes("noHead"), `${row}: head exclusions`);

        const g = await loadModel(output);
        const ops = new Set(g.nodes.map((n) => n.op));
        assert.equal(ops.has("QLinearConv"), row.includes("qoperator"), `${row}: QLinearConv`);
        // Activation zero points: int8 for s8, uint8 for u8.
        const zeroPointTypes = new Set(
          g.nodes.filter((n) => n.op === "QuantizeLinear").map((n) =>
            g.initializers.get(n.inputs[2]!)!.dtype
          ),
        );
        assert.deepEqual([...zeroPointTypes], [row.includes("s8") ? "int8" : "uint8"], row);
        // Weights: int8 within ±63 with reduceRange; one scale per tensor or per channel.
        const weights = [...g.initializers.values()].filter((t) =>
          t.dtype === "int8" && t.dims.length >= 2
        );
        assert.ok(weights.length >= 30, `${row}: ${weights.length} int8 weights`);
        const peak = weights.reduce(
          (m, w) => toFloat64(w).reduce((a, v) => Math.max(a, Math.abs(v)), m),
          0,
        );
        assert.equal(peak <= 64, row.includes("reduceRange"), `${row}: weight peak ${peak}`);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
