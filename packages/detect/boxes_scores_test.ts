import assert from "node:assert/strict";
import { boxTransform, toModelBox } from "@clipq/data/preprocess";
import { ConfigError, ModelError } from "@clipq/onnx/errors";
import { float32 } from "@clipq/onnx/tensor";
import { decodeBoxesScores } from "./boxes_scores.ts";
import { decodeBatch, decodeOutputs } from "./decode.ts";
import type { Candidates } from "./types.ts";
import { type BoxesScoresHead, headAutoOutputs, resolveHead } from "./head.ts";

const head = (extra: Record<string, unknown> = {}) =>
  resolveHead({ type: "boxes-scores", outputs: ["boxes", "scores"], ...extra }) as BoxesScoresHead;

/** Boxes [1, K, 4] and scores [1, K, C] from rows. */
function outs(boxes: number[][], scores: number[][]) {
  const C = scores[0]!.length;
  return {
    boxes: float32([1, boxes.length, 4], boxes.flat()),
    scores: float32([1, scores.length, C], scores.flat()),
  };
}

// Candidate arrays are views of a growing buffer: read only the first `count`.
const boxesOf = (c: Candidates) => [...c.boxes.subarray(0, 4 * c.count)];
const labelsOf = (c: Candidates) => [...c.labels.subarray(0, c.count)];
const scoresOf = (c: Candidates) => [...c.scores.subarray(0, c.count)];

const round = (xs: Iterable<number>, d = 1000) => [...xs].map((x) => Math.round(x * d) / d);

Deno.test("resolveHead() fills the boxes-scores defaults: xyxy pixels, probabilities, no background, usual NMS", () => {
  const h = head();
  assert.deepEqual(h.columns, ["x1", "y1", "x2", "y2"]);
  assert.equal(h.normalized, false);
  assert.equal(h.activation, "none");
  assert.equal(h.background, undefined);
  assert.equal("background" in h, false);
  assert.deepEqual(h.nms, { iou: 0.45, score: 0.01, maxDetections: 100, classAgnostic: false });
  assert.equal(head({ background: 0 }).background, 0);
});

Deno.test("decodeBoxesScores() makes one candidate per box and class at or above nms.score", () => {
  const c = decodeBoxesScores(
    head(),
    outs([[10, 20, 30, 60], [0, 0, 5, 5]], [[0.9, 0.005, 0.3], [0.02, 0.5, 0]]),
  );
  assert.equal(c.count, 4);
  assert.deepEqual(boxesOf(c), [
    ...[10, 20, 30, 60, 10, 20, 30, 60],
    ...[0, 0, 5, 5, 0, 0, 5, 5],
  ]);
  assert.deepEqual(labelsOf(c), [0, 2, 0, 1]);
  assert.deepEqual(round(scoresOf(c)), [0.9, 0.3, 0.02, 0.5]);
});

Deno.test("decodeBoxesScores() reads TF's y1, x1, y2, x2 normalized boxes and drops background column 0 (column j is label j − 1)", () => {
  const h = head({ columns: ["y1", "x1", "y2", "x2"], normalized: true, background: 0 });
  const c = decodeBoxesScores(
    h,
    outs([[0.1, 0.2, 0.5, 0.6]], [[0.99, 0.2, 0.7, 0]]),
    { size: [100, 200] },
  );
  // x1 = 0.2 · 200, y1 = 0.1 · 100, x2 = 0.6 · 200, y2 = 0.5 · 100.
  assert.deepEqual(round(c.boxes.subarray(0, 4)), [40, 10, 120, 50]);
  assert.deepEqual(labelsOf(c), [0, 1]);
  assert.deepEqual(round(scoresOf(c)), [0.2, 0.7]);
});

Deno.test("decodeBoxesScores() keeps the labels of columns before a background column that is not first", () => {
  const c = decodeBoxesScores(head({ background: 1 }), outs([[0, 0, 4, 4]], [[0.4, 0.9, 0.6]]));
  assert.deepEqual(labelsOf(c), [0, 1]);
  assert.deepEqual(round(scoresOf(c)), [0.4, 0.6]);
});

