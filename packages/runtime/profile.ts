/**
 * onnxruntime's profiler output, summed: where a model's run time goes, per op type and per node
 * of the model as ORT optimized it (fused kernels such as QLinearConv appear as themselves).
 *
 * @module
 */
import { DataError } from "@clipq/onnx/errors";
import { median } from "./_median.ts";

/** One op type's or node's share of the profiled runs. */
export interface ProfileEntry {
  /** Op type (`QLinearConv`, `Resize` …) or node name. */
  readonly name: string;
  /** The node's op type (for op-type entries, the same as `name`). */
  readonly op: string;
  /** Kernel time per run, ms. */
  readonly ms: number;
  /** Nodes of that op type (1 for a node entry). */
  readonly count: number;
}

/** What {@linkcode summarizeProfile} finds in a profile. */
export interface ProfileSummary {
  /** Model runs in the profile. */
  readonly runs: number;
  /** Kernel time per run summed over nodes, ms. */
  readonly totalMs: number;
  /** Per op type, slowest first. */
  readonly ops: readonly ProfileEntry[];
  /** Per node, slowest first. */
  readonly nodes: readonly ProfileEntry[];
}

interface TraceEvent {
  cat?: string;
  name?: string;
  dur?: number;
  args?: { op_name?: string };
}

/**
 * Sums an onnxruntime profile (Chrome trace events, as ORT writes them) per op type and per node.
 * A node's time a run is the median of its runs, so that one slow run (the first run's
 * allocations, a busy moment of the machine) does not move it: in ten profiled runs of NanoDet
 * the float convs took 10.5–21.9 ms a run, and the mean had put int8's convs 0.8 ms above their
 * median. A node that ran another number of times than the model (in a loop's body) gets its
 * mean a run.
 *
 * @param events The parsed profile JSON (an array of trace events).
 * @returns Per-run kernel times per op type and per node, slowest first.
 * @throws {DataError} When `events` is not an array of trace events.
 *
 * @example Two runs of a two-node model
 * ```ts
 * import { summarizeProfile } from "@clipq/runtime/profile";
 * import assert from "node:assert/strict";
 * const k = (name: string, op: string, dur: number) =>
 *   ({ cat: "Node", name: `${name}_kernel_time`, dur, args: { op_name: op } });
 * const run = { cat: "Session", name: "model_run", dur: 900 };
 * const p = summarizeProfile([run, k("c", "Conv", 600), k("r", "Relu", 200),
 *   run, k("c", "Conv", 400), k("r", "Relu", 200)]);
 * assert.equal(p.runs, 2);
 * assert.deepEqual(p.ops.map((o) => [o.op, o.ms]), [["Conv", 0.5], ["Relu", 0.2]]);
 * assert.equal(p.totalMs, 0.7);
 * ```
 */
export function summarizeProfile(events: unknown): ProfileSummary {
  if (!Array.isArray(events)) {
    throw new DataError(
      `expected onnxruntime profile events (a JSON array) but found ${typeof events}`,
    );
  }
  let runs = 0;
  const nodeEvents = new Map<string, { op: string; durations: number[] }>();
  for (const e of events as TraceEvent[]) {
    if (e?.cat === "Session" && e.name === "model_run") runs++;
    if (e?.cat !== "Node" || !e.name?.endsWith("_kernel_time")) continue;
    const name = e.name.slice(0, -"_kernel_time".length);
    const op = e.args?.op_name ?? "?";
    const n = nodeEvents.get(name) ?? { op, durations: [] };
    n.durations.push(e.dur ?? 0);
    nodeEvents.set(name, n);
  }
  const per = Math.max(1, runs);
  // Microseconds a run: the median where the node ran once a run, else the mean.
  const nodes = new Map<string, { op: string; us: number }>();
  for (const [name, { op, durations }] of nodeEvents) {
    const us = durations.length === per
      ? median(durations)
      : durations.reduce((a, b) => a + b, 0) / per;
    nodes.set(name, { op, us });
  }
  const ms = (us: number) => Number((us / 1000).toFixed(4));
  const ops = new Map<string, { us: number; count: number }>();
  for (const n of nodes.values()) {
    const o = ops.get(n.op) ?? { us: 0, count: 0 };
    o.us += n.us;
    o.count++;
    ops.set(n.op, o);
  }
  let total = 0;
  for (const o of ops.values()) total += o.us;
  const slowest = (a: ProfileEntry, b: ProfileEntry) => b.ms - a.ms;
  return {
    runs,
    totalMs: ms(total),
    ops: [...ops].map(([op, o]) => ({ name: op, op, ms: ms(o.us), count: o.count })).sort(slowest),
    nodes: [...nodes].map(([name, n]) => ({ name, op: n.op, ms: ms(n.us), count: 1 }))
      .sort(slowest),
  };
}

