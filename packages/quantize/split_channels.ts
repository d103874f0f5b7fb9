/**
 * Channel splitting: an exact rewrite that gives the input of a depthwise convolution one int8 scale
 * per group of channels instead of one for all of them.
 *
 * onnxruntime's int8 convolutions take one scale per input tensor. Where a convolution P (group 1)
 * feeds a depthwise convolution D through channel-wise ops only (PP-LCNet's hard-swish
 * x·clip(x + 3, 0, 6)/6 and its learnable affine a·h + b), a few channels of D's input can span ten
 * times the range of the others: on PP-OCRv4 det the input of the first stride-2 depthwise conv
 * spans [−7, 931] (in units of 6× the hard-swish) while its median channel stays below 90, so most
 * channels are quantized with 20–30 of the 256 levels, and a depthwise 3×3 filter, whose weights
 * nearly cancel, amplifies that rounding noise. Quantizing that one tensor alone (weights and every
 * other tensor float) takes the float model's output map to 6.3 dB SQNR.
 *
 * No per-channel scale can pass through the hard-swish (it is not positively homogeneous, so
 * cross-layer equalization does not apply), but the channels can be separated: P, the ops between,
 * and D are each split into groups of channels with similar ranges, each group's tensors get their
 * own calibrated range, and a Concat joins D's outputs. The Concat puts the groups' channels side
 * by side, so the channel order after it is permuted; the permutation is carried through the
 * channel-wise ops after D (their per-channel constants, depthwise weights) into the input channels
 * of the next group-1 convolutions, which undo it. In float the rewritten graph computes the same
 * values; only the int8 grids change.
 *
 * Groups come from per-channel ranges measured on calibration data: channels sorted by span
 * (max(x, 0) − min(x, 0)) are cut into at most `groups` runs minimizing Σ size·(widest span)² — the
 * total rounding noise power when each group's scale covers its widest channel — and a region is
 * split only when that noise falls by at least `minGainDb` against one scale for all channels.
 *
 * Measured on PP-OCRv4 det (9 photos, clip-bounds + loss-aware MSE, the pipeline's calibrate and
 * quantize steps): at 320×320 two regions split (p2o.Conv.2 → Conv.3 as 29 + 3 channels, Conv.8 →
 * Conv.9 as 88 + 8) and the int8 output map goes from 6.3 to 11.9 dB SQNR, binarized-map IoU 0.76 →
 * 0.92. At 640×640 (p2o.Conv.2 → Conv.3 as 27 + 5, Conv.28 → Conv.29 as 354 + 30) every backbone
 * and neck tensor after the split is 1.2–2.8 dB closer to float (the neck Concat 10.9 → 12.4 dB), but
 * the output map is not (10.4 → 9.7 dB, IoU 0.90 → 0.89, one text box of 15 lost), and the int8
 * model is ~15 % slower (31.5 → 37 ms: odd channel counts, the extra Concat). So it is opt-in
 * (`calibrate.splitChannels`), not a default. NanoDet has no such region (its depthwise outputs meet
 * Concat and channel shuffles, not a group-1 conv).
 *
 * @module
 */
import { attrInt, type Graph, type Node } from "@clipq/onnx/graph";
import { float32, type Tensor, toFloat32 } from "@clipq/onnx/tensor";
import { ConfigError } from "@clipq/onnx/errors";

/** A convolution → channel-wise ops → depthwise convolution region that can be split. */
export interface SplitRegion {
  /** The group-1 convolution whose output channels are split. */
  conv: string;
  /** The depthwise convolution at the end of the region. */
  depthwise: string;
  /** The depthwise convolution's input tensor: its per-channel ranges decide the groups. */
  tensor: string;
  /** Number of channels. */
  channels: number;
}

/** Per-channel observed ranges of a tensor (channel axis 1). */
export interface ChannelRanges {
  min: ArrayLike<number>;
  max: ArrayLike<number>;
}

/** Options of {@linkcode splitChannels}. */
export interface SplitChannelsOptions {
  /** Per-channel ranges of each region's `tensor` (from {@linkcode splitRegions}). */
  channelRanges: ReadonlyMap<string, ChannelRanges>;
  /** Largest number of groups per region (2 or more). */
  groups?: number;
  /** Smallest reduction of the rounding-noise estimate, in dB, for a region to be split. */
  minGainDb?: number;
}

