/**
 * COCO box mAP with pycocotools' semantics (COCOeval, iouType "bbox"): per image and category,
 * detections sorted by score and cut at maxDets, greedy matching at each IoU threshold, crowd
 * regions and out-of-range areas ignored, 101-point interpolated precision.
 *
 * One deliberate difference: precision is tp / (tp + fp) without pycocotools' `np.spacing(1)` in
 * the denominator, so perfect detections score exactly 1 (pycocotools gives 1 − 2⁻⁵²).
 *
 * @module
 */
import type { GroundTruth, GroundTruthObject } from "./ground_truth.ts";
import type { Detection } from "./types.ts";

/** The twelve numbers pycocotools' `summarize()` prints, plus AP per class. */
export interface CocoMetrics {
  /** AP averaged over IoU 0.50:0.05:0.95, all areas, maxDets 100. */
  map: number;
  /** AP at IoU 0.50. */
  ap50: number;
  /** AP at IoU 0.75. */
  ap75: number;
  /** AP for small objects (area ≤ 32²). */
  apSmall: number;
  /** AP for medium objects (32² ≤ area ≤ 96²). */
  apMedium: number;
  /** AP for large objects (area ≥ 96²). */
  apLarge: number;
  /** AR with at most 1 detection per image and class. */
  ar1: number;
  /** AR with at most 10 detections per image and class. */
  ar10: number;
  /** AR with at most 100 detections per image and class. */
  ar100: number;
  /** AR for small objects. */
  arSmall: number;
  /** AR for medium objects. */
  arMedium: number;
  /** AR for large objects. */
  arLarge: number;
  /** AP (IoU 0.50:0.95) per class label; −1 for a class without non-ignored ground truth. */
  perClass: Record<number, number>;
}

/** Options of {@linkcode cocoMap}. */
export interface CocoOptions {
  /** Detections kept per image and class for AR; the last is used for AP. */
  maxDets: [number, number, number];
}

/** Defaults of {@linkcode CocoOptions} (pycocotools' Params). */
export const defaults = { maxDets: [1, 10, 100] } satisfies CocoOptions;

/** numpy.linspace(start, stop, num), reproduced so thresholds equal pycocotools' bit for bit. */
function linspace(start: number, stop: number, num: number): number[] {
  const step = (stop - start) / (num - 1);
  const out = Array.from({ length: num }, (_, i) => i * step + start);
  out[num - 1] = stop;
  return out;
}

/** pycocotools' IoU thresholds 0.50:0.05:0.95. */
export const IOU_THRESHOLDS: readonly number[] = linspace(0.5, 0.95, 10);
/** pycocotools' 101 recall thresholds 0:0.01:1. */
export const RECALL_THRESHOLDS: readonly number[] = linspace(0, 1, 101);
/** Area ranges all, small, medium, large (inclusive bounds, as pycocotools compares). */
const AREA_RANGES: readonly [number, number][] = [
  [0, 1e10],
  [0, 32 ** 2],
  [32 ** 2, 96 ** 2],
  [96 ** 2, 1e10],
];

/** One image × category, matched at every IoU threshold (pycocotools' evaluateImg result). */
interface ImageEval {
  scores: number[];
  /** [t][d]: matched to a (non-ignored or ignored) ground truth. */
  matched: Uint8Array[];
  /** [t][d]: ignored (matched to an ignored ground truth, or unmatched and outside the area). */
  ignored: Uint8Array[];
  /** Non-ignored ground truth count. */
  positives: number;
}

function boxArea(b: readonly number[]): number {
  return (b[2]! - b[0]!) * (b[3]! - b[1]!);
}

