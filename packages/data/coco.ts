/**
 * COCO detection annotations (`instances_*.json`), validated and with boxes as `[x1, y1, x2, y2]`.
 *
 * @module
 */
import { DataError } from "@clipq/onnx/errors";

/** One COCO image entry. */
export interface CocoImage {
  readonly id: number;
  /** `file_name` as written in the JSON. */
  readonly file: string;
  readonly width: number;
  readonly height: number;
}

/** One COCO category. */
export interface CocoCategory {
  readonly id: number;
  readonly name: string;
}

/** One COCO object annotation. */
export interface CocoAnnotation {
  readonly imageId: number;
  /** Category id. */
  readonly category: number;
  /** `[x1, y1, x2, y2]` in pixels (COCO's `[x, y, w, h]` converted). */
  readonly box: readonly [number, number, number, number];
  /** `area` from the file (segmentation area in COCO), or the box area when absent. */
  readonly area: number;
  /** Crowd regions are ignored by COCO evaluation (matches to them count neither way). */
  readonly iscrowd: boolean;
}

/** A COCO annotation file. */
export interface CocoDataset {
  readonly images: CocoImage[];
  readonly categories: CocoCategory[];
  readonly annotations: CocoAnnotation[];
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function show(v: unknown): string {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/**
 * Validates and converts a COCO detection annotation file.
 *
 * @param json The file's text, or its parsed JSON.
 * @param name The file name, for error messages.
 * @returns Images, categories and annotations.
 * @throws {DataError} Naming the file and the field (`val.json: annotations[3].bbox: …`).
 *
 * @example Usage
 * ```ts
 * import { loadCocoAnnotations } from "@clipq/data/coco";
 * import assert from "node:assert/strict";
 * const coco = loadCocoAnnotations(JSON.stringify({
 *   images: [{ id: 1, file_name: "a.jpg", width: 640, height: 480 }],
 *   categories: [{ id: 18, name: "dog" }],
 *   annotations: [{ id: 5, image_id: 1, category_id: 18, bbox: [10, 20, 30, 40], iscrowd: 0 }],
 * }), "val.json");
 * assert.deepEqual(coco.annotations[0]?.box, [10, 20, 40, 60]);
 * assert.equal(coco.annotations[0]?.area, 1200);
 * ```
 */
export function loadCocoAnnotations(json: string | unknown, name: string): CocoDataset {
  let root: unknown = json;
  if (typeof json === "string") {
    try {
      root = JSON.parse(json);
    } catch (e) {
      throw new DataError(
        `${name}: expected COCO JSON, found invalid JSON: ${(e as Error).message}`,
        {
          cause: e,
        },
      );
    }
  }
  const fail = (path: string, expected: string, found: unknown): never => {
    throw new DataError(`${name}: ${path}: expected ${expected}, found ${show(found)}`);
  };
  if (!isObj(root)) fail("(root)", "an object with images, categories, annotations", root);
  const r = root as Obj;
  const list = (key: string, required: boolean): unknown[] => {
    const v = r[key];
    if (v === undefined && !required) return [];
    if (!Array.isArray(v)) return fail(key, "an array", v);
    return v;
  };
  const num = (path: string, v: unknown, pred: (n: number) => boolean, what: string): number =>
    typeof v === "number" && Number.isFinite(v) && pred(v) ? v : fail(path, what, v);

  const images: CocoImage[] = [];
  const imageIds = new Set<number>();
  list("images", true).forEach((im, i) => {
    const p = `images[${i}]`;
    if (!isObj(im)) return fail(p, "an object", im);
    const id = num(`${p}.id`, im.id, Number.isInteger, "an integer id");
    if (imageIds.has(id)) fail(`${p}.id`, "a unique image id", id);
    if (typeof im.file_name !== "string" || !im.file_name) {
      fail(`${p}.file_name`, "a non-empty string", im.file_name);
    }
    const width = num(`${p}.width`, im.width, (n) => n > 0, "a positive number");
    const height = num(`${p}.height`, im.height, (n) => n > 0, "a positive number");
    imageIds.add(id);
    images.push({ id, file: im.file_name as string, width, height });
  });

  const categories: CocoCategory[] = [];
  const categoryIds = new Set<number>();
  list("categories", true).forEach((c, i) => {
    const p = `categories[${i}]`;
    if (!isObj(c)) return fail(p, "an object", c);
    const id = num(`${p}.id`, c.id, Number.isInteger, "an integer id");
    if (categoryIds.has(id)) fail(`${p}.id`, "a unique category id", id);
    if (typeof c.name !== "string") fail(`${p}.name`, "a string", c.name);
    categoryIds.add(id);
    categories.push({ id, name: c.name as string });
  });

  const annotations: CocoAnnotation[] = [];
  list("annotations", false).forEach((a, i) => {
    const p = `annotations[${i}]`;
    if (!isObj(a)) return fail(p, "an object", a);
    const imageId = num(`${p}.image_id`, a.image_id, Number.isInteger, "an integer image id");
    if (!imageIds.has(imageId)) fail(`${p}.image_id`, "the id of an entry in images", imageId);
    const category = num(
      `${p}.category_id`,
      a.category_id,
      Number.isInteger,
      "an integer category id",
    );
    if (!categoryIds.has(category)) {
      fail(`${p}.category_id`, "the id of an entry in categories", category);
    }
    const b = a.bbox;
    if (
      !Array.isArray(b) || b.length !== 4 ||
      !b.every((v) => typeof v === "number" && Number.isFinite(v)) || b[2] < 0 || b[3] < 0
    ) {
      fail(`${p}.bbox`, "[x, y, width, height] of finite numbers with width, height ≥ 0", b);
    }
    const [x, y, w, h] = b as number[];
    const area = a.area === undefined
      ? w! * h!
      : num(`${p}.area`, a.area, (n) => n >= 0, "a non-negative number");
    const crowd = a.iscrowd ?? 0;
    if (crowd !== 0 && crowd !== 1 && crowd !== true && crowd !== false) {
      fail(`${p}.iscrowd`, "0 or 1", crowd);
    }
    annotations.push({
      imageId,
      category,
      box: [x!, y!, x! + w!, y! + h!],
      area,
      iscrowd: crowd === 1 || crowd === true,
    });
  });
  return { images, categories, annotations };
}