/** Defaults of {@linkcode splitChannels}. */
export const splitDefaults = {
  groups: 2,
  minGainDb: 6,
} satisfies Omit<SplitChannelsOptions, "channelRanges">;

/** One region that was split. */
export interface ChannelSplit extends SplitRegion {
  /** Original channel indices of each group, narrowest group first. */
  groups: number[][];
  /** Estimated rounding-noise reduction of the split, in dB. */
  gainDb: number;
}

/** Result of {@linkcode splitChannels}. */
export interface SplitChannelsResult {
  graph: Graph;
  splits: ChannelSplit[];
}

const UNARY = new Set([
  "Relu",
  "Clip",
  "Sigmoid",
  "HardSigmoid",
  "HardSwish",
  "LeakyRelu",
  "Identity",
]);
const BINARY = new Set(["Add", "Sub", "Mul", "Div"]);

type ConstKind = "scalar" | "channel" | undefined;

/** Whether an initializer broadcasts as one value or as one value per channel of a [N, C, H, W] tensor. */
function constKind(t: Tensor | undefined, channels: number): ConstKind {
  if (!t || t.dtype !== "float32") return undefined;
  const size = t.dims.reduce((a, b) => a * b, 1);
  if (size === 1) return "scalar";
  const d = t.dims;
  // [C, 1, 1] or [1, C, 1, 1]: per channel of an NCHW tensor. ([C] would broadcast along W.)
  if (
    size === channels && d.length >= 3 && d.length <= 4 && d.at(-1) === 1 && d.at(-2) === 1 &&
    d.at(-3) === channels && (d.length === 3 || d[0] === 1)
  ) return "channel";
  return undefined;
}

interface Region {
  p: Node;
  chain: Node[];
  d: Node;
  /** Nodes after D that read permuted tensors (channel-wise ops, depthwise convs, group-1 convs). */
  after: Node[];
  channels: number;
}

function isDepthwise(n: Node, g: Graph, channels: number): boolean {
  const w = g.initializers.get(n.inputs[1] ?? "");
  return n.op === "Conv" && attrInt(n, "group", 1) === channels && !!w && w.dims[0] === channels &&
    w.dims[1] === 1;
}

/** A channel-wise op on region tensors: every other input a scalar or per-channel constant. */
function channelWise(n: Node, g: Graph, inRegion: Set<string>, channels: number): boolean {
  if (n.domain !== "" && n.domain !== "ai.onnx") return false;
  if (n.outputs.length !== 1) return false;
  if (UNARY.has(n.op)) {
    if (!inRegion.has(n.inputs[0]!)) return false;
    return n.inputs.slice(1).every((t) => !t || constKind(g.initializers.get(t), 1) === "scalar");
  }
  if (BINARY.has(n.op)) {
    return n.inputs.length === 2 && n.inputs.some((t) => inRegion.has(t)) &&
      n.inputs.every((t) =>
        inRegion.has(t) || constKind(g.initializers.get(t), channels) !== undefined
      );
  }
  return false;
}

