// The marking phase shared by planQuantization and quantize: exclusions, the head analysis, op
// quantizers' marks, and Relu/Clip folding into their producers. No ranges are needed here.
import { ConfigError } from "@clipq/onnx/errors";
import { consumers, type Graph, type Node } from "@clipq/onnx/graph";
import type { DType, Tensor } from "@clipq/onnx/tensor";
import { inferDtypes } from "./_dtypes.ts";
import type { CheckedOptions } from "./options.ts";
import type { MarkContext } from "./registry.ts";
import { softmaxExpectations } from "./_expectation.ts";

/** What one node's quantizer marked. */
export interface Marks {
  activations: string[];
  shares: [output: string, input: string][];
  weights: { name: string; axis: number | undefined }[];
  biases: { name: string; input: string; weight: string }[];
  constants: string[];
}

export interface Analysis {
  labels: string[];
  dtypes: Map<string, DType>;
  /** Node index → why it stays float. */
  reasons: Map<number, string>;
  /** Node index → marks, for nodes that will be quantized if their ranges exist. */
  marks: Map<number, Marks>;
  /** Weighted layers (node index → weight name and channel axis). */
  weighted: Map<number, { name: string; axis: number | undefined }>;
  /** Raw outputs of the last weighted layers on paths to head outputs: never Q/DQ. */
  headTensors: Set<string>;
  /** Producer output → the Relu/Clip output it folds into. */
  fused: Map<string, string>;
}

/** Ops that filter or select detections: float under head "auto", with the inputs they filter. */
const FILTER_OPS: Readonly<Record<string, readonly number[]>> = {
  NonMaxSuppression: [0, 1],
  TopK: [0],
  NonZero: [0],
  RoiAlign: [1],
  RoiPool: [1],
  MaxRoiPool: [1],
  // A peak's index (MoveNet's keypoint heatmaps): its input decodes, like TopK's.
  ArgMax: [0],
  ArgMin: [0],
  Gather: [0],
  GatherElements: [0],
  GatherND: [0],
  If: [],
  Loop: [],
  Scan: [],
};

/** Ops that read only their input's shape: walking back through them marks nothing. */
const SHAPE_READERS = new Set(["Shape", "Size", "ConstantOfShape", "EyeLike"]);

const FUSABLE_ACTIVATIONS = new Set(["Relu", "Clip"]);

export function label(node: Node, index: number): string {
  return node.name || `${node.op}#${index}`;
}

/**
 * Marks a (lowered) graph: what stays float and why, what each quantized node needs.
 *
 * @param graph The graph as lowered for onnxruntime.
 * @param o Exclusions, head outputs, registry.
 * @param rawHeads Tensors the lowering already made raw head outputs (its head MatMuls' float
 *   outputs): head tensors whatever the walk back from the outputs finds.
 */
