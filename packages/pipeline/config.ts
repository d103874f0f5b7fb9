/**
 * The pipeline config (`clipq.json`): its description, validation at load (unknown keys rejected at
 * every level, each error a ConfigError naming the key path), path resolution against the config's
 * folder, and the JSON Schema derived from the same description.
 *
 * @module
 */
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { createHash } from "node:crypto";
import { DETECTION_COLUMNS, HEAD_TYPES } from "@clipq/detect/head";
import { hasExtension, listDefaults } from "@clipq/data/images";
import { ClipqError, ConfigError } from "@clipq/onnx/errors";
import {
  found,
  type JsonSchema,
  type ObjectSpec,
  resolvePath,
  type Spec,
  toJsonSchema,
  validate,
} from "./spec.ts";
import {
  CustomStepError,
  type InputConfig,
  type Step,
  type StepFactory,
  type StepRegistry,
} from "./step.ts";
import { ExpressionsNotLoaded, loadExpressions } from "./expression.ts";

const path = (description: string): Spec => ({ type: "string", path: true, description });
const num = (minimum: number, maximum: number, description?: string, integer = false): Spec => ({
  type: "number",
  minimum,
  maximum,
  integer,
  ...(description ? { description } : {}),
});

/** Description of `model`. */
export const MODEL_SPEC: Spec = {
  type: "anyOf",
  description: "The float model: an ONNX file, a darknet cfg (+weights) or a tfjs graph model.",
  options: [
    path("ONNX model file (or asset:NAME)"),
    {
      type: "object",
      properties: {
        darknet: {
          type: "object",
          properties: {
            cfg: path("darknet .cfg file"),
            weights: path("darknet .weights file (seeded random weights when absent)"),
          },
          required: ["cfg"],
        },
      },
      required: ["darknet"],
    },
    {
      type: "object",
      properties: {
        tfjs: path("tfjs model.json"),
        outputs: {
          type: "array",
          items: { type: "string" },
          description:
            'TensorFlow tensors to end the graph at ("node" or "node:1"; the signature\'s outputs when absent): cut before what the importer does not support, such as a while loop.',
        },
        inputs: {
          type: "map",
          description:
            "TensorFlow tensors to start the graph at instead of its placeholders (node name → static shape, float32), e.g. after a preprocessing while loop.",
          values: {
            type: "array",
            items: { type: "number", integer: true, minimum: 1, maximum: 1e6 },
            minItems: 1,
            maxItems: 8,
          },
        },
      },
      required: ["tfjs"],
    },
  ],
};

/** Description of `input`. */
export const INPUT_SPEC: ObjectSpec = {
  type: "object",
  description: "Input preprocessing: pixel v in [0,255] → (v·scale − mean) / std per channel.",
  properties: {
    name: { type: "string", description: "Image input name (default: the first graph input)." },
    size: {
      type: "array",
      items: num(1, 16384, undefined, true),
      minItems: 2,
      maxItems: 2,
      description: "[height, width] (default: the model input's fixed shape).",
    },
    resize: { type: "string", enum: ["stretch", "letterbox", "center-crop"] },
    layout: { type: "string", enum: ["NCHW", "NHWC", "CHW"] },
    color: { type: "string", enum: ["RGB", "BGR", "gray"] },
    scale: num(1e-9, 1e6, "Multiplier of pixel values (default 1/255)."),
    // One value for every channel, or one per channel (3, or 1 for gray; alpha is dropped).
    mean: {
      type: "array",
      items: num(-1e6, 1e6),
      minItems: 1,
      maxItems: 3,
      description: "Per-channel mean: one value for all channels, or one per channel.",
    },
    std: {
      type: "array",
      items: num(1e-9, 1e6),
      minItems: 1,
      maxItems: 3,
      description: "Per-channel standard deviation (positive): one value, or one per channel.",
    },
    extra: {
      type: "map",
      description: 'Fixed values of other model inputs, e.g. {"image_shape": [416, 416]}.',
      values: { type: "array", items: num(-1e12, 1e12), maxItems: 65536 },
    },
    static: {
      type: "boolean",
      description:
        "Write size into the image input's dims: the output model takes only that size, and static shapes let quantize run nearest upsampling as a channels-last Expand.",
    },
  },
};

const imagesSpec: Spec = {
  type: "anyOf",
  options: [
    path("folder of images, one image file, or asset:NAME"),
    { type: "array", items: path("folder or image file"), minItems: 1, maxItems: 1000 },
  ],
};