function regionFrom(
  g: Graph,
  pi: number,
  readers: Map<string, number[]>,
  outputs: Set<string>,
): Region | undefined {
  const p = g.nodes[pi]!;
  const w = g.initializers.get(p.inputs[1] ?? "");
  if (p.op !== "Conv" || attrInt(p, "group", 1) !== 1 || !w || w.dtype !== "float32") {
    return undefined;
  }
  if (p.inputs[2] && !g.initializers.has(p.inputs[2])) return undefined;
  const channels = w.dims[0]!;
  const inRegion = new Set([p.outputs[0]!]);
  const chain: Node[] = [];
  let d: Node | undefined;
  // Nodes are in topological order: everything reading a region tensor comes after P.
  const members = new Set<number>([pi]);
  for (let i = pi + 1; i < g.nodes.length; i++) {
    const n = g.nodes[i]!;
    if (!n.inputs.some((t) => inRegion.has(t))) continue;
    if (
      !d && isDepthwise(n, g, channels) && inRegion.has(n.inputs[0]!) &&
      !n.inputs.slice(1).some((t) => inRegion.has(t)) &&
      (!n.inputs[2] || g.initializers.has(n.inputs[2]))
    ) {
      d = n;
      members.add(i);
      continue;
    }
    if (!channelWise(n, g, inRegion, channels)) return undefined;
    chain.push(n);
    members.add(i);
    inRegion.add(n.outputs[0]!);
  }
  if (!d) return undefined;
  // Every region tensor stays inside the region; the depthwise conv reads the last one.
  for (const t of inRegion) {
    if (outputs.has(t)) return undefined;
    if ((readers.get(t) ?? []).some((i) => !members.has(i))) return undefined;
  }
  // After D, the permuted channels flow through channel-wise ops to group-1 convs.
  const permuted = new Set([d.outputs[0]!]);
  const after: Node[] = [];
  const di = g.nodes.indexOf(d);
  for (let i = di + 1; i < g.nodes.length; i++) {
    const n = g.nodes[i]!;
    if (!n.inputs.some((t) => permuted.has(t))) continue;
    const wn = g.initializers.get(n.inputs[1] ?? "");
    if (
      n.op === "Conv" && attrInt(n, "group", 1) === 1 && permuted.has(n.inputs[0]!) && wn &&
      wn.dtype === "float32" && wn.dims[1] === channels && !n.inputs.slice(1).some((t) =>
        permuted.has(t)
      )
    ) {
      after.push(n);
      continue;
    }
    if (
      isDepthwise(n, g, channels) && permuted.has(n.inputs[0]!) &&
      !n.inputs.slice(1).some((t) => permuted.has(t)) &&
      (!n.inputs[2] || g.initializers.has(n.inputs[2]))
    ) {
      after.push(n);
      permuted.add(n.outputs[0]!);
      continue;
    }
    if (!channelWise(n, g, permuted, channels)) return undefined;
    after.push(n);
    permuted.add(n.outputs[0]!);
  }
  for (const t of permuted) {
    if (outputs.has(t)) return undefined;
    // A permuted tensor read by nothing would be fine, but one read by an op we did not follow is not.
    if ((readers.get(t) ?? []).some((i) => !after.includes(g.nodes[i]!))) return undefined;
  }
  // A region with no permuted reader at all ends at a graph output or nowhere: leave it alone.
  if (!after.some((n) => n.op === "Conv" && attrInt(n, "group", 1) === 1)) return undefined;
  return { p, chain, d, after, channels };
}

function regions(g: Graph): Region[] {
  const readers = new Map<string, number[]>();
  g.nodes.forEach((n, i) => {
    for (const t of n.inputs) if (t) readers.set(t, [...(readers.get(t) ?? []), i]);
  });
  const outputs = new Set(g.outputs.map((o) => o.name));
  return g.nodes.flatMap((_, i) => regionFrom(g, i, readers, outputs) ?? []);
}

/**
 * The regions of a graph that {@linkcode splitChannels} can split: a group-1 Conv whose output
 * reaches a depthwise Conv through channel-wise ops only (Relu, Clip, HardSigmoid, …, Add/Sub/Mul/Div
 * with scalar or per-channel constants or each other), whose output in turn reaches group-1 Convs
 * through channel-wise ops and depthwise Convs only. Measure each region's `tensor` per channel.
 *
 * @param graph The float graph (BatchNormalization folded, weights as initializers).
 * @returns The regions, in graph order.
 *
 * @example A pointwise conv, a Relu and a depthwise conv feeding a pointwise conv
 * ```ts
 * import { splitRegions } from "@clipq/quantize/split-channels";
 * import { emptyGraph, node } from "@clipq/onnx/graph";
 * import { float32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({
 *   inputs: [{ name: "x", dtype: "float32", shape: [1, 2, 4, 4] }],
 *   outputs: [{ name: "y", dtype: "float32" }],
 *   initializers: new Map([
 *     ["wp", float32([2, 2, 1, 1], [1, 0, 0, 1])],
 *     ["wd", float32([2, 1, 1, 1], [1, 1])],
 *     ["wq", float32([1, 2, 1, 1], [1, 1])],
 *   ]),
 *   nodes: [
 *     node({ name: "p", op: "Conv", inputs: ["x", "wp"], outputs: ["a"] }),
 *     node({ name: "r", op: "Relu", inputs: ["a"], outputs: ["b"] }),
 *     node({ name: "d", op: "Conv", inputs: ["b", "wd"], outputs: ["c"], attributes: { group: { type: "int", value: 2 } } }),
 *     node({ name: "q", op: "Conv", inputs: ["c", "wq"], outputs: ["y"] }),
 *   ],
 * });
 * assert.deepEqual(splitRegions(g), [{ conv: "p", depthwise: "d", tensor: "b", channels: 2 }]);
 * ```
 */
