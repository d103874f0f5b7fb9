// End to end at the package level: a YOLOv3-style builder model whose head outputs carry planted
// detections (added as constants), run through onnxruntime, decoded, mapped back through the
// letterbox preprocessing and scored.
import assert from "node:assert/strict";
import { preprocess, toModelBox } from "@clipq/data/preprocess";
import { ModelBuilder } from "@clipq/onnx/builder";
import { float32 } from "@clipq/onnx/tensor";
import { createSession } from "@clipq/runtime";
import { cocoMap } from "./coco_eval.ts";
import { decodeOutputs } from "./decode.ts";
import { evaluateDetections } from "./evaluate.ts";
import { resolveHead } from "./head.ts";
import type { Box } from "./types.ts";
import { vocMap } from "./voc_eval.ts";

const logit = (p: number) => Math.log(p / (1 - p));
const C = 3, A = 2, K = 5 + C;
const anchors = [[[40, 30], [20, 50]], [[10, 12], [16, 8]]];
const strides = [32, 16];

/** Head-output planting: one detection (model-input pixels) at its cell and anchor. */
function plant(
  x: Float32Array,
  g: number,
  stride: number,
  a: number,
  anchor: number[],
  box: readonly number[],
  label: number,
  score: number,
) {
  const cx = (box[0]! + box[2]!) / 2, cy = (box[1]! + box[3]!) / 2;
  const w = box[2]! - box[0]!, h = box[3]! - box[1]!;
  const gx = Math.floor(cx / stride), gy = Math.floor(cy / stride);
  const at = (k: number) => ((a * K + k) * g + gy) * g + gx;
  x[at(0)] = logit(cx / stride - gx);
  x[at(1)] = logit(cy / stride - gy);
  x[at(2)] = Math.log(w / anchor[0]!);
  x[at(3)] = Math.log(h / anchor[1]!);
  x[at(4)] = logit(0.95);
  x[at(5 + label)] = logit(score / 0.95);
}

/** A tiny darknet-like backbone with two YOLO outputs; constants carry the planted detections. */
function model(planted: Record<string, Float32Array>) {
  const b = new ModelBuilder({ seed: 3 });
  let x = b.input("images", [1, 3, 64, 64]);
  x = b.leakyRelu(b.conv(x, { outChannels: 8, kernel: 3, stride: 2 }), 0.1); // 32
  x = b.leakyRelu(b.conv(x, { outChannels: 8, kernel: 3, stride: 2 }), 0.1); // 16
  x = b.leakyRelu(b.conv(x, { outChannels: 8, kernel: 3, stride: 2 }), 0.1); // 8
  const p16 = b.leakyRelu(b.conv(x, { outChannels: 8, kernel: 3, stride: 2 }), 0.1); // 4 (stride 16)
  const p32 = b.conv(b.leakyRelu(b.conv(p16, { outChannels: 8, kernel: 3, stride: 2 }), 0.1), {
    outChannels: A * K,
    kernel: 1,
  }); // 2 (stride 32)
  const h16 = b.conv(p16, { outChannels: A * K, kernel: 1 });
  // The convolutions run, but their (seeded, random) contribution is scaled away so the outputs
  // are exactly the planted values.
  b.output(b.add(b.mul(p32, 0), float32([1, A * K, 2, 2], planted.out32!)), "out32");
  b.output(b.add(b.mul(h16, 0), float32([1, A * K, 4, 4], planted.out16!)), "out16");
  return b.build();
}

Deno.test("a YOLOv3-style model with planted detections evaluates to the expected mAP through onnxruntime", async () => {
  // A 128×96 photo letterboxed into 64×64: scale 0.5, 8 rows of padding top and bottom.
  const image = { width: 128, height: 96, data: new Uint8Array(128 * 96 * 3).fill(90) };
  const { tensor, transform } = preprocess(image, { size: [64, 64], resize: "letterbox" });
  const truth: Box[] = [[10, 12, 70, 60], [80, 40, 110, 90]];
  const out32 = new Float32Array(A * K * 4).fill(-12);
  const out16 = new Float32Array(A * K * 16).fill(-12);
  plant(out32, 2, 32, 0, anchors[0]![0]!, toModelBox(truth[0]!, transform), 2, 0.9);
  plant(out16, 4, 16, 1, anchors[1]![1]!, toModelBox(truth[1]!, transform), 0, 0.8);
  // A false positive of class 0, ranked above the true one.
  plant(out16, 4, 16, 0, anchors[1]![0]!, [2, 50, 10, 58], 0, 0.85);
  const session = await createSession(model({ out32, out16 }));
  try {
    const outputs = await session.run({ images: tensor });
    const head = resolveHead({
      type: "yolov3",
      outputs: ["out32", "out16"],
      strides,
      anchors,
      classes: C,
      nms: { score: 0.3 },
    });
    const dets = decodeOutputs(head, outputs, { transform });
    assert.deepEqual(dets.map((d) => d.label), [2, 0, 0]);
    const gt = [[{ box: truth[0]!, label: 2 }, { box: truth[1]!, label: 0 }]];
    // Class 2 perfect; class 0: FP first then the hit → precision ½ at every recall → AP ½.
    const coco = cocoMap([dets], gt);
    assert.deepEqual(coco.perClass, { 0: 0.5, 2: 1 });
    assert.equal(coco.map, 0.75);
    assert.equal(vocMap([dets], gt).map, 0.75);
    // The same model as "int8" agrees with itself; dropping the FP improves class 0 to 1.
    const clean = dets.filter((d) => d.score < 0.84 || d.score > 0.86);
    const r = evaluateDetections({ float: [dets], int8: [clean], groundTruth: gt });
    assert.equal(r.int8?.map, 1);
    assert.equal(r.drop?.map, -0.25);
    assert.equal(r.fidelity.references, 3);
  } finally {
    await session.release();
  }
});
