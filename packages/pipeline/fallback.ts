/**
 * Accuracy-aware fallback: when the int8 model loses more than `maxDrop` of its agreement with the
 * float model, the quantized layers that add the most quantization noise are reverted to float —
 * few at first, doubling, then bisected back to the smallest count that meets the target — and
 * the model is re-quantized with them excluded (the quantizer itself stays a pure transform).
 *
 * Sensitivity of a layer is the noise it adds: the noise-to-signal ratio of its output (float vs
 * int8, pooled over images) minus that of its activation input. A layer that turns 30 dB into
 * 20 dB adds 0.009; one that keeps 40 dB adds nearly nothing, wherever it sits.
 *
 * @module
 */
import type { Graph, Tensor } from "@clipq/onnx";
import { ConfigError } from "@clipq/onnx/errors";
import { toFloat64 } from "@clipq/onnx/tensor";
import {
  binarizedOverlap,
  decodeBatch,
  type Detection,
  fidelity,
  type HeadConfig,
  resolveHead,
} from "@clipq/detect";
import { compareLatency, createSession } from "@clipq/runtime";
import type { FeedBatch, StepContext } from "./step.ts";

const WEIGHTED = new Set(["Conv", "ConvTranspose", "Gemm", "MatMul"]);

/** How much quantization noise one layer adds. */
export interface LayerSensitivity {
  /** Node name (in the float graph). */
  readonly node: string;
  /** Its op type. */
  readonly op: string;
  /** Output noise-to-signal ratio Σ(x − y)² / Σx², float x vs int8 y, averaged over channels. */
  readonly outputNsr: number;
  /** The largest of its activation inputs' (0 for graph inputs). */
  readonly inputNsr: number;
  /** outputNsr − inputNsr: the noise this layer adds. */
  readonly added: number;
}

/** Options of {@linkcode layerSensitivity}. */
export interface SensitivityOptions {
  /** These node names, any op (e.g. every quantized node); the weighted layers by default. */
  layers?: readonly string[];
}

/** Mean over channels of noise/signal (channels without signal count their noise as is). */
function nsrOf(acc: { signal: Float64Array; noise: Float64Array } | undefined): number {
  if (!acc) return 0;
  let sum = 0;
  for (let c = 0; c < acc.signal.length; c++) {
    const signal = acc.signal[c]!, noise = acc.noise[c]!;
    sum += noise === 0 ? 0 : signal === 0 ? Math.min(noise, 1) : noise / signal;
  }
  return sum / acc.signal.length;
}

/**
 * Ranks nodes by the quantization noise they add (output noise-to-signal ratio minus the largest of
 * their activation inputs'), on the given feeds, most sensitive first: the weighted layers (Conv,
 * ConvTranspose, Gemm, MatMul) by default, or any listed nodes — elementwise Mul/Add with a badly
 * fitting range add noise as well as convs do.
 *
 * @param graphs The float graph and its int8 version (layer tensors keep their names in QDQ).
 * @param feeds Model feeds to measure on.
 * @param options Which layers to rank.
 * @returns One entry per layer whose output both graphs produce, most added noise first.
 *
 * @example A layer the int8 graph computes differently ranks first
 * ```ts
 * import { layerSensitivity } from "@clipq/pipeline/fallback";
 * import { emptyGraph, float32, node } from "@clipq/onnx";
 * import assert from "node:assert/strict";
 * const net = (w: number) => emptyGraph({
 *   nodes: [
 *     node({ name: "a", op: "MatMul", inputs: ["x", "w1"], outputs: ["h"] }),
 *     node({ name: "b", op: "MatMul", inputs: ["h", "w2"], outputs: ["y"] }),
 *   ],
 *   initializers: new Map([["w1", float32([1, 1], [1])], ["w2", float32([1, 1], [w])]]),
 *   inputs: [{ name: "x", dtype: "float32", shape: [1, 1] }],
 *   outputs: [{ name: "y", dtype: "float32", shape: [1, 1] }],
 * });
 * const ranked = await layerSensitivity({ float: net(1), int8: net(1.5) }, [{ x: float32([1, 1], [2]) }]);
 * assert.equal(ranked[0]?.node, "b");
 * assert.equal(ranked[0]?.added, 0.25);
 * ```
 */
