// A `detections` head through the pipeline: an end-to-end detector shape (head conv → its own
// decode → TopK over scores → Gather of the best rows → [1, K, 6]) whose rows are TF-style
// (y1, x1, y2, x2 normalized, 1-based classes, zero-score padding), quantized with head: "auto"
// and evaluated against COCO annotations.
import assert from "node:assert/strict";
import { join } from "node:path";
import { boxTransform, toModelBox } from "@clipq/data/preprocess";
import { ModelBuilder } from "@clipq/onnx/builder";
import { loadModel } from "@clipq/onnx/io";
import { float32, int64 } from "@clipq/onnx/tensor";
import { loadConfig } from "../config.ts";
import { runPipeline } from "../runner.ts";
import { workspace, writePng } from "../_fixtures_test.ts";

/** Image boxes (128×96 photos letterboxed into 64×64). */
const truth = [[10, 12, 70, 60], [80, 40, 110, 90]] as const;
const P = 64, K = 10;

/**
 * Candidate rows y1, x1, y2, x2 (fractions of 64), score, class (1-based, 0 = background), planted
 * on a head conv's output as yolo tests plant raw outputs: truth[0] as class 3, truth[1] as class
 * 1, a class-1 false positive outscoring it, and a background row that outscores everything.
 */
function plantedModel() {
  const t = boxTransform({ width: 128, height: 96 }, { size: [64, 64], resize: "letterbox" });
  const planted = new Float32Array(6 * P); // channels-first: column k of candidate i at k·P + i
  const set = (i: number, box: readonly number[], score: number, cls: number) => {
    const [x1, y1, x2, y2] = box.map((v) => v / 64);
    [y1!, x1!, y2!, x2!, score, cls].forEach((v, k) => planted[k * P + i] = v);
  };
  set(7, toModelBox(truth[0], t), 0.9, 3);
  set(20, toModelBox(truth[1], t), 0.6, 1);
  set(33, [2, 50, 10, 58], 0.95, 1); // a false positive
  set(50, toModelBox(truth[0], t), 0.99, 0); // background
  const b = new ModelBuilder({ seed: 3 });
  let x = b.input("images", [1, 3, 64, 64]);
  for (let i = 0; i < 3; i++) {
    x = b.relu(b.conv(x, { outChannels: 8, kernel: 3, stride: 2, pad: 1 }));
  }
  const h = b.conv(x, { outChannels: 6, kernel: 1 }); // [1, 6, 8, 8]
  const cand = b.add(b.mul(b.reshape(h, [1, 6, P]), 0), float32([1, 6, P], planted));
  const rows = b.transpose(cand, [0, 2, 1]); // [1, P, 6]
  const axis1 = { axis: { type: "int" as const, value: 1 } };
  const scores = b.op("Gather", [cand, b.initializer(int64([], [4]))], {
    attributes: axis1,
    shape: [1, P],
  });
  b.op("TopK", [scores, b.initializer(int64([1], [K]))], {
    attributes: axis1,
    outputs: ["top_scores", "top_index"],
  });
  const best = b.op("Gather", [rows, "top_index"], { attributes: axis1, shape: [1, 1, K, 6] });
  b.output(b.reshape(best, [1, K, 6]), "detections");
  return b.build();
}

Deno.test("a detections head is quantized with its decode float and evaluated through the pipeline", async () => {
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
        images: [1, 2].map((id) => ({
          id,
          file_name: `${"ab"[id - 1]}.png`,
          width: 128,
          height: 96,
        })),
        // Category ids 1, 2, 3 rank 0, 1, 2: the model's 1-based classes less classOffset 1.
        categories: [{ id: 1, name: "one" }, { id: 2, name: "two" }, { id: 3, name: "three" }],
        annotations: [1, 2].flatMap((imageId, i) => [
          { id: 10 + 2 * i, image_id: imageId, category_id: 3, bbox: xywh(truth[0]), area: 2880 },
          { id: 11 + 2 * i, image_id: imageId, category_id: 1, bbox: xywh(truth[1]), area: 1500 },
        ]),
      }),
    );
    const cfg = ws.write({
      model: "model.onnx",
      output: "out/model.int8.onnx",
      input: { size: [64, 64], resize: "letterbox" },
      data: {
        calibration: { images: "val" },
        evaluation: { images: "val", annotations: "val.json" },
      },
      head: {
        type: "detections",
        outputs: ["detections"],
        columns: ["y1", "x1", "y2", "x2", "score", "class"],
        normalized: true,
        classOffset: 1,
        nms: { score: 0.3 },
      },
      steps: [
        { use: "normalize" },
        { use: "calibrate", method: "minmax" },
        { use: "quantize" },
        { use: "evaluate" },
      ],
    });
    const { report } = await runPipeline(await loadConfig(cfg), { quiet: true });
    const acc = report.accuracy as {
      head: string;
      annotatedImages: number;
      float: { map: number; ap50: number; perClass: Record<number, number> };
      int8: { map: number };
      fidelity: { ap50: number; map: number; references: number };
      detections: { float: number; int8: number };
    };
    assert.equal(acc.head, "detections");
    assert.equal(acc.annotatedImages, 2);
    // Three rows an image: the background row (class 0) and the padding rows are dropped.
    assert.deepEqual(acc.detections, { float: 6, int8: 6 });
    // Label 2 found exactly (mAP over IoU .50:.95 = 1: the boxes map back through the letterbox);
    // label 0: the false positive outranks the true box on both images → AP ½.
    assert.deepEqual(acc.float.perClass, { 0: 0.5, 2: 1 });
    assert.equal(acc.float.map, 0.75);
    assert.equal(acc.int8.map, 0.75);
    assert.equal(acc.fidelity.ap50, 1);
    assert.equal(acc.fidelity.map, 1);
    assert.equal(acc.fidelity.references, 6);
    // head: "auto" walked back from the rows through Gather/TopK/Transpose/Add/Mul/Reshape to the
    // head conv: those stay float, the backbone convs are int8.
    // head: "auto" walked back from the rows through the model's own decode and filters to the head
    // conv: exactly those nodes stay float, with why.
    assert.deepEqual(report.excluded.map((e) => `${e.op}: ${e.reason.split(" ")[0]}`), [
      "Reshape: decodes",
      "Mul: decodes",
      "Add: decodes",
      "Transpose: decodes",
      "Gather: Gather",
      "TopK: TopK",
      "Gather: Gather",
      "Reshape: decodes",
    ]);
    // The head conv's raw output reaches the decode unquantized; all four conv weights are int8.
    const int8 = await loadModel(join(ws.dir, "out/model.int8.onnx"));
    const reshape = int8.nodes.find((n) => n.name === "reshape_0")!;
    const producer = int8.nodes.find((n) => n.outputs.includes(reshape.inputs[0]!))!;
    assert.notEqual(producer.op, "DequantizeLinear");
    const int8Weights = int8.nodes.filter((n) =>
      n.op === "DequantizeLinear" && int8.initializers.get(n.inputs[0]!)?.dtype === "int8"
    );
    assert.equal(int8Weights.length, 4);
  } finally {
    ws.cleanup();
  }
});

