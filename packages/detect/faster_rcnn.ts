/**
 * Faster R-CNN decoders: torchvision-style exported detections, and raw RoI-head outputs decoded
 * with torchvision's BoxCoder.
 *
 * @module
 */
import type { Tensor } from "@clipq/onnx/tensor";
import { expectShape, floats, output } from "./_tensor.ts";
import type { FasterRcnnHead, FasterRcnnRawHead } from "./head.ts";
import { CandidateBuffer, type Candidates } from "./types.ts";
import type { DecodeOptions } from "./yolo.ts";

/**
 * Reads torchvision-style outputs `boxes [K, 4]`, `labels [K]`, `scores [K]` (an optional leading
 * batch axis is allowed) as candidates, keeping scores ≥ `head.nms.score`. Labels are the model's
 * (torchvision counts background as 0, so COCO labels start at 1).
 *
 * @param head The head description (`outputs`: boxes, labels, scores).
 * @param outputs Model outputs by name.
 * @param options Batch index (for outputs with a batch axis).
 * @returns Candidates in model-input pixels.
 * @throws {ModelError} When an output is missing or the three disagree in length.
 *
 * @example Usage
 * ```ts
 * import { decodeFasterRcnn } from "@clipq/detect/faster-rcnn";
 * import { type FasterRcnnHead, resolveHead } from "@clipq/detect/head";
 * import { float32, int64 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const head = resolveHead({ type: "faster-rcnn", outputs: ["b", "l", "s"] }) as FasterRcnnHead;
 * const c = decodeFasterRcnn(head, {
 *   b: float32([1, 4], [1, 2, 3, 4]), l: int64([1], [18]), s: float32([1], [0.5]),
 * });
 * assert.equal(c.labels[0], 18);
 * ```
 */
export function decodeFasterRcnn(
  head: FasterRcnnHead,
  outputs: Record<string, Tensor>,
  options: DecodeOptions = {},
): Candidates {
  const [bn, ln, sn] = head.outputs as [string, string, string];
  const bt = output(outputs, bn, "faster-rcnn head");
  const lt = output(outputs, ln, "faster-rcnn head");
  const st = output(outputs, sn, "faster-rcnn head");
  const batched = bt.dims.length === 3;
  const K = bt.dims[batched ? 1 : 0]!;
  expectShape(
    bt.dims[bt.dims.length - 1] === 4 && (bt.dims.length === 2 || batched),
    bn,
    "[K, 4] or [N, K, 4]",
    bt.dims,
  );
  expectShape(lt.dims[lt.dims.length - 1] === K, ln, `[${K}] like the boxes`, lt.dims);
  expectShape(st.dims[st.dims.length - 1] === K, sn, `[${K}] like the boxes`, st.dims);
  const b = batched ? options.batch ?? 0 : 0;
  const boxes = floats(bt, bn), labels = floats(lt, ln), scores = floats(st, sn);
  const buf = new CandidateBuffer();
  for (let i = 0; i < K; i++) {
    const s = scores[b * K + i]!;
    if (s < head.nms.score) continue;
    const o = (b * K + i) * 4;
    buf.push(boxes[o]!, boxes[o + 1]!, boxes[o + 2]!, boxes[o + 3]!, s, labels[b * K + i]!);
  }
  return buf.toCandidates();
}

/**
 * Decodes one box with torchvision's BoxCoder: deltas `(dx, dy, dw, dh)` divided by the weights,
 * `dw, dh` clamped at `clamp`, applied to a reference box.
 *
 * @param ref Reference box `[x1, y1, x2, y2]`.
 * @param deltas `[dx, dy, dw, dh]`.
 * @param options `weights` (default 10, 10, 5, 5) and `clamp` (default log(1000/16)).
 * @returns The decoded box.
 *
 * @example Zero deltas return the reference box
 * ```ts
 * import { applyDeltas } from "@clipq/detect/faster-rcnn";
 * import assert from "node:assert/strict";
 * assert.deepEqual(applyDeltas([10, 20, 30, 60], [0, 0, 0, 0]), [10, 20, 30, 60]);
 * ```
 */
export function applyDeltas(
  ref: ArrayLike<number>,
  deltas: ArrayLike<number>,
  options: { weights?: readonly number[]; clamp?: number } = {},
): [number, number, number, number] {
  const [wx, wy, ww, wh] = options.weights ?? [10, 10, 5, 5];
  const clamp = options.clamp ?? Math.log(1000 / 16);
  const w = ref[2]! - ref[0]!, h = ref[3]! - ref[1]!;
  const cx = ref[0]! + 0.5 * w, cy = ref[1]! + 0.5 * h;
  const dx = deltas[0]! / wx!, dy = deltas[1]! / wy!;
  const dw = Math.min(deltas[2]! / ww!, clamp), dh = Math.min(deltas[3]! / wh!, clamp);
  const pcx = dx * w + cx, pcy = dy * h + cy;
  const pw = Math.exp(dw) * w, ph = Math.exp(dh) * h;
  return [pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph];
}

