/**
 * @clipq/runtime — onnxruntime-node sessions for clipq Graphs: run with our Tensor type, tap
 * intermediate tensors, measure latency, and learn shapes by running.
 *
 * @example Run a one-node model
 * ```ts
 * import { createSession } from "@clipq/runtime";
 * import { emptyGraph, float32, node } from "@clipq/onnx";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({
 *   nodes: [node({ name: "r", op: "Relu", inputs: ["x"], outputs: ["y"] })],
 *   inputs: [{ name: "x", dtype: "float32", shape: [1] }],
 *   outputs: [{ name: "y", dtype: "float32", shape: [1] }],
 * });
 * const s = await createSession(g, { optimizationLevel: "basic", threads: 1 });
 * assert.deepEqual([...(await s.run({ x: float32([1], [-3]) })).y!.data], [0]);
 * await s.release();
 * ```
 *
 * @module
 */
export * from "./session.ts";
export * from "./taps.ts";
export {
  compareDefaults,
  compareLatency,
  type CompareLatencyOptions,
  type Latency,
  type LatencyComparison,
  type LatencyOptions,
  measureLatency,
  summarize,
} from "./latency.ts";
export * from "./infer.ts";
export {
  type ProfileEntry,
  type ProfileSummary,
  speedupCeiling,
  summarizeProfile,
  type WeightedShare,
  weightedShare,
} from "./profile.ts";
export {
  ortGram,
  type OrtGramBackend,
  ortMatMul,
  type OrtMatMulBackend,
  type OrtMatMulOptions,
} from "./matmul.ts";
