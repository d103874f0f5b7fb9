/**
 * Decoder of `boxes-scores` heads: decoded boxes and per-class scores before NMS, two tensors, as
 * TensorFlow Object Detection API SSDs, RetinaNet/FCOS/YOLOX exports cut before their NMS and
 * YOLOv8 exports split into boxes and scores end.
 *
 * @module
 */
import { ModelError } from "@clipq/onnx/errors";
import type { Tensor } from "@clipq/onnx/tensor";
import { boxColumns, expectShape, floats, output, sigmoid } from "./_tensor.ts";
import type { BoxesScoresHead } from "./head.ts";
import { CandidateBuffer, type Candidates } from "./types.ts";
import type { DecodeOptions } from "./yolo.ts";

/**
 * Reads a `boxes-scores` head's outputs, boxes `[N, K, 4]` (or `[K, 4]`) and scores `[N, K, C]`
 * (or `[K, C]`), or with `head.layout` `channels-first` `[N, 4, K]` and `[N, C, K]`; scores of one
 * class may also come as `[N, K]` (or `[K]`), one per box. They are read as candidates: box values
 * in the order `head.columns` names them (`cx, cy, w, h`
 * turned into corners), scaled by the input width/height when `head.normalized`; scores through
 * `head.activation` (`softmax` over all `C` columns, background included). Every score column is a
 * class, except `head.background`: that column is dropped and the columns after it move down one
 * label (background 0: column `j` is label `j − 1`). Candidates scoring below `head.nms.score` are
 * dropped; NMS is the caller's (`decodeOutputs`).
 *
 * @param head The head description (`outputs`: boxes, scores).
 * @param outputs Model outputs by name.
 * @param options Batch index; the input size `[height, width]` (required for normalized boxes).
 * @returns Candidates in model-input pixels (before NMS).
 * @throws {ModelError} When an output is missing, the boxes' last axis is not 4, boxes and scores
 * disagree on `K`, the background column is not below `C`, `C` (less the background) is not
 * `head.classes`, the batch index is out of range, or normalized boxes come without an input size.
 *
 * @example TensorFlow order (y1, x1, y2, x2), normalized, background in column 0
 * ```ts
 * import { decodeBoxesScores } from "@clipq/detect/boxes-scores";
 * import { type BoxesScoresHead, resolveHead } from "@clipq/detect/head";
 * import { float32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const head = resolveHead({
 *   type: "boxes-scores", outputs: ["b", "s"], columns: ["y1", "x1", "y2", "x2"],
 *   normalized: true, background: 0,
 * }) as BoxesScoresHead;
 * const c = decodeBoxesScores(head, {
 *   b: float32([1, 4], [0.25, 0.5, 0.75, 1]),
 *   s: float32([1, 1, 3], [0.9, 0.1, 0.6]),
 * }, { size: [100, 200] });
 * assert.deepEqual([...c.boxes.subarray(0, 8)], [100, 25, 200, 75, 100, 25, 200, 75]);
 * assert.equal(c.count, 2);
 * assert.deepEqual([...c.labels.subarray(0, 2)], [0, 1]);
 * assert.deepEqual([...c.scores.subarray(0, 2)].map((s) => Math.round(s * 10) / 10), [0.1, 0.6]);
 * ```
 */
