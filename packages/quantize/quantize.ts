/**
 * The int8 quantizer: a pure graph transform from a float graph and activation ranges to a QDQ (or
 * QOperator) graph that onnxruntime fuses into integer kernels, with a report of every scale, every
 * weight and every node left float.
 *
 * @module
 */
import { ModelError } from "@clipq/onnx/errors";
import { attrFloat, attrInt, type Graph, type Node } from "@clipq/onnx/graph";
import type { ActivationBounds, Ranges, TensorRange } from "@clipq/onnx/metadata";
import { float32, toFloat32 } from "@clipq/onnx/tensor";
import { activationParams } from "./linear.ts";
import { analyze, label, type Marks } from "./_analyze.ts";
import { concatGrids } from "./_concat.ts";
import { type ActivationEntry, viewsOnIntegers, type WeightReport, writeQdq } from "./_qdq.ts";
import { keepFloatLayersFloat } from "./_float_layers.ts";
import { foldQOperator } from "./_qoperator.ts";
import { compactGraph, minifyNames } from "./_rewrite.ts";
import { lowerGraph } from "./_lowered.ts";
import { foldScalarMuls } from "./ops/rescale.ts";
import { checkOptions, type QuantizeOptions } from "./options.ts";
import type { FloatNode } from "./plan.ts";

export type { WeightReport };

/** One quantized activation tensor in the report. */
export interface TensorReport {
  name: string;
  scale: number;
  zeroPoint: number;
  /** The calibrated range the scale covers. */
  min: number;
  max: number;
  /** Where the range came from (`clip-bound`, `percentile`, `shared with x` …). */
  source: string;
  /**
   * The bounds of a Relu or Clip folded into the tensor's producer, which every range for it is
   * clamped to (`max` absent for a Relu): a wider range would not change its grid.
   */
  bounds?: ActivationBounds;
}

/** What `quantize` did. */
export interface QuantizeReport {
  /** Nodes running quantized (Relu/Clip folded into a producer included). */
  quantizedNodes: string[];
  /** Nodes left float and why. */
  floatNodes: FloatNode[];
  /** Every quantized activation tensor. */
  tensors: TensorReport[];
  /** Every quantized weight. */
  weights: WeightReport[];
  /** Initializer bytes before and after. */
  sizes: { floatBytes: number; quantizedBytes: number; ratio: number };
  /**
   * The exact rewrites made for onnxruntime's int8 kernels before marking, one line each (a stem
   * padded to 4 channels, a MaxPool run before its activation, a head conv as a MatMul, …).
   */
  rewrites: string[];
}

/** Result of {@linkcode quantize}. */
export interface QuantizeResult {
  graph: Graph;
  report: QuantizeReport;
}

function initializerBytes(g: Graph): number {
  let n = 0;
  for (const t of g.initializers.values()) {
    n += Array.isArray(t.data) ? 0 : (t.data as { byteLength: number }).byteLength;
  }
  return n;
}

/**
 * The float graph {@linkcode quantize} marks, before any Q/DQ: the opset raised as the weights need,
 * and the exact rewrites for onnxruntime's int8 kernels applied (a ConvTranspose as a 1×1 Conv +
 * DepthToSpace, scalar chains and HardSigmoids folded into convs, …). Each weighted layer of the
 * quantized graph has its float twin here under the same node name, reading and writing the same
 * values: bias correction measures a layer against it, and `biasShifts` name its layers.
 *
 * @param graph The float graph.
 * @param options The options `quantize` will get (exclusions decide what is rewritten).
 * @returns The rewritten float graph.
 * @throws {ConfigError} On bad options.
 * @throws {ModelError} When the opset cannot be raised as quantization needs.
 *
 * @example A Div by a constant is a Mul in the twin
 * ```ts
 * import { floatTwin } from "@clipq/quantize/quantize";
 * import { emptyGraph, float32, node } from "@clipq/onnx";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({
 *   inputs: [{ name: "x", dtype: "float32", shape: [1, 4] }],
 *   outputs: [{ name: "y", dtype: "float32" }],
 *   initializers: new Map([["six", float32([], [6])]]),
 *   nodes: [node({ name: "d", op: "Div", inputs: ["x", "six"], outputs: ["y"] })],
 * });
 * assert.deepEqual(floatTwin(g).nodes.map((n) => n.op), ["Mul"]);
 * ```
 */
