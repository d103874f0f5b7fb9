/**
 * Ops that only move or select values — Reshape, Transpose, Flatten, Squeeze, Unsqueeze, Split,
 * Slice, Pad, MaxPool, Resize, Expand: the output shares the input's scale and zero point, so ORT
 * drops the DQ→op→Q around them and runs them on uint8 directly.
 *
 * @module
 */
import { attrString, type Node } from "@clipq/onnx/graph";
import { toFloat64 } from "@clipq/onnx/tensor";
import type { MarkContext, OpQuantizer } from "../registry.ts";

const passThrough: OpQuantizer = {
  mark(node: Node, ctx: MarkContext) {
    const x = node.inputs[0];
    const outs = node.outputs.filter(Boolean);
    if (!x || outs.length === 0) return "expected an input and an output";
    if (node.op === "MaxPool" && node.outputs[1]) return "MaxPool with an Indices output";
    if (node.op === "Pad" && attrString(node, "mode", "constant") === "constant") {
      const v = node.inputs[2] ? ctx.initializer(node.inputs[2]) : undefined;
      if (node.inputs[2] && (!v || toFloat64(v)[0] !== 0)) {
        return "Pad with a constant value other than 0 (not exactly representable)";
      }
    }
    if (!ctx.isFloat(x)) return `input "${x}" is not a float32 tensor`;
    if (ctx.initializer(x)) return `input "${x}" is a constant`;
    if (node.op === "Pad" && ctx.graph.inputs.some((v) => v.name === x)) {
      // Nothing to mark: ORT pads in float anyway (no int8 Pad from QDQ), so padding the float
      // graph input before its consumers' QuantizeLinear saves a Q/DQ pair over the whole input.
      return undefined;
    }
    ctx.activation(x);
    for (const y of outs) ctx.share(y, x);
    return undefined;
  },
};

/**
 * Quantizers of pass-through ops.
 *
 * @example Usage
 * ```ts
 * import { shapeOps } from "@clipq/quantize/ops/shape";
 * import assert from "node:assert/strict";
 * assert.ok("Reshape" in shapeOps && "MaxPool" in shapeOps);
 * ```
 */
export const shapeOps: Readonly<Record<string, OpQuantizer>> = Object.fromEntries(
  [
    "Reshape",
    "Transpose",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Split",
    "Slice",
    "Pad",
    "MaxPool",
    "Resize",
    "Expand",
  ]
    .map((op) => [op, passThrough]),
);
