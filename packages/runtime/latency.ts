/**
 * Latency measurement: warm-up runs, then timed runs, summarized by median/min/mean.
 *
 * @module
 */
import type { Tensor } from "@clipq/onnx";
import { ConfigError } from "@clipq/onnx/errors";
import type { Session } from "./session.ts";
import { median } from "./_median.ts";

/** Options of {@linkcode measureLatency}. */
export interface LatencyOptions {
  /** Untimed runs first (allocations, thread pool start-up). */
  warmup?: number;
  /** Timed runs. */
  runs?: number;
}

/** Defaults of {@linkcode LatencyOptions}. */
export const defaults = { warmup: 3, runs: 20 } satisfies LatencyOptions;

/** Options of {@linkcode compareLatency}. */
export interface CompareLatencyOptions extends LatencyOptions {
  /** Timed runs of one session in a row before the other takes its turn. */
  block?: number;
  /**
   * Idle milliseconds before each turn, so that the other session's thread-pool workers, which
   * spin for a while after their last run, have stopped (see {@linkcode compareLatency}).
   */
  pauseMs?: number;
}

/** Defaults of {@linkcode CompareLatencyOptions}. */
export const compareDefaults = {
  ...defaults,
  block: 5,
  pauseMs: 20,
} satisfies CompareLatencyOptions;

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

function checkCompare(options: CompareLatencyOptions): Required<CompareLatencyOptions> {
  const o = { ...compareDefaults, ...check(options) };
  if (!Number.isInteger(o.block) || o.block < 1) {
    throw new ConfigError("block", `expected a positive integer but found ${o.block}`);
  }
  if (!(Number.isFinite(o.pauseMs) && o.pauseMs >= 0)) {
    throw new ConfigError("pauseMs", `expected a non-negative number but found ${o.pauseMs}`);
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
  const n = samples.length;
  const mean = samples.reduce((a, b) => a + b, 0) / n;
  const min = n === 0 ? NaN : samples.reduce((a, b) => Math.min(a, b), Infinity);
  return { median: median(samples), min, mean, samples: [...samples] };
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
  await timedRuns(session, feeds, { count: o.runs, into: samples });
  return summarize(samples);
}

/** Runs a session `count` times, each run's milliseconds appended to `into`. */
async function timedRuns(
  session: Session,
  feeds: Readonly<Record<string, Tensor>>,
  o: { count: number; into: number[] },
): Promise<void> {
  for (let i = 0; i < o.count; i++) {
    const t0 = performance.now();
    await session.run(feeds);
    o.into.push(performance.now() - t0);
  }
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
 * Times two sessions by taking turns: a pause, one untimed run, then `block` timed runs of one
 * session, then the same for the other, the order swapped every round (A B, B A, …), until each has
 * `runs` timed runs. Machine load and thermal drift hit both alike, a fairer float-vs-int8
 * comparison than timing one after the other.
 *
 * Why turns and not single runs in alternation: onnxruntime's pool workers keep spinning for a
 * while after a run, so a session run right after the other one shares the cores with those
 * spinning workers. On 2 cores that doubled the float NanoDet's time (19 against 10 ms run alone)
 * and not the int8 model's, so run-by-run alternation reported 3.0–3.4× where the models run
 * alone gave 2.2–2.3×. With a 20 ms pause before each turn the figures are within a few percent of
 * the solo ones (block alternation 2.05–2.29×, solo 2.28–2.33×, same process).
 *
 * @param sessions The two sessions, `a` (e.g. float) and `b` (e.g. int8).
 * @param feeds Inputs for both (same input names).
 * @param options Warm-up and run counts (each session gets `runs` timed runs), block and pause.
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
 * const c = await compareLatency({ a, b }, { x: float32([2], [1, 2]) }, {
 *   warmup: 1,
 *   runs: 4,
 *   block: 2,
 *   pauseMs: 1,
 * });
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
  options: CompareLatencyOptions = {},
): Promise<LatencyComparison> {
  const o = checkCompare(options);
  const { a, b } = sessions;
  for (let i = 0; i < o.warmup; i++) {
    await a.run(feeds);
    await b.run(feeds);
  }
  const sa: number[] = [];
  const sb: number[] = [];
  const turn = async (s: Session, into: number[]) => {
    if (o.pauseMs > 0) await new Promise((done) => setTimeout(done, o.pauseMs));
    await s.run(feeds);
    await timedRuns(s, feeds, { count: Math.min(o.block, o.runs - into.length), into });
  };
  for (let round = 0; sa.length < o.runs || sb.length < o.runs; round++) {
    // Swapping the order every round removes any first-turn advantage.
    if (round % 2 === 0) {
      await turn(a, sa);
      await turn(b, sb);
    } else {
      await turn(b, sb);
      await turn(a, sa);
    }
  }
  const la = summarize(sa);
  const lb = summarize(sb);
  return { a: la, b: lb, ratio: lb.median / la.median };
}