/** Description of `data`. */
export const DATA_SPEC: ObjectSpec = {
  type: "object",
  properties: {
    calibration: {
      type: "object",
      properties: {
        images: imagesSpec,
        npy: path("folder of .npy input tensors (instead of images)"),
        limit: num(1, 1_000_000, "Use at most this many images.", true),
        batchSize: num(1, 1024, "Images per batch (default 1).", true),
        onBadImage: { type: "string", enum: ["skip", "fail"] },
      },
    },
    evaluation: {
      type: "object",
      properties: {
        images: imagesSpec,
        annotations: path("COCO JSON file or VOC annotation folder"),
        limit: num(1, 1_000_000, undefined, true),
        onBadImage: { type: "string", enum: ["skip", "fail"] },
      },
    },
  },
};

/** Description of `head`. */
export const HEAD_SPEC: ObjectSpec = {
  type: "object",
  description: "Detector head; raw head outputs stay float and evaluate decodes them.",
  properties: {
    // The head types and keys @clipq/detect's resolveHead() accepts (it checks them per type).
    type: { type: "string", enum: [...HEAD_TYPES] },
    outputs: { type: "array", items: { type: "string" }, minItems: 1, maxItems: 64 },
    strides: { type: "array", items: num(1, 4096, undefined, true), maxItems: 64 },
    anchors: {
      type: "array",
      maxItems: 64,
      items: {
        type: "array",
        maxItems: 64,
        items: { type: "array", items: num(0, 1e5), minItems: 2, maxItems: 2 },
      },
    },
    classes: num(1, 100000, undefined, true),
    threshold: num(0, 1, "Binarization threshold of text maps (db)."),
    layout: { type: "string", enum: ["channels-first", "channels-last"] },
    decode: {
      type: "string",
      enum: ["darknet", "ultralytics"],
      description: "yolov3 box formula: darknet or YOLOv5/v7 (2σ − 0.5, (2σ)²).",
    },
    scaleXY: {
      type: "anyOf",
      description: "yolov3: darknet scale_x_y (YOLOv4), one, or one per output.",
      options: [num(1, 4), { type: "array", items: num(1, 4), minItems: 1, maxItems: 16 }],
    },
    boxFormat: { type: "string", enum: ["cxcywh", "xyxy"], description: "yolo-decoded boxes." },
    objectness: {
      type: "boolean",
      description: "yolo-decoded: an objectness value follows the box.",
    },
    weights: { type: "array", items: num(1e-6, 1e6), minItems: 4, maxItems: 4 },
    clamp: num(0, 100, "faster-rcnn-raw: dw/dh clamp before exp."),
    priors: {
      type: "anyOf",
      options: [
        { type: "string" },
        {
          type: "array",
          maxItems: 10_000_000,
          items: { type: "array", items: num(-1e6, 1e6), minItems: 4, maxItems: 4 },
        },
      ],
      description: "ssd priors [cx, cy, w, h] (normalized) or the output holding them.",
    },
    variances: { type: "array", items: num(1e-6, 1e3), minItems: 2, maxItems: 2 },
    activation: { type: "string", enum: ["softmax", "sigmoid", "none"] },
    centerOffset: num(0, 1, "anchor-free/gfl: grid-centre offset in cells."),
    regMax: num(1, 1000, "gfl: largest distribution bin.", true),
    boxThreshold: num(0, 1, "db: minimum mean probability of a text region."),
    unclipRatio: num(0, 100, "db: box growth ratio."),
    minSize: num(0, 100000, "db: minimum box side."),
    connectivity: num(4, 8, "db: 4 or 8.", true),
    columns: {
      type: "array",
      items: { type: "string", enum: [...DETECTION_COLUMNS] },
      minItems: 1,
      maxItems: DETECTION_COLUMNS.length,
      description:
        "detections: meaning of a row's columns from columnOffset on (default x1, y1, x2, y2, score, class; without class every row is class 0); boxes-scores: order of the 4 box values (default x1, y1, x2, y2).",
    },
    normalized: {
      type: "boolean",
      description: "detections, boxes-scores: boxes are fractions of the input width/height.",
    },
    columnOffset: num(
      0,
      100000,
      "detections: index of the row's column that columns start at (51 past MoveNet's 17 keypoints).",
      true,
    ),
    classOffset: num(-1000, 1000, "detections: subtracted from class ids (1 for 1-based).", true),
    background: num(
      0,
      100000,
      "boxes-scores: index of a background score column, dropped (background 0: column j is label j − 1).",
      true,
    ),
    nms: {
      type: "object",
      properties: {
        iou: num(0, 1),
        score: num(0, 1),
        maxDetections: num(1, 100000, undefined, true),
        preTopK: num(1, 10_000_000, undefined, true),
        classAgnostic: { type: "boolean" },
      },
    },
  },
};

/** A parsed step entry before its factory runs. */
export interface StepEntry {
  /** Step name or module specifier. */
  readonly use: string;
  /** Its options (built-in options validated, expressions compiled). */
  readonly options: Record<string, unknown>;
}

/** Model source after validation (paths absolute). */
export type ModelSource =
  | string
  | { darknet: { cfg: string; weights?: string } }
  | { tfjs: string; outputs?: string[]; inputs?: Record<string, number[]> };