/**
 * Decodes raw RoI-head outputs: softmax over `class logits [R, C+1]` (0 = background), the
 * class's `box deltas [R, 4·(C+1)]` applied to `proposals [R, 4]` (or `[R, 5]` with the batch index
 * first, as Caffe-style RoIs), boxes clipped to the input when its size is known. One candidate per
 * proposal and foreground class scoring ≥ `head.nms.score`; labels are logit indices (≥ 1).
 *
 * @param head The head description (`outputs`: logits, deltas, proposals).
 * @param outputs Model outputs by name.
 * @param options Batch index (for `[R, 5]` proposals) and input size (for clipping).
 * @returns Candidates in model-input pixels (before NMS).
 * @throws {ModelError} When an output is missing or the shapes disagree.
 *
 * @example Usage
 * ```ts
 * import { decodeFasterRcnnRaw } from "@clipq/detect/faster-rcnn";
 * import { type FasterRcnnRawHead, resolveHead } from "@clipq/detect/head";
 * import { float32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const head = resolveHead({ type: "faster-rcnn-raw", outputs: ["cls", "reg", "rois"] }) as FasterRcnnRawHead;
 * const c = decodeFasterRcnnRaw(head, {
 *   cls: float32([1, 2], [0, 10]), reg: float32([1, 8], [0, 0, 0, 0, 1, 0, 0, 0]),
 *   rois: float32([1, 4], [0, 0, 100, 50]),
 * });
 * assert.deepEqual([...c.boxes.subarray(0, 4)], [10, 0, 110, 50]);
 * assert.equal(c.labels[0], 1);
 * ```
 */
export function decodeFasterRcnnRaw(
  head: FasterRcnnRawHead,
  outputs: Record<string, Tensor>,
  options: DecodeOptions = {},
): Candidates {
  const [cn, dn, pn] = head.outputs as [string, string, string];
  const ct = output(outputs, cn, "faster-rcnn-raw head");
  const dt = output(outputs, dn, "faster-rcnn-raw head");
  const pt = output(outputs, pn, "faster-rcnn-raw head");
  expectShape(ct.dims.length === 2 && ct.dims[1]! >= 2, cn, "[R, C+1]", ct.dims);
  const R = ct.dims[0]!, K = ct.dims[1]!;
  if (head.classes !== undefined) {
    expectShape(K === head.classes + 1, cn, `[R, ${head.classes + 1}]`, ct.dims);
  }
  expectShape(
    dt.dims.length === 2 && dt.dims[0] === R && dt.dims[1] === 4 * K,
    dn,
    `[${R}, ${4 * K}]`,
    dt.dims,
  );
  const pw = pt.dims[1];
  expectShape(
    pt.dims.length === 2 && pt.dims[0] === R && (pw === 4 || pw === 5),
    pn,
    `[${R}, 4] or [${R}, 5]`,
    pt.dims,
  );
  const logits = floats(ct, cn), deltas = floats(dt, dn), props = floats(pt, pn);
  const b = options.batch ?? 0;
  const size = options.size;
  const clip = (v: number, max: number | undefined) =>
    max === undefined ? v : Math.min(Math.max(v, 0), max);
  const buf = new CandidateBuffer();
  const p = new Float64Array(K);
  const coder = { weights: head.weights, clamp: head.clamp };
  for (let r = 0; r < R; r++) {
    if (pw === 5 && props[r * 5] !== b) continue;
    const ref = props.subarray(r * pw!, r * pw! + pw!).subarray(pw! - 4);
    let max = -Infinity;
    for (let k = 0; k < K; k++) max = Math.max(max, logits[r * K + k]!);
    let sum = 0;
    for (let k = 0; k < K; k++) sum += p[k] = Math.exp(logits[r * K + k]! - max);
    for (let k = 1; k < K; k++) {
      const s = p[k]! / sum;
      if (s < head.nms.score) continue;
      const [x1, y1, x2, y2] = applyDeltas(
        ref,
        deltas.subarray((r * K + k) * 4, (r * K + k) * 4 + 4),
        coder,
      );
      buf.push(
        clip(x1, size?.[1]),
        clip(y1, size?.[0]),
        clip(x2, size?.[1]),
        clip(y2, size?.[0]),
        s,
        k,
      );
    }
  }
  return buf.toCandidates();
}
