/**
 * @clipq/svd — SVD-FC compression: truncated SVD of fully connected layers (exact one-sided Jacobi
 * for small matrices, randomized SVD with power iterations for big ones), rank policies, and the
 * Gemm/MatMul split. Pure TypeScript; the heavy matrix products go through an injectable backend.
 *
 * @example Split one MatMul at rank 4
 * ```ts
 * import { svdCompress } from "@clipq/svd";
 * import { emptyGraph, float32, node } from "@clipq/onnx";
 * import assert from "node:assert/strict";
 * const w = float32([32, 32], Float32Array.from({ length: 1024 }, (_, i) => Math.cos(i)));
 * const g = emptyGraph({
 *   nodes: [node({ name: "fc", op: "MatMul", inputs: ["x", "w"], outputs: ["y"] })],
 *   initializers: new Map([["w", w]]),
 *   inputs: [{ name: "x", dtype: "float32", shape: [1, 32] }],
 *   outputs: [{ name: "y", dtype: "float32", shape: [1, 32] }],
 * });
 * const { layers } = await svdCompress(g, { rank: 4 });
 * assert.equal(layers[0]?.rank, 4);
 * ```
 *
 * @module
 */
export * from "./compress.ts";
export { jsMatMul, type MatMulBackend, matmulSync, transpose } from "./matmul.ts";
export { type Svd, svd, type SvdOptions } from "./exact.ts";
export {
  type FactoredSymmetricEigen,
  type SymmetricEigen,
  symmetricEigen,
  symmetricEigenFactored,
} from "./eigen.ts";
export { orthonormalize, type OrthonormalizeOptions } from "./orthonormalize.ts";
export { type TruncatedSvd, truncatedSvd, type TruncatedSvdOptions } from "./truncated.ts";
export { gaussian, gaussianArray } from "./random.ts";
