/**
 * From model outputs to detections: the head's decoder, then NMS, then boxes mapped back to the
 * original image through the preprocessing's {@linkcode BoxTransform} (shared with @clipq/data).
 *
 * @module
 */
import { type BoxTransform, toOriginalBox } from "@clipq/data/preprocess";
import type { Tensor } from "@clipq/onnx/tensor";
import { decodeAnchorFree, decodeGfl } from "./anchor_free.ts";
import { decodeBoxesScores } from "./boxes_scores.ts";
import { decodeDb } from "./db.ts";
import { decodeDetections } from "./detections.ts";
import { decodeFasterRcnn, decodeFasterRcnnRaw } from "./faster_rcnn.ts";
import type { HeadConfig } from "./head.ts";
import { nms } from "./nms.ts";
import { decodeSsd } from "./ssd.ts";
import { type Candidates, type Detection, fromCandidates } from "./types.ts";
import { type DecodeOptions, decodeYoloDecoded, decodeYolov3 } from "./yolo.ts";

/**
 * Runs the head's decoder (no NMS).
 *
 * @param head The head description.
 * @param outputs Model outputs by name.
 * @param options Batch index and model input size.
 * @returns Candidates in model-input pixels.
 * @throws {ModelError} When outputs are missing or malformed.
 *
 * @example Usage
 * ```ts
 * import { decodeCandidates } from "@clipq/detect/decode";
 * import { resolveHead } from "@clipq/detect/head";
 * import { float32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const head = resolveHead({ type: "yolo-decoded", outputs: ["d"] });
 * assert.equal(decodeCandidates(head, { d: float32([1, 1, 6], [5, 5, 2, 2, 1, 1]) }).count, 1);
 * ```
 */
export function decodeCandidates(
  head: HeadConfig,
  outputs: Record<string, Tensor>,
  options: DecodeOptions = {},
): Candidates {
  switch (head.type) {
    case "yolov3":
      return decodeYolov3(head, outputs, options);
    case "yolo-decoded":
      return decodeYoloDecoded(head, outputs, options);
    case "faster-rcnn":
      return decodeFasterRcnn(head, outputs, options);
    case "faster-rcnn-raw":
      return decodeFasterRcnnRaw(head, outputs, options);
    case "ssd":
      return decodeSsd(head, outputs, options);
    case "anchor-free":
      return decodeAnchorFree(head, outputs, options);
    case "gfl":
      return decodeGfl(head, outputs, options);
    case "db":
      return decodeDb(head, outputs, options);
    case "detections":
      return decodeDetections(head, outputs, options);
    case "boxes-scores":
      return decodeBoxesScores(head, outputs, options);
  }
}

/** Options of {@linkcode decodeOutputs}. */
export interface DecodeOutputsOptions extends DecodeOptions {
  /** The image's preprocessing transform; boxes are mapped back to original-image pixels with it. */
  transform?: BoxTransform;
}

/**
 * Decodes one image's detections: decoder, NMS with the head's settings (DB regions are disjoint,
 * so text boxes are only ranked and limited; `detections` rows are final, so they are too unless
 * `nms.iou` is set), and, with a transform, boxes in original-image pixels.
 *
 * @param head The head description.
 * @param outputs Model outputs by name.
 * @param options Batch index, model input size (defaults to the transform's), transform.
 * @returns Detections, best first.
 * @throws {ModelError} When outputs are missing or malformed.
 *
 * @example A letterboxed image: model boxes map back to the original
 * ```ts
 * import { decodeOutputs } from "@clipq/detect/decode";
 * import { resolveHead } from "@clipq/detect/head";
 * import { boxTransform } from "@clipq/data/preprocess";
 * import { float32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const head = resolveHead({ type: "yolo-decoded", outputs: ["d"], boxFormat: "xyxy" });
 * const transform = boxTransform({ width: 200, height: 100 }, { size: [64, 64] });
 * const dets = decodeOutputs(head, { d: float32([1, 1, 6], [0, 16, 32, 48, 1, 0.9]) }, { transform });
 * assert.deepEqual(dets.map((d) => d.box), [[0, 0, 100, 100]]);
 * ```
 */
export function decodeOutputs(
  head: HeadConfig,
  outputs: Record<string, Tensor>,
  options: DecodeOutputsOptions = {},
): Detection[] {
  const { transform, ...rest } = options;
  const size = rest.size ??
    (transform ? [transform.inputHeight, transform.inputWidth] as const : undefined);
  const c = decodeCandidates(head, outputs, { ...rest, ...(size ? { size } : {}) });
  const kept = nms(c, head.type === "db" ? { ...head.nms, iou: 1 } : head.nms);
  const dets = fromCandidates(c, kept);
  if (transform) { for (const d of dets) d.box = toOriginalBox(d.box, transform); }
  return dets;
}

/**
 * Decodes every image of a batch (image `i` uses `transforms[i]`).
 *
 * @param head The head description.
 * @param outputs Model outputs by name, batch-first.
 * @param options `transforms` (one per image; its length is the batch size) or `batchSize`, and
 * the model input size.
 * @returns Detections per image.
 * @throws {ModelError} When outputs are missing or malformed.
 *
 * @example Usage
 * ```ts
 * import { decodeBatch } from "@clipq/detect/decode";
 * import { resolveHead } from "@clipq/detect/head";
 * import { float32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const head = resolveHead({ type: "yolo-decoded", outputs: ["d"] });
 * const out = decodeBatch(head, { d: float32([2, 1, 6], [5, 5, 2, 2, 1, 1, 5, 5, 2, 2, 0, 1]) }, { batchSize: 2 });
 * assert.deepEqual(out.map((d) => d.length), [1, 0]);
 * ```
 */
export function decodeBatch(
  head: HeadConfig,
  outputs: Record<string, Tensor>,
  options: {
    transforms?: readonly BoxTransform[];
    batchSize?: number;
    size?: readonly [number, number];
  } = {},
): Detection[][] {
  const n = options.transforms?.length ?? options.batchSize ?? 1;
  return Array.from({ length: n }, (_, batch) => {
    const transform = options.transforms?.[batch];
    return decodeOutputs(head, outputs, {
      batch,
      ...(transform ? { transform } : {}),
      ...(options.size ? { size: options.size } : {}),
    });
  });
}
