/**
 * The detector-head description (the config's `head` block): what the head's outputs mean and how
 * to turn them into detections. {@linkcode resolveHead} validates a raw block, fills defaults, and
 * takes what the config leaves out from the model's head metadata (written by importers).
 *
 * @module
 */
import { ConfigError } from "@clipq/onnx/errors";
import { type HeadMetadata, readHeadMetadata } from "@clipq/onnx/metadata";
import { defaults as nmsDefaults, type NmsOptions } from "./nms.ts";

/** Head types clipq decodes. */
export const HEAD_TYPES = [
  "yolov3",
  "yolo-decoded",
  "faster-rcnn",
  "faster-rcnn-raw",
  "ssd",
  "anchor-free",
  "gfl",
  "db",
  "detections",
  "boxes-scores",
] as const;

/** One of {@linkcode HEAD_TYPES}. */
export type HeadType = typeof HEAD_TYPES[number];

/** `channels-first` reads `[N, K, H, W]` outputs; `channels-last` reads `[N, H, W, K]` or `[N, H·W, K]`. */
export type Layout = "channels-first" | "channels-last";

/** Keys every head type has. */
export interface HeadBase {
  /** Graph outputs the decoder reads, in the order the head type defines. */
  outputs: string[];
  /** Number of object classes; inferred from output shapes when left out. */
  classes?: number;
  /** NMS settings. */
  nms: NmsOptions;
}

/**
 * YOLOv3 raw outputs: one `[N, A·(5+C), H, W]` tensor per scale (`outputs`, `strides`, `anchors`
 * aligned), channels per anchor `tx, ty, tw, th, obj, cls…`. Box centre `(σ(tx) + gx) · stride`, size
 * `exp(tw) · anchorW`; score `σ(obj) · σ(cls)`.
 */
export interface Yolov3Head extends HeadBase {
  /** Head type. */
  type: "yolov3";
  /** Stride (input pixels per cell) of each output. */
  strides: number[];
  /** Anchors `[w, h]` in input pixels, per output. */
  anchors: number[][][];
  /** Tensor layout. */
  layout: Layout;
  /**
   * Box formula: `darknet` (centre `(σ(t)·scaleXY − (scaleXY − 1)/2 + g) · stride`, size
   * `exp(t) · anchor`) or `ultralytics` (YOLOv5/v7: centre `(2σ(t) − 0.5 + g) · stride`, size
   * `(2σ(t))² · anchor`).
   */
  decode: "darknet" | "ultralytics";
  /**
   * darknet's `scale_x_y` (YOLOv4 uses 1.05–1.2; YOLOv3 1): one for every output, or one per
   * output (YOLOv4's cfg gives each [yolo] layer its own).
   */
  scaleXY: number | number[];
}

/**
 * Already-decoded YOLO output `[N, boxes, 4 + 1 + C]` (`cx, cy, w, h, obj, cls…` in input pixels),
 * or `[N, 4 + C, boxes]` with `layout: "channels-first"` and no objectness, as Ultralytics
 * YOLOv8/v11 exports write it (`output0` [1, 84, 8400]).
 */
export interface YoloDecodedHead extends HeadBase {
  /** Head type. */
  type: "yolo-decoded";
  /** Box encoding of the first four values. */
  boxFormat: "cxcywh" | "xyxy";
  /** Whether an objectness value follows the box (score = obj · cls); YOLOv8-style heads have none. */
  objectness: boolean;
  /** `channels-last` reads `[N, boxes, K]` (YOLOv5), `channels-first` `[N, K, boxes]` (YOLOv8/v11). */
  layout: Layout;
}

/** torchvision-style exported Faster R-CNN: outputs `[boxes [K, 4], labels [K], scores [K]]`. */
export interface FasterRcnnHead extends HeadBase {
  /** Head type. */
  type: "faster-rcnn";
}

/**
 * Raw RoI-head outputs: `[class logits [R, C+1], box deltas [R, 4·(C+1)], proposals [R, 4 or 5]]`;
 * class 0 is background. Deltas decode with torchvision's BoxCoder.
 */
export interface FasterRcnnRawHead extends HeadBase {
  /** Head type. */
  type: "faster-rcnn-raw";
  /** BoxCoder weights (wx, wy, ww, wh). */
  weights: [number, number, number, number];
  /** dw/dh are clamped at this value before exp. */
  clamp: number;
}