export function splitRegions(graph: Graph): SplitRegion[] {
  return regions(graph).map((r) => ({
    conv: r.p.name,
    depthwise: r.d.name,
    tensor: r.d.inputs[0]!,
    channels: r.channels,
  }));
}

/**
 * Groups of channels by span: the channels sorted by span are cut into at most `maxGroups` runs
 * minimizing Σ size·(widest span)² (the rounding-noise power when each group's scale covers its
 * widest channel), by dynamic programming.
 *
 * @param spans Each channel's span (max(x, 0) − min(x, 0)).
 * @param maxGroups Largest number of groups.
 * @returns The groups (original channel indices, narrowest group first) and the noise reduction
 * against one group, in dB.
 *
 * @example Three narrow channels and one wide one
 * ```ts
 * import { channelGroups } from "@clipq/quantize/split-channels";
 * import assert from "node:assert/strict";
 * const { groups, gainDb } = channelGroups([1, 10, 1, 1], 2);
 * assert.deepEqual(groups, [[0, 2, 3], [1]]);
 * assert.equal(gainDb.toFixed(2), (10 * Math.log10(400 / 103)).toFixed(2));
 * ```
 */
export function channelGroups(
  spans: ArrayLike<number>,
  maxGroups: number,
): { groups: number[][]; gainDb: number } {
  const c = spans.length;
  const order = Array.from({ length: c }, (_, i) => i).sort((a, b) =>
    spans[a]! - spans[b]! || a - b
  );
  const s = order.map((i) => spans[i]!);
  const one = c * s[c - 1]! ** 2;
  // best[k][j]: least cost of the first j sorted channels in k groups; cut[k][j]: where the last starts.
  const best = [new Float64Array(c + 1).fill(Infinity)];
  best[0]![0] = 0;
  const cut: Int32Array[] = [new Int32Array(c + 1)];
  for (let k = 1; k <= Math.min(maxGroups, c); k++) {
    const b = new Float64Array(c + 1).fill(Infinity);
    const ct = new Int32Array(c + 1);
    for (let j = 1; j <= c; j++) {
      for (let i = k - 1; i < j; i++) {
        const v = best[k - 1]![i]! + (j - i) * s[j - 1]! ** 2;
        if (v < b[j]!) [b[j], ct[j]] = [v, i];
      }
    }
    best.push(b);
    cut.push(ct);
  }
  let k = 1;
  for (let m = 2; m < best.length; m++) if (best[m]![c]! < best[k]![c]!) k = m;
  const groups: number[][] = [];
  for (let j = c, m = k; m > 0; m--) {
    const i = cut[m]![j]!;
    groups.unshift(order.slice(i, j).sort((a, b) => a - b));
    j = i;
  }
  const cost = best[k]![c]!;
  return { groups, gainDb: cost > 0 && one > 0 ? 10 * Math.log10(one / cost) : 0 };
}

/** Rows (axis 0) `idx` of a weight or bias. */
function rows(t: Tensor, idx: readonly number[]): Tensor {
  const x = toFloat32(t);
  const inner = t.dims.slice(1).reduce((a, b) => a * b, 1);
  const out = new Float32Array(idx.length * inner);
  idx.forEach((c, j) => out.set(x.subarray(c * inner, (c + 1) * inner), j * inner));
  return float32([idx.length, ...t.dims.slice(1)], out);
}

/** Axis-1 slices `idx` of a [O, I, …] weight. */
function columns(t: Tensor, idx: readonly number[]): Tensor {
  const x = toFloat32(t);
  const [o, i] = [t.dims[0]!, t.dims[1]!];
  const inner = t.dims.slice(2).reduce((a, b) => a * b, 1);
  const out = new Float32Array(o * idx.length * inner);
  for (let r = 0; r < o; r++) {
    idx.forEach((c, j) => {
      const from = (r * i + c) * inner;
      out.set(x.subarray(from, from + inner), (r * idx.length + j) * inner);
    });
  }
  return float32([o, idx.length, ...t.dims.slice(2)], out);
}

/** A per-channel constant's values at `idx`, in its own shape with C = idx.length. */
function channelSlice(t: Tensor, idx: readonly number[]): Tensor {
  const x = toFloat32(t);
  const dims = t.dims.map((d) => (d === 1 ? 1 : idx.length));
  return float32(dims, Float32Array.from(idx, (c) => x[c]!));
}