Deno.test("decodeBoxesScores() reads cx, cy, w, h in any column order", () => {
  const c = decodeBoxesScores(
    head({ columns: ["w", "h", "cx", "cy"] }),
    outs([[20, 10, 50, 40]], [[0.8]]),
  );
  assert.deepEqual(boxesOf(c), [40, 35, 60, 45]);
  const n = decodeBoxesScores(
    head({ columns: ["cx", "cy", "w", "h"], normalized: true }),
    outs([[0.5, 0.5, 0.5, 0.25]], [[0.8]]),
    { size: [100, 200] },
  );
  assert.deepEqual(boxesOf(n), [50, 37.5, 150, 62.5]);
});

Deno.test("decodeBoxesScores() applies a sigmoid to each score column", () => {
  const c = decodeBoxesScores(
    head({ activation: "sigmoid", background: 0 }),
    outs([[0, 0, 1, 1]], [[10, 0, Math.log(3), -10]]),
  );
  // σ(0) = 0.5, σ(ln 3) = 0.75, σ(−10) ≈ 4.5e−5 is below nms.score; the background never counts.
  assert.deepEqual(labelsOf(c), [0, 1]);
  assert.deepEqual(round(scoresOf(c)), [0.5, 0.75]);
});

Deno.test("decodeBoxesScores() applies one softmax over all columns, background included", () => {
  const c = decodeBoxesScores(
    head({ activation: "softmax", background: 0 }),
    outs([[0, 0, 1, 1]], [[Math.log(2), Math.log(5), Math.log(3)]]),
  );
  // exp: 2, 5, 3 of 10.
  assert.deepEqual(labelsOf(c), [0, 1]);
  assert.deepEqual(round(scoresOf(c)), [0.5, 0.3]);
});

Deno.test("decodeOutputs() applies class-wise NMS, its score threshold and maxDetections", () => {
  const o = outs(
    [[10, 10, 50, 50], [12, 10, 52, 50], [100, 100, 140, 140], [10, 10, 50, 50]],
    [[0.9, 0.1], [0.8, 0.6], [0.7, 0], [0.05, 0.3]],
  );
  const dets = decodeOutputs(head(), o);
  // Box 1 class 0 is suppressed by box 0 (IoU 38/42); class 1 keeps box 1 and suppresses box 3's.
  assert.deepEqual(dets.map((d) => [d.label, Math.round(d.score * 100)]), [
    [0, 90],
    [0, 70],
    [1, 60],
  ]);
  assert.deepEqual(dets.map((d) => d.box), [[10, 10, 50, 50], [100, 100, 140, 140], [
    12,
    10,
    52,
    50,
  ]]);
  const agnostic = decodeOutputs(head({ nms: { classAgnostic: true } }), o);
  assert.deepEqual(agnostic.map((d) => Math.round(d.score * 100)), [90, 70]);
  const strict = decodeOutputs(head({ nms: { score: 0.65, maxDetections: 1 } }), o);
  assert.deepEqual(strict.map((d) => Math.round(d.score * 100)), [90]);
  // Of the 7 candidates, only box 3 duplicates box 0 (IoU 1 > 0.99): one of each class goes.
  const loose = decodeOutputs(head({ nms: { iou: 0.99 } }), o);
  assert.equal(loose.length, 5);
});

Deno.test("decodeBatch() reads each image of a batch of 2 and maps normalized boxes back through the letterbox", () => {
  const transform = boxTransform({ width: 200, height: 100 }, { size: [64, 64] });
  // Image 0: one box over the whole original image; image 1: only a low score.
  const box = toModelBox([0, 0, 200, 100], transform).map((v) => v / 64);
  const o = {
    boxes: float32([2, 2, 4], [...box, 0, 0, 0.5, 0.5, 0, 0, 1, 1, 0, 0, 1, 1]),
    scores: float32([2, 2, 2], [0.1, 0.9, 0.2, 0, 0.5, 0.001, 0, 0]),
  };
  const h = head({ normalized: true, background: 0, nms: { score: 0.05 } });
  const [a, b] = decodeBatch(h, o, { transforms: [transform, transform] });
  assert.deepEqual(a!.map((d) => [d.label, round(d.box, 10)]), [[0, [0, 0, 200, 100]]]);
  assert.equal(a![0]!.score, Math.fround(0.9));
  assert.deepEqual(b, []);
});