/**
 * SSD: outputs `[locations [N, P, 4], class scores [N, P, C(+1)]]`; `priors` `[cx, cy, w, h]`
 * normalized to [0, 1], given inline or as the name of a further output.
 */
export interface SsdHead extends HeadBase {
  /** Head type. */
  type: "ssd";
  /** Priors `[cx, cy, w, h]` (normalized), or the name of an output tensor holding them `[P, 4]`. */
  priors: number[][] | string;
  /** Center-size coder variances (center, size). */
  variances: [number, number];
  /**
   * `softmax` over classes with background at index 0, or independent `sigmoid`s; `none` when the
   * graph ends in its own Softmax (tf2onnx and torch exports): scores are probabilities already,
   * background at index 0.
   */
  activation: "softmax" | "sigmoid" | "none";
}

/**
 * FCOS/NanoDet-style anchor-free head: per level class scores and `l, t, r, b` distances (× stride)
 * from the grid centre `(g + centerOffset) · stride`. `outputs` are per level either one tensor
 * (classes then regression channels) or a `[cls, reg]` pair, or a single tensor concatenating all
 * levels channels-last.
 */
export interface AnchorFreeHead extends HeadBase {
  /** Head type. */
  type: "anchor-free";
  /** Stride of each level. */
  strides: number[];
  /** Grid-centre offset in cells (FCOS 0.5, NanoDet 0). */
  centerOffset: number;
  /** Whether class outputs are logits (`sigmoid`) or probabilities (`none`). */
  activation: "sigmoid" | "none";
  /** Tensor layout. */
  layout: Layout;
}

/** Generalized Focal Loss head: like anchor-free, but each distance is a distribution over `regMax + 1` bins. */
export interface GflHead extends Omit<AnchorFreeHead, "type"> {
  /** Head type. */
  type: "gfl";
  /** Largest bin index (NanoDet-Plus 7). */
  regMax: number;
}

/** DB text detection (PP-OCR det): a probability map `[N, 1, H, W]`. */
export interface DbHead extends HeadBase {
  /** Head type. */
  type: "db";
  /** Pixel threshold of the probability map. */
  threshold: number;
  /** Regions whose mean probability is below this are dropped. */
  boxThreshold: number;
  /** Boxes grow by area · ratio / perimeter on each side. */
  unclipRatio: number;
  /** Regions whose shorter box side (before unclip) is below this are dropped. */
  minSize: number;
  /** Pixel connectivity of regions. */
  connectivity: 4 | 8;
}

/** Column names a `detections` head's rows may use (see {@linkcode DetectionsHead}). */
export const DETECTION_COLUMNS = [
  "x1",
  "y1",
  "x2",
  "y2",
  "cx",
  "cy",
  "w",
  "h",
  "score",
  "class",
] as const;

/** One of {@linkcode DETECTION_COLUMNS}. */
export type DetectionColumn = typeof DETECTION_COLUMNS[number];

/**
 * Final detections of an end-to-end detector (its own decode and top-K/NMS inside the graph): one
 * output `[N, K, D]` or `[K, D]`, a row per detection, as CenterNet (`[1, 100, 6]`) and YOLOv10
 * (`[1, 300, 6]`) exports write it. Rows are final: NMS is off unless `nms.iou` is set (its default
 * here is 1, which suppresses nothing); `nms.score` drops rows below it (padding rows score 0) and
 * `nms.maxDetections` keeps the best rows.
 */
export interface DetectionsHead extends HeadBase {
  /** Head type. */
  type: "detections";
  /**
   * Meaning of a row's columns from `columnOffset` on, in order: a complete box (`x1, y1, x2, y2`
   * or `cx, cy, w, h`), `score` and, optionally, `class` (without it every row is class 0, as
   * one-class detectors write them); columns after these are ignored.
   */
  columns: DetectionColumn[];
  /** Index of the row's column that `columns` starts at (e.g. 51 past MoveNet's 17 keypoints). */
  columnOffset: number;
  /** Whether box coordinates are fractions of the input width/height (true) or input pixels. */
  normalized: boolean;
  /** Subtracted from the class value (1 for 1-based ids); rows whose label falls below 0 are dropped as background. */
  classOffset: number;
}

/** Box column names (the box part of {@linkcode DETECTION_COLUMNS}), as `boxes-scores` heads order them. */
export type BoxColumn = Exclude<DetectionColumn, "score" | "class">;

