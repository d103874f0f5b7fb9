// A YOLOv8-shaped detector exported the Ultralytics way (opset 17, SiLU, C2f, SPPF, the DFL +
// dist2bbox decode in the graph, output0 [1, 84, 2100] at 320²), seeded weights, quantized through
// the pipeline (clip-bounds + percentile, QDQ u8, head auto) on the darknet photos and compared with
// the float model through onnxruntime. Random weights make absolute detections meaningless; the
// int8 boxes are compared with the float ones.
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadModel, saveModel } from "@clipq/onnx/io";
import type { Graph } from "@clipq/onnx/graph";
import { planQuantization } from "@clipq/quantize";
import { createSession } from "@clipq/runtime";
import { listImages, preprocess, type PreprocessSpec, readImage } from "@clipq/data";
import { parseConfig } from "@clipq/pipeline/config";
import { runPipeline } from "../packages/pipeline/runner.ts";
import { darknetPhotoDir } from "../tools/assets.ts";
import { yolov8ShapedModel } from "./_yolov8_shaped.ts";

const SIZE = 320;
const ANCHORS = 2100; // 40² + 20² + 10²
const spec: PreprocessSpec = {
  size: [SIZE, SIZE],
  resize: "letterbox",
  layout: "NCHW",
  color: "RGB",
  scale: 1 / 255,
  mean: [0, 0, 0],
  std: [1, 1, 1],
};
// The decode after the learned head convs: DFL (Softmax → 1×1 Conv 0..15), dist2bbox, class Sigmoid.
const DECODE = ["softmax_0", "dfl.conv", "sub_0", "add_6", "sub_1", "mul_57", "sigmoid_57"];

Deno.test("plan of a YOLOv8-shaped model keeps the DFL conv and the decode float under head auto", () => {
  const g = yolov8ShapedModel({ inputSize: SIZE });
  const plan = planQuantization(g, { exclude: { head: "auto" } });
  const reasons = new Map(plan.excluded.map((e) => [e.node, e.reason]));
  for (const n of DECODE) assert.ok(reasons.has(n), `expected ${n} to stay float`);
  assert.match(reasons.get("dfl.conv")!, /expectation of a Softmax/);
  // The learned convs all quantize: 57 Conv+SiLU layers and the 6 final head convs.
  const learned = plan.weightedLayers.filter((w) => w.node !== "dfl.conv");
  assert.equal(learned.length, 63);
  for (const w of learned) assert.ok(!reasons.has(w.node), `${w.node} should be quantized`);
  // The softmax output is no activation to calibrate: nothing in the decode gets a range.
  assert.ok(!plan.activations.includes("softmax_0"));
});

Deno.test("YOLOv8-shaped int8 through the pipeline: learned convs int8, decode float, boxes within 0.5 px, agreement ≥ 0.88", async () => {
  const dir = await Deno.makeTempDir({ prefix: "clipq_yolov8_" });
  try {
    const model = join(dir, "yolov8.onnx");
    await saveModel(model, yolov8ShapedModel({ inputSize: SIZE }));
    const photos = await darknetPhotoDir();
    // Scores of random weights sit near 0.5; 0.535 keeps 495 float boxes over the 7 photos.
    const score = 0.535;
    const config = await parseConfig({
      model,
      output: join(dir, "yolov8.int8.onnx"),
      input: {
        size: [SIZE, SIZE],
        resize: "letterbox",
        layout: "NCHW",
        color: "RGB",
        scale: 1 / 255,
      },
      data: { calibration: { images: photos, limit: 7 } },
      head: {
        type: "yolo-decoded",
        outputs: ["output0"],
        objectness: false,
        layout: "channels-first",
        nms: { iou: 0.45, score, maxDetections: 300 },
      },
      steps: [
        { use: "normalize" },
        { use: "calibrate", method: "clip-bounds", fallback: "percentile", percentile: 99.99 },
        {
          use: "quantize",
          format: "qdq",
          activations: "u8",
          weights: "per-channel",
          exclude: { head: "auto" },
        },
        { use: "evaluate", fidelityThreshold: score },
      ],
    });
    const { graph: int8, report } = await runPipeline(config, { quiet: true, analyze: false });

    // The decode reads no dequantized tensor: the softmax, DFL conv, dist2bbox and Sigmoid run
    // on the float outputs of the learned convs.
    const producer = new Map(int8.nodes.flatMap((n) => n.outputs.map((o) => [o, n] as const)));
    for (const name of DECODE) {
      const n = int8.nodes.find((m) => m.name === name);
      assert.ok(n, `expected node ${name} in the int8 graph`);
      for (const i of n.inputs) {
        assert.notEqual(producer.get(i)?.op, "DequantizeLinear", `${name} reads ${i} dequantized`);
      }
    }

    // onnxruntime's optimized int8 graph: every learned conv is QLinearConv or (the 1×1 head convs
    // with float outputs) MatMulIntegerToFloat; no float Conv is left (the DFL's runs as a float
    // MatMul after a last-axis Softmax).
    const optimized = join(dir, "optimized.onnx");
    const q = await createSession(int8, {
      optimizationLevel: "all",
      optimizedModelPath: optimized,
    });
    const ops = countOps(await loadModel(optimized));
    assert.equal(ops.get("QLinearConv"), 57);
    assert.equal(ops.get("MatMulIntegerToFloat"), 6);
    assert.equal(ops.get("Conv"), undefined);
    assert.equal(ops.get("Softmax"), 1);

    // Box coordinates (cx, cy, w, h in input pixels) float vs int8 on the real photos.
    const f = await createSession(await loadModel(model), { optimizationLevel: "all" });
    let sum = 0, max = 0, n = 0;
    try {
      for (const file of await listImages(photos)) {
        const { tensor } = preprocess(await readImage(file), spec);
        const a = (await f.run({ images: tensor })).output0!.data as Float32Array;
        const b = (await q.run({ images: tensor })).output0!.data as Float32Array;
        for (let i = 0; i < 4 * ANCHORS; i++) {
          const d = Math.abs(a[i]! - b[i]!);
          sum += d;
          max = Math.max(max, d);
          n++;
        }
      }
    } finally {
      await f.release();
      await q.release();
    }
    // Measured: mean 0.010 px, max 0.125 px (with the DFL conv quantized: mean 0.35, max 5.5 px).
    assert.ok(max < 0.5, `expected box error below 0.5 px but found ${max}`);
    assert.ok(sum / n < 0.05, `expected mean box error below 0.05 px but found ${sum / n}`);

    // Detection agreement after class-wise NMS (measured AP50 0.92–0.95 over 495 float boxes: the
    // boxes barely move, but random weights put every class score within a few hundredths of 0.54,
    // so int8's score error of ≤ 0.003 reorders near-ties) and the output's SQNR (82.7 dB; 50.7 dB
    // with the DFL conv quantized).
    const acc = report.accuracy as {
      fidelity: { ap50: number; references: number };
      outputSqnr: Record<string, number>;
    };
    assert.ok(
      acc.fidelity.references > 300,
      `expected > 300 float boxes: ${acc.fidelity.references}`,
    );
    assert.ok(
      acc.fidelity.ap50 >= 0.88,
      `expected agreement AP50 ≥ 0.88 but found ${acc.fidelity.ap50}`,
    );
    assert.ok(acc.outputSqnr.output0! > 70, `expected SQNR > 70 dB: ${acc.outputSqnr.output0}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

function countOps(g: Graph): Map<string, number> {
  const m = new Map<string, number>();
  for (const n of g.nodes) m.set(n.op, (m.get(n.op) ?? 0) + 1);
  return m;
}