export async function layerSensitivity(
  graphs: { readonly float: Graph; readonly int8: Graph },
  feeds: readonly Readonly<Record<string, Tensor>>[],
  options: SensitivityOptions = {},
): Promise<LayerSensitivity[]> {
  const wanted = options.layers ? new Set(options.layers) : undefined;
  const int8Tensors = new Set(graphs.int8.nodes.flatMap((n) => n.outputs));
  const graphInputs = new Set(graphs.float.inputs.map((i) => i.name));
  const layers = graphs.float.nodes.filter((n) =>
    (wanted ? wanted.has(n.name) : WEIGHTED.has(n.op)) && n.outputs[0] !== undefined &&
    int8Tensors.has(n.outputs[0])
  );
  const inputsOf = (n: Graph["nodes"][number]) =>
    n.inputs.filter((x) =>
      x !== "" && !graphs.float.initializers.has(x) && !graphInputs.has(x) && int8Tensors.has(x)
    );
  const taps = [...new Set(layers.flatMap((n) => [n.outputs[0]!, ...inputsOf(n)]))];
  const outputNames = new Set(graphs.float.outputs.map((o) => o.name));
  const tapped = taps.filter((t) => !outputNames.has(t));
  const few = { taps: tapped, optimizationLevel: "basic", memoryPattern: false } as const;
  const a = await createSession(graphs.float, few);
  const b = await createSession(graphs.int8, few);
  // Per channel (axis 1 of 4-D tensors): a u8 range set by a few large channels flattens the small
  // ones, which the tensor-wide ratio hides until a depthwise conv amplifies them.
  const acc = new Map<string, { signal: Float64Array; noise: Float64Array }>();
  try {
    for (const f of feeds) {
      const x = await a.run(f, { outputs: taps });
      const y = await b.run(f, { outputs: taps });
      for (const t of taps) {
        if (!x[t] || !y[t]) continue;
        const p = toFloat64(x[t]), q = toFloat64(y[t]);
        const dims = x[t].dims;
        const C = dims.length === 4 ? dims[1]! : 1;
        const inner = dims.length === 4 ? dims[2]! * dims[3]! : p.length;
        const s = acc.get(t) ?? { signal: new Float64Array(C), noise: new Float64Array(C) };
        const n = Math.min(p.length, q.length);
        for (let i = 0; i < n; i++) {
          const c = Math.floor(i / inner) % C;
          const d = p[i]! - q[i]!;
          s.signal[c] = s.signal[c]! + p[i]! * p[i]!;
          s.noise[c] = s.noise[c]! + d * d;
        }
        acc.set(t, s);
      }
    }
  } finally {
    await a.release();
    await b.release();
  }
  return layers.map((n) => {
    const outputNsr = nsrOf(acc.get(n.outputs[0]!));
    const inputNsr = Math.max(0, ...inputsOf(n).map((t) => nsrOf(acc.get(t))));
    return { node: n.name, op: n.op, outputNsr, inputNsr, added: outputNsr - inputNsr };
  }).sort((p, q) => q.added - p.added || (p.node < q.node ? -1 : 1));
}

/**
 * Lowest over images of the IoU of the float and int8 maps binarized at `threshold`, over the
 * images where the float map finds text on at least 0.1 % of its pixels: on a photo without text a
 * handful of spurious int8 pixels would make the IoU 0 and the score meaningless.
 */
function binarizedMapIou(
  a: readonly Record<string, Tensor>[],
  b: readonly Record<string, Tensor>[],
  output: string,
  threshold: number,
): number {
  let lowest = 1;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]![output], y = b[i]![output];
    if (!x || !y) continue;
    const o = binarizedOverlap(toFloat64(x), toFloat64(y), threshold);
    if (o.reference >= 0.001 * x.data.length) lowest = Math.min(lowest, o.intersection / o.union);
  }
  return lowest;
}