/**
 * Decoded boxes and per-class scores before NMS, two outputs: boxes `[N, K, 4]` (or `[K, 4]`) and
 * scores `[N, K, C]` (or `[K, C]`), as TensorFlow Object Detection API SSDs, RetinaNet/FCOS/YOLOX
 * exports cut before their NMS and YOLOv8 exports split into boxes and scores end. Class-wise NMS
 * applies with the usual `nms` defaults.
 */
export interface BoxesScoresHead extends HeadBase {
  /** Head type. */
  type: "boxes-scores";
  /** Order of the four box values: `x1, y1, x2, y2` (any order, TF's `y1, x1, y2, x2`) or `cx, cy, w, h`. */
  columns: BoxColumn[];
  /** Whether box coordinates are fractions of the input width/height (true) or input pixels. */
  normalized: boolean;
  /** Scores are probabilities (`none`), logits (`sigmoid`), or logits of one softmax over all columns. */
  activation: "none" | "sigmoid" | "softmax";
  /**
   * Index of a background score column, dropped; the columns after it move down one label
   * (background 0: column `j` is label `j − 1`). Left out: every column is a class.
   */
  background?: number;
  /**
   * `channels-last` reads boxes `[N, K, 4]` and scores `[N, K, C]`; `channels-first` reads
   * `[N, 4, K]` and `[N, C, K]`, as YOLOv8 exports split into boxes and scores give them.
   */
  layout: Layout;
}

/** A validated head description. */
export type HeadConfig =
  | Yolov3Head
  | YoloDecodedHead
  | FasterRcnnHead
  | FasterRcnnRawHead
  | SsdHead
  | AnchorFreeHead
  | GflHead
  | DbHead
  | DetectionsHead
  | BoxesScoresHead;

/** Type-specific keys of a head type (what a config or metadata may set besides the common ones). */
export type HeadOptionsOf<T extends HeadType> = Omit<
  Extract<HeadConfig, { type: T }>,
  "type" | "outputs" | "classes" | "nms"
>;

/** Shape of {@linkcode defaults}. */
export type HeadDefaults =
  & { readonly nms: NmsOptions }
  & {
    readonly [T in HeadType]: Readonly<Partial<HeadOptionsOf<T>>>;
  };

/** Defaults per head type (besides `nms`, which defaults to {@linkcode nmsDefaults}; DB heads keep up to 1000 boxes). */
export const defaults: HeadDefaults = {
  nms: nmsDefaults,
  yolov3: { layout: "channels-first", decode: "darknet", scaleXY: 1 },
  "yolo-decoded": { boxFormat: "cxcywh", objectness: true, layout: "channels-last" },
  "faster-rcnn": {},
  "faster-rcnn-raw": { weights: [10, 10, 5, 5], clamp: Math.log(1000 / 16) },
  ssd: { variances: [0.1, 0.2], activation: "softmax" },
  "anchor-free": { centerOffset: 0.5, activation: "sigmoid", layout: "channels-first" },
  gfl: { centerOffset: 0, activation: "sigmoid", layout: "channels-first", regMax: 7 },
  db: { threshold: 0.3, boxThreshold: 0.6, unclipRatio: 1.5, minSize: 3, connectivity: 4 },
  detections: {
    columns: ["x1", "y1", "x2", "y2", "score", "class"],
    columnOffset: 0,
    normalized: false,
    classOffset: 0,
  },
  "boxes-scores": {
    columns: ["x1", "y1", "x2", "y2"],
    normalized: false,
    activation: "none",
    layout: "channels-last",
  },
};

/** Keys each head type accepts (besides type, outputs, classes, nms). */
const TYPE_KEYS: Record<HeadType, readonly string[]> = {
  yolov3: ["strides", "anchors", "layout", "decode", "scaleXY"],
  "yolo-decoded": ["boxFormat", "objectness", "layout"],
  "faster-rcnn": [],
  "faster-rcnn-raw": ["weights", "clamp"],
  ssd: ["priors", "variances", "activation"],
  "anchor-free": ["strides", "centerOffset", "activation", "layout"],
  gfl: ["strides", "centerOffset", "activation", "layout", "regMax"],
  db: ["threshold", "boxThreshold", "unclipRatio", "minSize", "connectivity"],
  detections: ["columns", "columnOffset", "normalized", "classOffset"],
  "boxes-scores": ["columns", "normalized", "activation", "background", "layout"],
};

