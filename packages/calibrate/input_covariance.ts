/**
 * Input second moments of weighted layers, measuring half of GPTQ weight rounding (@clipq/quantize's
 * `roundWithCovariance` is the applying half): for each Conv, Gemm or MatMul with a constant weight,
 * E[x·xᵀ] of the vectors its rows read — a Conv's input patches (input channels of the group ×
 * kernel positions, zero padding included), a Gemm's or MatMul's input rows — over the calibration
 * data, from a seeded sample of output positions per image.
 *
 * A large vector (a 3×3 conv over 1024 channels reads 9216 values) would need a 9216² matrix and
 * cubic work to invert, so vectors longer than `maxBlock` are cut into blocks of whole input
 * channels and only the moment inside each block is kept. The sums of outer products run in
 * onnxruntime (PᵀP over the sampled patches, a depthwise conv's channels batched).
 *
 * @module
 */
import { attrInt, attrInts, type Graph, type Node } from "@clipq/onnx/graph";
import { ConfigError, ModelError } from "@clipq/onnx/errors";
import type { InputCovariance } from "@clipq/onnx/metadata";
import { mulberry32 } from "@clipq/onnx/random";
import type { Tensor } from "@clipq/onnx/tensor";
import {
  createSession,
  type OptimizationLevel,
  ortGram,
  type OrtGramBackend,
  releaseOutputs,
} from "@clipq/runtime";

/** Options of {@linkcode measureInputCovariances}. */
export interface InputCovarianceOptions {
  /** Names of the weighted layers to measure (Conv, Gemm, MatMul with a constant weight). */
  layers: readonly string[];
  /** Input vectors sampled per image and layer (all of them when a layer has fewer). */
  positions?: number;
  /** Longest block of a layer's input vector kept whole; longer vectors are cut (≥ 1). */
  maxBlock?: number;
  /** Seed of the sampled positions. */
  seed?: number;
  /** onnxruntime graph optimization level of the measuring session. */
  optimizationLevel?: OptimizationLevel;
  /** Intra-op threads (0: onnxruntime decides). */
  threads?: number;
  /** Called after each batch with the number of batches done. */
  onProgress?: (batches: number) => void;
}

/** Defaults of {@linkcode InputCovarianceOptions}. */
export const defaults = {
  layers: [],
  positions: 2048,
  maxBlock: 512,
  seed: 1,
  optimizationLevel: "all",
  threads: 0,
} satisfies InputCovarianceOptions;

/** Result of {@linkcode measureInputCovariances}. */
export interface InputCovarianceResult {
  /** By layer name. */
  covariances: Map<string, InputCovariance>;
  /** Layers not measured and why (an op or shape the sampling does not cover). */
  skipped: { node: string; reason: string }[];
}

/** How one layer's input vectors are read from its input tensor. */
interface Geometry {
  node: string;
  input: string;
  groups: number;
  /** Values per vector and group. */
  dim: number;
  blocks: number[];
  /** Vectors (positions) in a tensor of the given dims. */
  count(dims: readonly number[]): number;
  /**
   * A reader of the picked vectors of `x`: `read(v, g, from, to, out)` fills `out` with values
   * [from, to) of picked vector v, group g (zero where a patch overhangs the padding). Block bounds
   * fall on whole channels. Per-vector offsets are worked out once here, not once per group.
   */
  reader(x: Tensor, picks: Int32Array): Reader;
}

type Reader = (v: number, g: number, from: number, to: number, out: Float32Array) => void;

/** Blocks of whole channels of `per` values each, at most `maxBlock` values long. */
function blockBounds(channels: number, per: number, maxBlock: number): number[] {
  const dim = channels * per;
  const step = Math.max(1, Math.floor(maxBlock / per)) * per;
  const out = [0];
  for (let b = step; b < dim; b += step) out.push(b);
  out.push(dim);
  return out;
}

