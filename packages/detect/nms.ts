/**
 * Greedy non-maximum suppression on typed arrays.
 *
 * @module
 */
import type { Candidates } from "./types.ts";

/** NMS settings, as the config's `head.nms` block holds them. */
export interface NmsOptions {
  /** A candidate is suppressed by a kept one whose IoU with it is greater than this. */
  iou: number;
  /** Candidates scoring below this are dropped before NMS. */
  score: number;
  /** At most this many detections are kept (per image). */
  maxDetections: number;
  /** Only the best this many candidates (after the score threshold) enter NMS. */
  preTopK?: number;
  /** Suppress across classes (true) or only within a class (false). */
  classAgnostic: boolean;
}

/** Defaults of {@linkcode NmsOptions}. */
export const defaults = {
  iou: 0.45,
  score: 0.01,
  maxDetections: 100,
  classAgnostic: false,
} satisfies NmsOptions;

/**
 * Greedy NMS: candidates in descending score order (ties keep their input order) are kept unless a
 * kept candidate (of the same class, unless class-agnostic) overlaps them with IoU > `iou`.
 *
 * A candidate only needs checking against what was kept before it, and kept boxes stay few
 * (≤ maxDetections; per class when class-aware), so this is one sort plus O(n · kept) IoUs with
 * precomputed areas, and it stops as soon as `maxDetections` are kept.
 *
 * @param candidates Boxes, scores and labels.
 * @param options Thresholds and limits; missing keys take {@linkcode defaults}.
 * @returns Indices of the kept candidates, best first.
 *
 * @example Two overlapping boxes of one class
 * ```ts
 * import { nms } from "@clipq/detect/nms";
 * import { toCandidates } from "@clipq/detect/types";
 * import assert from "node:assert/strict";
 * const c = toCandidates([
 *   { box: [0, 0, 10, 10], score: 0.8, label: 0 },
 *   { box: [1, 0, 11, 10], score: 0.9, label: 0 },
 *   { box: [1, 0, 11, 10], score: 0.7, label: 1 },
 * ]);
 * assert.deepEqual([...nms(c)], [1, 2]);
 * assert.deepEqual([...nms(c, { classAgnostic: true })], [1]);
 * ```
 */
export function nms(candidates: Candidates, options: Partial<NmsOptions> = {}): Int32Array {
  const o = { ...defaults, ...options };
  checkNmsOptions(o);
  const { boxes, scores, labels, count } = candidates;
  const order = rankByScore(scores, count, o.score);
  const n = o.preTopK !== undefined ? Math.min(order.length, o.preTopK) : order.length;
  const maxKeep = Math.min(n, o.maxDetections);
  if (maxKeep === 0) return new Int32Array(0);
  // Many boxes may be kept (no tight maxDetections): look up only the kept boxes near each
  // candidate through a uniform grid instead of scanning them all.
  if (maxKeep > GRID_MIN_KEEP) {
    const kept = gridNms(candidates, order.subarray(0, n), maxKeep, o);
    if (kept) return kept;
  }
  const kept = new Int32Array(maxKeep);
  let nKept = 0;

  // Kept boxes (copied contiguously with their areas) grouped per class, as linked lists
  // threaded through arrays, so a class-aware check only visits kept boxes of its class.
  const kx1 = new Float64Array(maxKeep), ky1 = new Float64Array(maxKeep);
  const kx2 = new Float64Array(maxKeep), ky2 = new Float64Array(maxKeep);
  const karea = new Float64Array(maxKeep);
  const next = new Int32Array(maxKeep);
  const heads = new Map<number, number>();
  const thr = o.iou;

  for (let r = 0; r < n && nKept < maxKeep; r++) {
    const i = order[r]!;
    const x1 = boxes[4 * i]!,
      y1 = boxes[4 * i + 1]!,
      x2 = boxes[4 * i + 2]!,
      y2 = boxes[4 * i + 3]!;
    const area = Math.max(0, x2 - x1) * Math.max(0, y2 - y1);
    const cls = o.classAgnostic ? 0 : labels[i]!;
    let k = heads.get(cls) ?? -1;
    let suppressed = false;
    while (k >= 0) {
      const w = Math.min(x2, kx2[k]!) - Math.max(x1, kx1[k]!);
      if (w > 0) {
        const h = Math.min(y2, ky2[k]!) - Math.max(y1, ky1[k]!);
        if (h > 0) {
          const inter = w * h;
          if (inter / (area + karea[k]! - inter) > thr) {
            suppressed = true;
            break;
          }
        }
      }
      k = next[k]!;
    }
    if (suppressed) continue;
    kx1[nKept] = x1;
    ky1[nKept] = y1;
    kx2[nKept] = x2;
    ky2[nKept] = y2;
    karea[nKept] = area;
    next[nKept] = heads.get(cls) ?? -1;
    heads.set(cls, nKept);
    kept[nKept++] = i;
  }
  return kept.slice(0, nKept);
}

