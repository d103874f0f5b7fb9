/**
 * Zero-data ranges: a network trained with clipping states its activation ranges in the graph.
 * Bounds come from clipping activations (Clip, Relu6, HardSigmoid, Sigmoid, Tanh, Softmax), from the
 * input preprocessing, and travel by interval arithmetic through ops that keep or combine ranges.
 * One-sided bounds (Relu ≥ 0, HardSwish ≥ −0.375, SiLU x·σ(x) ≥ −0.2785, Elu ≥ −α) are kept in `partial` but are not
 * ranges: the tensor stays in `unbounded` until a data method supplies the other side.
 *
 * @module
 */
import {
  attrFloat,
  attrInt,
  attrString,
  consumers,
  type Graph,
  type Node,
  opsetOf,
  type Tensor,
  toFloat64,
} from "@clipq/onnx";
import type { TensorRange } from "@clipq/onnx/metadata";
import { ConfigError } from "@clipq/onnx/errors";
import { readerBounds } from "./_saturation.ts";

/** How pixel values v ∈ [0, 255] become the model input: x = (v · scale − mean) / std per channel. */
export interface PixelSpec {
  /** Multiplier of the 0..255 pixel value. */
  scale: number;
  /** Per-channel mean subtracted after scaling. */
  mean: readonly number[];
  /** Per-channel divisor. */
  std: readonly number[];
}

/** A model input's range given directly. */
export interface InputRange {
  /** Smallest input value. */
  min: number;
  /** Largest input value. */
  max: number;
}

/** Options of {@linkcode clipBounds}. */
export interface ClipBoundsOptions {
  /** Known ranges of graph inputs: a preprocessing spec or a [min, max] range, by input name. */
  inputs?: Readonly<Record<string, PixelSpec | InputRange>>;
}

/** Defaults of {@linkcode ClipBoundsOptions}. */
export const defaults = { inputs: {} } satisfies ClipBoundsOptions;

/** What {@linkcode clipBounds} found. */
export interface ClipBoundsResult {
  /** Two-sided, finite ranges (source "clip-bound", "input-spec" or "propagated"). */
  ranges: Map<string, TensorRange>;
  /** Float activation tensors without a two-sided bound, in graph order. */
  unbounded: string[];
  /**
   * Bounds that narrow a data range of an unbounded tensor (an unknown side is ±Infinity): what
   * its producer guarantees (Relu ≥ 0), and what its readers can tell apart (a hard-swish input
   * above −3, a HardSigmoid input within [−β/α, (1 − β)/α]; clamping there changes no output).
   */
  partial: Map<string, { min: number; max: number }>;
  /**
   * Weighted-layer outputs (Conv, ConvTranspose, Gemm, MatMul) whose only consumer is a clipping
   * activation, mapped to that activation's output: quantized as one fused group, they take the
   * activation's bound (one Q/DQ after the activation; quantizing the layer output to the same
   * clip range first would give identical values).
   */
  fused: Map<string, string>;
}

interface Interval {
  lo: number;
  hi: number;
  source: "clip-bound" | "input-spec" | "propagated";
}

