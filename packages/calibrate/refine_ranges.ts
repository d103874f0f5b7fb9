/**
 * Range refinement: each activation range chosen by what its int8 grid does to the model's
 * outputs, not by a histogram of the tensor alone.
 *
 * A histogram method (percentile, MSE, entropy …) scores a clip by the error it puts on the tensor
 * itself, the same for every tensor. The model does not weigh those errors alike: a tensor read by
 * a sigmoid gate or a squeeze-excite scale may need its rare large values (a clip the histogram
 * likes costs the output far more than the rounding it saves), while another tolerates a clip at a
 * third of its percentile range and gains from the finer step. This measures it: for each tensor,
 * the float model is run with that tensor alone quantized (QuantizeLinear → DequantizeLinear on the
 * grid the quantizer will give it, every other tensor float), at its calibrated range and at
 * candidates with the range's ends scaled by `factors`; the range whose outputs come closest to the
 * float model's (summed squared error of every float output over its signal, all images pooled)
 * is kept when it lowers that error by at least `minGain`. Tensors are judged one at a time, each
 * alone, so the order does not matter and the result is the same on every run.
 *
 * Measured on PP-OCRv4 det 640 (percentile 99.99 ranges, the 160 tensors its int8 model puts on
 * grids of their own; judged on page.png and two darknet photos, text.png kept out; about a minute
 * on 2 cores): 57 ranges moved, most squeeze-excite and gate inputs widened 1.4–2×, ReLU outputs
 * narrowed; the all-int8 model's binarized text map against the float model's went from IoU 0.713
 * to 0.863 on text.png and 0.960 → 0.985 on page.png (tests/ppocr_det_int8_test.ts), and on 20
 * seeded synthetic text scenes nothing was judged on 0.964 → 0.969 (15.9 → 16.8 dB).
 *
 * Cost: one session per tensor and one run per candidate and feed. Every tensor is first run at
 * its calibrated range (which ranks them: `errors`); those whose error is below `screen` of the
 * largest stop there, the others try factors outward from 1 on each side while the error falls
 * (2–4 runs a side instead of every factor).
 *
 * @module
 */
import {
  type Graph,
  ModelError,
  type Node,
  node,
  type Tensor,
  tensor,
  toFloat32,
} from "@clipq/onnx";
import type { ActivationBounds, TensorRange } from "@clipq/onnx/metadata";
import { ConfigError } from "@clipq/onnx/errors";
import { createSession, type OptimizationLevel, releaseOutputs } from "@clipq/runtime";

/** The int8 grid a range gives, as the quantizer computes it. */
export interface Grid {
  scale: number;
  zeroPoint: number;
  dtype: "uint8" | "int8";
}

/** Options of {@linkcode refineRanges}. */
export interface RefineRangesOptions {
  /** The tensors to refine (each needs a range in `ranges`). */
  tensors: readonly string[];
  /** The calibrated ranges (tensors not listed in `tensors` are left as they are). */
  ranges: ReadonlyMap<string, TensorRange>;
  /** Scale, zero point and type of the grid a range gives (the quantizer's `activationParams`). */
  grid: (range: TensorRange, tensor: string) => Grid;
  /**
   * Factors for the candidates: the range's max times each, and for a two-sided range (min below
   * −10 % of max) both ends times each too.
   */
  factors?: readonly number[];
  /** Smallest relative drop of the output error for a candidate to replace the range (0..1). */
  minGain?: number;
  /**
   * Tensors whose output error at the calibrated range is below this share of the largest one
   * keep their range unjudged: what they could gain is below what the others already cost.
   */
  screen?: number;
  /**
   * Bounds a tensor's range cannot leave, by tensor (the quantizer clamps the range of a Relu or
   * Clip folded into its producer to the activation's bounds; `max` absent when unbounded above):
   * candidates are clamped to them, so none is judged on a grid the quantizer would not write.
   */
  bounds?: ReadonlyMap<string, ActivationBounds>;
  /** onnxruntime graph optimization level. */
  optimizationLevel?: OptimizationLevel;
  /** Called after each tensor with how many are done and how many there are. */
  onProgress?: (done: number, total: number) => void;
}