/** Outputs each head type reads (fixed count), or undefined when it depends on the levels. */
const OUTPUT_COUNT: Partial<Record<HeadType, number>> = {
  "yolo-decoded": 1,
  "faster-rcnn": 3,
  "faster-rcnn-raw": 3,
  ssd: 2,
  db: 1,
  detections: 1,
  "boxes-scores": 2,
};

/** Options of {@linkcode resolveHead}. */
export interface ResolveHeadOptions {
  /** The model's metadata; its head description fills keys the config leaves out. */
  metadata?: ReadonlyMap<string, string>;
  /** Key path of the block in error messages. */
  keyPath?: string;
}

const describe = (v: unknown) => JSON.stringify(v) ?? String(v);

/**
 * Validates a `head` block, fills defaults and merges the model's head metadata under it (the
 * config wins key by key; `nms` merges key by key too).
 *
 * @param raw The config's `head` block (may be undefined when the model's metadata has one).
 * @param options Metadata and the key path for errors.
 * @returns The validated head.
 * @throws {ConfigError} Naming the key (`head.anchors`, …), what was expected and what was found.
 *
 * @example A YOLOv3 head from the darknet importer's metadata, with a config override
 * ```ts
 * import { resolveHead } from "@clipq/detect/head";
 * import assert from "node:assert/strict";
 * const metadata = new Map([["clipq.head", JSON.stringify({
 *   type: "yolov3", outputs: ["o"], strides: [32], anchors: [[[10, 13]]], classes: 80,
 * })]]);
 * const head = resolveHead({ nms: { iou: 0.5 } }, { metadata });
 * assert.equal(head.type, "yolov3");
 * assert.equal(head.nms.iou, 0.5);
 * assert.equal(head.nms.maxDetections, 100);
 * assert.throws(() => resolveHead({ type: "yolov3", outputs: ["o"], strides: [32] }), /head\.anchors/);
 * ```
 */
