// QOperator form, derived from the QDQ graph the way onnxruntime fuses it: DQ→Conv→[Relu/Clip]→Q
// becomes QLinearConv, DQ→MatMul→Q becomes QLinearMatMul, Add/Mul/Concat/LeakyRelu/Sigmoid/pools
// become onnxruntime's com.microsoft QLinear* ops, DQ→op→Q around ops that only move values
// runs the op on uint8, and Q(DQ(x)) with equal parameters is x. What remains is float between
// DequantizeLinear and QuantizeLinear, which onnxruntime runs as it is.
import { attrFloat, attrString, type Graph, type Node, opsetOf } from "@clipq/onnx/graph";
import { toFloat64 } from "@clipq/onnx/tensor";

const PASS_THROUGH = new Set([
  "Reshape",
  "Transpose",
  "Flatten",
  "Squeeze",
  "Unsqueeze",
  "Slice",
  "Resize",
  "MaxPool",
]);

/** Float op → the com.microsoft op that runs it on quantized inputs (onnxruntime contrib ops). */
const MICROSOFT: Readonly<Record<string, string>> = {
  Add: "QLinearAdd",
  Mul: "QLinearMul",
  Concat: "QLinearConcat",
  LeakyRelu: "QLinearLeakyRelu",
  Sigmoid: "QLinearSigmoid",
  AveragePool: "QLinearAveragePool",
  GlobalAveragePool: "QLinearGlobalAveragePool",
};

