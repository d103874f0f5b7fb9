/**
 * The pipeline runner: loads the model, runs the configured steps in order (validating the graph
 * between them and timing each), records provenance, writes the output model and the report
 * atomically, and never leaves partial output behind on failure.
 *
 * @module
 */
import { basename, dirname, join } from "node:path";
import {
  encodedSize,
  type Graph,
  METADATA_KEYS,
  type Tensor,
  validate,
  type ValueInfo,
} from "@clipq/onnx";
import { loadModel, type SavedModel, saveModel } from "@clipq/onnx/io";
import { ClipqError, ConfigError, DataError, ModelError } from "@clipq/onnx/errors";
import { tensor } from "@clipq/onnx/tensor";
import { inferShapes, type ShapeInfo } from "@clipq/onnx/shapes";
import { checkImageHead, imageBatches, listImages, type PreprocessSpec } from "@clipq/data";
import { hasExtension } from "@clipq/data/images";
import { asPixels, channelCount, resolveSpec } from "@clipq/data/preprocess";
import { npyBatches } from "@clipq/data/npy";
import { fromTfjs, loadDarknet } from "@clipq/convert";
import { type HeadConfig, resolveHead } from "@clipq/detect";
import {
  type Config,
  type DataSetConfig,
  isCustomStep,
  reportHtmlPath,
  writtenPaths,
} from "./config.ts";
import { normalizeWithReport } from "@clipq/onnx/normalize";
import {
  CustomStepError,
  type FeedBatch,
  type InputConfig,
  type Logger,
  type Progress,
  type StepContext,
} from "./step.ts";
import { createReporter } from "./progress.ts";
import { type Analysis, analyze } from "./analysis.ts";
import { buildReport, type Report } from "./report.ts";
import { renderHtml } from "./report_html.ts";
import {
  checkExcludeNames,
  quantizePlanOptions,
  type QuantizeStepOptions,
} from "./steps/quantize.ts";
import { createSession } from "@clipq/runtime";
import { decodeHead } from "./steps/evaluate.ts";
import { loadWholeStatistics } from "./steps/calibrate.ts";
import type { Statistics } from "@clipq/calibrate";
import pkg from "./deno.json" with { type: "json" };

/** The clipq version recorded in provenance. */
export const VERSION: string = pkg.version;

/** Options of {@linkcode runPipeline}. */
export interface RunOptions {
  /** No info lines or progress. */
  quiet?: boolean;
  /** Draw progress bars in place (stderr is a terminal). */
  tty?: boolean;
  /** Stop after the calibrate step, writing its statistics (for sharded calibration). */
  calibrateOnly?: boolean;
  /** This process's shard of the calibration images: [k, n], 1-based k. */
  shard?: [number, number];
  /** Where --calibrate-only writes statistics. */
  statsOut?: string;
  /** Statistics files to merge instead of running calibration. */
  mergeStats?: string[];
  /** Skip latency/SQNR measurements in the report (tests that only check files). */
  analyze?: boolean;
  /** Where text goes (stderr by default). */
  write?: (text: string) => void;
  /**
   * Told of each model or report file once it is in place, before the run has ended: a caller that
   * must end the process before the run does (the CLI, on an error no call of the run's can catch)
   * removes them, so that no output stands without the rest.
   */
  onWritten?: (path: string) => void;
}

/** Default run options. */
export const defaults = {
  quiet: false,
  tty: false,
  calibrateOnly: false,
  analyze: true,
} satisfies RunOptions;

/** What {@linkcode runPipeline} produced. */
export interface RunResult {
  /** The final graph. */
  readonly graph: Graph;
  /** The report (also written to config.report when set). */
  readonly report: Report;
  /** The files written (absent with --calibrate-only). */
  readonly saved?: SavedModel;
}

/**
 * Loads the model a config names: an ONNX file (external data beside it), a darknet cfg or a tfjs
 * graph model.
 *
 * @param source The config's model.
 * @param options `inputSize` (the config's `input.size`) overrides a darknet cfg's width/height
 *   and fixes a tfjs image input declared with unknown height and width.
 * @returns The graph.
 */
export async function loadSource(
  source: Config["model"],
  options: { inputSize?: [number, number] } = {},
): Promise<Graph> {
  if (typeof source === "string") return await loadModel(source);
  if ("darknet" in source) {
    // YOLO is fully convolutional: the config's input.size overrides the cfg's width/height.
    return await loadDarknet(source.darknet.cfg, {
      ...(source.darknet.weights ? { weights: source.darknet.weights } : {}),
      ...(options.inputSize ? { inputSize: options.inputSize } : {}),
    });
  }
  return await fromTfjs(source.tfjs, {
    ...(source.outputs ? { outputs: source.outputs } : {}),
    ...(source.inputs ? { inputs: source.inputs } : {}),
    // Used only for an image input declared with unknown height and width.
    ...(options.inputSize ? { inputSize: options.inputSize } : {}),
  });
}

/**
 * Writes a file atomically: a temporary file in the target folder, then a rename, so a crash leaves
 * either the old file or the new one, never half of one.
 *
 * @param path Target path.
 * @param data Bytes or text.
 */