const FLOAT_CODES = new Set([1, 10, 11, 16]);
const NOT_FLOAT = new Set([
  "Shape",
  "Size",
  "NonZero",
  "ArgMax",
  "ArgMin",
  "Equal",
  "Less",
  "LessOrEqual",
  "Greater",
  "GreaterOrEqual",
  "Not",
  "And",
  "Or",
  "Xor",
  "IsNaN",
  "IsInf",
  "NonMaxSuppression",
  "Range",
  "ConstantOfShape",
  "QuantizeLinear",
]);
/** Ops whose outputs lie within the hull of their (first) input's values. */
const KEEPS = new Set([
  "MaxPool",
  "GlobalMaxPool",
  "GlobalAveragePool",
  "Reshape",
  "Transpose",
  "Flatten",
  "Squeeze",
  "Unsqueeze",
  "Slice",
  "Split",
  "Identity",
  "Dropout",
  "Gather",
  "GatherElements",
  "GatherND",
  "Expand",
  "Tile",
  "DepthToSpace",
  "SpaceToDepth",
  "ReduceMax",
  "ReduceMin",
  "ReduceMean",
  "TopK",
  "MaxRoiPool",
]);
const WEIGHTED = new Set(["Conv", "ConvTranspose", "Gemm", "MatMul"]);
/** Ops that output a datum per input element, monotone non-decreasing in it. */
const MONOTONE: Record<string, (x: number, n: Node) => number> = {
  Relu: (x) => Math.max(x, 0),
  Relu6: (x) => Math.min(Math.max(x, 0), 6),
  Sigmoid: (x) => 1 / (1 + Math.exp(-x)),
  Tanh: (x) => Math.tanh(x),
  Exp: (x) => Math.exp(x),
  Floor: (x) => Math.floor(x),
  Ceil: (x) => Math.ceil(x),
  Round: (x) => Math.round(x),
  Softplus: (x) => x > 30 ? x : Math.log1p(Math.exp(x)),
  LeakyRelu: (x, n) => x >= 0 ? x : attrFloat(n, "alpha", 0.01) * x,
  Elu: (x, n) => x >= 0 ? x : attrFloat(n, "alpha", 1) * Math.expm1(x),
  HardSigmoid: (x, n) =>
    Math.min(Math.max(attrFloat(n, "alpha", 0.2) * x + attrFloat(n, "beta", 0.5), 0), 1),
};
/** Ops whose output is bounded whatever the input: their bound is a clip bound. */
const CLIPPING = new Set(["Clip", "Relu6", "HardSigmoid", "Sigmoid", "Tanh", "Softmax"]);

/** Where SiLU x · σ(x) has its minimum: the root of its derivative σ(x) · (1 + x · (1 − σ(x))). */
const SILU_ARGMIN = -1.278464542761074;

function silu(x: number): number {
  return x === -Infinity ? 0 : x / (1 + Math.exp(-x));
}

/**
 * SiLU x · σ(x) (PyTorch's export of nn.SiLU, YOLOv5/v8's activation): ≥ −0.2785 whatever x, its
 * minimum at x ≈ −1.278, and increasing above it — a one-sided bound for an unbounded x.
 */
function siluInterval(x: Interval): Interval {
  const ends = [silu(x.lo), silu(x.hi)];
  const lo = x.lo <= SILU_ARGMIN && x.hi >= SILU_ARGMIN ? silu(SILU_ARGMIN) : Math.min(...ends);
  return { lo, hi: Math.max(...ends), source: "propagated" };
}

function hardSwish(x: number): number {
  return (x * Math.min(Math.max(x + 3, 0), 6)) / 6;
}

/** x · y with 0 · ±∞ = 0, as interval endpoints of closed sets of reals need. */
function times(x: number, y: number): number {
  return x === 0 || y === 0 ? 0 : x * y;
}

function bounded(i: Interval | undefined): boolean {
  return !!i && Number.isFinite(i.lo) && Number.isFinite(i.hi);
}

function checkOptions(options: ClipBoundsOptions): Required<ClipBoundsOptions> {
  const o: Required<ClipBoundsOptions> = { ...defaults, ...options };
  for (const [name, spec] of Object.entries(o.inputs)) {
    const key = `inputs.${name}`;
    if ("min" in spec || "max" in spec) {
      const r = spec as InputRange;
      if (!(Number.isFinite(r.min) && Number.isFinite(r.max) && r.min <= r.max)) {
        throw new ConfigError(key, `expected finite min ≤ max but found [${r.min}, ${r.max}]`);
      }
      continue;
    }
    const p = spec as PixelSpec;
    if (!Number.isFinite(p.scale)) {
      throw new ConfigError(`${key}.scale`, `expected a finite number but found ${p.scale}`);
    }
    if (!Array.isArray(p.mean) || !Array.isArray(p.std) || p.mean.length === 0) {
      throw new ConfigError(key, "expected mean and std arrays (one number per channel)");
    }
    if (p.std.length !== p.mean.length && p.std.length !== 1 && p.mean.length !== 1) {
      throw new ConfigError(
        `${key}.std`,
        `expected as many std values as mean values (${p.mean.length}) but found ${p.std.length}`,
      );
    }
    if (p.std.some((s) => !Number.isFinite(s) || s === 0)) {
      throw new ConfigError(`${key}.std`, `expected non-zero numbers but found [${p.std}]`);
    }
  }
  return o;
}

