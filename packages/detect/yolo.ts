/**
 * YOLO decoders: darknet/Ultralytics YOLOv3 raw per-scale outputs, and already-decoded box lists.
 *
 * @module
 */
import type { Tensor } from "@clipq/onnx/tensor";
import { expectShape, floats, output, sigmoid } from "./_tensor.ts";
import type { YoloDecodedHead, Yolov3Head } from "./head.ts";
import { CandidateBuffer, type Candidates } from "./types.ts";

/** Options of the decoders. */
export interface DecodeOptions {
  /** Which image of the batch. */
  batch?: number;
  /** Model input size `[height, width]` (needed by SSD priors, channels-last anchor-free levels, DB scaling). */
  size?: readonly [number, number];
}

/**
 * Decodes YOLOv3 raw outputs `[N, A·(5+C), H, W]` (or channels-last `[N, H, W, A·(5+C)]`) into
 * candidates: centre `(σ(tx) + gx) · stride`, size `exp(tw) · anchor`, score `σ(obj) · σ(cls)` per
 * class, kept when ≥ `head.nms.score`. `head.scaleXY` (YOLOv4) and `head.decode: "ultralytics"`
 * (YOLOv5/v7 raw outputs) change the box formula as documented on {@linkcode Yolov3Head}.
 *
 * @param head The head description.
 * @param outputs Model outputs by name.
 * @param options Batch index.
 * @returns Candidates in model-input pixels (before NMS).
 * @throws {ModelError} When an output is missing or its channels do not fit the anchors.
 *
 * @example One cell, one anchor, one class
 * ```ts
 * import { decodeYolov3 } from "@clipq/detect/yolo";
 * import { resolveHead, type Yolov3Head } from "@clipq/detect/head";
 * import { float32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const head = resolveHead({ type: "yolov3", outputs: ["o"], strides: [32], anchors: [[[64, 32]]] }) as Yolov3Head;
 * // tx = ty = tw = th = 0, obj and cls logits large: a 64×32 box centred at (16, 16).
 * const c = decodeYolov3(head, { o: float32([1, 6, 1, 1], [0, 0, 0, 0, 20, 20]) });
 * assert.deepEqual([...c.boxes.subarray(0, 4)], [-16, 0, 48, 32]);
 * ```
 */
export function decodeYolov3(
  head: Yolov3Head,
  outputs: Record<string, Tensor>,
  options: DecodeOptions = {},
): Candidates {
  const b = options.batch ?? 0;
  const thr = head.nms.score;
  const buf = new CandidateBuffer();
  const cls = new Float64Array(1024);
  const ultralytics = head.decode === "ultralytics";
  head.outputs.forEach((name, level) => {
    const sxy = Array.isArray(head.scaleXY) ? head.scaleXY[level]! : head.scaleXY;
    const shift = (sxy - 1) / 2;
    const t = output(outputs, name, "yolov3 head");
    const anchors = head.anchors[level]!;
    const stride = head.strides[level]!;
    const A = anchors.length;
    const d = t.dims;
    expectShape(d.length === 4, name, "[N, A·(5+C), H, W] (4-D)", d);
    const first = head.layout === "channels-first";
    const [N, K4, H, W] = first ? [d[0]!, d[1]!, d[2]!, d[3]!] : [d[0]!, d[3]!, d[1]!, d[2]!];
    const K = K4 / A;
    const C = head.classes ?? K - 5;
    expectShape(
      Number.isInteger(K) && K === 5 + C && C > 0 && b < N,
      name,
      `${first ? "[N, A·(5+C), H, W]" : "[N, H, W, A·(5+C)]"} with A = ${A}${
        head.classes ? `, C = ${head.classes}` : ""
      } and batch > ${b}`,
      d,
    );
    const x = floats(t, name);
    const HW = H * W;
    // Element k of (anchor a, cell p) is x[base + k · cs].
    const cs = first ? HW : 1;
    const scores = cls.length >= C ? cls : new Float64Array(C);
    for (let a = 0; a < A; a++) {
      const [aw, ah] = anchors[a] as [number, number];
      for (let gy = 0; gy < H; gy++) {
        for (let gx = 0; gx < W; gx++) {
          const p = gy * W + gx;
          const base = first ? (b * K4 + a * K) * HW + p : (b * HW + p) * K4 + a * K;
          const obj = sigmoid(x[base + 4 * cs]!);
          if (obj < thr) continue;
          // σ(c) ≥ thr / obj ⇔ c ≥ logit(thr / obj): skip the exp for classes far below it
          // (the margin keeps the exact comparison below authoritative).
          const q = thr / obj;
          const cut = q >= 1 ? Infinity : q <= 0 ? -Infinity : Math.log(q / (1 - q)) - 1e-6;
          let any = false;
          for (let c = 0; c < C; c++) {
            const v = x[base + (5 + c) * cs]!;
            if (v < cut) {
              scores[c] = 0;
              continue;
            }
            const sc = obj * sigmoid(v);
            scores[c] = sc;
            if (sc >= thr) any = true;
          }
          if (!any) continue;
          let cx: number, cy: number, w: number, h: number;
          if (ultralytics) {
            cx = (2 * sigmoid(x[base]!) - 0.5 + gx) * stride;
            cy = (2 * sigmoid(x[base + cs]!) - 0.5 + gy) * stride;
            w = (2 * sigmoid(x[base + 2 * cs]!)) ** 2 * aw;
            h = (2 * sigmoid(x[base + 3 * cs]!)) ** 2 * ah;
          } else {
            cx = (sigmoid(x[base]!) * sxy - shift + gx) * stride;
            cy = (sigmoid(x[base + cs]!) * sxy - shift + gy) * stride;
            w = Math.exp(x[base + 2 * cs]!) * aw;
            h = Math.exp(x[base + 3 * cs]!) * ah;
          }
          for (let c = 0; c < C; c++) {
            const sc = scores[c]!;
            if (sc >= thr && sc > 0) {
              buf.push(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, sc, c);
            }
          }
        }
      }
    }
  });
  return buf.toCandidates();
}

