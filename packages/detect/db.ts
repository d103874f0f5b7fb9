/**
 * DB (Differentiable Binarization) text detection post-processing, as PP-OCR's DBPostProcess does
 * it for axis-aligned boxes: threshold the probability map, find connected regions, score each by
 * its mean probability, drop small or weak ones, and grow ("unclip") the box.
 *
 * @module
 */
import type { Tensor } from "@clipq/onnx/tensor";
import { expectShape, floats, output } from "./_tensor.ts";
import type { DbHead } from "./head.ts";
import { CandidateBuffer, type Candidates } from "./types.ts";
import type { DecodeOptions } from "./yolo.ts";

/**
 * Decodes a DB probability map `[N, 1, H, W]` (or `[N, H, W]`) into text boxes: pixels with
 * probability > `threshold` form regions (4- or 8-connected); a region's box spans its pixels
 * (`[minX, minY, maxX + 1, maxY + 1]`), its score is the mean probability over the region; regions
 * with a box side < `minSize` or a score < `boxThreshold` are dropped; the box then grows by
 * `area · unclipRatio / perimeter` on every side (PP-OCR's unclip distance). Boxes scale from map
 * to input pixels when the input size differs. Label 0.
 *
 * @param head The head description.
 * @param outputs Model outputs by name.
 * @param options Batch index; input size (when the map is smaller than the input).
 * @returns Candidates in model-input pixels.
 * @throws {ModelError} When the output is missing or not a single-channel map.
 *
 * @example A 10×10 square region
 * ```ts
 * import { decodeDb } from "@clipq/detect/db";
 * import { type DbHead, resolveHead } from "@clipq/detect/head";
 * import { float32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const map = new Float32Array(32 * 32);
 * for (let y = 5; y < 15; y++) for (let x = 10; x < 20; x++) map[y * 32 + x] = 0.9;
 * const head = resolveHead({ type: "db", outputs: ["maps"] }) as DbHead;
 * const c = decodeDb(head, { maps: float32([1, 1, 32, 32], map) });
 * // Unclip distance 100 · 1.5 / 40 = 3.75.
 * assert.deepEqual([...c.boxes.subarray(0, 4)], [6.25, 1.25, 23.75, 18.75]);
 * assert.ok(Math.abs(c.scores[0]! - 0.9) < 1e-6);
 * ```
 */
export function decodeDb(
  head: DbHead,
  outputs: Record<string, Tensor>,
  options: DecodeOptions = {},
): Candidates {
  const name = head.outputs[0]!;
  const t = output(outputs, name, "db head");
  const d = t.dims;
  const b = options.batch ?? 0;
  expectShape(
    (d.length === 4 && d[1] === 1 || d.length === 3) && b < d[0]!,
    name,
    `[N, 1, H, W] or [N, H, W] with batch > ${b}`,
    d,
  );
  const H = d[d.length - 2]!, W = d[d.length - 1]!;
  const prob = floats(t, name).subarray(b * H * W, (b + 1) * H * W);
  const sx = options.size ? options.size[1] / W : 1;
  const sy = options.size ? options.size[0] / H : 1;
  const region = new Int32Array(H * W).fill(-1);
  const stack = new Int32Array(H * W);
  const eight = head.connectivity === 8;
  const buf = new CandidateBuffer();
  let regions = 0;
  for (let start = 0; start < H * W; start++) {
    if (region[start] !== -1 || !(prob[start]! > head.threshold)) continue;
    // Flood fill with an explicit stack (regions can be large).
    const id = regions++;
    let top = 0;
    stack[top++] = start;
    region[start] = id;
    let minX = W, minY = H, maxX = -1, maxY = -1, sum = 0, count = 0;
    while (top > 0) {
      const p = stack[--top]!;
      const x = p % W, y = (p - x) / W;
      sum += prob[p]!;
      count++;
      if (x < minX) minX = x;
      if (x > maxX) maxX = x;
      if (y < minY) minY = y;
      if (y > maxY) maxY = y;
      for (let dy = -1; dy <= 1; dy++) {
        const ny = y + dy;
        if (ny < 0 || ny >= H) continue;
        for (let dx = -1; dx <= 1; dx++) {
          if (dx === 0 && dy === 0 || !eight && dx !== 0 && dy !== 0) continue;
          const nx = x + dx;
          if (nx < 0 || nx >= W) continue;
          const q = ny * W + nx;
          if (region[q] === -1 && prob[q]! > head.threshold) {
            region[q] = id;
            stack[top++] = q;
          }
        }
      }
    }
    const w = maxX + 1 - minX, h = maxY + 1 - minY;
    if (Math.min(w, h) < head.minSize) continue;
    const score = sum / count;
    if (score < head.boxThreshold) continue;
    const grow = (w * h * head.unclipRatio) / (2 * (w + h));
    buf.push(
      (minX - grow) * sx,
      (minY - grow) * sy,
      (maxX + 1 + grow) * sx,
      (maxY + 1 + grow) * sy,
      score,
      0,
    );
  }
  return buf.toCandidates();
}

/** How two probability maps binarized at one threshold overlap (pixel counts). */
export interface MapOverlap {
  /** Pixels above the threshold in both maps. */
  intersection: number;
  /** Pixels above it in either. */
  union: number;
  /** Pixels above it in the reference map. */
  reference: number;
}

/**
 * Binarizes a reference map and a test map (e.g. a float and an int8 model's DB outputs) at
 * `threshold` and counts their overlap — the pixel-level agreement DB boxes are derived from.
 *
 * @param reference The reference map's values.
 * @param test The test map's values (compared over the shorter length).
 * @param threshold Pixels strictly above it count.
 * @returns Intersection, union and the reference's positive pixels.
 *
 * @example Two of three text pixels agree
 * ```ts
 * import { binarizedOverlap } from "@clipq/detect/db";
 * import assert from "node:assert/strict";
 * const o = binarizedOverlap([0.9, 0.8, 0.1, 0.7], [0.9, 0.2, 0.1, 0.6], 0.3);
 * assert.deepEqual(o, { intersection: 2, union: 3, reference: 3 });
 * ```
 */
export function binarizedOverlap(
  reference: ArrayLike<number>,
  test: ArrayLike<number>,
  threshold: number,
): MapOverlap {
  let intersection = 0, union = 0, positives = 0;
  const n = Math.min(reference.length, test.length);
  for (let k = 0; k < n; k++) {
    const u = reference[k]! > threshold, v = test[k]! > threshold;
    if (u) positives++;
    if (u && v) intersection++;
    if (u || v) union++;
  }
  return { intersection, union, reference: positives };
}
