/**
 * Decoder of end-to-end detectors' final rows (`detections` heads): CenterNet, YOLOv10 and TF
 * exports that end in their own decode and top-K/NMS and emit one `[N, K, D]` tensor.
 *
 * @module
 */
import { ModelError } from "@clipq/onnx/errors";
import type { Tensor } from "@clipq/onnx/tensor";
import { boxColumns, expectShape, floats, output } from "./_tensor.ts";
import type { DetectionsHead } from "./head.ts";
import { CandidateBuffer, type Candidates } from "./types.ts";
import type { DecodeOptions } from "./yolo.ts";

/**
 * Reads the rows of a `detections` head's output `[N, K, D]` (or `[K, D]`) as candidates: the
 * columns named by `head.columns` from `head.columnOffset` on (others ignored), boxes scaled by the
 * input width/height when `head.normalized`, `cx, cy, w, h` turned into corners, label
 * `round(class) − head.classOffset` (0 without a class column).
 * Rows scoring below `head.nms.score` (padding rows score 0) and rows whose label is below 0
 * (background) are dropped.
 *
 * @param head The head description.
 * @param outputs Model outputs by name.
 * @param options Batch index; the input size `[height, width]` (required for normalized boxes).
 * @returns Candidates in model-input pixels.
 * @throws {ModelError} When the output is missing or its rows are shorter than the columns, normalized
 * boxes come without an input size, a kept row's class is not finite, or it is not below `head.classes`.
 *
 * @example TF-style rows: y1, x1, y2, x2 normalized, 1-based classes
 * ```ts
 * import { decodeDetections } from "@clipq/detect/detections";
 * import { type DetectionsHead, resolveHead } from "@clipq/detect/head";
 * import { float32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const head = resolveHead({
 *   type: "detections", outputs: ["d"], normalized: true, classOffset: 1,
 *   columns: ["y1", "x1", "y2", "x2", "score", "class"],
 * }) as DetectionsHead;
 * const c = decodeDetections(head, { d: float32([1, 2, 6], [0.25, 0.5, 0.75, 1, 0.9, 3, 0, 0, 0, 0, 0, 0]) }, {
 *   size: [100, 200],
 * });
 * assert.equal(c.count, 1);
 * assert.deepEqual([...c.boxes.subarray(0, 4)], [100, 25, 200, 75]);
 * assert.equal(c.labels[0], 2);
 * ```
 */
export function decodeDetections(
  head: DetectionsHead,
  outputs: Record<string, Tensor>,
  options: DecodeOptions = {},
): Candidates {
  const b = options.batch ?? 0;
  const name = head.outputs[0]!;
  const t = output(outputs, name, "detections head");
  const d = t.dims;
  const at = head.columnOffset ?? 0;
  const D0 = at + head.columns.length;
  const batched = d.length === 3;
  expectShape(
    (batched && b < d[0]!) || (d.length === 2 && b === 0),
    name,
    `[N, K, D] with batch > ${b}${b === 0 ? " or [K, D]" : ""}`,
    d,
  );
  const K = d[d.length - 2]!, D = d[d.length - 1]!;
  expectShape(
    D >= D0,
    name,
    `rows of at least ${D0} values (${at ? `${at} skipped, then ` : ""}${head.columns.join(", ")})`,
    d,
  );
  const iScore = head.columns.indexOf("score"), iClass = head.columns.indexOf("class");
  const { index: [i0, i1, i2, i3], centre, sx, sy } = boxColumns(head.columns, {
    normalized: head.normalized,
    size: options.size,
    what: "detections head",
    name,
  });
  const x = floats(t, name);
  const thr = head.nms.score;
  const buf = new CandidateBuffer();
  for (let i = 0; i < K; i++) {
    const o = (b * K + i) * D + at;
    const s = x[o + iScore]!;
    if (!(s >= thr)) continue;
    // One-class detectors (MoveNet's people) write no class column.
    const v = iClass < 0 ? 0 : x[o + iClass]!;
    if (!Number.isFinite(v)) {
      throw new ModelError(`output "${name}": expected a finite class in row ${i} but found ${v}`);
    }
    const label = Math.round(v) - head.classOffset;
    if (label < 0) continue;
    if (head.classes !== undefined && label >= head.classes) {
      throw new ModelError(
        `output "${name}": expected classes below ${head.classes} (after classOffset ${head.classOffset}) but row ${i} has ${label}`,
      );
    }
    const a = x[o + i0]! * sx, c = x[o + i1]! * sy, e = x[o + i2]! * sx, f = x[o + i3]! * sy;
    if (centre) buf.push(a - e / 2, c - f / 2, a + e / 2, c + f / 2, s, label);
    else buf.push(a, c, e, f, s, label);
  }
  return buf.toCandidates();
}
