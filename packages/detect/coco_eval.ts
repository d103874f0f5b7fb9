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

/**
 * Higher scores first, a NaN score last, as pycocotools' argsort of −score ranks them (a NaN had
 * made the order, and so the AP, depend on the input order).
 */
function scoreOrder(a: number, b: number): number {
  const [na, nb] = [Number.isNaN(a), Number.isNaN(b)];
  if (na || nb) return na === nb ? 0 : na ? 1 : -1;
  return a === b ? 0 : b > a ? 1 : -1;
}
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
  /** [t · D + d]: matched to a (non-ignored or ignored) ground truth. */
  matched: Uint8Array;
  /** [t · D + d]: ignored (matched to an ignored ground truth, or unmatched and outside the area). */
  ignored: Uint8Array;
  /** Non-ignored ground truth count. */
  positives: number;
}

/** What does not depend on the area range: detections ranked and cut, and their IoUs. */
interface ImagePair {
  d: Detection[];
  g: readonly GroundTruthObject[];
  gArea: number[];
  dArea: number[];
  /** [d · G + g]. */
  ious: Float64Array;
}

function boxArea(b: readonly number[]): number {
  return (b[2]! - b[0]!) * (b[3]! - b[1]!);
}

function pairImage(
  dts: readonly Detection[],
  gts: readonly GroundTruthObject[],
  maxDet: number,
): ImagePair | undefined {
  if (dts.length === 0 && gts.length === 0) return undefined;
  const d = [...dts].map((x, i) => [x, i] as const)
    .sort((a, b) => scoreOrder(a[0].score, b[0].score) || a[1] - b[1])
    .slice(0, maxDet).map((x) => x[0]);
  const G = gts.length, D = d.length;
  // pycocotools' bbox IoU; for a crowd region the "union" is the detection's own area.
  const ious = new Float64Array(D * G);
  const dArea = d.map((x) => boxArea(x.box));
  for (let i = 0; i < D; i++) {
    const a = d[i]!.box;
    for (let j = 0; j < G; j++) {
      const b = gts[j]!.box;
      const w = Math.min(a[2], b[2]) - Math.max(a[0], b[0]);
      const h = Math.min(a[3], b[3]) - Math.max(a[1], b[1]);
      if (w <= 0 || h <= 0) continue;
      const inter = w * h;
      const union = gts[j]!.iscrowd ? dArea[i]! : dArea[i]! + boxArea(b) - inter;
      ious[i * G + j] = union > 0 ? inter / union : 0;
    }
  }
  return { d, g: gts, gArea: gts.map((x) => x.area ?? boxArea(x.box)), dArea, ious };
}

function evaluateImage(pair: ImagePair, range: readonly [number, number]): ImageEval {
  const { d, g, ious } = pair;
  const G = g.length, D = d.length, T = IOU_THRESHOLDS.length;
  const outside = (a: number) => a < range[0] || a > range[1];
  const gIgnoreRaw = g.map((x, j): number => x.iscrowd || outside(pair.gArea[j]!) ? 1 : 0);
  // Non-ignored ground truth first (stable), as pycocotools sorts it.
  const gOrder = [...g.keys()].sort((a, b) => gIgnoreRaw[a]! - gIgnoreRaw[b]! || a - b);
  const gIgnore = gOrder.map((j) => gIgnoreRaw[j]!);
  const crowd = gOrder.map((j) => Boolean(g[j]!.iscrowd));
  const matched = new Uint8Array(T * D);
  const ignored = new Uint8Array(T * D);
  const gMatched = new Uint8Array(G);
  for (let t = 0; t < T; t++) {
    gMatched.fill(0);
    for (let i = 0; i < D; i++) {
      let best = Math.min(IOU_THRESHOLDS[t]!, 1 - 1e-10);
      let m = -1;
      for (let k = 0; k < G; k++) {
        if (gMatched[k] && !crowd[k]) continue;
        // Matched a real object already and only ignored ones remain: stop.
        if (m > -1 && gIgnore[m] === 0 && gIgnore[k] === 1) break;
        const v = ious[i * G + gOrder[k]!]!;
        if (v < best) continue;
        best = v;
        m = k;
      }
      if (m === -1) {
        ignored[t * D + i] = outside(pair.dArea[i]!) ? 1 : 0;
        continue;
      }
      ignored[t * D + i] = gIgnore[m]!;
      matched[t * D + i] = 1;
      gMatched[m] = 1;
    }
  }
  let positives = 0;
  for (const v of gIgnore) if (!v) positives++;
  return { scores: d.map((x) => x.score), matched, ignored, positives };
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
  const srcImage: number[] = [];
  const srcDet: number[] = [];
  es.forEach((e, k) => {
    const n = Math.min(maxDet, e.scores.length);
    for (let i = 0; i < n; i++) {
      scores.push(e.scores[i]!);
      srcImage.push(k);
      srcDet.push(i);
    }
  });
  const order = [...scores.keys()].sort((a, b) => scoreOrder(scores[a]!, scores[b]!) || a - b);
  const n = order.length;
  const precision: number[] = [];
  const recall: number[] = [];
  const rc = new Float64Array(n);
  const pr = new Float64Array(n);
  for (let t = 0; t < IOU_THRESHOLDS.length; t++) {
    let tp = 0, fp = 0;
    for (let r = 0; r < n; r++) {
      const o = order[r]!;
      const e = es[srcImage[o]!]!;
      const at = t * e.scores.length + srcDet[o]!;
      if (!e.ignored[at]) {
        if (e.matched[at]) tp++;
        else fp++;
      }
      rc[r] = tp / positives;
      pr[r] = tp + fp > 0 ? tp / (tp + fp) : 0;
    }
    recall.push(n ? rc[n - 1]! : 0);
    for (let i = n - 1; i > 0; i--) if (pr[i]! > pr[i - 1]!) pr[i - 1] = pr[i]!;
    // searchsorted(rc, thr, side="left"): first index with rc[i] >= thr; past the end → 0.
    let q = 0, i = 0;
    for (const thr of RECALL_THRESHOLDS) {
      while (i < n && rc[i]! < thr) i++;
      q += i < n ? pr[i]! : 0;
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
  // Detections and ground truth grouped by class once, per image.
  const group = <T extends { label: number }>(xs: readonly T[]) => {
    const m = new Map<number, T[]>();
    for (const x of xs) {
      const l = m.get(x.label);
      if (l) l.push(x);
      else m.set(x.label, [x]);
    }
    return m;
  };
  const dByImage = detections.map(group);
  const gByImage = groundTruth.map(group);
  for (const label of labels) {
    const pairs = dByImage.map((dm, i) =>
      pairImage(dm.get(label) ?? [], gByImage[i]!.get(label) ?? [], maxDet)
    );
    AREA_RANGES.forEach((range, a) => {
      const evals = pairs.map((p) => p && evaluateImage(p, range));
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