function inputInterval(spec: PixelSpec | InputRange): Interval {
  if ("min" in spec) return { lo: spec.min, hi: spec.max, source: "input-spec" };
  let lo = Infinity, hi = -Infinity;
  const n = Math.max(spec.mean.length, spec.std.length);
  for (let c = 0; c < n; c++) {
    const mean = spec.mean[Math.min(c, spec.mean.length - 1)]!;
    const std = spec.std[Math.min(c, spec.std.length - 1)]!;
    for (const v of [0, 255]) {
      const x = (v * spec.scale - mean) / std;
      lo = Math.min(lo, x);
      hi = Math.max(hi, x);
    }
  }
  return { lo, hi, source: "input-spec" };
}

function constantOf(n: Node): Tensor | number[] | undefined {
  const a = n.attributes;
  if (a.value?.type === "tensor") return a.value.value;
  if (a.value_float?.type === "float") return [a.value_float.value];
  if (a.value_floats?.type === "floats") return [...a.value_floats.value];
  if (a.value_int?.type === "int") return [a.value_int.value];
  if (a.value_ints?.type === "ints") return [...a.value_ints.value];
  return undefined;
}

function hullOf(values: ArrayLike<number>): Interval | undefined {
  if (values.length === 0) return undefined;
  let lo = Infinity, hi = -Infinity;
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return Number.isNaN(lo) || Number.isNaN(hi) ? undefined : { lo, hi, source: "propagated" };
}

/**
 * Finds the ranges a graph states by itself: clip bounds, input ranges, and what interval arithmetic
 * carries from them.
 *
 * @param graph The model (nodes in topological order, as ONNX requires).
 * @param options Ranges of graph inputs (a preprocessing spec or [min, max] by input name).
 * @returns Ranges, unbounded tensors, one-sided bounds, and fused weighted-layer outputs.
 * @throws {ConfigError} When an input spec is malformed (names `inputs.<name>`).
 *
 * @example Relu6 bounds its output to [0, 6]; Add of two such outputs to [0, 12]
 * ```ts
 * import { clipBounds } from "@clipq/calibrate/clip-bounds";
 * import { emptyGraph, node } from "@clipq/onnx";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({
 *   inputs: [{ name: "x", dtype: "float32", shape: [1, 4] }],
 *   nodes: [
 *     node({ name: "a", op: "Relu6", inputs: ["x"], outputs: ["p"] }),
 *     node({ name: "b", op: "Relu6", inputs: ["x"], outputs: ["q"] }),
 *     node({ name: "s", op: "Add", inputs: ["p", "q"], outputs: ["y"] }),
 *   ],
 *   outputs: [{ name: "y", dtype: "float32" }],
 * });
 * const { ranges, unbounded } = clipBounds(g);
 * assert.deepEqual(ranges.get("y"), { min: 0, max: 12, source: "propagated" });
 * assert.deepEqual(unbounded, ["x"]);
 * ```
 */