/**
 * Splits each region whose depthwise input has channels of very different ranges into groups of
 * channels, each with its own tensors (and so its own int8 scale), joined by a Concat after the
 * depthwise convolution; the channel permutation this makes is undone in the input channels of the
 * next group-1 convolutions. Exact in float.
 *
 * @param graph The float graph.
 * @param options Per-channel ranges of each region's tensor, number of groups, least gain.
 * @returns The rewritten graph and the regions split.
 * @throws {ConfigError} On bad options.
 *
 * @example One wide channel gets its own group
 * ```ts
 * import { splitChannels } from "@clipq/quantize/split-channels";
 * import { emptyGraph, node } from "@clipq/onnx/graph";
 * import { float32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({
 *   inputs: [{ name: "x", dtype: "float32", shape: [1, 3, 4, 4] }],
 *   outputs: [{ name: "y", dtype: "float32" }],
 *   initializers: new Map([
 *     ["wp", float32([3, 3, 1, 1], [1, 0, 0, 0, 1, 0, 0, 0, 50])],
 *     ["wd", float32([3, 1, 1, 1], [1, 1, 1])],
 *     ["wq", float32([1, 3, 1, 1], [1, 2, 3])],
 *   ]),
 *   nodes: [
 *     node({ name: "p", op: "Conv", inputs: ["x", "wp"], outputs: ["a"] }),
 *     node({ name: "r", op: "Relu", inputs: ["a"], outputs: ["b"] }),
 *     node({ name: "d", op: "Conv", inputs: ["b", "wd"], outputs: ["c"], attributes: { group: { type: "int", value: 3 } } }),
 *     node({ name: "q", op: "Conv", inputs: ["c", "wq"], outputs: ["y"] }),
 *   ],
 * });
 * const channelRanges = new Map([["b", { min: [0, 0, 0], max: [1, 1, 50] }]]);
 * // One scale for all: 3·50² of noise power; split: 2·1² + 50², 4.8 dB less.
 * const { graph, splits } = splitChannels(g, { channelRanges, minGainDb: 3 });
 * assert.deepEqual(splits[0]!.groups, [[0, 1], [2]]);
 * assert.equal(graph.nodes.filter((n) => n.op === "Concat").length, 1);
 * ```
 */
export function splitChannels(graph: Graph, options: SplitChannelsOptions): SplitChannelsResult {
  const o = { ...splitDefaults, ...options };
  if (!Number.isInteger(o.groups) || o.groups < 2) {
    throw new ConfigError("groups", `expected an integer ≥ 2; found ${o.groups}`);
  }
  if (!Number.isFinite(o.minGainDb) || o.minGainDb < 0) {
    throw new ConfigError("minGainDb", `expected a number ≥ 0; found ${o.minGainDb}`);
  }
  const splits: ChannelSplit[] = [];
  // One region at a time on the graph so far: a region's P may be the conv that undoes the previous
  // region's permutation (PP-LCNet: dw → pw → hard-swish → dw), its input channels permuted first.
  let g = graph;
  const tried = new Set<string>();
  for (;;) {
    const r = regions(g).find((x) => !tried.has(x.p.name));
    if (!r) break;
    tried.add(r.p.name);
    const tensor = r.d.inputs[0]!;
    const cr = o.channelRanges.get(tensor);
    if (!cr) continue;
    if (cr.min.length !== r.channels || cr.max.length !== r.channels) {
      throw new ConfigError(
        `channelRanges.${tensor}`,
        `expected ${r.channels} per-channel values; found ${cr.min.length} minima and ${cr.max.length} maxima`,
      );
    }
    const spans = Array.from(
      { length: r.channels },
      (_, c) => Math.max(cr.max[c]!, 0) - Math.min(cr.min[c]!, 0),
    );
    if (spans.some((v) => !Number.isFinite(v))) continue;
    const { groups, gainDb } = channelGroups(spans, o.groups);
    if (groups.length < 2 || gainDb < o.minGainDb) continue;
    splits.push({
      conv: r.p.name,
      depthwise: r.d.name,
      tensor,
      channels: r.channels,
      groups,
      gainDb,
    });
    g = splitOne(g, r, groups);
  }
  if (splits.length === 0) return { graph, splits };
  const used = new Set(g.nodes.flatMap((n) => n.inputs));
  const inits = new Map(
    [...g.initializers].filter(([t]) =>
      used.has(t) || g.outputs.some((x) => x.name === t) || g.inputs.some((x) => x.name === t)
    ),
  );
  // Shapes recorded for tensors that are gone go (permuted ones keep their shape).
  const live = new Set([...g.nodes.flatMap((n) => n.outputs), ...g.inputs.map((i) => i.name)]);
  const valueInfo = g.valueInfo.filter((v) => live.has(v.name));
  return { graph: { ...g, initializers: inits, valueInfo }, splits };
}