export function floatTwin(graph: Graph, options: QuantizeOptions = {}): Graph {
  return lowerGraph(graph, checkOptions(options)).graph;
}

/**
 * Subtracts bias-correction shifts from the float biases (adding a bias where a layer has none; for
 * MatMul, correcting the bias Add after it or inserting one).
 */
function applyBiasShifts(
  graph: Graph,
  shifts: ReadonlyMap<string, Float32Array>,
  derived: Map<string, { from: string; shift: Float32Array }>,
): Graph {
  if (shifts.size === 0) return graph;
  const byLabel = new Map(graph.nodes.map((n, i) => [label(n, i), i]));
  const inits = new Map(graph.initializers);
  const nodes = [...graph.nodes];
  const added = new Map<number, Node>();
  for (const [name, shift] of shifts) {
    const i = byLabel.get(name);
    if (i === undefined) {
      throw new ModelError(`biasShifts: expected a node named "${name}" but the graph has none`);
    }
    const n = nodes[i]!;
    const w = n.inputs[1] ? graph.initializers.get(n.inputs[1]) : undefined;
    let channels: number | undefined;
    if (n.op === "Conv") channels = w?.dims[0];
    else if (n.op === "ConvTranspose") {
      channels = w ? w.dims[1]! * attrInt(n, "group", 1) : undefined;
    } else if (n.op === "Gemm") channels = w?.dims[attrInt(n, "transB", 0) ? 0 : 1];
    else if (n.op === "MatMul") channels = w?.dims[w.dims.length - 1];
    else {
      throw new ModelError(
        `biasShifts: node "${name}" is a ${n.op}; expected Conv, ConvTranspose, Gemm or MatMul`,
      );
    }
    if (channels === undefined || channels !== shift.length) {
      throw new ModelError(
        `biasShifts: node "${name}" expected ${
          channels ?? "?"
        } per-channel shifts but found ${shift.length}`,
      );
    }
    if (n.op === "MatMul") {
      // MatMul has no bias input: correct the bias Add that follows it, or add one.
      const out = n.outputs[0]!;
      const users = nodes.filter((m) => m.inputs.includes(out));
      const add = users.length === 1 && users[0]!.op === "Add" ? users[0]! : undefined;
      const k = add ? add.inputs.findIndex((x) => x !== out) : -1;
      const c = add && k >= 0 ? inits.get(add.inputs[k]!) : undefined;
      const fresh = (base: string) => {
        let nm = base;
        for (let j = 1; inits.has(nm) || graph.nodes.some((m) => m.outputs.includes(nm)); j++) {
          nm = `${base}_${j}`;
        }
        return nm;
      };
      if (add && c && c.dtype === "float32" && c.dims.length === 1 && c.dims[0] === channels) {
        const bias = Float32Array.from(toFloat32(c));
        for (let j = 0; j < channels; j++) bias[j] = bias[j]! - shift[j]!;
        const bn = fresh(`${add.inputs[k]}_corrected`);
        inits.set(bn, float32([channels], bias));
        const ai = nodes.indexOf(add);
        nodes[ai] = { ...add, inputs: add.inputs.map((x, j) => (j === k ? bn : x)) };
      } else {
        const bias = new Float32Array(channels);
        for (let j = 0; j < channels; j++) bias[j] = -shift[j]!;
        const bn = fresh(`${name}.bias_correction`);
        inits.set(bn, float32([channels], bias));
        // The Add writes the calibrated tensor; the MatMul's new output takes its range, shifted.
        const pre = fresh(`${out}_uncorrected`);
        derived.set(pre, { from: out, shift });
        nodes[i] = { ...n, outputs: [pre] };
        added.set(i, {
          name: fresh(`${name}_bias_correction`),
          op: "Add",
          domain: "",
          inputs: [pre, bn],
          outputs: [out],
          attributes: {},
        });
      }
      continue;
    }
    const old = n.inputs[2];
    let bias: Float32Array;
    if (old) {
      const t = graph.initializers.get(old);
      if (!t || toFloat32(t).length !== channels) {
        throw new ModelError(
          `biasShifts: node "${name}" has bias "${old}" that is not a ${channels}-value initializer`,
        );
      }
      bias = Float32Array.from(toFloat32(t));
    } else bias = new Float32Array(channels);
    for (let c = 0; c < channels; c++) bias[c] = bias[c]! - shift[c]!;
    let newName = `${old || `${name}.bias`}_corrected`;
    for (let k = 1; inits.has(newName); k++) newName = `${old || `${name}.bias`}_corrected_${k}`;
    inits.set(newName, float32([channels], bias));
    const inputs = [...n.inputs];
    while (inputs.length < 3) inputs.push("");
    inputs[2] = newName;
    nodes[i] = { ...n, inputs } as Node;
  }
  const all = nodes.flatMap((n, i) => (added.has(i) ? [n, added.get(i)!] : [n]));
  return { ...graph, nodes: all, initializers: inits };
}