/** Above this many detections to keep, NMS switches from per-class lists to a spatial grid. */
const GRID_MIN_KEEP = 128;

function gridNms(
  candidates: Candidates,
  order: Int32Array,
  maxKeep: number,
  o: NmsOptions,
): Int32Array | undefined {
  const { boxes, labels } = candidates;
  const n = order.length;
  let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
  let sumW = 0, sumH = 0;
  for (let r = 0; r < n; r++) {
    const i = order[r]!;
    // A NaN or infinite coordinate (an exp overflow in an int8 decode) made the cell sizes NaN
    // and no kept box was filed anywhere: the lists, where a bad box affects only itself, take it.
    if (
      !Number.isFinite(boxes[4 * i]! + boxes[4 * i + 1]! + boxes[4 * i + 2]! + boxes[4 * i + 3]!)
    ) {
      return undefined;
    }
    minX = Math.min(minX, boxes[4 * i]!);
    minY = Math.min(minY, boxes[4 * i + 1]!);
    maxX = Math.max(maxX, boxes[4 * i + 2]!);
    maxY = Math.max(maxY, boxes[4 * i + 3]!);
    sumW += Math.max(0, boxes[4 * i + 2]! - boxes[4 * i]!);
    sumH += Math.max(0, boxes[4 * i + 3]! - boxes[4 * i + 1]!);
  }
  // Cells about the mean box size, so a box sits in a few cells (at most 128 per axis).
  const Gx = Math.max(1, Math.min(128, Math.floor((maxX - minX) / (sumW / n || 1))));
  const Gy = Math.max(1, Math.min(128, Math.floor((maxY - minY) / (sumH / n || 1))));
  // Boxes large against their spread: a coarse grid prunes little; the lists do better.
  if (Gx * Gy < 64) return undefined;
  const cw = (maxX - minX) / Gx || 1, ch = (maxY - minY) / Gy || 1;
  const cellX = (v: number) => Math.min(Gx - 1, Math.max(0, Math.floor((v - minX) / cw)));
  const cellY = (v: number) => Math.min(Gy - 1, Math.max(0, Math.floor((v - minY) / ch)));
  // Per (class, cell) lists of kept boxes — a box sits in every cell it overlaps — as linked
  // entries in arrays; class-agnostic NMS files every box under class 0.
  const grids = new Map<number, Int32Array>();
  const gridOf = (label: number) => {
    const l = o.classAgnostic ? 0 : label;
    let g = grids.get(l);
    if (!g) grids.set(l, g = new Int32Array(Gx * Gy).fill(-1));
    return g;
  };
  let entryCap = 4 * maxKeep;
  let entryBox = new Int32Array(entryCap), entryNext = new Int32Array(entryCap);
  let entries = 0;
  const kx1 = new Float64Array(maxKeep), ky1 = new Float64Array(maxKeep);
  const kx2 = new Float64Array(maxKeep), ky2 = new Float64Array(maxKeep);
  const karea = new Float64Array(maxKeep);
  const stamp = new Int32Array(maxKeep).fill(-1);
  const kept = new Int32Array(maxKeep);
  let nKept = 0;
  for (let r = 0; r < n && nKept < maxKeep; r++) {
    const i = order[r]!;
    const x1 = boxes[4 * i]!,
      y1 = boxes[4 * i + 1]!,
      x2 = boxes[4 * i + 2]!,
      y2 = boxes[4 * i + 3]!;
    const area = Math.max(0, x2 - x1) * Math.max(0, y2 - y1);
    const label = labels[i]!;
    const cx0 = cellX(x1), cx1 = cellX(x2), cy0 = cellY(y1), cy1 = cellY(y2);
    const cellHead = gridOf(label);
    let suppressed = false;
    scan: for (let cy = cy0; cy <= cy1; cy++) {
      for (let cx = cx0; cx <= cx1; cx++) {
        for (let e = cellHead[cy * Gx + cx]!; e >= 0; e = entryNext[e]!) {
          const k = entryBox[e]!;
          if (stamp[k] === r) continue;
          stamp[k] = r;
          const w = Math.min(x2, kx2[k]!) - Math.max(x1, kx1[k]!);
          if (w <= 0) continue;
          const h = Math.min(y2, ky2[k]!) - Math.max(y1, ky1[k]!);
          if (h <= 0) continue;
          const inter = w * h;
          if (inter / (area + karea[k]! - inter) > o.iou) {
            suppressed = true;
            break scan;
          }
        }
      }
    }
    if (suppressed) continue;
    const k = nKept++;
    kx1[k] = x1;
    ky1[k] = y1;
    kx2[k] = x2;
    ky2[k] = y2;
    karea[k] = area;
    kept[k] = i;
    for (let cy = cy0; cy <= cy1; cy++) {
      for (let cx = cx0; cx <= cx1; cx++) {
        if (entries === entryCap) {
          entryCap *= 2;
          const b = new Int32Array(entryCap), nx = new Int32Array(entryCap);
          b.set(entryBox);
          nx.set(entryNext);
          entryBox = b;
          entryNext = nx;
        }
        entryBox[entries] = k;
        entryNext[entries] = cellHead[cy * Gx + cx]!;
        cellHead[cy * Gx + cx] = entries++;
      }
    }
  }
  return kept.slice(0, nKept);
}