/**
 * Op types that run a layer's weights, as ORT's optimizer leaves them in a float or an int8 model:
 * convolutions (NCHWc and fused forms report as Conv and FusedConv), matmuls and gemms.
 */
const WEIGHTED = new Set([
  "Conv",
  "FusedConv",
  "ConvTranspose",
  "QLinearConv",
  "ConvInteger",
  "MatMul",
  "FusedMatMul",
  "MatMulInteger",
  "MatMulIntegerToFloat",
  "QLinearMatMul",
  "DynamicQuantizeMatMul",
  "Gemm",
  "FusedGemm",
  "QGemm",
]);

/** Kernel time of the weighted layers against the rest, from {@linkcode weightedShare}. */
export interface WeightedShare {
  /** Per-run ms of convolutions, matmuls and gemms in any of their float or int8 kernels. */
  readonly weightedMs: number;
  /** Per-run ms of every other kernel. */
  readonly otherMs: number;
  /** The other op types, slowest first. */
  readonly others: readonly ProfileEntry[];
}

/**
 * Splits a profile's kernel time into the weighted layers (Conv, MatMul, Gemm in any float or int8
 * kernel: QLinearConv, MatMulIntegerToFloat …) and everything else. Comparing a float and an int8
 * profile this way tells a slow int8 kernel from int8 overhead around fast ones: the float model
 * runs activations inside its convs, the int8 one often apart (QLinearLeakyRelu), and moves
 * tensors between float and the integers (QuantizeLinear, DequantizeLinear).
 *
 * @param summary A profile summary ({@linkcode summarizeProfile}).
 * @returns Weighted-layer and other kernel ms per run, and the other op types.
 *
 * @example
 * ```ts
 * import { weightedShare } from "@clipq/runtime/profile";
 * import assert from "node:assert/strict";
 * const entry = (op: string, ms: number) => ({ name: op, op, ms, count: 1 });
 * const s = weightedShare({
 *   runs: 1,
 *   totalMs: 3,
 *   ops: [entry("QLinearConv", 2), entry("QLinearLeakyRelu", 0.75), entry("Concat", 0.25)],
 *   nodes: [],
 * });
 * assert.deepEqual([s.weightedMs, s.otherMs], [2, 1]);
 * assert.deepEqual(s.others.map((o) => o.op), ["QLinearLeakyRelu", "Concat"]);
 * ```
 */
export function weightedShare(summary: ProfileSummary): WeightedShare {
  let weightedMs = 0, otherMs = 0;
  const others: ProfileEntry[] = [];
  for (const o of summary.ops) {
    if (WEIGHTED.has(o.op)) weightedMs += o.ms;
    else {
      otherMs += o.ms;
      others.push(o);
    }
  }
  const round = (ms: number) => Number(ms.toFixed(4));
  return {
    weightedMs: round(weightedMs),
    otherMs: round(otherMs),
    others: others.sort((a, b) => b.ms - a.ms),
  };
}

/**
 * The most the int8 model could gain with its convolutions, matmuls and gemms as they are: all of
 * float's kernel time over int8's weighted kernels alone, as if its other kernels took no time.
 * Float runs activations inside its convs where int8 often runs them apart, so a speedup goal
 * near or above it is out of reach of anything but faster int8 convolutions.
 *
 * @param float The float model's kernel time ({@linkcode weightedShare}, or any with its fields).
 * @param int8 The int8 model's.
 * @returns The ceiling, or undefined when the int8 profile has no weighted kernel.
 *
 * @example NanoDet's measured kernel times
 * ```ts
 * import { speedupCeiling } from "@clipq/runtime/profile";
 * import assert from "node:assert/strict";
 * const c = speedupCeiling({ weightedMs: 9.85, otherMs: 0.93 }, { weightedMs: 3.14, otherMs: 1.43 });
 * assert.equal(c!.toFixed(2), "3.43");
 * assert.equal(speedupCeiling({ weightedMs: 1, otherMs: 1 }, { weightedMs: 0, otherMs: 2 }), undefined);
 * ```
 */
export function speedupCeiling(
  float: { readonly weightedMs: number; readonly otherMs: number },
  int8: { readonly weightedMs: number; readonly otherMs: number },
): number | undefined {
  return int8.weightedMs > 0 ? (float.weightedMs + float.otherMs) / int8.weightedMs : undefined;
}
