/**
 * Shape and dtype discovery by running a model once with every tensor tapped — the fallback when
 * static inference does not know an op.
 *
 * @module
 */
import type { DType, Graph, Tensor } from "@clipq/onnx";
import { createSession } from "./session.ts";

/** The dtype and concrete shape of one tensor as observed in a run. */
export interface ObservedShape {
  /** Element type. */
  readonly dtype: DType;
  /** Shape in this run. */
  readonly shape: readonly number[];
}

/**
 * Runs the graph once with every node output tapped and reports each tensor's dtype and shape.
 * Graph inputs are reported from the feeds.
 *
 * @param graph The graph.
 * @param feeds Sample inputs.
 * @returns Tensor name → dtype and shape.
 *
 * @example Usage
 * ```ts
 * import { inferShapesByRunning } from "@clipq/runtime";
 * import { emptyGraph, float32, node } from "@clipq/onnx";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({
 *   nodes: [
 *     node({ name: "r", op: "Relu", inputs: ["x"], outputs: ["h"] }),
 *     node({ name: "s", op: "Shape", inputs: ["h"], outputs: ["y"] }),
 *   ],
 *   inputs: [{ name: "x", dtype: "float32", shape: [1, 2] }],
 *   outputs: [{ name: "y", dtype: "int64", shape: [2] }],
 * });
 * const shapes = await inferShapesByRunning(g, { x: float32([1, 2], [1, 2]) });
 * assert.deepEqual(shapes.get("h"), { dtype: "float32", shape: [1, 2] });
 * assert.deepEqual(shapes.get("y"), { dtype: "int64", shape: [2] });
 * ```
 */
export async function inferShapesByRunning(
  graph: Graph,
  feeds: Readonly<Record<string, Tensor>>,
): Promise<Map<string, ObservedShape>> {
  const names = graph.nodes.flatMap((n) => n.outputs.filter((o) => o !== ""));
  // Optimizations would fold or fuse away some of the tapped tensors' producers.
  const session = await createSession(graph, { optimizationLevel: "disabled", taps: names });
  try {
    const out = await session.run(feeds);
    const result = new Map<string, ObservedShape>();
    for (const v of graph.inputs) {
      const t = feeds[v.name];
      if (t) result.set(v.name, { dtype: t.dtype, shape: [...t.dims] });
    }
    for (const [name, t] of Object.entries(out)) {
      result.set(name, { dtype: t.dtype, shape: [...t.dims] });
    }
    return result;
  } finally {
    await session.release();
  }
}