export async function writeAtomic(
  path: string,
  data: Uint8Array | string,
  options: { onPlaced?: (path: string) => void } = {},
): Promise<void> {
  const dir = dirname(path);
  await Deno.mkdir(dir, { recursive: true });
  // The pid in the name lets an interrupted run remove its own temporary files, and only those.
  const tmp = await Deno.makeTempFile({
    dir,
    prefix: `.${basename(path)}.${Deno.pid}.`,
    suffix: ".tmp",
  });
  try {
    if (typeof data === "string") await Deno.writeTextFile(tmp, data);
    else await Deno.writeFile(tmp, data);
    // makeTempFile creates 0600; outputs are ordinary files others may read.
    await Deno.chmod(tmp, 0o644);
    // Renamed and reported in one synchronous stretch: an interrupt handler runs only between
    // awaits, so it never finds the file in place unreported (report.html had been left behind).
    Deno.renameSync(tmp, path);
    options.onPlaced?.(path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

/**
 * The graph with `input.size` (and the channels: 3, or 1 for `gray`) written into the image input's
 * dims, and the value_info that still has a dim unknown dropped (it described the dynamic model):
 * `input.static`. The batch axis stays as it is.
 *
 * @param graph The model.
 * @param input The input config; `size` is required.
 * @returns The graph with a static image size.
 * @throws {ConfigError} Without `input.size`, or as {@linkcode imageInput} does.
 *
 * @example
 * ```ts
 * import { withStaticImageInput } from "@clipq/pipeline/runner";
 * import { emptyGraph, node } from "@clipq/onnx";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({
 *   nodes: [node({ name: "r", op: "Relu", inputs: ["x"], outputs: ["y"] })],
 *   inputs: [{ name: "x", dtype: "float32", shape: ["n", 3, "h", "w"] }],
 *   outputs: [{ name: "y", dtype: "float32", shape: ["n", 3, "h", "w"] }],
 * });
 * const s = withStaticImageInput(g, { size: [64, 48], static: true });
 * assert.deepEqual(s.inputs[0]!.shape, ["n", 3, 64, 48]);
 * assert.throws(() => withStaticImageInput(g, { static: true }), /input\.static: expected input\.size/);
 * ```
 */
export function withStaticImageInput(graph: Graph, input: InputConfig): Graph {
  if (!input.size) {
    throw new ConfigError(
      "input.static",
      "expected input.size, the [height, width] to write into the model's input; found none",
    );
  }
  const { name, spec } = imageInput(graph, input);
  const [h, w] = input.size;
  const c = channelCount(spec);
  const fixed = (shape: ValueInfo["shape"]) => {
    const s = [...(shape ?? [])];
    if (spec.layout === "NHWC") [s[1], s[2], s[3]] = [h, w, c];
    else if (spec.layout === "CHW") [s[0], s[1], s[2]] = [c, h, w];
    else [s[1], s[2], s[3]] = [c, h, w];
    if (spec.layout !== "CHW" && s[0] === undefined) s[0] = "batch";
    return s;
  };
  const known = (v: ValueInfo) => (v.shape ?? []).every((d) => typeof d === "number");
  return {
    ...graph,
    inputs: graph.inputs.map((v) => v.name === name ? { ...v, shape: fixed(v.shape) } : v),
    valueInfo: graph.valueInfo.filter(known),
  };
}

/** The image input and the preprocessing spec for it. */
export function imageInput(
  graph: Graph,
  input: InputConfig,
): { name: string; spec: PreprocessSpec; dtype: "float32" | "uint8" | "int32" } {
  const initializers = graph.initializers;
  const real = graph.inputs.filter((i) => !initializers.has(i.name));
  const name = input.name ?? real.find((i) => !(input.extra && i.name in input.extra))?.name;
  const vi = real.find((i) => i.name === name);
  if (!name || !vi) {
    // Every input also an initializer (a default value): no input is left for the images.
    const why = real.length === 0
      ? `; found none: every input has an initializer, a fixed value (${
        graph.inputs.map((i) => i.name).join(", ")
      })`
      : `${real.map((i) => i.name).join(", ")}; found ${
        name ?? "none (input.extra gives them all fixed values)"
      }`;
    throw new ConfigError(
      "input.name",
      real.length === 0
        ? `expected a model input for the images${why}`
        : `expected one of the model inputs ${why}`,
    );
  }
  // Fed twice (image batches and fixed values): onnxruntime saw the fixed values' shape.
  if (input.extra && name in input.extra) {
    throw new ConfigError(
      `input.extra.${name}`,
      `expected inputs other than the image input ${name}; found ${name}`,
    );
  }
  // Images are fed as float32, or as uint8 or int32 pixels to a model that takes them (TensorFlow
  // Object Detection API exports, MoveNet); a model claiming another type would be written out
  // unrunnable.
  if (vi.dtype !== undefined && !["float32", "uint8", "int32"].includes(vi.dtype)) {
    throw new ModelError(
      `model input "${name}": expected float32 (or uint8/int32 pixels) to feed images; found ${vi.dtype}`,
    );
  }
  const layout = input.layout ?? (vi.shape?.length === 3 ? "CHW" : "NCHW");
  // A layout of the wrong rank read the channel count off the wrong axis and blamed input.color or
  // input.size (CHW on [1, 3, 416, 416]: "expected 3 channels … found 1: set input.color to gray").
  const rank = vi.shape?.length;
  const layoutRank = layout === "CHW" ? 3 : 4;
  if (rank !== undefined && rank !== layoutRank) {
    const fits = rank === 4 ? '"NCHW" or "NHWC"' : rank === 3 ? '"CHW"' : undefined;
    throw new ConfigError(
      fits ? "input.layout" : "input.name",
      fits
        ? `expected ${fits} for input ${name} [${
          vi.shape!.join(", ")
        }] of rank ${rank}; found "${layout}", a layout of rank ${layoutRank}`
        : `expected an image input of rank 3 (CHW) or 4 (NCHW, NHWC); found ${name} [${
          vi.shape!.join(", ")
        }] of rank ${rank}`,
    );
  }
  let size = input.size;
  if (!size) {
    const s = vi.shape ?? [];
    const [h, w] = layout === "NHWC"
      ? [s[1], s[2]]
      : layout === "CHW"
      ? [s[1], s[2]]
      : [s[2], s[3]];
    if (typeof h !== "number" || typeof w !== "number" || h < 1 || w < 1) {
      throw new ConfigError(
        "input.size",
        `expected [height, width] for input ${name} whose shape is dynamic; found nothing`,
      );
    }
    size = [h, w];
  }
  // Checked here, where the config key can be named; onnxruntime would refuse the first batch
  // with a message that names neither the expected nor the found size.
  const s = vi.shape ?? [];
  const fixed = (d: unknown) => typeof d === "number" && d > 0 ? d : undefined;
  const axesOf = (l: string) =>
    (l === "NHWC" ? [s[3], s[1], s[2]] : l === "CHW" ? [s[0], s[1], s[2]] : [s[1], s[2], s[3]])
      .map(fixed);
  const [c, h, w] = axesOf(layout);
  const channels = channelCount({ color: input.color ?? "RGB" });
  const fits = ([c, h, w]: (number | undefined)[]) =>
    (c === undefined || c === channels) && (h === undefined || h === size[0]) &&
    (w === undefined || w === size[1]);
  // NHWC on an NCHW model read the channel count as the height and blamed input.size.
  if (s.length === 4 && !fits([c, h, w])) {
    const other = layout === "NHWC" ? "NCHW" : "NHWC";
    const alt = axesOf(other);
    // (Without input.size, the size itself was read through the wrong layout.)
    if (alt[0] === channels && (!input.size || fits(alt))) {
      throw new ConfigError(
        "input.layout",
        `expected "${other}" for input ${name} [${s.join(", ")}], whose ${
          other === "NCHW" ? "second" : "last"
        } axis holds its ${channels} channels; found "${layout}"`,
      );
    }
  }
  if (c !== undefined && c !== channels) {
    // A one-channel model read as RGB (or the other way round) is a color setting, not a layout.
    const key = c === 1 || channels === 1 ? "input.color" : "input.layout";
    throw new ConfigError(
      key,
      `expected ${channels} channel(s) on the channel axis of input ${name} [${
        s.join(", ")
      }] (${layout}, color ${input.color ?? "RGB"}); found ${c}${
        c === 1
          ? ': set input.color to "gray"'
          : channels === 1
          ? ': set input.color to "RGB" or "BGR"'
          : ""
      }`,
    );
  }
  if ((h !== undefined && h !== size[0]) || (w !== undefined && w !== size[1])) {
    throw new ConfigError(
      "input.size",
      `expected [${h ?? size[0]}, ${w ?? size[1]}], the fixed size of input ${name} [${
        s.join(", ")
      }]; found [${size.join(", ")}]`,
    );
  }
  // Checked with the model, before any step: a 2-entry mean used to surface at the first batch.
  const spec = resolveSpec({
    size,
    resize: input.resize ?? "stretch",
    layout,
    color: input.color ?? "RGB",
    scale: input.scale ?? 1 / 255,
    mean: input.mean ?? [0, 0, 0],
    std: input.std ?? [1, 1, 1],
  });
  const dtype = vi.dtype === "uint8" || vi.dtype === "int32" ? vi.dtype : "float32";
  if (
    dtype !== "float32" &&
    (spec.scale !== 1 || spec.mean.some((m) => m !== 0) || spec.std.some((d) => d !== 1))
  ) {
    throw new ConfigError(
      "input.scale",
      `expected scale 1, mean 0 and std 1 for input ${name}, which takes ${dtype} pixels; found scale ${spec.scale}, mean [${spec.mean}], std [${spec.std}]`,
    );
  }
  return { name, spec, dtype };
}

function extraFeeds(graph: Graph, input: InputConfig): Record<string, Tensor> {
  const feeds: Record<string, Tensor> = {};
  for (const [name, values] of Object.entries(input.extra ?? {})) {
    const vi = graph.inputs.find((i) => i.name === name);
    if (!vi) {
      throw new ConfigError(
        `input.extra.${name}`,
        `expected a model input; found none named ${name} (inputs: ${
          graph.inputs.map((i) => i.name).join(", ")
        })`,
      );
    }
    const rank = vi.shape?.length ?? 1;
    // A fixed shape takes exactly its count (onnxruntime refused it naming neither key nor count).
    const fixed = vi.shape?.every((d) => typeof d === "number" && d > 0)
      ? (vi.shape as number[]).reduce((a, d) => a * d, 1)
      : undefined;
    if (fixed !== undefined && fixed !== values.length) {
      throw new ConfigError(
        `input.extra.${name}`,
        `expected ${fixed} value(s) for input ${name} [${
          vi.shape!.join(", ")
        }]; found ${values.length}`,
      );
    }
    const dims = vi.shape && vi.shape.every((d) => typeof d === "number") &&
        vi.shape.reduce<number>((a, d) => a * (d as number), 1) === values.length
      ? vi.shape as number[]
      : [...Array(Math.max(0, rank - 1)).fill(1), values.length];
    const dtype = vi.dtype ?? "float32";
    if (dtype === "int64") {
      feeds[name] = tensor(
        "int64",
        dims,
        BigInt64Array.from(values.map((v) => BigInt(Math.round(v)))),
      );
    } else if (dtype === "int32") feeds[name] = tensor("int32", dims, Int32Array.from(values));
    else if (dtype === "float32") feeds[name] = tensor("float32", dims, Float32Array.from(values));
    else {throw new ConfigError(
        `input.extra.${name}`,
        `expected a float32/int32/int64 input; found ${dtype}`,
      );}
  }
  return feeds;
}

/**
 * Every image file the data sets would read, listed as a run lists them and checked by its first
 * bytes: what a dry run can afford without decoding. An empty folder and a text file named .png
 * passed `--dry-run` and failed the run. Sets that skip bad images are only listed.
 *
 * @param config The data sets.
 * @throws {DataError} For a folder without images or a file that is no JPEG or PNG, naming it.
 */
export async function checkImageFiles(config: Pick<Config, "data">): Promise<void> {
  for (const set of ["calibration", "evaluation"] as const) {
    const d = config.data[set];
    if (!d?.images) continue;
    const files = await filesOf(d);
    if (d.onBadImage === "skip") continue;
    for (const f of files) await checkImageHead(f);
  }
}

async function filesOf(set: DataSetConfig): Promise<string[]> {
  const list = Array.isArray(set.images) ? set.images : set.images ? [set.images] : [];
  const files: string[] = [];
  for (const p of list) {
    const st = await Deno.stat(p);
    if (st.isDirectory) files.push(...await listImages(p));
    else if (hasExtension(p)) files.push(p);
  }
  return set.limit !== undefined ? files.slice(0, set.limit) : files;
}

/**
 * Builds the step context for a graph and config.
 *
 * @param graph The loaded model.
 * @param config The config.
 * @param reporter Logger and progress.
 * @returns The context.
 */
export function createContext(
  graph: Graph,
  config: Pick<Config, "input" | "data" | "head">,
  reporter: { log: Logger; progress(label: string, total: number): Progress },
): StepContext {
  const input = config.input;
  return {
    input,
    ranges: new Map(),
    report: {},
    methods: [],
    log: reporter.log,
    progress: (label, total) => reporter.progress(label, total),
    ...(config.head ? { head: config.head } : {}),
    hasData: (set) => !!(config.data[set]?.images || config.data[set]?.npy),
    annotations: (set) => config.data[set]?.annotations,
    batches(set, options = {}) {
      const d = config.data[set];
      return (async function* (): AsyncGenerator<FeedBatch> {
        if (!d?.images && !d?.npy) {
          throw new ConfigError(
            `data.${set}.images`,
            "expected image files; found none configured",
          );
        }
        const extra = extraFeeds(graph, input);
        const label = options.label ?? set;
        // With a limit the pass ends once that many images have come out (the last batch may go
        // past it; an unreadable file skipped does not count), and its progress counts those.
        const limit = options.limit;
        const totalOf = (files: readonly string[]) =>
          limit === undefined ? files.length : Math.min(limit, files.length);
        let given = 0;
        const enough = (n: number) => limit !== undefined && (given += n) >= limit;
        const shardOf = (files: string[]) => {
          if (!options.shard) return files;
          const [k, n] = options.shard;
          const mine = files.filter((_, i) => i % n === k - 1);
          if (mine.length === 0 && files.length > 0) {
            throw new ConfigError(
              "--shard",
              `expected a shard that holds some of the ${files.length} ${set} file(s); found ${k}/${n}, which holds none`,
            );
          }
          return mine;
        };
        if (d.npy) {
          // Tensors as they are fed: no preprocessing, so no size is needed.
          const name = input.name ?? graph.inputs.find((i) =>
            !graph.initializers.has(i.name) && !(input.extra && i.name in input.extra)
          )?.name ?? "";
          const all = [...Deno.readDirSync(d.npy)].filter((e) =>
            e.isFile && e.name.endsWith(".npy")
          )
            .map((e) =>
              join(d.npy!, e.name)
            ).sort();
          if (all.length === 0) {
            throw new DataError(`${d.npy}: expected .npy files (data.${set}.npy); found none`);
          }
          const files = shardOf(d.limit !== undefined ? all.slice(0, d.limit) : all);
          const progress = reporter.progress(label, totalOf(files));
          for await (
            const b of npyBatches(files, { batchSize: config.data.calibration?.batchSize ?? 1 })
          ) {
            checkNpyFeed(graph, name, b.tensor, b.files);
            progress.tick(b.files.length);
            yield { feeds: { [name]: b.tensor, ...extra }, files: b.files };
            if (enough(b.files.length)) break;
          }
          progress.done();
          return;
        }
        const { name, spec, dtype } = imageInput(graph, input);
        const files = shardOf(await filesOf(d));
        const progress = reporter.progress(label, totalOf(files));
        for await (
          const b of imageBatches(files, spec, {
            batchSize: set === "calibration" ? config.data.calibration?.batchSize ?? 1 : 1,
            onBadImage: d.onBadImage ?? "fail",
            onWarning: (m) => reporter.log.warn(m),
          })
        ) {
          progress.tick(limit === undefined ? b.files.length + b.skipped : b.files.length);
          const image = dtype === "float32" ? b.tensor : asPixels(b.tensor, dtype);
          yield { feeds: { [name]: image, ...extra }, files: b.files, transforms: b.transforms };
          if (enough(b.files.length)) break;
        }
        progress.done();
      })();
    },
  };
}

/**
 * The calibration batch size against the image input: CHW has no batch axis, and a fixed batch
 * axis takes exactly its size (onnxruntime's refusal named neither the key nor the sizes).
 */
function checkBatchSize(graph: Graph, name: string, layout: string, batchSize: number): void {
  const key = "data.calibration.batchSize";
  if (layout === "CHW" && batchSize !== 1) {
    throw new ConfigError(
      key,
      `expected 1 for input ${name} with layout CHW (it has no batch axis); found ${batchSize}`,
    );
  }
  const n = graph.inputs.find((i) => i.name === name)?.shape?.[0];
  if (layout !== "CHW" && typeof n === "number" && n > 0 && n !== batchSize) {
    throw new ConfigError(
      key,
      `expected ${n}, the fixed batch size of input ${name}; found ${batchSize}`,
    );
  }
}

/** `head.outputs` must name the model's outputs: the quantizer keeps them float, evaluate decodes them. */
function checkHeadOutputs(graph: Graph, head: Record<string, unknown> | undefined): void {
  const outputs = head?.outputs;
  if (!Array.isArray(outputs)) return;
  const names = graph.outputs.map((o) => o.name);
  outputs.forEach((o, i) => {
    if (!names.includes(o)) {
      throw new ConfigError(
        `head.outputs[${i}]`,
        `expected one of the model outputs ${names.join(", ")}; found ${JSON.stringify(o)}`,
      );
    }
  });
}

/**
 * A configured head description against the model's fixed output shapes, before any step: anchors
 * or classes that do not fit an output used to surface only when evaluate (or the fallback)
 * decoded, after calibration and quantization had run. Zero-filled outputs of the declared shapes
 * go through the decoder with a score threshold nothing reaches, so only the shape checks run.
 */
function checkHeadShapes(
  graph: Graph,
  head: Record<string, unknown> | undefined,
  input: InputConfig,
  shapesAtSize: () => Map<string, ShapeInfo> | undefined,
): void {
  if (!head) return;
  let resolved: HeadConfig;
  try {
    resolved = resolveHead(head, { metadata: graph.metadata });
  } catch {
    return; // the steps that read the head report its keys
  }
  const outputs: Record<string, Tensor> = {};
  for (const name of resolved.outputs) {
    let dims = graph.outputs.find((o) => o.name === name)?.shape as readonly unknown[] | undefined;
    // A dynamic output (PP-OCR's [?, 1, ?, ?]) let any head pass: its shape at input.size says.
    if (!isStatic(dims) && input.size) {
      dims = shapesAtSize()?.get(name)?.shape ?? undefined;
    }
    if (!isStatic(dims)) return;
    outputs[name] = tensor("float32", dims, new Float32Array(dims.reduce((a, b) => a * b, 1)));
  }
  try {
    decodeHead({ ...resolved, nms: { ...resolved.nms, score: 2 } } as HeadConfig, outputs);
  } catch (e) {
    // Only the shape errors (which decodeHead reports under head) are this check's to raise.
    if (e instanceof ConfigError) throw e;
  }
}

const isStatic = (dims: readonly unknown[] | undefined): dims is number[] =>
  !!dims?.every((d) => typeof d === "number" && d > 0);

/**
 * At `input.size`, no node may compute an empty or negative dimension: a kernel larger than its
 * padded input ended in onnxruntime's "Invalid dimension: -7", which named no node.
 */
function checkNonEmptyShapes(
  graph: Graph,
  input: InputConfig,
  shapesAtSize: () => Map<string, ShapeInfo> | undefined,
): void {
  if (!input.size) return;
  const shapes = shapesAtSize();
  if (!shapes) return;
  for (const [i, n] of graph.nodes.entries()) {
    // Window ops only: their output sizes follow from the input's, and a bad one is the model's
    // (or input.size's) fault; other ops are left to the run.
    if (!WINDOW_OPS.has(n.op)) continue;
    const dims = n.outputs[0] ? shapes.get(n.outputs[0])?.shape : undefined;
    if (!dims?.some((d) => typeof d === "number" && d <= 0)) continue;
    throw new ModelError(
      `node "${n.name || `${n.op}#${i}`}" (${n.op}): expected positive output dims at input.size [${
        input.size.join(", ")
      }]; found [${dims.join(", ")}] (${
        n.op === "ConvTranspose"
          ? "its pads are larger than its output"
          : "its kernel is larger than its padded input"
      })`,
    );
  }
}

const WINDOW_OPS = new Set(["Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool"]);

/** Every tensor's shape with the image input at input.size and batch 1; undefined if unknown. */
function staticShapes(
  graph: Graph,
  input: InputConfig,
): Map<string, ShapeInfo> | undefined {
  try {
    const s = withStaticImageInput(graph, input);
    const { name } = imageInput(graph, input);
    const dims = s.inputs.find((v) => v.name === name)!.shape!.map((d) =>
      typeof d === "number" ? d : 1
    );
    return inferShapes(s, { inputShapes: { [name]: dims } });
  } catch {
    return undefined; // best effort: the run itself reports what does not fit
  }
}

/**
 * What a dry run can check without running a step: the model opens in onnxruntime (an unreleased
 * opset, an op it does not have, shapes that do not fit at `input.size` with `input.static`), and
 * statistics to load are whole, not one shard's.
 *
 * @param source The loaded model.
 * @param config The config.
 * @throws {ModelError} When onnxruntime refuses the model; {@linkcode ConfigError} for a shard.
 */
export async function checkBeforeSteps(source: Graph, config: Config): Promise<void> {
  const loaded: { key: string; file: string; stats: Statistics }[] = [];
  for (const [i, e] of config.entries.entries()) {
    const load = (e.options.statistics as { load?: string } | undefined)?.load;
    if (e.use === "calibrate" && load) {
      const key = `steps[${i}].statistics.load`;
      loaded.push({ key, file: load, stats: await loadWholeStatistics(load, key) });
    }
  }
  // A custom step may rewrite the model into one onnxruntime opens; normalize prunes dead nodes
  // (and folds, refusing infinite weights as the run would): what the run hands onnxruntime.
  if (config.entries.some((e) => isCustomStep(e.use))) return;
  const normalized = config.entries.some((e) => e.use === "normalize")
    ? normalizeWithReport(source).graph
    : source;
  const g = config.input.static ? withStaticImageInput(normalized, config.input) : normalized;
  // Statistics of another model hold none of this one's tensors (the run refuses them at its
  // calibrate step, by the first tensors they lack).
  const tensors = new Set([...g.inputs.map((v) => v.name), ...g.nodes.flatMap((n) => n.outputs)]);
  for (const { key, file, stats } of loaded) {
    if (stats.size > 0 && ![...stats.keys()].some((t) => tensors.has(t))) {
      throw new ConfigError(
        key,
        `expected statistics of this model's tensors; found none of them among the ${stats.size} in ${file} (saved from another model?)`,
      );
    }
  }
  // Names to keep float, against the model as the steps before quantize leave it (svd-fc and
  // channel splitting make nodes of their own, which only the run can know).
  for (const [i, e] of config.entries.entries()) {
    if (e.use === "svd-fc" || (e.use === "calibrate" && e.options.splitChannels)) break;
    const names = (e.options.exclude as { names?: string[] } | undefined)?.names;
    if (e.use === "quantize" && names) checkExcludeNames(g, names, `steps[${i}].exclude.names`);
  }
  const s = await createSession(g, { optimizationLevel: "basic", label: "the input model" });
  await s.release();
}