function convGeometry(n: Node, w: Tensor, maxBlock: number): Geometry | string {
  const rank = w.dims.length - 2;
  if (rank < 1 || rank > 2) return `a Conv over ${rank} spatial dims (1 or 2 are measured)`;
  const [, cg, kh, kw = 1] = w.dims as number[];
  const groups = attrInt(n, "group", 1);
  const strides = attrInts(n, "strides") ?? [1, 1];
  const dil = attrInts(n, "dilations") ?? [1, 1];
  const autoPad = n.attributes.auto_pad?.value;
  if (autoPad !== undefined && autoPad !== "NOTSET") return `auto_pad ${autoPad}`;
  const pads = attrInts(n, "pads") ?? new Array(2 * rank).fill(0);
  const [sh, sw = 1] = strides, [dh, dw = 1] = dil;
  // pads: [begin…, end…] per spatial dim.
  const pt = pads[0]!, pb = pads[rank]!;
  const pl = rank === 2 ? pads[1]! : 0, pr = rank === 2 ? pads[3]! : 0;
  const k = kh! * kw;
  const spatial = (dims: readonly number[]) => {
    const ih = dims[2]!, iw = rank === 2 ? dims[3]! : 1;
    const oh = Math.floor((ih + pt + pb - dh! * (kh! - 1) - 1) / sh!) + 1;
    const ow = Math.floor((iw + pl + pr - dw * (kw - 1) - 1) / sw) + 1;
    return { ih, iw, oh, ow };
  };
  return {
    node: n.name,
    input: n.inputs[0]!,
    groups,
    dim: cg! * k,
    blocks: blockBounds(cg!, k, maxBlock),
    count: (dims) => {
      const s = spatial(dims);
      return dims[0]! * s.oh * s.ow;
    },
    reader: (x, picks) => {
      const data = x.data as Float32Array;
      const { ih, iw, oh, ow } = spatial(x.dims);
      const channels = x.dims[1]!, plane = ih * iw;
      const base = new Int32Array(picks.length);
      const y0 = new Int32Array(picks.length), x0 = new Int32Array(picks.length);
      picks.forEach((v, i) => {
        const b = Math.floor(v / (oh * ow)), p = v % (oh * ow);
        base[i] = b * channels * plane;
        y0[i] = Math.floor(p / ow) * sh! - pt;
        x0[i] = (p % ow) * sw - pl;
      });
      const dy = Int32Array.from({ length: k }, (_, r) => Math.floor(r / kw) * dh!);
      const dx = Int32Array.from({ length: k }, (_, r) => (r % kw) * dw);
      // Offsets of the kernel taps in a plane, for patches that lie wholly inside it.
      const off = Int32Array.from({ length: k }, (_, r) => dy[r]! * iw + dx[r]!);
      const reachY = dy[k - 1]!, reachX = dx[k - 1]!;
      return (v, g, from, to, out) => {
        const by = y0[v]!, bx = x0[v]!;
        let i = 0;
        if (by >= 0 && bx >= 0 && by + reachY < ih && bx + reachX < iw) {
          for (let c = from / k; c < to / k; c++) {
            const at = base[v]! + (g * cg! + c) * plane + by * iw + bx;
            for (let r = 0; r < k; r++) out[i++] = data[at + off[r]!]!;
          }
          return;
        }
        for (let c = from / k; c < to / k; c++) {
          const at = base[v]! + (g * cg! + c) * plane;
          for (let r = 0; r < k; r++) {
            const iy = by + dy[r]!, ix = bx + dx[r]!;
            // (n >>> 0) < size: 0 ≤ n < size in one compare.
            out[i++] = (iy >>> 0) < ih && (ix >>> 0) < iw ? data[at + iy * iw + ix]! : 0;
          }
        }
      };
    },
  };
}

function rowsGeometry(n: Node, k: number, transposed: boolean, maxBlock: number): Geometry {
  return {
    node: n.name,
    input: n.inputs[0]!,
    groups: 1,
    dim: k,
    blocks: blockBounds(k, 1, maxBlock),
    count: (dims) => {
      let rows = 1;
      for (const d of dims) rows *= d;
      return rows / k;
    },
    reader: (x, picks) => {
      const data = x.data as Float32Array;
      // Gemm's A with transA is [K, M]: vector v is column v.
      const m = transposed ? x.dims[1]! : 0;
      return (v, _g, from, to, out) => {
        const at = picks[v]!;
        if (!transposed) out.set(data.subarray(at * k + from, at * k + to));
        else for (let i = from; i < to; i++) out[i - from] = data[i * m + at]!;
      };
    },
  };
}

