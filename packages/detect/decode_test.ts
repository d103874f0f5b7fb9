import assert from "node:assert/strict";
import { boxTransform, toModelBox } from "@clipq/data/preprocess";
import { ConfigError, ModelError } from "@clipq/onnx/errors";
import { float32, int64 } from "@clipq/onnx/tensor";
import { decodeBatch, decodeOutputs } from "./decode.ts";
import { applyDeltas } from "./faster_rcnn.ts";
import { resolveHead } from "./head.ts";
import type { Box, Detection } from "./types.ts";

const logit = (p: number) => Math.log(p / (1 - p));

function closeBox(actual: readonly number[], expected: readonly number[], tol = 1e-4) {
  assert.equal(actual.length, 4);
  for (let i = 0; i < 4; i++) {
    assert.ok(
      Math.abs(actual[i]! - expected[i]!) < tol,
      `expected [${expected}] but found [${actual}]`,
    );
  }
}

function only(dets: Detection[]): Detection {
  assert.equal(dets.length, 1, `expected one detection but found ${JSON.stringify(dets)}`);
  return dets[0]!;
}

Deno.test("decodeOutputs() recovers a box planted in YOLOv3 raw outputs, both layouts", () => {
  const anchors = [[[30, 60], [60, 45], [50, 100]], [[10, 13], [16, 30], [33, 23]]];
  const strides = [32, 16];
  const C = 2, A = 3, K = 5 + C;
  const target = { cx: 40.5, cy: 27.25, w: 30, h: 50, label: 1, score: 0.8 };
  for (const layout of ["channels-first", "channels-last"] as const) {
    const outputs: Record<string, ReturnType<typeof float32>> = {};
    strides.forEach((s, level) => {
      const G = 64 / s;
      const x = new Float32Array(A * K * G * G).fill(-20);
      const set = (a: number, k: number, gy: number, gx: number, v: number) => {
        const i = layout === "channels-first"
          ? ((a * K + k) * G + gy) * G + gx
          : (gy * G + gx) * A * K + a * K + k;
        x[i] = v;
      };
      if (level === 1) {
        const gx = Math.floor(target.cx / s), gy = Math.floor(target.cy / s);
        const [aw, ah] = anchors[1]![2]!;
        set(2, 0, gy, gx, logit(target.cx / s - gx));
        set(2, 1, gy, gx, logit(target.cy / s - gy));
        set(2, 2, gy, gx, Math.log(target.w / aw!));
        set(2, 3, gy, gx, Math.log(target.h / ah!));
        set(2, 4, gy, gx, logit(0.9)); // obj
        set(2, 5 + target.label, gy, gx, logit(target.score / 0.9));
      }
      const dims = layout === "channels-first" ? [1, A * K, G, G] : [1, G, G, A * K];
      outputs[`out${s}`] = float32(dims, x);
    });
    const head = resolveHead({
      type: "yolov3",
      outputs: ["out32", "out16"],
      strides,
      anchors,
      classes: C,
      layout,
    });
    const d = only(decodeOutputs(head, outputs));
    const t = target;
    closeBox(d.box, [t.cx - t.w / 2, t.cy - t.h / 2, t.cx + t.w / 2, t.cy + t.h / 2]);
    assert.equal(d.label, 1);
    assert.ok(Math.abs(d.score - 0.8) < 1e-4);
  }
});

Deno.test("decodeOutputs() recovers YOLO boxes with the Ultralytics and scale_x_y formulas", () => {
  const stride = 16, G = 4, K = 6, anchor = [20, 30];
  const target = { cx: 40, cy: 20, w: 50, h: 45 }; // cell (2, 1)
  const gx = 2, gy = 1;
  const x = new Float32Array(K * G * G).fill(-20);
  const set = (k: number, v: number) => x[(k * G + gy) * G + gx] = v;
  const expected: Box = [15, -2.5, 65, 42.5];
  // Ultralytics: centre (2σ − 0.5 + g) · stride, size (2σ)² · anchor.
  set(0, logit((target.cx / stride - gx + 0.5) / 2));
  set(1, logit((target.cy / stride - gy + 0.5) / 2));
  set(2, logit(Math.sqrt(target.w / anchor[0]!) / 2));
  set(3, logit(Math.sqrt(target.h / anchor[1]!) / 2));
  set(4, 20);
  set(5, 20);
  const base = { type: "yolov3", outputs: ["o"], strides: [stride], anchors: [[anchor]] };
  const u = resolveHead({ ...base, decode: "ultralytics" });
  closeBox(only(decodeOutputs(u, { o: float32([1, K, G, G], x) })).box, expected);
  // darknet scale_x_y 1.2: centre (1.2σ − 0.1 + g) · stride, size exp(t) · anchor.
  set(0, logit((target.cx / stride - gx + 0.1) / 1.2));
  set(1, logit((target.cy / stride - gy + 0.1) / 1.2));
  set(2, Math.log(target.w / anchor[0]!));
  set(3, Math.log(target.h / anchor[1]!));
  const d = resolveHead({ ...base, scaleXY: 1.2 });
  closeBox(only(decodeOutputs(d, { o: float32([1, K, G, G], x) })).box, expected);
  assert.throws(
    () => resolveHead({ ...base, decode: "v5" }),
    /head\.decode: expected one of darknet, ultralytics/,
  );
});