export function resolveHead(raw: unknown, options: ResolveHeadOptions = {}): HeadConfig {
  const path = options.keyPath ?? "head";
  const meta: HeadMetadata | undefined = options.metadata
    ? readHeadMetadata(options.metadata)
    : undefined;
  if (raw !== undefined && (raw === null || typeof raw !== "object" || Array.isArray(raw))) {
    throw new ConfigError(path, `expected an object but found ${describe(raw)}`);
  }
  const given = (raw ?? {}) as Record<string, unknown>;
  if (raw === undefined && !meta) {
    throw new ConfigError(
      path,
      "expected a head description, but the config has none and the model has no clipq.head metadata",
    );
  }
  const type = given.type ?? meta?.type;
  if (typeof type !== "string" || !(HEAD_TYPES as readonly string[]).includes(type)) {
    throw new ConfigError(
      `${path}.type`,
      `expected one of ${HEAD_TYPES.join(", ")} but found ${describe(type)}`,
    );
  }
  const t = type as HeadType;
  // Metadata of another head type says nothing about this one.
  const base: Record<string, unknown> = meta && meta.type === t ? { ...meta } : {};
  const merged: Record<string, unknown> = { ...defaults[t], ...base, ...given };
  const allowed = new Set(["type", "outputs", "classes", "nms", ...TYPE_KEYS[t]]);
  for (const k of Object.keys(given)) {
    if (!allowed.has(k)) {
      throw new ConfigError(
        `${path}.${k}`,
        `unknown key for head type "${t}"; expected one of ${[...allowed].join(", ")}`,
      );
    }
  }
  const at = (k: string) => `${path}.${k}`;
  const outputs = merged.outputs;
  if (
    !Array.isArray(outputs) || outputs.length === 0 || !outputs.every((o) => typeof o === "string")
  ) {
    throw new ConfigError(
      at("outputs"),
      `expected a non-empty list of output names but found ${describe(outputs)}`,
    );
  }
  const count = OUTPUT_COUNT[t];
  if (count !== undefined && outputs.length !== count) {
    throw new ConfigError(
      at("outputs"),
      `expected ${count} output name(s) for head type "${t}" but found ${outputs.length}`,
    );
  }
  if (merged.classes !== undefined) positiveInt(merged.classes, at("classes"));
  const nms = checkNms(
    {
      ...nmsDefaults,
      // A page holds many more text lines than a photo holds objects (PP-OCR's max_candidates).
      ...(t === "db" ? { maxDetections: 1000 } : {}),
      // Final rows were suppressed inside the model; re-applying NMS is opt-in (IoU > 1 never holds).
      ...(t === "detections" ? { iou: 1 } : {}),
      ...(base.nms as object ?? {}),
      ...(given.nms as object ?? {}),
    },
    at("nms"),
    given.nms,
  );
  const head = { ...merged, type: t, outputs: [...outputs] as string[], nms } as Record<
    string,
    unknown
  >;
  if (head.classes === undefined) delete head.classes;
  // Metadata may carry keys of its own (e.g. the importer's input size) that are no head option.
  for (const k of Object.keys(head)) {
    if (!allowed.has(k)) delete head[k];
  }
  switch (t) {
    case "yolov3": {
      const strides = positiveList(head.strides, at("strides"), outputs.length);
      const anchors = head.anchors;
      if (
        !Array.isArray(anchors) || anchors.length !== outputs.length ||
        !anchors.every((a) =>
          Array.isArray(a) && a.length > 0 &&
          a.every((p) =>
            Array.isArray(p) && p.length === 2 && p.every((v) => typeof v === "number" && v > 0)
          )
        )
      ) {
        throw new ConfigError(
          at("anchors"),
          `expected one list of [width, height] pairs per output (${outputs.length}) but found ${
            describe(anchors)
          }`,
        );
      }
      oneOf(head.layout, at("layout"), ["channels-first", "channels-last"]);
      oneOf(head.decode, at("decode"), ["darknet", "ultralytics"]);
      const inRange = (v: unknown) => typeof v === "number" && v >= 1 && v <= 4;
      const perOutput = Array.isArray(head.scaleXY) &&
        head.scaleXY.length === outputs.length && head.scaleXY.every(inRange);
      if (!inRange(head.scaleXY) && !perOutput) {
        throw new ConfigError(
          at("scaleXY"),
          `expected a number in [1, 4], or one per output (${outputs.length}), but found ${
            describe(head.scaleXY)
          }`,
        );
      }
      head.strides = strides;
      break;
    }
    case "yolo-decoded":
      oneOf(head.boxFormat, at("boxFormat"), ["cxcywh", "xyxy"]);
      bool(head.objectness, at("objectness"));
      oneOf(head.layout, at("layout"), ["channels-first", "channels-last"]);
      break;
    case "faster-rcnn":
      break;
    case "faster-rcnn-raw":
      positiveList(head.weights, at("weights"), 4);
      if (typeof head.clamp !== "number" || !(head.clamp > 0)) {
        throw new ConfigError(
          at("clamp"),
          `expected a positive number but found ${describe(head.clamp)}`,
        );
      }
      break;
    case "ssd": {
      const p = head.priors;
      const inline = Array.isArray(p) && p.length > 0 &&
        p.every((r) => Array.isArray(r) && r.length === 4 && r.every((v) => typeof v === "number"));
      if (!inline && typeof p !== "string") {
        throw new ConfigError(
          at("priors"),
          `expected [cx, cy, w, h] rows or an output name but found ${describe(p)}`,
        );
      }
      positiveList(head.variances, at("variances"), 2);
      oneOf(head.activation, at("activation"), ["softmax", "sigmoid", "none"]);
      break;
    }
    case "anchor-free":
    case "gfl": {
      const strides = head.strides;
      if (!Array.isArray(strides) || strides.length === 0) {
        throw new ConfigError(
          at("strides"),
          `expected a non-empty list of strides but found ${describe(strides)}`,
        );
      }
      positiveList(strides, at("strides"), strides.length);
      const n = outputs.length;
      if (n !== strides.length && n !== 2 * strides.length && n !== 1) {
        throw new ConfigError(
          at("outputs"),
          `expected 1, ${strides.length} (one per stride) or ${
            2 * strides.length
          } ([cls, reg] per stride) outputs but found ${n}`,
        );
      }
      if (typeof head.centerOffset !== "number") {
        throw new ConfigError(
          at("centerOffset"),
          `expected a number but found ${describe(head.centerOffset)}`,
        );
      }
      oneOf(head.activation, at("activation"), ["sigmoid", "none"]);
      oneOf(head.layout, at("layout"), ["channels-first", "channels-last"]);
      if (t === "gfl") positiveInt(head.regMax, at("regMax"));
      break;
    }
    case "db":
      unit(head.threshold, at("threshold"));
      unit(head.boxThreshold, at("boxThreshold"));
      if (typeof head.unclipRatio !== "number" || !(head.unclipRatio >= 0)) {
        throw new ConfigError(
          at("unclipRatio"),
          `expected a non-negative number but found ${describe(head.unclipRatio)}`,
        );
      }
      if (typeof head.minSize !== "number" || !(head.minSize >= 0)) {
        throw new ConfigError(
          at("minSize"),
          `expected a non-negative number but found ${describe(head.minSize)}`,
        );
      }
      if (head.connectivity !== 4 && head.connectivity !== 8) {
        throw new ConfigError(
          at("connectivity"),
          `expected 4 or 8 but found ${describe(head.connectivity)}`,
        );
      }
      break;
    case "detections":
      checkColumns(head.columns, at("columns"));
      if (
        !(typeof head.columnOffset === "number" && Number.isInteger(head.columnOffset) &&
          head.columnOffset >= 0)
      ) {
        throw new ConfigError(
          at("columnOffset"),
          `expected a non-negative integer but found ${describe(head.columnOffset)}`,
        );
      }
      bool(head.normalized, at("normalized"));
      if (!(typeof head.classOffset === "number" && Number.isInteger(head.classOffset))) {
        throw new ConfigError(
          at("classOffset"),
          `expected an integer but found ${describe(head.classOffset)}`,
        );
      }
      break;
    case "boxes-scores":
      checkBoxColumns(head.columns, at("columns"));
      bool(head.normalized, at("normalized"));
      oneOf(head.activation, at("activation"), ["none", "sigmoid", "softmax"]);
      oneOf(head.layout, at("layout"), ["channels-first", "channels-last"]);
      if (head.background !== undefined) {
        if (
          !(typeof head.background === "number" && Number.isInteger(head.background) &&
            head.background >= 0)
        ) {
          throw new ConfigError(
            at("background"),
            `expected the index of a score column (an integer ≥ 0) but found ${
              describe(head.background)
            }`,
          );
        }
      }
      break;
  }
  return head as unknown as HeadConfig;
}