/**
 * Indices of the candidates scoring at least `threshold`, best first; equal scores keep input
 * order (as a stable sort does), so results do not depend on the sort implementation.
 *
 * @param scores Scores.
 * @param count How many of `scores` are in use.
 * @param threshold Minimum score.
 * @returns Candidate indices.
 *
 * @example Usage
 * ```ts
 * import { rankByScore } from "@clipq/detect/nms";
 * import assert from "node:assert/strict";
 * assert.deepEqual([...rankByScore(new Float32Array([0.1, 0.5, 0.5, 0.05]), 4, 0.1)], [1, 2, 0]);
 * ```
 */
export function rankByScore(scores: Float32Array, count: number, threshold: number): Int32Array {
  let m = 0;
  const idx = new Int32Array(count);
  for (let i = 0; i < count; i++) if (scores[i]! >= threshold) idx[m++] = i;
  const bits = Math.max(1, Math.ceil(Math.log2(count + 1)));
  if (32 + bits > 53) {
    const out = idx.subarray(0, m);
    out.sort((a, b) => scores[b]! - scores[a]! || a - b);
    return out.slice();
  }
  // One numeric sort of packed keys instead of a comparator sort: the float32 score's bits mapped
  // to an order-preserving uint32, inverted for descending order, then the index — all exact in a
  // float64 (≤ 53 bits), so ties fall back to input order.
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  const keys = new Float64Array(m);
  const scale = 2 ** bits;
  for (let k = 0; k < m; k++) {
    const i = idx[k]!;
    // −0 and 0 are equal scores: +0 for both keeps their input order.
    f[0] = scores[i]! + 0;
    const v = u[0]!;
    const ordered = v & 0x80000000 ? ~v >>> 0 : (v | 0x80000000) >>> 0;
    keys[k] = (0xffffffff - ordered) * scale + i;
  }
  keys.sort();
  const out = new Int32Array(m);
  for (let k = 0; k < m; k++) out[k] = keys[k]! % scale;
  return out;
}

/**
 * Intersection over union of two boxes (0 when the union is empty).
 *
 * @param a `[x1, y1, x2, y2]`.
 * @param b `[x1, y1, x2, y2]`.
 * @returns IoU in [0, 1].
 *
 * @example Usage
 * ```ts
 * import { iou } from "@clipq/detect/nms";
 * import assert from "node:assert/strict";
 * assert.equal(iou([0, 0, 2, 2], [1, 0, 3, 2]), 1 / 3);
 * ```
 */
export function iou(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const w = Math.min(a[2]!, b[2]!) - Math.max(a[0]!, b[0]!);
  const h = Math.min(a[3]!, b[3]!) - Math.max(a[1]!, b[1]!);
  if (w <= 0 || h <= 0) return 0;
  const inter = w * h;
  const union = (a[2]! - a[0]!) * (a[3]! - a[1]!) + (b[2]! - b[0]!) * (b[3]! - b[1]!) - inter;
  return union > 0 ? inter / union : 0;
}

function checkNmsOptions(o: NmsOptions): void {
  const bad = (key: string, expected: string, v: unknown) => {
    throw new RangeError(`Expected nms.${key} to be ${expected} but found ${v}`);
  };
  if (!(o.iou >= 0 && o.iou <= 1)) bad("iou", "in [0, 1]", o.iou);
  if (!Number.isFinite(o.score)) bad("score", "a finite number", o.score);
  if (
    !(o.maxDetections >= 0) || !Number.isInteger(o.maxDetections) && o.maxDetections !== Infinity
  ) {
    bad("maxDetections", "a non-negative integer", o.maxDetections);
  }
  if (o.preTopK !== undefined && !(Number.isInteger(o.preTopK) && o.preTopK >= 0)) {
    bad("preTopK", "a non-negative integer", o.preTopK);
  }
}