export function decodeBoxesScores(
  head: BoxesScoresHead,
  outputs: Record<string, Tensor>,
  options: DecodeOptions = {},
): Candidates {
  const [bn, sn] = head.outputs as [string, string];
  const bt = output(outputs, bn, "boxes-scores head");
  const st = output(outputs, sn, "boxes-scores head");
  const b = options.batch ?? 0;
  const bd = bt.dims;
  // A `[K, ·]` tensor has no batch axis: it holds image 0 only.
  const batchedOk = (d: readonly number[]) =>
    (d.length === 3 && b < d[0]!) || (d.length === 2 && b === 0);
  const first = head.layout === "channels-first";
  // The axis of the four box values (or of the score columns) and the one of the K boxes.
  const [valueAxis, boxAxis] = first ? [-2, -1] : [-1, -2];
  // One score per box, the boxes' dims without their value axis (FaceBoxes' face probability,
  // [N, K] beside [N, K, 4]): a single class, read as one score column.
  const valueAt = bd.length + valueAxis;
  const perBox = bd.filter((_, i) => i !== valueAt);
  const sd = st.dims.length === perBox.length && st.dims.every((d, i) => d === perBox[i])
    ? [...st.dims.slice(0, valueAt), 1, ...st.dims.slice(valueAt)]
    : st.dims;
  const at = (d: readonly number[], axis: number) => d[d.length + axis]!;
  const form = (per: string) => {
    const dims = first ? `${per}, K` : `K, ${per}`;
    return `[N, ${dims}] with batch > ${b}${b === 0 ? ` or [${dims}]` : ""}`;
  };
  expectShape(batchedOk(bd) && at(bd, valueAxis) === 4, bn, form("4"), bd);
  expectShape(batchedOk(sd), sn, form("C"), sd);
  const K = at(bd, boxAxis), C = at(sd, valueAxis);
  if (at(sd, boxAxis) !== K) {
    throw new ModelError(
      `output "${sn}": expected ${K} rows of scores, one per box of output "${bn}" [${
        bd.join(", ")
      }], but found [${st.dims.join(", ")}]`,
    );
  }
  const bg = head.background;
  if (bg !== undefined && bg >= C) {
    throw new ModelError(
      `output "${sn}": expected more than ${bg} score columns for head.background ${bg} but found [${
        st.dims.join(", ")
      }]`,
    );
  }
  const classes = C - (bg === undefined ? 0 : 1);
  if (head.classes !== undefined && head.classes !== classes) {
    throw new ModelError(
      `output "${sn}": expected ${head.classes} class columns${
        bg === undefined ? "" : " besides the background column"
      } (head.classes) but found ${classes} in [${st.dims.join(", ")}]`,
    );
  }
  const { index: [i0, i1, i2, i3], centre, sx, sy } = boxColumns(head.columns, {
    normalized: head.normalized,
    size: options.size,
    what: "boxes-scores head",
    name: bn,
  });
  const box = floats(bt, bn), score = floats(st, sn);
  const bOff = bd.length === 3 ? b * K * 4 : 0, sOff = sd.length === 3 ? b * K * C : 0;
  // Value j of box i, and score column k of box i, in either layout.
  const [bStep, bValueStep] = first ? [1, K] : [4, 1];
  const [sStep, sColumnStep] = first ? [1, K] : [C, 1];
  const thr = head.nms.score;
  const buf = new CandidateBuffer();
  const p = new Float64Array(C);
  for (let i = 0; i < K; i++) {
    const o = sOff + i * sStep;
    for (let k = 0; k < C; k++) p[k] = score[o + k * sColumnStep]!;
    if (head.activation === "softmax") {
      let max = -Infinity;
      for (let k = 0; k < C; k++) max = Math.max(max, p[k]!);
      let sum = 0;
      for (let k = 0; k < C; k++) sum += p[k] = Math.exp(p[k]! - max);
      for (let k = 0; k < C; k++) p[k] = p[k]! / sum;
    } else if (head.activation === "sigmoid") {
      for (let k = 0; k < C; k++) p[k] = sigmoid(p[k]!);
    }
    let decoded = false;
    let x1 = 0, y1 = 0, x2 = 0, y2 = 0;
    for (let k = 0; k < C; k++) {
      const s = p[k]!;
      if (k === bg || !(s >= thr)) continue;
      if (!decoded) {
        const l = bOff + i * bStep;
        const a = box[l + i0 * bValueStep]! * sx, c = box[l + i1 * bValueStep]! * sy;
        const e = box[l + i2 * bValueStep]! * sx, f = box[l + i3 * bValueStep]! * sy;
        [x1, y1, x2, y2] = centre ? [a - e / 2, c - f / 2, a + e / 2, c + f / 2] : [a, c, e, f];
        decoded = true;
      }
      buf.push(x1, y1, x2, y2, s, bg !== undefined && k > bg ? k - 1 : k);
    }
  }
  return buf.toCandidates();
}