/** Defaults of {@linkcode RefineRangesOptions}. */
export const defaults = {
  tensors: [],
  factors: [0.5, 0.7, 1.4, 2],
  minGain: 0.02,
  screen: 1e-3,
  optimizationLevel: "all",
} satisfies Omit<RefineRangesOptions, "ranges" | "grid">;

/** One range that moved. */
export interface RangeChange {
  tensor: string;
  from: TensorRange;
  to: TensorRange;
  /** The output error with this tensor alone quantized, at the old and the new range. */
  error: { before: number; after: number };
}

/** Result of {@linkcode refineRanges}. */
export interface RefinedRanges {
  /** Every range of the input, the refined ones replaced. */
  ranges: Map<string, TensorRange>;
  /** The ranges that moved, in the order of `tensors`. */
  changes: RangeChange[];
  /**
   * Each tensor's output error with it alone quantized at its calibrated range: how much the
   * model's outputs feel that tensor's int8 grid (a sensitivity ranking).
   */
  errors: Map<string, number>;
  /** Model runs made. */
  runs: number;
}

/** Names of the graph inputs that carry the grid under test. */
const SCALE = "clipq.refine.scale";
const ZERO_POINT = "clipq.refine.zero_point";

/**
 * The graph with one tensor quantized and dequantized right where it is made, on a grid given at
 * run time (scale and zero point are graph inputs), so one session tries every candidate.
 */
function withGrid(graph: Graph, t: string, dtype: "uint8" | "int8"): Graph {
  const q = `${t}.clipq.refine.q`, dq = dequantized(t);
  const nodes: Node[] = graph.nodes.map((n) => ({
    ...n,
    inputs: n.inputs.map((i) => (i === t ? dq : i)),
  }));
  const made = nodes.findIndex((n) => n.outputs.includes(t));
  nodes.splice(
    made + 1,
    0,
    node({ name: q, op: "QuantizeLinear", inputs: [t, SCALE, ZERO_POINT], outputs: [q] }),
    node({ name: dq, op: "DequantizeLinear", inputs: [q, SCALE, ZERO_POINT], outputs: [dq] }),
  );
  return {
    ...graph,
    nodes,
    inputs: [
      ...graph.inputs,
      { name: SCALE, dtype: "float32", shape: [] },
      { name: ZERO_POINT, dtype: dtype, shape: [] },
    ],
    outputs: graph.outputs.map((o) => (o.name === t ? { ...o, name: dq } : o)),
  };
}

/** The name of a tensor's quantized-and-dequantized copy in {@linkcode withGrid}'s graph. */
function dequantized(t: string): string {
  return `${t}.clipq.refine.dq`;
}

/**
 * The ways a range may move: its max scaled, and for a two-sided range (min below −10 % of max)
 * both ends scaled. Each is searched outward from the calibrated range (factor 1) in the direction
 * that lowers the error, one factor further while it keeps lowering it.
 */
function moves(r: TensorRange): ((f: number) => TensorRange)[] {
  const out = [(f: number) => ({ min: r.min, max: r.max * f, source: r.source })];
  if (r.min < -0.1 * r.max) out.push((f) => ({ min: r.min * f, max: r.max * f, source: r.source }));
  return out;
}