function evaluateImage(
  dts: readonly Detection[],
  gts: readonly GroundTruthObject[],
  range: readonly [number, number],
  maxDet: number,
): ImageEval | undefined {
  if (dts.length === 0 && gts.length === 0) return undefined;
  const outside = (a: number) => a < range[0] || a > range[1];
  const gIgnoreRaw = gts.map((g): number => g.iscrowd || outside(g.area ?? boxArea(g.box)) ? 1 : 0);
  // Non-ignored ground truth first (stable), as pycocotools sorts it.
  const gOrder = [...gts.keys()].sort((a, b) => gIgnoreRaw[a]! - gIgnoreRaw[b]! || a - b);
  const g = gOrder.map((i) => gts[i]!);
  const gIgnore = gOrder.map((i) => gIgnoreRaw[i]!);
  const dOrder = [...dts.keys()].sort((a, b) => dts[b]!.score - dts[a]!.score || a - b)
    .slice(0, maxDet);
  const d = dOrder.map((i) => dts[i]!);
  const G = g.length, D = d.length;
  // pycocotools' bbox IoU; for a crowd region the "union" is the detection's own area.
  const ious = new Float64Array(D * G);
  for (let i = 0; i < D; i++) {
    const a = d[i]!.box;
    const aArea = boxArea(a);
    for (let j = 0; j < G; j++) {
      const b = g[j]!.box;
      const w = Math.min(a[2], b[2]) - Math.max(a[0], b[0]);
      const h = Math.min(a[3], b[3]) - Math.max(a[1], b[1]);
      if (w <= 0 || h <= 0) continue;
      const inter = w * h;
      const union = g[j]!.iscrowd ? aArea : aArea + boxArea(b) - inter;
      ious[i * G + j] = union > 0 ? inter / union : 0;
    }
  }
  const matched: Uint8Array[] = [];
  const ignored: Uint8Array[] = [];
  for (const t of IOU_THRESHOLDS) {
    const gMatched = new Uint8Array(G);
    const dm = new Uint8Array(D);
    const di = new Uint8Array(D);
    for (let i = 0; i < D; i++) {
      let best = Math.min(t, 1 - 1e-10);
      let m = -1;
      for (let j = 0; j < G; j++) {
        if (gMatched[j] && !g[j]!.iscrowd) continue;
        // Matched a real object already and only ignored ones remain: stop.
        if (m > -1 && gIgnore[m] === 0 && gIgnore[j] === 1) break;
        const v = ious[i * G + j]!;
        if (v < best) continue;
        best = v;
        m = j;
      }
      if (m === -1) {
        di[i] = outside(boxArea(d[i]!.box)) ? 1 : 0;
        continue;
      }
      di[i] = gIgnore[m]!;
      dm[i] = 1;
      gMatched[m] = 1;
    }
    matched.push(dm);
    ignored.push(di);
  }
  return {
    scores: d.map((x) => x.score),
    matched,
    ignored,
    positives: gIgnore.reduce<number>((s, v) => s + (v ? 0 : 1), 0),
  };
}

/** AP (101-point) per IoU threshold and final recall, or undefined without positives. */
function accumulate(
  evals: readonly (ImageEval | undefined)[],
  maxDet: number,
): { precision: number[]; recall: number[] } | undefined {
  const es = evals.filter((e): e is ImageEval => e !== undefined);
  const positives = es.reduce((s, e) => s + e.positives, 0);
  if (positives === 0) return undefined;
  const scores: number[] = [];
  const src: [number, number][] = [];
  es.forEach((e, k) => {
    const n = Math.min(maxDet, e.scores.length);
    for (let i = 0; i < n; i++) {
      scores.push(e.scores[i]!);
      src.push([k, i]);
    }
  });
  const order = [...scores.keys()].sort((a, b) => scores[b]! - scores[a]! || a - b);
  const precision: number[] = [];
  const recall: number[] = [];
  for (let t = 0; t < IOU_THRESHOLDS.length; t++) {
    const rc: number[] = [];
    const pr: number[] = [];
    let tp = 0, fp = 0;
    for (const o of order) {
      const [k, i] = src[o]!;
      const e = es[k]!;
      if (!e.ignored[t]![i]) {
        if (e.matched[t]![i]) tp++;
        else fp++;
      }
      rc.push(tp / positives);
      pr.push(tp + fp > 0 ? tp / (tp + fp) : 0);
    }
    recall.push(rc.length ? rc[rc.length - 1]! : 0);
    for (let i = pr.length - 1; i > 0; i--) if (pr[i]! > pr[i - 1]!) pr[i - 1] = pr[i]!;
    // searchsorted(rc, thr, side="left"): first index with rc[i] >= thr; past the end → 0.
    let q = 0, i = 0;
    for (const r of RECALL_THRESHOLDS) {
      while (i < rc.length && rc[i]! < r) i++;
      q += i < rc.length ? pr[i]! : 0;
    }
    precision.push(q / RECALL_THRESHOLDS.length);
  }
  return { precision, recall };
}