/** A `detections` head's columns: known names, no repeats, one complete box, a score (class optional). */
function checkColumns(v: unknown, path: string): void {
  if (!Array.isArray(v) || v.length === 0) {
    throw new ConfigError(
      path,
      `expected a non-empty list of column names but found ${describe(v)}`,
    );
  }
  checkNames(v, path, DETECTION_COLUMNS);
  const has = (c: DetectionColumn) => v.includes(c);
  const corners = ["x1", "y1", "x2", "y2"] as const, centre = ["cx", "cy", "w", "h"] as const;
  const boxCols = v.filter((c) => c !== "score" && c !== "class");
  const complete = (set: readonly DetectionColumn[]) =>
    set.every(has) && boxCols.length === set.length;
  if (!complete(corners) && !complete(centre)) {
    throw new ConfigError(
      path,
      `expected one complete box, x1, y1, x2, y2 or cx, cy, w, h, but found the box columns ${
        boxCols.join(", ") || "none"
      }`,
    );
  }
  if (!has("score")) {
    throw new ConfigError(path, `expected a "score" column but found ${v.join(", ")}`);
  }
}

/** Each entry of a columns list is one of `names`, and none comes twice. */
function checkNames(v: readonly unknown[], path: string, names: readonly string[]): void {
  v.forEach((c, i) => {
    if (!(names as readonly unknown[]).includes(c)) {
      throw new ConfigError(
        `${path}[${i}]`,
        `expected one of ${names.join(", ")} but found ${describe(c)}`,
      );
    }
    if (v.indexOf(c) !== i) {
      throw new ConfigError(`${path}[${i}]`, `expected each column once but found "${c}" again`);
    }
  });
}