Deno.test("decodeBoxesScores() reads [K, 4] boxes beside [1, K, C] scores, and refuses a second image of them", () => {
  const o = {
    boxes: float32([2, 4], [0, 0, 2, 2, 1, 1, 3, 3]),
    scores: float32([1, 2, 1], [0.5, 0.7]),
  };
  const c = decodeBoxesScores(head(), o);
  assert.deepEqual(boxesOf(c), [0, 0, 2, 2, 1, 1, 3, 3]);
  assert.deepEqual(round(scoresOf(c)), [0.5, 0.7]);
  const flat = decodeBoxesScores(head(), { ...o, scores: float32([2, 1], [0.5, 0.7]) });
  assert.equal(flat.count, 2);
  assert.throws(
    () => decodeBoxesScores(head(), o, { batch: 1 }),
    (e) =>
      e instanceof ModelError && /"boxes".*\[N, K, 4\] with batch > 1.*\[2, 4\]/.test(e.message),
  );
});

Deno.test("decodeBoxesScores() reads channels-first [N, 4, K] boxes and [N, C, K] scores (YOLOv8 split outputs) as their channels-last transposes", () => {
  // A batch of 2, 3 boxes, 2 classes, cx, cy, w, h with logits.
  const boxes = [[10, 10, 4, 4], [20, 30, 8, 6], [5, 5, 2, 2], [40, 40, 10, 10], [1, 2, 3, 4], [
    9,
    9,
    9,
    9,
  ]];
  const scores = [[2, -1], [-3, 1.5], [0.2, 0.1], [-2, 3], [1, 1], [-5, -5]];
  const last = {
    boxes: float32([2, 3, 4], boxes.flat()),
    scores: float32([2, 3, 2], scores.flat()),
  };
  const transpose = (rows: number[][], per: number) =>
    [0, 1].flatMap((n) =>
      Array.from({ length: per }, (_, j) => [0, 1, 2].map((i) => rows[n * 3 + i]![j]!)).flat()
    );
  const first = {
    boxes: float32([2, 4, 3], transpose(boxes, 4)),
    scores: float32([2, 2, 3], transpose(scores, 2)),
  };
  const options = { columns: ["cx", "cy", "w", "h"], activation: "sigmoid", nms: { score: 0.5 } };
  for (const batch of [0, 1]) {
    const want = decodeBoxesScores(head(options), last, { batch });
    const got = decodeBoxesScores(head({ ...options, layout: "channels-first" }), first, { batch });
    assert.ok(got.count > 0);
    assert.deepEqual(
      [boxesOf(got), labelsOf(got), scoresOf(got)],
      [boxesOf(want), labelsOf(want), scoresOf(want)],
    );
  }
  assert.throws(
    () => decodeBoxesScores(head({ layout: "channels-first" }), last),
    (e) => e instanceof ModelError && /"boxes".*\[N, 4, K\]/.test(e.message),
  );
});

Deno.test("decodeBoxesScores() names the output when shapes disagree", () => {
  const cases: [
    Record<string, unknown>,
    ReturnType<typeof float32>,
    ReturnType<typeof float32>,
    RegExp,
  ][] = [
    [
      {},
      float32([1, 2, 5], new Float32Array(10)),
      float32([1, 2, 3], new Float32Array(6)),
      /output "boxes": expected shape \[N, K, 4\].*\[1, 2, 5\]/,
    ],
    [
      {},
      float32([1, 2, 4], new Float32Array(8)),
      float32([1, 3, 3], new Float32Array(9)),
      /output "scores": expected 2 rows of scores.*"boxes" \[1, 2, 4\].*\[1, 3, 3\]/,
    ],
    [
      { background: 3 },
      float32([1, 2, 4], new Float32Array(8)),
      float32([1, 2, 3], new Float32Array(6)),
      /output "scores": expected more than 3 score columns for head\.background 3 but found \[1, 2, 3\]/,
    ],
    [
      { classes: 3, background: 0 },
      float32([1, 2, 4], new Float32Array(8)),
      float32([1, 2, 3], new Float32Array(6)),
      /output "scores": expected 3 class columns besides the background column \(head\.classes\) but found 2/,
    ],
    [
      {},
      float32([4], new Float32Array(4)),
      float32([1, 1, 3], new Float32Array(3)),
      /output "boxes": expected shape/,
    ],
  ];
  for (const [extra, boxes, scores, re] of cases) {
    assert.throws(
      () => decodeBoxesScores(head(extra), { boxes, scores }),
      (e) => e instanceof ModelError && re.test(e.message),
      String(re),
    );
  }
  assert.throws(
    () => decodeBoxesScores(head(), { boxes: float32([1, 1, 4], [0, 0, 1, 1]) }),
    (e) =>
      e instanceof ModelError &&
      /expected model output "scores" but the outputs are boxes/.test(e.message),
  );
  assert.throws(
    () => decodeBoxesScores(head({ normalized: true }), outs([[0, 0, 1, 1]], [[1]])),
    (e) => e instanceof ModelError && /input size.*"boxes"/.test(e.message),
  );
});