export function foldQOperator(graph: Graph): Graph {
  let nodes: (Node | undefined)[] = [...graph.nodes];
  const outputNames = new Set(graph.outputs.map((v) => v.name));
  const scalar = (name: string | undefined): number | undefined => {
    const t = name ? graph.initializers.get(name) : undefined;
    return t && t.dims.length === 0 ? toFloat64(t)[0] : undefined;
  };
  const index = () => {
    const prod = new Map<string, number>();
    const cons = new Map<string, number[]>();
    nodes.forEach((n, i) => {
      if (!n) return;
      for (const o of n.outputs) if (o) prod.set(o, i);
      for (const x of n.inputs) if (x) cons.set(x, [...(cons.get(x) ?? []), i]);
    });
    return { prod, cons };
  };
  let { prod, cons } = index();
  const dqOf = (t: string | undefined): Node | undefined => {
    const i = t ? prod.get(t) : undefined;
    const n = i === undefined ? undefined : nodes[i];
    return n?.op === "DequantizeLinear" ? n : undefined;
  };
  /** The single Q consuming t (t not a graph output), or undefined. */
  const soleQ = (t: string): [number, Node] | undefined => {
    const c = cons.get(t) ?? [];
    if (c.length !== 1 || outputNames.has(t)) return undefined;
    const n = nodes[c[0]!]!;
    return n.op === "QuantizeLinear" ? [c[0]!, n] : undefined;
  };
  /** Follows t through a Relu/Clip that the quantized range already implements, to its Q. */
  const outputQ = (t: string): { q: [number, Node]; act?: number } | undefined => {
    const direct = soleQ(t);
    if (direct) return { q: direct };
    const c = cons.get(t) ?? [];
    if (c.length !== 1 || outputNames.has(t)) return undefined;
    const act = nodes[c[0]!]!;
    if (act.op !== "Relu" && act.op !== "Clip") return undefined;
    const q = soleQ(act.outputs[0]!);
    if (!q) return undefined;
    const s = scalar(q[1].inputs[1]);
    const z = scalar(q[1].inputs[2]) ?? 0;
    if (s === undefined) return undefined;
    const lowest = (0 - z) * s;
    const highest = (255 - z) * s;
    let lo = 0, hi = Infinity;
    if (act.op === "Clip") {
      // Bounds computed at run time (not initializers or attributes) cannot be checked: keep Clip.
      const [, mn, mx] = act.inputs;
      if ((mn && scalar(mn) === undefined) || (mx && scalar(mx) === undefined)) return undefined;
      lo = mn ? scalar(mn)! : attrFloat(act, "min", -Infinity);
      hi = mx ? scalar(mx)! : attrFloat(act, "max", Infinity);
    }
    // Saturation to [lowest, highest] implements the activation when the range lies inside it.
    if (lowest < lo - s / 2 || highest > hi + s / 2) return undefined;
    return { q, act: c[0]! };
  };

  // Conv / MatMul → QLinearConv / QLinearMatMul.
  nodes.forEach((n, i) => {
    if (!n || (n.op !== "Conv" && n.op !== "MatMul")) return;
    const x = dqOf(n.inputs[0]);
    const w = dqOf(n.inputs[1]);
    if (!x || !w || x.inputs.length < 3 || w.inputs.length < 3) return;
    // QLinearMatMul takes per-column scales only for a 2-D B.
    const wData = graph.initializers.get(w.inputs[0]!);
    if (n.op === "MatMul" && scalar(w.inputs[1]) === undefined && wData?.dims.length !== 2) return;
    let bias: string | undefined;
    if (n.op === "Conv" && n.inputs[2]) {
      const b = dqOf(n.inputs[2]);
      if (!b) return;
      bias = b.inputs[0];
    }
    const out = outputQ(n.outputs[0]!);
    if (!out) return;
    const [qi, q] = out.q;
    const inputs = [
      ...x.inputs,
      ...w.inputs,
      q.inputs[1]!,
      q.inputs[2]!,
      ...(bias ? [bias] : []),
    ];
    nodes[i] = {
      ...n,
      op: n.op === "Conv" ? "QLinearConv" : "QLinearMatMul",
      inputs,
      outputs: [q.outputs[0]!],
    };
    nodes[qi] = undefined;
    if (out.act !== undefined) nodes[out.act] = undefined;
  });
  ({ prod, cons } = index());

  // Elementwise and unary ops onnxruntime runs on uint8 as com.microsoft QLinear* ops.
  let usesMicrosoft = false;
  nodes.forEach((n, i) => {
    if (!n || !(n.op in MICROSOFT)) return;
    const ins = n.op === "Concat"
      ? n.inputs
      : n.inputs.slice(0, n.op === "Add" || n.op === "Mul" ? 2 : 1);
    const dqs = ins.map(dqOf);
    if (dqs.some((d) => !d || d.inputs.length < 3 || scalar(d.inputs[1]) === undefined)) return;
    if (n.op === "AveragePool" || n.op === "GlobalAveragePool" || n.op === "Concat") {
      if (n.outputs.length !== 1) return;
    }
    const q = soleQ(n.outputs[0]!);
    if (!q) return;
    const triples = dqs.flatMap((d) => d!.inputs.slice(0, 3));
    const y = [q[1].inputs[1]!, q[1].inputs[2]!];
    const attributes = n.op === "GlobalAveragePool"
      ? { ...n.attributes, channels_last: { type: "int" as const, value: 0 } }
      : n.attributes;
    nodes[i] = {
      ...n,
      op: MICROSOFT[n.op]!,
      domain: "com.microsoft",
      inputs: n.op === "Concat" ? [...y, ...triples] : [...triples, ...y],
      outputs: [q[1].outputs[0]!],
      attributes,
    };
    nodes[q[0]] = undefined;
    usesMicrosoft = true;
  });
  ({ prod, cons } = index());

  // Ops that only move values run on uint8 when the Q after them repeats the DQ's parameters.
  const u8MaxPool = (opsetOf(graph) ?? 0) >= 12;
  nodes.forEach((n, i) => {
    if (!n || !PASS_THROUGH.has(n.op) || (n.op === "MaxPool" && !u8MaxPool)) return;
    // Nearest Resize only picks values; linear and cubic interpolate, which on the integers rounds
    // otherwise than DQ → Resize → Q (and cubic on uint8 failed at onnxruntime's level disabled).
    if (n.op === "Resize" && attrString(n, "mode", "nearest") !== "nearest") return;
    const x = dqOf(n.inputs[0]);
    const outs = n.outputs.filter(Boolean);
    if (!x || outs.length !== 1) return;
    const q = soleQ(outs[0]!);
    if (!q || q[1].inputs[1] !== x.inputs[1] || q[1].inputs[2] !== x.inputs[2]) return;
    nodes[i] = { ...n, inputs: [x.inputs[0]!, ...n.inputs.slice(1)], outputs: [q[1].outputs[0]!] };
    nodes[q[0]] = undefined;
  });
  ({ prod, cons } = index());

  // Q(DQ(x)) with the same parameters is x.
  const alias = new Map<string, string>();
  nodes.forEach((n, i) => {
    if (!n || n.op !== "QuantizeLinear" || outputNames.has(n.outputs[0]!)) return;
    const d = dqOf(n.inputs[0]);
    if (!d || d.inputs[1] !== n.inputs[1] || d.inputs[2] !== n.inputs[2]) return;
    alias.set(n.outputs[0]!, d.inputs[0]!);
    nodes[i] = undefined;
  });
  const resolve = (t: string): string => {
    let r = t;
    while (alias.has(r)) r = alias.get(r)!;
    return r;
  };
  nodes = nodes.map((n) => n && { ...n, inputs: n.inputs.map(resolve) });

  // Remove what nothing reads any more.
  let live = nodes.filter((n): n is Node => !!n);
  for (let changed = true; changed;) {
    const read = new Set(graph.outputs.map((v) => v.name));
    for (const n of live) for (const x of n.inputs) read.add(x);
    const next = live.filter((n) => n.outputs.some((o) => o && read.has(o)));
    changed = next.length !== live.length;
    live = next;
  }
  const read = new Set(graph.outputs.map((v) => v.name));
  for (const n of live) for (const x of n.inputs) read.add(x);
  const initializers = new Map([...graph.initializers].filter(([k]) => read.has(k)));
  const opsetImports =
    usesMicrosoft && !graph.opsetImports.some((o) => o.domain === "com.microsoft")
      ? [...graph.opsetImports, { domain: "com.microsoft", version: 1 }]
      : graph.opsetImports;
  return { ...graph, nodes: live, initializers, opsetImports };
}