/**
 * The nodes to keep float so that the listed layers really run float: each layer with the ops
 * between it and its neighbouring weighted layers (back from its activation inputs, forward from
 * its outputs, through every non-weighted op). Excluding a conv alone leaves the Q/DQ pairs its
 * elementwise neighbours put on its input and output — a decomposed hard-swish plus an affine
 * block is six ops, each quantized — and those roundings are most of what the layer costs.
 *
 * @param graph The float graph.
 * @param names Node names to revert.
 * @returns The names plus their float regions, in graph order.
 *
 * @example A conv's hard-swish tail and its input's scalar affine go float with it
 * ```ts
 * import { floatRegion } from "@clipq/pipeline/fallback";
 * import { ModelBuilder } from "@clipq/onnx/builder";
 * import assert from "node:assert/strict";
 * const b = new ModelBuilder();
 * let x = b.conv(b.input("x", [1, 3, 8, 8]), { outChannels: 4, kernel: 3, pad: 1 });
 * x = b.clip(x, 0, 6);
 * x = b.conv(x, { outChannels: 4, kernel: 1 });
 * x = b.relu(x);
 * x = b.conv(x, { outChannels: 4, kernel: 1 });
 * b.output(x);
 * const g = b.build();
 * const middle = g.nodes.filter((n) => n.op === "Conv")[1]!.name;
 * const region = floatRegion(g, [middle]);
 * assert.deepEqual(region.map((n) => g.nodes.find((m) => m.name === n)!.op), ["Clip", "Conv", "Relu"]);
 * ```
 */
export function floatRegion(graph: Graph, names: readonly string[]): string[] {
  const regionOf = regionFinder(graph);
  const out = new Set<string>();
  for (const name of names) for (const n of regionOf(name)) out.add(n);
  return graph.nodes.map((n) => n.name).filter((n) => out.has(n));
}

/**
 * One layer's float region at a time over one index of the graph. Each region is walked on its
 * own: walks sharing a visited set would stop at each other's nodes and make a union depend on the
 * order of the names (a node one layer reached forward would cut short another's walk back).
 */
function regionFinder(graph: Graph): (name: string) => Set<string> {
  const producers = new Map(graph.nodes.flatMap((n) => n.outputs.map((t) => [t, n] as const)));
  const consumers = new Map<string, Graph["nodes"][number][]>();
  for (const n of graph.nodes) {
    for (const t of n.inputs) consumers.set(t, [...(consumers.get(t) ?? []), n]);
  }
  const byName = new Map(graph.nodes.map((n) => [n.name, n]));
  return (name) => {
    const region = new Set([name]);
    const start = byName.get(name);
    if (!start) return region;
    const back = start.inputs.filter((t) => !graph.initializers.has(t));
    while (back.length > 0) {
      const p = producers.get(back.pop()!);
      if (!p || WEIGHTED.has(p.op) || region.has(p.name)) continue;
      region.add(p.name);
      back.push(...p.inputs.filter((t) => !graph.initializers.has(t)));
    }
    const forward = [...start.outputs];
    while (forward.length > 0) {
      for (const c of consumers.get(forward.pop()!) ?? []) {
        if (WEIGHTED.has(c.op) || region.has(c.name)) continue;
        region.add(c.name);
        forward.push(...c.outputs);
      }
    }
    return region;
  };
}

/** Options of {@linkcode accuracyFallback}. */
export interface FallbackOptions {
  /** Largest allowed drop of the score below the float model's (score 1 = agrees with float). */
  maxDrop: number;
  /** Most layers reverted to float. */
  maxLayers?: number;
}

/** Defaults of {@linkcode FallbackOptions}. */
export const defaults = { maxLayers: 64 } satisfies Omit<FallbackOptions, "maxDrop">;

/** One re-quantization tried. */
export interface FallbackTrial {
  /** Layers kept float in this trial. */
  readonly reverted: number;
  /** Its score (1 = agrees with float). */
  readonly score: number;
}

/** Result of {@linkcode accuracyFallback}. */
export interface FallbackResult {
  /** The chosen int8 graph. */
  readonly graph: Graph;
  /** Layers reverted to float, most sensitive first. */
  readonly reverted: readonly string[];
  /** Score with every layer quantized. */
  readonly initialScore: number;
  /** Score of the chosen graph. */
  readonly score: number;
  /** Whether the chosen graph meets the target. */
  readonly met: boolean;
  /** Every re-quantization tried, in order. */
  readonly trials: readonly FallbackTrial[];
}

/** How the fallback quantizes, scores and ranks. */
export interface FallbackHooks {
  /** Quantizes the float model with these extra node names kept float. */
  quantize(exclude: readonly string[]): Graph | Promise<Graph>;
  /** Agreement of an int8 graph with the float model: 1 = identical. */
  score(graph: Graph): Promise<number>;
  /** Quantized layers, most sensitive first, for the fully quantized graph. */
  rank(graph: Graph): Promise<readonly string[]>;
}