function mean(xs: readonly number[]): number {
  return xs.length ? xs.reduce((s, v) => s + v, 0) / xs.length : -1;
}

/**
 * COCO detection metrics of a data set.
 *
 * Classes are those present in the ground truth; a class whose ground truth is all crowd (or out
 * of an area range) counts as −1 and is left out of that mean, and a mean over nothing is −1 — both
 * as pycocotools reports them. Detections of classes absent from the ground truth are not scored.
 *
 * @param detections Detections per image.
 * @param groundTruth Ground truth per image, same order and length.
 * @param options `maxDets`.
 * @returns The COCO summary figures.
 * @throws {RangeError} When the two lists differ in length.
 *
 * @example One perfect detection and one false positive ranked first
 * ```ts
 * import { cocoMap } from "@clipq/detect/coco-eval";
 * import assert from "node:assert/strict";
 * const gt = [[{ box: [0, 0, 100, 100] as [number, number, number, number], label: 0 }]];
 * const perfect = cocoMap([[{ box: [0, 0, 100, 100], score: 0.9, label: 0 }]], gt);
 * assert.equal(perfect.map, 1);
 * const fpFirst = cocoMap([[
 *   { box: [200, 200, 300, 300], score: 0.95, label: 0 },
 *   { box: [0, 0, 100, 100], score: 0.9, label: 0 },
 * ]], gt);
 * assert.equal(fpFirst.ap50, 0.5);
 * ```
 */
export function cocoMap(
  detections: readonly (readonly Detection[])[],
  groundTruth: GroundTruth,
  options: Partial<CocoOptions> = {},
): CocoMetrics {
  const { maxDets } = { ...defaults, ...options };
  if (detections.length !== groundTruth.length) {
    throw new RangeError(
      `Expected detections for ${groundTruth.length} images (one per ground-truth image) but found ${detections.length}`,
    );
  }
  const labels = [...new Set(groundTruth.flatMap((g) => g.map((o) => o.label)))].sort((a, b) =>
    a - b
  );
  const maxDet = maxDets[2];
  // ap[area][maxDetIndex] → per-class AP (−1 when undefined); likewise ar.
  const ap: number[][][] = AREA_RANGES.map(() => maxDets.map(() => []));
  const ar: number[][][] = AREA_RANGES.map(() => maxDets.map(() => []));
  const ap50: number[] = [], ap75: number[] = [];
  const perClass: Record<number, number> = {};
  for (const label of labels) {
    const dPer = detections.map((ds) => ds.filter((d) => d.label === label));
    const gPer = groundTruth.map((gs) => gs.filter((g) => g.label === label));
    AREA_RANGES.forEach((range, a) => {
      const evals = dPer.map((ds, i) => evaluateImage(ds, gPer[i]!, range, maxDet));
      maxDets.forEach((m, k) => {
        const acc = accumulate(evals, m);
        ap[a]![k]!.push(acc ? mean(acc.precision) : -1);
        ar[a]![k]!.push(acc ? mean(acc.recall) : -1);
        if (a === 0 && k === 2) {
          ap50.push(acc ? acc.precision[0]! : -1);
          ap75.push(acc ? acc.precision[5]! : -1);
          perClass[label] = acc ? mean(acc.precision) : -1;
        }
      });
    });
  }
  // Averaging per-class APs equals pycocotools' mean over all valid precision entries, since
  // every valid class contributes the same number of entries.
  const valid = (xs: readonly number[]) => mean(xs.filter((v) => v > -1));
  return {
    map: valid(ap[0]![2]!),
    ap50: valid(ap50),
    ap75: valid(ap75),
    apSmall: valid(ap[1]![2]!),
    apMedium: valid(ap[2]![2]!),
    apLarge: valid(ap[3]![2]!),
    ar1: valid(ar[0]![0]!),
    ar10: valid(ar[0]![1]!),
    ar100: valid(ar[0]![2]!),
    arSmall: valid(ar[1]![2]!),
    arMedium: valid(ar[2]![2]!),
    arLarge: valid(ar[3]![2]!),
    perClass,
  };
}
