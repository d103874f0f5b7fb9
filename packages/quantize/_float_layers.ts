// Float layers between quantized neighbours stay float in onnxruntime.
//
// onnxruntime (from level "basic" on) quantizes a float Conv, ConvTranspose or Gemm itself
// when it reads a DequantizeLinear with a scalar scale and its output goes, without branching
// (Relu or Clip between allowed), to a QuantizeLinear: its WeightBiasQuantization transformer gives
// the layer symmetric per-tensor int8 weights, and the layer is fused into a QLinearConv like any
// other. A layer the quantizer leaves float there — excluded by name, op or pattern, or reverted by
// the accuracy fallback — ran int8 after all, on a coarser weight grid than the quantized layers
// get (BlazeFace with its 32 depthwise convs excluded: all 32 ran as QLinearConv). Such a layer
// now reads its input through a DequantizeLinear of its own whose scale and zero point repeat the
// same value for every channel (axis 1): the same numbers, in a per-channel form that neither that
// transformer nor the QLinearConv fusion takes.
import { attrInt, consumers, freshName, type Graph, type Node, producers } from "@clipq/onnx/graph";
import { tensor, toFloat64 } from "@clipq/onnx/tensor";

const LAYERS = new Set(["Conv", "ConvTranspose", "Gemm"]);

/** Does `node`'s single output reach a QuantizeLinear through nothing but Relu/Clip, unbranched? */
function reachesQuantize(node: Node, readers: Map<string, Node[]>, outputs: Set<string>): boolean {
  let current = node;
  for (;;) {
    const out = current.outputs.filter(Boolean);
    if (out.length !== 1 || outputs.has(out[0]!)) return false;
    const next = readers.get(out[0]!) ?? [];
    if (next.length !== 1) return false;
    const reader = next[0]!;
    if (reader.op === "QuantizeLinear") return true;
    if (reader.op !== "Relu" && reader.op !== "Clip") return false;
    current = reader;
  }
}

/** The length of axis 1 of the layer's input, from its weight; undefined when it cannot be told. */
function inputChannels(node: Node, weightDims: readonly number[]): number | undefined {
  if (node.op === "Conv") return weightDims[1]! * attrInt(node, "group", 1);
  if (node.op === "ConvTranspose") return weightDims[0];
  // Gemm: A is [M, K] (axis 1 is K, B's shared axis) unless transposed.
  if (attrInt(node, "transA", 0) !== 0) return undefined;
  return attrInt(node, "transB", 0) === 0 ? weightDims[0] : weightDims[1];
}

/**
 * Gives every float Conv/ConvTranspose/Gemm that onnxruntime would quantize on its own (see the
 * module comment) a per-channel copy of its input's DequantizeLinear.
 *
 * @param graph A QDQ or QOperator graph as the quantizer writes it.
 * @returns The graph, with those layers reading their own DequantizeLinear (unchanged if none).
 */
export function keepFloatLayersFloat(graph: Graph): Graph {
  const producer = producers(graph);
  const readers = consumers(graph);
  const outputs = new Set(graph.outputs.map((v) => v.name));
  const taken = new Set<string>();
  const fresh = (base: string) => freshName(graph, base, taken);
  const inits = new Map(graph.initializers);
  const vectors = new Map<string, string>(); // scale or zero point, length → its per-channel copy
  const perChannel = (name: string, length: number): string => {
    const key = `${name}\u0000${length}`;
    let out = vectors.get(key);
    if (!out) {
      const t = graph.initializers.get(name)!;
      const value = toFloat64(t)[0]!;
      out = fresh(`${name}_per_channel`);
      inits.set(out, tensor(t.dtype, [length], new Array(length).fill(value)));
      vectors.set(key, out);
    }
    return out;
  };
  const before = new Map<Node, Node>();
  const rewired = new Map<Node, Node>();
  for (const n of graph.nodes) {
    if (!LAYERS.has(n.op) || n.domain !== "") continue;
    const [x, w] = n.inputs;
    const weight = w ? graph.initializers.get(w) : undefined;
    const dq = x ? producer.get(x) : undefined;
    if (weight?.dtype !== "float32" || dq?.op !== "DequantizeLinear" || dq.domain !== "") continue;
    const [q, scale, zeroPoint] = dq.inputs;
    const s = scale ? graph.initializers.get(scale) : undefined;
    const z = zeroPoint ? graph.initializers.get(zeroPoint) : undefined;
    if (!s || s.data.length !== 1 || (zeroPoint && (!z || z.data.length !== 1))) continue;
    if (!reachesQuantize(n, readers, outputs)) continue;
    const channels = inputChannels(n, weight.dims);
    if (!channels) continue;
    const out = fresh(`${x}_per_channel`);
    before.set(n, {
      name: "",
      op: "DequantizeLinear",
      domain: "",
      inputs: [
        q!,
        perChannel(scale!, channels),
        ...(zeroPoint ? [perChannel(zeroPoint, channels)] : []),
      ],
      outputs: [out],
      attributes: { axis: { type: "int", value: 1 } },
    });
    rewired.set(n, { ...n, inputs: [out, ...n.inputs.slice(1)] });
  }
  if (before.size === 0) return graph;
  // A DequantizeLinear that only such layers read goes (its scalars stay for the Q before it).
  const unread = new Set<Node>();
  for (const n of rewired.keys()) {
    const dq = producer.get(n.inputs[0]!)!;
    if ((readers.get(dq.outputs[0]!) ?? []).every((r) => rewired.has(r))) unread.add(dq);
  }
  return {
    ...graph,
    initializers: inits,
    nodes: graph.nodes.flatMap((n) =>
      unread.has(n) ? [] : before.has(n) ? [before.get(n)!, rewired.get(n)!] : [n]
    ),
  };
}
