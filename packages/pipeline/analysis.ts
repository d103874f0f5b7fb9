/**
 * Float vs int8 measurements for the report: per-layer SQNR on real images and ORT latency.
 *
 * The SQNR sums come from one graph that holds both models side by side (the int8 one renamed),
 * reading the same inputs, with each compared layer reduced inside onnxruntime to Σx² and
 * Σ(x − y)²: only two numbers per layer leave it. Fetching the layers whole from two sessions
 * copied every value of every compared layer out of onnxruntime and into float64 in JavaScript:
 * on PP-OCRv4 det at 640² that was 7 of the quick start's 12.5 s. Models the side-by-side graph
 * cannot hold (subgraphs, opsets that cannot be matched) are compared the old way.
 *
 * @module
 */
import { freshName, type Graph, type Node, node, opsetOf, type Tensor } from "@clipq/onnx";
import { toFloat64 } from "@clipq/onnx/tensor";
import { inferShapes } from "@clipq/onnx/shapes";
import { upgradeOpset } from "@clipq/onnx/upgrade";
import {
  compareLatency,
  createSession,
  measureLatency,
  profileRuns,
  type ProfileSummary,
  weightedShare,
} from "@clipq/runtime";
import type { FeedBatch, Logger, StepContext } from "./step.ts";

/** SQNR of one tensor, float vs int8, over the analysed images. */
export interface LayerSqnr {
  /** Node that produces the tensor in the float graph. */
  readonly node: string;
  readonly op: string;
  readonly tensor: string;
  /** 10·log10(Σx² / Σ(x − y)²) in dB; 200 when identical. */
  readonly sqnr: number;
}

/** Latency summary of one model, ms. */
export interface LatencySummary {
  readonly median: number;
  readonly min: number;
  readonly mean: number;
}

/** Kernel time a run of one model, from onnxruntime's profiler (ms). */
export interface KernelTime {
  /** Convolutions, matmuls and gemms, in any of their float or int8 kernels. */
  readonly weightedMs: number;
  /** Every other kernel: activations apart from their convs, Q/DQ, concats, resizes … */
  readonly otherMs: number;
  /** The slowest op types (at most 8), as onnxruntime names its kernels. */
  readonly ops: readonly { readonly op: string; readonly ms: number; readonly count: number }[];
}

/** ORT latency of both models, and where each spends it. */
export interface LatencyAnalysis {
  readonly float: LatencySummary;
  readonly int8: LatencySummary;
  /** Float median over int8 median. */
  readonly speedup: number;
  /** Kernel time by op type, each model profiled in a session of its own after the timing. */
  readonly kernels?: { readonly float: KernelTime; readonly int8: KernelTime };
}

/** Result of {@linkcode analyze}. */
export interface Analysis {
  /** Images the SQNR was measured on, and from which set. */
  readonly images: number;
  /** The set the images came from. */
  readonly dataSet?: "calibration" | "evaluation";
  /** Per-layer SQNR in graph order. */
  readonly layers: LayerSqnr[];
  /** SQNR of each graph output. */
  readonly outputs: LayerSqnr[];
  /** ORT latency at optimization level "all", one image. */
  readonly latency?: LatencyAnalysis;
  /** Why a measurement was skipped. */
  readonly notes: string[];
}

/** Options of {@linkcode analyze}. */
export interface AnalyzeOptions {
  /** Images to measure SQNR on. */
  maxImages?: number;
  /** Timed latency runs per model, at least (more for a fast model, see {@linkcode latencyPlan}). */
  runs?: number;
  /** Untimed runs first. */
  warmup?: number;
  log?: Logger;
}

/** Default analysis options. */
export const defaults = { maxImages: 3, runs: 8, warmup: 2 } satisfies AnalyzeOptions;

/**
 * How the report times the two models: in turns, blocks of at least 50 ms, until each has at least
 * `runs` runs and 300 ms of them (at most 400 runs). Each model timed 8 runs in a row, one after
 * the other, put BlazeFace (a 3 ms model) anywhere from 0.35 to 1.12× float's speed over five
 * repeats, where blocks of 50 in turn gave 0.71–0.80× every time; a slow model keeps `runs`.
 *
 * @param msPerRun The slower model's time per run, from its warm-up.
 * @param runs The least number of timed runs per model.
 * @returns Timed runs per model and runs per turn.
 *
 * @example A 3 ms model gets 100 runs in blocks of 17; a 40 ms one keeps 8, in blocks of 5
 * ```ts
 * import { latencyPlan } from "@clipq/pipeline/analysis";
 * import assert from "node:assert/strict";
 * assert.deepEqual(latencyPlan(3, 8), { runs: 100, block: 17 });
 * assert.deepEqual(latencyPlan(40, 8), { runs: 8, block: 5 });
 * ```
 */
