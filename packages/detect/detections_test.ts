import assert from "node:assert/strict";
import { boxTransform, toModelBox } from "@clipq/data/preprocess";
import { ConfigError, ModelError } from "@clipq/onnx/errors";
import { float32 } from "@clipq/onnx/tensor";
import { decodeBatch, decodeOutputs } from "./decode.ts";
import { decodeDetections } from "./detections.ts";
import { type DetectionsHead, headAutoOutputs, resolveHead } from "./head.ts";

const head = (extra: Record<string, unknown> = {}) =>
  resolveHead({ type: "detections", outputs: ["dets"], ...extra }) as DetectionsHead;

/** Rows padded with zero rows to K, as a [1, K, D] tensor. */
function rows(values: number[][], K = values.length, D = values[0]?.length ?? 6) {
  const x = new Float32Array(K * D);
  values.forEach((r, i) => x.set(r, i * D));
  return float32([1, K, D], x);
}

Deno.test("resolveHead() fills the detections defaults: xyxy pixel rows, 0-based classes, no NMS", () => {
  const h = head();
  assert.deepEqual(h.columns, ["x1", "y1", "x2", "y2", "score", "class"]);
  assert.equal(h.normalized, false);
  assert.equal(h.classOffset, 0);
  assert.equal(h.columnOffset, 0);
  assert.equal(h.nms.iou, 1);
  assert.equal(h.nms.score, 0.01);
  assert.equal(h.nms.maxDetections, 100);
  assert.equal(head({ nms: { iou: 0.5 } }).nms.iou, 0.5);
  // Metadata that sets an IoU re-applies NMS as a config would.
  const metadata = new Map([[
    "clipq.head",
    JSON.stringify({ type: "detections", outputs: ["dets"], nms: { iou: 0.6 } }),
  ]]);
  assert.equal((resolveHead(undefined, { metadata }) as DetectionsHead).nms.iou, 0.6);
});

Deno.test("decodeOutputs() reads xyxy pixel rows, drops padded zero rows and keeps the model's order by score", () => {
  const out = rows([[10, 20, 30, 60, 0.9, 3], [12, 22, 32, 62, 0.8, 3], [0, 0, 5, 5, 0.95, 0]], 5);
  const dets = decodeOutputs(head(), { dets: out });
  // The two overlapping rows of class 3 both stay: rows are final, no NMS by default.
  assert.deepEqual(dets.map((d) => d.box), [[0, 0, 5, 5], [10, 20, 30, 60], [12, 22, 32, 62]]);
  assert.deepEqual(dets.map((d) => d.label), [0, 3, 3]);
  assert.deepEqual(dets.map((d) => Math.round(d.score * 100)), [95, 90, 80]);
});

Deno.test("decodeOutputs() re-applies class-wise NMS only when nms.iou is set", () => {
  const out = rows([[10, 20, 30, 60, 0.9, 3], [12, 22, 32, 62, 0.8, 3], [12, 22, 32, 62, 0.7, 1]]);
  const dets = decodeOutputs(head({ nms: { iou: 0.5 } }), { dets: out });
  assert.deepEqual(dets.map((d) => [d.label, Math.round(d.score * 10)]), [[3, 9], [1, 7]]);
  const agnostic = decodeOutputs(head({ nms: { iou: 0.5, classAgnostic: true } }), { dets: out });
  assert.equal(agnostic.length, 1);
});

Deno.test("decodeDetections() reads TF's y1, x1, y2, x2 normalized rows with 1-based classes", () => {
  const h = head({
    columns: ["y1", "x1", "y2", "x2", "score", "class"],
    normalized: true,
    classOffset: 1,
  });
  // 0 = background after the offset: dropped even though it scores high.
  const out = rows([[0.1, 0.2, 0.5, 0.6, 0.7, 18], [0, 0, 1, 1, 0.99, 0]], 3);
  const c = decodeDetections(h, { dets: out }, { size: [200, 400] });
  assert.equal(c.count, 1);
  const box = [...c.boxes.subarray(0, 4)];
  [80, 20, 240, 100].forEach((v, i) => assert.ok(Math.abs(box[i]! - v) < 1e-4, `${box}`));
  assert.equal(c.labels[0], 17);
  assert.throws(
    () => decodeDetections(h, { dets: out }),
    (e) =>
      e instanceof ModelError &&
      /input size to scale normalized boxes of output "dets"/.test(e.message),
  );
});