/**
 * Reverts the most sensitive layers to float until `1 − score ≤ maxDrop`: 1, 2, 4, … layers, then
 * bisects between the last count that missed and the first that met the target. When no count up
 * to `maxLayers` meets it, the best-scoring graph tried is returned with `met: false`.
 *
 * @param hooks Quantize with exclusions, score, rank.
 * @param options Target drop and the most layers to revert.
 * @returns The chosen graph and what was reverted.
 * @throws {ConfigError} When maxDrop is not in [0, 1] or maxLayers not a positive integer.
 *
 * @example Layer "b" costs 0.1 of the score, "a" 0.01
 * ```ts
 * import { accuracyFallback } from "@clipq/pipeline/fallback";
 * import { emptyGraph } from "@clipq/onnx";
 * import assert from "node:assert/strict";
 * const cost: Record<string, number> = { a: 0.01, b: 0.1 };
 * const r = await accuracyFallback({
 *   quantize: (exclude) => emptyGraph({ name: exclude.join(",") }),
 *   score: async (g) => 1 - Object.keys(cost).filter((k) => !g.name.split(",").includes(k)).reduce((s, k) => s + cost[k]!, 0),
 *   rank: async () => ["b", "a"],
 * }, { maxDrop: 0.05 });
 * assert.deepEqual(r.reverted, ["b"]);
 * assert.equal(r.met, true);
 * ```
 */
export async function accuracyFallback(
  hooks: FallbackHooks,
  options: FallbackOptions,
): Promise<FallbackResult> {
  const o = { ...defaults, ...options };
  if (typeof o.maxDrop !== "number" || !(o.maxDrop >= 0 && o.maxDrop <= 1)) {
    throw new ConfigError("quantize.maxDrop", `expected a number in [0, 1]; found ${o.maxDrop}`);
  }
  if (!Number.isInteger(o.maxLayers) || o.maxLayers < 1) {
    throw new ConfigError(
      "quantize.maxLayers",
      `expected a positive integer; found ${o.maxLayers}`,
    );
  }
  const trials: FallbackTrial[] = [];
  const first = await hooks.quantize([]);
  const initialScore = await hooks.score(first);
  trials.push({ reverted: 0, score: initialScore });
  const ok = (s: number) => 1 - s <= o.maxDrop + 1e-12;
  if (ok(initialScore)) {
    return { graph: first, reverted: [], initialScore, score: initialScore, met: true, trials };
  }
  const order = (await hooks.rank(first)).slice(0, o.maxLayers);
  let best = { graph: first, n: 0, score: initialScore };
  const tried = new Map<number, { graph: Graph; score: number }>();
  const attempt = async (n: number) => {
    const graph = await hooks.quantize(order.slice(0, n));
    const score = await hooks.score(graph);
    trials.push({ reverted: n, score });
    tried.set(n, { graph, score });
    if (score > best.score) best = { graph, n, score };
    return ok(score);
  };
  let miss = 0;
  let hit: number | undefined;
  for (let n = 1; order.length > 0; n = Math.min(2 * n, order.length)) {
    if (await attempt(n)) {
      hit = n;
      break;
    }
    miss = n;
    if (n === order.length) break;
  }
  if (hit === undefined) {
    return {
      graph: best.graph,
      reverted: order.slice(0, best.n),
      initialScore,
      score: best.score,
      met: false,
      trials,
    };
  }
  let met: number = hit;
  while (met - miss > 1) {
    const mid: number = (met + miss) >> 1;
    if (await attempt(mid)) met = mid;
    else miss = mid;
  }
  const chosen = tried.get(met)!;
  return {
    graph: chosen.graph,
    reverted: order.slice(0, met),
    initialScore,
    score: chosen.score,
    met: true,
    trials,
  };
}

/** Options of {@linkcode stepFallback}. */
export interface StepFallbackOptions extends FallbackOptions {
  /** Images scored per trial. */
  maxImages?: number;
  /** Timed runs of the latency comparison (0 skips it). */
  latencyRuns?: number;
  /**
   * How layers are ranked: `isolated` scores the model with only that layer (and its region)
   * quantized — one extra quantize-and-score per weighted layer, but the order follows what each
   * layer costs the score; `noise` ranks by the noise each layer adds in one tapped run (fast,
   * blind to how the noise grows downstream).
   */
  rank?: "isolated" | "noise";
}