/** A data set as configured. */
export interface DataSetConfig {
  /** Image folders or files (absolute after loading). */
  images?: string | string[];
  /** Folder of .npy input tensors. */
  npy?: string;
  /** COCO JSON file or VOC annotation folder. */
  annotations?: string;
  /** Use at most this many images. */
  limit?: number;
  /** Images per batch. */
  batchSize?: number;
  /** What to do with unreadable images. */
  onBadImage?: "skip" | "fail";
}

/** A loaded, validated config. */
export interface Config {
  /** Absolute path of the config file ("" for in-memory configs). */
  readonly file: string;
  /** SHA-256 of the config text (recorded in the output's provenance). */
  readonly hash: string;
  /** The float model. */
  readonly model: ModelSource;
  /** Where the int8 model goes. */
  readonly output: string;
  /** report.json path, if any. */
  readonly report?: string;
  /** Input preprocessing. */
  readonly input: InputConfig;
  /** Calibration and evaluation sets. */
  readonly data: { calibration?: DataSetConfig; evaluation?: DataSetConfig };
  /** Detector head description. */
  readonly head?: Record<string, unknown>;
  /** Steps with their validated factories' results. */
  readonly steps: readonly Step[];
  /** The step entries as written (use + options). */
  readonly entries: readonly StepEntry[];
}

/** Options of {@linkcode loadConfig} and {@linkcode parseConfig}. */
export interface LoadOptions {
  /** The step registry (built-ins by default). */
  registry?: StepRegistry;
  /** Resolves `asset:NAME` paths to real paths (the CLI fetches assets on demand). */
  resolveAsset?: (name: string, key: string) => Promise<string>;
  /** Folder that relative paths resolve against (the config's folder when loaded from a file). */
  baseDir?: string;
  /** The config's own file, which no written path may be (set by {@linkcode loadConfig}). */
  configFile?: string;
}

/** Top-level keys other than steps. */
function topSpec(): ObjectSpec {
  return {
    type: "object",
    properties: {
      $schema: { type: "string", description: "JSON Schema for editors." },
      model: MODEL_SPEC,
      output: path("Where the int8 model is written (atomically)."),
      report: path("report.json path; report.html is written beside it."),
      input: INPUT_SPEC,
      data: DATA_SPEC,
      head: HEAD_SPEC,
      steps: { type: "array", items: { type: "map", values: { type: "any" } }, maxItems: 100 },
    },
    required: ["model", "output", "steps"],
  };
}

/**
 * The config's JSON Schema for a registry of steps (`packages/pipeline/config.schema.json`).
 *
 * @param registry The step registry.
 * @returns The schema.
 *
 * @example Usage
 * ```ts
 * import { configSchema } from "@clipq/pipeline/config";
 * import { StepRegistry } from "@clipq/pipeline/step";
 * import assert from "node:assert/strict";
 * const s = configSchema(new StepRegistry());
 * assert.deepEqual(s.required, ["model", "output", "steps"]);
 * ```
 */
export function configSchema(registry: StepRegistry): JsonSchema {
  const top = toJsonSchema(topSpec());
  const builtin = registry.list().map((def) => {
    const s = toJsonSchema(def.options) as { properties: Record<string, unknown> };
    return {
      description: def.description,
      type: "object",
      properties: { use: { const: def.name }, ...s.properties },
      required: ["use"],
      additionalProperties: false,
    };
  });
  const custom = {
    description: "A custom step: a module path (relative to the config) or npm:/jsr: specifier " +
      "exporting a step factory as default; other keys are its options.",
    type: "object",
    properties: {
      use: {
        type: "string",
        not: { enum: registry.list().map((d) => d.name) },
        pattern: "^(\\.{0,2}/|npm:|jsr:|file:)",
      },
    },
    required: ["use"],
  };
  (top.properties as Record<string, JsonSchema>).steps = {
    type: "array",
    maxItems: 100,
    items: { anyOf: [...builtin, custom] },
  };
  return {
    $schema: "https://json-schema.org/draft/2020-12/schema",
    $id: "https://jsr.io/@clipq/pipeline/config.schema.json",
    title: "clipq pipeline config",
    ...top,
  };
}

const CUSTOM_STEP = /^(\.{0,2}\/|npm:|jsr:|file:)/;

/**
 * Whether a step entry's `use` names a custom step module (a path, `npm:`, `jsr:` or `file:`)
 * rather than a built-in step.
 *
 * @example
 * ```ts
 * import { isCustomStep } from "@clipq/pipeline/config";
 * import assert from "node:assert/strict";
 * assert.deepEqual(["./mine.ts", "npm:mystep", "quantize"].map(isCustomStep), [true, true, false]);
 * ```
 */
export function isCustomStep(use: string): boolean {
  return CUSTOM_STEP.test(use);
}