export function clipBounds(graph: Graph, options: ClipBoundsOptions = {}): ClipBoundsResult {
  const o = checkOptions(options);
  const opset = opsetOf(graph) ?? 13;
  const intervals = new Map<string, Interval>();
  const isFloat = new Set<string>();
  const constNodes = new Map<string, Node>();
  for (const n of graph.nodes) {
    if (n.op === "Constant" && n.outputs[0]) constNodes.set(n.outputs[0], n);
  }
  const constCache = new Map<string, Interval | undefined>();
  /** The hull of a constant's values (initializer or Constant node), computed on demand. */
  const constant = (name: string): Interval | undefined => {
    if (constCache.has(name)) return constCache.get(name);
    let r: Interval | undefined;
    const init = graph.initializers.get(name);
    const cn = constNodes.get(name);
    const t = init ?? (cn ? constantOf(cn) : undefined);
    if (t) {
      try {
        // Plain numbers are read in place: a float64 copy of every conv weight (they are read as
        // any node's inputs) cost YOLOv3-tiny 0.23 s, mostly writing fresh memory.
        const tensor = t as Tensor;
        r = hullOf(
          Array.isArray(t)
            ? t
            : tensor.dtype === "float32" || tensor.dtype === "float64"
            ? tensor.data as Float32Array | Float64Array
            : toFloat64(tensor),
        );
      } catch {
        r = undefined;
      }
    }
    constCache.set(name, r);
    return r;
  };
  const isConstant = (name: string) => graph.initializers.has(name) || constNodes.has(name);
  const get = (name: string | undefined): Interval | undefined =>
    name ? intervals.get(name) ?? constant(name) : undefined;

  const initNames = new Set(graph.initializers.keys());
  for (const v of graph.inputs) {
    if (initNames.has(v.name)) continue;
    if (v.dtype === undefined || ["float32", "float16", "float64", "bfloat16"].includes(v.dtype)) {
      isFloat.add(v.name);
    }
    const spec = o.inputs[v.name];
    if (spec) intervals.set(v.name, inputInterval(spec));
  }
  for (const name of Object.keys(o.inputs)) {
    if (!graph.inputs.some((v) => v.name === name)) {
      throw new ConfigError(
        `inputs.${name}`,
        `expected a graph input name (${
          graph.inputs.map((v) => v.name).join(", ")
        }) but found "${name}"`,
      );
    }
  }

  // Sigmoid output → its input, to recognize SiLU x · σ(x) at the Mul.
  const sigmoidInputs = new Map<string, string>();
  for (const n of graph.nodes) {
    if (n.op === "Sigmoid" && n.domain === "" && n.inputs[0] && n.outputs[0]) {
      sigmoidInputs.set(n.outputs[0], n.inputs[0]);
    }
  }
  for (const n of graph.nodes) {
    if (n.domain !== "" && n.domain !== "ai.onnx" && n.op !== "Relu6") continue;
    markFloat(n, isFloat);
    const out = transfer(n, get, isConstant, opset, sigmoidInputs);
    if (!out) continue;
    for (const [i, iv] of out.entries()) {
      const name = n.outputs[i];
      if (name && iv && !(Number.isNaN(iv.lo) || Number.isNaN(iv.hi))) intervals.set(name, iv);
    }
  }

  const ranges = new Map<string, TensorRange>();
  const partial = new Map<string, { min: number; max: number }>();
  const unbounded: string[] = [];
  const order: string[] = [
    ...graph.inputs.map((v) => v.name).filter((n) => !initNames.has(n)),
    ...graph.nodes.flatMap((n) => n.outputs),
  ];
  for (const name of order) {
    if (!name || !isFloat.has(name)) continue;
    const iv = intervals.get(name);
    if (iv && bounded(iv)) ranges.set(name, { min: iv.lo, max: iv.hi, source: iv.source });
    else {
      unbounded.push(name);
      if (iv && (Number.isFinite(iv.lo) || Number.isFinite(iv.hi))) {
        partial.set(name, { min: iv.lo, max: iv.hi });
      }
    }
  }

  // A weighted layer feeding only a clipping activation is quantized with that activation.
  const fused = new Map<string, string>();
  const users = consumers(graph);
  const graphOutputs = new Set(graph.outputs.map((v) => v.name));
  for (const n of graph.nodes) {
    if (!WEIGHTED.has(n.op) || n.domain !== "") continue;
    const y = n.outputs[0];
    if (!y || graphOutputs.has(y)) continue;
    const next = users.get(y);
    if (next?.length !== 1) continue;
    const act = next[0]!;
    if (act.op !== "Clip" && act.op !== "Relu6") continue;
    const a = act.outputs[0];
    const r = a ? ranges.get(a) : undefined;
    if (!a || !r || r.source !== "clip-bound") continue;
    fused.set(y, a);
    ranges.set(y, { min: r.min, max: r.max, source: "clip-bound" });
    const at = unbounded.indexOf(y);
    if (at >= 0) unbounded.splice(at, 1);
    partial.delete(y);
  }

  // What the readers cannot tell apart needs no int8 levels: a tensor read only by a hard-swish
  // matters above −3, one read only by HardSigmoid on [−3, 3]. Clamping there is exact.
  for (const [t, b] of readerBounds(graph)) {
    if (!isFloat.has(t)) continue;
    const r = ranges.get(t);
    if (r) {
      const min = Math.max(r.min, b.lo), max = Math.min(r.max, b.hi);
      if (min < max && (min !== r.min || max !== r.max)) {
        ranges.set(t, { min, max, source: r.source });
      }
    } else if (unbounded.includes(t)) {
      const p = partial.get(t) ?? { min: -Infinity, max: Infinity };
      const min = Math.max(p.min, b.lo), max = Math.min(p.max, b.hi);
      if (min < max) partial.set(t, { min, max });
    }
  }
  return { ranges, unbounded, partial, fused };
}

