/**
 * Normalization passes that put a model in the form the other passes expect, without changing what
 * it computes: Constant nodes become initializers, Identity and inference-time Dropout go away,
 * BatchNormalization folds into the Conv/ConvTranspose/Gemm before it, a ReduceMean over every
 * spatial axis becomes the GlobalAveragePool it is, dead nodes and initializers are pruned and the
 * nodes are sorted topologically.
 *
 * @module
 */
import { ConfigError } from "./errors.ts";
import {
  attrFloat,
  type Attribute,
  attrInt,
  consumers,
  freshName,
  type Graph,
  type Node,
  opsetOf,
  producers,
} from "./graph.ts";
import { inferShapes } from "./shapes.ts";
import { float32, int64, sizeOf, type Tensor, tensor, toFloat32, toFloat64 } from "./tensor.ts";
import { implicitInputs, toposort } from "./toposort.ts";

/** Options of {@linkcode normalize}: each pass can be turned off. */
export interface NormalizeOptions {
  /** Constant nodes → initializers. */
  constants?: boolean;
  /** Drop Identity and Dropout (inference) nodes, rewiring their consumers. */
  removeIdentity?: boolean;
  /** Fold BatchNormalization into a preceding Conv/ConvTranspose/Gemm it alone consumes. */
  foldBatchNorm?: boolean;
  /**
   * Fold Mul/Div by and Add/Sub of a scalar or per-channel constant into a preceding
   * Conv/ConvTranspose/Gemm whose output it alone reads (exact: the layer's weights and bias absorb
   * it). Each such node left in place would be one more int8 re-quantization.
   */
  foldAffine?: boolean;
  /**
   * ReduceMean over every spatial axis of an `[N, C, …]` tensor with keepdims → GlobalAveragePool
   * (squeeze-excite blocks written as `x.mean((2, 3), keepdim=True)` or TensorFlow's Mean):
   * onnxruntime runs GlobalAveragePool in int8 and ReduceMean only in float, between a
   * DequantizeLinear and a QuantizeLinear of the whole feature map.
   */
  globalPools?: boolean;
  /**
   * Max and Min with a scalar constant → Clip, a Min of a Max (ReLU6 written as
   * `minimum(maximum(x, 0), 6)`, as Keras exports it) → one Clip: clip-bounds reads a Clip's bounds,
   * and the quantizer folds a Clip into the layer before it. Opset ≥ 11 (Clip's bounds as inputs).
   */
  clips?: boolean;
  /**
   * Add/Sub/Mul/Div by a constant whose values are all equal (`[1, 1, 1, 3]` of one value, as
   * TensorFlow exports write an input normalization) → the same op by a scalar, or no op where it
   * is x + 0, x − 0, x · 1 or x / 1, when the constant does not widen x's shape. onnxruntime
   * broadcasts a `[…, 3]` constant along the channels-last axis one short row at a time: MoveNet's
   * Sub and Mul on its 256² RGB input took 1.2–1.7 ms each, as much as four of its convs.
   */
  uniformConstants?: boolean;
  /** Remove nodes and initializers that no graph output depends on. */
  prune?: boolean;
  /** Sort nodes topologically. */
  sort?: boolean;
}

/** Defaults of {@linkcode NormalizeOptions}: every pass on. */
export const normalizeDefaults = {
  constants: true,
  removeIdentity: true,
  foldBatchNorm: true,
  foldAffine: true,
  globalPools: true,
  clips: true,
  uniformConstants: true,
  prune: true,
  sort: true,
} satisfies Required<NormalizeOptions>;