Deno.test("decodeOutputs() rejects YOLOv3 outputs whose channels do not fit the anchors", () => {
  const head = resolveHead({
    type: "yolov3",
    outputs: ["o"],
    strides: [32],
    anchors: [[[1, 1], [2, 2]]],
  });
  assert.throws(
    () => decodeOutputs(head, { o: float32([1, 13, 1, 1], new Float32Array(13)) }),
    (e) =>
      e instanceof ModelError &&
      /output "o": expected shape \[N, A·\(5\+C\), H, W\] with A = 2/.test(e.message),
  );
  assert.throws(() => decodeOutputs(head, {}), /expected model output "o"/);
});

Deno.test("decodeOutputs() reads already-decoded YOLO boxes and applies NMS", () => {
  const head = resolveHead({ type: "yolo-decoded", outputs: ["d"], nms: { iou: 0.5 } });
  const rows = [
    [50, 50, 20, 20, 0.9, 0.1, 0.8], // best, class 1
    [51, 50, 20, 20, 0.9, 0.1, 0.7], // overlaps the best: suppressed
    [10, 10, 4, 4, 0.5, 0.6, 0.0], // class 0, score 0.3
  ];
  const dets = decodeOutputs(head, { d: float32([1, 3, 7], rows.flat()) });
  // Row 0 class 1 (0.72), row 2 class 0 (0.3), row 0 class 0 (0.09); row 1's two are suppressed.
  assert.deepEqual(dets.map((d) => d.label), [1, 0, 0]);
  assert.deepEqual(dets.map((d) => Math.round(d.score * 1e6) / 1e6), [0.72, 0.3, 0.09]);
  closeBox(dets[0]!.box, [40, 40, 60, 60]);
  closeBox(dets[1]!.box, [8, 8, 12, 12]);
});

Deno.test("decodeOutputs() reads an Ultralytics YOLOv8 [N, 4 + C, boxes] output with class-wise NMS", () => {
  const head = resolveHead({
    type: "yolo-decoded",
    outputs: ["output0"],
    objectness: false,
    layout: "channels-first",
    nms: { iou: 0.5, score: 0.25 },
  });
  // Three boxes (columns), two classes: rows cx, cy, w, h, class 0, class 1.
  const rows = [
    [50, 51, 50],
    [50, 50, 50],
    [20, 20, 20],
    [20, 20, 20],
    [0.9, 0.8, 0.1],
    [0.1, 0.2, 0.6],
  ];
  const dets = decodeOutputs(head, { output0: float32([1, 6, 3], rows.flat()) });
  // Box 1 overlaps box 0 in class 0 and is suppressed; box 2's class 1 overlaps them too but NMS is
  // per class, so it stays; scores below 0.25 are dropped.
  assert.deepEqual(
    dets.map((d) => [d.label, d.score]),
    [[0, 0.9], [1, 0.6]].map(([l, s]) => [l, Math.fround(s!)]),
  );
  closeBox(dets[0]!.box, [40, 40, 60, 60]);
  closeBox(dets[1]!.box, [40, 40, 60, 60]);
  assert.throws(
    () => decodeOutputs(head, { output0: float32([1, 3, 6], rows.flat()) }),
    /expected shape \[N, 4 \+ C, boxes\] with batch > 0 but found \[1, 3, 6\]/,
  );
});

