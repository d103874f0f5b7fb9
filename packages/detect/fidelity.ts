/**
 * Detection agreement: how well the int8 model reproduces the float model, on images without
 * labels. The float model's confident detections are the ground truth for the int8 model's
 * ranked detections.
 *
 * @module
 */
import { cocoMap } from "./coco_eval.ts";
import type { GroundTruthObject } from "./ground_truth.ts";
import type { Detection } from "./types.ts";

/** Options of {@linkcode fidelity}. */
export interface FidelityOptions {
  /** Float detections scoring at least this become ground truth. */
  threshold: number;
}

/** Defaults of {@linkcode FidelityOptions}. */
export const defaults = { threshold: 0.3 } satisfies FidelityOptions;

/** Agreement figures (pycocotools semantics; −1 when the float model found nothing above the threshold). */
export interface Fidelity {
  /** AP at IoU 0.5 of the int8 detections against the float ones. */
  ap50: number;
  /** AP over IoU 0.50:0.95. */
  map: number;
  /** Number of float detections used as ground truth. */
  references: number;
}

/**
 * Scores the test model's detections against the reference model's confident ones.
 *
 * @param reference The float model's detections per image (after decode and NMS).
 * @param test The int8 model's detections per image, same order.
 * @param options Score threshold for reference detections.
 * @returns AP50 and mAP of agreement.
 * @throws {RangeError} When the lists differ in length.
 *
 * @example Identical detections agree perfectly; weak ones are not required
 * ```ts
 * import { fidelity } from "@clipq/detect/fidelity";
 * import assert from "node:assert/strict";
 * const dets = [[
 *   { box: [0, 0, 50, 50] as [number, number, number, number], score: 0.9, label: 2 },
 *   { box: [60, 60, 90, 90] as [number, number, number, number], score: 0.1, label: 2 },
 * ]];
 * assert.deepEqual(fidelity(dets, [[dets[0]![0]!]]), { ap50: 1, map: 1, references: 1 });
 * ```
 */
export function fidelity(
  reference: readonly (readonly Detection[])[],
  test: readonly (readonly Detection[])[],
  options: Partial<FidelityOptions> = {},
): Fidelity {
  const { threshold } = { ...defaults, ...options };
  if (reference.length !== test.length) {
    throw new RangeError(
      `Expected detections for the same ${reference.length} images from both models but found ${test.length}`,
    );
  }
  let references = 0;
  const gt: GroundTruthObject[][] = reference.map((ds) =>
    ds.filter((d) => d.score >= threshold).map((d) => {
      references++;
      return { box: [...d.box], label: d.label };
    })
  );
  const m = cocoMap(test, gt);
  return { ap50: m.ap50, map: m.map, references };
}
