/**
 * Ops whose output range differs from their input's: LeakyRelu, Sigmoid, HardSigmoid, AveragePool,
 * GlobalAveragePool, and Relu/Clip where they do not follow a quantized producer they fold into.
 * Input and output each get their own range (ORT has QLinearLeakyRelu/Sigmoid/AveragePool…).
 *
 * @module
 */
import type { OpQuantizer } from "../registry.ts";
import { unary } from "./_common.ts";

const q: OpQuantizer = { mark: unary };

/**
 * Quantizers of unary ops.
 *
 * @example Usage
 * ```ts
 * import { unaryOps } from "@clipq/quantize/ops/unary";
 * import assert from "node:assert/strict";
 * assert.ok("LeakyRelu" in unaryOps && "Clip" in unaryOps);
 * ```
 */
export const unaryOps: Readonly<Record<string, OpQuantizer>> = {
  LeakyRelu: q,
  Sigmoid: q,
  HardSigmoid: q,
  AveragePool: q,
  GlobalAveragePool: q,
  Relu: q,
  Clip: q,
};
