/**
 * A matrix-multiply backend that runs ONNX MatMul through onnxruntime-node, whose MLAS kernels are
 * tens of times faster than plain JavaScript. It has the shape of `MatMulBackend` from @clipq/svd
 * (which stays free of native code): the pipeline passes it in.
 *
 * @module
 */
import * as ort from "onnxruntime-node";
import { emptyGraph, encode, type Graph, node } from "@clipq/onnx";

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

function checkThreads(options: OrtMatMulOptions): Required<OrtMatMulOptions> {
  const opts = { ...defaults, ...options };
  if (!Number.isInteger(opts.threads) || opts.threads < 0) {
    throw new RangeError(
      `Expected threads to be an integer ≥ 0 but found ${opts.threads}`,
    );
  }
  return opts;
}

/** A one-node session on CPU. */
function openOne(graph: Graph, threads: number): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(encode(graph), {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: "all",
  });
}

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
  const opts = checkThreads(options);
  let session: Promise<ort.InferenceSession> | undefined;
  const open = () =>
    openOne(
      emptyGraph({
        name: "matmul",
        nodes: [node({ name: "mm", op: "MatMul", inputs: ["A", "B"], outputs: ["C"] })],
        inputs: [
          { name: "A", dtype: "float32", shape: ["m", "k"] },
          { name: "B", dtype: "float32", shape: ["k", "n"] },
        ],
        outputs: [{ name: "C", dtype: "float32", shape: ["m", "n"] }],
      }),
      opts.threads,
    );
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

/**
 * G[b] = A[b]ᵀ·A[b] for each of `batch` row-major m×n float32 matrices stored one after another
 * (G holds `batch` n×n matrices).
 */
export type OrtGramBackend = (
  a: Float32Array,
  dims: { batch: number; m: number; n: number },
) => Promise<Float32Array>;

/**
 * A Gram-matrix backend: Aᵀ·A of a batch of row-major float32 matrices in onnxruntime (a
 * Transpose and a batched MatMul), so sums of outer products of sampled vectors — many small ones
 * (a depthwise conv's channels) or one large one — run in its kernels instead of JavaScript loops.
 *
 * @param options Thread count.
 * @returns `(a, {batch, m, n}) => Promise<G>`, G row-major batch×n×n.
 *
 * @example The Gram matrices of two 2×2 matrices
 * ```ts
 * import { ortGram } from "@clipq/runtime/matmul";
 * import assert from "node:assert/strict";
 * const gram = ortGram({ threads: 1 });
 * const g = await gram(new Float32Array([1, 2, 3, 4, 1, 0, 0, 1]), { batch: 2, m: 2, n: 2 });
 * assert.deepEqual([...g], [10, 14, 14, 20, 1, 0, 0, 1]);
 * ```
 */
export function ortGram(options: OrtMatMulOptions = {}): OrtGramBackend {
  const opts = checkThreads(options);
  let session: Promise<ort.InferenceSession> | undefined;
  return async (a, { batch, m, n }) => {
    if (a.length !== batch * m * n) {
      throw new RangeError(
        `Expected A of ${batch}×${m}×${n} = ${batch * m * n} elements but found ${a.length}`,
      );
    }
    if (batch === 0 || m === 0 || n === 0) return new Float32Array(batch * n * n);
    session ??= openOne(
      emptyGraph({
        name: "gram",
        nodes: [
          node({
            name: "t",
            op: "Transpose",
            inputs: ["A"],
            outputs: ["At"],
            attributes: { perm: { type: "ints", value: [0, 2, 1] } },
          }),
          node({ name: "gram", op: "MatMul", inputs: ["At", "A"], outputs: ["G"] }),
        ],
        inputs: [{ name: "A", dtype: "float32", shape: ["b", "m", "n"] }],
        outputs: [{ name: "G", dtype: "float32", shape: ["b", "n", "n"] }],
      }),
      opts.threads,
    );
    const out = await (await session).run({ A: new ort.Tensor("float32", a, [batch, m, n]) });
    if (!out.G) throw new Error("onnxruntime returned no output G");
    return out.G.data as Float32Array;
  };
}
