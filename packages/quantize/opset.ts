/**
 * Raising a model's ONNX opset import for QuantizeLinear/DequantizeLinear (per-channel needs 13):
 * allowed only when no op in the graph changed its signature or meaning between the two versions;
 * otherwise the caller must upgrade the model first (`upgradeOpset` in @clipq/onnx).
 *
 * @module
 */
import { ModelError } from "@clipq/onnx/errors";
import { type Graph, opsetOf } from "@clipq/onnx/graph";

/** Opset versions at which an op's inputs, attributes or meaning changed incompatibly. */
const CHANGED: Readonly<Record<string, readonly number[]>> = {
  Add: [7],
  Sub: [7],
  Mul: [7],
  Div: [7],
  Pow: [7],
  PRelu: [7],
  Gemm: [7],
  Equal: [7],
  Greater: [7],
  Less: [7],
  And: [7],
  Or: [7],
  Xor: [7],
  BatchNormalization: [7, 9],
  Dropout: [7, 10, 12],
  Upsample: [7, 9, 10],
  Slice: [10],
  TopK: [10],
  Clip: [11],
  Pad: [11],
  Resize: [11],
  Scatter: [11],
  Split: [13],
  Squeeze: [13],
  Unsqueeze: [13],
  ReduceSum: [13],
  Softmax: [13],
  LogSoftmax: [13],
  Hardmax: [13],
};

/**
 * The graph with its ONNX opset import raised to at least `target`.
 *
 * @param graph A top-level graph.
 * @param target The opset the quantized model needs.
 * @returns The graph itself when it already imports ≥ target, else a copy with the import raised.
 * @throws {ModelError} Naming the ops whose meaning changed between the model's opset and the
 * target (upgrade the model with `upgradeOpset` first), or when the graph imports no ONNX opset.
 *
 * @example Usage
 * ```ts
 * import { raiseOpset } from "@clipq/quantize/opset";
 * import { emptyGraph, node, opsetOf } from "@clipq/onnx/graph";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({ opsetImports: [{ domain: "", version: 11 }] });
 * assert.equal(opsetOf(raiseOpset(g, 13)), 13);
 * const split = emptyGraph({
 *   opsetImports: [{ domain: "", version: 11 }],
 *   nodes: [node({ name: "s", op: "Split", inputs: ["x"], outputs: ["a", "b"] })],
 * });
 * assert.throws(() => raiseOpset(split, 13), /Split/);
 * ```
 */
export function raiseOpset(graph: Graph, target: number): Graph {
  const from = opsetOf(graph);
  if (from === undefined) {
    throw new ModelError(
      `graph "${graph.name}": expected an ONNX ("") opset import but found none`,
    );
  }
  if (from >= target) return graph;
  const blocking = new Map<string, string>();
  for (const n of graph.nodes) {
    if (n.domain !== "" && n.domain !== "ai.onnx") continue;
    const v = CHANGED[n.op]?.find((c) => c > from && c <= target);
    if (v !== undefined && !blocking.has(n.op)) {
      blocking.set(n.op, `${n.op} (node "${n.name}", changed in opset ${v})`);
    }
  }
  if (blocking.size > 0) {
    throw new ModelError(
      `graph "${graph.name}": quantization needs opset ≥ ${target} but the model is opset ${from} ` +
        `and uses ops whose meaning changed since: ${[...blocking.values()].join(", ")}; ` +
        `upgrade the model first (upgradeOpset from @clipq/onnx)`,
    );
  }
  return {
    ...graph,
    opsetImports: graph.opsetImports.map((o) =>
      o.domain === "" || o.domain === "ai.onnx" ? { ...o, version: target } : o
    ),
  };
}