Deno.test("decodeOutputs() recovers a box from Faster R-CNN RoI deltas with the box coder", () => {
  const proposals = [[0, 0, 50, 50], [100, 80, 180, 200]];
  const target: Box = [110, 70, 200, 230];
  const K = 3; // background + 2 classes
  const deltas = new Float32Array(2 * 4 * K);
  const [px1, py1, px2, py2] = proposals[1]!;
  const pw = px2! - px1!, ph = py2! - py1!;
  const tw = target[2] - target[0], th = target[3] - target[1];
  deltas.set([
    10 * ((target[0] + tw / 2) - (px1! + pw / 2)) / pw,
    10 * ((target[1] + th / 2) - (py1! + ph / 2)) / ph,
    5 * Math.log(tw / pw),
    5 * Math.log(th / ph),
  ], (1 * K + 2) * 4);
  const logits = float32([2, K], [5, -5, -5, -5, -5, 5]);
  const head = resolveHead({
    type: "faster-rcnn-raw",
    outputs: ["cls", "reg", "rois"],
    classes: 2,
  });
  const d = only(decodeOutputs(head, {
    cls: logits,
    reg: float32([2, 4 * K], deltas),
    rois: float32([2, 4], proposals.flat()),
  }, { size: [300, 300] }));
  closeBox(d.box, target);
  assert.equal(d.label, 2);
  // Caffe-style [R, 5] RoIs carry the batch index first; clipping to the input applies.
  const d5 = only(decodeOutputs(head, {
    cls: logits,
    reg: float32([2, 4 * K], deltas),
    rois: float32([2, 5], proposals.flatMap((p) => [0, ...p])),
  }, { size: [200, 300] }));
  closeBox(d5.box, [110, 70, 200, 200]);
});

Deno.test("applyDeltas() clamps dw and dh at log(1000/16)", () => {
  const b = applyDeltas([0, 0, 10, 10], [0, 0, 100, 5 * 100]);
  const w = 10 * Math.exp(Math.log(1000 / 16));
  closeBox(b, [5 - w / 2, 5 - w / 2, 5 + w / 2, 5 + w / 2]);
});

Deno.test("decodeOutputs() reads torchvision-style Faster R-CNN outputs", () => {
  const head = resolveHead({
    type: "faster-rcnn",
    outputs: ["boxes", "labels", "scores"],
    nms: { score: 0.5 },
  });
  const dets = decodeOutputs(head, {
    boxes: float32([3, 4], [0, 0, 10, 10, 20, 20, 40, 40, 0, 0, 5, 5]),
    labels: int64([3], [1, 18, 3]),
    scores: float32([3], [0.6, 0.9, 0.4]),
  });
  assert.deepEqual(dets, [
    { box: [20, 20, 40, 40], score: dets[0]!.score, label: 18 },
    { box: [0, 0, 10, 10], score: dets[1]!.score, label: 1 },
  ]);
});

Deno.test("decodeOutputs() recovers a box planted in SSD offsets, softmax and sigmoid", () => {
  const priors = [[0.25, 0.25, 0.2, 0.2], [0.5, 0.5, 0.4, 0.3], [0.75, 0.6, 0.3, 0.5]];
  const [H, W] = [300, 400];
  const target: Box = [230, 120, 380, 290]; // pixels
  const [pcx, pcy, pw, ph] = priors[2]!;
  const cx = (target[0] + target[2]) / 2 / W, cy = (target[1] + target[3]) / 2 / H;
  const w = (target[2] - target[0]) / W, h = (target[3] - target[1]) / H;
  const loc = new Float32Array(12);
  loc.set([
    (cx - pcx!) / (0.1 * pw!),
    (cy - pcy!) / (0.1 * ph!),
    Math.log(w / pw!) / 0.2,
    Math.log(h / ph!) / 0.2,
  ], 8);
  for (const activation of ["softmax", "sigmoid"] as const) {
    const conf = activation === "softmax"
      ? [9, 0, 0, 9, 0, 0, 0, 0, 9] // background wins for priors 0 and 1; class 2 for prior 2
      : [-9, -9, -9, -9, -9, -9, -9, -9, 9];
    const head = resolveHead({
      type: "ssd",
      outputs: ["loc", "conf"],
      priors: "priors",
      activation,
      nms: { score: 0.5 },
    });
    const d = only(decodeOutputs(head, {
      loc: float32([1, 3, 4], loc),
      conf: float32([1, 3, 3], conf),
      priors: float32([3, 4], priors.flat()),
    }, { size: [H, W] }));
    closeBox(d.box, target);
    assert.equal(d.label, 2);
  }
});

