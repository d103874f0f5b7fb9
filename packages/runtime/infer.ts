/**
 * Shape and dtype discovery by running a model once with every tensor tapped — the fallback when
 * static inference does not know an op.
 *
 * @module
 */
import type { Dim, DType, Graph, Tensor, ValueInfo } from "@clipq/onnx";
import { valueShaped, withValueInfo } from "@clipq/onnx/shapes";
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
  const session = await createSession(graph, {
    optimizationLevel: "disabled",
    taps: names,
    memoryPattern: false,
  });
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

/**
 * value_info from static inference, completed by one run where static inference knows nothing
 * (ops it does not model, custom domains). A tensor static inference could not type gets the
 * observed dtype; one whose rank it could not tell gets the observed shape when every graph input
 * is static and its length does not follow values (NonMaxSuppression and what is computed from
 * it: `valueShaped` in @clipq/onnx/shapes), else the observed rank with unknown dims (a concrete
 * run does not say which dims depend on the input size, or on the values).
 *
 * @param graph The graph.
 * @param feeds Sample inputs.
 * @returns A new graph whose value_info covers every intermediate tensor.
 *
 * @example Type the output of an op static inference does not know
 * ```ts
 * import { withObservedValueInfo } from "@clipq/runtime";
 * import { emptyGraph, float32, node } from "@clipq/onnx";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({
 *   nodes: [
 *     node({ name: "e", op: "EyeLike", inputs: ["x"], outputs: ["h"] }),
 *     node({ name: "r", op: "Relu", inputs: ["h"], outputs: ["y"] }),
 *   ],
 *   inputs: [{ name: "x", dtype: "float32", shape: [2, 2] }],
 *   outputs: [{ name: "y", dtype: "float32", shape: [2, 2] }],
 * });
 * const out = await withObservedValueInfo(g, { x: float32([2, 2], [0, 0, 0, 0]) });
 * assert.deepEqual(out.valueInfo, [{ name: "h", dtype: "float32", shape: [2, 2] }]);
 * ```
 */
export async function withObservedValueInfo(
  graph: Graph,
  feeds: Readonly<Record<string, Tensor>>,
): Promise<Graph> {
  const base = withValueInfo(graph);
  const inputNames = new Set(base.inputs.map((v) => v.name));
  const outputNames = new Set(base.outputs.map((v) => v.name));
  const known = new Map(base.valueInfo.map((v) => [v.name, v]));
  const missing = base.nodes.flatMap((n) => n.outputs).filter((name) => {
    if (!name || inputNames.has(name) || outputNames.has(name) || base.initializers.has(name)) {
      return false;
    }
    const v = known.get(name);
    return !v?.dtype || !v.shape;
  });
  if (missing.length === 0) return base;
  const observed = await inferShapesByRunning(base, feeds);
  const staticInputs = base.inputs.every((v) =>
    base.initializers.has(v.name) || (v.shape?.every((d) => typeof d === "number") ?? false)
  );
  // A length that follows values (the boxes NMS keeps) is this run's alone, whatever the inputs.
  const varying = valueShaped(base);
  const fill = (v: ValueInfo): ValueInfo => {
    const o = observed.get(v.name);
    if (!o || (v.dtype && v.shape)) return v;
    const shape: readonly Dim[] = v.shape ??
      (staticInputs && !varying.has(v.name) ? o.shape : o.shape.map(() => null));
    return { ...v, dtype: v.dtype ?? o.dtype, shape };
  };
  const seen = new Set(known.keys());
  const valueInfo = [
    ...base.valueInfo.map(fill),
    ...missing.filter((name) => !seen.has(name)).map((name) => fill({ name })),
  ];
  return { ...base, valueInfo };
}
