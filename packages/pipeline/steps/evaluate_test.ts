// The evaluate step through the whole pipeline: a YOLOv3-style model with planted detections,
// quantized, evaluated on PNG images against COCO annotations.
import assert from "node:assert/strict";
import { join } from "node:path";
import { boxTransform, toModelBox } from "@clipq/data/preprocess";
import { ModelBuilder } from "@clipq/onnx/builder";
import { float32 } from "@clipq/onnx/tensor";
import { loadConfig } from "../config.ts";
import { runPipeline } from "../runner.ts";
import { workspace, writePng } from "../_fixtures_test.ts";
import { evaluateStep } from "./evaluate.ts";

const logit = (p: number) => Math.log(p / (1 - p));
const C = 3, A = 2, K = 5 + C;
const anchors = [[[40, 30], [20, 50]], [[10, 12], [16, 8]]];

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
  const gx = Math.floor(cx / stride), gy = Math.floor(cy / stride);
  const at = (k: number) => ((a * K + k) * g + gy) * g + gx;
  x[at(0)] = logit(cx / stride - gx);
  x[at(1)] = logit(cy / stride - gy);
  x[at(2)] = Math.log((box[2]! - box[0]!) / anchor[0]!);
  x[at(3)] = Math.log((box[3]! - box[1]!) / anchor[1]!);
  x[at(4)] = logit(0.95);
  x[at(5 + label)] = logit(score / 0.95);
}

/** Image boxes (128×96 photos letterboxed into 64×64) and the model that "detects" them. */
const truth = [[10, 12, 70, 60], [80, 40, 110, 90]] as const;
function plantedModel() {
  const t = boxTransform({ width: 128, height: 96 }, { size: [64, 64], resize: "letterbox" });
  const out32 = new Float32Array(A * K * 4).fill(-8);
  const out16 = new Float32Array(A * K * 16).fill(-8);
  plant(out32, 2, 32, 0, anchors[0]![0]!, toModelBox(truth[0], t), 2, 0.9);
  plant(out16, 4, 16, 1, anchors[1]![1]!, toModelBox(truth[1], t), 0, 0.6);
  plant(out16, 4, 16, 0, anchors[1]![0]!, [2, 50, 10, 58], 0, 0.9); // a false positive
  const b = new ModelBuilder({ seed: 3 });
  let x = b.input("images", [1, 3, 64, 64]);
  for (let i = 0; i < 3; i++) {
    x = b.leakyRelu(b.conv(x, { outChannels: 8, kernel: 3, stride: 2 }), 0.1);
  }
  const p16 = b.leakyRelu(b.conv(x, { outChannels: 8, kernel: 3, stride: 2 }), 0.1);
  const p32 = b.conv(b.leakyRelu(b.conv(p16, { outChannels: 8, kernel: 3, stride: 2 }), 0.1), {
    outChannels: A * K,
    kernel: 1,
  });
  const h16 = b.conv(p16, { outChannels: A * K, kernel: 1 });
  b.output(b.add(b.mul(p32, 0), float32([1, A * K, 2, 2], out32)), "out32");
  b.output(b.add(b.mul(h16, 0), float32([1, A * K, 4, 4], out16)), "out16");
  return b.build();
}