async function customFactory(use: string, baseDir: string, key: string): Promise<StepFactory> {
  const specifier = use.startsWith("npm:") || use.startsWith("jsr:") || use.startsWith("file:")
    ? use
    : pathToFileURL(resolve(baseDir, use)).href;
  let mod: Record<string, unknown>;
  try {
    mod = await import(specifier);
  } catch (e) {
    throw new ConfigError(
      key,
      `expected a loadable step module; found ${found(use)} (${
        (e as Error).message.split("\n")[0]
      })`,
    );
  }
  const f = mod.default;
  if (typeof f !== "function") {
    throw new ConfigError(
      key,
      `expected ${use} to export a step factory as default; found ${typeof f}`,
    );
  }
  return f as StepFactory;
}

function checkStep(step: unknown, key: string): Step {
  const s = step as Step | undefined;
  if (!s || typeof s.name !== "string" || typeof s.run !== "function") {
    throw new ConfigError(
      key,
      `expected the factory to return a step {name, run}; found ${found(step)}`,
    );
  }
  return s;
}

/**
 * The HTML report written beside a report.json path.
 *
 * @param report The report.json path.
 * @returns The report.html path.
 *
 * @example Usage
 * ```ts
 * import { reportHtmlPath } from "@clipq/pipeline/config";
 * import assert from "node:assert/strict";
 * assert.equal(reportHtmlPath("out/report.json"), "out/report.html");
 * assert.equal(reportHtmlPath("out/report"), "out/report.html");
 * ```
 */
export function reportHtmlPath(report: string): string {
  return report.replace(/\.json$/i, "") + ".html";
}

/**
 * The files a run of a config writes, each with the key that names it: the output model, the report
 * and its HTML twin, and any statistics a calibrate step saves.
 *
 * @param config Output, report and step entries of a config.
 * @returns `[key, path]` pairs.
 *
 * @example Usage
 * ```ts
 * import { writtenPaths } from "@clipq/pipeline/config";
 * import assert from "node:assert/strict";
 * const entries = [{ use: "calibrate", options: { statistics: { save: "/s.json" } } }];
 * assert.deepEqual(writtenPaths({ output: "/o.onnx", report: "/r.json", entries }), [
 *   ["output", "/o.onnx"], ["report", "/r.json"], ["report", "/r.html"],
 *   ["steps[0].statistics.save", "/s.json"],
 * ]);
 * ```
 */
export function writtenPaths(
  config: Pick<Config, "output" | "report" | "entries">,
): [string, string][] {
  const written: [string, string][] = [["output", config.output]];
  if (config.report) {
    written.push(["report", config.report], ["report", reportHtmlPath(config.report)]);
  }
  for (const [i, e] of config.entries.entries()) {
    const save = e.use === "calibrate"
      ? (e.options.statistics as { save?: string } | undefined)?.save
      : undefined;
    if (save) written.push([`steps[${i}].statistics.save`, save]);
  }
  return written;
}

/** Files the data sets and built-in steps read, each with the key that names it. */
function dataInputs(data: Config["data"], entries: readonly StepEntry[]): [string, string][] {
  const out: [string, string][] = [];
  for (const set of ["calibration", "evaluation"] as const) {
    const d = data[set];
    const images = d?.images === undefined ? [] : [d.images].flat();
    images.forEach((p, i) => out.push([`data.${set}.images[${i}]`, p]));
    if (d?.annotations) out.push([`data.${set}.annotations`, d.annotations]);
  }
  entries.forEach((e, i) => {
    const load = (e.options.statistics as { load?: string } | undefined)?.load;
    if (e.use === "calibrate" && load) out.push([`steps[${i}].statistics.load`, load]);
    const annotations = e.options.annotations as string | undefined;
    if (e.use === "evaluate" && annotations) out.push([`steps[${i}].annotations`, annotations]);
  });
  return out;
}

/** The nearest existing ancestor folder of a path when it is a file (then nothing can go below). */
async function fileAncestor(p: string): Promise<string | undefined> {
  for (let dir = dirname(p); dir !== dirname(dir); dir = dirname(dir)) {
    const k = await exists(dir);
    if (k === "file" || k === "other") return dir;
    if (k === "dir") return undefined;
  }
  return undefined;
}

/**
 * Built-in steps in an order where one would run and do nothing: quantize with nothing before it to
 * measure ranges (every layer stays float), a calibrate or svd-fc after quantize (ranges nobody
 * reads, weights already int8), a second quantize (of an int8 graph). Custom steps may set
 * ranges themselves, so one before quantize counts as a source of ranges.
 */
