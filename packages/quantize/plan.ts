/**
 * What quantization a graph needs before any calibration: which tensors need ranges (so calibrate
 * measures exactly those, and agrees on Relu/Clip folding), the weighted layers, and what stays
 * float and why.
 *
 * @module
 */
import type { Graph } from "@clipq/onnx/graph";
import { analyze } from "./_analyze.ts";
import { lowerGraph } from "./_lowered.ts";
import { checkOptions, type PlanOptions } from "./options.ts";

/** A weighted layer of the plan. */
export interface WeightedLayer {
  /** Node name (or `Op#index` for an unnamed node). */
  node: string;
  /** Its output tensor. */
  output: string;
  /** The weight's output-channel axis; undefined for per-tensor (1-D weights). */
  channelAxis: number | undefined;
}

/** A node that stays float. */
export interface FloatNode {
  node: string;
  op: string;
  reason: string;
}

/** Result of {@linkcode planQuantization}. */
export interface QuantizationPlan {
  /** Activation tensors that need a calibrated range. */
  activations: string[];
  /**
   * Weighted layers (quantized or not), as `quantize` writes them: after its exact ORT rewrites (a
   * ConvTranspose as 1×1 Conv + DepthToSpace, scalar chains folded into convs …), so bias
   * correction measures them against `floatTwin()` (quantize.ts), not against the graph as given.
   */
  weightedLayers: WeightedLayer[];
  /** Nodes that stay float, with the reason. */
  excluded: FloatNode[];
  /** Producer output → the Relu/Clip output whose range it takes. */
  fusedActivations: Map<string, string>;
}

/**
 * Plans the quantization of a graph: the same marking `quantize` does, without ranges.
 *
 * @param graph The float graph.
 * @param options Exclusions, head outputs, registry.
 * @returns Tensors that need ranges, weighted layers, excluded nodes, fused activations.
 * @throws {ConfigError} On bad options.
 *
 * @example Conv + Relu needs the input's and the Relu output's ranges
 * ```ts
 * import { planQuantization } from "@clipq/quantize/plan";
 * import { emptyGraph, node } from "@clipq/onnx/graph";
 * import { float32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({
 *   inputs: [{ name: "x", dtype: "float32", shape: [1, 1, 2, 2] }],
 *   outputs: [{ name: "y", dtype: "float32" }],
 *   initializers: new Map([["w", float32([1, 1, 1, 1], [1])]]),
 *   nodes: [
 *     node({ name: "conv", op: "Conv", inputs: ["x", "w"], outputs: ["c"] }),
 *     node({ name: "relu", op: "Relu", inputs: ["c"], outputs: ["r"] }),
 *     node({ name: "conv2", op: "Conv", inputs: ["r", "w"], outputs: ["y"] }),
 *   ],
 * });
 * const plan = planQuantization(g);
 * assert.deepEqual(plan.activations, ["x", "r"]);
 * assert.equal(plan.fusedActivations.get("c"), "r");
 * ```
 */
export function planQuantization(graph: Graph, options: PlanOptions = {}): QuantizationPlan {
  const o = checkOptions(options);
  const lowered = lowerGraph(graph, o);
  const g = lowered.graph;
  const a = analyze(g, o, lowered.rawHeads);
  // Tensors the lowering added are calibrated as the original tensors they re-express.
  const orig = (t: string) => lowered.aliases.get(t) ?? t;
  const shared = new Set<string>();
  for (const m of a.marks.values()) for (const [out] of m.shares) shared.add(out);
  const activations: string[] = [];
  const seen = new Set<string>();
  for (const m of a.marks.values()) {
    for (const t of m.activations) {
      if (shared.has(t) || seen.has(orig(t))) continue;
      seen.add(orig(t));
      activations.push(orig(t));
    }
  }
  return {
    activations,
    weightedLayers: [...a.weighted].map(([i, w]) => ({
      node: a.labels[i]!,
      output: g.nodes[i]!.outputs[0]!,
      channelAxis: w.axis,
    })),
    excluded: [...a.reasons].sort((x, y) => x[0] - y[0]).map(([i, reason]) => ({
      node: a.labels[i]!,
      op: g.nodes[i]!.op,
      reason,
    })),
    fusedActivations: new Map([...a.fused].map(([p, act]) => [orig(p), orig(act)])),
  };
}