export function latencyPlan(msPerRun: number, runs: number): { runs: number; block: number } {
  const ms = Math.max(msPerRun, 0.01);
  return {
    runs: Math.min(Math.max(runs, Math.ceil(300 / ms)), 400),
    block: Math.max(5, Math.ceil(50 / ms)),
  };
}

/** How one batch's SQNR sums are computed: the side-by-side graph or two sessions. */
interface Comparer {
  /** Adds one batch's Σx² and Σ(x − y)² of every compared tensor into `acc`. */
  add(feeds: FeedBatch["feeds"], acc: Map<string, [number, number]>): Promise<void>;
  release(): Promise<void>;
}

const WEIGHTED = new Set(["Conv", "ConvTranspose", "Gemm", "MatMul"]);
const MAX_SQNR = 200;

function sqnrDb(signal: number, noise: number): number {
  if (noise === 0) return MAX_SQNR;
  if (signal === 0) return -MAX_SQNR;
  return Math.max(-MAX_SQNR, Math.min(MAX_SQNR, 10 * Math.log10(signal / noise)));
}

function accumulate(acc: [number, number], a: Tensor, b: Tensor): void {
  const x = toFloat64(a);
  const y = toFloat64(b);
  const n = Math.min(x.length, y.length);
  for (let i = 0; i < n; i++) {
    const xi = x[i]!;
    const d = xi - y[i]!;
    acc[0] += xi * xi;
    acc[1] += d * d;
  }
}

/**
 * Compares a float graph and its int8 version on a few images: SQNR of every weighted layer's
 * output the two graphs share and of every graph output, and ORT latency of both.
 *
 * @param floatGraph The float model.
 * @param int8Graph The quantized model.
 * @param ctx The step context (data sets).
 * @param options Image count and latency runs.
 * @returns The analysis.
 */
export async function analyze(
  floatGraph: Graph,
  int8Graph: Graph,
  ctx: Pick<StepContext, "batches" | "hasData">,
  options: AnalyzeOptions = {},
): Promise<Analysis> {
  const o = { ...defaults, ...options };
  const notes: string[] = [];
  const set = ctx.hasData("evaluation")
    ? "evaluation"
    : ctx.hasData("calibration")
    ? "calibration"
    : undefined;
  if (!set) {
    return {
      images: 0,
      layers: [],
      outputs: [],
      notes: ["no image data configured: SQNR and latency not measured"],
    };
  }
  const int8Producers = new Set(int8Graph.nodes.flatMap((n) => n.outputs));
  const outputNames = new Set(floatGraph.outputs.map((v) => v.name));
  const layerNodes = floatGraph.nodes.filter((n) =>
    WEIGHTED.has(n.op) && n.outputs[0] && int8Producers.has(n.outputs[0]) &&
    !outputNames.has(n.outputs[0])
  );
  const taps = layerNodes.map((n) => n.outputs[0]!);
  const outputs = floatGraph.outputs.map((v) => v.name).filter((n) =>
    int8Graph.outputs.some((v) => v.name === n)
  );
  const fetch = [...taps, ...outputs];
  const compare = await sideBySide(floatGraph, int8Graph, { taps, outputs }) ??
    await apart(floatGraph, int8Graph, { taps, fetch });
  const acc = new Map<string, [number, number]>(fetch.map((n) => [n, [0, 0]]));
  let images = 0;
  let first: FeedBatch | undefined;
  try {
    const batches = ctx.batches(set, { label: "report: float vs int8", limit: o.maxImages });
    for await (const batch of batches) {
      first ??= batch;
      await compare.add(batch.feeds, acc);
      images += batch.files.length;
    }
  } finally {
    await compare.release();
  }
  const entry = (node: string, op: string, t: string): LayerSqnr => {
    const [s, n] = acc.get(t)!;
    return { node, op, tensor: t, sqnr: sqnrDb(s, n) };
  };
  const layers = layerNodes.map((n) => entry(n.name, n.op, n.outputs[0]!));
  const outs = outputs.map((t) => entry("(output)", "output", t));

  let latency: Analysis["latency"];
  if (first) {
    const fs = await createSession(floatGraph, { optimizationLevel: "all", label: "float model" });
    const is = await createSession(int8Graph, { optimizationLevel: "all", label: "int8 model" });
    try {
      // After the warm-up, one timed run of each: the slower model's sizes the measure.
      const once = async (s: typeof fs) =>
        (await measureLatency(s, first.feeds, { warmup: o.warmup, runs: 1 })).median;
      const plan = latencyPlan(Math.max(await once(fs), await once(is)), o.runs);
      o.log?.info(`  measuring latency (${plan.runs} runs each, in turns of ${plan.block})`);
      const c = await compareLatency({ a: fs, b: is }, first.feeds, {
        warmup: 0,
        runs: plan.runs,
        block: plan.block,
        pauseMs: 0,
      });
      const pick = (l: LatencySummary) => ({ median: l.median, min: l.min, mean: l.mean });
      latency = { float: pick(c.a), int8: pick(c.b), speedup: c.a.median / c.b.median };
    } finally {
      fs.release();
      is.release();
    }
    // Profiling slows runs down, so each model is profiled apart from the timing above.
    const profiled = async (g: Graph, label: string) =>
      kernelTime(await profileRuns(g, first.feeds, { runs: PROFILED_RUNS, label }));
    try {
      const kernels = {
        float: await profiled(floatGraph, "float model"),
        int8: await profiled(int8Graph, "int8 model"),
      };
      latency = { ...latency, kernels };
      // Under 0.95: the timing's run-to-run spread on a busy machine stays within 5 %.
      if (latency.speedup < 0.95) {
        const why = slowerInt8Note(latency.speedup, kernels);
        notes.push(why);
        o.log?.warn(why);
      }
    } catch (e) {
      // The kernel times explain the latency; without them the report still stands.
      notes.push(`kernel times not measured: ${(e as Error).message}`);
    }
  } else notes.push(`no images in the ${set} set: latency not measured`);
  return { images, dataSet: set, layers, outputs: outs, ...(latency ? { latency } : {}), notes };
}

