// Zero-data quantization of a ReLU6 network (the paper's idea): an SSD-MobileNetV2-shaped detector
// (tests/_ssd_shaped_model.ts: opset 13, width 0.35, 300², 20 classes, 1917 priors, weights seeded
// then fitted to realistic activation scales on two real photos) quantized through the pipeline
// with `calibrate: clip-bounds` and no calibration images (fallback "float"), and with fallback
// "percentile" on the 7 darknet photos. Random weights make absolute detections meaningless: the
// int8 detections are compared with the float ones (SSD decoder, graph-softmaxed scores).
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadModel, saveModel } from "@clipq/onnx/io";
import type { Graph } from "@clipq/onnx/graph";
import { createSession } from "@clipq/runtime";
import { listImages, preprocess, type PreprocessSpec, readImage } from "@clipq/data";
import { parseConfig } from "@clipq/pipeline/config";
import { runPipeline } from "../packages/pipeline/runner.ts";
import { darknetPhotoDir } from "../tools/assets.ts";
import { ssdShapedModel, withRealisticScales } from "./_ssd_shaped_model.ts";

const spec: PreprocessSpec = {
  size: [300, 300],
  resize: "stretch",
  layout: "NCHW",
  color: "RGB",
  scale: 2 / 255,
  mean: [1, 1, 1],
  std: [1, 1, 1],
};
// Float scores (graph softmax) ≥ 0.9 keep 300-odd of the 7 × 100 float boxes.
const SCORE = 0.9;

interface Accuracy {
  fidelity: { ap50: number; references: number };
  outputSqnr: Record<string, number>;
}

function countOps(g: Graph): Map<string, number> {
  const m = new Map<string, number>();
  for (const n of g.nodes) m.set(n.op, (m.get(n.op) ?? 0) + 1);
  return m;
}

