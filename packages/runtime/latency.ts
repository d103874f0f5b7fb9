/**
 * Latency measurement: warm-up runs, then timed runs, summarized by median/min/mean.
 *
 * @module
 */
import type { Tensor } from "@clipq/onnx";
import { ConfigError } from "@clipq/onnx/errors";
import type { Session } from "./session.ts";

/** Options of {@linkcode measureLatency} and {@linkcode compareLatency}. */
export interface LatencyOptions {
  /** Untimed runs first (allocations, thread pool start-up). */
  warmup?: number;
  /** Timed runs. */
  runs?: number;
}

/** Defaults of {@linkcode LatencyOptions}. */
export const defaults = { warmup: 3, runs: 20 } satisfies LatencyOptions;

/** Summary of timed runs, in milliseconds. */
export interface Latency {
  /** Median run time. */
  readonly median: number;
  /** Fastest run time. */
  readonly min: number;
  /** Mean run time. */
  readonly mean: number;
  /** Every timed run, in run order. */
  readonly samples: readonly number[];
}

function check(options: LatencyOptions): Required<LatencyOptions> {
  const o = { ...defaults, ...options };
  if (!Number.isInteger(o.warmup) || o.warmup < 0) {
    throw new ConfigError("warmup", `expected a non-negative integer but found ${o.warmup}`);
  }
  if (!Number.isInteger(o.runs) || o.runs < 1) {
    throw new ConfigError("runs", `expected a positive integer but found ${o.runs}`);
  }
  return o;
}

/**
 * Summarizes run times.
 *
 * @param samples Run times in ms.
 * @returns Median (mean of the two middle values for an even count), min, mean and the samples.
 *
 * @example Usage
 * ```ts
 * import { summarize } from "@clipq/runtime/latency";
 * import assert from "node:assert/strict";
 * assert.deepEqual(summarize([3, 1, 2, 10]), { median: 2.5, min: 1, mean: 4, samples: [3, 1, 2, 10] });
 * ```
 */
export function summarize(samples: readonly number[]): Latency {
  const sorted = [...samples].sort((a, b) => a - b);
  const n = sorted.length;
  const median = n === 0
    ? NaN
    : n % 2
    ? sorted[(n - 1) / 2]!
    : (sorted[n / 2 - 1]! + sorted[n / 2]!) / 2;
  const mean = samples.reduce((a, b) => a + b, 0) / n;
  return { median, min: sorted[0] ?? NaN, mean, samples: [...samples] };
}

/**
 * Times a session: `warmup` untimed runs, then `runs` timed runs.
 *
 * @param session The session.
 * @param feeds Inputs for every run.
 * @param options Warm-up and run counts.
 * @returns Median, min and mean in ms, and the samples.
 *
 * @example Time a one-node model
 * ```ts
 * import { createSession, measureLatency } from "@clipq/runtime";
 * import { emptyGraph, float32, node } from "@clipq/onnx";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({
 *   nodes: [node({ name: "r", op: "Relu", inputs: ["x"], outputs: ["y"] })],
 *   inputs: [{ name: "x", dtype: "float32", shape: [2] }],
 *   outputs: [{ name: "y", dtype: "float32", shape: [2] }],
 * });
 * const s = await createSession(g);
 * const t = await measureLatency(s, { x: float32([2], [1, 2]) }, { warmup: 1, runs: 5 });
 * assert.equal(t.samples.length, 5);
 * assert.ok(t.min <= t.median && t.median >= 0);
 * await s.release();
 * ```
 */
export async function measureLatency(
  session: Session,
  feeds: Readonly<Record<string, Tensor>>,
  options: LatencyOptions = {},
): Promise<Latency> {
  const o = check(options);
  for (let i = 0; i < o.warmup; i++) await session.run(feeds);
  const samples: number[] = [];
  for (let i = 0; i < o.runs; i++) {
    const t0 = performance.now();
    await session.run(feeds);
    samples.push(performance.now() - t0);
  }
  return summarize(samples);
}

/** Result of {@linkcode compareLatency}. */
export interface LatencyComparison {
  /** Timing of session A. */
  readonly a: Latency;
  /** Timing of session B. */
  readonly b: Latency;
  /** median(B) / median(A): below 1 means B is faster. */
  readonly ratio: number;
}

/**
 * Times two sessions by alternating A and B runs in one loop (A, B, B, A, …) so that machine load
 * and thermal drift hit both alike — a fairer float-vs-int8 comparison than timing one after the
 * other.
 *
 * @param sessions The two sessions, `a` (e.g. float) and `b` (e.g. int8).
 * @param feeds Inputs for both (same input names).
 * @param options Warm-up and run counts (each session gets `runs` timed runs).
 * @returns Both timings and median(B)/median(A).
 *
 * @example Compare a model with itself
 * ```ts
 * import { compareLatency, createSession } from "@clipq/runtime";
 * import { emptyGraph, float32, node } from "@clipq/onnx";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({
 *   nodes: [node({ name: "r", op: "Relu", inputs: ["x"], outputs: ["y"] })],
 *   inputs: [{ name: "x", dtype: "float32", shape: [2] }],
 *   outputs: [{ name: "y", dtype: "float32", shape: [2] }],
 * });
 * const a = await createSession(g);
 * const b = await createSession(g);
 * const c = await compareLatency({ a, b }, { x: float32([2], [1, 2]) }, { warmup: 1, runs: 4 });
 * assert.equal(c.a.samples.length, 4);
 * assert.equal(c.b.samples.length, 4);
 * assert.ok(c.ratio > 0);
 * await a.release();
 * await b.release();
 * ```
 */
export async function compareLatency(
  sessions: { readonly a: Session; readonly b: Session },
  feeds: Readonly<Record<string, Tensor>>,
  options: LatencyOptions = {},
): Promise<LatencyComparison> {
  const o = check(options);
  const { a, b } = sessions;
  for (let i = 0; i < o.warmup; i++) {
    await a.run(feeds);
    await b.run(feeds);
  }
  const sa: number[] = [];
  const sb: number[] = [];
  const time = async (s: Session, into: number[]) => {
    const t0 = performance.now();
    await s.run(feeds);
    into.push(performance.now() - t0);
  };
  for (let i = 0; i < o.runs; i++) {
    // Swapping the order every round removes any first-of-pair advantage.
    if (i % 2 === 0) {
      await time(a, sa);
      await time(b, sb);
    } else {
      await time(b, sb);
      await time(a, sa);
    }
  }
  const la = summarize(sa);
  const lb = summarize(sb);
  return { a: la, b: lb, ratio: lb.median / la.median };
}
