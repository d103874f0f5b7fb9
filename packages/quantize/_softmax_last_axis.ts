// Ultralytics' DFL takes a Softmax over axis 1 of [N, 16, 4, anchors] and then a 1×1 Conv with the
// weights 0..15. onnxruntime's Softmax on an axis other than the last transposes around its kernel:
// on [1, 16, 4, 8400] it took 8.9 ms where the same values through a last-axis Softmax and a
// MatMul by [16, 1] took 0.66 ms (level all, this machine). Both stay float under head "auto";
// the rewrite moves the bins to the last axis (Transpose, which onnxruntime merges with the
// export's own Transpose before it), takes the Softmax there, the expectation as a MatMul, and
// transposes the single output channel back — the same softmax values, and the 16 products summed
// in the MatMul's order instead of the Conv's (a difference of float rounding, ~1e-6 px).
import {
  attrInt,
  attrInts,
  freshName,
  type Graph,
  type Node,
  node,
  opsetOf,
} from "@clipq/onnx/graph";
import { float32, toFloat32 } from "@clipq/onnx/tensor";
import { softmaxExpectations } from "./_expectation.ts";

/** The graph with each DFL Softmax(axis 1) → 1×1 Conv taken over the last axis; notes say where. */
export function softmaxLastAxis(graph: Graph): { graph: Graph; notes: string[] } {
  if ((opsetOf(graph) ?? 0) < 13) return { graph, notes: [] }; // older Softmax flattens from axis
  const expectations = softmaxExpectations(graph.nodes, graph.initializers);
  if (expectations.size === 0) return { graph, notes: [] };
  const producer = new Map<string, Node>();
  const readers = new Map<string, number>();
  for (const n of graph.nodes) {
    for (const t of n.outputs) if (t) producer.set(t, n);
    for (const t of n.inputs) if (t) readers.set(t, (readers.get(t) ?? 0) + 1);
  }
  const outputs = new Set(graph.outputs.map((v) => v.name));
  const taken = new Set<string>();
  const inits = new Map(graph.initializers);
  const replace = new Map<Node, Node[]>();
  const notes: string[] = [];
  for (const conv of expectations) {
    const p = producer.get(conv.inputs[0] ?? "");
    const w = inits.get(conv.inputs[1] ?? "");
    const bias = conv.inputs[2];
    if (
      conv.op !== "Conv" || p?.op !== "Softmax" || !w || w.dims.length !== 4 ||
      ![1, -3].includes(attrInt(p, "axis", -1)) || readers.get(p.outputs[0]!) !== 1 ||
      outputs.has(p.outputs[0]!) || attrInt(conv, "group", 1) !== 1 ||
      (attrInts(conv, "strides") ?? []).some((v) => v !== 1) ||
      (attrInts(conv, "pads") ?? []).some((v) => v !== 0) ||
      (attrInts(conv, "dilations") ?? []).some((v) => v !== 1) ||
      (conv.attributes.auto_pad !== undefined) || (bias && !inits.has(bias))
    ) {
      continue;
    }
    const bins = w.dims[1]!;
    const x = p.inputs[0]!, y = conv.outputs[0]!;
    const xLast = freshName(graph, `${x}_bins_last`, taken);
    const sLast = freshName(graph, `${p.outputs[0]}_bins_last`, taken);
    const yLast = freshName(graph, `${y}_bins_last`, taken);
    const wMat = freshName(graph, `${conv.inputs[1]}_as_matmul`, taken);
    inits.set(wMat, float32([bins, 1], toFloat32(w)));
    const perm = (v: number[]) => ({ perm: { type: "ints" as const, value: v } });
    const nodes = [
      node({
        name: "",
        op: "Transpose",
        inputs: [x],
        outputs: [xLast],
        attributes: perm([0, 2, 3, 1]),
      }),
      node({
        name: p.name,
        op: "Softmax",
        inputs: [xLast],
        outputs: [sLast],
        attributes: { axis: { type: "int", value: -1 } },
      }),
      node({ name: conv.name, op: "MatMul", inputs: [sLast, wMat], outputs: [yLast] }),
    ];
    let last = yLast;
    if (bias) {
      last = freshName(graph, `${y}_bias_bins_last`, taken);
      nodes.push(node({ name: "", op: "Add", inputs: [yLast, bias], outputs: [last] }));
    }
    nodes.push(
      node({
        name: "",
        op: "Transpose",
        inputs: [last],
        outputs: [y],
        attributes: perm([0, 3, 1, 2]),
      }),
    );
    replace.set(p, []);
    replace.set(conv, nodes);
    notes.push(
      `${
        conv.name || "Conv"
      }: DFL Softmax over axis 1 → Softmax over the last axis + MatMul (onnxruntime's Softmax on an inner axis is slow)`,
    );
  }
  if (replace.size === 0) return { graph, notes: [] };
  return {
    graph: {
      ...graph,
      nodes: graph.nodes.flatMap((n) => replace.get(n) ?? [n]),
      initializers: inits,
    },
    notes,
  };
}
