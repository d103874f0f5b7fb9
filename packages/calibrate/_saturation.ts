// Reader bounds: the interval outside which no reader of a tensor can tell its values apart.
//
// A clipping activation bounds what it writes (clip_bounds.ts); it also bounds what its input
// needs. A conv output read only by HardSigmoid matters on [−3, 3] alone; one read by a hard-swish
// x·Clip(x + 3, 0, 6) matters above −3 alone (below it the gate is 0 and so is the product).
// Clamping the tensor to that interval changes no output, so its int8 range may stop there: a
// calibration range of [−98, 70] in front of a hard-swish wastes more than half the u8 levels on
// values that all give 0.
import { attrFloat, attrString, consumers, type Graph, type Node } from "@clipq/onnx";
import { toFloat64 } from "@clipq/onnx/tensor";

/** Values below lo or above hi are indistinguishable to every reader (clamping them is exact). */
export interface ReaderBound {
  lo: number;
  hi: number;
}

const ALL: ReaderBound = { lo: -Infinity, hi: Infinity };

/** Ops that pass values through unchanged in order (monotone, elementwise or selecting). */
const PASS_THROUGH = new Set([
  "MaxPool",
  "Reshape",
  "Transpose",
  "Flatten",
  "Squeeze",
  "Unsqueeze",
  "Identity",
  "Concat",
]);

/**
 * Reader bounds of every float tensor the graph computes or takes as input, from its readers
 * backwards. A tensor that is a graph output, or has any reader not listed here, gets (−∞, ∞).
 *
 * @param graph The model (nodes in topological order).
 * @returns Tensor name → bound, only for tensors with at least one finite side.
 */
export function readerBounds(graph: Graph): Map<string, ReaderBound> {
  const users = consumers(graph);
  const outputs = new Set(graph.outputs.map((v) => v.name));
  const producer = new Map<string, Node>();
  for (const n of graph.nodes) for (const o of n.outputs) if (o) producer.set(o, n);
  const bound = new Map<string, ReaderBound>();
  const scalar = (name: string | undefined): number | undefined => {
    const t = name ? graph.initializers.get(name) : undefined;
    if (!t || !["float32", "float64", "float16"].includes(t.dtype)) return undefined;
    const v = toFloat64(t);
    return v.length === 1 && Number.isFinite(v[0]!) ? v[0] : undefined;
  };
  const of = (name: string | undefined): ReaderBound => (name && bound.get(name)) || ALL;
  /** x at which a gate computed from x becomes 0 and stays 0 below: Relu(x + c), Clip(x + c, 0, _), HardSigmoid(x). */
  const gateZeroBelow = (gate: string, x: string): number | undefined => {
    const g = producer.get(gate);
    if (!g || g.domain !== "") return undefined;
    if (g.op === "HardSigmoid" && g.inputs[0] === x) {
      const alpha = attrFloat(g, "alpha", 0.2), beta = attrFloat(g, "beta", 0.5);
      return alpha > 0 ? -beta / alpha : undefined;
    }
    if (g.op !== "Relu" && g.op !== "Clip") return undefined;
    if (
      g.op === "Clip" && (g.inputs[1] ? scalar(g.inputs[1]) : attrFloat(g, "min", -Infinity)) !== 0
    ) {
      return undefined;
    }
    const t = g.inputs[0]!;
    if (t === x) return 0;
    const add = producer.get(t);
    if (!add || add.op !== "Add" || add.domain !== "") return undefined;
    const [a, b] = add.inputs;
    const c = a === x ? scalar(b) : b === x ? scalar(a) : undefined;
    return c === undefined ? undefined : -c;
  };
  /** What reader n of x tolerates. */
  const tolerates = (n: Node, x: string): ReaderBound => {
    if (n.domain !== "") return ALL;
    const y = of(n.outputs[0]);
    if (n.outputs.filter(Boolean).length !== 1) return ALL;
    const first = n.inputs[0] === x && n.inputs.slice(1).every((i) => i !== x);
    if (n.op === "Resize" && first && attrString(n, "mode", "nearest") === "nearest") return y;
    if (PASS_THROUGH.has(n.op)) {
      return n.op === "Concat" || first ? y : ALL;
    }
    if (n.op === "Relu" && first) return { lo: Math.max(0, y.lo), hi: y.hi > 0 ? y.hi : Infinity };
    if (n.op === "Clip" && first) {
      const mn = n.inputs[1] ? scalar(n.inputs[1]) : attrFloat(n, "min", -Infinity);
      const mx = n.inputs[2] ? scalar(n.inputs[2]) : attrFloat(n, "max", Infinity);
      if (mn === undefined || mx === undefined || !(mn <= mx)) return ALL;
      const lo = Math.max(mn, y.lo), hi = Math.min(mx, y.hi);
      return lo <= hi ? { lo, hi } : { lo: mn, hi: mx };
    }
    if (n.op === "HardSigmoid" && first) {
      const alpha = attrFloat(n, "alpha", 0.2), beta = attrFloat(n, "beta", 0.5);
      if (!(alpha > 0)) return ALL;
      const lo = Math.max(0, y.lo), hi = Math.min(1, y.hi);
      return lo <= hi ? { lo: (lo - beta) / alpha, hi: (hi - beta) / alpha } : ALL;
    }
    if (n.inputs.length !== 2) return ALL;
    const [a, b] = n.inputs as [string, string];
    const other = a === x ? b : b === x ? a : undefined;
    if (other === undefined || other === x) return ALL;
    const c = scalar(other);
    if (c !== undefined) {
      // y = x + c, x − c, x·c, x / c with c > 0: x's bound is y's mapped back.
      if (n.op === "Add") return { lo: y.lo - c, hi: y.hi - c };
      if (n.op === "Sub" && a === x) return { lo: y.lo + c, hi: y.hi + c };
      if (n.op === "Mul" && c > 0) return { lo: y.lo / c, hi: y.hi / c };
      if (n.op === "Div" && a === x && c > 0) return { lo: y.lo * c, hi: y.hi * c };
      return ALL;
    }
    if (n.op === "Mul") {
      // x · gate(x) with the gate 0 for x ≤ g: the product is 0 there whatever x is.
      const g = gateZeroBelow(other, x);
      if (g !== undefined) return { lo: g, hi: Infinity };
    }
    return ALL;
  };
  const visit = (x: string): void => {
    if (outputs.has(x)) return;
    const readers = users.get(x) ?? [];
    if (readers.length === 0) return;
    let lo = Infinity, hi = -Infinity;
    for (const r of readers) {
      const t = tolerates(r, x);
      lo = Math.min(lo, t.lo);
      hi = Math.max(hi, t.hi);
    }
    if (lo > -Infinity || hi < Infinity) bound.set(x, { lo, hi });
  };
  for (let i = graph.nodes.length - 1; i >= 0; i--) {
    for (const o of graph.nodes[i]!.outputs) if (o) visit(o);
  }
  for (const v of graph.inputs) if (!graph.initializers.has(v.name)) visit(v.name);
  return bound;
}
