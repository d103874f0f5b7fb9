/**
 * @clipq/quantize — int8 post-training quantization of ONNX graphs as a pure graph transform: an op
 * registry that marks tensors, one pass that writes QDQ (or QOperator) nodes, per-channel int8
 * weights, int32 biases, bias correction, exclusions and head-aware defaults.
 *
 * @example Plan, then quantize
 * ```ts
 * import { planQuantization, quantize } from "@clipq/quantize";
 * import { emptyGraph, node } from "@clipq/onnx/graph";
 * import { float32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({
 *   inputs: [{ name: "x", dtype: "float32", shape: [1, 2] }],
 *   outputs: [{ name: "y", dtype: "float32" }],
 *   initializers: new Map([["w", float32([2, 2], [1, 0, 0, 1])]]),
 *   nodes: [node({ name: "mm", op: "MatMul", inputs: ["x", "w"], outputs: ["y"] })],
 * });
 * const plan = planQuantization(g);
 * assert.deepEqual(plan.activations, ["x"]);
 * const ranges = new Map([["x", { min: -1, max: 1, source: "minmax" }]]);
 * assert.deepEqual(quantize(g, { ranges }).report.quantizedNodes, ["mm"]);
 * ```
 *
 * @module
 */
export * from "./linear.ts";
export * from "./weights.ts";
export * from "./registry.ts";
export * from "./default_registry.ts";
export * from "./options.ts";
export * from "./opset.ts";
export * from "./plan.ts";
export * from "./quantize.ts";