/** The interval of a folded activation's output: [0, ∞) for Relu, a Clip's constant bounds. */
interface Bounds {
  min: number;
  /** Absent when unbounded above (a Relu). */
  max?: number;
}

/**
 * The bounds of a Relu/Clip node folded into its producer; undefined when a Clip's bounds are not
 * constants.
 */
function foldedBounds(graph: Graph, act: Node): Bounds | undefined {
  if (act.op !== "Clip") return { min: 0 };
  const constant = (name: string | undefined) => {
    const t = name ? graph.initializers.get(name) : undefined;
    return t ? toFloat32(t)[0] : undefined;
  };
  const [, mn, mx] = act.inputs;
  if ((mn && constant(mn) === undefined) || (mx && constant(mx) === undefined)) return undefined;
  const min = mn ? constant(mn)! : attrFloat(act, "min", -Infinity);
  const max = mx ? constant(mx)! : attrFloat(act, "max", Infinity);
  return Number.isFinite(max) ? { min, max } : { min };
}

/**
 * The range of a folded Relu/Clip output, clamped to the activation's bounds: a Relu range that
 * dips below 0 would give u8 a non-zero zero point, and onnxruntime then cannot drop the Relu and
 * fuse the layer. When calibration gave only the producer's range (`pre`'s), the activation clamps
 * that one. Also gives the bounds, which the report states.
 */
function foldedRange(
  graph: Graph,
  o: { act: Node; pre: string | undefined; ranges: Ranges },
): { range: TensorRange | undefined; bounds: Bounds | undefined } {
  const { act, pre, ranges } = o;
  const own = ranges.get(act.outputs[0]!);
  const r = own ?? (pre === undefined ? undefined : ranges.get(pre));
  const bounds = foldedBounds(graph, act);
  if (!r || pre === undefined || !bounds) return { range: own, bounds };
  const clamp = (v: number) => Math.min(bounds.max ?? Infinity, Math.max(bounds.min, v));
  const [min, max] = [clamp(r.min), clamp(r.max)];
  if (own && min === own.min && max === own.max) return { range: own, bounds };
  const source = own ? `${r.source}, clamped to ${act.op}` : `${r.source} through ${act.op}`;
  return { range: { min, max, source }, bounds };
}

