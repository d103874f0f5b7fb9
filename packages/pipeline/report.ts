/**
 * The run report (`report.json`): sizes, per-step timings, every tensor's range and its source,
 * excluded nodes with reasons, per-layer SQNR, latency, accuracy, activation histograms.
 *
 * @module
 */
import type { TensorRange } from "@clipq/onnx";
import type { Config } from "./config.ts";
import type { StepContext } from "./step.ts";
import type { Analysis } from "./analysis.ts";

/** An activation histogram for the report, rebinned to a few dozen bins, with its chosen clip. */
export interface ReportHistogram {
  readonly tensor: string;
  /** Left edge of the first bin. */
  readonly lo: number;
  /** Bin width. */
  readonly width: number;
  readonly counts: number[];
  /** The range chosen for the tensor, if any. */
  readonly clip?: { min: number; max: number; source: string };
}

/** The report. */
export interface Report {
  /** clipq version. */
  readonly clipq: string;
  /** Config file and SHA-256 of its text. */
  readonly config: { file: string; hash: string };
  /** Input model (path or converter source) and output path. */
  readonly model: { input: string; output: string };
  /** Methods used, as recorded in the model's provenance. */
  readonly methods: string[];
  /** Model file sizes in bytes and int8/float. */
  readonly sizes: { float: number; int8: number; ratio: number };
  /** Wall time of loading, each step and the analysis, ms. */
  readonly timings: { name: string; ms: number }[];
  /** Every calibrated tensor's range and where it came from. */
  readonly ranges: ({ tensor: string } & TensorRange)[];
  /** Tensors clip-bounds could not bound. */
  readonly unbounded: string[];
  /** Nodes kept float and why. */
  readonly excluded: { node: string; op?: string; reason: string }[];
  /** SQNR of int8 vs float per weighted layer and per output. */
  readonly sqnr: {
    layers: Analysis["layers"];
    outputs: Analysis["outputs"];
    images: number;
    dataSet?: string;
  };
  /** onnxruntime latency of both models. */
  readonly latency?: Analysis["latency"];
  /** What the evaluate step measured. */
  readonly accuracy?: unknown;
  /** Activation histograms with their chosen clips. */
  readonly histograms: ReportHistogram[];
  /** Other per-step details (e.g. svd layers). */
  readonly details: Record<string, unknown>;
  /** Why a measurement is missing, and other remarks. */
  readonly notes: string[];
}

/** Inputs of {@linkcode buildReport}. */
export interface ReportInputs {
  config: Pick<Config, "file" | "hash" | "model" | "output">;
  ctx: Pick<StepContext, "ranges" | "statistics" | "report" | "methods">;
  timings: { name: string; ms: number }[];
  floatBytes: number;
  int8Bytes: number;
  version: string;
  analysis?: Analysis;
  /** Histograms to include at most. */
  maxHistograms?: number;
}

interface HistogramJSONLike {
  exponent: number;
  offset: number;
  counts: number[];
}

/**
 * Rebins a power-of-two-grid histogram (calibrate's JSON form) into at most `bins` equal bins.
 *
 * @param h The histogram JSON (exponent, offset, counts).
 * @param bins Bins wanted at most.
 * @returns lo, width and counts.
 *
 * @example Usage
 * ```ts
 * import { rebin } from "@clipq/pipeline/report";
 * import assert from "node:assert/strict";
 * const r = rebin({ exponent: 0, offset: -2, counts: [1, 2, 3, 4] }, 2);
 * assert.deepEqual(r, { lo: -2, width: 2, counts: [3, 7] });
 * ```
 */
export function rebin(
  h: HistogramJSONLike,
  bins = 48,
): { lo: number; width: number; counts: number[] } {
  const w = 2 ** h.exponent;
  const group = Math.max(1, Math.ceil(h.counts.length / bins));
  const counts: number[] = [];
  for (let i = 0; i < h.counts.length; i += group) {
    let s = 0;
    for (let j = i; j < Math.min(i + group, h.counts.length); j++) s += h.counts[j]!;
    counts.push(s);
  }
  return { lo: h.offset * w, width: w * group, counts };
}