/**
 * A .npy batch against the model input it feeds: dtype and fixed dims, named by file (onnxruntime's
 * refusal named neither, and its hint blamed the model).
 */
function checkNpyFeed(graph: Graph, name: string, t: Tensor, files: readonly string[]): void {
  const vi = graph.inputs.find((i) => i.name === name);
  if (!vi) return;
  const file = files.length === 1
    ? files[0]
    : `${files[0]} (and the ${files.length - 1} batched with it)`;
  if (vi.dtype !== undefined && vi.dtype !== t.dtype) {
    throw new DataError(`${file}: expected ${vi.dtype} for model input ${name}; found ${t.dtype}`);
  }
  const shape = vi.shape;
  if (!shape) return;
  const fits = shape.length === t.dims.length &&
    shape.every((d, k) => typeof d !== "number" || d <= 0 || d === t.dims[k]);
  if (!fits) {
    const want = shape.map((d) => (typeof d === "number" && d > 0 ? d : "?")).join(", ");
    throw new DataError(
      `${file}: expected shape [${want}] of model input ${name}; found [${t.dims.join(", ")}]`,
    );
  }
}

/**
 * The outermost folder of a path's folders that does not exist yet (undefined when all do): what a
 * write there would create, so what a clean-up after a failed or interrupted run removes.
 *
 * @param path A file path.
 * @returns The folder, or undefined.
 *
 * @example
 * ```ts
 * import { firstMissing } from "@clipq/pipeline/runner";
 * import assert from "node:assert/strict";
 * assert.equal(firstMissing("/no-such-folder-xyz/a/b.onnx"), "/no-such-folder-xyz");
 * assert.equal(firstMissing("/tmp/b.onnx"), undefined);
 * ```
 */