/** Runs each model profiles for the report's kernel times (the first one included). */
const PROFILED_RUNS = 10;

/** A profile's kernel time, weighted layers apart from the rest, and its slowest op types. */
function kernelTime(p: ProfileSummary): KernelTime {
  const w = weightedShare(p);
  const round = (ms: number) => Number(ms.toFixed(4));
  return {
    weightedMs: round(w.weightedMs),
    otherMs: round(w.otherMs),
    ops: p.ops.slice(0, 8).map((o) => ({ op: o.op, ms: o.ms, count: o.count })),
  };
}

/**
 * Why the int8 model is no faster than the float one, from the two models' kernel times: its int8
 * convolutions themselves (few channels, depthwise: BlazeFace's int8 depthwise convs run 3.2×
 * slower than float's), or the kernels around them that float fuses into its convs. The report
 * notes it and the run warns, once the timing found int8 slower.
 *
 * @param speedup Float median over int8 median.
 * @param kernels Both models' kernel times.
 * @returns One line: how fast, where the time goes, what to do.
 *
 * @example Convs that gain, and kernels around them that lose it
 * ```ts
 * import { slowerInt8Note } from "@clipq/pipeline/analysis";
 * import assert from "node:assert/strict";
 * const note = slowerInt8Note(0.9, {
 *   float: { weightedMs: 3, otherMs: 0.5, ops: [{ op: "FusedConv", ms: 3, count: 9 }] },
 *   int8: { weightedMs: 1, otherMs: 2.3, ops: [{ op: "QLinearSigmoid", ms: 1.5, count: 9 }] },
 * });
 * assert.match(note, /^int8 runs at 0\.90× float's speed/);
 * assert.match(note, /gain 3\.00× \(3\.00 → 1\.00 ms a run\), but the other kernels take 0\.50 → 2\.30 ms/);
 * assert.match(note, /int8's largest kernels: QLinearSigmoid ×9 1\.50 ms/);
 * ```
 */
export function slowerInt8Note(
  speedup: number,
  k: { float: KernelTime; int8: KernelTime },
): string {
  const ms = (x: number) => x.toFixed(2);
  const largest = k.int8.ops.slice(0, 3).map((o) => `${o.op} ×${o.count} ${ms(o.ms)}`).join(", ");
  const convs = `${ms(k.float.weightedMs)} → ${ms(k.int8.weightedMs)} ms a run`;
  const why = `(${convs}; small and depthwise convs gain nothing from int8)`;
  const where = k.int8.weightedMs > k.float.weightedMs || k.int8.weightedMs <= 0
    ? `its int8 convolutions and matmuls run slower than float's ${why}`
    : k.int8.weightedMs >= 0.9 * k.float.weightedMs
    ? `its int8 convolutions and matmuls are no faster than float's ${why}`
    : `its int8 convolutions and matmuls gain ${
      ms(k.float.weightedMs / k.int8.weightedMs)
    }× (${convs}), but the other kernels take ${ms(k.float.otherMs)} → ${ms(k.int8.otherMs)} ms`;
  return `int8 runs at ${
    ms(speedup)
  }× float's speed on this machine: ${where}; int8's largest kernels: ${largest} ms; keep this model float, or keep its slowest layers float (quantize.exclude)`;
}