/**
 * Quantizes a float graph to int8: weights symmetric int8 per channel (int32 biases), activations
 * u8 (or s8) from the given ranges, written as QDQ (default) or QOperator. Ops without a quantizer,
 * excluded ones, the detector head's decode ops (head: "auto") and nodes whose tensors have no
 * range stay float and are listed in the report.
 *
 * @param graph The float graph (BatchNormalization folded; weights as initializers).
 * @param options Ranges, format, activation/weight types, exclusions, bias shifts.
 * @returns The quantized graph and the report.
 * @throws {ConfigError} On bad options (naming the key).
 * @throws {ModelError} When the opset cannot be raised safely, a bias shift does not fit, or
 * (strict) a tensor lacks a range.
 *
 * @example A Conv + Relu quantized in QDQ form
 * ```ts
 * import { quantize } from "@clipq/quantize";
 * import { emptyGraph, node } from "@clipq/onnx/graph";
 * import { float32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({
 *   inputs: [{ name: "x", dtype: "float32", shape: [1, 1, 2, 2] }],
 *   outputs: [{ name: "y", dtype: "float32" }],
 *   initializers: new Map([["w", float32([1, 1, 1, 1], [0.5])]]),
 *   nodes: [
 *     node({ name: "conv", op: "Conv", inputs: ["x", "w"], outputs: ["c"] }),
 *     node({ name: "relu", op: "Relu", inputs: ["c"], outputs: ["y"] }),
 *   ],
 * });
 * const ranges = new Map([
 *   ["x", { min: -1, max: 1, source: "minmax" }],
 *   ["y", { min: 0, max: 0.5, source: "minmax" }],
 * ]);
 * const { graph, report } = quantize(g, { ranges, exclude: { head: false } });
 * assert.equal(graph.nodes.filter((n) => n.op === "QuantizeLinear").length, 2);
 * const conv = graph.nodes.find((n) => n.op === "Conv")!;
 * const weight = graph.nodes.find((n) => n.outputs[0] === conv.inputs[1])!;
 * assert.equal(weight.op, "DequantizeLinear");
 * assert.equal(graph.initializers.get(weight.inputs[0]!)?.dtype, "int8");
 * assert.deepEqual(report.quantizedNodes, ["conv", "relu"]);
 * ```
 */