/** What {@linkcode normalizeWithReport} did. */
export interface NormalizeReport {
  /** Constant nodes turned into initializers. */
  constantsToInitializers: number;
  /** Identity and Dropout nodes removed. */
  removed: number;
  /** BatchNormalization nodes folded into the layer before them. */
  bnFolded: number;
  /** Constant Mul/Div/Add/Sub nodes folded into the layer before them. */
  affineFolded: number;
  /** Spatial ReduceMeans written as GlobalAveragePool. */
  globalPools: number;
  /** Max/Min nodes with scalar constant bounds written as Clips. */
  clips: number;
  /** Elementwise ops by a constant of one repeated value: made scalar or, as identities, removed. */
  uniformConstants: number;
  /** Dead nodes removed. */
  pruned: number;
  /** Unused initializers removed. */
  prunedInitializers: number;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

function checkOptions(options: NormalizeOptions): Required<NormalizeOptions> {
  const o = { ...normalizeDefaults, ...options };
  for (const [k, v] of Object.entries(o)) {
    if (!(k in normalizeDefaults)) {
      throw new ConfigError(
        k,
        `unknown normalize option; expected one of ${Object.keys(normalizeDefaults).join(", ")}`,
      );
    }
    if (typeof v !== "boolean") {
      throw new ConfigError(k, `expected a boolean but found ${JSON.stringify(v)}`);
    }
  }
  return o;
}

/** Names read by subgraphs of any node: renaming or removing them would break those subgraphs. */
function subgraphUses(graph: Graph): Set<string> {
  const s = new Set<string>();
  for (const n of graph.nodes) for (const t of implicitInputs(n)) s.add(t);
  return s;
}

function constantTensor(n: Node): Tensor | undefined {
  const entries = Object.entries(n.attributes);
  if (entries.length !== 1) return undefined;
  const [key, a] = entries[0]!;
  if (key === "value" && a.type === "tensor") return a.value;
  if (key === "value_float" && (a.type === "float" || a.type === "int")) {
    return float32([], [a.value]);
  }
  if (key === "value_floats" && a.type === "floats") return float32([a.value.length], a.value);
  if (key === "value_int" && a.type === "int") return int64([], [a.value]);
  if (key === "value_ints" && a.type === "ints") return int64([a.value.length], a.value);
  if (key === "value_string" && a.type === "string") {
    return tensor("string", [], [a.value] as unknown as number[]);
  }
  if (key === "value_strings" && a.type === "strings") {
    return tensor("string", [a.value.length], [...a.value] as unknown as number[]);
  }
  return undefined; // sparse_value and unknown forms stay a Constant node
}

function constantsToInitializers(graph: Graph, report: Mutable<NormalizeReport>): Graph {
  const outputs = new Set(graph.outputs.map((o) => o.name));
  const initializers = new Map(graph.initializers);
  const nodes: Node[] = [];
  for (const n of graph.nodes) {
    const out = n.outputs[0];
    const t = n.op === "Constant" && n.domain === "" && n.outputs.length === 1 && out &&
        !outputs.has(out) && !initializers.has(out)
      ? constantTensor(n)
      : undefined;
    if (t && out) {
      initializers.set(out, t);
      report.constantsToInitializers++;
    } else nodes.push(n);
  }
  if (graph.irVersion > 0 && graph.irVersion < 4 && nodes.length < graph.nodes.length) {
    // Before IR 4 every initializer must also be a graph input.
    const listed = new Set(graph.inputs.map((v) => v.name));
    const inputs = [...graph.inputs];
    for (const [name, t] of initializers) {
      if (!listed.has(name)) inputs.push({ name, dtype: t.dtype, shape: [...t.dims] });
    }
    return { ...graph, nodes, initializers, inputs };
  }
  return { ...graph, nodes, initializers };
}

function isPassThrough(n: Node): boolean {
  if (n.domain !== "" || !n.inputs[0] || !n.outputs[0]) return false;
  if (n.op === "Identity") return n.outputs.length === 1;
  if (n.op !== "Dropout") return false;
  // The mask output must be unused and training_mode absent: then Dropout is the identity.
  return !n.outputs[1] && !n.inputs[2];
}

function removeIdentities(graph: Graph, report: Mutable<NormalizeReport>): Graph {
  const pinned = new Set([...graph.outputs.map((o) => o.name), ...subgraphUses(graph)]);
  const fixed = new Set([...graph.inputs.map((v) => v.name), ...graph.initializers.keys()]);
  // Only a tensor some node here produces can be renamed; anything else (outer scope) is fixed.
  const producedHere = new Set(graph.nodes.flatMap((n) => n.outputs));
  const alias = new Map<string, string>();
  const outRename = new Map<string, string>();
  const resolve = (t: string): string => {
    let r = t;
    for (let seen = 0; alias.has(r) && seen <= alias.size; seen++) r = alias.get(r)!;
    return r;
  };
  const kept: Node[] = [];
  for (const n of graph.nodes) {
    if (!isPassThrough(n)) {
      kept.push(n);
      continue;
    }
    const x = resolve(n.inputs[0]!);
    const y = n.outputs[0]!;
    if (!pinned.has(y)) {
      alias.set(y, x);
      report.removed++;
    } else if (
      producedHere.has(x) && !fixed.has(x) && !pinned.has(x) && !outRename.has(x) && x !== y
    ) {
      // y must keep its name (a graph output): the producer of x writes y directly instead.
      outRename.set(x, y);
      alias.set(x, y);
      report.removed++;
    } else kept.push(n);
  }
  if (report.removed === 0) return graph;
  const nodes = kept.map((n) => ({
    ...n,
    inputs: n.inputs.map((t) => (t ? resolve(t) : t)),
    outputs: n.outputs.map((t) => outRename.get(t) ?? t),
  }));
  return {
    ...graph,
    nodes,
    valueInfo: graph.valueInfo.filter((v) => !alias.has(v.name)),
  };
}

interface Fold {
  /**
   * The folded weight, float32 as the graph holds it: each product is rounded once, as it was
   * when a float64 copy was rounded afterwards, without the float64 copy (8 bytes a weight, 35 MB
   * for YOLOv3-tiny, most of whose cost was writing fresh memory).
   */
  weight: Float32Array;
  bias: Float64Array;
  biasDims: readonly number[];
  attributes?: Node["attributes"];
}

/** BN: y = (x − mean)·s + β with s = γ/√(var + ε), per channel. */
function bnScaleShift(
  graph: Graph,
  bn: Node,
): { s: Float64Array; shift: Float64Array } | undefined {
  const get = (i: number): Tensor | undefined => graph.initializers.get(bn.inputs[i] ?? "");
  const [gamma, beta, mean, variance] = [get(1), get(2), get(3), get(4)];
  if (!gamma || !beta || !mean || !variance) return undefined;
  if (![gamma, beta, mean, variance].every((t) => t.dtype === "float32" && t.dims.length === 1)) {
    return undefined;
  }
  const c = gamma.dims[0]!;
  if (![beta, mean, variance].every((t) => t.dims[0] === c)) return undefined;
  const eps = attrFloat(bn, "epsilon", 1e-5);
  const g = toFloat64(gamma), b = toFloat64(beta), m = toFloat64(mean), v = toFloat64(variance);
  const s = new Float64Array(c), shift = new Float64Array(c);
  for (let i = 0; i < c; i++) {
    s[i] = g[i]! / Math.sqrt(v[i]! + Math.fround(eps));
    shift[i] = b[i]! - m[i]! * s[i]!;
  }
  return { s, shift };
}

function foldInto(
  layer: Node,
  w: Tensor,
  bias: Tensor | undefined,
  s: Float64Array,
  shift: Float64Array,
): Fold | undefined {
  const c = s.length;
  const weight = new Float32Array(toFloat32(w));
  if (layer.op === "Conv") {
    if (w.dims[0] !== c) return undefined;
    const per = weight.length / c;
    for (let o = 0; o < c; o++) for (let k = 0; k < per; k++) weight[o * per + k]! *= s[o]!;
  } else if (layer.op === "ConvTranspose") {
    // Weight [Cin, Cout/group, …]: output channel of (i, j) is group(i)·Cout/group + j.
    const group = attrInt(layer, "group", 1);
    const cin = w.dims[0]!, coutPerGroup = w.dims[1]!;
    if (coutPerGroup * group !== c || cin % group) return undefined;
    const per = sizeOf(w.dims.slice(2));
    for (let i = 0; i < cin; i++) {
      const g = Math.floor(i / (cin / group));
      for (let j = 0; j < coutPerGroup; j++) {
        const o = g * coutPerGroup + j;
        const at = (i * coutPerGroup + j) * per;
        for (let k = 0; k < per; k++) weight[at + k]! *= s[o]!;
      }
    }
  } else {
    // Gemm: Y = α·A'·B' + β·C. Output feature n is row n of B (transB) or column n of B.
    const transB = attrInt(layer, "transB", 0) === 1;
    if (w.dims.length !== 2) return undefined;
    const [r, k] = [w.dims[0]!, w.dims[1]!];
    if ((transB ? r : k) !== c) return undefined;
    for (let i = 0; i < r; i++) {
      for (let j = 0; j < k; j++) weight[i * k + j]! *= s[transB ? i : j]!;
    }
    const beta = attrFloat(layer, "beta", 1);
    const cb = bias ? toFloat64(bias) : undefined;
    // C broadcasts to [M, N]; a 2-D C with M rows keeps its rows, anything else becomes [N].
    const rows = bias && bias.dims.length === 2 && bias.dims[0] !== 1 ? bias.dims[0]! : 1;
    if (bias && !(bias.dims.length <= 2 && (sizeOf(bias.dims) === 1 || bias.dims.at(-1) === c))) {
      return undefined;
    }
    const out = new Float64Array(rows * c);
    for (let m = 0; m < rows; m++) {
      for (let n = 0; n < c; n++) {
        const cv = cb ? (cb.length === 1 ? cb[0]! : cb.length === c ? cb[n]! : cb[m * c + n]!) : 0;
        out[m * c + n] = beta * cv * s[n]! + shift[n]!;
      }
    }
    const attributes = { ...layer.attributes };
    delete attributes.beta;
    return { weight, bias: out, biasDims: rows === 1 ? [c] : [rows, c], attributes };
  }
  const b = bias ? toFloat64(bias) : new Float64Array(c);
  if (b.length !== c) return undefined;
  const out = new Float64Array(c);
  for (let o = 0; o < c; o++) out[o] = b[o]! * s[o]! + shift[o]!;
  return { weight, bias: out, biasDims: [c] };
}

/** How many output channels a weighted layer has, and its output rank. */
function layerChannels(layer: Node, w: Tensor): { c: number; rank: number } | undefined {
  let c: number, rank: number;
  if (layer.op === "Conv" || layer.op === "ConvTranspose") {
    // A malformed weight (fewer than 3 axes) is left for validation to report.
    if (w.dims.length < 3) return undefined;
    c = layer.op === "Conv" ? w.dims[0]! : w.dims[1]! * attrInt(layer, "group", 1);
    rank = w.dims.length;
  } else {
    if (w.dims.length !== 2) return undefined;
    c = attrInt(layer, "transB", 0) === 1 ? w.dims[0]! : w.dims[1]!;
    rank = 2;
  }
  return Number.isInteger(c) && c > 0 ? { c, rank } : undefined;
}

/**
 * A constant as one value per output channel of a layer's [N, C, …] (or Gemm's [M, N]) output,
 * when broadcasting it leaves the output's shape alone: a scalar, or C values on the channel axis.
 */
function perChannel(t: Tensor, c: number, rank: number): Float64Array | undefined {
  if (t.dtype !== "float32" || t.dims.length > rank) return undefined;
  const v = toFloat64(t);
  if (v.length === 1) return new Float64Array(c).fill(v[0]!);
  // Right-aligned broadcasting: the constant's last axis lines up with the output's last.
  const axis = t.dims.length - (rank - 1);
  const ok = t.dims.every((d, j) => (j === axis ? d === c : d === 1));
  return ok && axis >= 0 ? v : undefined;
}

/**
 * A Mul/Div by, or Add/Sub of, a constant as y = x·s + shift per channel of x's producer, or
 * undefined when the node is not such an affine map of input `x`.
 */
function constantAffine(
  n: Node,
  constant: (name: string | undefined) => Tensor | undefined,
  c: number,
  rank: number,
): { x: string; s: Float64Array; shift: Float64Array } | undefined {
  if (n.domain !== "" || n.inputs.length !== 2 || n.outputs.length !== 1) return undefined;
  const [a, b] = n.inputs as [string, string];
  // Add and Mul commute; Sub and Div only fold x − c and x / c.
  const commutes = n.op === "Add" || n.op === "Mul";
  const [x, k] = constant(b) ? [a, constant(b)!] : commutes && constant(a) ? [b, constant(a)!] : [];
  if (!x || !k || constant(x)) return undefined;
  const v = perChannel(k, c, rank);
  if (!v) return undefined;
  const ones = new Float64Array(c).fill(1), zeros = new Float64Array(c);
  if (n.op === "Mul") return { x, s: v, shift: zeros };
  if (n.op === "Add") return { x, s: ones, shift: v };
  if (n.op === "Sub") return { x, s: ones, shift: v.map((e) => -e) };
  if (n.op === "Div" && v.every((e) => e !== 0 && Number.isFinite(1 / e))) {
    return { x, s: v.map((e) => 1 / e), shift: zeros };
  }
  return undefined;
}

/**
 * Folds per-channel affine maps into the Conv/ConvTranspose/Gemm whose output they alone read:
 * BatchNormalization (`bn`), and Mul/Div by or Add/Sub of a scalar or per-channel constant
 * (`affine`; PP-LCNet's learnable affine blocks, scale-and-shift layers of converted models).
 * Chains fold one after another, since the folded layer then produces the next map's input.
 */
function foldIntoLayers(
  graph: Graph,
  report: Mutable<NormalizeReport>,
  kinds: { bn: boolean; affine: boolean },
): Graph {
  const pinned = new Set([...graph.outputs.map((o) => o.name), ...subgraphUses(graph)]);
  const graphInputs = new Set(graph.inputs.map((v) => v.name));
  const readers = consumers(graph);
  const producerOf = new Map<string, number>();
  graph.nodes.forEach((n, i) => n.outputs.forEach((o) => o && producerOf.set(o, i)));
  const nodes: (Node | undefined)[] = [...graph.nodes];
  const initializers = new Map(graph.initializers);
  // Every name in use, so new weight names never collide (freshName adds what it hands out).
  const taken = new Set<string>([...initializers.keys(), ...graph.inputs.map((v) => v.name)]);
  for (const n of graph.nodes) for (const t of [n.name, ...n.inputs, ...n.outputs]) taken.add(t);
  // Weights this pass wrote: a later fold into the same layer overwrites them in place.
  const written = new Set<string>();
  const constant = (name: string | undefined): Tensor | undefined =>
    name && !graphInputs.has(name) ? initializers.get(name) : undefined;
  const uses = (name: string): number => readers.get(name)?.length ?? 0;
  let folded = 0;
  graph.nodes.forEach((op, bi) => {
    const isBn = kinds.bn && op.op === "BatchNormalization" && op.domain === "";
    if (!isBn && !(kinds.affine && ["Mul", "Add", "Sub", "Div"].includes(op.op))) return;
    if (isBn) {
      if (op.outputs.slice(1).some((o) => o) || attrInt(op, "spatial", 1) !== 1) return;
      if (attrInt(op, "training_mode", 0) !== 0) return;
    }
    // The layer is whichever producer of a non-constant input this node reads.
    const candidates = isBn ? [op.inputs[0]!] : op.inputs.filter((t) => t && !constant(t));
    if (candidates.length !== 1) return;
    const x = candidates[0]!;
    const li = producerOf.get(x);
    const layer = li === undefined ? undefined : nodes[li];
    if (
      !layer || li === undefined || !["Conv", "ConvTranspose", "Gemm"].includes(layer.op) ||
      layer.domain !== ""
    ) return;
    if (uses(x) !== 1 || pinned.has(x) || layer.outputs.length !== 1) return;
    const w = constant(layer.inputs[1]);
    const biasName = layer.inputs[2] || undefined;
    const bias = biasName ? constant(biasName) : undefined;
    if (!w || w.dtype !== "float32" || (biasName && (!bias || bias.dtype !== "float32"))) return;
    const shape = layerChannels(layer, w);
    if (!shape) return;
    const ss = isBn
      ? bnScaleShift({ ...graph, initializers }, op)
      : constantAffine(op, constant, shape.c, shape.rank);
    if (!ss || ss.s.length !== shape.c) return;
    const fold = foldInto(layer, w, bias, ss.s, ss.shift);
    if (!fold) return;
    // Reuse a tensor's name when this layer is its only reader; otherwise write a new tensor.
    const place = (old: string | undefined, base: string, t: Tensor): string => {
      const reuse = old && (written.has(old) || (uses(old) === 1 && !pinned.has(old)));
      const name = reuse ? old : freshName(graph, base, taken);
      initializers.set(name, t);
      written.add(name);
      return name;
    };
    const suffix = isBn ? "bn" : "affine";
    const wName = place(
      layer.inputs[1],
      `${layer.inputs[1]}_${suffix}`,
      float32(w.dims, fold.weight),
    );
    const bName = place(
      biasName,
      `${layer.name || op.name}.bias_${suffix}`,
      float32(fold.biasDims, Float32Array.from(fold.bias)),
    );
    const inputs = [layer.inputs[0]!, wName, bName];
    nodes[li] = {
      ...layer,
      inputs,
      outputs: [op.outputs[0]!],
      attributes: fold.attributes ?? layer.attributes,
    };
    producerOf.set(op.outputs[0]!, li);
    nodes[bi] = undefined;
    folded++;
    if (isBn) report.bnFolded++;
    else report.affineFolded++;
  });
  if (folded === 0) return graph;
  return { ...graph, nodes: nodes.filter((n): n is Node => n !== undefined), initializers };
}

/** The graph's inferred shapes, or undefined where shape inference cannot read it. */
function shapesOrUndefined(graph: Graph): ReturnType<typeof inferShapes> | undefined {
  try {
    return inferShapes(graph);
  } catch {
    return undefined;
  }
}

/**
 * ReduceMean(x, axes = 2…rank−1, keepdims = 1) → GlobalAveragePool(x), same node and output names.
 * The axes come from the attribute (opset < 18) or a constant second input (opset 18); the rank
 * from shape inference, which runs only when such a ReduceMean exists.
 */
function globalPools(graph: Graph, report: Mutable<NormalizeReport>): Graph {
  const axesOf = (n: Node): number[] | undefined => {
    const a = n.attributes.axes;
    if (a?.type === "ints") return [...a.value];
    const t = n.inputs[1] ? graph.initializers.get(n.inputs[1]) : undefined;
    return t ? [...toFloat64(t)] : undefined;
  };
  const candidates = graph.nodes.filter((n) =>
    n.op === "ReduceMean" && (n.domain ?? "") === "" && attrInt(n, "keepdims", 1) === 1 &&
    (axesOf(n)?.length ?? 0) > 0
  );
  if (candidates.length === 0) return graph;
  const shapes = shapesOrUndefined(graph);
  if (!shapes) return graph; // a graph shape inference cannot read keeps its ReduceMeans
  const rewritten = new Map<Node, Node>();
  for (const n of candidates) {
    const info = shapes.get(n.inputs[0]!);
    const rank = info?.shape?.length;
    if (!rank || rank < 3 || info.dtype !== "float32") continue;
    const axes = axesOf(n)!.map((a) => (a < 0 ? a + rank : a)).sort((a, b) => a - b);
    if (axes.length !== rank - 2 || axes.some((a, i) => a !== i + 2)) continue;
    rewritten.set(n, {
      name: n.name,
      op: "GlobalAveragePool",
      domain: "",
      inputs: [n.inputs[0]!],
      outputs: [n.outputs[0]!],
      attributes: {},
    });
  }
  if (rewritten.size === 0) return graph;
  report.globalPools += rewritten.size;
  return { ...graph, nodes: graph.nodes.map((n) => rewritten.get(n) ?? n) };
}

/**
 * Max(x, a) → Clip(x, a, ·), Min(x, b) → Clip(x, ·, b), and Min(Max(x, a), b) or Max(Min(x, b), a)
 * → Clip(x, a, b) when the inner node feeds only the outer one (a ≤ b). `a` and `b` are one-value
 * float32 initializers; the node keeps its name and output.
 */
function minMaxToClips(graph: Graph, report: Mutable<NormalizeReport>): Graph {
  if ((opsetOf(graph) ?? 1) < 11) return graph;
  const scalar = (name: string | undefined): number | undefined => {
    const t = name === undefined ? undefined : graph.initializers.get(name);
    return t && t.dtype === "float32" && sizeOf(t.dims) === 1 ? toFloat64(t)[0] : undefined;
  };
  // The computed operand and the constant bound of a Max/Min with one scalar constant input.
  const bounded = (n: Node): { x: string; bound: number; name: string } | undefined => {
    if ((n.op !== "Max" && n.op !== "Min") || n.inputs.length !== 2 || (n.domain ?? "") !== "") {
      return undefined;
    }
    const [p, q] = n.inputs as [string, string];
    if (scalar(q) !== undefined && scalar(p) === undefined) {
      return { x: p, bound: scalar(q)!, name: q };
    }
    if (scalar(p) !== undefined && scalar(q) === undefined) {
      return { x: q, bound: scalar(p)!, name: p };
    }
    return undefined;
  };
  const users = consumers(graph);
  const outputs = new Set(graph.outputs.map((v) => v.name));
  const producer = producers(graph);
  const replaced = new Map<Node, Node | null>();
  // Outer nodes first (the graph is in topological order): a Min claims the Max before it.
  for (const n of [...graph.nodes].reverse()) {
    if (replaced.has(n)) continue;
    const outer = bounded(n);
    if (!outer) continue;
    let x = outer.x;
    let lo = n.op === "Max" ? outer.name : "";
    let hi = n.op === "Min" ? outer.name : "";
    const inner = producer.get(outer.x);
    const innerBound = inner ? bounded(inner) : undefined;
    if (
      inner && innerBound && inner.op !== n.op && !replaced.has(inner) &&
      (users.get(outer.x)?.length ?? 0) === 1 && !outputs.has(outer.x)
    ) {
      const [a, b] = n.op === "Min"
        ? [innerBound.bound, outer.bound]
        : [outer.bound, innerBound.bound];
      if (a <= b) {
        x = innerBound.x;
        if (n.op === "Min") lo = innerBound.name;
        else hi = innerBound.name;
        replaced.set(inner, null);
      }
    }
    const inputs = hi ? [x, lo, hi] : [x, lo];
    replaced.set(n, {
      name: n.name,
      op: "Clip",
      domain: "",
      inputs,
      outputs: n.outputs,
      attributes: {},
    });
  }
  if (replaced.size === 0) return graph;
  report.clips += [...replaced.values()].filter((r) => r !== null).length;
  return {
    ...graph,
    nodes: graph.nodes.flatMap((n) => {
      const r = replaced.get(n);
      return r === undefined ? [n] : r === null ? [] : [r];
    }),
  };
}

/** The one value of a float32 constant with more than one value, all equal; else undefined. */
function repeatedValue(t: Tensor | undefined): number | undefined {
  if (!t || t.dtype !== "float32" || t.data.length < 2) return undefined;
  const v = t.data as Float32Array;
  for (let i = 1; i < v.length; i++) if (!Object.is(v[i], v[0])) return undefined;
  return v[0];
}

/**
 * Add/Sub/Mul/Div with one constant operand of one repeated value → the op with a rank-0 constant
 * (onnxruntime's fast scalar path), or, where the op is the identity (x + 0, x − 0, x · 1, x / 1,
 * the constant second where the op is not commutative) and `identities` is set, an Identity that
 * removeIdentities takes out (its readers then read x; a graph output keeps the scalar op). Only
 * where the constant does not widen x's shape (every one of its dims is 1 or x's dim there, its
 * rank at most x's), so the output's shape is x's either way.
 */
function uniformConstants(
  graph: Graph,
  report: Mutable<NormalizeReport>,
  o: { identities: boolean },
): Graph {
  const ops = new Set(["Add", "Sub", "Mul", "Div"]);
  const candidates = graph.nodes.filter((n) =>
    ops.has(n.op) && (n.domain ?? "") === "" && n.inputs.length === 2 &&
    n.inputs.some((x) => repeatedValue(graph.initializers.get(x)) !== undefined)
  );
  if (candidates.length === 0) return graph;
  const shapes = shapesOrUndefined(graph);
  if (!shapes) return graph; // a graph shape inference cannot read keeps its constants
  const pinned = new Set([...graph.outputs.map((o) => o.name), ...subgraphUses(graph)]);
  const initializers = new Map(graph.initializers);
  const taken = new Set<string>();
  // One scalar per constant, however many nodes read it.
  const scalars = new Map<string, string>();
  const rewritten = new Map<Node, Node>();
  for (const n of candidates) {
    const side = repeatedValue(graph.initializers.get(n.inputs[1]!)) !== undefined ? 1 : 0;
    const x = n.inputs[1 - side]!, c = graph.initializers.get(n.inputs[side]!)!;
    if (graph.initializers.has(x)) continue; // both constant: left to constant folding
    const xShape = shapes.get(x)?.shape;
    if (!xShape || shapes.get(x)?.dtype !== "float32" || c.dims.length > xShape.length) continue;
    const offset = xShape.length - c.dims.length;
    if (!c.dims.every((d, i) => d === 1 || xShape[offset + i] === d)) continue;
    const value = repeatedValue(c)!;
    // x − c and x / c are identities with c second only; x + c and x · c either way.
    const commutes = n.op === "Add" || n.op === "Mul";
    const identity = (commutes || side === 1) &&
      (n.op === "Add" || n.op === "Sub" ? value === 0 : value === 1);
    if (identity && o.identities && !pinned.has(n.outputs[0]!)) {
      // An Identity, which removeIdentities (the next pass) takes out, rewiring its readers.
      rewritten.set(n, { ...n, op: "Identity", inputs: [x], attributes: {} });
      continue;
    }
    const constant = n.inputs[side]!;
    let scalar = scalars.get(constant);
    if (!scalar) {
      scalar = freshName(graph, `${constant}_scalar`, taken);
      initializers.set(scalar, float32([], [value]));
      scalars.set(constant, scalar);
    }
    const inputs = [...n.inputs];
    inputs[side] = scalar;
    rewritten.set(n, { ...n, inputs });
  }
  if (rewritten.size === 0) return graph;
  report.uniformConstants += rewritten.size;
  return { ...graph, nodes: graph.nodes.map((n) => rewritten.get(n) ?? n), initializers };
}

function prune(graph: Graph, report: Mutable<NormalizeReport>, top: boolean): Graph {
  const producer = new Map<string, number>();
  graph.nodes.forEach((n, i) => n.outputs.forEach((o) => o && producer.set(o, i)));
  const live = new Set<number>();
  const needed = new Set<string>();
  const stack = graph.outputs.map((o) => o.name);
  while (stack.length) {
    const t = stack.pop()!;
    if (needed.has(t)) continue;
    needed.add(t);
    const p = producer.get(t);
    if (p === undefined || live.has(p)) continue;
    live.add(p);
    const n = graph.nodes[p]!;
    for (const i of [...n.inputs, ...implicitInputs(n)]) if (i) stack.push(i);
  }
  const nodes = graph.nodes.filter((_, i) => live.has(i));
  const initializers = new Map<string, Tensor>();
  for (const [k, t] of graph.initializers) if (needed.has(k)) initializers.set(k, t);
  const dropped = new Set([...graph.initializers.keys()].filter((k) => !needed.has(k)));
  report.pruned += graph.nodes.length - nodes.length;
  report.prunedInitializers += dropped.size;
  if (!report.pruned && !dropped.size) return graph;
  return {
    ...graph,
    nodes,
    initializers,
    // An input that only gave an unused initializer a default is dropped with it; real inputs stay.
    // Subgraph inputs are positional (Loop/Scan bodies), so they always stay.
    inputs: top ? graph.inputs.filter((v) => !dropped.has(v.name)) : graph.inputs,
  };
}

function tidyValueInfo(graph: Graph): Graph {
  const names = new Set<string>();
  for (const n of graph.nodes) for (const t of [...n.inputs, ...n.outputs]) names.add(t);
  const valueInfo = graph.valueInfo.filter((v) => names.has(v.name));
  return valueInfo.length === graph.valueInfo.length ? graph : { ...graph, valueInfo };
}

/**
 * Runs the normalization passes and says what each did.
 *
 * @param graph The model.
 * @param options Passes to turn off.
 * @returns The new graph and counts per pass.
 * @throws {ConfigError} On an unknown option. ModelError when sorting finds a cycle.
 *
 * @example Constant → initializer and Identity removal
 * ```ts
 * import { normalizeWithReport } from "@clipq/onnx/normalize";
 * import { emptyGraph, node } from "@clipq/onnx/graph";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({
 *   inputs: [{ name: "x", dtype: "float32", shape: [2] }],
 *   nodes: [
 *     node({ name: "c", op: "Constant", inputs: [], outputs: ["two"], attributes: { value_float: { type: "float", value: 2 } } }),
 *     node({ name: "m", op: "Mul", inputs: ["x", "two"], outputs: ["t"] }),
 *     node({ name: "i", op: "Identity", inputs: ["t"], outputs: ["y"] }),
 *   ],
 *   outputs: [{ name: "y" }],
 * });
 * const { graph, report } = normalizeWithReport(g);
 * assert.deepEqual(graph.nodes.map((n) => n.op), ["Mul"]);
 * assert.deepEqual(graph.nodes[0]?.outputs, ["y"]);
 * assert.equal(report.constantsToInitializers, 1);
 * assert.equal(report.removed, 1);
 * ```
 */
export function normalizeWithReport(
  graph: Graph,
  options: NormalizeOptions = {},
): { graph: Graph; report: NormalizeReport } {
  const o = checkOptions(options);
  const report: Mutable<NormalizeReport> = {
    constantsToInitializers: 0,
    removed: 0,
    bnFolded: 0,
    affineFolded: 0,
    globalPools: 0,
    clips: 0,
    uniformConstants: 0,
    pruned: 0,
    prunedInitializers: 0,
  };
  let g = normalizeGraph(graph, o, report, true);
  if (g === graph) g = { ...graph };
  return { graph: g, report };
}

function normalizeGraph(
  graph: Graph,
  o: Required<NormalizeOptions>,
  report: Mutable<NormalizeReport>,
  top: boolean,
): Graph {
  // Subgraphs first: what they still read from this scope decides what may change here.
  let g = normalizeSubgraphs(graph, o, report);
  if (o.constants) g = constantsToInitializers(g, report);
  // Before removeIdentities, which takes out the identities it finds (x − 0, x · 1).
  if (o.uniformConstants) {
    g = uniformConstants(g, report, { identities: o.removeIdentity });
  }
  if (o.removeIdentity) g = removeIdentities(g, report);
  if (o.foldBatchNorm || o.foldAffine) {
    g = foldIntoLayers(g, report, { bn: o.foldBatchNorm, affine: o.foldAffine });
  }
  if (o.globalPools) g = globalPools(g, report);
  if (o.clips) g = minMaxToClips(g, report);
  if (o.prune) g = prune(g, report, top);
  if (o.sort) g = toposort(g);
  return tidyValueInfo(g);
}

function normalizeSubgraphs(
  graph: Graph,
  o: Required<NormalizeOptions>,
  report: Mutable<NormalizeReport>,
): Graph {
  if (
    !graph.nodes.some((n) =>
      Object.values(n.attributes).some((a) => a.type === "graph" || a.type === "graphs")
    )
  ) {
    return graph;
  }
  const nodes = graph.nodes.map((n): Node => {
    let changed = false;
    const attributes: Record<string, Attribute> = {};
    for (const [k, a] of Object.entries(n.attributes)) {
      if (a.type === "graph") {
        attributes[k] = { type: "graph", value: normalizeGraph(a.value, o, report, false) };
        changed = true;
      } else if (a.type === "graphs") {
        attributes[k] = {
          type: "graphs",
          value: a.value.map((s) => normalizeGraph(s, o, report, false)),
        };
        changed = true;
      } else attributes[k] = a;
    }
    return changed ? { ...n, attributes } : n;
  });
  return { ...graph, nodes };
}

/**
 * Normalizes a model: Constant nodes → initializers, Identity/Dropout removed, BatchNormalization
 * folded into the Conv/ConvTranspose/Gemm before it (a BN that follows anything else stays), dead
 * nodes and initializers pruned, nodes sorted. Graph output names never change. Subgraphs (If/Loop
 * bodies) get the same passes; tensors they read from the enclosing graph keep their names.
 *
 * @param graph The model.
 * @param options Passes to turn off.
 * @returns A new graph computing the same outputs.
 * @throws {ConfigError} On an unknown option. ModelError when sorting finds a cycle.
 *
 * @example Folding a BatchNormalization
 * ```ts
 * import { normalize } from "@clipq/onnx/normalize";
 * import { ModelBuilder } from "@clipq/onnx/builder";
 * import assert from "node:assert/strict";
 * const b = new ModelBuilder();
 * b.output(b.relu(b.batchNorm(b.conv(b.input("x", [1, 3, 8, 8]), { outChannels: 4, kernel: 3 }))), "y");
 * assert.deepEqual(normalize(b.build()).nodes.map((n) => n.op), ["Conv", "Relu"]);
 * ```
 */
export function normalize(graph: Graph, options: NormalizeOptions = {}): Graph {
  return normalizeWithReport(graph, options).graph;
}