Deno.test("SSD-MobileNetV2-shaped int8 from clip bounds alone: ReLU6 outputs [0, 6], depthwise and pointwise convs as QLinearConv, detections agree", async () => {
  const dir = await Deno.makeTempDir({ prefix: "clipq_ssd_" });
  try {
    const photos = await darknetPhotoDir();
    const files = await listImages(photos);
    const built = ssdShapedModel({ width: 0.35, inputSize: 300, classes: 20 });
    const feeds = [];
    for (const f of files.slice(0, 2)) {
      feeds.push({ images: preprocess(await readImage(f), spec).tensor });
    }
    const model = join(dir, "ssd.onnx");
    const floatGraph = await withRealisticScales(built, feeds);
    await saveModel(model, floatGraph);
    const clips = floatGraph.nodes.filter((n) => n.op === "Clip").map((n) => n.outputs[0]!);
    const depthwise = floatGraph.nodes.filter((n) =>
      n.op === "Conv" && (n.attributes.group?.value ?? 1) !== 1
    );
    assert.equal(clips.length, 43);
    assert.equal(depthwise.length, 17);

    const run = async (fallback: "float" | "percentile") => {
      const config = await parseConfig({
        model,
        output: join(dir, `ssd.${fallback}.int8.onnx`),
        input: { name: "images", ...spec },
        data: {
          // Zero data: no calibration images at all; the evaluation images only compare outputs.
          ...(fallback === "float" ? {} : { calibration: { images: photos, limit: 7 } }),
          evaluation: { images: photos },
        },
        head: {
          type: "ssd",
          outputs: ["boxes", "scores"],
          priors: built.priors,
          activation: "none",
          classes: 20,
          nms: { iou: 0.45, score: SCORE, maxDetections: 100 },
        },
        steps: [
          { use: "normalize" },
          { use: "calibrate", method: "clip-bounds", fallback },
          {
            use: "quantize",
            format: "qdq",
            activations: "u8",
            weights: "per-channel",
            exclude: { head: "auto" },
          },
          { use: "evaluate", fidelityThreshold: SCORE },
        ],
      });
      const { graph, report } = await runPipeline(config, { quiet: true, analyze: false });
      const optimized = join(dir, `optimized.${fallback}.onnx`);
      const s = await createSession(graph, {
        optimizationLevel: "all",
        optimizedModelPath: optimized,
      });
      await s.release();
      const opt = await loadModel(optimized);
      const qlinear = opt.nodes.filter((n) => n.op === "QLinearConv").map((n) => n.name);
      return { graph, report, ops: countOps(opt), qlinear };
    };

    // Zero data: every ReLU6 output gets its clip bound [0, 6], the input its [−1, 1] from the
    // preprocessing; what no clip bounds (the 17 linear projections, the 10 residual Adds) stays
    // float.
    const zero = await run("float");
    const ranges = new Map(
      (zero.report.ranges as { tensor: string; min: number; max: number; source: string }[])
        .map((r) => [r.tensor, r]),
    );
    for (const t of clips) {
      assert.deepEqual(ranges.get(t), { tensor: t, min: 0, max: 6, source: "clip-bound" });
    }
    assert.deepEqual(ranges.get("images"), {
      tensor: "images",
      min: -1,
      max: 1,
      source: "input-spec",
    });
    const unbounded = zero.report.unbounded as string[];
    const producer = new Map(floatGraph.nodes.map((n) => [n.outputs[0]!, n]));
    assert.equal(unbounded.length, 27);
    assert.equal(unbounded.filter((t) => producer.get(t)?.op === "Add").length, 10);
    assert.equal(unbounded.filter((t) => producer.get(t)?.op === "Conv").length, 17);
    // One u8 scale per ReLU6 output, 6/255 with zero point 0, and the Clip gone: on that grid 0 and
    // 6 are the end levels, so the Q after the conv alone is exactly Clip then Q.
    for (const t of clips) {
      const conv = producer.get(producer.get(t)!.inputs[0]!)!;
      assert.ok(!zero.graph.nodes.some((n) => n.outputs.includes(t)), `${t}: Clip dropped`);
      const q = zero.graph.nodes.find((n) =>
        n.op === "QuantizeLinear" && n.inputs[0] === conv.outputs[0]
      );
      assert.ok(q, `expected ${conv.outputs[0]} quantized`);
      const scale = zero.graph.initializers.get(q.inputs[1]!)!.data as Float32Array;
      assert.ok(Math.abs(scale[0]! - 6 / 255) < 1e-7, `${t}: scale ${scale[0]}`);
    }
    // onnxruntime at level all: every depthwise conv is a QLinearConv (input and output ReLU6),
    // and so are the stem and the eight extra-layer convs; the expand convs and the 1×1 conv after
    // the backbone (reading an unbounded projection or residual sum) and the projections (writing
    // one) run float, as do the 12 head convs. No Clip is left.
    assert.equal(zero.ops.get("QLinearConv"), 26);
    assert.equal(zero.ops.get("Conv"), 46);
    assert.equal(zero.ops.get("Clip"), undefined);
    for (const n of depthwise) {
      assert.ok(
        zero.qlinear.some((q) => q.startsWith(`${n.name}_`)),
        `expected depthwise ${n.name} as QLinearConv`,
      );
    }

    // With percentile ranges for the 27 unbounded tensors every backbone and extra conv is int8,
    // the residual Adds are QLinearAdd; the 12 head convs keep float outputs (head auto), and the
    // Concat/Softmax decode runs float.
    const pct = await run("percentile");
    assert.equal(pct.ops.get("QLinearConv"), 60);
    assert.equal(pct.ops.get("QLinearAdd"), 10);
    assert.equal(pct.ops.get("Conv"), 12);
    assert.equal(pct.ops.get("Softmax"), 1);
    assert.equal(pct.ops.get("Clip"), undefined);

    // Agreement with the float detections on the 7 photos, 369 float boxes at score ≥ 0.9 (measured:
    // zero data AP50 0.76, SQNR boxes 12.9 dB, scores 14.9 dB; percentile AP50 0.67, 10.3 / 10.8 dB:
    // the float projections and residual sums of the zero-data model are exact, where percentile
    // ranges round them to u8).
    const za = zero.report.accuracy as Accuracy;
    const pa = pct.report.accuracy as Accuracy;
    assert.ok(za.fidelity.references > 200, `float boxes: ${za.fidelity.references}`);
    assert.ok(za.fidelity.ap50 >= 0.72, `zero-data agreement AP50 ${za.fidelity.ap50}`);
    assert.ok(pa.fidelity.ap50 >= 0.6, `percentile agreement AP50 ${pa.fidelity.ap50}`);
    assert.ok(za.outputSqnr.boxes! > 11, `zero-data boxes SQNR ${za.outputSqnr.boxes}`);
    assert.ok(za.outputSqnr.scores! > 13, `zero-data scores SQNR ${za.outputSqnr.scores}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