function checkStepOrder(entries: readonly StepEntry[], registry: StepRegistry): void {
  const first = entries.findIndex((e) => e.use === "quantize");
  if (first < 0) return;
  const q = entries[first]!;
  const rangesBefore = entries.slice(0, first).some((e) =>
    e.use === "calibrate" || !registry.get(e.use)
  );
  const overrides = Object.keys((q.options.overrides ?? {}) as object).length > 0;
  if (!rangesBefore && !overrides) {
    throw new ConfigError(
      `steps[${first}]`,
      "expected a calibrate step before quantize (it quantizes only tensors with a range); found none, so every layer would stay float",
    );
  }
  for (const [i, e] of entries.entries()) {
    if (i <= first) continue;
    const why = e.use === "quantize"
      ? "a second quantize finds nothing left to quantize"
      : e.use === "calibrate"
      ? "its ranges would never be read"
      : e.use === "svd-fc"
      ? "the weights are int8 by then"
      : undefined;
    if (why) {
      throw new ConfigError(
        `steps[${i}].use`,
        `expected ${e.use} before quantize (steps[${first}]); found it after, where ${why}`,
      );
    }
  }
}

/**
 * A path with the symlinks of its existing part resolved, so that two names of one file compare
 * equal; `followFile` resolves the last component too (a file read through a link is its target).
 */
async function realPath(p: string, followFile: boolean): Promise<string> {
  const abs = resolve(p);
  if (followFile) {
    try {
      return await Deno.realPath(abs);
    } catch { /* not there: resolve its folders */ }
  }
  const rest = [basename(abs)];
  for (let dir = dirname(abs);; dir = dirname(dir)) {
    try {
      return join(await Deno.realPath(dir), ...rest);
    } catch {
      if (dir === dirname(dir)) return abs;
      rest.unshift(basename(dir));
    }
  }
}

/** Folders whose files a run reads by extension, each with the key that names it. */
function readFolders(
  data: Config["data"],
  model: Config["model"],
): [string, string, readonly string[]][] {
  const out: [string, string, readonly string[]][] = [];
  for (const set of ["calibration", "evaluation"] as const) {
    const d = data[set];
    const images = d?.images === undefined ? [] : [d.images].flat();
    images.forEach((p, i) => {
      // A folder lists its images; a file named on its own is among the read files already.
      if (!hasExtension(p)) {
        out.push([`data.${set}.images[${i}]`, p, listDefaults.extensions!]);
      }
    });
    if (d?.npy) out.push([`data.${set}.npy`, d.npy, [".npy"]]);
  }
  // A tfjs model reads the weight shards beside its model.json.
  if (typeof model !== "string" && "tfjs" in model) {
    out.push(["model.tfjs", dirname(model.tfjs), [".bin"]]);
  }
  return out;
}

/**
 * A path to write that ends in a slash (or `/.`) names a folder, which resolving it forgets:
 * `"output": "o/"` had been written as a file `o`, and with a report in that folder the run failed
 * at mkdir after all its work. Checked on the path as written, before it resolves.
 *
 * @param key The config key or flag that gives the path.
 * @param path The path as written (anything else is left to the config's own checks).
 * @throws {ConfigError} Naming the key, when the path names a folder.
 *
 * @example
 * ```ts
 * import { refuseFolderPath } from "@clipq/pipeline/config";
 * import assert from "node:assert/strict";
 * refuseFolderPath("output", "out/o.onnx");
 * assert.throws(() => refuseFolderPath("output", "out/"), /output: expected a file path/);
 * ```
 */
export function refuseFolderPath(key: string, path: unknown): void {
  if (typeof path === "string" && /[/\\]\.?$/.test(path)) {
    throw new ConfigError(key, `expected a file path; found ${JSON.stringify(path)}, a folder's`);
  }
}

/** {@linkcode refuseFolderPath} on every path the config writes, as written. */
function refuseFolderPaths(raw: Record<string, unknown>): void {
  refuseFolderPath("output", raw.output);
  refuseFolderPath("report", raw.report);
  if (!Array.isArray(raw.steps)) return;
  raw.steps.forEach((step, i) => {
    const statistics = (step as { statistics?: { save?: unknown } } | null)?.statistics;
    refuseFolderPath(`steps[${i}].statistics.save`, statistics?.save);
  });
}

async function exists(p: string): Promise<"file" | "dir" | "other" | undefined> {
  try {
    const st = await Deno.stat(p);
    return st.isDirectory ? "dir" : st.isFile ? "file" : "other";
  } catch {
    return undefined;
  }
}

/** The model's files: the ONNX file, the darknet cfg and weights, or the tfjs model.json. */
function modelFiles(model: Config["model"]): string[] {
  return typeof model === "string"
    ? [model]
    : "darknet" in model
    ? [model.darknet.cfg, ...(model.darknet.weights ? [model.darknet.weights] : [])]
    : [model.tfjs];
}