/** Records which outputs of a node are float activations (data, not shapes or indices). */
function markFloat(n: Node, isFloat: Set<string>): void {
  if (NOT_FLOAT.has(n.op) || n.op === "Constant") return;
  let yes: boolean;
  if (n.op === "Cast") yes = FLOAT_CODES.has(attrInt(n, "to", 1)) && !!n.inputs[0];
  else if (KEEPS.has(n.op) || n.op === "Pad" || n.op === "Resize" || n.op === "Upsample") {
    yes = isFloat.has(n.inputs[0] ?? "");
  } else yes = n.inputs.some((i) => isFloat.has(i));
  if (!yes) return;
  // Second outputs of these are indices or masks.
  const firstOnly = n.op === "TopK" || n.op === "MaxPool" || n.op === "Dropout";
  for (const [i, name] of n.outputs.entries()) {
    if (name && (!firstOnly || i === 0)) isFloat.add(name);
  }
}

function union(a: Interval, b: Interval): Interval {
  return { lo: Math.min(a.lo, b.lo), hi: Math.max(a.hi, b.hi), source: "propagated" };
}

function add(a: Interval, b: Interval): Interval {
  return { lo: a.lo + b.lo, hi: a.hi + b.hi, source: "propagated" };
}

function mul(a: Interval, b: Interval): Interval {
  const p = [times(a.lo, b.lo), times(a.lo, b.hi), times(a.hi, b.lo), times(a.hi, b.hi)];
  return { lo: Math.min(...p), hi: Math.max(...p), source: "propagated" };
}