Deno.test("decodeDetections() reads cx, cy, w, h rows in any column order, ignoring extra columns", () => {
  const h = head({ columns: ["class", "score", "cx", "cy", "w", "h"] });
  // A seventh column (e.g. a track id) is ignored.
  const c = decodeDetections(h, { dets: rows([[2, 0.6, 50, 40, 20, 10, 99]]) });
  assert.deepEqual([...c.boxes.subarray(0, 4)], [40, 35, 60, 45]);
  assert.equal(c.labels[0], 2);
  assert.ok(Math.abs(c.scores[0]! - 0.6) < 1e-6);
});

Deno.test("decodeOutputs() applies nms.score and nms.maxDetections to final rows", () => {
  const values = Array.from({ length: 10 }, (_, i) => [i, i, i + 10, i + 10, (i + 1) / 10, 0]);
  const out = rows(values, 12);
  const some = decodeOutputs(head({ nms: { score: 0.45 } }), { dets: out });
  assert.deepEqual(some.map((d) => d.box[0]), [9, 8, 7, 6, 5, 4]);
  const best = decodeOutputs(head({ nms: { maxDetections: 3 } }), { dets: out });
  assert.deepEqual(best.map((d) => d.box[0]), [9, 8, 7]);
});

Deno.test("decodeBatch() reads each image's rows of a batch of 2 and maps boxes back through the letterbox", () => {
  const transforms = [
    boxTransform({ width: 200, height: 100 }, { size: [64, 64], resize: "letterbox" }),
    boxTransform({ width: 64, height: 128 }, { size: [64, 64], resize: "letterbox" }),
  ];
  const truth = [[20, 10, 120, 90], [8, 16, 40, 100]] as const;
  const m0 = toModelBox(truth[0], transforms[0]!), m1 = toModelBox(truth[1], transforms[1]!);
  const x = new Float32Array(2 * 3 * 6);
  x.set([...m0, 0.8, 4], 0);
  x.set([...m1, 0.7, 1], 3 * 6);
  x.set([...m1, 0.005, 2], 4 * 6); // below the default score threshold 0.01
  const out = decodeBatch(head(), { dets: float32([2, 3, 6], x) }, { transforms });
  assert.equal(out.length, 2);
  assert.equal(out[0]!.length, 1);
  assert.equal(out[1]!.length, 1);
  [[out[0]![0]!, truth[0], 4], [out[1]![0]!, truth[1], 1]].forEach(([d, t, label]) => {
    const det = d as { box: number[]; label: number };
    (t as readonly number[]).forEach((v, i) =>
      assert.ok(Math.abs(det.box[i]! - v) < 1e-3, `${det.box} vs ${t}`)
    );
    assert.equal(det.label, label);
  });
});

Deno.test("decodeDetections() reads [K, D] outputs without a batch axis, and refuses a second image of them", () => {
  const t = float32([2, 6], [1, 2, 3, 4, 0.5, 7, 0, 0, 0, 0, 0, 0]);
  const c = decodeDetections(head(), { dets: t });
  assert.equal(c.count, 1);
  assert.equal(c.labels[0], 7);
  assert.throws(
    () => decodeDetections(head(), { dets: t }, { batch: 1 }),
    /output "dets": expected shape \[N, K, D\] with batch > 1 but found \[2, 6\]/,
  );
});

