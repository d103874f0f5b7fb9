/**
 * Gemm and MatMul. A constant B is a per-channel int8 weight (Gemm: axis 0 when transB, else 1;
 * MatMul: axis 1 of a [K, N] weight, a batched one per tensor); Gemm's C becomes an int32 bias when
 * it has one value per output and alpha = beta = 1. MatMul of two activations quantizes both per
 * tensor.
 *
 * @module
 */
import { attrFloat, attrInt, type Graph, type Node } from "@clipq/onnx/graph";
import { sizeOf } from "@clipq/onnx/tensor";
import type { MarkContext, OpQuantizer } from "../registry.ts";
import { operand } from "./_common.ts";

const gemm: OpQuantizer = {
  fusesActivation: true,
  weight(node: Node, graph: Graph) {
    const b = node.inputs[1];
    return b && graph.initializers.has(b)
      ? { name: b, axis: attrInt(node, "transB", 0) ? 0 : 1 }
      : undefined;
  },
  mark(node: Node, ctx: MarkContext) {
    const [a, b, c] = node.inputs;
    const y = node.outputs[0];
    if (!a || !b || !y) return "expected inputs A, B and an output";
    const bt = ctx.initializer(b);
    if (!bt) return `weight "${b}" is not an initializer`;
    if (bt.dtype !== "float32" || bt.dims.length !== 2) {
      return `weight "${b}" is not a 2-D float32 tensor`;
    }
    if (!ctx.isFloat(a)) return `input "${a}" is not a float32 tensor`;
    const axis = attrInt(node, "transB", 0) ? 0 : 1;
    ctx.activation(a);
    ctx.weight(b, axis);
    const ct = c ? ctx.initializer(c) : undefined;
    if (
      c && ct?.dtype === "float32" && sizeOf(ct.dims) === bt.dims[axis] &&
      ct.dims.length === 1 && attrFloat(node, "alpha", 1) === 1 && attrFloat(node, "beta", 1) === 1
    ) ctx.bias(c, a, b);
    ctx.activation(y);
    return undefined;
  },
};

/**
 * A MatMul weight's per-channel axis: its columns for a [K, N] weight. A batched weight
 * ([…, K, N]) is per-tensor: onnxruntime's QLinearMatMul takes per-column scales of a batched B
 * only shaped [1, N] per batch, which DequantizeLinear's one-dimensional axis scale cannot state
 * (a face mesh's spatial transformer failed at run time with one).
 */
function weightAxis(rank: number): number | undefined {
  return rank === 2 ? 1 : undefined;
}

const matmul: OpQuantizer = {
  fusesActivation: true,
  weight(node: Node, graph: Graph) {
    const b = node.inputs[1];
    const t = b ? graph.initializers.get(b) : undefined;
    return b && t ? { name: b, axis: weightAxis(t.dims.length) } : undefined;
  },
  mark(node: Node, ctx: MarkContext) {
    const [a, b] = node.inputs;
    const y = node.outputs[0];
    if (!a || !b || !y) return "expected inputs A, B and an output";
    const bt = ctx.initializer(b);
    if (bt) {
      if (bt.dtype !== "float32") return `weight "${b}" is ${bt.dtype}, not float32`;
      if (!ctx.isFloat(a)) return `input "${a}" is not a float32 tensor`;
      ctx.activation(a);
      ctx.weight(b, weightAxis(bt.dims.length));
    } else {
      const why = operand(ctx, a) ?? operand(ctx, b);
      if (why) return why;
    }
    ctx.activation(y);
    return undefined;
  },
};

/**
 * Quantizers of Gemm and MatMul.
 *
 * @example Usage
 * ```ts
 * import { matmulOps } from "@clipq/quantize/ops/matmul";
 * import assert from "node:assert/strict";
 * assert.deepEqual(Object.keys(matmulOps), ["Gemm", "MatMul"]);
 * ```
 */
export const matmulOps: { readonly Gemm: OpQuantizer; readonly MatMul: OpQuantizer } = {
  Gemm: gemm,
  MatMul: matmul,
};