/** Splits one region into `groups` of channels (see {@linkcode splitChannels}). */
function splitOne(graph: Graph, r: Region, groups: number[][]): Graph {
  const inits = new Map(graph.initializers);
  const replace = new Map<Node, Node[]>();
  const taken = new Set<string>([
    ...inits.keys(),
    ...graph.nodes.flatMap((n) => [n.name, ...n.outputs]),
    ...graph.inputs.map((i) => i.name),
  ]);
  const fresh = (base: string) => {
    let name = base;
    for (let k = 1; taken.has(name); k++) name = `${base}_${k}`;
    taken.add(name);
    return name;
  };
  // The split part: P, the chain and D once per group, on that group's channels.
  const groupOutputs: string[] = [];
  const clones = new Map<Node, Node[]>([
    [r.p, []],
    ...r.chain.map((n) => [n, []] as [Node, Node[]]),
    [r.d, []],
  ]);
  groups.forEach((idx, k) => {
    const rename = new Map<string, string>();
    const sliced = (t: string) => {
      const c = inits.get(t);
      if (constKind(c, r.channels) !== "channel") return t;
      const name = fresh(`${t}/g${k}`);
      inits.set(name, channelSlice(c!, idx));
      return name;
    };
    const conv = (n: Node) => {
      const w = fresh(`${n.inputs[1]}/g${k}`);
      inits.set(w, rows(inits.get(n.inputs[1]!)!, idx));
      const inputs = [rename.get(n.inputs[0]!) ?? n.inputs[0]!, w];
      if (n.inputs[2]) {
        const b = fresh(`${n.inputs[2]}/g${k}`);
        inits.set(b, rows(inits.get(n.inputs[2])!, idx));
        inputs.push(b);
      }
      const out = fresh(`${n.outputs[0]}/g${k}`);
      rename.set(n.outputs[0]!, out);
      const attributes = n === r.d
        ? { ...n.attributes, group: { type: "int" as const, value: idx.length } }
        : n.attributes;
      return { ...n, name: fresh(`${n.name}/g${k}`), inputs, outputs: [out], attributes };
    };
    clones.get(r.p)!.push(conv(r.p));
    for (const n of r.chain) {
      const out = fresh(`${n.outputs[0]}/g${k}`);
      const inputs = n.inputs.map((t) => rename.get(t) ?? (t ? sliced(t) : t));
      rename.set(n.outputs[0]!, out);
      clones.get(n)!.push({ ...n, name: fresh(`${n.name}/g${k}`), inputs, outputs: [out] });
    }
    const dk = conv(r.d);
    clones.get(r.d)!.push(dk);
    groupOutputs.push(dk.outputs[0]!);
  });
  for (const [n, cs] of clones) replace.set(n, cs);
  replace.get(r.d)!.push({
    name: fresh(`${r.d.name}/concat`),
    op: "Concat",
    domain: "",
    inputs: groupOutputs,
    outputs: [r.d.outputs[0]!],
    attributes: { axis: { type: "int", value: 1 } },
  });

  // The permuted part: new channel j holds old channel perm[j].
  const perm = groups.flat();
  const permuted = (t: string, how: "rows" | "columns" | "channel") => {
    const name = fresh(`${t}/permuted`);
    const c = inits.get(t)!;
    inits.set(
      name,
      how === "rows" ? rows(c, perm) : how === "columns" ? columns(c, perm) : channelSlice(c, perm),
    );
    return name;
  };
  for (const n of r.after) {
    let inputs: string[];
    if (n.op === "Conv" && attrInt(n, "group", 1) === 1) {
      inputs = n.inputs.map((t, i) => (i === 1 ? permuted(t, "columns") : t));
    } else if (n.op === "Conv") {
      inputs = n.inputs.map((t, i) => (i >= 1 && t ? permuted(t, "rows") : t));
    } else {
      inputs = n.inputs.map((t) =>
        t && constKind(inits.get(t), r.channels) === "channel" ? permuted(t, "channel") : t
      );
    }
    replace.set(n, [{ ...n, inputs }]);
  }
  const nodes = graph.nodes.flatMap((n) => replace.get(n) ?? [n]);
  return { ...graph, nodes, initializers: inits };
}
