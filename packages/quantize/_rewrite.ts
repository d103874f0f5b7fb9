// Rewrites before marking. Div by a constant becomes Mul by its reciprocal: onnxruntime has
// QLinearMul but no quantized Div, so a Div (HardSwish's x·relu6(x+3)/6 in PP-OCR and MobileNetV3)
// would run in float between a DequantizeLinear and a QuantizeLinear. Names stay, so calibrated
// ranges still apply; x·(1/c) differs from x/c by at most one float32 rounding.
import type { Attribute, Graph, Node } from "@clipq/onnx/graph";
import { float32, toFloat32 } from "@clipq/onnx/tensor";
import type { CheckedOptions } from "./options.ts";
import { label } from "./_analyze.ts";

export function divToMul(graph: Graph, exclude: CheckedOptions["exclude"]): Graph {
  const inits = new Map(graph.initializers);
  const reciprocal = new Map<string, string>();
  let changed = false;
  const names = new Set(exclude.names);
  const nodes = graph.nodes.map((n, i): Node => {
    if (n.op !== "Div" || (n.domain !== "" && n.domain !== "ai.onnx")) return n;
    const lab = label(n, i);
    if (names.has(lab) || exclude.ops.includes("Div") || exclude.pattern?.test(lab)) return n;
    const c = n.inputs[1];
    const t = c ? graph.initializers.get(c) : undefined;
    if (!c || !t || t.dtype !== "float32") return n;
    const v = toFloat32(t);
    if (v.some((x) => x === 0 || !Number.isFinite(x))) return n;
    let r = reciprocal.get(c);
    if (!r) {
      r = `${c}_reciprocal`;
      for (let k = 1; inits.has(r); k++) r = `${c}_reciprocal_${k}`;
      inits.set(r, float32(t.dims, v.map((x) => 1 / x)));
      reciprocal.set(c, r);
    }
    changed = true;
    return { ...n, op: "Mul", inputs: [n.inputs[0]!, r] };
  });
  return changed ? { ...graph, nodes, initializers: inits } : graph;
}

/**
 * Attributes whose value is the ONNX default, or that the node's other attributes make unused, per
 * op: writing them only costs bytes.
 */
const DEFAULTS: Readonly<
  Record<string, Readonly<Record<string, (a: Attribute, n: Node) => boolean>>>
> = (() => {
  const ones = (a: Attribute) => a.type === "ints" && a.value.every((v) => v === 1);
  const zeros = (a: Attribute) => a.type === "ints" && a.value.every((v) => v === 0);
  const int = (v: number) => (a: Attribute) => a.type === "int" && a.value === v;
  // Float attributes are float32 in the file: 0.2 is stored as fround(0.2).
  const float = (v: number) => (a: Attribute) => a.type === "float" && a.value === Math.fround(v);
  const str = (v: string) => (a: Attribute) => a.type === "string" && a.value === v;
  const notSet = (a: Attribute) => a.type === "string" && a.value === "NOTSET";
  // Resize reads nearest_mode only in mode nearest (the default) and cubic_coeff_a only in cubic.
  const resizeMode = (n: Node) => {
    const m = n.attributes.mode;
    return m?.type === "string" ? m.value : "nearest";
  };
  const unlessMode =
    (mode: string, isDefault: (a: Attribute) => boolean) => (a: Attribute, n: Node) =>
      isDefault(a) || resizeMode(n) !== mode;
  const conv = { dilations: ones, strides: ones, pads: zeros, group: int(1), auto_pad: notSet };
  // A Conv's kernel_shape, when present, must equal its weight's spatial dims, which is what
  // onnxruntime and onnx take in its absence: it says nothing the weight does not.
  const anything = () => true;
  return {
    Conv: { ...conv, kernel_shape: anything },
    QLinearConv: { ...conv, kernel_shape: anything },
    ConvTranspose: { ...conv, output_padding: zeros },
    MaxPool: {
      dilations: ones,
      strides: ones,
      pads: zeros,
      ceil_mode: int(0),
      storage_order: int(0),
      auto_pad: notSet,
    },
    AveragePool: {
      strides: ones,
      pads: zeros,
      ceil_mode: int(0),
      count_include_pad: int(0),
      auto_pad: notSet,
    },
    Gemm: { alpha: float(1), beta: float(1), transA: int(0), transB: int(0) },
    // (Resize at opset 10 has only mode; from 11 half_pixel is the default transformation.)
    Resize: {
      mode: str("nearest"),
      nearest_mode: unlessMode("nearest", str("round_prefer_floor")),
      coordinate_transformation_mode: str("half_pixel"),
      exclude_outside: int(0),
      extrapolation_value: float(0),
      cubic_coeff_a: unlessMode("cubic", float(-0.75)),
    },
    HardSigmoid: { alpha: float(0.2), beta: float(0.5) },
    LeakyRelu: { alpha: float(0.01) },
    DepthToSpace: { mode: str("DCR") },
    Pad: { mode: str("constant") },
    Flatten: { axis: int(1) },
    // (Per-tensor Q/DQ ignore axis; per-channel ones default to 1, a MatMul weight's axis.)
    QuantizeLinear: { axis: int(1) },
    DequantizeLinear: { axis: int(1) },
  };
})();

/** Float/int64 initializers up to this many elements are merged when equal. */
const SHARED_CONSTANT = 16;

/**
 * Output compaction that does not change what the graph computes: attributes equal to the ONNX
 * default are left out (a Conv's `dilations: [1, 1]` and `group: 1`, its kernel_shape …), and small
 * float/int64 initializers of equal dims and values are one initializer (PP-OCR repeats Clip's 0
 * and 6 per block, NanoDet its Split sizes).
 */
