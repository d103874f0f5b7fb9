/**
 * The shapes every decoder, NMS and metric in @clipq/detect shares.
 *
 * @module
 */

/** An axis-aligned box `[x1, y1, x2, y2]` (pixels; x2 ≥ x1, y2 ≥ y1). */
export type Box = [number, number, number, number];

/** One detection: a box, a confidence score and a class label (the model's own class index). */
export interface Detection {
  /** `[x1, y1, x2, y2]` in model-input pixels, or original-image pixels once mapped back. */
  box: Box;
  /** Confidence in [0, 1]. */
  score: number;
  /** Class index as the model numbers its classes. */
  label: number;
}

/**
 * Detection candidates in struct-of-arrays form, the way decoders produce them and NMS reads them:
 * no per-candidate objects, so 10 000 candidates cost three typed arrays.
 */
export interface Candidates {
  /** `4 · count` box coordinates, `[x1, y1, x2, y2]` per candidate. */
  boxes: Float32Array;
  /** `count` scores. */
  scores: Float32Array;
  /** `count` class labels. */
  labels: Int32Array;
  /** Number of candidates (the arrays may be longer). */
  count: number;
}

/**
 * Candidates from a list of detections.
 *
 * @param detections The detections.
 * @returns The same detections in struct-of-arrays form.
 *
 * @example Usage
 * ```ts
 * import { toCandidates } from "@clipq/detect/types";
 * import assert from "node:assert/strict";
 * const c = toCandidates([{ box: [0, 0, 2, 2], score: 0.5, label: 3 }]);
 * assert.equal(c.count, 1);
 * assert.equal(c.labels[0], 3);
 * ```
 */
export function toCandidates(detections: readonly Detection[]): Candidates {
  const n = detections.length;
  const c: Candidates = {
    boxes: new Float32Array(4 * n),
    scores: new Float32Array(n),
    labels: new Int32Array(n),
    count: n,
  };
  detections.forEach((d, i) => {
    c.boxes.set(d.box, 4 * i);
    c.scores[i] = d.score;
    c.labels[i] = d.label;
  });
  return c;
}

/**
 * Detections for selected candidates, in the order of `indices`.
 *
 * @param candidates The candidates.
 * @param indices Which candidates, e.g. what {@linkcode nms} kept.
 * @returns One detection per index.
 *
 * @example Usage
 * ```ts
 * import { fromCandidates, toCandidates } from "@clipq/detect/types";
 * import assert from "node:assert/strict";
 * const c = toCandidates([{ box: [0, 0, 2, 2], score: 0.5, label: 3 }]);
 * assert.deepEqual(fromCandidates(c, [0]), [{ box: [0, 0, 2, 2], score: 0.5, label: 3 }]);
 * ```
 */
export function fromCandidates(
  candidates: Candidates,
  indices: ArrayLike<number>,
): Detection[] {
  const out: Detection[] = [];
  const b = candidates.boxes;
  for (let k = 0; k < indices.length; k++) {
    const i = indices[k]!;
    out.push({
      box: [b[4 * i]!, b[4 * i + 1]!, b[4 * i + 2]!, b[4 * i + 3]!],
      score: candidates.scores[i]!,
      label: candidates.labels[i]!,
    });
  }
  return out;
}

/**
 * A growable candidate list that decoders append to.
 *
 * @example Usage
 * ```ts
 * import { CandidateBuffer } from "@clipq/detect/types";
 * import assert from "node:assert/strict";
 * const buf = new CandidateBuffer();
 * for (let i = 0; i < 100; i++) buf.push(i, 0, i + 1, 1, 0.5, 0);
 * const c = buf.toCandidates();
 * assert.equal(c.count, 100);
 * assert.equal(c.boxes[4 * 99 + 2], 100);
 * ```
 */
export class CandidateBuffer {
  #boxes = new Float32Array(64 * 4);
  #scores = new Float32Array(64);
  #labels = new Int32Array(64);
  #count = 0;

  /** Number of candidates pushed so far. */
  get count(): number {
    return this.#count;
  }

  /**
   * Appends one candidate.
   *
   * @param x1 Left.
   * @param y1 Top.
   * @param x2 Right.
   * @param y2 Bottom.
   * @param score Confidence.
   * @param label Class index.
   */
  push(x1: number, y1: number, x2: number, y2: number, score: number, label: number): void {
    if (this.#count === this.#scores.length) {
      const cap = this.#scores.length * 2;
      const boxes = new Float32Array(cap * 4);
      boxes.set(this.#boxes);
      const scores = new Float32Array(cap);
      scores.set(this.#scores);
      const labels = new Int32Array(cap);
      labels.set(this.#labels);
      this.#boxes = boxes;
      this.#scores = scores;
      this.#labels = labels;
    }
    const i = this.#count++;
    this.#boxes[4 * i] = x1;
    this.#boxes[4 * i + 1] = y1;
    this.#boxes[4 * i + 2] = x2;
    this.#boxes[4 * i + 3] = y2;
    this.#scores[i] = score;
    this.#labels[i] = label;
  }

  /**
   * The candidates pushed so far.
   *
   * @returns Candidates sharing this buffer's storage.
   */
  toCandidates(): Candidates {
    return {
      boxes: this.#boxes,
      scores: this.#scores,
      labels: this.#labels,
      count: this.#count,
    };
  }
}