export function quantize(graph: Graph, options: QuantizeOptions = {}): QuantizeResult {
  const o = checkOptions(options);
  const perChannel = o.weights === "per-channel";
  // Exact rewrites for ORT's int8 kernels; each new tensor takes its original's range.
  const lowered = lowerGraph(graph, o);
  let g = lowered.graph;
  const ranges = new Map(o.ranges);
  for (const [t, from] of lowered.aliases) {
    const r = o.ranges.get(from);
    // A tensor holding its alias's values mapped by x·scale + offset (an affine chain folded into
    // convs) takes the alias's range mapped the same way: its integers are the ones the alias's
    // would be.
    const f = lowered.affine.get(t);
    const scaled = r && f
      ? {
        min: Math.min(r.min * f.scale, r.max * f.scale) + f.offset,
        max: Math.max(r.min * f.scale, r.max * f.scale) + f.offset,
        source: r.source,
      }
      : r;
    if (scaled && !ranges.has(t)) ranges.set(t, scaled);
  }
  // Bias correction applies to the rewritten layers, as it was measured on them (floatTwin).
  const derived = new Map<string, { from: string; shift: Float32Array }>();
  g = applyBiasShifts(g, o.biasShifts, derived);
  const shiftedRange = (t: string): TensorRange | undefined => {
    const d = derived.get(t);
    const r = d ? ranges.get(d.from) : undefined;
    if (!d || !r) return undefined;
    // pre = out + shift per channel, so the range widens by the shift's extremes.
    return {
      min: r.min + Math.min(0, ...d.shift),
      max: r.max + Math.max(0, ...d.shift),
      source: `${r.source} before bias correction`,
    };
  };
  const a = analyze(g, o, lowered.rawHeads);
  const labels = new Set(a.labels);
  for (const name of o.inputCovariances.keys()) {
    if (!labels.has(name)) {
      throw new ModelError(
        `inputCovariances: expected a node named "${name}" in the model as quantize rewrites it (floatTwin) but found none`,
      );
    }
  }
  // A Concat's inputs on its output's grid: it then copies integers instead of requantizing.
  for (const [t, r] of concatGrids(g, a, ranges)) ranges.set(t, r);

  // Each folded Relu/Clip output → its node and the producer output it folds into.
  const producerOf = new Map(g.nodes.map((n) => [n.outputs[0], n]));
  const folded = new Map(
    [...a.fused].map(([pre, act]) => [act, { act: producerOf.get(act), pre }] as const),
  );
  // Resolve ranges node by node (topological order): a node whose tensors lack ranges stays float.
  const activations = new Map<string, ActivationEntry>();
  const quantized = new Map<number, Marks>();
  g.nodes.forEach((n, i) => {
    const m = a.marks.get(i);
    if (!m) return;
    const pending = new Map<string, ActivationEntry>();
    let missing: string | undefined;
    for (const t of m.activations) {
      if (activations.has(t) || pending.has(t)) continue;
      const f = folded.get(t);
      const { range, bounds } = f?.act
        ? foldedRange(g, { act: f.act, pre: f.pre, ranges })
        : { range: ranges.get(t), bounds: undefined };
      const r = range ?? shiftedRange(t);
      if (!r) {
        missing = t;
        break;
      }
      pending.set(t, {
        params: activationParams(r, o.activations, t),
        min: r.min,
        max: r.max,
        source: r.source,
        ...(bounds ? { bounds } : {}),
      });
    }
    if (missing !== undefined) {
      if (o.strict) {
        throw new ModelError(
          `node "${a.labels[i]}" (${n.op}): tensor "${missing}" needs a range and has none`,
        );
      }
      a.reasons.set(i, `no range for tensor "${missing}"`);
      return;
    }
    for (const [out, inp] of m.shares) {
      const src = pending.get(inp) ?? activations.get(inp);
      if (src) pending.set(out, { ...src, source: `shared with ${inp}`, bounds: undefined });
    }
    for (const [t, e] of pending) activations.set(t, e);
    quantized.set(i, m);
  });

  const written = writeQdq(g, {
    marks: quantized,
    labels: a.labels,
    activations,
    perChannel,
    weightClip: o.weightClip,
    qmax: o.reduceRange ? 63 : 127,
    kind: o.activations,
    convZeroPoints: o.format === "qoperator",
    covariances: o.inputCovariances,
  });
  // A Mul by a positive scalar whose output grid is its input's scaled is a change of scale in
  // int8: it moves into the DQ (no QLinearMul).
  let out =
    foldScalarMuls(written.graph, { keep: [...a.reasons.keys()].map((i) => g.nodes[i]!.name) })
      .graph;
  // After the folding, which needs each Mul's quantized output read by DequantizeLinear nodes.
  out = viewsOnIntegers(out);
  if (o.format === "qoperator") out = foldQOperator(out);
  out = keepFloatLayersFloat(out);
  out = compactGraph(out);
  // What the quantizer added gets short names; the model's tensors and the reported ones keep
  // theirs — except its int64 constants (shapes, axes, sizes, pads, indices): nothing reports or
  // taps them, and tfjs and paddle2onnx exports name each one at length (NanoDet's six Reshape
  // shapes and two Resize sizes, ~45 characters each, were 0.7 KB of the int8 file).
  const plumbing = (t: string) => graph.initializers.get(t)?.dtype === "int64";
  const keep = new Set([...activations.keys()]);
  for (const t of graph.initializers.keys()) if (!plumbing(t)) keep.add(t);
  for (const n of graph.nodes) {
    for (const t of [...n.inputs, ...n.outputs]) if (!plumbing(t)) keep.add(t);
  }
  out = minifyNames(out, keep);

  const floatBytes = initializerBytes(graph);
  const quantizedBytes = initializerBytes(out);
  const report: QuantizeReport = {
    quantizedNodes: [...quantized.keys()].sort((x, y) => x - y).map((i) => a.labels[i]!),
    floatNodes: [...a.reasons].sort((x, y) => x[0] - y[0]).map(([i, reason]) => ({
      node: a.labels[i]!,
      op: g.nodes[i]!.op,
      reason,
    })),
    tensors: [...activations].map(([name, e]) => ({
      name,
      scale: e.params.scale,
      zeroPoint: e.params.zeroPoint,
      min: e.min,
      max: e.max,
      source: e.source,
      ...(e.bounds ? { bounds: e.bounds } : {}),
    })),
    weights: written.weights,
    sizes: {
      floatBytes,
      quantizedBytes,
      ratio: floatBytes > 0 ? quantizedBytes / floatBytes : 1,
    },
    rewrites: lowered.notes,
  };
  return { graph: out, report };
}