/**
 * Refines activation ranges by their effect on the model's outputs (see the module doc).
 *
 * @param graph The float model as the quantizer rewrites it (`floatTwin`), whose tensors the
 *   ranges name.
 * @param feeds The images to judge on, as input feeds (a few are enough; each candidate costs one
 *   run per feed).
 * @param options Tensors, ranges, the quantizer's grid, candidate factors.
 * @returns The ranges with the refined ones replaced, and what moved.
 * @throws {ConfigError} When no feeds are given or an option is out of range.
 * @throws {ModelError} When a tensor has no range, is not made by a node, or the model has no
 *   float output to compare.
 *
 * @example A tensor whose rare large values matter keeps more of them
 * ```ts
 * import { refineRanges } from "@clipq/calibrate/refine-ranges";
 * import { emptyGraph, float32, node } from "@clipq/onnx";
 * import assert from "node:assert/strict";
 * // y = x·x: the largest x dominate the output, so clipping x at 2 costs far more than its step.
 * const g = emptyGraph({
 *   nodes: [
 *     node({ name: "id", op: "Identity", inputs: ["x"], outputs: ["h"] }),
 *     node({ name: "sq", op: "Mul", inputs: ["h", "h"], outputs: ["y"] }),
 *   ],
 *   inputs: [{ name: "x", dtype: "float32", shape: [4] }],
 *   outputs: [{ name: "y", dtype: "float32", shape: [4] }],
 * });
 * const { changes } = await refineRanges(g, [{ x: float32([4], [0.1, 0.5, 1, 4]) }], {
 *   tensors: ["h"],
 *   ranges: new Map([["h", { min: 0, max: 2, source: "percentile" }]]),
 *   grid: (r) => ({ scale: (r.max - Math.min(r.min, 0)) / 255, zeroPoint: 0, dtype: "uint8" }),
 * });
 * assert.equal(changes[0]?.to.max, 4);
 * ```
 */