export function firstMissing(path: string): string | undefined {
  let missing: string | undefined;
  for (let dir = dirname(path); dir !== dirname(dir); dir = dirname(dir)) {
    try {
      Deno.statSync(dir);
      return missing;
    } catch (e) {
      // A folder that is there but may not be looked at (Deno refuses /proc without --allow-all)
      // is no missing one: taken for missing, the probe went up to "/" and passed.
      if (!(e instanceof Deno.errors.NotFound)) return missing;
      missing = dir;
    }
  }
  return missing;
}

/**
 * The folders of every file the run writes (model, report and its HTML, saved statistics; with
 * `calibrateOnly` only `statsOut`) take a file: probed before anything runs, and by the dry run.
 *
 * @param config The config.
 * @param options Whether only statistics are written, and where.
 * @throws {ConfigError} Naming the key of a path whose folder is not writable.
 */
export async function checkTargets(
  config: Config,
  options: { calibrateOnly?: boolean; statsOut?: string } = {},
): Promise<void> {
  const targets: [string, string][] = options.calibrateOnly
    ? (options.statsOut ? [["--stats", options.statsOut]] : [])
    : writtenPaths(config);
  for (const [key, path] of targets) await checkWritable(key, path);
}

/** Probes the nearest existing folder of a path with a temporary file (removed at once). */
async function checkWritable(key: string, path: string): Promise<void> {
  const missing = firstMissing(path);
  const dir = missing ? dirname(missing) : dirname(path);
  try {
    await Deno.remove(await Deno.makeTempFile({ dir, prefix: ".clipq-probe-" }));
  } catch (e) {
    throw new ConfigError(
      key,
      `expected a writable folder for ${path}; found ${dir} not writable (${
        // Deno's own advice ("run again with the --allow-all flag") is not the user's to follow.
        e instanceof Deno.errors.NotCapable
          ? "not permitted"
          : (e as Error).message.split(":")[0]})`,
    );
  }
}

