/**
 * @clipq/onnx — ONNX graph IO for clipq: decode/encode, the Graph IR, tensors, typed errors.
 *
 * @example Decode and re-encode a model
 * ```ts
 * import { decode, emptyGraph, encode } from "@clipq/onnx";
 * import assert from "node:assert/strict";
 * assert.equal(decode(encode(emptyGraph({ name: "m" }))).name, "m");
 * ```
 *
 * @module
 */
export * from "./errors.ts";
export * from "./tensor.ts";
export * from "./graph.ts";
export * from "./proto.ts";
export * from "./metadata.ts";
export * from "./builder.ts";
export * from "./random.ts";
export * from "./toposort.ts";
export * from "./validate.ts";
export * from "./normalize.ts";
export * from "./io.ts";
export { inferShapes, type InferShapesOptions, type ShapeInfo, withValueInfo } from "./shapes.ts";
export { irVersionFor, upgradeOpset, type UpgradeOptions } from "./upgrade.ts";
