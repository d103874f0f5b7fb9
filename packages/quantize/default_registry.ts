/**
 * The built-in registry: every op family clipq quantizes.
 *
 * @module
 */
import { createRegistry, type Registry } from "./registry.ts";
import { convOps } from "./ops/conv.ts";
import { matmulOps } from "./ops/matmul.ts";
import { elementwiseOps } from "./ops/elementwise.ts";
import { unaryOps } from "./ops/unary.ts";
import { shapeOps } from "./ops/shape.ts";

/**
 * Built-in op quantizers (Conv, ConvTranspose, Gemm, MatMul, Add, Mul, Concat, pools, Resize,
 * activations, pass-through shape ops).
 *
 * @example Usage
 * ```ts
 * import { defaultRegistry } from "@clipq/quantize/default-registry";
 * import assert from "node:assert/strict";
 * assert.ok(defaultRegistry.has("Conv"));
 * assert.ok(!defaultRegistry.has("NonMaxSuppression"));
 * ```
 */
export const defaultRegistry: Registry = createRegistry(
  convOps,
  matmulOps,
  elementwiseOps,
  unaryOps,
  shapeOps,
);