/** Defaults of {@linkcode StepFallbackOptions} besides maxDrop. */
export const stepDefaults = {
  ...defaults,
  maxImages: 16,
  latencyRuns: 10,
  rank: "isolated",
} satisfies Omit<
  StepFallbackOptions,
  "maxDrop"
>;

/** Mean over outputs of max(0, 1 − ‖y − x‖ / ‖x‖): the score without a detection head. */
function outputScore(a: Record<string, Tensor>[], b: Record<string, Tensor>[]): number {
  const sums = new Map<string, [number, number]>();
  for (let i = 0; i < a.length; i++) {
    for (const [name, t] of Object.entries(a[i]!)) {
      const u = b[i]![name];
      if (!u) continue;
      const x = toFloat64(t), y = toFloat64(u);
      const s = sums.get(name) ?? [0, 0];
      for (let k = 0; k < Math.min(x.length, y.length); k++) {
        const d = x[k]! - y[k]!;
        s[0] += x[k]! * x[k]!;
        s[1] += d * d;
      }
      sums.set(name, s);
    }
  }
  if (sums.size === 0) return 0;
  let total = 0;
  for (const [s, n] of sums.values()) {
    total += s === 0 ? (n === 0 ? 1 : 0) : Math.max(0, 1 - Math.sqrt(n / s));
  }
  return total / sums.size;
}

/**
 * The fallback as the `quantize` step runs it: scores on the evaluation images (or the
 * calibration ones) — detection agreement mAP50 with the float model when a head is configured or
 * stated in the model's metadata, otherwise 1 − relative L2 error of the outputs — ranks layers by
 * {@linkcode layerSensitivity}, and records in `ctx.report.fallback` the reverted layers, the
 * scores and the latency cost (fully int8 vs with the fallback, ORT level all).
 *
 * @param floatGraph The float model.
 * @param ctx The step context (data, head, report, log).
 * @param hooks How to quantize with extra exclusions, and which layers are quantized.
 * @param options Target drop, layer cap, images, latency runs.
 * @returns What {@linkcode accuracyFallback} chose.
 * @throws {ConfigError} When no image data is configured.
 */
