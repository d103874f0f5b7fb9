import assert from "node:assert/strict";
import { cocoMap } from "./coco_eval.ts";
import type { GroundTruthObject } from "./ground_truth.ts";
import type { Box, Detection } from "./types.ts";

const det = (box: Box, score: number, label = 0): Detection => ({ box, score, label });
const obj = (box: Box, extra: Partial<GroundTruthObject> = {}): GroundTruthObject => ({
  box,
  label: 0,
  ...extra,
});
const A: Box = [0, 0, 100, 100];
const B: Box = [200, 0, 300, 100];
const FAR: Box = [500, 500, 600, 600];

function close(actual: number, expected: number) {
  assert.ok(Math.abs(actual - expected) < 1e-12, `expected ${expected} but found ${actual}`);
}

Deno.test("cocoMap() scores perfect detections 1 on every AP and AR", () => {
  const m = cocoMap([[det(A, 0.9)], [det(B, 0.8)]], [[obj(A)], [obj(B)]]);
  assert.equal(m.map, 1);
  assert.equal(m.ap50, 1);
  assert.equal(m.ap75, 1);
  assert.equal(m.apLarge, 1);
  assert.equal(m.ar1, 1);
  assert.equal(m.ar100, 1);
  // 100×100 objects are large: no small or medium ground truth → −1, as pycocotools prints.
  assert.equal(m.apSmall, -1);
  assert.equal(m.apMedium, -1);
  assert.deepEqual(m.perClass, { 0: 1 });
});

Deno.test("cocoMap() halves AP when one false positive ranks first", () => {
  const m = cocoMap([[det(FAR, 0.95), det(A, 0.9)]], [[obj(A)]]);
  assert.equal(m.ap50, 0.5);
  assert.equal(m.map, 0.5);
  assert.equal(m.ar100, 1);
});

Deno.test("cocoMap() counts a duplicate as a false positive", () => {
  const m = cocoMap([[det(A, 0.9), det(A, 0.8), det(B, 0.7)]], [[obj(A), obj(B)]]);
  // Curve: recall .5 .5 1, precision 1 .5 2/3 → envelope 1 at recall ≤ .5 (51 thresholds),
  // 2/3 above (50 thresholds).
  close(m.ap50, (51 + 50 * (2 / 3)) / 101);
  // A duplicate after the only hit costs nothing.
  assert.equal(cocoMap([[det(A, 0.9), det(A, 0.8)]], [[obj(A)]]).map, 1);
});

Deno.test("cocoMap() breaks score ties by input order, across and within images", () => {
  const gt = [[obj(A)], []];
  assert.equal(cocoMap([[det(A, 0.9)], [det(FAR, 0.9)]], gt).ap50, 1);
  assert.equal(cocoMap([[det(FAR, 0.9), det(A, 0.9)], []], gt).ap50, 0.5);
  assert.equal(cocoMap([[det(A, 0.9), det(FAR, 0.9)], []], gt).ap50, 1);
});

Deno.test("cocoMap() ignores detections inside a crowd region, measured over the detection's area", () => {
  const crowd = obj([300, 300, 700, 700], { iscrowd: true });
  // Both lie wholly inside the crowd: intersection / detection area = 1, so both are ignored
  // (a crowd region can absorb many detections).
  const inside1 = det([310, 310, 360, 360], 0.99);
  const inside2 = det([400, 400, 450, 450], 0.98);
  assert.equal(cocoMap([[inside1, inside2, det(A, 0.9)]], [[obj(A), crowd]]).map, 1);
  // Mostly outside the crowd (40 % of its area inside): a false positive.
  const straddling = det([240, 300, 340, 400], 0.99);
  assert.equal(cocoMap([[straddling, det(A, 0.9)]], [[obj(A), crowd]]).ap50, 0.5);
  // A class whose only ground truth is a crowd region has no AP.
  assert.equal(cocoMap([[inside1]], [[crowd]]).map, -1);
});

Deno.test("cocoMap() counts detections on an image without ground truth as false positives", () => {
  const m = cocoMap([[det(A, 0.9)], [det(A, 0.95)], []], [[obj(A)], [], []]);
  assert.equal(m.ap50, 0.5);
});

Deno.test("cocoMap() matches at IoU ≥ threshold: IoU 0.75 counts at 0.50..0.75 only", () => {
  const m = cocoMap([[det([0, 0, 100, 75], 0.9)]], [[obj(A)]]);
  assert.equal(m.ap50, 1);
  assert.equal(m.ap75, 1);
  assert.equal(m.map, 0.6);
});

Deno.test("cocoMap() splits by area and limits detections per image for AR", () => {
  const small: Box = [0, 0, 20, 20];
  const medium: Box = [100, 100, 150, 150];
  const m = cocoMap(
    [[det(small, 0.9), det(medium, 0.8)]],
    [[obj(small), obj(medium)]],
  );
  assert.equal(m.apSmall, 1);
  assert.equal(m.apMedium, 1);
  assert.equal(m.apLarge, -1);
  assert.equal(m.ar1, 0.5);
  assert.equal(m.ar10, 1);
  // A given area overrides the box area (COCO's segmentation area).
  assert.equal(cocoMap([[det(small, 0.9)]], [[obj(small, { area: 5000 })]]).apMedium, 1);
});

Deno.test("cocoMap() averages over classes and ignores classes without ground truth", () => {
  const m = cocoMap(
    [[det(A, 0.9, 0), det(FAR, 0.95, 1), det(B, 0.9, 1), det(FAR, 0.99, 7)]],
    [[obj(A), obj(B, { label: 1 })]],
  );
  assert.deepEqual(m.perClass, { 0: 1, 1: 0.5 });
  assert.equal(m.map, 0.75);
});

Deno.test("cocoMap() rejects detection and ground-truth lists of different lengths", () => {
  assert.throws(() => cocoMap([[]], [[], []]), /Expected detections for 2 images/);
});

Deno.test("cocoMap() ranks a NaN score last, whatever the input order (as pycocotools does)", () => {
  const gt = [[{ box: [0, 0, 100, 100] as Box, label: 0 }]];
  const hit = { box: [0, 0, 100, 100] as Box, score: NaN, label: 0 };
  const fp = { box: [300, 300, 400, 400] as Box, score: 0.5, label: 0 };
  // The comparator had returned NaN, so the order (and AP50: 1 or 0.5) followed the input's.
  assert.equal(cocoMap([[hit, fp]], gt).ap50, 0.5);
  assert.equal(cocoMap([[fp, hit]], gt).ap50, 0.5);
});