function geometryOf(graph: Graph, n: Node, maxBlock: number): Geometry | string {
  const w = graph.initializers.get(n.inputs[1] ?? "");
  if (!w) return "its weight is not a constant";
  if (w.dtype !== "float32") return `a ${w.dtype} weight`;
  if (n.op === "Conv") return convGeometry(n, w, maxBlock);
  if (w.dims.length !== 2) return `a ${n.op} weight of rank ${w.dims.length}`;
  if (n.op === "Gemm") {
    const transB = attrInt(n, "transB", 0) === 1;
    return rowsGeometry(n, w.dims[transB ? 1 : 0]!, attrInt(n, "transA", 0) === 1, maxBlock);
  }
  if (n.op === "MatMul") return rowsGeometry(n, w.dims[0]!, false, maxBlock);
  return `a ${n.op} (Conv, Gemm and MatMul are measured)`;
}

/** Running sums of one layer: per group and block, Σ x·xᵀ. */
interface Sums {
  geometry: Geometry;
  matrices: Float64Array[];
  samples: number;
}

/** Sampled values handed to onnxruntime at once (16 MB): groups are batched up to this. */
const CHUNK_VALUES = 1 << 22;

/**
 * Sums one tensor's sampled vectors into a layer's blocks: per block, the groups' patch matrices
 * (m×n each) go to onnxruntime in batches, which returns each PᵀP. `scratch` holds the patch
 * buffers by length, reused from layer to layer within one measurement (fresh memory costs ~4 ns a
 * byte here).
 */
async function accumulate(
  s: Sums,
  x: Tensor,
  picks: Int32Array,
  backend: { gram: OrtGramBackend; scratch: Map<number, Float32Array> },
): Promise<void> {
  const { gram, scratch } = backend;
  const { geometry: geo } = s;
  const nBlocks = geo.blocks.length - 1;
  const m = picks.length;
  const read = geo.reader(x, picks);
  for (let b = 0; b < nBlocks; b++) {
    const from = geo.blocks[b]!, to = geo.blocks[b + 1]!, n = to - from;
    const batch = Math.max(1, Math.min(geo.groups, Math.floor(CHUNK_VALUES / (m * n))));
    for (let g0 = 0; g0 < geo.groups; g0 += batch) {
      const count = Math.min(batch, geo.groups - g0);
      let p = scratch.get(count * m * n);
      if (!p) scratch.set(count * m * n, p = new Float32Array(count * m * n));
      for (let k = 0; k < count; k++) {
        for (let v = 0; v < m; v++) {
          const at = (k * m + v) * n;
          read(v, g0 + k, from, to, p.subarray(at, at + n));
        }
      }
      const ptp = await gram(p, { batch: count, m, n });
      for (let k = 0; k < count; k++) {
        const sum = s.matrices[(g0 + k) * nBlocks + b]!;
        const off = k * n * n;
        for (let i = 0; i < n * n; i++) sum[i]! += ptp[off + i]!;
      }
    }
  }
  s.samples += m;
}

/**
 * Measures E[x·xᵀ] of the input vectors of weighted layers over calibration batches: one session
 * with the layers' inputs tapped, a seeded sample of `positions` vectors per image and layer.
 *
 * @param graph The float graph the layers are in (for GPTQ: `floatTwin()` of @clipq/quantize).
 * @param batches Feeds, batch by batch.
 * @param options The layers, sampling and session options.
 * @returns The second moments by layer, and the layers skipped with the reason.
 * @throws {ConfigError} When an option is out of range.
 * @throws {ModelError} When a layer name is not a node of the graph, or a batch is empty.
 *
 * @example The moment of a 1×1 conv's two input channels
 * ```ts
 * import { measureInputCovariances } from "@clipq/calibrate/input-covariance";
 * import { emptyGraph, float32, node } from "@clipq/onnx";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({
 *   nodes: [node({ name: "c", op: "Conv", inputs: ["x", "w"], outputs: ["y"] })],
 *   inputs: [{ name: "x", dtype: "float32", shape: [1, 2, 1, 2] }],
 *   outputs: [{ name: "y", dtype: "float32", shape: [1, 1, 1, 2] }],
 *   initializers: new Map([["w", float32([1, 2, 1, 1], [1, 1])]]),
 * });
 * // Two positions: (1, 3) and (2, 4).
 * const r = await measureInputCovariances(g, [{ x: float32([1, 2, 1, 2], [1, 2, 3, 4]) }], {
 *   layers: ["c"],
 * });
 * assert.deepEqual([...r.covariances.get("c")!.matrices[0]!], [2.5, 5.5, 5.5, 12.5]);
 * ```
 */