/** The output intervals of a node from its input intervals; undefined entries are unknown. */
function transfer(
  n: Node,
  get: (name: string | undefined) => Interval | undefined,
  isConstant: (name: string) => boolean,
  opset: number,
  sigmoidInputs: ReadonlyMap<string, string> = new Map(),
): (Interval | undefined)[] | undefined {
  const x = get(n.inputs[0]);
  const all = n.inputs.filter((i) => i !== "").map(get);
  const unknown: Interval = { lo: -Infinity, hi: Infinity, source: "propagated" };
  const prop = (i: Interval | undefined) => i && { ...i, source: "propagated" as const };
  switch (n.op) {
    case "Clip": {
      let lo = -Infinity, hi = Infinity;
      if (opset < 11) {
        lo = attrFloat(n, "min", -Infinity);
        hi = attrFloat(n, "max", Infinity);
      } else {
        const a = n.inputs[1] ? get(n.inputs[1]) : undefined;
        const b = n.inputs[2] ? get(n.inputs[2]) : undefined;
        // A min or max computed at run time bounds nothing we can know here.
        if (n.inputs[1] && !(a && isConstant(n.inputs[1]))) lo = -Infinity;
        else if (a) lo = a.lo;
        if (n.inputs[2] && !(b && isConstant(n.inputs[2]))) hi = Infinity;
        else if (b) hi = b.hi;
      }
      // float32 lowest/highest act as "no bound".
      if (lo <= -3.4e38) lo = -Infinity;
      if (hi >= 3.4e38) hi = Infinity;
      const src = x ?? unknown;
      const out = {
        lo: Math.min(Math.max(src.lo, lo), hi),
        hi: Math.max(Math.min(src.hi, hi), lo),
        source: Number.isFinite(lo) && Number.isFinite(hi)
          ? "clip-bound" as const
          : "propagated" as const,
      };
      return [out];
    }
    case "Softmax":
    case "LogSoftmax":
      return n.op === "Softmax" ? [{ lo: 0, hi: 1, source: "clip-bound" }] : undefined;
    case "HardSwish": {
      const src = x ?? unknown;
      const ends = [hardSwish(src.lo), hardSwish(src.hi)].map((v) =>
        Number.isNaN(v) ? Infinity : v
      );
      const lo = src.lo <= -1.5 && src.hi >= -1.5 ? -0.375 : Math.min(...ends);
      return [{ lo, hi: Math.max(...ends), source: "propagated" }];
    }
    case "Neg":
      return x && [{ lo: -x.hi, hi: -x.lo, source: "propagated" }];
    case "Abs":
      return x && [{
        lo: x.lo <= 0 && x.hi >= 0 ? 0 : Math.min(Math.abs(x.lo), Math.abs(x.hi)),
        hi: Math.max(Math.abs(x.lo), Math.abs(x.hi)),
        source: "propagated",
      }];
    case "Pad": {
      if (!x) return undefined;
      const mode = attrString(n, "mode", "constant");
      if (mode !== "constant") return [prop(x)];
      const v = opset < 11 ? attrFloat(n, "value", 0) : n.inputs[2] ? get(n.inputs[2])?.lo : 0;
      if (v === undefined) return undefined;
      return [union(x, { lo: v, hi: v, source: "propagated" })];
    }
    case "AveragePool":
      if (!x) return undefined;
      return [
        attrInt(n, "count_include_pad", 0)
          ? union(x, { lo: 0, hi: 0, source: "propagated" })
          : prop(x),
      ];
    case "Resize":
    case "Upsample": {
      // Cubic interpolation overshoots its inputs; nearest and linear stay within them.
      if (!x || attrString(n, "mode", "nearest") === "cubic") return undefined;
      return [prop(x)];
    }
    case "Concat":
      return all.every((i) => i) ? [all.reduce((a, b) => union(a!, b!))] : undefined;
    case "Add":
    case "Sum":
      return all.every((i) => i) ? [all.reduce((a, b) => add(a!, b!))] : undefined;
    case "Mean":
      return all.every((i) => i)
        ? [
          mul(all.reduce((a, b) => add(a!, b!))!, {
            lo: 1 / all.length,
            hi: 1 / all.length,
            source: "propagated",
          }),
        ]
        : undefined;
    case "Sub": {
      const b = get(n.inputs[1]);
      return x && b ? [add(x, { lo: -b.hi, hi: -b.lo, source: "propagated" })] : undefined;
    }
    case "Mul": {
      const [p, q] = n.inputs;
      const v = p && sigmoidInputs.get(q ?? "") === p
        ? p
        : q && sigmoidInputs.get(p ?? "") === q
        ? q
        : undefined;
      if (v !== undefined) return [siluInterval(get(v) ?? unknown)];
      const b = get(n.inputs[1]);
      return x && b ? [mul(x, b)] : undefined;
    }
    case "Div": {
      const b = get(n.inputs[1]);
      if (!x || !b || (b.lo <= 0 && b.hi >= 0)) return undefined;
      return [mul(x, { lo: 1 / b.hi, hi: 1 / b.lo, source: "propagated" })];
    }
    case "Max":
    case "Min": {
      if (!all.every((i) => i)) {
        // max(x, c) ≥ c even when x is unknown: a one-sided bound.
        if (n.op === "Max") {
          const lo = Math.max(...all.map((i) => i?.lo ?? -Infinity));
          return [{ lo, hi: Infinity, source: "propagated" }];
        }
        const hi = Math.min(...all.map((i) => i?.hi ?? Infinity));
        return [{ lo: -Infinity, hi, source: "propagated" }];
      }
      const f = n.op === "Max" ? Math.max : Math.min;
      return [{
        lo: f(...all.map((i) => i!.lo)),
        hi: f(...all.map((i) => i!.hi)),
        source: "propagated",
      }];
    }
  }
  const m = MONOTONE[n.op];
  if (m) {
    if (n.op === "LeakyRelu" && attrFloat(n, "alpha", 0.01) < 0) return undefined;
    const src = x ?? unknown;
    return [{
      lo: m(src.lo, n),
      hi: m(src.hi, n),
      source: CLIPPING.has(n.op) ? "clip-bound" : "propagated",
    }];
  }
  if (KEEPS.has(n.op)) {
    if (!x) return undefined;
    return n.op === "Split" ? n.outputs.map(() => prop(x)) : [prop(x)];
  }
  return undefined;
}

