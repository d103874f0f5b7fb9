/**
 * Calibration benchmarks on the real PP-OCRv4 det model and real photos:
 * - calibration time (collectStatistics over every tensor the quantizer needs, and over only those
 *   clip-bounds leaves unbounded) against plain float inference over the same images, on the
 *   default sampled path (exact min/max and a fixed sample reduced inside onnxruntime) and on the
 *   exact path (`samples: "all"`: every tapped value leaves onnxruntime and is histogrammed), with
 *   the sampled path's time split into session creation, runs and histogramming;
 * - peak RSS of calibration over 16 and over 256 images (256 made from the real photos by seeded
 *   random crops and flips), each measured in its own subprocess (VmHWM), five times each,
 *   interleaved (medians compared), to show memory does not grow with the number of images; and
 *   once more reading the photo files per image, as the pipeline reads a folder.
 *
 * Run alone: `deno run -A tools/bench/calibrate.ts [--quick]`.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { loadModel } from "@clipq/onnx/io";
import { normalize } from "@clipq/onnx/normalize";
import type { Graph, Tensor } from "@clipq/onnx";
import { clipBounds, collectStatistics, Histogram } from "@clipq/calibrate";
// The bench splits the sampled path's time by stage, so it builds that path's graph itself.
import {
  histogramSamples,
  type SamplingPlan,
  samplingPlan,
} from "../../packages/calibrate/_sampling.ts";
import { defaults as collectDefaults } from "@clipq/calibrate/collect";
import { planQuantization } from "@clipq/quantize";
import { createSession } from "@clipq/runtime";
import {
  imageBatches,
  preprocess,
  type PreprocessSpec,
  randomCropFlip,
  readImage,
} from "@clipq/data";
import type { RgbImage } from "@clipq/data";
import { fromDarknet, fromTfjs } from "@clipq/convert";
import {
  darknetCfg,
  darknetPhotos,
  humanModel,
  nanodetPreprocessing,
  ppocrDetPreprocessing,
  ppocrModel,
  skimagePhoto,
} from "../assets.ts";
import type { BenchOptions, BenchResult } from "./types.ts";

function spec(size: number): PreprocessSpec {
  return ppocrDetPreprocessing([size, size]);
}

async function photoFiles(): Promise<string[]> {
  return [await skimagePhoto("page.png"), await skimagePhoto("text.png"), ...await darknetPhotos()];
}

async function photos(): Promise<RgbImage[]> {
  return Promise.all((await photoFiles()).map((f) => readImage(f)));
}

async function model(): Promise<Graph> {
  return normalize(await loadModel(await ppocrModel("det")));
}

/** `count` seeded crops/flips of the real photos, preprocessed one at a time (one in memory). */
async function* augmented(
  images: readonly RgbImage[],
  count: number,
  size: number,
): AsyncGenerator<Record<string, Tensor>> {
  for (let i = 0; i < count; i++) {
    const image = randomCropFlip(images[i % images.length]!, { seed: i + 1 });
    const x = preprocess(image, spec(size)).tensor;
    // The crop (0.1–1.3 MB, a random size each time) is this generator's own garbage: left to
    // the garbage collector, dozens of them of different sizes died between collections and
    // fragmented the allocator's main heap, +15–20 MiB over 256 images that calibration never
    // allocated (with the same feeds every time, or uncropped photos, RSS stayed flat).
    (image.data.buffer as ArrayBuffer).transfer(0);
    yield { x };
  }
}

function peakRssBytes(): number {
  const status = Deno.readTextFileSync("/proc/self/status");
  const kb = Number(/VmHWM:\s+(\d+)\s+kB/.exec(status)?.[1] ?? NaN);
  return kb * 1024;
}