/** Each model in its own session, every compared tensor fetched whole from both. */
async function apart(
  floatGraph: Graph,
  int8Graph: Graph,
  { taps, fetch }: { taps: string[]; fetch: string[] },
): Promise<Comparer> {
  const floatSession = await createSession(floatGraph, {
    taps,
    optimizationLevel: "basic",
    memoryPattern: false,
    label: "float model",
  });
  const int8Session = await createSession(int8Graph, {
    taps,
    optimizationLevel: "basic",
    memoryPattern: false,
    label: "int8 model",
  }).catch(async (e) => {
    await floatSession.release();
    throw e;
  });
  return {
    async add(feeds, acc) {
      const a = await floatSession.run(feeds, { outputs: fetch });
      const b = await int8Session.run(feeds, { outputs: fetch });
      for (const name of fetch) {
        const x = a[name];
        const y = b[name];
        if (x && y) accumulate(acc.get(name)!, x, y);
      }
    },
    async release() {
      await floatSession.release();
      await int8Session.release();
    },
  };
}

/** A graph holding a float model and its int8 version side by side ({@linkcode sideBySideGraph}). */
export interface SideBySide {
  /** The graph; its outputs are what to fetch. */
  graph: Graph;
  /** Compared tensor → the outputs holding its Σx² (float) and Σ(x − y)² (x float, y int8). */
  sums: Map<string, [string, string]>;
  /** Compared tensor → its float and its int8 output, for tensors that are not float32. */
  pairs: Map<string, [string, string]>;
}

/**
 * Both models in one graph (the int8 one's names prefixed, the inputs shared), each compared
 * float32 tensor reduced to Σx² and Σ(x − y)² inside it; other compared tensors (graph outputs of
 * other types) are fetched from both halves.
 *
 * @param floatGraph The float model.
 * @param int8Graph The quantized model (the same inputs; the compared tensors under the same names).
 * @param o The compared tensors: layer outputs and graph outputs.
 * @returns The graph and where each tensor's sums are, or undefined when the models cannot share a
 *   graph (subgraphs, different inputs, an int8 opset below the float one or one the float model
 *   cannot be raised to, clashing opsets of another domain).
 *
 * @example A conv and its int8 version
 * ```ts
 * import { sideBySideGraph } from "@clipq/pipeline/analysis";
 * import { ModelBuilder } from "@clipq/onnx";
 * import { quantize } from "@clipq/quantize";
 * import assert from "node:assert/strict";
 * const b = new ModelBuilder({ seed: 1 });
 * b.output(b.conv(b.relu(b.conv(b.input("x", [1, 3, 8, 8]), { outChannels: 4, kernel: 3 })), { outChannels: 2, kernel: 1 }), "y");
 * const g = b.build();
 * const ranges = new Map([["x", { min: -1, max: 1, source: "test" }], [g.nodes[1]!.outputs[0]!, { min: 0, max: 4, source: "test" }]]);
 * const int8 = quantize(g, { ranges }).graph;
 * const s = sideBySideGraph(g, int8, { taps: [g.nodes[0]!.outputs[0]!], outputs: ["y"] })!;
 * assert.equal(s.sums.size, 2);
 * assert.equal(s.graph.outputs.length, 4);
 * ```
 */
