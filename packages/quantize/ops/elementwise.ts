/**
 * Add, Mul and Concat: every float input is an activation (or a constant operand quantized over its
 * own min/max) and the output has its own range; ORT fuses them into QLinearAdd/Mul/Concat. Add
 * and Mul absorb a following Relu/Clip.
 *
 * @module
 */
import type { Node } from "@clipq/onnx/graph";
import type { MarkContext, OpQuantizer } from "../registry.ts";
import { operand } from "./_common.ts";

function naryQuantizer(fusesActivation: boolean): OpQuantizer {
  return {
    fusesActivation,
    mark(node: Node, ctx: MarkContext) {
      const y = node.outputs[0];
      if (!y || node.inputs.length === 0) return "expected inputs and an output";
      for (const x of node.inputs) {
        if (!x) return "an input is omitted";
        if (!ctx.initializer(x) && !ctx.isFloat(x)) return `input "${x}" is not a float32 tensor`;
        const init = ctx.initializer(x);
        if (init && init.dtype !== "float32") return `constant input "${x}" is ${init.dtype}`;
      }
      for (const x of node.inputs) operand(ctx, x);
      ctx.activation(y);
      return undefined;
    },
  };
}

/**
 * Quantizers of Add, Mul and Concat.
 *
 * @example Usage
 * ```ts
 * import { elementwiseOps } from "@clipq/quantize/ops/elementwise";
 * import assert from "node:assert/strict";
 * assert.deepEqual(Object.keys(elementwiseOps), ["Add", "Mul", "Concat"]);
 * ```
 */
export const elementwiseOps: {
  readonly Add: OpQuantizer;
  readonly Mul: OpQuantizer;
  readonly Concat: OpQuantizer;
} = {
  Add: naryQuantizer(true),
  Mul: naryQuantizer(true),
  Concat: naryQuantizer(false),
};