/** The child process: calibrate over `count` images and print the peak RSS as JSON. */
async function rssChild(count: number, size: number): Promise<void> {
  const graph = await model();
  const tensors = planQuantization(graph).activations;
  const images = await photos();
  const t0 = performance.now();
  // The peak after the small run's images and after twice as many, in this same process: what
  // the rest of the run adds, free of the setup's spread between processes.
  let peakRssAt16 = NaN, peakRssAt32 = NaN;
  await collectStatistics(graph, augmented(images, count, size), {
    tensors,
    onProgress: (p) => {
      if (p.items === 16) peakRssAt16 = peakRssBytes();
      if (p.items === 32) peakRssAt32 = peakRssBytes();
    },
  });
  console.log(JSON.stringify({
    count,
    peakRss: peakRssBytes(),
    peakRssAt16,
    peakRssAt32,
    ms: performance.now() - t0,
  }));
}

/**
 * The child process for the file path: calibrate over `count` images read from the photo files
 * one by one (cycled), as the pipeline reads a folder, and print the peak RSS after 16, 64 and all
 * of them as JSON.
 */
async function rssFilesChild(count: number, size: number): Promise<void> {
  const graph = await model();
  const tensors = planQuantization(graph).activations;
  const files = await photoFiles();
  const cycled = Array.from({ length: count }, (_, i) => files[i % files.length]!);
  const peaks: Record<string, number> = {};
  const feeds = async function* () {
    for await (const b of imageBatches(cycled, spec(size))) yield { x: b.tensor };
  };
  await collectStatistics(graph, feeds(), {
    tensors,
    onProgress: (p) => {
      if (p.items === 16 || p.items === 64) peaks[`peakRssAt${p.items}`] = peakRssBytes();
    },
  });
  console.log(JSON.stringify({ count, peakRss: peakRssBytes(), ...peaks }));
}

interface RssRun {
  peakRss: number;
  peakRssAt16: number;
  peakRssAt32: number;
  ms: number;
}

async function measureRss<T = RssRun>(
  count: number,
  size: number,
  child = "--rss-child",
): Promise<T> {
  const script = fileURLToPath(import.meta.url);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, child, String(count), String(size)],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim().split("\n").at(-1) ?? "";
  if (!out.success) {
    throw new Error(
      `calibration RSS child (${count} images) failed: ${new TextDecoder().decode(out.stderr)}`,
    );
  }
  return JSON.parse(text);
}

/** Each item of an async iterable, mapped. */
async function* mapAsync<T, U>(source: AsyncIterable<T>, f: (x: T) => U): AsyncGenerator<U> {
  for await (const x of source) yield f(x);
}

/**
 * Session settings of plain inference: calibration's own (no memory plan, whose second run
 * allocates afresh: a few runs pay for fresh memory once, not twice), so that a ratio compares
 * the work calibration adds and not a setting plain inference could share.
 */
const PLAIN = { memoryPattern: false } as const;

/** Plain float inference over the feeds, session creation included (the baseline of every ratio). */
async function plainInference(
  graph: Graph,
  feeds: Iterable<Record<string, Tensor>> | AsyncIterable<Record<string, Tensor>>,
): Promise<void> {
  const s = await createSession(graph, PLAIN);
  for await (const f of feeds) await s.run(f);
  await s.release();
}

/** The sampling graph collectStatistics builds by default for these tensors and feeds. */
function defaultPlan(
  graph: Graph,
  feeds: Record<string, Tensor>[],
  tensors: readonly string[],
): SamplingPlan {
  return samplingPlan(graph, {
    tensors: tensors.filter((x) => x !== "x"),
    samples: collectDefaults.samples as number,
    seed: 0,
    inputDims: { x: feeds[0]!.x!.dims },
  });
}

/** The sampled path by stage (creation, runs, histograms) next to plain inference's stages. */
async function stages(
  graph: Graph,
  feeds: Record<string, Tensor>[],
  tensors: readonly string[],
  best: Map<string, number>,
): Promise<void> {
  const keep = (key: string, v: number) => best.set(key, Math.min(best.get(key) ?? Infinity, v));
  let t = performance.now();
  const plain = await createSession(graph, PLAIN);
  keep("floatCreate", performance.now() - t);
  t = performance.now();
  for (const f of feeds) await plain.run(f);
  keep("floatRuns", performance.now() - t);
  await plain.release();
  t = performance.now();
  const plan = defaultPlan(graph, feeds, tensors);
  const session = await createSession(plan.graph, PLAIN);
  keep("sampledCreate", performance.now() - t);
  t = performance.now();
  const outputs: Record<string, Tensor>[] = [];
  for (const f of feeds) outputs.push(await session.run(f, { outputs: plan.fetch }));
  keep("sampledRuns", performance.now() - t);
  await session.release();
  t = performance.now();
  const names = [...plan.tensors, ...plan.derived].map((x) => x.name);
  const stats = new Map(names.map((n) => [n, new Histogram()]));
  const scratch = new Map<string, Float32Array>();
  for (const out of outputs) histogramSamples(plan, out, { stats, scratch, model: graph.name });
  keep("sampledHistogram", performance.now() - t);
}

