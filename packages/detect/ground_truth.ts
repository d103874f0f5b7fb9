/**
 * Ground truth as the metrics read it, and adapters from the COCO JSON and Pascal VOC XML
 * annotations @clipq/data loads.
 *
 * @module
 */
import type { Box } from "./types.ts";

/** One annotated object. */
export interface GroundTruthObject {
  /** `[x1, y1, x2, y2]` in original-image pixels. */
  box: Box;
  /** Class label, numbered as the model numbers its classes. */
  label: number;
  /** COCO crowd region: detections inside it are neither right nor wrong. */
  iscrowd?: boolean;
  /** VOC `difficult` object: detections of it are neither right nor wrong. */
  difficult?: boolean;
  /** Area used for COCO's small/medium/large split; defaults to the box area. */
  area?: number;
}

/** Ground truth of a data set: one object list per image, in the same order as the detections. */
export type GroundTruth = readonly (readonly GroundTruthObject[])[];

/** A COCO data set as @clipq/data's `loadCocoAnnotations` returns it (the fields read here). */
export interface CocoDatasetLike {
  /** Images with their ids. */
  images: readonly { id: number; file: string }[];
  /** Annotations with `[x1, y1, x2, y2]` boxes. */
  annotations: readonly {
    imageId: number;
    category: number;
    box: readonly number[];
    area?: number;
    iscrowd?: boolean | number;
  }[];
}

/** Options of {@linkcode cocoGroundTruth}. */
export interface CocoGroundTruthOptions {
  /** Image order of the detections, by file name; defaults to the data set's image order. */
  files?: readonly string[];
  /**
   * Model label of a COCO category id; `undefined` drops the annotation. Defaults to the id's rank
   * among the sorted category ids present (COCO's 80 ids 1..90 → 0..79).
   */
  labelOf?: (category: number) => number | undefined;
}

/**
 * Ground truth from a COCO data set.
 *
 * @param dataset Images and annotations.
 * @param options Image order and category mapping.
 * @returns One object list per image.
 * @throws {RangeError} When a file in `options.files` is not among the data set's images.
 *
 * @example Usage
 * ```ts
 * import { cocoGroundTruth } from "@clipq/detect/ground-truth";
 * import assert from "node:assert/strict";
 * const gt = cocoGroundTruth({
 *   images: [{ id: 7, file: "a.jpg" }],
 *   annotations: [{ imageId: 7, category: 18, box: [0, 0, 4, 4], area: 10, iscrowd: 0 }],
 * });
 * assert.deepEqual(gt, [[{ box: [0, 0, 4, 4], label: 0, iscrowd: false, area: 10 }]]);
 * ```
 */
export function cocoGroundTruth(
  dataset: CocoDatasetLike,
  options: CocoGroundTruthOptions = {},
): GroundTruthObject[][] {
  let labelOf = options.labelOf;
  if (!labelOf) {
    const ids = [...new Set(dataset.annotations.map((a) => a.category))].sort((a, b) => a - b);
    const rank = new Map(ids.map((id, i) => [id, i]));
    labelOf = (c) => rank.get(c);
  }
  const byFile = new Map(dataset.images.map((im) => [im.file, im.id]));
  const ids = options.files
    ? options.files.map((f) => {
      const id = byFile.get(f);
      if (id === undefined) {
        throw new RangeError(`Expected ${f} among the annotated images but it is not there`);
      }
      return id;
    })
    : dataset.images.map((im) => im.id);
  const slot = new Map(ids.map((id, i) => [id, i]));
  const out: GroundTruthObject[][] = ids.map(() => []);
  for (const a of dataset.annotations) {
    const i = slot.get(a.imageId);
    const label = labelOf(a.category);
    if (i === undefined || label === undefined) continue;
    const o: GroundTruthObject = {
      box: [a.box[0]!, a.box[1]!, a.box[2]!, a.box[3]!],
      label,
      iscrowd: Boolean(a.iscrowd),
    };
    if (a.area !== undefined) o.area = a.area;
    out[i]!.push(o);
  }
  return out;
}

/** A Pascal VOC annotation as @clipq/data's `loadVocAnnotation` returns it (the fields read here). */
export interface VocAnnotationLike {
  /** Objects with class names and `[x1, y1, x2, y2]` boxes. */
  objects: readonly { name: string; box: readonly number[]; difficult?: boolean }[];
}

/** The 20 Pascal VOC class names in their usual order (label 0 = aeroplane). */
export const VOC_CLASSES: readonly string[] = [
  "aeroplane",
  "bicycle",
  "bird",
  "boat",
  "bottle",
  "bus",
  "car",
  "cat",
  "chair",
  "cow",
  "diningtable",
  "dog",
  "horse",
  "motorbike",
  "person",
  "pottedplant",
  "sheep",
  "sofa",
  "train",
  "tvmonitor",
];

/**
 * Ground truth from Pascal VOC annotations (one per image).
 *
 * @param annotations Annotations in detection order.
 * @param options `classes`: class names by model label (default {@linkcode VOC_CLASSES}); objects of
 * other classes are dropped.
 * @returns One object list per image.
 *
 * @example Usage
 * ```ts
 * import { vocGroundTruth } from "@clipq/detect/ground-truth";
 * import assert from "node:assert/strict";
 * const gt = vocGroundTruth([{ objects: [{ name: "dog", box: [1, 2, 3, 4], difficult: true }] }]);
 * assert.deepEqual(gt, [[{ box: [1, 2, 3, 4], label: 11, difficult: true }]]);
 * ```
 */
export function vocGroundTruth(
  annotations: readonly VocAnnotationLike[],
  options: { classes?: readonly string[] } = {},
): GroundTruthObject[][] {
  const index = new Map((options.classes ?? VOC_CLASSES).map((n, i) => [n, i]));
  return annotations.map((a) =>
    a.objects.flatMap((o) => {
      const label = index.get(o.name);
      if (label === undefined) return [];
      return [{
        box: [o.box[0]!, o.box[1]!, o.box[2]!, o.box[3]!] as [number, number, number, number],
        label,
        difficult: Boolean(o.difficult),
      }];
    })
  );
}