/**
 * Decodes an already-decoded YOLO output `[N, boxes, 4 (+1) + C]` (box, objectness if any, class
 * scores — probabilities, not logits) into candidates; score `obj · cls` per class. With
 * `layout: "channels-first"` the output is `[N, 4 (+1) + C, boxes]` (Ultralytics YOLOv8/v11).
 *
 * @param head The head description.
 * @param outputs Model outputs by name.
 * @param options Batch index.
 * @returns Candidates in model-input pixels (before NMS).
 * @throws {ModelError} When the output is missing or not 3-D.
 *
 * @example Usage
 * ```ts
 * import { decodeYoloDecoded } from "@clipq/detect/yolo";
 * import { resolveHead, type YoloDecodedHead } from "@clipq/detect/head";
 * import { float32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const head = resolveHead({ type: "yolo-decoded", outputs: ["dets"] }) as YoloDecodedHead;
 * const c = decodeYoloDecoded(head, { dets: float32([1, 1, 7], [50, 50, 20, 10, 0.5, 1, 0.5]) });
 * assert.deepEqual([...c.boxes.subarray(0, 4)], [40, 45, 60, 55]);
 * assert.deepEqual([...c.scores.subarray(0, 2)], [0.5, 0.25]);
 * ```
 */
export function decodeYoloDecoded(
  head: YoloDecodedHead,
  outputs: Record<string, Tensor>,
  options: DecodeOptions = {},
): Candidates {
  const b = options.batch ?? 0;
  const name = head.outputs[0]!;
  const t = output(outputs, name, "yolo-decoded head");
  const d = t.dims;
  const first = head.objectness ? 5 : 4;
  // Channels-first puts the box axis last: value k of box i sits at k · boxes + i.
  const cf = head.layout === "channels-first";
  const [bAxis, kAxis] = cf ? [2, 1] : [1, 2];
  const form = cf ? `[N, ${first} + C, boxes]` : `[N, boxes, ${first} + C]`;
  expectShape(
    d.length === 3 && d[kAxis]! > first && b < d[0]!,
    name,
    `${form} with batch > ${b}`,
    d,
  );
  const B = d[bAxis]!, K = d[kAxis]!;
  const C = head.classes ?? K - first;
  expectShape(K === first + C, name, form.replace("C", String(C)), d);
  const x = floats(t, name);
  const thr = head.nms.score;
  const buf = new CandidateBuffer();
  const [iStep, kStep] = cf ? [1, B] : [K, 1];
  for (let i = 0; i < B; i++) {
    const o = b * B * K + i * iStep;
    const at = (k: number) => x[o + k * kStep]!;
    const obj = head.objectness ? at(4) : 1;
    if (obj < thr) continue;
    const v0 = at(0), v1 = at(1), v2 = at(2), v3 = at(3);
    const [x1, y1, x2, y2] = head.boxFormat === "cxcywh"
      ? [v0 - v2 / 2, v1 - v3 / 2, v0 + v2 / 2, v1 + v3 / 2]
      : [v0, v1, v2, v3];
    for (let c = 0; c < C; c++) {
      const s = obj * at(first + c);
      if (s >= thr) buf.push(x1, y1, x2, y2, s, c);
    }
  }
  return buf.toCandidates();
}
