import assert from "node:assert/strict";
import { METADATA_KEYS } from "@clipq/onnx/metadata";
import { evaluateDetections } from "./evaluate.ts";
import { fidelity } from "./fidelity.ts";
import { cocoGroundTruth, vocGroundTruth } from "./ground_truth.ts";
import { headAutoOutputs, resolveHead } from "./head.ts";
import { sqnr } from "./sqnr.ts";
import type { Box, Detection } from "./types.ts";

const det = (box: Box, score: number, label = 0): Detection => ({ box, score, label });
const A: Box = [0, 0, 100, 100];
const B: Box = [200, 0, 300, 100];

Deno.test("sqnr() is 10·log10(signal / noise) and rejects different lengths", () => {
  assert.equal(sqnr([1, 2, 3], [1, 2, 3]), Infinity);
  assert.equal(sqnr([2, 0], [2, 0.02]), 10 * Math.log10(4 / 0.0004));
  assert.equal(sqnr([0, 0], [0, 1]), -Infinity);
  assert.throws(() => sqnr([1], [1, 2]), /equal length but found 1 and 2/);
});

Deno.test("fidelity() uses confident float detections as ground truth", () => {
  const float = [[det(A, 0.9), det(B, 0.6), det([400, 400, 450, 450], 0.29)], []];
  // int8 finds A, misses B, adds a false positive ranked first on image 2.
  const int8 = [[det(A, 0.85)], [det(A, 0.95)]];
  const f = fidelity(float, int8);
  assert.equal(f.references, 2);
  // Ranked: FP (0.95), A (0.85) → recall 0 then 0.5 → precision 0.5 at 51 of 101 thresholds.
  assert.equal(f.ap50, (51 * 0.5) / 101);
  assert.equal(fidelity(float, float).map, 1);
  // Nothing confident in the float model: no reference, pycocotools' −1.
  assert.deepEqual(fidelity([[det(A, 0.1)]], [[det(A, 0.1)]]), {
    ap50: -1,
    map: -1,
    references: 0,
  });
  assert.equal(fidelity(float, float, { threshold: 0.1 }).references, 3);
});

Deno.test("evaluateDetections() reports float and int8 accuracy and the drop with VOC metrics", () => {
  const gt = [[{ box: A, label: 0 }, { box: B, label: 0 }]];
  const r = evaluateDetections({
    float: [[det(A, 0.9), det(B, 0.8)]],
    int8: [[det([300, 300, 400, 400], 0.95), det(A, 0.9), det(B, 0.8)]],
    groundTruth: gt,
  }, { metric: "voc" });
  assert.equal(r.float?.map, 1);
  // Miss first: recall 0 .5 1, precision 0 1/2 2/3 → 2/3 envelope over all recall.
  assert.equal(r.int8?.map, 2 / 3);
  assert.equal(r.drop?.map, 1 - 2 / 3);
  assert.equal(r.images, 1);
  assert.equal(evaluateDetections({ float: [[]], int8: [[]] }).float, undefined);
  assert.throws(
    () => evaluateDetections({ float: [[]], int8: [[]] }, { metric: "map" as never }),
    /one of coco, voc, voc07/,
  );
});

Deno.test("cocoGroundTruth() orders images by file and maps category ids to labels", () => {
  const dataset = {
    images: [{ id: 3, file: "b.jpg" }, { id: 1, file: "a.jpg" }],
    annotations: [
      { imageId: 1, category: 90, box: [0, 0, 1, 1], iscrowd: 1 },
      { imageId: 3, category: 1, box: [1, 1, 2, 2], area: 7 },
      { imageId: 9, category: 1, box: [1, 1, 2, 2] },
    ],
  };
  assert.deepEqual(cocoGroundTruth(dataset, { files: ["a.jpg", "b.jpg"] }), [
    [{ box: [0, 0, 1, 1], label: 1, iscrowd: true }],
    [{ box: [1, 1, 2, 2], label: 0, iscrowd: false, area: 7 }],
  ]);
  assert.deepEqual(
    cocoGroundTruth(dataset, { labelOf: (c) => (c === 1 ? 5 : undefined) }),
    [[{ box: [1, 1, 2, 2], label: 5, iscrowd: false, area: 7 }], []],
  );
  assert.throws(() => cocoGroundTruth(dataset, { files: ["c.jpg"] }), /c\.jpg/);
});

Deno.test("vocGroundTruth() maps class names and keeps difficult flags", () => {
  const gt = vocGroundTruth([{
    objects: [
      { name: "person", box: [1, 2, 3, 4], difficult: false },
      { name: "unicorn", box: [1, 2, 3, 4] },
    ],
  }]);
  assert.deepEqual(gt, [[{ box: [1, 2, 3, 4], label: 14, difficult: false }]]);
  assert.deepEqual(
    vocGroundTruth([{ objects: [{ name: "b", box: [0, 0, 1, 1] }] }], {
      classes: ["a", "b"],
    })[0]![0]!.label,
    1,
  );
});

Deno.test("resolveHead() fills keys from the model's head metadata, the config winning", () => {
  const metadata = new Map([[
    METADATA_KEYS.head,
    JSON.stringify({
      type: "yolov3",
      outputs: ["l0", "l1"],
      strides: [32, 16],
      anchors: [[[116, 90]], [[30, 61]]],
      classes: 80,
      inputSize: [416, 416],
    }),
  ]]);
  const head = resolveHead(undefined, { metadata });
  assert.equal(head.type, "yolov3");
  assert.deepEqual(head.outputs, ["l0", "l1"]);
  assert.equal(head.classes, 80);
  assert.deepEqual(head.nms, { iou: 0.45, score: 0.01, maxDetections: 100, classAgnostic: false });
  assert.equal("inputSize" in head, false);
  const h2 = resolveHead({ classes: 20, nms: { score: 0.3, preTopK: 1000 } }, { metadata });
  assert.equal(h2.classes, 20);
  assert.deepEqual(h2.nms, {
    iou: 0.45,
    score: 0.3,
    maxDetections: 100,
    classAgnostic: false,
    preTopK: 1000,
  });
  // Metadata of another head type is not mixed in.
  assert.throws(() => resolveHead({ type: "ssd" }, { metadata }), /head\.outputs/);
  assert.throws(
    () => resolveHead({ nms: { iou: 2 } }, { metadata, keyPath: "model.head" }),
    /model\.head\.nms\.iou: expected a number in \[0, 1\] but found 2/,
  );
});

Deno.test("resolveHead() keeps up to 1000 text boxes for DB heads unless told otherwise", () => {
  assert.equal(resolveHead({ type: "db", outputs: ["m"] }).nms.maxDetections, 1000);
  assert.equal(
    resolveHead({ type: "db", outputs: ["m"], nms: { maxDetections: 5 } }).nms.maxDetections,
    5,
  );
  assert.equal(resolveHead({ type: "yolo-decoded", outputs: ["d"] }).nms.maxDetections, 100);
});

Deno.test("headAutoOutputs() lists the head's graph outputs and names a missing one", () => {
  const ssd = resolveHead({ type: "ssd", outputs: ["loc", "conf"], priors: "anchors" });
  assert.deepEqual(headAutoOutputs(ssd, ["conf", "loc", "anchors"]), ["loc", "conf", "anchors"]);
  assert.throws(
    () => headAutoOutputs(ssd, ["conf", "loc"]),
    /"anchors" to be a graph output but the graph's outputs are conf, loc/,
  );
});
