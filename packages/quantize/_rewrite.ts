// Rewrites before marking. Div by a constant becomes Mul by its reciprocal: onnxruntime has
// QLinearMul but no quantized Div, so a Div (HardSwish's x·relu6(x+3)/6 in PP-OCR and MobileNetV3)
// would run in float between a DequantizeLinear and a QuantizeLinear. Names stay, so calibrated
// ranges still apply; x·(1/c) differs from x/c by at most one float32 rounding.
import type { Graph, Node } from "@clipq/onnx/graph";
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
