/**
 * Float vs int8 measurements for the report: per-layer SQNR on real images and ORT latency.
 *
 * @module
 */
import type { Graph, Tensor } from "@clipq/onnx";
import { toFloat64 } from "@clipq/onnx/tensor";
import { createSession, measureLatency } from "@clipq/runtime";
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
  readonly latency?: { float: LatencySummary; int8: LatencySummary; speedup: number };
  /** Why a measurement was skipped. */
  readonly notes: string[];
}

/** Options of {@linkcode analyze}. */
export interface AnalyzeOptions {
  /** Images to measure SQNR on. */
  maxImages?: number;
  /** Timed latency runs per model. */
  runs?: number;
  /** Untimed runs first. */
  warmup?: number;
  log?: Logger;
}

/** Default analysis options. */
export const defaults = { maxImages: 3, runs: 8, warmup: 2 } satisfies AnalyzeOptions;

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
  const floatSession = await createSession(floatGraph, {
    taps,
    optimizationLevel: "basic",
    label: "float model",
  });
  const int8Session = await createSession(int8Graph, {
    taps,
    optimizationLevel: "basic",
    label: "int8 model",
  });
  const acc = new Map<string, [number, number]>(fetch.map((n) => [n, [0, 0]]));
  let images = 0;
  let first: FeedBatch | undefined;
  try {
    for await (const batch of ctx.batches(set)) {
      first ??= batch;
      const a = await floatSession.run(batch.feeds, { outputs: fetch });
      const b = await int8Session.run(batch.feeds, { outputs: fetch });
      for (const name of fetch) {
        const x = a[name];
        const y = b[name];
        if (x && y) accumulate(acc.get(name)!, x, y);
      }
      images += batch.files.length;
      if (images >= o.maxImages) break;
    }
  } finally {
    floatSession.release();
    int8Session.release();
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
      o.log?.info(`  measuring latency (${o.runs} runs each)`);
      const lf = await measureLatency(fs, first.feeds, { runs: o.runs, warmup: o.warmup });
      const li = await measureLatency(is, first.feeds, { runs: o.runs, warmup: o.warmup });
      const pick = (l: LatencySummary) => ({ median: l.median, min: l.min, mean: l.mean });
      latency = { float: pick(lf), int8: pick(li), speedup: lf.median / li.median };
    } finally {
      fs.release();
      is.release();
    }
  } else notes.push(`no images in the ${set} set: latency not measured`);
  return { images, dataSet: set, layers, outputs: outs, ...(latency ? { latency } : {}), notes };
}