export function sideBySideGraph(
  floatGraph: Graph,
  int8Graph: Graph,
  o: { taps: readonly string[]; outputs: readonly string[] },
): SideBySide | undefined {
  const nested = (g: Graph) =>
    g.nodes.some((n) =>
      Object.values(n.attributes).some((a) => a.type === "graph" || a.type === "graphs")
    );
  if (nested(floatGraph) || nested(int8Graph)) return undefined;
  const inputs = new Set(floatGraph.inputs.map((v) => v.name));
  if (
    int8Graph.inputs.length !== floatGraph.inputs.length ||
    int8Graph.inputs.some((v) => !inputs.has(v.name))
  ) return undefined;
  // One graph has one opset per domain: the float model is raised to the int8 model's.
  let float = floatGraph;
  const want = opsetOf(int8Graph), have = opsetOf(floatGraph);
  if (want === undefined || have === undefined || have > want) return undefined;
  if (have < want) {
    try {
      float = upgradeOpset(floatGraph, { target: want });
    } catch {
      return undefined;
    }
  }
  const imports = new Map<string, number>();
  for (const { domain, version } of [...float.opsetImports, ...int8Graph.opsetImports]) {
    const d = domain === "ai.onnx" ? "" : domain;
    if (imports.has(d) && imports.get(d) !== version) return undefined;
    imports.set(d, version);
  }
  const taken = new Set<string>();
  for (const g of [float, int8Graph]) {
    for (const n of g.nodes) {
      taken.add(n.name);
      for (const t of [...n.inputs, ...n.outputs]) taken.add(t);
    }
    for (const k of g.initializers.keys()) taken.add(k);
  }
  let prefix = "clipq.int8/";
  while ([...taken].some((t) => t.startsWith(prefix))) prefix = `_${prefix}`;
  const int8Name = (t: string) => (t === "" || inputs.has(t) ? t : prefix + t);
  const renamed: Node[] = int8Graph.nodes.map((n) => ({
    ...n,
    name: n.name ? prefix + n.name : n.name,
    inputs: n.inputs.map(int8Name),
    outputs: n.outputs.map(int8Name),
  }));
  const initializers = new Map(float.initializers);
  for (const [k, v] of int8Graph.initializers) if (!inputs.has(k)) initializers.set(prefix + k, v);
  let dtypes: ReadonlyMap<string, { dtype: string | null }>;
  try {
    dtypes = inferShapes(float);
  } catch {
    dtypes = new Map();
  }
  const reduced = [...o.taps, ...o.outputs].filter((t) => dtypes.get(t)?.dtype === "float32");
  const pairs = [...o.taps, ...o.outputs].filter((t) => !reduced.includes(t));
  const sums: Node[] = [];
  const sumOf = new Map<string, [string, string]>();
  const fresh = (base: string) => freshName(float, base, taken);
  for (const t of reduced) {
    const diff = fresh(`${t}.clipq.diff`), signal = fresh(`${t}.clipq.signal`);
    const noise = fresh(`${t}.clipq.noise`);
    const keep = { keepdims: { type: "int" as const, value: 0 } };
    sums.push(
      node({ name: diff, op: "Sub", inputs: [t, int8Name(t)], outputs: [diff] }),
      node({
        name: signal,
        op: "ReduceSumSquare",
        inputs: [t],
        outputs: [signal],
        attributes: keep,
      }),
      node({
        name: noise,
        op: "ReduceSumSquare",
        inputs: [diff],
        outputs: [noise],
        attributes: keep,
      }),
    );
    sumOf.set(t, [signal, noise]);
  }
  const pairOf = new Map(pairs.map((t) => [t, [t, int8Name(t)] as [string, string]]));
  const fetch = [...[...sumOf.values()].flat(), ...[...pairOf.values()].flat()];
  const graph: Graph = {
    ...float,
    nodes: [...float.nodes, ...renamed, ...sums],
    initializers,
    outputs: fetch.map((name) => ({ name })),
    valueInfo: [],
    opsetImports: [...imports].map(([domain, version]) => ({ domain, version })),
    irVersion: Math.max(float.irVersion, int8Graph.irVersion),
  };
  return { graph, sums: sumOf, pairs: pairOf };
}

/** The side-by-side comparison in one session, or undefined when it cannot be built or loaded. */
async function sideBySide(
  floatGraph: Graph,
  int8Graph: Graph,
  o: { taps: readonly string[]; outputs: readonly string[] },
): Promise<Comparer | undefined> {
  const built = sideBySideGraph(floatGraph, int8Graph, o);
  if (!built) return undefined;
  const { graph, sums, pairs } = built;
  const fetch = graph.outputs.map((v) => v.name);
  let session: Awaited<ReturnType<typeof createSession>>;
  try {
    session = await createSession(graph, {
      optimizationLevel: "basic",
      // Three images: no memory plan, whose second run allocates afresh (PP-OCRv4 det 640: runs
      // of 0.9, 0.9, 0.2 s with it).
      memoryPattern: false,
      label: "float and int8 models",
    });
  } catch {
    return undefined;
  }
  return {
    async add(feeds, acc) {
      const out = await session.run(feeds, { outputs: fetch });
      for (const [t, [signal, noise]] of sums) {
        const a = acc.get(t)!;
        a[0] += Number(out[signal]!.data[0]);
        a[1] += Number(out[noise]!.data[0]);
      }
      for (const [t, [a, b]] of pairs) {
        const x = out[a], y = out[b];
        if (x && y) accumulate(acc.get(t)!, x, y);
      }
    },
    release: () => session.release(),
  };
}