/**
 * A step names its options after itself ("quantize.exclude.names"); the config file knows them as
 * the entry's keys ("steps[1].exclude.names"), which is how load-time errors already read.
 */
function entryKeyed(e: unknown, name: string, index: number): unknown {
  if (!(e instanceof ConfigError)) return e;
  const k = e.keyPath;
  if (k !== name && !k.startsWith(`${name}.`) && !k.startsWith(`${name}[`)) return e;
  const detail = e.message.slice(k.length + 2);
  return new ConfigError(`steps[${index}]${k.slice(name.length)}`, detail, { cause: e });
}

const hasAnyData = (config: Pick<Config, "data">): boolean =>
  (["calibration", "evaluation"] as const).some((set) =>
    !!(config.data[set]?.images || config.data[set]?.npy)
  );

/**
 * Every model input but the one data feeds needs a value in `input.extra`, of the right count:
 * onnxruntime's refusal ("expected a feed for input …") came with the hint that the model was bad.
 */
function checkOtherInputs(graph: Graph, input: InputConfig): void {
  // Names and counts first: a misspelt name is the likelier reason an input looks unfed.
  extraFeeds(graph, input);
  const real = graph.inputs.filter((i) => !graph.initializers.has(i.name));
  const fed = input.name ?? real.find((i) => !(input.extra && i.name in input.extra))?.name;
  const missing = real.filter((i) => i.name !== fed && !(input.extra && i.name in input.extra));
  if (missing.length > 0) {
    throw new ConfigError(
      "input.extra",
      `expected values for every model input besides ${fed}; found none for ${
        missing.map((i) => `${i.name} [${(i.shape ?? []).join(", ")}]`).join(", ")
      }`,
    );
  }
}