export function analyze(
  graph: Graph,
  o: Pick<CheckedOptions, "exclude" | "headOutputs" | "registry">,
  rawHeads: ReadonlySet<string> = new Set(),
): Analysis {
  const labels = graph.nodes.map(label);
  const dtypes = inferDtypes(graph);
  const reasons = new Map<number, string>();
  const producer = new Map<string, number>();
  graph.nodes.forEach((n, i) => n.outputs.forEach((t) => t && producer.set(t, i)));
  const users = consumers(graph);
  const outputNames = new Set(graph.outputs.map((v) => v.name));
  const isFloat = (t: string) => dtypes.get(t) === "float32";

  // Exclusions the user asked for.
  const names = new Set(o.exclude.names);
  const ops = new Set(o.exclude.ops);
  graph.nodes.forEach((n, i) => {
    if (names.has(labels[i]!) || (n.name && names.has(n.name))) reasons.set(i, "excluded by name");
    else if (ops.has(n.op)) reasons.set(i, `excluded by op type ${n.op}`);
    else if (o.exclude.pattern?.test(labels[i]!)) {
      reasons.set(i, `excluded by pattern ${o.exclude.pattern}`);
    }
  });

  // Weighted layers, whatever their exclusion.
  const weighted = new Map<number, { name: string; axis: number | undefined }>();
  graph.nodes.forEach((n, i) => {
    if (n.domain !== "" && n.domain !== "ai.onnx") return;
    const w = o.registry.get(n.op)?.weight?.(n, graph);
    if (w) weighted.set(i, w);
  });

  // Head analysis: walk back from head outputs and from what filter ops filter, through float
  // tensors and the bool ones comparisons give (CenterNet's peak test Equal(h, MaxPool(h))), to
  // the last weighted layers. Everything passed on the way decodes detections.
  const headTensors = new Set<string>(rawHeads);
  if (o.exclude.head === "auto") {
    // A DFL expectation (Softmax → 1×1 Conv 0..15) decodes boxes: the walk goes through it.
    const expectations = softmaxExpectations(graph.nodes, graph.initializers);
    const starts: string[] = [];
    const heads = o.headOutputs ?? graph.outputs.map((v) => v.name);
    for (const h of heads) {
      if (!outputNames.has(h)) {
        throw new ConfigError(
          "headOutputs",
          `expected graph outputs (${[...outputNames].join(", ")}) but found "${h}"`,
        );
      }
      starts.push(h);
    }
    graph.nodes.forEach((n, i) => {
      const filtered = FILTER_OPS[n.op];
      if (!filtered) return;
      if (!reasons.has(i)) reasons.set(i, `${n.op} filters or selects detections (head: auto)`);
      for (const k of filtered) if (n.inputs[k]) starts.push(n.inputs[k]!);
    });
    const seen = new Set<string>();
    while (starts.length > 0) {
      const t = starts.pop()!;
      if (seen.has(t) || !(isFloat(t) || dtypes.get(t) === "bool")) continue;
      seen.add(t);
      const p = producer.get(t);
      if (p === undefined) continue;
      const n = graph.nodes[p]!;
      if (weighted.has(p) && !expectations.has(n)) {
        headTensors.add(t);
        continue;
      }
      if (expectations.has(n) && !reasons.has(p)) {
        reasons.set(
          p,
          "takes the expectation of a Softmax over box bins (DFL), decoding boxes (head: auto)",
        );
      }
      if (SHAPE_READERS.has(n.op)) continue;
      if (!reasons.has(p)) {
        reasons.set(p, "decodes detections after the last weighted layer (head: auto)");
      }
      for (const i of n.inputs) if (i && !graph.initializers.has(i)) starts.push(i);
    }
  }

  // Marks.
  const marks = new Map<number, Marks>();
  graph.nodes.forEach((n, i) => {
    if (reasons.has(i)) return;
    if (n.domain !== "" && n.domain !== "ai.onnx") {
      reasons.set(i, `op ${n.domain}::${n.op} is not quantized`);
      return;
    }
    const outs = n.outputs.filter(Boolean);
    if (outs.length > 0 && outs.every((t) => dtypes.has(t) && !isFloat(t))) {
      reasons.set(i, "computes shapes or indices (no float32 output)");
      return;
    }
    const q = o.registry.get(n.op);
    if (!q) {
      reasons.set(i, `no quantizer for op ${n.op}`);
      return;
    }
    const m: Marks = { activations: [], shares: [], weights: [], biases: [], constants: [] };
    const ctx: MarkContext = {
      graph,
      isFloat,
      initializer: (t: string): Tensor | undefined => graph.initializers.get(t),
      activation: (t) => void m.activations.push(t),
      share: (out, inp) => void m.shares.push([out, inp]),
      weight: (t, axis) => void m.weights.push({ name: t, axis }),
      bias: (t, input, weight) => void m.biases.push({ name: t, input, weight }),
      constant: (t) => void m.constants.push(t),
    };
    const why = q.mark(n, ctx);
    if (why) reasons.set(i, why);
    else marks.set(i, m);
  });

  // Relu/Clip after a quantized producer that absorbs it: no Q/DQ between them, one after.
  const fused = new Map<string, string>();
  graph.nodes.forEach((n, i) => {
    if (!FUSABLE_ACTIVATIONS.has(n.op) || !marks.has(i)) return;
    const x = n.inputs[0]!;
    const y = n.outputs[0]!;
    const p = producer.get(x);
    if (p === undefined || !marks.has(p)) return;
    if (!o.registry.get(graph.nodes[p]!.op)?.fusesActivation) return;
    if (outputNames.has(x) || headTensors.has(x) || (users.get(x)?.length ?? 0) !== 1) return;
    const pm = marks.get(p)!;
    pm.activations = pm.activations.filter((t) => t !== x);
    marks.set(i, { activations: [y], shares: [], weights: [], biases: [], constants: [] });
    fused.set(x, y);
  });

  // Raw head outputs get no Q/DQ: their producers leave them float, and a quantized consumer
  // (outside the decode region) that needs them quantized stays float instead.
  for (const [i, m] of marks) {
    const n = graph.nodes[i]!;
    const needs = m.activations.filter((t) => headTensors.has(t) && !n.outputs.includes(t));
    if (needs.length > 0) {
      marks.delete(i);
      reasons.set(
        i,
        `input "${needs[0]}" is the raw output of a head layer, kept float (head: auto)`,
      );
      continue;
    }
    m.activations = m.activations.filter((t) => !headTensors.has(t));
  }
  return { labels, dtypes, reasons, marks, weighted, headTensors, fused };
}
