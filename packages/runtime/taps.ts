/**
 * Tapping: exposing intermediate tensors as extra graph outputs so one run returns them.
 *
 * @module
 */
import { type Graph, ModelError, producers, type ValueInfo } from "@clipq/onnx";
import { inferShapes, type ShapeInfo } from "@clipq/onnx/shapes";

/**
 * Adds intermediate tensors as graph outputs. Each tap carries the dtype and shape recorded in
 * value_info or found by static shape inference; when neither knows the type the output is left
 * untyped, which onnxruntime accepts and resolves itself.
 *
 * @param graph The graph.
 * @param names Tensors to expose (existing outputs are skipped; order is kept).
 * @returns A new graph with the extra outputs.
 * @throws {ModelError} When a name is not produced by a node and is not a graph input.
 *
 * @example Tap the hidden tensor of a two-node model
 * ```ts
 * import { addTaps } from "@clipq/runtime";
 * import { emptyGraph, node } from "@clipq/onnx";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({
 *   nodes: [
 *     node({ name: "r", op: "Relu", inputs: ["x"], outputs: ["h"] }),
 *     node({ name: "s", op: "Sigmoid", inputs: ["h"], outputs: ["y"] }),
 *   ],
 *   inputs: [{ name: "x", dtype: "float32", shape: [2] }],
 *   outputs: [{ name: "y", dtype: "float32", shape: [2] }],
 * });
 * const tapped = addTaps(g, ["h"]);
 * assert.deepEqual(tapped.outputs.map((o) => [o.name, o.dtype]), [["y", "float32"], ["h", "float32"]]);
 * ```
 */
export function addTaps(graph: Graph, names: readonly string[]): Graph {
  const have = new Set(graph.outputs.map((o) => o.name));
  const wanted = [...new Set(names)].filter((n) => !have.has(n));
  if (wanted.length === 0) return graph;
  const made = producers(graph);
  const inputs = new Map(graph.inputs.map((v) => [v.name, v]));
  const infos = new Map<string, ValueInfo>(graph.valueInfo.map((v) => [v.name, v]));
  for (const n of wanted) {
    if (!made.has(n) && !inputs.has(n)) {
      throw new ModelError(
        `model "${graph.name}": expected tensor "${n}" to tap to be produced by a node or be a graph input, but nothing produces it`,
      );
    }
  }
  let inferred: ReadonlyMap<string, ShapeInfo> | undefined;
  const extra: ValueInfo[] = wanted.map((name) => {
    const known = infos.get(name) ?? inputs.get(name);
    if (known?.dtype) {
      return { name, dtype: known.dtype, ...(known.shape ? { shape: known.shape } : {}) };
    }
    inferred ??= safeInfer(graph);
    const s = inferred.get(name);
    if (!s?.dtype) return { name };
    return { name, dtype: s.dtype, ...(s.shape ? { shape: s.shape } : {}) };
  });
  return { ...graph, outputs: [...graph.outputs, ...extra] };
}

/** Static inference is a convenience here: a model it cannot follow is still tappable, untyped. */
function safeInfer(graph: Graph): ReadonlyMap<string, ShapeInfo> {
  try {
    return inferShapes(graph);
  } catch {
    return new Map();
  }
}