Deno.test("decodeOutputs() recovers a box from anchor-free distances, paired and concatenated outputs", () => {
  // Two levels on a 32×32 input: stride 8 (4×4) and 16 (2×2); 2 classes; plant on level 2, cell (1, 0).
  const target: Box = [5, -3, 30, 20];
  const s = 16, gx = 1, gy = 0;
  const cx = (gx + 0.5) * s, cy = (gy + 0.5) * s;
  const dist = [
    (cx - target[0]) / s,
    (cy - target[1]) / s,
    (target[2] - cx) / s,
    (target[3] - cy) / s,
  ];
  const head2 = resolveHead({
    type: "anchor-free",
    outputs: ["c8", "r8", "c16", "r16"],
    strides: [8, 16],
    nms: { score: 0.5 },
  });
  const cls8 = new Float32Array(2 * 16).fill(-9), reg8 = new Float32Array(4 * 16).fill(1);
  const cls16 = new Float32Array(2 * 4).fill(-9), reg16 = new Float32Array(4 * 4).fill(1);
  const p = gy * 2 + gx;
  cls16[1 * 4 + p] = 9;
  dist.forEach((v, k) => reg16[k * 4 + p] = v);
  const d = only(decodeOutputs(head2, {
    c8: float32([1, 2, 4, 4], cls8),
    r8: float32([1, 4, 4, 4], reg8),
    c16: float32([1, 2, 2, 2], cls16),
    r16: float32([1, 4, 2, 2], reg16),
  }));
  closeBox(d.box, target);
  assert.equal(d.label, 1);

  // The same as one channels-last tensor [1, 16 + 4, 2 + 4], levels concatenated.
  const all = new Float32Array(20 * 6).fill(-9);
  for (let q = 0; q < 20; q++) for (let k = 2; k < 6; k++) all[q * 6 + k] = 1;
  const q = 16 + p;
  all[q * 6 + 1] = 9;
  dist.forEach((v, k) => all[q * 6 + 2 + k] = v);
  const head1 = resolveHead({
    type: "anchor-free",
    outputs: ["all"],
    strides: [8, 16],
    layout: "channels-last",
    nms: { score: 0.5 },
  });
  closeBox(
    only(decodeOutputs(head1, { all: float32([1, 20, 6], all) }, { size: [32, 32] })).box,
    target,
  );
  assert.throws(
    () => decodeOutputs(head1, { all: float32([1, 20, 6], all) }),
    /needs? the model input size/,
  );
});

Deno.test("decodeOutputs() recovers a box from GFL distributions (expectation over bins)", () => {
  // regMax 7; each side's mass split evenly between two neighbouring bins → half-integer distances.
  const regMax = 7, bins = regMax + 1, s = 8, C = 1;
  const target: Box = [8 - 2.5 * s, 16 - 1.5 * s, 8 + 3.5 * s, 16 + 0.5 * s]; // centre (8, 16), offset 0
  const sides = [2.5, 1.5, 3.5, 0.5];
  const x = new Float32Array((C + 4 * bins) * 2 * 3).fill(-9); // 2×3 grid, one level
  const grid = { H: 3, W: 2 };
  const gx = 1, gy = 2;
  const pt = gy * grid.W + gx;
  x[0 * 6 + pt] = 9;
  sides.forEach((v, side) => {
    for (let k = 0; k < bins; k++) x[(C + side * bins + k) * 6 + pt] = -50;
    x[(C + side * bins + Math.floor(v)) * 6 + pt] = 50;
    x[(C + side * bins + Math.ceil(v)) * 6 + pt] = 50;
  });
  const head = resolveHead({
    type: "gfl",
    outputs: ["p"],
    strides: [s],
    regMax,
    nms: { score: 0.5 },
  });
  const d = only(decodeOutputs(head, { p: float32([1, C + 4 * bins, 3, 2], x) }));
  closeBox(d.box, target);
});