/**
 * Kernel time per image by op type, from onnxruntime's profiler, of the float model and of the
 * sampling graph: what the added nodes cost inside the runs, free of the machine's noise.
 */
async function kernelMs(
  graph: Graph,
  feeds: Record<string, Tensor>[],
  plan: SamplingPlan,
): Promise<Record<string, number>> {
  const profile = async (g: Graph, outputs?: string[]) => {
    const s = await createSession(g, { profile: true });
    for (const f of feeds) await s.run(f, outputs ? { outputs } : {});
    const p = await s.endProfiling();
    await s.release();
    return p;
  };
  const plain = await profile(graph), sampled = await profile(plan.graph, plan.fetch);
  const op = (name: string) => sampled.ops.find((o) => o.op === name)?.ms ?? 0;
  const r = (v: number) => Number(v.toFixed(2));
  return {
    floatKernelMsPerImage: r(plain.totalMs),
    sampledKernelMsPerImage: r(sampled.totalMs),
    reduceMinMsPerImage: r(op("ReduceMin")),
    reduceMaxMsPerImage: r(op("ReduceMax")),
    sliceMsPerImage: r(op("Slice")),
    flattenMsPerImage: r(op("Flatten")),
  };
}

/**
 * Calibration (every tensor the quantizer asks for, default sampling) against plain inference over
 * the same 9 photos held in memory, for the bench's other models: session creation included on
 * both sides, best of `reps` interleaved passes. How much calibration adds depends on how much
 * the model computes per tapped value: conv-heavy models hide it, light ones at low resolution
 * do not.
 */
async function perModel(reps: number): Promise<Record<string, number>> {
  const images = await photos();
  const yolo = async (name: string) =>
    normalize(
      fromDarknet(await Deno.readTextFile(await darknetCfg(name)), {
        inputSize: [416, 416],
        seed: 1,
      }),
    );
  // Plain RGB in [0, 1], stretched: NanoDet-m's preprocessing, and darknet's.
  const plain416: PreprocessSpec = nanodetPreprocessing([416, 416]);
  const cases: [string, () => Promise<Graph>, PreprocessSpec][] = [
    ["yolov3_416", () => yolo("yolov3"), plain416],
    ["yolov3Tiny_416", () => yolo("yolov3-tiny"), plain416],
    [
      "nanodet_416",
      async () => normalize(await fromTfjs(await humanModel("nanodet"))),
      plain416,
    ],
    ["ppocrDet_640", model, spec(640)],
  ];
  const out: Record<string, number> = {};
  for (const [key, load, pre] of cases) {
    const graph = await load();
    const input = graph.inputs[0]!.name;
    const feeds = images.map((im) => ({ [input]: preprocess(im, pre).tensor }));
    const tensors = planQuantization(graph).activations;
    let float = Infinity, calibration = Infinity, sampleExtremes = Infinity;
    for (let r = 0; r < reps; r++) {
      let t = performance.now();
      await plainInference(graph, feeds);
      float = Math.min(float, performance.now() - t);
      t = performance.now();
      await collectStatistics(graph, feeds, { tensors });
      calibration = Math.min(calibration, performance.now() - t);
      t = performance.now();
      await collectStatistics(graph, feeds, { tensors, extremes: "sample" });
      sampleExtremes = Math.min(sampleExtremes, performance.now() - t);
    }
    out[`${key}FloatMs`] = Math.round(float);
    out[`${key}CalibrationMs`] = Math.round(calibration);
    out[`${key}Tensors`] = tensors.length;
    out[`${key}Ratio`] = Number((calibration / float).toFixed(2));
    out[`${key}SampleExtremesMs`] = Math.round(sampleExtremes);
    out[`${key}SampleExtremesRatio`] = Number((sampleExtremes / float).toFixed(2));
  }
  return out;
}