export async function stepFallback(
  floatGraph: Graph,
  ctx: StepContext,
  hooks: Pick<FallbackHooks, "quantize"> & { readonly quantizedNodes: readonly string[] },
  options: StepFallbackOptions,
): Promise<FallbackResult> {
  const o = { ...stepDefaults, ...options };
  const set = ctx.hasData("evaluation") ? "evaluation" : "calibration";
  if (!ctx.hasData(set)) {
    throw new ConfigError(
      "quantize.maxDrop",
      "expected calibration or evaluation images to measure the drop on; found none",
    );
  }
  const batches: FeedBatch[] = [];
  let images = 0;
  for await (const b of ctx.batches(set, { label: "fallback: images", limit: o.maxImages })) {
    batches.push(b);
    images += b.files.length;
  }
  let head: HeadConfig | undefined;
  try {
    head = resolveHead(ctx.head, { metadata: floatGraph.metadata });
  } catch {
    head = undefined;
  }
  const size = ctx.input.size;
  // At level all, as evaluate and deployment run them: the int8 kernels themselves (at basic the
  // Q/DQ pairs ran in float around float kernels, which scored near-ties differently from
  // evaluate), and 3–5× faster per trial (NanoDet 9 images: 88 vs 406–442 ms).
  const runAll = async (g: Graph) => {
    const s = await createSession(g, { optimizationLevel: "all", memoryPattern: false });
    try {
      const out: Record<string, Tensor>[] = [];
      for (const b of batches) out.push(await s.run(b.feeds));
      return out;
    } finally {
      await s.release();
    }
  };
  const detectionsOf = (outs: Record<string, Tensor>[]): Detection[][] =>
    outs.flatMap((o, i) => {
      const b = batches[i]!;
      return decodeBatch(head!, o, {
        ...(b.transforms ? { transforms: b.transforms } : { batchSize: b.files.length }),
        ...(size ? { size } : {}),
      });
    });
  const floatOut = await runAll(floatGraph);
  // A text detector's boxes come from its binarized map, and on photos without text the few
  // spurious regions flip with any rounding (even float vs float-with-Div-as-Mul): the map is the
  // finer and steadier measure, and its boxes are not decoded at all.
  const db = head?.type === "db" ? head : undefined;
  const reference = head && !db ? detectionsOf(floatOut) : undefined;
  const score = async (g: Graph) => {
    const out = await runAll(g);
    if (db) return binarizedMapIou(floatOut, out, db.outputs[0]!, db.threshold);
    if (!reference) return outputScore(floatOut, out);
    return Math.max(0, fidelity(reference, detectionsOf(out)).ap50);
  };
  const feeds = batches.map((b) => b.feeds);
  const byName = new Map(floatGraph.nodes.map((n) => [n.name, n]));
  const weighted = hooks.quantizedNodes.filter((n) => WEIGHTED.has(byName.get(n)?.op ?? ""));
  const rank = async (g: Graph): Promise<string[]> => {
    if (o.rank === "noise") {
      // Every layer's tensors are tapped: a few images rank them well enough.
      return (await layerSensitivity({ float: floatGraph, int8: g }, feeds.slice(0, 4), {
        layers: weighted,
      })).map((l) => l.node);
    }
    // Noise adds up across layers, so reverting any one layer alone barely moves the score;
    // quantizing one layer alone shows what it costs on its own.
    const regionOf = regionFinder(floatGraph);
    const regions = new Map(weighted.map((n) => [n, regionOf(n)]));
    const alone: { node: string; score: number }[] = [];
    const bar = ctx.progress("fallback ranking", weighted.length);
    for (const [node, own] of regions) {
      // Every other layer's region goes float; this layer keeps its whole region quantized (its
      // neighbours' regions overlap it).
      const others = new Set<string>();
      for (const [other, region] of regions) {
        if (other !== node) { for (const n of region) if (!own.has(n)) others.add(n); }
      }
      alone.push({ node, score: await score(await hooks.quantize([...others])) });
      bar.tick();
    }
    bar.done();
    return alone.sort((a, b) => a.score - b.score || (a.node < b.node ? -1 : 1)).map((a) => a.node);
  };
  const quantizeWithout = (names: readonly string[]) =>
    hooks.quantize(floatRegion(floatGraph, names));
  const result = await accuracyFallback({ quantize: quantizeWithout, score, rank }, o);
  let latency: Record<string, number> | undefined;
  if (result.reverted.length > 0 && o.latencyRuns > 0 && feeds[0]) {
    const full = await createSession(await hooks.quantize([]), { optimizationLevel: "all" });
    const chosen = await createSession(result.graph, { optimizationLevel: "all" });
    try {
      const cmp = await compareLatency({ a: full, b: chosen }, feeds[0], {
        warmup: 2,
        runs: o.latencyRuns,
      });
      latency = { int8Ms: cmp.a.median, fallbackMs: cmp.b.median, slowdown: cmp.ratio };
    } finally {
      await full.release();
      await chosen.release();
    }
  }
  ctx.report.fallback = {
    maxDrop: o.maxDrop,
    metric: db
      ? "binarized-map IoU (lowest over images with text)"
      : reference
      ? "fidelity mAP50"
      : "1 - relative output error",
    images,
    initialScore: result.initialScore,
    score: result.score,
    met: result.met,
    reverted: result.reverted,
    weightedLayers: weighted.length,
    floatNodes: floatRegion(floatGraph, result.reverted),
    trials: result.trials,
    ...(latency ? { latency } : {}),
  };
  ctx.log.info(
    `  fallback: score ${result.initialScore.toFixed(4)} → ${
      result.score.toFixed(4)
    } with ${result.reverted.length} layer(s) float` +
      (latency ? ` (${latency.slowdown!.toFixed(2)}× the int8 latency)` : "") +
      (result.met ? "" : `; target drop ${o.maxDrop} not met`),
  );
  if (!result.met) {
    ctx.log.warn(
      `quantize.maxDrop ${o.maxDrop}: best score ${
        result.score.toFixed(4)
      } after reverting ${result.reverted.length} layers`,
    );
  } else if (result.reverted.length * 2 > weighted.length) {
    // Met, but with little int8 left: PP-OCRv4 det at 320² with maxDrop 0.01 on 9 photos kept
    // 54 of 64 layers float (a file 99 % of float's), the lowest per-image map IoU being the metric.
    ctx.log.warn(
      `quantize.maxDrop ${o.maxDrop}: met only with ${result.reverted.length} of ${weighted.length} weighted layers float, so the model is mostly float; a larger maxDrop, or evaluation images (data.evaluation) like the ones it will see, keep more of it int8`,
    );
  }
  return result;
}
