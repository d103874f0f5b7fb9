/**
 * Conv and ConvTranspose: input activation, per-channel int8 weight (Conv: axis 0 of
 * [out, in/group, k…]; ConvTranspose: axis 1 of [in, out/group, k…]), int32 bias, output
 * activation; a following Relu/Clip folds in.
 *
 * @module
 */
import type { Graph, Node } from "@clipq/onnx/graph";
import type { MarkContext, OpQuantizer } from "../registry.ts";

function convQuantizer(axis: number): OpQuantizer {
  return {
    fusesActivation: true,
    weight(node: Node, graph: Graph) {
      const w = node.inputs[1];
      return w && graph.initializers.has(w) ? { name: w, axis } : undefined;
    },
    mark(node: Node, ctx: MarkContext) {
      const [x, w, b] = node.inputs;
      const y = node.outputs[0];
      if (!x || !w || !y) return "expected inputs X, W and an output";
      const wt = ctx.initializer(w);
      if (!wt) {
        return `weight "${w}" is not an initializer (normalize turns Constant nodes into initializers)`;
      }
      if (wt.dtype !== "float32") return `weight "${w}" is ${wt.dtype}, not float32`;
      if (!ctx.isFloat(x)) return `input "${x}" is not a float32 tensor`;
      ctx.activation(x);
      ctx.weight(w, axis);
      if (b && ctx.initializer(b)?.dtype === "float32") ctx.bias(b, x, w);
      ctx.activation(y);
      return undefined;
    },
  };
}

/**
 * Quantizers of Conv (weight axis 0) and ConvTranspose (weight axis 1; with groups the bias scales
 * repeat group by group).
 *
 * @example Usage
 * ```ts
 * import { convOps } from "@clipq/quantize/ops/conv";
 * import assert from "node:assert/strict";
 * assert.deepEqual(Object.keys(convOps), ["Conv", "ConvTranspose"]);
 * assert.equal(convOps.Conv.fusesActivation, true);
 * ```
 */
export const convOps: { readonly Conv: OpQuantizer; readonly ConvTranspose: OpQuantizer } = {
  Conv: convQuantizer(0),
  ConvTranspose: convQuantizer(1),
};
