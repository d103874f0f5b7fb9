/**
 * @clipq/detect — detector heads and their evaluation: decoders for YOLOv3 (raw and decoded),
 * Faster R-CNN (exported and raw RoI heads), SSD, anchor-free (FCOS/NanoDet, GFL) and DB text
 * heads, end-to-end detectors' final rows, and decoded boxes with per-class scores before NMS; typed-array NMS; COCO (pycocotools semantics) and
 * Pascal VOC mAP; int8-vs-float detection agreement; SQNR. Pure TypeScript on typed arrays — no runtime dependency.
 *
 * @example Decode, then score against ground truth
 * ```ts
 * import { cocoMap, decodeOutputs, resolveHead } from "@clipq/detect";
 * import { float32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const head = resolveHead({ type: "yolo-decoded", outputs: ["d"] });
 * const dets = decodeOutputs(head, { d: float32([1, 1, 6], [50, 50, 20, 20, 1, 0.9]) });
 * assert.equal(cocoMap([dets], [[{ box: [40, 40, 60, 60], label: 0 }]]).map, 1);
 * ```
 *
 * @module
 */
export * from "./types.ts";
export { defaults as nmsDefaults, iou, nms, type NmsOptions, rankByScore } from "./nms.ts";
export {
  type AnchorFreeHead,
  type BoxColumn,
  type BoxesScoresHead,
  type DbHead,
  defaults as headDefaults,
  DETECTION_COLUMNS,
  type DetectionColumn,
  type DetectionsHead,
  type FasterRcnnHead,
  type FasterRcnnRawHead,
  type GflHead,
  HEAD_TYPES,
  headAutoOutputs,
  type HeadBase,
  type HeadConfig,
  type HeadDefaults,
  type HeadOptionsOf,
  type HeadType,
  type Layout,
  resolveHead,
  type ResolveHeadOptions,
  type SsdHead,
  type YoloDecodedHead,
  type Yolov3Head,
} from "./head.ts";
export * from "./yolo.ts";
export * from "./faster_rcnn.ts";
export * from "./ssd.ts";
export * from "./anchor_free.ts";
export * from "./db.ts";
export * from "./detections.ts";
export * from "./boxes_scores.ts";
export * from "./decode.ts";
export * from "./ground_truth.ts";
export {
  cocoMap,
  type CocoMetrics,
  type CocoOptions,
  defaults as cocoDefaults,
  IOU_THRESHOLDS,
  RECALL_THRESHOLDS,
} from "./coco_eval.ts";
export {
  defaults as vocDefaults,
  vocAp,
  vocMap,
  type VocMetrics,
  type VocOptions,
} from "./voc_eval.ts";
export {
  defaults as fidelityDefaults,
  type Fidelity,
  fidelity,
  type FidelityOptions,
} from "./fidelity.ts";
export * from "./sqnr.ts";
export {
  type Accuracy,
  defaults as evaluateDefaults,
  evaluateDetections,
  type EvaluateOptions,
  type Evaluation,
} from "./evaluate.ts";
