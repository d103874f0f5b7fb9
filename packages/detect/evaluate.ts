/**
 * The core of the pipeline's `evaluate` step: given the float and int8 models' detections (and
 * ground truth, when the evaluation set has annotations), the accuracy figures and the drop.
 *
 * @module
 */
import { cocoMap, type CocoMetrics } from "./coco_eval.ts";
import { type Fidelity, fidelity } from "./fidelity.ts";
import type { GroundTruth } from "./ground_truth.ts";
import type { Detection } from "./types.ts";
import { vocMap } from "./voc_eval.ts";

/** Options of {@linkcode evaluateDetections}. */
export interface EvaluateOptions {
  /** Metric against ground truth: COCO (pycocotools) or VOC (all-point / 11-point AP@0.5). */
  metric: "coco" | "voc" | "voc07";
  /** Float detections scoring at least this are the reference for detection agreement. */
  fidelityThreshold: number;
}

/** Defaults of {@linkcode EvaluateOptions}. */
export const defaults = { metric: "coco", fidelityThreshold: 0.3 } satisfies EvaluateOptions;

/** Accuracy of one model against ground truth. */
export interface Accuracy {
  /** mAP (COCO: IoU 0.50:0.95; VOC: AP@0.5). */
  map: number;
  /** AP at IoU 0.5 (COCO's AP50; for VOC the same as `map`). */
  ap50: number;
  /** All COCO figures, for the `coco` metric. */
  coco?: Omit<CocoMetrics, "perClass">;
  /** AP per class label. */
  perClass: Record<number, number>;
}

/** What the evaluate step reports. */
export interface Evaluation {
  /** Agreement of int8 with float (no labels needed). */
  fidelity: Fidelity;
  /** Float model accuracy, with ground truth. */
  float?: Accuracy;
  /** Int8 model accuracy, with ground truth. */
  int8?: Accuracy;
  /** float − int8, with ground truth (positive = int8 is worse). */
  drop?: { map: number; ap50: number };
  /** Images evaluated. */
  images: number;
}

function accuracy(
  dets: readonly (readonly Detection[])[],
  gt: GroundTruth,
  metric: EvaluateOptions["metric"],
): Accuracy {
  if (metric === "coco") {
    const { perClass, ...coco } = cocoMap(dets, gt);
    return { map: coco.map, ap50: coco.ap50, coco, perClass };
  }
  const v = vocMap(dets, gt, { ap: metric === "voc07" ? "11-point" : "all-point" });
  return { map: v.map, ap50: v.map, perClass: v.perClass };
}

/**
 * Compares the float and int8 models' detections over an evaluation set.
 *
 * @param input `float` and `int8` detections per image (same images, same order) and, when the
 * set is annotated, `groundTruth` in the same order.
 * @param options Metric and fidelity threshold.
 * @returns Fidelity, and with ground truth both models' accuracy and the drop.
 * @throws {RangeError} When the lists differ in length.
 *
 * @example Ground truth, and an int8 model that misses one of two objects
 * ```ts
 * import { evaluateDetections } from "@clipq/detect/evaluate";
 * import assert from "node:assert/strict";
 * const a = { box: [0, 0, 40, 40] as [number, number, number, number], score: 0.9, label: 0 };
 * const b = { box: [100, 0, 140, 40] as [number, number, number, number], score: 0.8, label: 0 };
 * const r = evaluateDetections({
 *   float: [[a, b]],
 *   int8: [[a]],
 *   groundTruth: [[{ box: a.box, label: 0 }, { box: b.box, label: 0 }]],
 * });
 * assert.equal(r.float?.map, 1);
 * // Recall 0.5: precision 1 at 51 of the 101 recall thresholds.
 * assert.equal(r.int8?.ap50, 51 / 101);
 * assert.equal(r.drop?.ap50, 1 - 51 / 101);
 * assert.equal(r.fidelity.ap50, 51 / 101);
 * ```
 */
export function evaluateDetections(
  input: {
    float: readonly (readonly Detection[])[];
    int8: readonly (readonly Detection[])[];
    groundTruth?: GroundTruth;
  },
  options: Partial<EvaluateOptions> = {},
): Evaluation {
  const o = { ...defaults, ...options };
  if (!["coco", "voc", "voc07"].includes(o.metric)) {
    throw new RangeError(`Expected metric to be one of coco, voc, voc07 but found ${o.metric}`);
  }
  const out: Evaluation = {
    fidelity: fidelity(input.float, input.int8, { threshold: o.fidelityThreshold }),
    images: input.float.length,
  };
  if (input.groundTruth) {
    const f = accuracy(input.float, input.groundTruth, o.metric);
    const q = accuracy(input.int8, input.groundTruth, o.metric);
    out.float = f;
    out.int8 = q;
    out.drop = { map: f.map - q.map, ap50: f.ap50 - q.ap50 };
  }
  return out;
}
