import assert from "node:assert/strict";
import { vocAp, vocMap } from "./voc_eval.ts";
import type { Box, Detection } from "./types.ts";

const det = (box: Box, score: number, label = 0): Detection => ({ box, score, label });
const A: Box = [0, 0, 99, 99];
const B: Box = [200, 0, 299, 99];
const C: Box = [400, 0, 499, 99];
const FAR: Box = [600, 600, 699, 699];

function close(actual: number, expected: number) {
  assert.ok(Math.abs(actual - expected) < 1e-12, `expected ${expected} but found ${actual}`);
}

Deno.test("vocMap() scores perfect detections 1 with both AP methods", () => {
  const gt = [[{ box: A, label: 0 }, { box: B, label: 3 }]];
  const dets = [[det(A, 0.9), det(B, 0.8, 3)]];
  assert.equal(vocMap(dets, gt).map, 1);
  assert.equal(vocMap(dets, gt, { ap: "11-point" }).map, 1);
});

Deno.test("vocMap() VOC07 11-point and all-point AP differ on a known curve", () => {
  // Three objects; ranked: hit, miss, miss, hit, hit → recall 1/3 1/3 1/3 2/3 1,
  // precision 1 1/2 1/3 1/2 3/5.
  const gt = [[{ box: A, label: 0 }, { box: B, label: 0 }, { box: C, label: 0 }]];
  const dets = [[det(A, 0.9), det(FAR, 0.8), det(FAR, 0.7), det(B, 0.6), det(C, 0.5)]];
  // All-point: envelope 1 up to recall 1/3, then 3/5 → 1/3 + 2/3 · 3/5.
  close(vocMap(dets, gt).map, 1 / 3 + (2 / 3) * (3 / 5));
  // 11-point: t = 0, .1, .2, .3 → 1; t = .4 … 1 (7 points) → 3/5.
  close(vocMap(dets, gt, { ap: "11-point" }).map, (4 + 7 * (3 / 5)) / 11);
  assert.notEqual(vocMap(dets, gt).map, vocMap(dets, gt, { ap: "11-point" }).map);
});

Deno.test("vocAp() follows the devkit on a hand-computed curve", () => {
  close(vocAp([0.5, 0.5, 1], [1, 0.5, 2 / 3], "all-point"), 0.5 + 0.5 * (2 / 3));
  close(vocAp([0.5, 0.5, 1], [1, 0.5, 2 / 3], "11-point"), (6 + 5 * (2 / 3)) / 11);
  assert.equal(vocAp([], [], "all-point"), 0);
});

Deno.test("vocMap() ignores difficult objects and counts duplicates as false positives", () => {
  const gt = [[{ box: A, label: 0 }, { box: B, label: 0, difficult: true }]];
  assert.equal(vocMap([[det(B, 0.95), det(A, 0.9)]], gt).map, 1);
  // Duplicate on A ranked second: recall 1 1, precision 1 1/2 → all-point AP 1.
  assert.equal(vocMap([[det(A, 0.95), det(A, 0.9)]], gt).map, 1);
  // Duplicate ranked first is impossible; a miss ranked first halves it.
  assert.equal(vocMap([[det(FAR, 0.95), det(A, 0.9)]], gt).map, 0.5);
});

Deno.test("vocMap() needs IoU above 0.5 and uses +1 pixel sizes by default", () => {
  const gt = [[{ box: [0, 0, 9, 9] as Box, label: 0 }]];
  // [0,0,9,9] vs [0,0,9,5]: +1 → 60/100 = 0.6 > 0.5 hit; without +1 → 45/81 ≈ 0.556 hit too.
  assert.equal(vocMap([[det([0, 0, 9, 5], 0.9)]], gt).map, 1);
  // [0,0,9,9] vs [0,0,9,4]: +1 → 50/100 = 0.5, not above 0.5: miss.
  assert.equal(vocMap([[det([0, 0, 9, 4], 0.9)]], gt, { plusOne: true }).map, 0);
  // [0,0,10,10] vs [0,0,10,5.5] without +1 → 0.55 hit; with +1 → 71.5/121 ≈ 0.59 hit.
  assert.equal(
    vocMap([[det([0, 0, 10, 5.5], 0.9)]], [[{ box: [0, 0, 10, 10], label: 0 }]], {
      plusOne: false,
    }).map,
    1,
  );
  // [0,0,10,10] vs [0,0,10,5] without +1 → exactly 0.5 (miss); with +1 → 66/121 (hit).
  const half = [[det([0, 0, 10, 5], 0.9)]];
  const g10 = [[{ box: [0, 0, 10, 10] as Box, label: 0 }]];
  assert.equal(vocMap(half, g10, { plusOne: false }).map, 0);
  assert.equal(vocMap(half, g10).map, 1);
});

Deno.test("vocMap() leaves out classes without non-difficult objects", () => {
  const gt = [[{ box: A, label: 0 }, { box: B, label: 1, difficult: true }]];
  const r = vocMap([[det(A, 0.9)]], gt);
  assert.deepEqual(r.perClass, { 0: 1 });
  assert.equal(r.map, 1);
});