/**
 * A float weight holding NaN makes every value it touches NaN: calibration then found no range
 * for those tensors, the run kept their layers float and exited 0 with a model 99 % of float's
 * size. (Infinities stay allowed: a Clip's max or an attention mask may be one.)
 */
function checkNoNaN(graph: Graph): void {
  // Weights as initializers, or as Constant nodes (PP-OCR's) until normalize lifts them.
  const weights: [string, Tensor][] = [...graph.initializers].map((
    [n, t],
  ) => [`initializer ${n}`, t]);
  for (const n of graph.nodes) {
    const a = n.attributes.value;
    if (n.op === "Constant" && a?.type === "tensor") {
      weights.push([`constant ${n.outputs[0]}${n.name ? ` (node "${n.name}")` : ""}`, a.value]);
    }
  }
  for (const [what, t] of weights) {
    const data = t.data;
    // A lone NaN scalar may be meant (a masked fill through Where); a weight is never NaN.
    if (!(data instanceof Float32Array || data instanceof Float64Array) || data.length < 2) {
      continue;
    }
    let nan = 0;
    for (let i = 0; i < data.length; i++) if (data[i] !== data[i]) nan++;
    if (nan > 0) {
      throw new ModelError(
        `${what}: expected numbers; found ${nan} NaN of its ${t.data.length} values`,
      );
    }
  }
}

