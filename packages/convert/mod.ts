/**
 * @clipq/convert — importers: tfjs graph models and darknet cfg+weights → ONNX Graph.
 *
 * @example Convert a tiny tfjs graph
 * ```ts
 * import { convertTfjs } from "@clipq/convert";
 * import assert from "node:assert/strict";
 * const json = { modelTopology: { node: [
 *   { name: "x", op: "Placeholder", attr: { shape: { shape: { dim: [{ size: "2" }] } } } },
 *   { name: "y", op: "Relu", input: ["x"] },
 * ] }, weightsManifest: [] };
 * assert.equal(convertTfjs({ json, weights: new Map(), source: "m.json" }, { outputs: ["y"] }).nodes[0]?.op, "Relu");
 * ```
 *
 * @module
 */
export * from "./tfjs.ts";
export * from "./tfjs_format.ts";
export * from "./transpose_sink.ts";
export * from "./conv_fuse.ts";
export * from "./darknet.ts";
export * from "./darknet_cfg.ts";
export * from "./darknet_plan.ts";
export * from "./darknet_weights.ts";