/** Local module files of custom steps (`./mine.ts`, `file:` URLs), each with its key. */
function stepModules(entries: readonly StepEntry[], baseDir: string): [string, string][] {
  const out: [string, string][] = [];
  entries.forEach((e, i) => {
    if (e.use.startsWith("file:")) out.push([`steps[${i}].use`, fileURLToPath(e.use)]);
    else if (/^\.{0,2}\//.test(e.use)) out.push([`steps[${i}].use`, resolve(baseDir, e.use)]);
  });
  return out;
}

/**
 * Checks the files a run writes against what it reads, before anything runs: none may be an input
 * by any name (a statistics file saved over the model destroyed it; an output through a linked
 * folder overwrote the model), nor a file an input folder reads (an image of the calibration
 * folder, a tfjs weight shard), nor a custom step's module; two may not be the same file
 * (report.html over the model just written); none may be a folder or sit below a file (mkdir
 * would fail after the whole run).
 *
 * @param config The model, data sets and step entries (what the run reads).
 * @param written `[key, path]` of every file the run writes (see {@linkcode writtenPaths}).
 * @param options The folder custom step paths resolve against.
 * @throws {ConfigError} Naming the written key at fault.
 */
export async function checkWrittenFiles(
  config: Pick<Config, "model" | "data" | "entries">,
  written: readonly (readonly [string, string])[],
  options: { baseDir: string; configFile?: string },
): Promise<void> {
  const { model, data, entries } = config;
  const read: [string, string][] = [
    ...(options.configFile ? [["the config file", options.configFile] as [string, string]] : []),
    ...modelFiles(model).map((p): [string, string] => ["the input model", p]),
    ...dataInputs(data, entries),
    ...stepModules(entries, options.baseDir),
  ];
  // Compared by their real paths: a folder reached through a symlink is the same folder, and a
  // folder's own symlinked images are followed to what they name.
  const readReal = await Promise.all(
    read.map(async ([k, p]): Promise<[string, string]> => [k, await realPath(p, true)]),
  );
  const folders = await Promise.all(
    readFolders(data, model).map(async ([k, dir, exts]) =>
      [k, await realPath(dir, true), exts] as const
    ),
  );
  for (const [k, dir, exts] of folders) {
    try {
      for (const e of Deno.readDirSync(dir)) {
        if (e.isSymlink && hasExtension(e.name, exts)) {
          readReal.push([k, await realPath(join(dir, e.name), true)]);
        }
      }
    } catch { /* an unreadable folder is reported where it is read */ }
  }
  const seen = new Map<string, string>();
  for (const [key, p] of written) {
    const abs = resolve(p);
    const real = await realPath(abs, false);
    // A symlink to an input would be replaced by the write, the input kept; still, its name is
    // the user's way to that input, so it is refused like the input itself.
    const target = await realPath(abs, true);
    const input = readReal.find(([, i]) => i === real || i === target);
    if (input) {
      const what = input[0].startsWith("the ") ? input[0] : `the input ${input[0]}`;
      throw new ConfigError(key, `expected a path other than ${what}; found the input ${abs}`);
    }
    // A file a folder input would read: an image in the calibration folder, a tfjs weight shard.
    const within = folders.find(([, dir, exts]) =>
      dirname(real) === dir && hasExtension(real, exts)
    );
    if (within) {
      throw new ConfigError(
        key,
        `expected a path outside the files ${within[0]} reads; found ${abs}, one of them`,
      );
    }
    const other = seen.get(real);
    if (other !== undefined) {
      throw new ConfigError(key, `expected a path other than ${other}; found the same file ${abs}`);
    }
    seen.set(real, key);
    const kind = await exists(abs);
    if (kind === "dir") {
      throw new ConfigError(key, `expected a file path; found a folder at ${abs}`);
    }
    // The rename that puts the file in place would replace a device or FIFO (/dev/null as root).
    if (kind === "other") {
      throw new ConfigError(key, `expected a regular file path; found a device or FIFO at ${abs}`);
    }
    const blocker = await fileAncestor(abs);
    if (blocker) {
      throw new ConfigError(key, `expected ${abs} to be in a folder; found a file at ${blocker}`);
    }
  }
}

/**
 * Validates a parsed config object: every key, every step's options (through the step factories),
 * `asset:` names, that input files exist and that the output is not the input.
 *
 * @param raw The parsed JSON.
 * @param options Registry, asset resolver and base folder.
 * @returns The config.
 *
 * @example Reject a misspelled method
 * ```ts
 * import { parseConfig } from "@clipq/pipeline/config";
 * import { builtinSteps } from "@clipq/pipeline/builtins";
 * import assert from "node:assert/strict";
 * await assert.rejects(
 *   parseConfig({ model: "/m.onnx", output: "/o.onnx", steps: [{ use: "calibrate", method: "percentil" }] },
 *     { registry: builtinSteps() }),
 *   /steps\[0\]\.method: expected one of minmax, percentile/,
 * );
 * ```
 */
export async function parseConfig(raw: unknown, options: LoadOptions = {}): Promise<Config> {
  const baseDir = options.baseDir ?? Deno.cwd();
  const registry = options.registry ?? (await import("./builtins.ts")).builtinSteps();
  const v = validate(topSpec(), raw, { baseDir }) as Record<string, unknown>;
  refuseFolderPaths(raw as Record<string, unknown>);
  const resolveAsset = async (p: string, key: string): Promise<string> => {
    if (!p.startsWith("asset:")) return p;
    if (!options.resolveAsset) {
      throw new ConfigError(
        key,
        `expected a path; found ${found(p)} and no asset resolver (use the CLI)`,
      );
    }
    return await options.resolveAsset(p.slice("asset:".length), key);
  };
  const mustExist = async (p: string, key: string, kind?: "file" | "dir") => {
    const found = await exists(p);
    // A device or FIFO reads as a file here (a model given as /dev/fd/63); the readers refuse
    // what they cannot read, by name.
    const k = found === "other" ? "file" : found;
    if (!k || (kind && k !== kind)) {
      const there = k === "dir" ? "a folder" : k === "file" ? "a file" : "nothing";
      throw new ConfigError(
        key,
        `expected an existing ${
          kind === "dir" ? "folder" : kind ?? "file or folder"
        }; found ${there} at ${p}`,
      );
    }
  };

  // Steps first: every key is checked before the file system is looked at.
  const rawSteps = (raw as { steps: unknown[] }).steps;
  const steps: Step[] = [];
  const entries: StepEntry[] = [];
  for (const [i, s] of rawSteps.entries()) {
    const key = `steps[${i}]`;
    const { use, ...rest } = s as Record<string, unknown>;
    if (typeof use !== "string") {
      throw new ConfigError(
        `${key}.use`,
        `expected a step name or module path; found ${found(use)}`,
      );
    }
    const def = registry.get(use);
    let factory: StepFactory;
    if (def) factory = def.factory;
    else if (CUSTOM_STEP.test(use)) factory = await customFactory(use, baseDir, `${key}.use`);
    else {
      throw new ConfigError(
        `${key}.use`,
        `expected one of ${registry.list().map((d) => d.name).join(", ")} or a module path; found ${
          found(use)
        }`,
      );
    }
    // Built-in options are validated here with the config's folder so their paths resolve; the
    // factory validates again (it also serves code that calls it directly).
    const build = (): { opts: Record<string, unknown>; step: Step } => {
      const opts = def
        ? validate(def.options, rest, { path: key, baseDir }) as Record<string, unknown>
        : rest;
      try {
        return { opts, step: checkStep(factory(opts), key) };
      } catch (e) {
        // A custom factory's own exception is a bug in that module, not clipq's.
        // (The expression engine's not-loaded signal is retried below, not a failure.)
        if (!def && !(e instanceof ClipqError) && !(e instanceof ExpressionsNotLoaded)) {
          throw new CustomStepError(key, use, e);
        }
        if (e instanceof ConfigError && !e.keyPath.startsWith("steps[")) {
          const detail = e.keyPath ? e.message.slice(e.keyPath.length + 2) : e.message;
          // Built-in factories name their keys after the step ("quantize.format"); custom ones
          // name their own option ("factor"). Both land under the entry's key path.
          const k = e.keyPath;
          const name = def?.name;
          const sub = name && (k === name || k.startsWith(`${name}.`) || k.startsWith(`${name}[`))
            ? k.slice(name.length)
            : k
            ? `.${k}`
            : "";
          throw new ConfigError(`${key}${sub}`, detail, { cause: e });
        }
        throw e;
      }
    };
    let built: ReturnType<typeof build>;
    try {
      built = build();
    } catch (e) {
      // The expression engine loads only for a config that holds an expression (expression.ts).
      if (!(e instanceof ExpressionsNotLoaded)) throw e;
      await loadExpressions();
      built = build();
    }
    const { opts, step } = built;
    steps.push(step);
    entries.push({ use, options: opts });
  }

  checkStepOrder(entries, registry);
  // Files built-in steps read, checked now rather than after the model has loaded.
  for (const [i, e] of entries.entries()) {
    const load = e.use === "calibrate"
      ? (e.options.statistics as { load?: string } | undefined)?.load
      : undefined;
    if (load) await mustExist(load, `steps[${i}].statistics.load`, "file");
    const annotations = e.use === "evaluate"
      ? e.options.annotations as string | undefined
      : undefined;
    if (annotations) await mustExist(annotations, `steps[${i}].annotations`);
  }

  let model = v.model as ModelSource;
  if (typeof model === "string") {
    model = await resolveAsset(model, "model");
    await mustExist(model, "model", "file");
  } else if ("darknet" in model) {
    model.darknet.cfg = await resolveAsset(model.darknet.cfg, "model.darknet.cfg");
    await mustExist(model.darknet.cfg, "model.darknet.cfg", "file");
    if (model.darknet.weights) {
      await mustExist(model.darknet.weights, "model.darknet.weights", "file");
    }
  } else {
    model = { ...model, tfjs: await resolveAsset(model.tfjs, "model.tfjs") };
    await mustExist(model.tfjs, "model.tfjs", "file");
  }
  const output = v.output as string;
  const report = v.report as string | undefined;
  const data = (v.data ?? {}) as Config["data"];
  for (const set of ["calibration", "evaluation"] as const) {
    const d = data[set];
    if (!d) continue;
    if (d.images !== undefined) {
      const list = Array.isArray(d.images) ? d.images : [d.images];
      const resolved: string[] = [];
      for (const [i, p] of list.entries()) {
        const key = Array.isArray(d.images) ? `data.${set}.images[${i}]` : `data.${set}.images`;
        const r = await resolveAsset(p, key);
        await mustExist(r, key);
        // A folder's other files are passed over; a file named on its own was silently dropped.
        if ((await exists(r)) !== "dir" && !hasExtension(r)) {
          throw new ConfigError(key, `expected a folder or a .jpg, .jpeg or .png file; found ${r}`);
        }
        resolved.push(r);
      }
      d.images = resolved;
    }
    if (d.npy) await mustExist(d.npy, `data.${set}.npy`, "dir");
    if (d.annotations) {
      d.annotations = await resolveAsset(d.annotations, `data.${set}.annotations`);
      await mustExist(d.annotations, `data.${set}.annotations`);
      // Only evaluate reads them (or a custom step, through the context).
      if (!entries.some((e) => e.use === "evaluate" || !registry.get(e.use))) {
        throw new ConfigError(
          `data.${set}.annotations`,
          "expected an evaluate step to read them; found none, so they would be ignored",
        );
      }
    }
    if (set === "calibration" && d.images && d.npy) {
      throw new ConfigError("data.calibration", "expected images or npy; found both");
    }
  }

  await checkWrittenFiles(
    { model, data, entries },
    writtenPaths({ output, ...(report ? { report } : {}), entries }),
    { baseDir, ...(options.configFile ? { configFile: options.configFile } : {}) },
  );

  // evaluate's scoring options only act on annotations; without any they were accepted and unused.
  for (const [i, e] of entries.entries()) {
    if (e.use !== "evaluate" || e.options.annotations || data.evaluation?.annotations) continue;
    const unused = ["metric", "labels", "labelOffset", "classes"].find((k) =>
      e.options[k] !== undefined
    );
    if (unused) {
      throw new ConfigError(
        `steps[${i}].${unused}`,
        "expected annotations to score against (data.evaluation.annotations or this step's annotations); found none",
      );
    }
  }

  const text = JSON.stringify(raw);
  return {
    file: "",
    hash: createHash("sha256").update(text).digest("hex"),
    model,
    output,
    ...(report ? { report } : {}),
    input: (v.input ?? {}) as InputConfig,
    data,
    ...(v.head ? { head: v.head as Record<string, unknown> } : {}),
    steps,
    entries,
  };
}

/**
 * Reads and validates a config file; relative paths resolve against its folder.
 *
 * @param file The config path.
 * @param options Registry and asset resolver.
 * @returns The config.
 *
 * @example A missing config file is a ConfigError
 * ```ts
 * import { loadConfig } from "@clipq/pipeline/config";
 * import assert from "node:assert/strict";
 * await assert.rejects(loadConfig("/nonexistent/clipq.json"), /expected a readable JSON file/);
 * ```
 */
export async function loadConfig(file: string, options: LoadOptions = {}): Promise<Config> {
  const abs = resolve(file);
  let text: string;
  try {
    text = await Deno.readTextFile(abs);
  } catch (e) {
    throw new ConfigError("", `${abs}: expected a readable JSON file; found ${(e as Error).name}`);
  }
  let raw: unknown;
  try {
    // Editors on Windows may save a byte-order mark, which JSON.parse rejects.
    raw = JSON.parse(text.replace(/^\uFEFF/, ""));
  } catch (e) {
    throw new ConfigError(
      "",
      `${abs}: expected JSON; found a syntax error (${(e as Error).message})`,
    );
  }
  let config: Config;
  try {
    config = await parseConfig(raw, {
      ...options,
      baseDir: options.baseDir ?? dirname(abs),
      configFile: abs,
    });
  } catch (e) {
    // An error about the whole document ("expected an object") has no key to name: name the file.
    if (e instanceof ConfigError && e.keyPath === "") {
      throw new ConfigError("", `${abs}: ${e.message}`, { cause: e });
    }
    throw e;
  }
  return { ...config, file: abs, hash: createHash("sha256").update(text).digest("hex") };
}

/** Path of the shipped JSON Schema file. */
export const SCHEMA_FILE: string = fileURLToPath(new URL("./config.schema.json", import.meta.url));

export { resolvePath };
