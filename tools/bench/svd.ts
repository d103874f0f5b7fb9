/**
 * Benchmark of @clipq/svd. Full mode: a VGG16-Faster-R-CNN-shaped FC head (fc6 25088→4096 at
 * rank 1024, fc7 4096→4096 at rank 256, Gemm transB=1 as Caffe/PyTorch export it) with seeded
 * weights whose spectrum decays slowly (W = G·diag(d), G Gaussian, d_j = 1/(1 + j/64)), compressed
 * by `svdCompress` with the onnxruntime MatMul backend, against numpy's full SVD and a numpy
 * randomized SVD with the same rank, oversampling and power iterations (tools/bench/svd_numpy.py,
 * run with the PATH python3 and OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset). It reports the time
 * ratios (goals ≤ 1× full, ≤ 2× randomized), our measured rank-k error against the optimal one
 * (goal ≤ 1.01×) and the int8 + SVD head size against float (goal ≤ 12 %). Quick mode: one
 * 1024×256 matrix at rank 64 against the exact Jacobi SVD, no python.
 *
 * @module
 */
import { join } from "node:path";
import { emptyGraph, float32, type Graph, node, type Tensor } from "../../packages/onnx/mod.ts";
import { initializerBytes } from "../../packages/onnx/proto.ts";
import { ortMatMul } from "../../packages/runtime/matmul.ts";
import { svd, svdCompress, truncatedSvd } from "../../packages/svd/mod.ts";
import { gaussianArray } from "../../packages/svd/random.ts";
import { planQuantization, quantize } from "../../packages/quantize/mod.ts";
import { createSession } from "../../packages/runtime/mod.ts";
import type { TensorRange } from "../../packages/onnx/metadata.ts";
import type { BenchOptions, BenchResult } from "./types.ts";

/** Power iterations and oversampling used by ours and by the numpy randomized reference. */
const POWER = 4;
const OVERSAMPLE = 10;

/** rows×cols weight [in, out] with a slowly decaying spectrum. */
function weight(rows: number, cols: number, seed: number): Float32Array {
  const w = gaussianArray(rows * cols, seed);
  const scale = 1 / Math.sqrt(rows);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) w[i * cols + j]! *= scale / (1 + j / 64);
  }
  return w;
}

function transposed(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) out[j * rows + i] = a[i * cols + j]!;
  }
  return out;
}

interface Layer {
  name: string;
  rows: number;
  cols: number;
  rank: number;
  w: Float32Array;
}

function head(layers: Layer[]): Graph {
  const init = new Map<string, Tensor>();
  const nodes = [];
  let x = "pool5";
  for (const l of layers) {
    // Gemm transB=1 stores [out, in].
    init.set(`${l.name}.w`, float32([l.cols, l.rows], transposed(l.w, l.rows, l.cols)));
    init.set(`${l.name}.b`, float32([l.cols], new Float32Array(l.cols).fill(0.01)));
    nodes.push(node({
      name: l.name,
      op: "Gemm",
      inputs: [x, `${l.name}.w`, `${l.name}.b`],
      outputs: [`${l.name}.y`],
      attributes: { transB: { type: "int", value: 1 } },
    }));
    nodes.push(node({
      name: `${l.name}.relu`,
      op: "Relu",
      inputs: [`${l.name}.y`],
      outputs: [`${l.name}.r`],
    }));
    x = `${l.name}.r`;
  }
  return emptyGraph({
    name: "vgg16-fc-head",
    nodes,
    initializers: init,
    inputs: [{ name: "pool5", dtype: "float32", shape: [1, layers[0]!.rows] }],
    outputs: [{ name: x, dtype: "float32", shape: [1, layers.at(-1)!.cols] }],
  });
}

/** ‖W − A·B‖_F with the factors taken back out of the compressed graph ([in, k] and [k, out]). */
async function factorError(graph: Graph, l: Layer): Promise<number> {
  const mm = ortMatMul();
  // transB=1 factors are stored [k, in] and [out, k].
  const a = graph.initializers.get(`${l.name}.w_svd_a`)!.data as Float32Array;
  const b = graph.initializers.get(`${l.name}.w_svd_b`)!.data as Float32Array;
  const wk = await mm(
    transposed(a, l.rank, l.rows),
    transposed(b, l.cols, l.rank),
    l.rows,
    l.rank,
    l.cols,
  );
  let e = 0;
  for (let i = 0; i < wk.length; i++) e += (l.w[i]! - wk[i]!) ** 2;
  return Math.sqrt(e);
}