export async function refineRanges(
  graph: Graph,
  feeds: readonly Readonly<Record<string, Tensor>>[],
  options: RefineRangesOptions,
): Promise<RefinedRanges> {
  const o = { ...defaults, ...options };
  if (feeds.length === 0) {
    throw new ConfigError(
      "feeds",
      "expected at least one input feed to judge ranges on; found none",
    );
  }
  if (!Array.isArray(o.factors) || !o.factors.every((f) => Number.isFinite(f) && f > 0)) {
    throw new ConfigError(
      "factors",
      `expected positive numbers; found ${JSON.stringify(o.factors)}`,
    );
  }
  if (!(o.minGain >= 0 && o.minGain < 1)) {
    throw new ConfigError("minGain", `expected a number in [0, 1); found ${o.minGain}`);
  }
  if (!(o.screen >= 0 && o.screen < 1)) {
    throw new ConfigError("screen", `expected a number in [0, 1); found ${o.screen}`);
  }
  const made = new Set(graph.nodes.flatMap((n) => n.outputs));
  for (const t of o.tensors) {
    if (!o.ranges.has(t)) {
      throw new ModelError(`model "${graph.name}": expected a range for tensor "${t}"; found none`);
    }
    if (!made.has(t)) {
      throw new ModelError(
        `model "${graph.name}": expected tensor "${t}" to be made by a node; nothing makes it`,
      );
    }
  }
  const outputs = graph.outputs.map((v) => v.name);
  // The float model's outputs: the reference, and each float output's signal power.
  const reference: Float32Array[][] = [];
  {
    const s = await createSession(graph, { optimizationLevel: o.optimizationLevel });
    try {
      for (const f of feeds) {
        const out = await s.run(f);
        // Copies: releasing the outputs frees the memory their views read.
        reference.push(outputs.map((n) => floatOf(out[n]).slice()));
        releaseOutputs(out);
      }
    } finally {
      await s.release();
    }
  }
  const compared = outputs.map((_, k) => reference.every((r) => r[k]!.length > 0));
  const power = outputs.map((_, k) => {
    let p = 0;
    for (const r of reference) for (const v of r[k]!) p += v * v;
    return p > 0 ? p : 1;
  });
  if (!compared.some(Boolean)) {
    throw new ModelError(
      `model "${graph.name}": expected a float output to judge ranges by; found only ${
        outputs.join(", ")
      }`,
    );
  }
  const ranges = new Map(o.ranges);
  const changes: RangeChange[] = [];
  const errors = new Map<string, number>();
  let runs = 0;
  // Runs the model with tensor t alone on its grid, once per feed, and gives the output error
  // (summed over outputs of the squared error over the output's power, all feeds pooled).
  const judge = async <T>(
    t: string,
    use: (error: (r: TensorRange) => Promise<number>) => Promise<T>,
  ): Promise<T> => {
    const session = await createSession(withGrid(graph, t, o.grid(o.ranges.get(t)!, t).dtype), {
      optimizationLevel: o.optimizationLevel,
    });
    // A tensor that is itself a graph output is read after its DequantizeLinear.
    const fetched = outputs.map((n) => (n === t ? dequantized(t) : n));
    try {
      return await use(async (r) => {
        const g = o.grid(r, t);
        const grid = {
          [SCALE]: tensor("float32", [], [g.scale]),
          [ZERO_POINT]: tensor(g.dtype, [], [g.zeroPoint]),
        };
        const sums = outputs.map(() => 0);
        for (const [i, f] of feeds.entries()) {
          const out = await session.run({ ...f, ...grid });
          runs++;
          fetched.forEach((n, k) => {
            if (!compared[k]) return;
            const y = floatOf(out[n]), ref = reference[i]![k]!;
            let e = 0;
            for (let j = 0; j < ref.length; j++) e += (y[j]! - ref[j]!) ** 2;
            sums[k]! += e;
          });
          releaseOutputs(out);
        }
        return sums.reduce((a, e, k) => a + e / power[k]!, 0);
      });
    } finally {
      await session.release();
    }
  };
  // First every tensor at its calibrated range, which ranks them; then the moves of those that
  // matter. The progress counts both passes.
  const total = 2 * o.tensors.length;
  let done = 0;
  for (const t of o.tensors) {
    errors.set(t, await judge(t, (error) => error(o.ranges.get(t)!)));
    o.onProgress?.(++done, total);
  }
  const largest = Math.max(0, ...errors.values());
  const below = [...o.factors].filter((f) => f < 1).sort((a, b) => b - a);
  const above = [...o.factors].filter((f) => f > 1).sort((a, b) => a - b);
  for (const t of o.tensors) {
    const from = o.ranges.get(t)!;
    const before = errors.get(t)!;
    if (before > o.screen * largest) {
      const best = await judge(t, async (error) => {
        let best = { range: from, error: before };
        const bound = o.bounds?.get(t);
        const clamp = (v: number) =>
          bound ? Math.min(bound.max ?? Infinity, Math.max(bound.min, v)) : v;
        for (const move of moves(from)) {
          for (const side of [below, above]) {
            // Outward from 1 while each step lowers the error.
            let last = before, previous = from;
            for (const f of side) {
              const m = move(f);
              const r = { ...m, min: clamp(m.min), max: clamp(m.max) };
              // Past a bound every further factor gives the same grid.
              if (!(r.max > r.min) || (r.min === previous.min && r.max === previous.max)) break;
              previous = r;
              const e = await error(r);
              if (e < best.error) best = { range: r, error: e };
              if (!(e < last)) break;
              last = e;
            }
          }
        }
        return best;
      });
      if (best.range !== from && best.error < before * (1 - o.minGain)) {
        const to = { ...best.range, source: `${from.source}, refined by output error` };
        ranges.set(t, to);
        changes.push({ tensor: t, from, to, error: { before, after: best.error } });
      }
    }
    o.onProgress?.(++done, total);
  }
  return { ranges, changes, errors, runs };
}

/** A float output's values; empty for a non-float output (indices, counts), which is not compared. */
function floatOf(t: Tensor | undefined): Float32Array {
  if (!t || (t.dtype !== "float32" && t.dtype !== "float16" && t.dtype !== "float64")) {
    return new Float32Array(0);
  }
  return toFloat32(t);
}
