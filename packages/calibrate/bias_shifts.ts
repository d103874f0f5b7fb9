/**
 * Bias correction, measuring half: the mean per-channel shift that quantization adds to each
 * weighted layer's output over the calibration data (Nagel et al., 2019; NNCF's fast bias
 * correction). The quantizer subtracts it from the layer's bias, so quantize stays a pure graph
 * transform.
 *
 * @module
 */
import { type Graph, ModelError, type Tensor, toFloat32 } from "@clipq/onnx";
import { ConfigError } from "@clipq/onnx/errors";
import { createSession, type OptimizationLevel } from "@clipq/runtime";

/** A layer whose output shift to measure. */
export interface BiasLayer {
  /** Node name of the layer in the float graph (the key of the result). */
  node: string;
  /** The layer's output tensor in the float graph. */
  output: string;
  /** Its output in the quantized graph (default: the same name). */
  quantOutput?: string;
  /** Channel axis of the output (Conv: 1; Gemm/MatMul: the last). */
  channelAxis: number;
}

/** Options of {@linkcode measureBiasShifts}. */
export interface BiasShiftOptions {
  /** The layers. */
  layers: readonly BiasLayer[];
  /** onnxruntime graph optimization level of both sessions. */
  optimizationLevel?: OptimizationLevel;
  /** Intra-op threads (0: onnxruntime decides). */
  threads?: number;
  /** Called after each batch with the number of batches done. */
  onProgress?: (batches: number) => void;
}

/** Defaults of {@linkcode BiasShiftOptions}. */
export const defaults = {
  layers: [],
  optimizationLevel: "all",
  threads: 0,
} satisfies BiasShiftOptions;

/** Adds each channel's sum of (q − f) into `sums`. */
function accumulate(
  f: Tensor,
  q: Tensor,
  axis: number,
  sums: Float64Array,
  what: string,
): number {
  if (f.dims.join() !== q.dims.join()) {
    throw new ModelError(
      `${what}: expected the quantized output to have the float output's shape [${f.dims}] but found [${q.dims}]`,
    );
  }
  const a = toFloat32(f), b = toFloat32(q);
  const ax = axis < 0 ? f.dims.length + axis : axis;
  const channels = f.dims[ax] ?? 1;
  let inner = 1;
  for (let i = ax + 1; i < f.dims.length; i++) inner *= f.dims[i]!;
  const outer = a.length / (channels * inner);
  let k = 0;
  for (let o = 0; o < outer; o++) {
    for (let c = 0; c < channels; c++) {
      let s = 0;
      for (let i = 0; i < inner; i++, k++) s += b[k]! - a[k]!;
      sums[c]! += s;
    }
  }
  return outer * inner;
}

/**
 * Measures the mean per-channel output shift (quantized − float) of layers over calibration data.
 *
 * @param floatGraph The float model.
 * @param quantGraph The quantized model (without bias correction).
 * @param batches Input feeds by input name, one record per batch.
 * @param options The layers and session options.
 * @returns Per-channel mean shifts by node name.
 * @throws {ConfigError} When a layer's channel axis is outside its output's rank.
 * @throws {ModelError} When a layer output is missing from either model or shapes disagree.
 *
 * @example A "quantized" model whose output is 0.5 too high
 * ```ts
 * import { measureBiasShifts } from "@clipq/calibrate/bias-shifts";
 * import { emptyGraph, float32, node } from "@clipq/onnx";
 * import assert from "node:assert/strict";
 * const io = {
 *   inputs: [{ name: "x", dtype: "float32" as const, shape: [1, 2] }],
 *   outputs: [{ name: "y", dtype: "float32" as const, shape: [1, 2] }],
 * };
 * const f = emptyGraph({ ...io, nodes: [node({ name: "l", op: "Identity", inputs: ["x"], outputs: ["y"] })] });
 * const q = emptyGraph({
 *   ...io,
 *   initializers: new Map([["h", float32([2], [0.5, -1])]]),
 *   nodes: [node({ name: "l", op: "Add", inputs: ["x", "h"], outputs: ["y"] })],
 * });
 * const shifts = await measureBiasShifts(f, q, [{ x: float32([1, 2], [1, 2]) }], {
 *   layers: [{ node: "l", output: "y", channelAxis: 1 }],
 * });
 * assert.deepEqual([...shifts.get("l")!], [0.5, -1]);
 * ```
 */
export async function measureBiasShifts(
  floatGraph: Graph,
  quantGraph: Graph,
  batches:
    | AsyncIterable<Readonly<Record<string, Tensor>>>
    | Iterable<Readonly<Record<string, Tensor>>>,
  options: BiasShiftOptions,
): Promise<Map<string, Float32Array>> {
  const o = { ...defaults, ...options };
  const out = new Map<string, Float32Array>();
  if (o.layers.length === 0) return out;
  const fNames = o.layers.map((l) => l.output);
  const qNames = o.layers.map((l) => l.quantOutput ?? l.output);
  const sessionOptions = { optimizationLevel: o.optimizationLevel, threads: o.threads };
  const fs = await createSession(floatGraph, {
    ...sessionOptions,
    taps: fNames,
    label: "float model (bias correction)",
  });
  let qs;
  try {
    qs = await createSession(quantGraph, {
      ...sessionOptions,
      taps: qNames,
      label: "quantized model (bias correction)",
    });
  } catch (e) {
    await fs.release();
    throw e;
  }
  const sums = new Map<string, Float64Array>();
  const counts = new Map<string, number>();
  let done = 0;
  try {
    for await (const feeds of batches) {
      const [fo, qo] = [
        await fs.run(feeds, { outputs: fNames }),
        await qs.run(feeds, { outputs: qNames }),
      ];
      o.layers.forEach((l, i) => {
        const f = fo[fNames[i]!], q = qo[qNames[i]!];
        const what = `layer "${l.node}" output "${l.output}"`;
        if (!f || !q) throw new ModelError(`${what}: expected it in both models' outputs`);
        const rank = f.dims.length;
        if (!Number.isInteger(l.channelAxis) || l.channelAxis >= rank || l.channelAxis < -rank) {
          throw new ConfigError(
            `layers[${i}].channelAxis`,
            `expected an axis of the rank-${rank} output "${l.output}" but found ${l.channelAxis}`,
          );
        }
        const ax = l.channelAxis < 0 ? rank + l.channelAxis : l.channelAxis;
        let s = sums.get(l.node);
        if (!s) sums.set(l.node, s = new Float64Array(f.dims[ax]!));
        counts.set(l.node, (counts.get(l.node) ?? 0) + accumulate(f, q, ax, s, what));
      });
      o.onProgress?.(++done);
    }
  } finally {
    await fs.release();
    await qs.release();
  }
  for (const [node, s] of sums) {
    const n = counts.get(node)!;
    out.set(node, Float32Array.from(s, (v) => v / n));
  }
  return out;
}