async function numpy(l: Layer, dir: string, full: boolean): Promise<Record<string, number>> {
  const file = join(dir, `${l.name}.f32`);
  await Deno.writeFile(file, new Uint8Array(l.w.buffer, l.w.byteOffset, l.w.byteLength));
  const env = { ...Deno.env.toObject() };
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  const script = new URL("./svd_numpy.py", import.meta.url).pathname;
  const args = [script, file, `${l.rows}`, `${l.cols}`, `${l.rank}`, `${OVERSAMPLE}`, `${POWER}`];
  if (!full) args.push("--no-full");
  const out = await new Deno.Command("python3", { args, env, clearEnv: true, stderr: "inherit" })
    .output();
  await Deno.remove(file);
  if (!out.success) throw new Error(`svd_numpy.py failed on ${l.name}`);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

async function int8Bytes(graph: Graph): Promise<number> {
  const plan = planQuantization(graph);
  const session = await createSession(graph, {
    taps: plan.activations,
    optimizationLevel: "basic",
  });
  const rows = graph.inputs[0]!.shape![1] as number;
  const input = float32([1, rows], gaussianArray(rows, 9).map(Math.abs));
  const out = await session.run({ pool5: input });
  await session.release();
  const ranges = new Map<string, TensorRange>();
  for (const t of plan.activations) {
    const data = (t === "pool5" ? input.data : out[t]?.data) as Float32Array | undefined;
    if (!data) continue;
    let lo = 0, hi = 0;
    for (const v of data) {
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
    ranges.set(t, { min: lo, max: hi, source: "minmax" });
  }
  return initializerBytes(quantize(graph, { ranges, format: "qdq" }).graph);
}

/**
 * Runs the SVD benchmark.
 *
 * @param options `quick` runs one small matrix without python.
 * @returns The figures.
 */
export async function run(options: BenchOptions): Promise<BenchResult[]> {
  if (options.quick) {
    const [m, n, k] = [1024, 256, 64];
    const w = weight(m, n, 1);
    const t0 = performance.now();
    const ours = await truncatedSvd(w, [m, n, k], {
      method: "randomized",
      power: POWER,
      oversample: OVERSAMPLE,
      matmul: ortMatMul(),
    });
    const seconds = (performance.now() - t0) / 1000;
    const exact = svd(w, [m, n]);
    let tail = 0;
    for (let i = k; i < exact.s.length; i++) tail += exact.s[i]! ** 2;
    let kept = 0;
    for (const s of ours.s) kept += s * s;
    const errorRatio = Math.sqrt(Math.max(0, ours.frobenius2 - kept)) / Math.sqrt(tail);
    return [{
      name: `randomized SVD ${m}×${n} rank ${k} (quick)`,
      metrics: { seconds, errorVsOptimal: errorRatio, power: POWER, oversample: OVERSAMPLE },
    }];
  }
  const layers: Layer[] = [
    { name: "fc6", rows: 25088, cols: 4096, rank: 1024, w: weight(25088, 4096, 6) },
    { name: "fc7", rows: 4096, cols: 4096, rank: 256, w: weight(4096, 4096, 7) },
  ];
  const dir = await Deno.makeTempDir({ prefix: "clipq-svd-bench-" });
  const ref: Record<string, Record<string, number>> = {};
  try {
    for (const l of layers) ref[l.name] = await numpy(l, dir, true);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  const graph = head(layers);
  const t0 = performance.now();
  const result = await svdCompress(graph, {
    rank: 1,
    overrides: layers.map((l) => ({ name: l.name, rank: l.rank })),
    matmul: ortMatMul(),
    power: POWER,
    oversample: OVERSAMPLE,
  });
  const ours = (performance.now() - t0) / 1000;
  const metrics: Record<string, number | string> = { oursSeconds: ours };
  let full = 0, rand = 0;
  for (const l of layers) {
    const r = ref[l.name]!;
    const err = await factorError(result.graph, l);
    full += r.fullSeconds!;
    rand += r.randomizedSeconds!;
    metrics[`${l.name}ErrorVsOptimal`] = err / r.optimalError!;
    metrics[`${l.name}NumpyRandomizedErrorVsOptimal`] = r.randomizedError! / r.optimalError!;
    metrics[`${l.name}RelativeError`] = err / r.frobenius!;
  }
  metrics.numpyFullSeconds = full;
  metrics.numpyRandomizedSeconds = rand;
  metrics.oursVsFull = ours / full;
  metrics.oursVsRandomized = ours / rand;
  const floatBytes = initializerBytes(graph);
  const svdBytes = initializerBytes(result.graph);
  metrics.svdSizeVsFloat = svdBytes / floatBytes;
  metrics.int8SvdSizeVsFloat = (await int8Bytes(result.graph)) / floatBytes;
  metrics.power = POWER;
  metrics.oversample = OVERSAMPLE;
  return [{
    name: "SVD-FC VGG16 head (fc6 25088×4096 @1024, fc7 4096×4096 @256)",
    metrics,
    notes: "ours: svdCompress with ortMatMul (both layers, rewrite included); numpy: " +
      "linalg.svd(full_matrices=False) and a randomized SVD with the same rank, oversampling and " +
      "power iterations, summed over both layers. Errors are ‖W − W_k‖_F measured from the " +
      "factors in the compressed graph, over numpy's optimal rank-k error.",
  }];
}
