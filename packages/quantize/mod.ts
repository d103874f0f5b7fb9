/**
 * @clipq/quantize — int8 post-training quantization of ONNX graphs as a pure graph transform: an op
 * registry that marks tensors, one pass that writes QDQ (or QOperator) nodes, per-channel int8
 * weights, int32 biases, bias correction, exclusions and head-aware defaults. It never runs a model.
 *
 * What it writes, and why:
 * - Weights: symmetric int8 in [−127, 127] ([−63, 63] with `reduceRange`), per output channel, stored
 *   as int8 initializers read through DequantizeLinear (the file holds int8 bytes). An all-zero
 *   channel gets scale 1. Biases: int32, scale s_in·s_w[c], zero point 0 (omitted).
 * - Activations: u8 over [min, max] widened to include 0 (or s8 symmetric), one Q→DQ pair per tensor
 *   after its producer. A Relu/Clip after Conv/Gemm/MatMul/Add/Mul folds in: one pair after the
 *   activation, its range clamped to the activation's bounds (zero point 0 lets onnxruntime drop the
 *   Relu and fuse QLinearConv/QGemm/QLinearMatMul). Ops that only move values share their input's
 *   scale (onnxruntime then runs them on uint8). Div by a constant becomes Mul by its reciprocal.
 * - Head "auto" (default): every weighted layer is quantized, but the raw output of the last one on
 *   each path to a head output gets no Q/DQ, and the decode/filter ops after it stay float.
 * - Nodes whose tensors have no range stay float (or `strict` throws); every float node is reported.
 * - Opset: raised to 13 for per-channel scales when no op in the model changed meaning since its
 *   opset; otherwise a ModelError asks for `upgradeOpset` first.
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
export * from "./gptq.ts";
export * from "./registry.ts";
export * from "./default_registry.ts";
export * from "./options.ts";
export * from "./opset.ts";
export * from "./plan.ts";
export * from "./quantize.ts";
export {
  channelGroups,
  type ChannelRanges,
  type ChannelSplit,
  splitChannels,
  type SplitChannelsOptions,
  type SplitChannelsResult,
  splitDefaults,
  type SplitRegion,
  splitRegions,
} from "./split_channels.ts";