Deno.test("decodeDetections() names the output when rows are shorter than the columns or classes overflow", () => {
  assert.throws(
    () => decodeDetections(head(), { dets: float32([1, 1, 5], [0, 0, 1, 1, 1]) }),
    /output "dets": expected shape rows of at least 6 values \(x1, y1, x2, y2, score, class\) but found \[1, 1, 5\]/,
  );
  assert.throws(
    () => decodeDetections(head({ classes: 80 }), { dets: rows([[0, 0, 1, 1, 0.9, 80]]) }),
    /output "dets": expected classes below 80 \(after classOffset 0\) but row 0 has 80/,
  );
  assert.throws(
    () => decodeDetections(head(), { other: rows([[0, 0, 1, 1, 0.9, 1]]) }),
    /expected model output "dets" but the outputs are other/,
  );
});

Deno.test("resolveHead() rejects bad detections columns, naming the key", () => {
  const bad = (extra: Record<string, unknown>, key: RegExp, msg: RegExp) =>
    assert.throws(
      () => head(extra),
      (e) => e instanceof ConfigError && key.test(e.message) && msg.test(e.message),
    );
  bad(
    { columns: ["x1", "y1", "x2", "y2", "conf", "class"] },
    /^head\.columns\[4\]:/,
    /expected one of x1, y1, x2, y2, cx, cy, w, h, score, class but found "conf"/,
  );
  bad(
    { columns: ["x1", "y1", "x2", "score", "class"] },
    /^head\.columns:/,
    /expected one complete box, x1, y1, x2, y2 or cx, cy, w, h, but found the box columns x1, y1, x2$/,
  );
  bad(
    { columns: ["x1", "y1", "w", "h", "score", "class"] },
    /head\.columns:/,
    /but found the box columns x1, y1, w, h/,
  );
  bad(
    { columns: ["x1", "y1", "x2", "y2", "class"] },
    /head\.columns:/,
    /expected a "score" column but found x1, y1, x2, y2, class/,
  );
  bad({ columnOffset: -1 }, /^head\.columnOffset:/, /expected a non-negative integer but found -1/);
  bad({ columnOffset: 1.5 }, /^head\.columnOffset:/, /expected a non-negative integer/);
  bad(
    { columns: ["x1", "y1", "x2", "y2", "score", "score", "class"] },
    /head\.columns\[5\]:/,
    /expected each column once but found "score" again/,
  );
  bad({ columns: "xyxy" }, /head\.columns:/, /expected a non-empty list of column names/);
  bad({ normalized: "yes" }, /head\.normalized:/, /expected true or false but found "yes"/);
  bad({ classOffset: 0.5 }, /head\.classOffset:/, /expected an integer but found 0\.5/);
  bad({ outputs: ["a", "b"] }, /head\.outputs:/, /expected 1 output name\(s\)/);
  bad({ boxFormat: "xyxy" }, /head\.boxFormat:/, /unknown key for head type "detections"/);
});

Deno.test("headAutoOutputs() keeps a detections head's single output", () => {
  assert.deepEqual(headAutoOutputs(head(), ["dets", "features"]), ["dets"]);
});

Deno.test("decodeDetections() reads a one-class detector's rows from columnOffset on, every row class 0 (MoveNet)", () => {
  // 3 keypoint values skipped, then y1, x1, y2, x2, score, normalized.
  const h = head({
    columns: ["y1", "x1", "y2", "x2", "score"],
    columnOffset: 3,
    normalized: true,
    nms: { score: 0.1 },
  });
  const dets = rows([[0.5, 0.5, 0.9, 0.1, 0.2, 0.5, 0.4, 0.7], [9, 9, 9, 0.5, 0.5, 1, 1, 0.05]]);
  const c = decodeDetections(h, { dets }, { size: [100, 200] });
  assert.equal(c.count, 1);
  assert.deepEqual([...c.boxes.subarray(0, 4)].map((v) => Math.round(v * 1e4) / 1e4), [
    40,
    10,
    80,
    50,
  ]);
  assert.equal(c.scores[0], Float32Array.from([0.7])[0]);
  assert.equal(c.labels[0], 0);
  assert.throws(
    () => decodeDetections(h, { dets: float32([1, 1, 7], new Array(7).fill(0)) }, { size: [1, 1] }),
    /expected shape rows of at least 8 values \(3 skipped, then y1, x1, y2, x2, score\) but found \[1, 1, 7\]/,
  );
});