function finite(x: number): number {
  return Number.isFinite(x) ? x : 0;
}

/**
 * Assembles the report from what the run produced.
 *
 * @param inputs Config, context, timings, sizes and analysis.
 * @returns The report.
 *
 * @example Sizes and ranges
 * ```ts
 * import { buildReport } from "@clipq/pipeline/report";
 * import assert from "node:assert/strict";
 * const r = buildReport({
 *   config: { file: "c.json", hash: "h", model: "m.onnx", output: "o.onnx" },
 *   ctx: { ranges: new Map([["x", { min: 0, max: 6, source: "clip-bound" }]]), report: {}, methods: [] },
 *   timings: [], floatBytes: 400, int8Bytes: 100, version: "0.1.0",
 * });
 * assert.equal(r.sizes.ratio, 0.25);
 * assert.deepEqual(r.ranges, [{ tensor: "x", min: 0, max: 6, source: "clip-bound" }]);
 * ```
 */
export function buildReport(inputs: ReportInputs): Report {
  const { config, ctx, analysis } = inputs;
  const model = config.model;
  const modelName = typeof model === "string"
    ? model
    : "darknet" in model
    ? `darknet:${model.darknet.cfg}`
    : `tfjs:${model.tfjs}`;
  const r = ctx.report as Record<string, unknown>;
  const { excluded, unbounded, accuracy, notes, ...details } = r;
  const ranges = [...ctx.ranges].map(([tensor, v]) => ({
    tensor,
    min: v.min,
    max: v.max,
    source: v.source,
  }));
  const histograms: ReportHistogram[] = [];
  const stats = (ctx.statistics as { tensors?: Record<string, HistogramJSONLike> } | undefined)
    ?.tensors;
  if (stats) {
    const names = Object.keys(stats);
    const max = inputs.maxHistograms ?? 12;
    // Spread the chosen tensors over the network rather than taking only the first layers.
    const step = Math.max(1, names.length / max);
    for (let i = 0; i < names.length && histograms.length < max; i += step) {
      const name = names[Math.floor(i)]!;
      const h = stats[name]!;
      if (!h.counts?.length) continue;
      const range = ctx.ranges.get(name);
      histograms.push({
        tensor: name,
        ...rebin(h),
        ...(range ? { clip: { min: range.min, max: range.max, source: range.source } } : {}),
      });
    }
  }
  return {
    clipq: inputs.version,
    config: { file: config.file, hash: config.hash },
    model: { input: modelName, output: config.output },
    methods: [...ctx.methods],
    sizes: {
      float: inputs.floatBytes,
      int8: inputs.int8Bytes,
      ratio: inputs.floatBytes > 0 ? inputs.int8Bytes / inputs.floatBytes : 0,
    },
    timings: inputs.timings.map((t) => ({ name: t.name, ms: Math.round(t.ms * 10) / 10 })),
    ranges: ranges.map((x) => ({ ...x, min: finite(x.min), max: finite(x.max) })),
    unbounded: Array.isArray(unbounded) ? unbounded as string[] : [],
    excluded: Array.isArray(excluded) ? excluded as Report["excluded"] : [],
    sqnr: {
      layers: analysis?.layers ?? [],
      outputs: analysis?.outputs ?? [],
      images: analysis?.images ?? 0,
      ...(analysis?.dataSet ? { dataSet: analysis.dataSet } : {}),
    },
    ...(analysis?.latency ? { latency: analysis.latency } : {}),
    ...(accuracy !== undefined ? { accuracy } : {}),
    histograms,
    details,
    notes: [...(Array.isArray(notes) ? notes as string[] : []), ...(analysis?.notes ?? [])],
  };
}
