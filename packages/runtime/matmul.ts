/**
 * A matrix-multiply backend that runs ONNX MatMul through onnxruntime-node, whose MLAS kernels are
 * tens of times faster than plain JavaScript. It has the shape of `MatMulBackend` from @clipq/svd
 * (which stays free of native code): the pipeline passes it in.
 *
 * @module
 */
import * as ort from "onnxruntime-node";
import { emptyGraph, encode, node } from "@clipq/onnx";

/** Row-major C = A·B with A m×k and B k×n; the shape `MatMulBackend` of @clipq/svd has. */
export type OrtMatMulBackend = (
  a: Float32Array,
  b: Float32Array,
  m: number,
  k: number,
  n: number,
) => Promise<Float32Array>;

/** Options of {@linkcode ortMatMul}. */
export interface OrtMatMulOptions {
  /** Intra-op thread count; 0 lets onnxruntime use every core. */
  threads?: number;
}

/** Defaults of {@linkcode OrtMatMulOptions}. */
export const defaults = { threads: 0 } satisfies OrtMatMulOptions;

/**
 * A float32 matrix-multiply backend running one MatMul node with dynamic dims in onnxruntime. The
 * session is created on first use and shared by every later call of the returned function.
 *
 * @param options Thread count.
 * @returns `(a, b, m, k, n) => Promise<C>` with C = A·B row-major (m×n).
 *
 * @example Multiply two small matrices
 * ```ts
 * import { ortMatMul } from "@clipq/runtime/matmul";
 * import assert from "node:assert/strict";
 * const mm = ortMatMul({ threads: 1 });
 * const c = await mm(new Float32Array([1, 2, 3, 4]), new Float32Array([1, 0, 0, 1]), 2, 2, 2);
 * assert.deepEqual([...c], [1, 2, 3, 4]);
 * ```
 */
export function ortMatMul(options: OrtMatMulOptions = {}): OrtMatMulBackend {
  const opts = { ...defaults, ...options };
  if (!Number.isInteger(opts.threads) || opts.threads < 0) {
    throw new RangeError(
      `Expected threads to be an integer ≥ 0 but found ${opts.threads}`,
    );
  }
  let session: Promise<ort.InferenceSession> | undefined;
  const open = () => {
    const g = emptyGraph({
      name: "matmul",
      nodes: [node({ name: "mm", op: "MatMul", inputs: ["A", "B"], outputs: ["C"] })],
      inputs: [
        { name: "A", dtype: "float32", shape: ["m", "k"] },
        { name: "B", dtype: "float32", shape: ["k", "n"] },
      ],
      outputs: [{ name: "C", dtype: "float32", shape: ["m", "n"] }],
    });
    return ort.InferenceSession.create(encode(g), {
      intraOpNumThreads: opts.threads,
      interOpNumThreads: 1,
      graphOptimizationLevel: "all",
    });
  };
  return async (a, b, m, k, n) => {
    if (a.length !== m * k || b.length !== k * n) {
      throw new RangeError(
        `Expected A of ${m}×${k} = ${m * k} and B of ${k}×${n} = ${
          k * n
        } elements but found ${a.length} and ${b.length}`,
      );
    }
    if (m === 0 || n === 0) return new Float32Array(m * n);
    if (k === 0) return new Float32Array(m * n);
    session ??= open();
    const s = await session;
    const out = await s.run({
      A: new ort.Tensor("float32", a, [m, k]),
      B: new ort.Tensor("float32", b, [k, n]),
    });
    const c = out.C;
    if (!c) throw new Error("onnxruntime returned no output C");
    const data = c.data as Float32Array;
    return data;
  };
}
