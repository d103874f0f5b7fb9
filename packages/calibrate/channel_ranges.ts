/**
 * Per-channel ranges of activation tensors over calibration data: the minimum and maximum of each
 * channel (axis 1). Per-tensor int8 scales cannot use them directly, but they show where a few
 * channels stretch a tensor's range, and channel splitting (`@clipq/quantize`'s `splitChannels`)
 * groups channels by them.
 *
 * @module
 */
import type { Graph, Tensor } from "@clipq/onnx";
import { ConfigError, ModelError } from "@clipq/onnx/errors";
import { createSession, type OptimizationLevel, releaseOutputs } from "@clipq/runtime";

/** Per-channel minima and maxima of one tensor. */
export interface ChannelRange {
  min: Float32Array;
  max: Float32Array;
}

/** Options of {@linkcode measureChannelRanges}. */
export interface ChannelRangeOptions {
  /** The tensors to measure (each of rank ≥ 2, channels on axis 1). */
  tensors: readonly string[];
  /** onnxruntime graph optimization level. */
  optimizationLevel?: OptimizationLevel;
}

/** Defaults of {@linkcode ChannelRangeOptions}. */
export const defaults = {
  tensors: [],
  optimizationLevel: "all",
} satisfies ChannelRangeOptions;

function accumulate(into: Map<string, ChannelRange>, name: string, x: Tensor): void {
  if (x.dtype !== "float32" || x.dims.length < 2) {
    throw new ModelError(
      `measureChannelRanges: expected tensor "${name}" to be float32 of rank ≥ 2; found ${x.dtype} [${x.dims}]`,
    );
  }
  const [n, c] = [x.dims[0]!, x.dims[1]!];
  const inner = x.dims.slice(2).reduce((a, b) => a * b, 1);
  const r = into.get(name) ??
    { min: new Float32Array(c).fill(Infinity), max: new Float32Array(c).fill(-Infinity) };
  if (r.min.length !== c) {
    throw new ModelError(
      `measureChannelRanges: tensor "${name}" had ${r.min.length} channels, now ${c}`,
    );
  }
  const d = x.data as Float32Array;
  for (let b = 0; b < n; b++) {
    for (let k = 0; k < c; k++) {
      let lo = r.min[k]!, hi = r.max[k]!;
      const base = (b * c + k) * inner;
      for (let i = base; i < base + inner; i++) {
        const v = d[i]!;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      r.min[k] = lo;
      r.max[k] = hi;
    }
  }
  into.set(name, r);
}

/**
 * Runs the float graph over the batches and returns each tensor's per-channel minimum and maximum.
 *
 * @param graph The float graph.
 * @param batches Feeds, one record per batch.
 * @param options The tensors to measure, optimization level.
 * @returns Per-channel ranges by tensor name.
 * @throws {ConfigError} When no tensor is named or no batch comes.
 * @throws {ModelError} When a tensor is not float32 of rank ≥ 2.
 *
 * @example Channel ranges of a Relu output
 * ```ts
 * import { measureChannelRanges } from "@clipq/calibrate/channel-ranges";
 * import { emptyGraph, node } from "@clipq/onnx/graph";
 * import { float32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({
 *   inputs: [{ name: "x", dtype: "float32", shape: [1, 2, 1, 2] }],
 *   outputs: [{ name: "y", dtype: "float32" }],
 *   nodes: [node({ name: "r", op: "Relu", inputs: ["x"], outputs: ["y"] })],
 * });
 * const r = await measureChannelRanges(g, [{ x: float32([1, 2, 1, 2], [-1, 2, 5, 7]) }], { tensors: ["y"] });
 * assert.deepEqual([...r.get("y")!.max], [2, 7]);
 * assert.deepEqual([...r.get("y")!.min], [0, 5]);
 * ```
 */
export async function measureChannelRanges(
  graph: Graph,
  batches: Iterable<Record<string, Tensor>> | AsyncIterable<Record<string, Tensor>>,
  options: ChannelRangeOptions,
): Promise<Map<string, ChannelRange>> {
  const o = { ...defaults, ...options };
  if (o.tensors.length === 0) {
    throw new ConfigError("tensors", "expected at least one tensor to measure; found none");
  }
  const outputs = new Set(graph.outputs.map((v) => v.name));
  const taps = o.tensors.filter((t) => !outputs.has(t));
  const session = await createSession(graph, {
    optimizationLevel: o.optimizationLevel,
    taps,
    memoryPattern: false,
  });
  const ranges = new Map<string, ChannelRange>();
  let seen = 0;
  try {
    for await (const feeds of batches) {
      const out = await session.run(feeds);
      for (const t of o.tensors) accumulate(ranges, t, out[t]!);
      // As collectStatistics does: whole tapped tensors left to the garbage collector pile up.
      releaseOutputs(out);
      seen++;
    }
  } finally {
    await session.release();
  }
  if (seen === 0) throw new ConfigError("batches", "expected at least one batch; found none");
  return ranges;
}