/** The child process: plain inference and the exact path (`samples: "all"`), best of `reps`. */
async function exactChild(size: number, reps: number): Promise<void> {
  const graph = await model();
  const feeds = (await photos()).map((im) => ({ x: preprocess(im, spec(size)).tensor }));
  const tensors = planQuantization(graph).activations;
  const bounds = clipBounds(graph, { inputs: { x: spec(size) } });
  const unbounded = tensors.filter((t) => !bounds.ranges.has(t));
  const warm = await createSession(graph);
  await warm.run(feeds[0]!);
  await warm.release();
  const best: Record<string, number> = {
    exactFloat: Infinity,
    all: Infinity,
    allUnbounded: Infinity,
  };
  const time = async (key: string, f: () => Promise<unknown>) => {
    const t = performance.now();
    await f();
    best[key] = Math.min(best[key]!, performance.now() - t);
  };
  for (let r = 0; r < reps; r++) {
    await time("exactFloat", () => plainInference(graph, feeds));
    await time("all", () => collectStatistics(graph, feeds, { tensors, samples: "all" }));
    await time(
      "allUnbounded",
      () => collectStatistics(graph, feeds, { tensors: unbounded, samples: "all" }),
    );
  }
  console.log(JSON.stringify(best));
}

async function measureExact(size: number, reps: number): Promise<Record<string, number>> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      fileURLToPath(import.meta.url),
      "--exact-child",
      String(size),
      String(reps),
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`exact calibration child failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1) ?? "");
}

/**
 * Runs the calibration benchmarks.
 *
 * @param options `quick` for a smoke run (smaller input, fewer images).
 * @returns Calibration time vs float inference, and peak RSS at few vs many images.
 */
export async function run(options: BenchOptions): Promise<BenchResult[]> {
  const size = options.quick ? 128 : 320;
  const graph = await model();
  const images = await photos();
  const feeds = images.map((im) => ({ x: preprocess(im, spec(size)).tensor }));
  const plan = planQuantization(graph);
  const bounds = clipBounds(graph, { inputs: { x: spec(size) } });
  const unbounded = plan.activations.filter((t) => !bounds.ranges.has(t));

  // Warm up the native library and the file cache once so neither side pays for it.
  const warm = await createSession(graph);
  await warm.run(feeds[0]!);
  await warm.release();

  const reps = options.quick ? 1 : 3;
  const best = new Map<string, number>();
  const time = async (key: string, f: () => Promise<unknown>) => {
    const t = performance.now();
    await f();
    best.set(key, Math.min(best.get(key) ?? Infinity, performance.now() - t));
  };
  const tensors = plan.activations;
  // The same from the image files, as the pipeline reads a folder: decoding and preprocessing
  // each image is JavaScript that costs more than the model's run here.
  const photoPaths = await photoFiles();
  const fromFiles = () => mapAsync(imageBatches(photoPaths, spec(size)), (b) => ({ x: b.tensor }));
  for (let r = 0; r < reps; r++) {
    // Interleaved, best of runs: the machine is shared, and each figure gets the same chances.
    await time("float", () => plainInference(graph, feeds));
    await time("sampled", () => collectStatistics(graph, feeds, { tensors }));
    // The sample's extremes, as the histogram methods collect them (they read only the counts):
    // over every tensor, and over the tensors clip-bounds leaves unbounded, which is what the
    // pipeline's default (clip-bounds with a percentile fallback) collects.
    await time(
      "sampleExtremes",
      () => collectStatistics(graph, feeds, { tensors, extremes: "sample" }),
    );
    await time(
      "sampleExtremesUnbounded",
      () => collectStatistics(graph, feeds, { tensors: unbounded, extremes: "sample" }),
    );
    await time("sampledUnbounded", () => collectStatistics(graph, feeds, { tensors: unbounded }));
    await stages(graph, feeds, tensors, best);
    await time("filesFloat", () => plainInference(graph, fromFiles()));
    await time("filesSampled", () => collectStatistics(graph, fromFiles(), { tensors }));
  }
  // The exact path in a fresh process against its own plain runs: after the sampled passes, the
  // same process ran it 1.5–2.5× slower (its ~100 MB of outputs per image meet a heap shaped by
  // what ran before), which says nothing about the path itself.
  const sampled = defaultPlan(graph, feeds, tensors);
  const kernels = await kernelMs(graph, feeds, sampled);
  const exact = await measureExact(size, reps);
  for (const [k, v] of Object.entries(exact)) best.set(k, v);
  const ms = (k: string) => best.get(k)!;
  const floatMs = ms("float");
  const ratio = (k: string) => Number((ms(k) / floatMs).toFixed(2));
  const few = options.quick ? 4 : 16, many = options.quick ? 16 : 256;
  const rssSize = options.quick ? 96 : 160;
  // Each child's peak varies by ±15 MiB from run to run with the setup alone (loading the model
  // and photos, creating the session: garbage-collection timing, allocator arenas), more than
  // calibration itself adds: the median of interleaved runs of each count is compared.
  const rssReps = options.quick ? 1 : 5;
  const fewRuns: RssRun[] = [], manyRuns: RssRun[] = [];
  for (let r = 0; r < rssReps; r++) {
    fewRuns.push(await measureRss(few, rssSize));
    manyRuns.push(await measureRss(many, rssSize));
  }
  // The pipeline's own path: each image read from its file (JPEG decoding's garbage included).
  const files = await measureRss<{ peakRss: number; peakRssAt16?: number; peakRssAt64?: number }>(
    many,
    rssSize,
    "--rss-files-child",
  );
  const median = (runs: RssRun[]) =>
    [...runs].sort((x, y) => x.peakRss - y.peakRss)[runs.length >> 1]!;
  const a = median(fewRuns), b = median(manyRuns);
  const mib = (runs: RssRun[]) => runs.map((x) => Math.round(x.peakRss / 2 ** 20)).join(" ");
  const perImage = [...sampled.tensors, ...sampled.derived].reduce((a, p) => a + p.population, 0);
  const sampledPerImage = sampled.tensors.reduce((a, p) => a + p.sampled, 0);
  const round = (k: string) => Math.round(ms(k));
  const models = options.quick ? undefined : await perModel(reps);
  return [
    {
      name:
        `calibration time vs float inference (PP-OCRv4 det ${size}×${size}, ${feeds.length} real photos)`,
      metrics: {
        floatMs: Math.round(floatMs),
        calibrationMs: round("sampled"),
        ratio: ratio("sampled"),
        sampleExtremesMs: round("sampleExtremes"),
        sampleExtremesRatio: ratio("sampleExtremes"),
        sampleExtremesUnboundedOnlyMs: round("sampleExtremesUnbounded"),
        sampleExtremesRatioUnboundedOnly: ratio("sampleExtremesUnbounded"),
        tensors: tensors.length,
        calibrationUnboundedOnlyMs: round("sampledUnbounded"),
        ratioUnboundedOnly: ratio("sampledUnbounded"),
        tensorsUnbounded: unbounded.length,
        exactFloatMs: round("exactFloat"),
        exactCalibrationMs: round("all"),
        exactRatio: Number((ms("all") / ms("exactFloat")).toFixed(2)),
        exactUnboundedOnlyMs: round("allUnbounded"),
        exactRatioUnboundedOnly: Number((ms("allUnbounded") / ms("exactFloat")).toFixed(2)),
        valuesPerImage: perImage,
        sampledValuesPerImage: sampledPerImage,
        reducedTensors: sampled.tensors.filter((t) => t.min !== undefined).length,
        wholeTensors: sampled.tensors.filter((t) => t.min === undefined).length,
        derivedTensors: sampled.derived.length,
        floatGraphNodes: graph.nodes.length,
        calibrationGraphNodes: sampled.graph.nodes.length,
        floatCreateMs: round("floatCreate"),
        floatRunsMs: round("floatRuns"),
        sampledCreateMs: round("sampledCreate"),
        sampledRunsMs: round("sampledRuns"),
        sampledHistogramMs: round("sampledHistogram"),
        filesFloatMs: round("filesFloat"),
        filesCalibrationMs: round("filesSampled"),
        filesRatio: Number((ms("filesSampled") / ms("filesFloat")).toFixed(2)),
        ...kernels,
        goalRatio: 1.2,
      },
      notes: "Same images, optimization level all for both; best of runs, session creation " +
        `included. Default path (samples ${collectDefaults.samples}): each tapped tensor with ` +
        "more values per image is flattened and reduced inside onnxruntime to its exact min and " +
        "max (ReduceMin/ReduceMax) and every k-th value (strided Slice), with the graph ordered " +
        "so each tensor's reductions run right after it " +
        `(${sampledPerImage} of ${perImage} values per image leave onnxruntime); a smaller ` +
        "tensor leaves whole and its min and max are read in JavaScript (wholeTensors); a tensor " +
        "that is a monotone elementwise function of another, directly or through untapped " +
        "steps (each hard-swish's Clip(x + 3), scalar Mul/Add/Div, Relu), is read off that " +
        "one's sample, min and max (derivedTensors). What is left over plain inference, " +
        "measured (the *Ms stages, best of runs): session creation grows with the nodes added " +
        "(calibrationGraphNodes vs floatGraphNodes; sampledCreateMs vs floatCreateMs); the runs " +
        "pay two reduction passes over every reduced value, a Flatten that copies, and a " +
        "strided Slice whose sampled values are each a cache line of their own (sampledRunsMs " +
        "vs floatRunsMs; by op, from onnxruntime's profiler: *KernelMsPerImage, " +
        "reduceMin/reduceMax/slice/flattenMsPerImage); the JavaScript histograms of the " +
        "samples (sampledHistogramMs) and of the input image (sampled in JavaScript the same " +
        "way) overlap the next run but share the cores with it. " +
        "Exact min/max needs the two passes; onnxruntime has no single min-max op. " +
        "sampleExtremes*: the sample's extremes instead, as the histogram methods collect them; " +
        "*UnboundedOnly: only the tensors clip-bounds leaves unbounded, and with the sample's " +
        "extremes what the pipeline's default (clip-bounds with a percentile fallback) collects. " +
        "The exact " +
        'path (samples "all") ships every tapped value out (onnxruntime keeps them all alive ' +
        "to the end of the run) and histograms each; it is timed in a fresh process against that " +
        "process's own plain runs (exactFloatMs). files*: the same images read from their " +
        "files (2 PNGs, 7 JPEGs) for every pass, as the pipeline reads a folder (filesRatio). " +
        "Reading the next image while the current one runs measured no gain on 2 cores: " +
        "onnxruntime's two threads already occupy both.",
    },
    ...(models
      ? [{
        name: "calibration time vs float inference by model (9 real photos in memory)",
        metrics: { ...models, goalRatio: 1.2 },
        notes:
          "Every tensor the quantizer asks for (planQuantization), default sampling, against " +
          "plain inference at optimization level all over the same 9 photos (2 PNGs, 7 JPEGs) " +
          `preprocessed in memory; session creation included on both sides, best of ${reps} ` +
          "interleaved passes. YOLOv3 and PP-OCRv4 det at 640 compute enough per tapped value " +
          "to hide the reductions and the histograms; NanoDet and YOLOv3-tiny at 416 and " +
          "PP-OCRv4 det at 320 (the row above) do not. A LeakyRelu's input is read off its " +
          "output (see @clipq/calibrate's _derive.ts), so tapping it no longer splits the conv " +
          "from its LeakyRelu. *Ratio: exact extremes (ReduceMin and ReduceMax over every " +
          "value, as minmax needs); *SampleExtremesRatio: the sample's extremes, as the " +
          "pipeline collects for the histogram methods (percentile, mse, entropy, aciq; its " +
          "default is clip-bounds with a percentile fallback), which read only the counts.",
      }]
      : []),
    {
      name: `calibration peak RSS, ${few} vs ${many} images (PP-OCRv4 det ${rssSize}×${rssSize})`,
      metrics: {
        [`peakRssMiB${few}`]: Math.round(a.peakRss / 2 ** 20),
        [`peakRssMiB${many}`]: Math.round(b.peakRss / 2 ** 20),
        growth: Number((b.peakRss / a.peakRss - 1).toFixed(3)),
        // The same comparison inside each long run (the 16th image's peak vs the last's): the
        // spread of what the same setup takes in different processes drops out.
        ...(many > 16 && manyRuns.every((r) => Number.isFinite(r.peakRssAt16))
          ? {
            [`growthInProcess16To${many}`]: Number(
              (manyRuns.map((r) => r.peakRss / r.peakRssAt16 - 1).sort((x, y) => x - y)[
                manyRuns.length >> 1
              ]!).toFixed(3),
            ),
          }
          : {}),
        ...(Number.isFinite(b.peakRssAt32)
          ? { [`growthAfter32Of${many}`]: Number((b.peakRss / b.peakRssAt32 - 1).toFixed(3)) }
          : {}),
        goalGrowth: 0.1,
        ...(files.peakRssAt16
          ? { filesPeakRssMiB16: Math.round(files.peakRssAt16 / 2 ** 20) }
          : {}),
        ...(files.peakRssAt64
          ? { filesPeakRssMiB64: Math.round(files.peakRssAt64 / 2 ** 20) }
          : {}),
        [`filesPeakRssMiB${many}`]: Math.round(files.peakRss / 2 ** 20),
        ...(files.peakRssAt64
          ? {
            [`filesGrowth64To${many}`]: Number((files.peakRss / files.peakRssAt64 - 1).toFixed(3)),
          }
          : {}),
        [`peakRssMiB${few}Runs`]: mib(fewRuns),
        [`peakRssMiB${many}Runs`]: mib(manyRuns),
        [`ms${few}`]: Math.round(a.ms),
        [`ms${many}`]: Math.round(b.ms),
      },
      notes: `${many} images are seeded random crops/flips of the 9 real photos; each count runs ` +
        `${rssReps}× in its own process, interleaved, reporting VmHWM (whole process: model and ` +
        "photos loaded, session created, calibration); the medians are compared (*Runs: each " +
        "run's peak). growthAfter32 is what the images after the 32nd add to the median run's " +
        `peak; growthInProcess16To${many} compares the peak after the 16th image with the final ` +
        "one inside each long run (median), free of the ±15–25 MiB the same setup varies by " +
        "between processes. Calibration frees each batch's onnxruntime outputs as soon as they are " +
        "histogrammed (left to the garbage collector they piled up to ~60 MiB and fragmented the " +
        "allocator's heap), its derived samples allocate no heap numbers (their scavenges grew " +
        "V8's young generation), and the crop generator frees its random-size crops (they " +
        "fragmented the main heap by 15–20 MiB over 256 images). The photos are decoded once, " +
        "before calibration. files*: one more process calibrates reading the 9 photo files per " +
        "image (7 JPEGs, cycled), as the pipeline reads a folder. JPEGs decode in mozjpeg's " +
        "WebAssembly memory, which grows to the largest image once; with jpeg-js, which left a " +
        "few MB of small buffers per JPEG for the garbage collector, the peak climbed to " +
        "295–303 MiB by the 64th image and 304–309 at 256. What the images after the 64th add " +
        "is filesGrowth64To*.",
    },
  ];
}

if (import.meta.main) {
  const i = Deno.args.indexOf("--rss-child");
  const e = Deno.args.indexOf("--exact-child");
  const f = Deno.args.indexOf("--rss-files-child");
  if (i >= 0) await rssChild(Number(Deno.args[i + 1]), Number(Deno.args[i + 2]));
  else if (f >= 0) await rssFilesChild(Number(Deno.args[f + 1]), Number(Deno.args[f + 2]));
  else if (e >= 0) await exactChild(Number(Deno.args[e + 1]), Number(Deno.args[e + 2]));
  else {
    console.log(
      JSON.stringify(await run({ quick: Deno.args.includes("--quick") }), null, 2),
    );
  }
}