Deno.test("the evaluate step reports float and int8 mAP, the drop and agreement through the pipeline", async () => {
  const ws = workspace(plantedModel());
  try {
    const images = join(ws.dir, "val");
    Deno.mkdirSync(images);
    writePng(join(images, "a.png"), 1);
    writePng(join(images, "b.png"), 2);
    const xywh = (b: readonly number[]) => [b[0]!, b[1]!, b[2]! - b[0]!, b[3]! - b[1]!];
    Deno.writeTextFileSync(
      join(ws.dir, "val.json"),
      JSON.stringify({
        images: [{ id: 1, file_name: "a.png", width: 128, height: 96 }, {
          id: 2,
          file_name: "b.png",
          width: 128,
          height: 96,
        }],
        categories: [{ id: 5, name: "zero" }, { id: 7, name: "one" }, { id: 9, name: "two" }],
        annotations: [1, 2].flatMap((imageId, i) => [
          {
            id: 10 + 2 * i,
            image_id: imageId,
            category_id: 9,
            bbox: xywh(truth[0]),
            area: 60 * 48,
            iscrowd: 0,
          },
          {
            id: 11 + 2 * i,
            image_id: imageId,
            category_id: 5,
            bbox: xywh(truth[1]),
            area: 30 * 50,
            iscrowd: 0,
          },
        ]),
      }),
    );
    const cfg = ws.write({
      model: "model.onnx",
      output: "out/model.int8.onnx",
      report: "out/report.json",
      input: { size: [64, 64], resize: "letterbox" },
      data: {
        calibration: { images: "val" },
        evaluation: { images: "val", annotations: "val.json" },
      },
      head: {
        type: "yolov3",
        outputs: ["out32", "out16"],
        strides: [32, 16],
        anchors,
        classes: C,
        nms: { score: 0.3 },
      },
      steps: [{ use: "normalize" }, { use: "calibrate", method: "minmax" }, { use: "quantize" }, {
        use: "evaluate",
      }],
    });
    const { report } = await runPipeline(await loadConfig(cfg), { quiet: true });
    const acc = report.accuracy as {
      head: string;
      images: number;
      annotatedImages: number;
      metric: string;
      float: { map: number; ap50: number; perClass: Record<number, number> };
      int8: { ap50: number };
      drop: { ap50: number };
      fidelity: { ap50: number; references: number };
      outputSqnr: Record<string, number | null>;
    };
    assert.equal(acc.head, "yolov3");
    assert.equal(acc.images, 2);
    assert.equal(acc.annotatedImages, 2);
    assert.equal(acc.metric, "coco");
    // Class 2 found perfectly; class 0: the false positive outranks the true box on both images
    // (ranked FP, FP, hit, hit → precision ½ at every recall) → AP ½; mean ¾.
    assert.equal(acc.float.map, 0.75);
    assert.equal(acc.float.ap50, 0.75);
    assert.deepEqual(acc.float.perClass, { 0: 0.5, 2: 1 });
    // The int8 model keeps the head float: the same detections at IoU 0.5.
    assert.equal(acc.int8.ap50, 0.75);
    assert.equal(acc.drop.ap50, 0);
    assert.equal(acc.fidelity.ap50, 1);
    assert.equal(acc.fidelity.references, 6);
    assert.deepEqual(Object.keys(acc.outputSqnr).sort(), ["out16", "out32"]);
  } finally {
    ws.cleanup();
  }
});

Deno.test("the evaluate step reads a VOC annotation folder and scores with VOC AP", async () => {
  const ws = workspace(plantedModel());
  try {
    const images = join(ws.dir, "val");
    const xml = join(ws.dir, "xml");
    Deno.mkdirSync(images);
    Deno.mkdirSync(xml);
    writePng(join(images, "a.png"), 1);
    writePng(join(images, "c.png"), 3); // no annotation file: agreement only
    const object = (name: string, b: readonly number[], difficult = 0) =>
      `<object><name>${name}</name><difficult>${difficult}</difficult><bndbox><xmin>${
        b[0]
      }</xmin>` +
      `<ymin>${b[1]}</ymin><xmax>${b[2]}</xmax><ymax>${b[3]}</ymax></bndbox></object>`;
    Deno.writeTextFileSync(
      join(xml, "a.xml"),
      `<annotation><filename>a.png</filename><size><width>128</width><height>96</height>` +
        `<depth>3</depth></size>${object("two", truth[0])}${object("zero", truth[1])}` +
        `${object("zero", [100, 2, 120, 20], 1)}</annotation>`,
    );
    const cfg = ws.write({
      model: "model.onnx",
      output: "out/model.int8.onnx",
      input: { size: [64, 64], resize: "letterbox" },
      data: { calibration: { images: "val" }, evaluation: { images: "val", annotations: "xml" } },
      head: {
        type: "yolov3",
        outputs: ["out32", "out16"],
        strides: [32, 16],
        anchors,
        nms: { score: 0.3 },
      },
      steps: [
        { use: "normalize" },
        { use: "calibrate", method: "minmax" },
        { use: "quantize" },
        { use: "evaluate", classes: ["zero", "one", "two"], metric: "voc07" },
      ],
    });
    const { report } = await runPipeline(await loadConfig(cfg), { quiet: true });
    const acc = report.accuracy as {
      images: number;
      annotatedImages: number;
      metric: string;
      float: { map: number; perClass: Record<number, number> };
    };
    assert.equal(acc.images, 2);
    assert.equal(acc.annotatedImages, 1);
    assert.equal(acc.metric, "voc07");
    // Class 0: the false positive ranks first → precision ½ at recall 1 → 11-point AP ½. The
    // undetected difficult object does not count as missed (else recall ½: AP 3/11).
    assert.deepEqual(acc.float.perClass, { 0: 0.5, 2: 1 });
    assert.equal(acc.float.map, 0.75);
  } finally {
    ws.cleanup();
  }
});