/**
 * Combines clip bounds with data ranges (the `fallback` of a clip-bounds calibration): a tensor the
 * graph bounds keeps its clip bound; a data range is narrowed by a one-sided bound the graph states
 * (Relu ≥ 0, HardSwish ≥ −0.375), since values outside it cannot occur.
 *
 * @param bounds What {@linkcode clipBounds} found.
 * @param data Ranges from a data method, for the tensors clip bounds leave open.
 * @returns Ranges for every tensor in either input.
 *
 * @example A Relu output measured slightly below 0 keeps its lower bound 0
 * ```ts
 * import { clipBounds, withClipBounds } from "@clipq/calibrate/clip-bounds";
 * import { emptyGraph, node } from "@clipq/onnx";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({
 *   inputs: [{ name: "x", dtype: "float32" }],
 *   nodes: [
 *     node({ name: "r", op: "Relu", inputs: ["x"], outputs: ["y"] }),
 *     node({ name: "s", op: "Sigmoid", inputs: ["y"], outputs: ["z"] }),
 *   ],
 * });
 * const data = new Map([["y", { min: -0.01, max: 7, source: "percentile" }]]);
 * const r = withClipBounds(clipBounds(g), data);
 * assert.deepEqual(r.get("y"), { min: 0, max: 7, source: "percentile" });
 * assert.equal(r.get("z")?.source, "clip-bound");
 * ```
 */
export function withClipBounds(
  bounds: ClipBoundsResult,
  data: ReadonlyMap<string, TensorRange>,
): Map<string, TensorRange> {
  const out = new Map<string, TensorRange>();
  for (const [t, r] of data) {
    const p = bounds.partial.get(t);
    if (!p) out.set(t, r);
    else {
      const min = Math.max(r.min, p.min), max = Math.min(r.max, p.max);
      out.set(t, min <= max ? { min, max, source: r.source } : r);
    }
  }
  for (const [t, r] of bounds.ranges) out.set(t, r);
  return out;
}