/** Validates a graph between steps, naming what it is. */
function checkGraph(graph: Graph, what: string): void {
  try {
    validate(graph);
  } catch (e) {
    if (e instanceof ModelError) throw new ModelError(`${what}: ${e.message}`, { cause: e });
    throw e;
  }
}

/**
 * Checks a config against its loaded model, as a run does before its first step (and `--dry-run`
 * with it): the model validates; the image input, its preprocessing and the calibration batch size
 * fit it; every other input has a value in `input.extra`; `head.outputs` are its outputs.
 *
 * @param source The loaded model.
 * @param config The config.
 *
 * @example A size the model's fixed input cannot take
 * ```ts
 * import { checkAgainstModel } from "@clipq/pipeline/runner";
 * import { ModelBuilder } from "@clipq/onnx/builder";
 * import assert from "node:assert/strict";
 * const b = new ModelBuilder();
 * b.output(b.relu(b.input("images", [1, 3, 8, 8])), "y");
 * const config = { input: { size: [16, 16] as [number, number] }, data: { calibration: { images: "/x" } } };
 * assert.throws(() => checkAgainstModel(b.build(), config), /input\.size: expected \[8, 8\]/);
 * ```
 */
export function checkAgainstModel(
  source: Graph,
  config: Pick<Config, "input" | "data" | "head">,
): void {
  checkGraph(source, "the input model");
  // onnxruntime refused such a model with "OrtValue indexes should have been populated".
  if (source.outputs.length === 0) {
    throw new ModelError("the input model: expected at least one graph output; found none");
  }
  checkNoNaN(source);
  // The image input against the model before any step: a step may never feed images (e.g. when
  // nothing needs a range), and a mismatch would then go unnoticed into the output.
  if (config.data.calibration?.images || config.data.evaluation?.images) {
    const { name, spec } = imageInput(source, config.input);
    checkBatchSize(source, name, spec.layout, config.data.calibration?.batchSize ?? 1);
  }
  if (hasAnyData(config)) checkOtherInputs(source, config.input);
  checkHeadOutputs(source, config.head);
  // Shape inference over the whole model at input.size, once for both checks that read it.
  let shapes: { at: Map<string, ShapeInfo> | undefined } | undefined;
  const shapesAtSize = () => (shapes ??= { at: staticShapes(source, config.input) }).at;
  checkHeadShapes(source, config.head, config.input, shapesAtSize);
  checkNonEmptyShapes(source, config.input, shapesAtSize);
}

/**
 * Runs a loaded config: model → steps → output model and report.
 *
 * @param config The validated config.
 * @param options Quiet, progress, calibration sharding.
 * @returns The final graph, its bytes and the report.
 */
