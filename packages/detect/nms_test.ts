import assert from "node:assert/strict";
import { iou, nms } from "./nms.ts";
import type { Candidates } from "./types.ts";

function mulberry32(seed: number): () => number {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomCandidates(n: number, seed: number, classes: number, size = 60): Candidates {
  const rnd = mulberry32(seed);
  const boxes = new Float32Array(4 * n);
  const scores = new Float32Array(n);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const x = rnd() * 200, y = rnd() * 200, w = 5 + rnd() * size, h = 5 + rnd() * size;
    boxes.set([x, y, x + w, y + h], 4 * i);
    // Coarse scores so ties happen.
    scores[i] = Math.round(rnd() * 50) / 50;
    labels[i] = Math.floor(rnd() * classes);
  }
  return { boxes, scores, labels, count: n };
}

/** The textbook O(n²) greedy NMS with suppression flags. */
function bruteForce(
  c: Candidates,
  o: { iou: number; score: number; maxDetections: number; preTopK?: number; agnostic: boolean },
): number[] {
  let order = [...Array(c.count).keys()].filter((i) => c.scores[i]! >= o.score);
  order.sort((a, b) => c.scores[b]! - c.scores[a]! || a - b);
  if (o.preTopK !== undefined) order = order.slice(0, o.preTopK);
  const box = (i: number) => c.boxes.subarray(4 * i, 4 * i + 4);
  const suppressed = new Set<number>();
  const kept: number[] = [];
  for (let a = 0; a < order.length; a++) {
    const i = order[a]!;
    if (suppressed.has(i)) continue;
    kept.push(i);
    for (let b = a + 1; b < order.length; b++) {
      const j = order[b]!;
      if (!o.agnostic && c.labels[i] !== c.labels[j]) continue;
      if (iou(box(i), box(j)) > o.iou) suppressed.add(j);
    }
  }
  return kept.slice(0, o.maxDetections);
}

Deno.test("nms() keeps the same indices as brute-force greedy NMS on random sets", () => {
  for (let seed = 1; seed <= 12; seed++) {
    const c = randomCandidates(400, seed, 3);
    for (const agnostic of [false, true]) {
      for (
        const [thr, score, maxDet, preTopK] of [
          [0.45, 0.01, 100, undefined],
          [0.3, 0.5, 1000, undefined],
          [0.7, 0, 50, 200],
        ] as const
      ) {
        const expected = bruteForce(c, {
          iou: thr,
          score,
          maxDetections: maxDet,
          agnostic,
          ...(preTopK !== undefined ? { preTopK } : {}),
        });
        const got = nms(c, {
          iou: thr,
          score,
          maxDetections: maxDet,
          classAgnostic: agnostic,
          ...(preTopK !== undefined ? { preTopK } : {}),
        });
        assert.deepEqual([...got], expected, `seed ${seed} agnostic ${agnostic} iou ${thr}`);
        assert.ok(expected.length > 0);
      }
    }
  }
});

Deno.test("nms() keeps the same indices as brute force when many small boxes are kept (grid path)", () => {
  for (let seed = 1; seed <= 6; seed++) {
    const c = randomCandidates(1500, seed, 4, 8);
    for (const agnostic of [false, true]) {
      const expected = bruteForce(c, { iou: 0.3, score: 0, maxDetections: 2000, agnostic });
      const got = nms(c, { iou: 0.3, score: 0, maxDetections: 2000, classAgnostic: agnostic });
      assert.deepEqual([...got], expected, `seed ${seed} agnostic ${agnostic}`);
      assert.ok(expected.length > 500);
    }
  }
});

Deno.test("nms() applies the score threshold inclusively and limits to maxDetections", () => {
  const c: Candidates = {
    boxes: new Float32Array([0, 0, 1, 1, 5, 5, 6, 6, 10, 10, 11, 11]),
    scores: new Float32Array([0.5, 0.25, 0.75]),
    labels: new Int32Array([0, 0, 0]),
    count: 3,
  };
  assert.deepEqual([...nms(c, { score: 0.5 })], [2, 0]);
  assert.deepEqual([...nms(c, { score: 0, maxDetections: 2 })], [2, 0]);
  assert.deepEqual([...nms(c, { score: 0, preTopK: 1 })], [2]);
  assert.deepEqual([...nms(c, { maxDetections: 0 })], []);
});

Deno.test("nms() suppresses only above the IoU threshold", () => {
  // IoU of these two is exactly 1/3.
  const c: Candidates = {
    boxes: new Float32Array([0, 0, 2, 2, 1, 0, 3, 2]),
    scores: new Float32Array([0.9, 0.8]),
    labels: new Int32Array([0, 0]),
    count: 2,
  };
  assert.deepEqual([...nms(c, { iou: 1 / 3 })], [0, 1]);
  assert.deepEqual([...nms(c, { iou: 0.33 })], [0]);
});

Deno.test("nms() rejects an IoU threshold outside [0, 1]", () => {
  const c: Candidates = {
    boxes: new Float32Array(0),
    scores: new Float32Array(0),
    labels: new Int32Array(0),
    count: 0,
  };
  assert.throws(() => nms(c, { iou: 1.5 }), /Expected nms\.iou to be in \[0, 1\] but found 1\.5/);
});

Deno.test("nms() stops at maxDetections on 10 000 candidates", () => {
  const c = randomCandidates(10_000, 7, 80);
  const kept = nms(c, { score: 0 });
  assert.equal(kept.length, 100);
  for (let k = 1; k < kept.length; k++) {
    assert.ok(c.scores[kept[k - 1]!]! >= c.scores[kept[k]!]!);
  }
});

Deno.test("nms() suppresses on its grid path too when one box has a non-finite coordinate, and ranks -0 with 0", async () => {
  const { toCandidates } = await import("./types.ts");
  const dets = [];
  // 200 separate objects, each with an exact duplicate, and one box with an infinite corner: the
  // grid's cell sizes had become NaN and nothing was suppressed (401 kept of 401).
  for (let i = 0; i < 200; i++) {
    const x = (i % 20) * 50, y = Math.floor(i / 20) * 50;
    dets.push({
      box: [x, y, x + 20, y + 20] as [number, number, number, number],
      score: 0.9,
      label: 0,
    });
    dets.push({
      box: [x, y, x + 20, y + 20] as [number, number, number, number],
      score: 0.8,
      label: 0,
    });
  }
  dets.push({
    box: [0, 0, Infinity, 10] as [number, number, number, number],
    score: 0.7,
    label: 0,
  });
  const c = toCandidates(dets);
  assert.equal(nms(c, { iou: 0.5, maxDetections: 1000 }).length, 201);
  assert.equal(nms(c, { iou: 0.5, maxDetections: 128 }).length, 128);
  // Equal scores keep input order, -0 and 0 included.
  const z = toCandidates([
    { box: [0, 0, 1, 1], score: -0, label: 0 },
    { box: [5, 5, 6, 6], score: 0, label: 0 },
  ]);
  assert.deepEqual([...nms(z, { score: -1 })], [0, 1]);
});
