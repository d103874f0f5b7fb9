/**
 * Pascal VOC AP@0.5 as the VOC devkit (and py-faster-rcnn's voc_eval.py) computes it: detections of
 * a class sorted by score over the whole set, each matched to the best-overlapping object of its
 * image (IoU > 0.5, pixel-inclusive +1 box sizes by default), `difficult` objects ignored; AP as
 * the VOC2007 11-point mean or the VOC2010+ area under the monotone precision envelope.
 *
 * @module
 */
import type { GroundTruth } from "./ground_truth.ts";
import type { Detection } from "./types.ts";

/** Options of {@linkcode vocMap}. */
export interface VocOptions {
  /** `"11-point"` (VOC2007) or `"all-point"` (VOC2010 and later). */
  ap: "11-point" | "all-point";
  /** A detection is right when its IoU with an object is greater than this. */
  iou: number;
  /** Box sizes are `x2 − x1 + 1` (VOC's inclusive pixel coordinates) instead of `x2 − x1`. */
  plusOne: boolean;
}

/** Defaults of {@linkcode VocOptions}. */
export const defaults = { ap: "all-point", iou: 0.5, plusOne: true } satisfies VocOptions;

/** VOC metrics: mAP over the classes that have non-difficult objects, and AP per class. */
export interface VocMetrics {
  /** Mean AP over classes with at least one non-difficult object. */
  map: number;
  /** AP per class label (classes without non-difficult objects are absent). */
  perClass: Record<number, number>;
}

/**
 * The VOC AP of one precision/recall curve.
 *
 * @param recall Recall after each ranked detection.
 * @param precision Precision after each ranked detection.
 * @param method `"11-point"` or `"all-point"`.
 * @returns AP in [0, 1].
 *
 * @example The two methods on one curve
 * ```ts
 * import { vocAp } from "@clipq/detect/voc-eval";
 * import assert from "node:assert/strict";
 * // Two objects; ranked detections: hit, miss, hit.
 * const rec = [0.5, 0.5, 1], prec = [1, 0.5, 2 / 3];
 * assert.equal(vocAp(rec, prec, "all-point"), 0.5 + 0.5 * (2 / 3));
 * assert.equal(vocAp(rec, prec, "11-point"), (6 + 5 * (2 / 3)) / 11);
 * ```
 */
export function vocAp(
  recall: readonly number[],
  precision: readonly number[],
  method: VocOptions["ap"],
): number {
  if (method === "11-point") {
    let sum = 0;
    // numpy.arange(0, 1.1, 0.1) → i · 0.1, so 0.30000000000000004 etc., as the devkit port has it.
    for (let i = 0; i < 11; i++) {
      const t = i * 0.1;
      let p = 0;
      for (let k = 0; k < recall.length; k++) if (recall[k]! >= t) p = Math.max(p, precision[k]!);
      sum += p;
    }
    // One division (the devkit adds p / 11 eleven times) so a perfect curve is exactly 1.
    return sum / 11;
  }
  const mrec = [0, ...recall, 1];
  const mpre = [0, ...precision, 0];
  for (let i = mpre.length - 1; i > 0; i--) mpre[i - 1] = Math.max(mpre[i - 1]!, mpre[i]!);
  let ap = 0;
  for (let i = 1; i < mrec.length; i++) {
    if (mrec[i] !== mrec[i - 1]) ap += (mrec[i]! - mrec[i - 1]!) * mpre[i]!;
  }
  return ap;
}

/**
 * Pascal VOC mAP of a data set.
 *
 * @param detections Detections per image.
 * @param groundTruth Ground truth per image, same order and length.
 * @param options AP method, IoU threshold, pixel convention.
 * @returns mAP and per-class AP.
 * @throws {RangeError} When the two lists differ in length.
 *
 * @example A difficult object is neither found nor missed
 * ```ts
 * import { vocMap } from "@clipq/detect/voc-eval";
 * import assert from "node:assert/strict";
 * const gt = [[
 *   { box: [0, 0, 9, 9] as [number, number, number, number], label: 0 },
 *   { box: [50, 50, 59, 59] as [number, number, number, number], label: 0, difficult: true },
 * ]];
 * const r = vocMap([[
 *   { box: [50, 50, 59, 59], score: 0.9, label: 0 },
 *   { box: [0, 0, 9, 9], score: 0.8, label: 0 },
 * ]], gt);
 * assert.equal(r.map, 1);
 * ```
 */
export function vocMap(
  detections: readonly (readonly Detection[])[],
  groundTruth: GroundTruth,
  options: Partial<VocOptions> = {},
): VocMetrics {
  const o = { ...defaults, ...options };
  if (detections.length !== groundTruth.length) {
    throw new RangeError(
      `Expected detections for ${groundTruth.length} images (one per ground-truth image) but found ${detections.length}`,
    );
  }
  const e = o.plusOne ? 1 : 0;
  const labels = [...new Set(groundTruth.flatMap((g) => g.map((x) => x.label)))].sort((a, b) =>
    a - b
  );
  const perClass: Record<number, number> = {};
  for (const label of labels) {
    const gts = groundTruth.map((g) => g.filter((x) => x.label === label));
    const positives = gts.reduce((s, g) => s + g.filter((x) => !x.difficult).length, 0);
    if (positives === 0) continue;
    const taken = gts.map((g) => new Uint8Array(g.length));
    const dets: { image: number; d: Detection }[] = [];
    detections.forEach((ds, image) => {
      for (const d of ds) if (d.label === label) dets.push({ image, d });
    });
    // Stable, so equal scores keep image order (the devkit's order for ties is unspecified).
    dets.sort((a, b) => b.d.score - a.d.score);
    let tp = 0, fp = 0;
    const recall: number[] = [], precision: number[] = [];
    for (const { image, d } of dets) {
      const g = gts[image]!;
      let best = -Infinity, jBest = -1;
      const bb = d.box;
      for (let j = 0; j < g.length; j++) {
        const gb = g[j]!.box;
        const iw = Math.max(Math.min(bb[2], gb[2]) - Math.max(bb[0], gb[0]) + e, 0);
        const ih = Math.max(Math.min(bb[3], gb[3]) - Math.max(bb[1], gb[1]) + e, 0);
        const inter = iw * ih;
        const uni = (bb[2] - bb[0] + e) * (bb[3] - bb[1] + e) +
          (gb[2] - gb[0] + e) * (gb[3] - gb[1] + e) - inter;
        const ov = uni > 0 ? inter / uni : 0;
        if (ov > best) {
          best = ov;
          jBest = j;
        }
      }
      if (best > o.iou) {
        if (g[jBest]!.difficult) {
          // Neither right nor wrong, but still a point on the curve, as in voc_eval.py.
        } else if (!taken[image]![jBest]) {
          taken[image]![jBest] = 1;
          tp++;
        } else fp++;
      } else fp++;
      recall.push(tp / positives);
      precision.push(tp + fp > 0 ? tp / (tp + fp) : 0);
    }
    perClass[label] = vocAp(recall, precision, o.ap);
  }
  const aps = Object.values(perClass);
  return { map: aps.length ? aps.reduce((s, v) => s + v, 0) / aps.length : -1, perClass };
}