Deno.test("decodeOutputs() finds DB text regions with mean score, unclip and connectivity", () => {
  const W = 40, H = 20;
  const map = new Float32Array(W * H);
  const fill = (x0: number, y0: number, x1: number, y1: number, v: number) => {
    for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) map[y * W + x] = v;
  };
  fill(2, 2, 12, 6, 0.8); // 10×4 region, mean 0.8
  fill(2, 3, 4, 4, 0.9); // brighter pixels in it: mean (36·0.8 + 4·0.9) / 40... (2 pixels)
  fill(20, 10, 22, 12, 0.9); // 2×2 square
  fill(22, 12, 24, 14, 0.9); // touches the square only diagonally
  fill(30, 2, 31, 12, 0.9); // 1 px wide: below minSize 3
  fill(30, 14, 38, 18, 0.5); // weak: mean below boxThreshold 0.6
  const mean = (38 * 0.8 + 2 * 0.9) / 40;
  const grow = (w: number, h: number, r = 1.5) => (w * h * r) / (2 * (w + h));
  const g1 = grow(10, 4);
  const head4 = resolveHead({ type: "db", outputs: ["m"], minSize: 2 });
  const dets4 = decodeOutputs(head4, { m: float32([1, 1, H, W], map) });
  // 4-connected: the two diagonal squares are separate regions.
  assert.equal(dets4.length, 3);
  closeBox(dets4.find((d) => d.box[0] < 10)!.box, [2 - g1, 2 - g1, 12 + g1, 6 + g1]);
  assert.ok(Math.abs(dets4.find((d) => d.box[0] < 10)!.score - mean) < 1e-6);
  const head8 = resolveHead({ type: "db", outputs: ["m"], connectivity: 8, minSize: 2 });
  const dets8 = decodeOutputs(head8, { m: float32([1, 1, H, W], map) });
  assert.equal(dets8.length, 2);
  const g2 = grow(4, 4);
  closeBox(dets8.find((d) => d.box[0] > 10)!.box, [20 - g2, 10 - g2, 24 + g2, 14 + g2]);
  // Default minSize 3 drops the 2×2 squares; a map half the input size scales boxes by 2.
  const dets = decodeOutputs(resolveHead({ type: "db", outputs: ["m"] }), {
    m: float32([1, 1, H, W], map),
  }, { size: [40, 80] });
  assert.equal(dets.length, 1);
  closeBox(dets[0]!.box, [2 * (2 - g1), 2 * (2 - g1), 2 * (12 + g1), 2 * (6 + g1)]);
  assert.equal(dets[0]!.label, 0);
});

Deno.test("decodeOutputs() maps boxes back through a letterbox transform", () => {
  const transform = boxTransform({ width: 640, height: 480 }, {
    size: [320, 320],
    resize: "letterbox",
  });
  const original: Box = [100, 50, 300, 450];
  const m = toModelBox(original, transform);
  const head = resolveHead({ type: "yolo-decoded", outputs: ["d"], boxFormat: "xyxy" });
  const d = only(decodeOutputs(head, { d: float32([1, 1, 6], [...m, 1, 0.9]) }, { transform }));
  closeBox(d.box, original);
  const batch = decodeBatch(head, { d: float32([2, 1, 6], [...m, 1, 0.9, ...m, 0, 0.9]) }, {
    transforms: [transform, transform],
  });
  assert.equal(batch.length, 2);
  closeBox(batch[0]![0]!.box, original);
  assert.deepEqual(batch[1], []);
});

Deno.test("resolveHead() names the offending key", () => {
  assert.throws(
    () => resolveHead({ type: "ssd", outputs: ["a"] }),
    (e) => e instanceof ConfigError && e.keyPath === "head.outputs",
  );
  assert.throws(
    () => resolveHead({ type: "yolo", outputs: ["a"] }),
    /head\.type: expected one of yolov3/,
  );
  assert.throws(
    () => resolveHead({ type: "db", outputs: ["m"], nms: { iuo: 0.5 } }),
    /head\.nms\.iuo: unknown key/,
  );
  assert.throws(
    () => resolveHead({ type: "db", outputs: ["m"], connectivity: 6 }),
    /head\.connectivity: expected 4 or 8 but found 6/,
  );
  assert.throws(
    () =>
      resolveHead({ type: "yolov3", outputs: ["a", "b"], strides: [8, 16], anchors: [[[1, 2]]] }),
    /head\.anchors: expected one list of \[width, height\] pairs per output \(2\)/,
  );
  assert.throws(
    () => resolveHead({ type: "db", outputs: ["m"], unclip: 2 }),
    /head\.unclip: unknown key for head type "db"/,
  );
  assert.throws(() => resolveHead(undefined), /head: expected a head description/);
});