export async function measureInputCovariances(
  graph: Graph,
  batches:
    | AsyncIterable<Readonly<Record<string, Tensor>>>
    | Iterable<Readonly<Record<string, Tensor>>>,
  options: InputCovarianceOptions,
): Promise<InputCovarianceResult> {
  const o = { ...defaults, ...options };
  for (const key of ["positions", "maxBlock"] as const) {
    if (!Number.isInteger(o[key]) || o[key] < 1) {
      throw new ConfigError(key, `expected an integer ≥ 1 but found ${JSON.stringify(o[key])}`);
    }
  }
  const byName = new Map(graph.nodes.map((n) => [n.name, n]));
  const sums: Sums[] = [];
  const skipped: { node: string; reason: string }[] = [];
  for (const name of o.layers) {
    const n = byName.get(name);
    if (!n) throw new ModelError(`layer "${name}": expected a node of that name in the model`);
    const geo = geometryOf(graph, n, o.maxBlock);
    if (typeof geo === "string") {
      skipped.push({ node: name, reason: geo });
      continue;
    }
    const nBlocks = geo.blocks.length - 1;
    const matrices: Float64Array[] = [];
    for (let g = 0; g < geo.groups; g++) {
      for (let b = 0; b < nBlocks; b++) {
        const len = geo.blocks[b + 1]! - geo.blocks[b]!;
        matrices.push(new Float64Array(len * len));
      }
    }
    sums.push({ geometry: geo, matrices, samples: 0 });
  }
  const covariances = new Map<string, InputCovariance>();
  if (sums.length === 0) return { covariances, skipped };
  const graphInputs = new Set(graph.inputs.map((i) => i.name));
  const taps = [...new Set(sums.map((s) => s.geometry.input))].filter((t) => !graphInputs.has(t));
  // Layers that read only graph inputs need no run.
  const session = taps.length === 0 ? undefined : await createSession(graph, {
    optimizationLevel: o.optimizationLevel,
    threads: o.threads,
    taps,
    // A few runs: no memory plan, whose second run allocates afresh (see createSession).
    memoryPattern: false,
    label: "float model with layer inputs tapped (GPTQ input moments)",
  });
  const backend = { gram: ortGram({ threads: o.threads }), scratch: new Map() };
  const random = mulberry32(o.seed);
  let done = 0;
  try {
    for await (const feeds of batches) {
      const out = session ? await session.run(feeds, { outputs: taps }) : {};
      for (const s of sums) {
        const name = s.geometry.input;
        const x = out[name] ?? feeds[name];
        if (!x || x.dtype !== "float32") {
          throw new ModelError(
            `layer "${s.geometry.node}": expected a float32 input "${name}" but found ${
              x ? x.dtype : "none"
            }`,
          );
        }
        const total = s.geometry.count(x.dims);
        if (total < 1) {
          throw new ModelError(`layer "${s.geometry.node}": input "${name}" holds no vectors`);
        }
        const picks = total <= o.positions
          ? Int32Array.from({ length: total }, (_, i) => i)
          : Int32Array.from({ length: o.positions }, () => Math.floor(random() * total));
        await accumulate(s, x, picks, backend);
      }
      releaseOutputs(out);
      o.onProgress?.(++done);
    }
  } finally {
    await session?.release();
  }
  for (const s of sums) {
    if (s.samples === 0) continue;
    const geo = s.geometry;
    const matrices = s.matrices.map((c) => {
      for (let k = 0; k < c.length; k++) c[k]! /= s.samples;
      return c;
    });
    covariances.set(geo.node, {
      groups: geo.groups,
      dim: geo.dim,
      blocks: geo.blocks,
      matrices,
      samples: s.samples,
    });
  }
  return { covariances, skipped };
}