export async function runPipeline(config: Config, options: RunOptions = {}): Promise<RunResult> {
  const o = { ...defaults, ...options };
  const reporter = createReporter({
    quiet: o.quiet,
    tty: o.tty,
    ...(o.write ? { write: o.write } : {}),
  });
  const log = reporter.log;
  if ((o.calibrateOnly || o.mergeStats) && !config.steps.some((s) => s.name === "calibrate")) {
    throw new ConfigError(
      "steps",
      "expected a calibrate step for --calibrate-only/--merge-stats; found none",
    );
  }
  // Before anything runs: a folder that cannot take the files used to fail after the whole run,
  // with a message that named a temporary file and blamed the model.
  await checkTargets(config, o);
  // Folders missing now that the output or report would create go again if the run fails: no
  // partial output, empty folders included.
  const made = [
    ...new Set(
      [config.output, ...(config.report ? [config.report] : [])].map((p) => firstMissing(p)),
    ),
  ].filter((d): d is string => d !== undefined);
  const timings: { name: string; ms: number }[] = [];
  let t = performance.now();
  let source = await loadSource(
    config.model,
    config.input.size ? { inputSize: config.input.size } : {},
  );
  timings.push({ name: "load", ms: performance.now() - t });
  checkAgainstModel(source, config);
  if (config.input.static) source = withStaticImageInput(source, config.input);
  // Evaluation images are read by evaluate, the quantize fallback and the report's analysis; with
  // none of them they would be accepted and never opened.
  const evaluation = config.data.evaluation;
  if (
    (evaluation?.images || evaluation?.npy) && !o.calibrateOnly &&
    !(o.analyze && config.report) &&
    !config.entries.some((e) =>
      e.use === "evaluate" || (e.use === "quantize" && e.options.maxDrop !== undefined) ||
      !["normalize", "calibrate", "quantize", "svd-fc"].includes(e.use)
    )
  ) {
    log.warn(
      "data.evaluation: nothing reads these images (no evaluate step, quantize.maxDrop or report analysis)",
    );
  }
  const floatBytes = typeof config.model === "string"
    ? (await Deno.stat(config.model)).size
    : encodedSize(source);

  // A step's warnings name its options after itself too ("quantize.exclude.ops: …"); while it runs
  // they are keyed by its entry, as its errors are.
  let current: { name: string; index: number } | undefined;
  const ctx = createContext(source, config, {
    progress: (label, total) => reporter.progress(label, total),
    log: {
      info: (m) => log.info(m),
      warn: (m) => {
        const c = current;
        const own = c && (m.startsWith(`${c.name}.`) || m.startsWith(`${c.name}[`));
        log.warn(own ? `steps[${c.index}]${m.slice(c.name.length)}` : m);
      },
    },
  });
  if (o.calibrateOnly || o.mergeStats) {
    ctx.calibration = {
      ...(o.shard ? { shard: o.shard } : {}),
      ...(o.statsOut ? { statsOut: o.statsOut } : {}),
      ...(o.mergeStats ? { mergeFrom: o.mergeStats } : {}),
    };
  }
  const quantizeEntry = config.entries.find((e) => e.use === "quantize");
  if (quantizeEntry) {
    ctx.quantizePlan = quantizePlanOptions(quantizeEntry.options as QuantizeStepOptions, ctx.head);
  }
  let graph = source;
  for (const [i, step] of config.steps.entries()) {
    log.info(`step ${i + 1}/${config.steps.length}: ${step.name}`);
    t = performance.now();
    current = { name: step.name, index: i };
    const use = config.entries[i]?.use ?? step.name;
    const custom = isCustomStep(use);
    try {
      graph = await step.run(graph, ctx);
    } catch (e) {
      // A custom step's own failure is no clipq bug: it came out as clipq's internal error,
      // naming neither the entry nor the module.
      if (!(e instanceof ClipqError) && custom) throw new CustomStepError(`steps[${i}]`, use, e);
      throw entryKeyed(e, step.name, i);
    }
    // A custom step that returns no graph failed later, inside clipq, as "graph.inputs is not
    // iterable".
    const g = graph as Partial<Graph> | undefined;
    if (custom && !(Array.isArray(g?.nodes) && g?.initializers instanceof Map)) {
      throw new CustomStepError(
        `steps[${i}]`,
        use,
        new TypeError(`run() returned ${g === undefined ? "undefined" : typeof g}, not a Graph`),
      );
    }
    const ms = performance.now() - t;
    timings.push({ name: step.name, ms });
    checkGraph(graph, `the graph after step ${step.name}`);
    log.info(`  ${step.name} done in ${(ms / 1000).toFixed(2)} s`);
    if (o.calibrateOnly && step.name === "calibrate") break;
  }
  current = undefined;
  if (o.calibrateOnly) {
    return {
      graph,
      report: buildReport({ config, ctx, timings, floatBytes, int8Bytes: 0, version: VERSION }),
    };
  }

  const provenance = {
    clipq: VERSION,
    config: config.hash,
    methods: ctx.methods,
  };
  const metadata = new Map(graph.metadata);
  metadata.set(METADATA_KEYS.provenance, JSON.stringify(provenance));
  graph = { ...graph, metadata };
  let analysis: Analysis | undefined;
  if (o.analyze && config.report) {
    t = performance.now();
    analysis = await analyze(ctx.floatGraph ?? source, graph, ctx, { log });
    timings.push({ name: "analysis", ms: performance.now() - t });
  }
  const unmake = async () => {
    for (const d of made) await Deno.remove(d, { recursive: true }).catch(() => {});
  };
  let saved: SavedModel;
  try {
    await Deno.mkdir(dirname(config.output), { recursive: true });
    saved = await saveModel(config.output, graph, { onPlaced: (p) => o.onWritten?.(p) });
  } catch (e) {
    await unmake();
    throw e;
  }
  const int8Bytes = saved.bytes + (saved.external?.bytes ?? 0);
  const report = buildReport({
    config,
    ctx,
    timings,
    floatBytes,
    int8Bytes,
    version: VERSION,
    ...(analysis ? { analysis } : {}),
  });
  if (config.report) {
    try {
      const onPlaced = (p: string) => o.onWritten?.(p);
      await writeAtomic(config.report, JSON.stringify(report, null, 2) + "\n", { onPlaced });
      await writeAtomic(reportHtmlPath(config.report), renderHtml(report), { onPlaced });
    } catch (e) {
      // No partial output: without its report the run failed, so the model goes too.
      await Deno.remove(saved.path).catch(() => {});
      if (saved.external) await Deno.remove(saved.external.path).catch(() => {});
      await Deno.remove(config.report).catch(() => {});
      await unmake();
      // A full disk is the environment's, not a bug of clipq's (it had ended as an internal error).
      // Only the system's own I/O errors (they carry its error number); a bug stays a bug.
      if (e instanceof ClipqError || !/\(os error \d+\)/.test(String((e as Error)?.message))) {
        throw e;
      }
      throw new DataError(`${config.report}: cannot write the report: ${(e as Error).message}`, {
        cause: e,
      });
    }
  }
  log.info(
    `wrote ${config.output} (${(int8Bytes / 1e6).toFixed(2)} MB, ${
      (100 * int8Bytes / floatBytes).toFixed(1)
    } % of float)`,
  );
  if (config.report) {
    log.info(`wrote ${config.report} and ${reportHtmlPath(config.report)}`);
  }
  return { graph, saved, report };
}