Deno.test("the evaluate step without a quantize step before it compares the model with itself, and says so", async () => {
  const ws = workspace(plantedModel());
  try {
    const images = join(ws.dir, "val");
    Deno.mkdirSync(images);
    writePng(join(images, "a.png"), 1);
    const cfg = ws.write({
      model: "model.onnx",
      output: "out/model.onnx",
      input: { size: [64, 64], resize: "letterbox" },
      data: { evaluation: { images: "val" } },
      head: { type: "yolov3", outputs: ["out32", "out16"], strides: [32, 16], anchors },
      steps: [{ use: "evaluate" }],
    });
    const { report } = await runPipeline(await loadConfig(cfg), { quiet: true });
    const acc = report.accuracy as {
      note?: string;
      fidelity: { ap50: number; references: number };
    };
    assert.match(acc.note ?? "", /no quantize step/);
    assert.equal(acc.fidelity.references, 3);
    assert.equal(acc.fidelity.ap50, 1);
    assert.equal("float" in acc, false);
  } finally {
    ws.cleanup();
  }
});

Deno.test("evaluateStep() rejects unknown options naming the key", () => {
  assert.throws(
    () => evaluateStep({ metrik: "coco" } as never),
    /evaluate(\.metrik: unknown key|: unknown key "metrik")/,
  );
  assert.throws(
    () => evaluateStep({ fidelityThreshold: 2 }),
    /evaluate\.fidelityThreshold: expected a number ≤ 1/,
  );
});

Deno.test("the evaluate step refuses annotations of none of its images and a head that does not fit an output", async () => {
  const { ConfigError, DataError } = await import("@clipq/onnx/errors");
  const ws = workspace(plantedModel());
  try {
    const images = join(ws.dir, "val");
    Deno.mkdirSync(images);
    writePng(join(images, "a.png"), 1);
    Deno.writeTextFileSync(
      join(ws.dir, "other.json"),
      JSON.stringify({
        images: [{ id: 1, file_name: "elsewhere.png", width: 128, height: 96 }],
        categories: [{ id: 1, name: "zero" }],
        annotations: [{ id: 1, image_id: 1, category_id: 1, bbox: [1, 1, 9, 9], area: 81 }],
      }),
    );
    const head = { type: "yolov3", outputs: ["out32", "out16"], strides: [32, 16], anchors };
    const run = async (over: Record<string, unknown>) =>
      await runPipeline(
        await loadConfig(ws.write({
          model: "model.onnx",
          output: "out/model.int8.onnx",
          input: { size: [64, 64], resize: "letterbox" },
          data: { evaluation: { images: "val", annotations: "other.json" } },
          head,
          steps: [{ use: "evaluate" }],
          ...over,
        })),
        { quiet: true },
      );
    // Used to succeed with agreement only: no mAP, no word about the annotations.
    await assert.rejects(
      run({}),
      (e) =>
        e instanceof DataError &&
        /other\.json: expected annotations of the evaluation images; found none for any of the 1 \(a\.png\)/
          .test(e.message),
    );
    // One anchor per scale where the model has two: the decoder's shape error, under head.
    await assert.rejects(
      run({
        data: { evaluation: { images: "val" } },
        head: { ...head, classes: C, anchors: [[[40, 30]], [[10, 12]]] },
      }),
      (e) =>
        e instanceof ConfigError && e.keyPath === "head" &&
        /output "out32": expected shape .* A = 1, C = 3 .*; the yolov3 head description does not fit/
          .test(e.message),
    );
    assert.throws(() => Deno.statSync(join(ws.dir, "out")), "nothing written");
  } finally {
    ws.cleanup();
  }
});
