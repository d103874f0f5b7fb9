/**
 * @clipq/detect on real models: the darknet importer's head metadata drives the YOLOv3 decoder on
 * a real photo (checked against a naive decode of the same tensors), NanoDet (tfjs, GFL head) finds
 * what is in darknet's dog.jpg, and PP-OCRv4 det is quantized
 * and judged on its text boxes (DB decoding) through the pipeline's evaluate step.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { preprocess, readImage } from "@clipq/data";
import { fromDarknet, fromTfjs } from "@clipq/convert";
import {
  decodeCandidates,
  decodeOutputs,
  headAutoOutputs,
  resolveHead,
  type Yolov3Head,
} from "@clipq/detect";
import { METADATA_KEYS } from "@clipq/onnx/metadata";
import { toFloat32 } from "@clipq/onnx/tensor";
import { loadConfig, runPipeline } from "@clipq/pipeline";
import { createSession } from "@clipq/runtime";
import {
  darknetCfg,
  darknetPhotos,
  humanModel,
  nanodetHead,
  nanodetPreprocessing,
  ppocrDetPreprocessing,
  ppocrModel,
  skimagePhoto,
} from "../tools/assets.ts";

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

Deno.test("a darknet yolov3-tiny import describes its head, and decoding a real photo matches a naive decode", async () => {
  const graph = fromDarknet(await Deno.readTextFile(await darknetCfg("yolov3-tiny")), {
    inputSize: [320, 320],
    seed: 1,
  });
  const head = resolveHead(undefined, { metadata: graph.metadata }) as Yolov3Head;
  assert.equal(head.type, "yolov3");
  assert.deepEqual(head.outputs, ["yolo_0", "yolo_1"]);
  assert.deepEqual(head.strides, [32, 16]);
  assert.deepEqual(head.anchors, [[[81, 82], [135, 169], [344, 319]], [[10, 14], [23, 27], [
    37,
    58,
  ]]]);
  assert.equal(head.classes, 80);
  assert.deepEqual(headAutoOutputs(head, graph.outputs.map((o) => o.name)), ["yolo_0", "yolo_1"]);

  const spec = JSON.parse(graph.metadata.get(METADATA_KEYS.input)!);
  const photo = (await darknetPhotos())[0]!; // dog.jpg, 768×576
  const image = await readImage(photo);
  const { tensor, transform } = preprocess(image, spec);
  const session = await createSession(graph);
  try {
    const outputs = await session.run({ [spec.name]: tensor });
    // Naive reference: every (level, anchor, cell, class) above the score threshold.
    const expected: number[][] = [];
    head.outputs.forEach((name, l) => {
      const t = outputs[name]!;
      const [, , H, W] = t.dims as [number, number, number, number];
      const x = toFloat32(t);
      const at = (a: number, k: number, y: number, xx: number) =>
        x[((a * 85 + k) * H + y) * W + xx]!;
      for (let a = 0; a < 3; a++) {
        for (let y = 0; y < H; y++) {
          for (let xx = 0; xx < W; xx++) {
            const obj = sigmoid(at(a, 4, y, xx));
            const cx = (sigmoid(at(a, 0, y, xx)) + xx) * head.strides[l]!;
            const cy = (sigmoid(at(a, 1, y, xx)) + y) * head.strides[l]!;
            const w = Math.exp(at(a, 2, y, xx)) * head.anchors[l]![a]![0]!;
            const h = Math.exp(at(a, 3, y, xx)) * head.anchors[l]![a]![1]!;
            for (let c = 0; c < 80; c++) {
              const s = obj * sigmoid(at(a, 5 + c, y, xx));
              if (s >= head.nms.score) {
                expected.push([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, s, c]);
              }
            }
          }
        }
      }
    });
    const c = decodeCandidates(head, outputs);
    assert.ok(expected.length > 100, `naive candidates: ${expected.length}`);
    assert.equal(c.count, expected.length);
    const got = Array.from(
      { length: c.count },
      (_, i) => [...c.boxes.subarray(4 * i, 4 * i + 4), c.scores[i]!, c.labels[i]!],
    );
    // Same candidates: match each naive one to a decoded one of its class at the same corner.
    const byLabel = new Map<number, number[][]>();
    for (const r of got) {
      const list = byLabel.get(r[5]!);
      if (list) list.push(r);
      else byLabel.set(r[5]!, [r]);
    }
    for (const e of expected) {
      const g = byLabel.get(e[5]!)?.find((r) =>
        Math.abs(r[0]! - e[0]!) < 1e-2 && Math.abs(r[1]! - e[1]!) < 1e-2
      );
      assert.ok(g, `missing candidate ${e}`);
      for (let k = 0; k < 5; k++) {
        assert.ok(Math.abs(g[k]! - e[k]!) < 1e-3 * Math.max(1, Math.abs(e[k]!)));
      }
    }
    // After NMS and mapping back: at most maxDetections, best first, inside the photo.
    const dets = decodeOutputs(head, outputs, { transform });
    assert.ok(dets.length > 0 && dets.length <= 100);
    for (let i = 0; i < dets.length; i++) {
      const [x1, y1, x2, y2] = dets[i]!.box;
      assert.ok(
        x1 >= 0 && y1 >= 0 && x2 <= image.width && y2 <= image.height && x1 <= x2 && y1 <= y2,
      );
      if (i > 0) assert.ok(dets[i - 1]!.score >= dets[i]!.score);
    }
  } finally {
    await session.release();
  }
});

Deno.test({
  name:
    "PP-OCRv4 det quantized to int8 finds the same 7 text lines of page.png as float (DB decoding, evaluate step)",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "clipq-detect-ppocr-" });
    try {
      const cfg = join(dir, "ppocr.json");
      const page = await skimagePhoto("page.png"), text = await skimagePhoto("text.png");
      await Deno.writeTextFile(
        cfg,
        JSON.stringify({
          model: await ppocrModel("det"),
          output: "out/ppocr-det.int8.onnx",
          report: "out/report.json",
          input: { name: "x", ...ppocrDetPreprocessing([192, 384]) },
          data: {
            calibration: { images: [page, text, ...(await darknetPhotos()).slice(0, 2)] },
            evaluation: { images: [page] },
          },
          head: { type: "db", outputs: ["sigmoid_0.tmp_0"], nms: { maxDetections: 1000 } },
          steps: [
            { use: "normalize" },
            { use: "calibrate", method: "clip-bounds", fallback: "percentile", percentile: 99.99 },
            { use: "quantize", format: "qdq", activations: "u8", weights: "per-channel" },
            { use: "evaluate", fidelityThreshold: 0.6 },
          ],
        }),
      );
      const { report } = await runPipeline(await loadConfig(cfg), { quiet: true });
      const acc = report.accuracy as {
        images: number;
        fidelity: { ap50: number; map: number; references: number };
        detections: { float: number; int8: number };
        outputSqnr: Record<string, number>;
      };
      assert.equal(acc.images, 1);
      // page.png (384×191, at its own aspect) has 7 text lines: the title, five lines of prose and
      // one of code. The float model finds each; the int8 model must find the same lines.
      assert.equal(acc.fidelity.references, 7);
      assert.equal(acc.detections.int8, 7);
      assert.ok(acc.fidelity.ap50 >= 0.9, `int8 vs float text-box AP50 ${acc.fidelity.ap50}`);
      assert.ok(acc.outputSqnr["sigmoid_0.tmp_0"]! > 5);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

const NANODET_HEAD = nanodetHead({ score: 0.3 });

Deno.test("NanoDet (tfjs, GFL head) finds the bicycle, the dog and the truck of darknet's dog.jpg", async () => {
  const graph = await fromTfjs(await humanModel("nanodet"));
  const head = resolveHead(NANODET_HEAD);
  const photo = (await darknetPhotos())[0]!;
  const image = await readImage(photo);
  const { tensor, transform } = preprocess(image, nanodetPreprocessing([416, 416]));
  const session = await createSession(graph);
  try {
    const dets = decodeOutputs(head, await session.run({ [graph.inputs[0]!.name]: tensor }), {
      transform,
    });
    const best = (label: number) => dets.find((d) => d.label === label);
    // COCO labels: 1 bicycle, 16 dog, 7 truck. The dog sits in the lower left, the bicycle spans
    // the middle, the truck is parked at the top right.
    const [bicycle, dog, truck] = [best(1), best(16), best(7)];
    assert.ok(bicycle && dog && truck, JSON.stringify(dets.slice(0, 8)));
    const centre = (
      b: readonly number[],
    ): [number, number] => [(b[0]! + b[2]!) / 2, (b[1]! + b[3]!) / 2];
    const [W, H] = [image.width, image.height];
    const [dx, dy] = centre(dog.box);
    assert.ok(dx < W / 2 && dy > H / 2, `dog at ${dog.box}`);
    const [tx, ty] = centre(truck.box);
    assert.ok(tx > W / 2 && ty < H / 3, `truck at ${truck.box}`);
    assert.ok(bicycle.box[2] - bicycle.box[0] > W / 2, `bicycle at ${bicycle.box}`);
    assert.equal(dets[0]!.label, 1);
  } finally {
    await session.release();
  }
});