Deno.test("loadConfig() checks a detections head's keys, naming them", async () => {
  const { ConfigError } = await import("@clipq/onnx/errors");
  const ws = workspace(plantedModel());
  try {
    const load = (head: Record<string, unknown>) =>
      loadConfig(ws.write({
        model: "model.onnx",
        output: "out/model.int8.onnx",
        head: { type: "detections", outputs: ["detections"], ...head },
        steps: [],
      }));
    await assert.rejects(
      load({ columns: ["y1", "x1", "y2", "x2", "conf", "class"] }),
      (e) => e instanceof ConfigError && /^head\.columns\[4\]: .*"conf"/.test(e.message),
    );
    await assert.rejects(
      load({ normalized: 1 }),
      (e) => e instanceof ConfigError && /^head\.normalized: /.test(e.message),
    );
    const config = await load({
      columns: ["cx", "cy", "w", "h", "score", "class"],
      classOffset: 1,
    });
    assert.deepEqual(config.head?.columns, ["cx", "cy", "w", "h", "score", "class"]);
  } finally {
    ws.cleanup();
  }
});

Deno.test("a real CenterNet's final rows decode through a detections head onto dog.jpg's objects", async () => {
  const { darknetPhotos, humanModel } = await import("../../../tools/assets.ts");
  const dog = (await darknetPhotos())[0]!;
  const ws = workspace();
  try {
    // COCO's 80 category ids (1–90 less ten unused): rank = CenterNet's 0-based class index.
    const unused = new Set([12, 26, 29, 30, 45, 66, 68, 69, 71, 83]);
    const ids = Array.from({ length: 90 }, (_, i) => i + 1).filter((id) => !unused.has(id));
    // The photo's three objects, boxes read off the 768×576 photo (to a few pixels).
    const objects = [[2, [128, 125, 565, 420]], [3, [472, 80, 684, 168]], [18, [
      130,
      218,
      310,
      540,
    ]]];
    Deno.writeTextFileSync(
      join(ws.dir, "dog.json"),
      JSON.stringify({
        images: [{ id: 1, file_name: "dog.jpg", width: 768, height: 576 }],
        categories: ids.map((id) => ({ id, name: `c${id}` })),
        annotations: objects.map(([category, b], i) => {
          const [x1, y1, x2, y2] = b as number[];
          return {
            id: i + 1,
            image_id: 1,
            category_id: category,
            bbox: [x1, y1, x2! - x1!, y2! - y1!],
            area: (x2! - x1!) * (y2! - y1!),
            iscrowd: 0,
          };
        }),
      }),
    );
    const cfg = ws.write({
      model: { tfjs: await humanModel("centernet") },
      output: "out/centernet.onnx",
      // RGB in [0, 255], NHWC, stretched to 512², as @vladmandic/human feeds it.
      input: {
        name: "tower_0/images",
        size: [512, 512],
        resize: "stretch",
        layout: "NHWC",
        scale: 1,
        mean: [0, 0, 0],
        std: [1, 1, 1],
      },
      data: { evaluation: { images: [dog], annotations: "dog.json" } },
      head: { type: "detections", outputs: ["tower_0/detections"], nms: { score: 0.3 } },
      steps: [{ use: "evaluate" }],
    });
    const { report } = await runPipeline(await loadConfig(cfg), { quiet: true });
    const acc = report.accuracy as {
      annotatedImages: number;
      float: {
        map: number;
        ap50: number;
        coco: { ap75: number };
        perClass: Record<number, number>;
      };
      detections: { float: number };
    };
    assert.equal(acc.annotatedImages, 1);
    // Bicycle, car and dog each found at IoU 0.75 (a truck row on the car's box is a class the
    // annotations lack, so not scored): boxes mapped back from 512² onto the 768×576 photo.
    assert.deepEqual(Object.keys(acc.float.perClass), ["1", "2", "16"]);
    assert.equal(acc.float.ap50, 1);
    assert.equal(acc.float.coco.ap75, 1);
    assert.ok(acc.float.map >= 0.8, `mAP ${acc.float.map}`);
    assert.ok(acc.detections.float >= 3 && acc.detections.float <= 10);
  } finally {
    ws.cleanup();
  }
});