export function compactGraph(graph: Graph): Graph {
  // Names read inside subgraphs (If/Loop bodies) are never aliased.
  const nested = graph.nodes.some((n) =>
    Object.values(n.attributes).some((a) => a.type === "graph" || a.type === "graphs")
  );
  const read = new Set(graph.outputs.map((v) => v.name));
  for (const v of graph.inputs) read.add(v.name);
  const groups = new Map<string, string[]>();
  for (const [k, t] of graph.initializers) {
    const size = t.dims.reduce((a, b) => a * b, 1);
    if (
      nested || read.has(k) || size > SHARED_CONSTANT ||
      (t.dtype !== "float32" && t.dtype !== "int64")
    ) continue;
    const values = t.dtype === "int64" ? [...(t.data as BigInt64Array)] : [...toFloat32(t)];
    const key = `${t.dtype}[${t.dims}]${values.map((x) => (Object.is(x, -0) ? "-0" : x))}`;
    groups.set(key, [...(groups.get(key) ?? []), k]);
  }
  // A merged constant gets a short neutral name: keeping one member's (PP-OCR's
  // "p2o.helper.constant.3") would mislabel the others and repeat a long name at every reader.
  const used = new Set<string>([...graph.initializers.keys(), ...read]);
  for (const n of graph.nodes) for (const t of [...n.inputs, ...n.outputs]) used.add(t);
  const alias = new Map<string, string>();
  const inits = new Map(graph.initializers);
  let counter = 0;
  for (const names of groups.values()) {
    if (names.length < 2) continue;
    let name: string;
    do name = `k${(counter++).toString(36)}`; while (used.has(name));
    inits.set(name, graph.initializers.get(names[0]!)!);
    for (const k of names) {
      alias.set(k, name);
      inits.delete(k);
    }
  }
  const nodes = graph.nodes.map((n): Node => {
    const defaults = n.domain === "" || n.domain === "ai.onnx" || n.op === "QLinearConv"
      ? DEFAULTS[n.op]
      : undefined;
    const attributes = defaults
      ? Object.fromEntries(Object.entries(n.attributes).filter(([k, a]) => !defaults[k]?.(a, n)))
      : n.attributes;
    return { ...n, inputs: n.inputs.map((x) => alias.get(x) ?? x), attributes };
  });
  return { ...graph, nodes, initializers: inits };
}

/** Tensor names read anywhere in a graph's subgraphs (If/Loop bodies), recursively. */
function nestedNames(graph: Graph, into: Set<string>): Set<string> {
  for (const n of graph.nodes) {
    for (const a of Object.values(n.attributes)) {
      const subs = a.type === "graph" ? [a.value] : a.type === "graphs" ? a.value : [];
      for (const s of subs) {
        for (const m of s.nodes) for (const t of [...m.inputs, ...m.outputs]) into.add(t);
        nestedNames(s, into);
      }
    }
  }
  return into;
}

/** Names in order of length, then alphabet: a … Z, a0 … ZZ, a00 … (a letter first). */
function* shortNames(): Generator<string> {
  const first = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
  const rest = "0123456789" + first;
  for (let len = 1;; len++) {
    const total = first.length * rest.length ** (len - 1);
    for (let i = 0; i < total; i++) {
      let k = i, s = "";
      for (let j = 1; j < len; j++) {
        s = rest[k % rest.length]! + s;
        k = Math.floor(k / rest.length);
      }
      yield first[k]! + s;
    }
  }
}

/**
 * Renames every tensor not in `keep` (what the quantizer and its rewrites added: quantized
 * weights, scales, zero points, Q/DQ outputs) to the shortest free name, the most-read first: the
 * file repeats a tensor's name at each reader, so this is where its structure bytes go. The
 * model's own tensors, the graph's inputs and outputs and whatever a subgraph reads keep theirs.
 */
export function minifyNames(graph: Graph, keep: ReadonlySet<string>): Graph {
  const fixed = nestedNames(graph, new Set(keep));
  for (const v of [...graph.inputs, ...graph.outputs]) fixed.add(v.name);
  const uses = new Map<string, number>();
  const count = (t: string) => {
    if (t && !fixed.has(t)) uses.set(t, (uses.get(t) ?? 0) + 1);
  };
  for (const k of graph.initializers.keys()) count(k);
  for (const n of graph.nodes) for (const t of [...n.outputs, ...n.inputs]) count(t);
  if (uses.size === 0) return graph;
  // Most uses first; ties keep first-seen order (Map order), so names are deterministic.
  const order = [...uses.keys()].map((t, i) => [t, uses.get(t)!, i] as const)
    .sort((a, b) => b[1] - a[1] || a[2] - b[2]);
  const taken = new Set(fixed);
  for (const n of graph.nodes) for (const t of [...n.inputs, ...n.outputs]) taken.add(t);
  for (const k of graph.initializers.keys()) taken.add(k);
  const names = shortNames();
  const rename = new Map<string, string>();
  for (const [t] of order) {
    let name = names.next().value!;
    while (taken.has(name) && !uses.has(name)) name = names.next().value!;
    rename.set(t, name);
  }
  // A short name may already belong to a tensor being renamed; all renames apply at once.
  const to = (t: string) => rename.get(t) ?? t;
  return {
    ...graph,
    nodes: graph.nodes.map((n) => ({ ...n, inputs: n.inputs.map(to), outputs: n.outputs.map(to) })),
    initializers: new Map([...graph.initializers].map(([k, t]) => [to(k), t])),
    valueInfo: graph.valueInfo.map((v) => ({ ...v, name: to(v.name) })),
  };
}