Deno.test("resolveHead() rejects bad boxes-scores columns, activation and background, naming the key", () => {
  const cases: [Record<string, unknown>, string, RegExp][] = [
    [{ columns: ["x1", "y1", "x2"] }, "head.columns", /4 box columns.*\["x1","y1","x2"\]/],
    [
      { columns: ["x1", "y1", "x2", "score"] },
      "head.columns[3]",
      /one of x1, .*h but found "score"/,
    ],
    [{ columns: ["x1", "y1", "x1", "y2"] }, "head.columns[2]", /"x1" again/],
    [{ columns: ["x1", "y1", "w", "h"] }, "head.columns", /complete box.*x1, y1, w, h/],
    [{ activation: "relu" }, "head.activation", /none, sigmoid, softmax but found "relu"/],
    [{ background: -1 }, "head.background", /integer ≥ 0\) but found -1/],
    [{ background: 0.5 }, "head.background", /but found 0\.5/],
    [{ normalized: "yes" }, "head.normalized", /true or false/],
    [{ classOffset: 1 }, "head.classOffset", /unknown key for head type "boxes-scores"/],
  ];
  for (const [extra, key, re] of cases) {
    assert.throws(
      () => head(extra),
      (e) => e instanceof ConfigError && e.keyPath === key && re.test(e.message),
      `${JSON.stringify(extra)} → ${key}`,
    );
  }
  assert.throws(
    () => resolveHead({ type: "boxes-scores", outputs: ["boxes"] }),
    (e) => e instanceof ConfigError && e.keyPath === "head.outputs",
  );
});

Deno.test("headAutoOutputs() keeps both of a boxes-scores head's outputs", () => {
  assert.deepEqual(headAutoOutputs(head(), ["scores", "x", "boxes"]), ["boxes", "scores"]);
  assert.throws(() => headAutoOutputs(head(), ["boxes"]), /"scores" to be a graph output/);
});

Deno.test("decodeBoxesScores() reads one score per box, [N, K] or [K], as a single class", () => {
  const boxes = [[0, 0, 10, 10], [5, 5, 20, 20], [1, 2, 3, 4]];
  const scores = [0.9, 0.005, 0.4];
  const withBatch = decodeBoxesScores(head(), {
    boxes: float32([1, 3, 4], boxes.flat()),
    scores: float32([1, 3], scores),
  });
  assert.deepEqual(boxesOf(withBatch), [0, 0, 10, 10, 1, 2, 3, 4]);
  assert.deepEqual(labelsOf(withBatch), [0, 0]);
  assert.deepEqual(round(scoresOf(withBatch)), [0.9, 0.4]);
  const bare = decodeBoxesScores(head(), {
    boxes: float32([3, 4], boxes.flat()),
    scores: float32([3], scores),
  });
  assert.deepEqual(boxesOf(bare), boxesOf(withBatch));
  // Channels first: boxes [1, 4, K] beside scores [1, K].
  const first = decodeBoxesScores(head({ layout: "channels-first" }), {
    boxes: float32([1, 4, 3], [0, 5, 1, 0, 5, 2, 10, 20, 3, 10, 20, 4]),
    scores: float32([1, 3], scores),
  });
  assert.deepEqual(boxesOf(first), boxesOf(withBatch));
  // [1, K] scores whose K differs from the boxes' are refused, naming the scores output.
  assert.throws(
    () =>
      decodeBoxesScores(head(), {
        boxes: float32([1, 3, 4], boxes.flat()),
        scores: float32([1, 2], [0.5, 0.5]),
      }),
    (e: Error) => e instanceof ModelError && /"scores"/.test(e.message),
  );
});