/** A `boxes-scores` head's columns: four box names, each once, one complete box. */
function checkBoxColumns(v: unknown, path: string): void {
  const corners = ["x1", "y1", "x2", "y2"], centre = ["cx", "cy", "w", "h"];
  if (!Array.isArray(v) || v.length !== 4) {
    throw new ConfigError(
      path,
      `expected the 4 box columns in order (x1, y1, x2, y2 or cx, cy, w, h in any order) but found ${
        describe(v)
      }`,
    );
  }
  checkNames(v, path, [...corners, ...centre]);
  if (!corners.every((c) => v.includes(c)) && !centre.every((c) => v.includes(c))) {
    throw new ConfigError(
      path,
      `expected one complete box, x1, y1, x2, y2 or cx, cy, w, h, but found ${v.join(", ")}`,
    );
  }
}

function checkNms(o: Record<string, unknown>, path: string, given: unknown): NmsOptions {
  if (
    given !== undefined && (given === null || typeof given !== "object" || Array.isArray(given))
  ) {
    throw new ConfigError(path, `expected an object but found ${describe(given)}`);
  }
  const keys = ["iou", "score", "maxDetections", "preTopK", "classAgnostic"];
  for (const k of Object.keys(o)) {
    if (!keys.includes(k)) {
      throw new ConfigError(`${path}.${k}`, `unknown key; expected one of ${keys.join(", ")}`);
    }
  }
  unit(o.iou, `${path}.iou`);
  if (typeof o.score !== "number" || !Number.isFinite(o.score)) {
    throw new ConfigError(
      `${path}.score`,
      `expected a finite number but found ${describe(o.score)}`,
    );
  }
  if (
    !(typeof o.maxDetections === "number" && Number.isInteger(o.maxDetections) &&
      o.maxDetections >= 0)
  ) {
    throw new ConfigError(
      `${path}.maxDetections`,
      `expected a non-negative integer but found ${describe(o.maxDetections)}`,
    );
  }
  if (o.preTopK !== undefined) positiveInt(o.preTopK, `${path}.preTopK`);
  bool(o.classAgnostic, `${path}.classAgnostic`);
  return o as unknown as NmsOptions;
}

function positiveInt(v: unknown, path: string): void {
  if (!(typeof v === "number" && Number.isInteger(v) && v > 0)) {
    throw new ConfigError(path, `expected a positive integer but found ${describe(v)}`);
  }
}

function positiveList(v: unknown, path: string, length: number): number[] {
  if (!Array.isArray(v) || v.length !== length || !v.every((x) => typeof x === "number" && x > 0)) {
    throw new ConfigError(path, `expected ${length} positive number(s) but found ${describe(v)}`);
  }
  return v as number[];
}

function oneOf(v: unknown, path: string, values: readonly string[]): void {
  if (typeof v !== "string" || !values.includes(v)) {
    throw new ConfigError(path, `expected one of ${values.join(", ")} but found ${describe(v)}`);
  }
}

function bool(v: unknown, path: string): void {
  if (typeof v !== "boolean") {
    throw new ConfigError(path, `expected true or false but found ${describe(v)}`);
  }
}

function unit(v: unknown, path: string): void {
  if (!(typeof v === "number" && v >= 0 && v <= 1)) {
    throw new ConfigError(path, `expected a number in [0, 1] but found ${describe(v)}`);
  }
}

/**
 * The graph outputs that are head outputs — what the quantizer's `head: "auto"` keeps float (their
 * producers' raw outputs), and everything downstream of them is post-processing.
 *
 * @param head The head description.
 * @param graphOutputs Names of the graph's outputs; head outputs not among them are an error.
 * @returns The head's output names that the graph produces, in head order.
 * @throws {ConfigError} When a head output is not a graph output (names it and lists the outputs).
 *
 * @example Usage
 * ```ts
 * import { headAutoOutputs, resolveHead } from "@clipq/detect/head";
 * import assert from "node:assert/strict";
 * const head = resolveHead({ type: "yolo-decoded", outputs: ["dets"] });
 * assert.deepEqual(headAutoOutputs(head, ["dets", "feat"]), ["dets"]);
 * ```
 */
export function headAutoOutputs(head: HeadConfig, graphOutputs: readonly string[]): string[] {
  const names = new Set(graphOutputs);
  const wanted = [...head.outputs];
  if (head.type === "ssd" && typeof head.priors === "string") wanted.push(head.priors);
  for (const o of wanted) {
    if (!names.has(o)) {
      throw new ConfigError(
        "head.outputs",
        `expected "${o}" to be a graph output but the graph's outputs are ${[...names].join(", ")}`,
      );
    }
  }
  return wanted;
}
