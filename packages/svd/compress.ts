/**
 * The SVD-FC rewrite: every Gemm and every MatMul with a constant 2-D weight becomes two layers
 * with no nonlinearity between, y = (x·(U_k·Σ_k))·V_kᵀ (+ bias), when that saves parameters.
 * Pure graph transform; the matrix products go through an injectable backend.
 *
 * @module
 */
import type { Graph, Node, Tensor, ValueInfo } from "@clipq/onnx";
import { attrFloat, attrInt, consumers, freshName, opsetOf, producers } from "@clipq/onnx/graph";
import { toFloat32 } from "@clipq/onnx/tensor";
import { ConfigError } from "@clipq/onnx/errors";
import type { MatMulBackend } from "./matmul.ts";
import { type TruncatedSvd, truncatedSvd } from "./truncated.ts";

/** What a rank function sees of a layer; W is rows×cols = [in, out]. */
export interface RankVars {
  /** Input features (rows of W as MatMul stores it). */
  readonly rows: number;
  /** Output features. */
  readonly cols: number;
  /** rows·cols. */
  readonly params: number;
  /** The node name. */
  readonly name: string;
  /** Position of the layer among the candidate layers (0-based, node order). */
  readonly index: number;
  /** Number of candidate layers in the graph. */
  readonly layers: number;
}

/** A per-layer rule; the first that matches a node wins over the global policy. */
export interface SvdOverride {
  /** Exact node name. */
  name?: string;
  /** Regular expression (source) tested against the node name. */
  pattern?: string;
  /** Rank for matching layers: a number or a function of the layer. */
  rank?: number | ((vars: RankVars) => number);
  /** Energy to keep for matching layers. */
  energy?: number;
  /** Leave matching layers as they are. */
  skip?: boolean;
}

/** Options of {@linkcode svdCompress}; exactly one of rank, energy, ratio, rankFn. */
export interface SvdCompressOptions {
  /** Fixed rank k for every layer (clamped to min(rows, cols)). */
  rank?: number;
  /** Smallest k keeping at least this fraction of Σσ² (0 < energy ≤ 1). */
  energy?: number;
  /** Parameter budget: largest k with k·(rows + cols) ≤ ratio·rows·cols (0 < ratio < 1). */
  ratio?: number;
  /** Rank per layer, e.g. compiled from a mathjs expression such as "ceil(0.25 * min(rows, cols))". */
  rankFn?: (vars: RankVars) => number;
  /** Per-layer rules by name or pattern. */
  overrides?: readonly SvdOverride[];
  /** Matrix multiply backend (e.g. `ortMatMul()` from @clipq/runtime); pure TypeScript by default. */
  matmul?: MatMulBackend;
  /** Seed of the random test matrices; the same seed gives the same bytes. */
  seed?: number;
  /** Power iterations of the randomized SVD. */
  power?: number;
  /** Oversampling of the randomized SVD. */
  oversample?: number;
  /** Layers with fewer weights than this are left alone. */
  minParams?: number;
  /** Largest min(rows, cols) decomposed by the exact method. */
  exactMaxDim?: number;
}

/** Defaults of {@linkcode SvdCompressOptions}. */
export const defaults = {
  seed: 0,
  power: 2,
  oversample: 10,
  minParams: 1024,
  exactMaxDim: 256,
  overrides: [],
} satisfies SvdCompressOptions;

/** One layer of the report. */
export interface SvdLayerReport {
  /** The original node name. */
  readonly node: string;
  /** "Gemm" or "MatMul". */
  readonly op: string;
  /** Input features. */
  readonly rows: number;
  /** Output features. */
  readonly cols: number;
  /** Rank kept (min(rows, cols) when skipped). */
  readonly rank: number;
  /** Σ_{i≤k} σ_i² / ‖W‖_F² (1 when skipped). */
  readonly keptEnergy: number;
  /** ‖W − W_k‖_F / ‖W‖_F (0 when skipped). */
  readonly relativeError: number;
  /** Weights before (rows·cols). */
  readonly paramsBefore: number;
  /** Weights after (k·(rows + cols), or rows·cols when skipped). */
  readonly paramsAfter: number;
  /** Which decomposition ran. */
  readonly method?: "exact" | "randomized" | "randomized-gram";
  /** Why the layer was left alone. */
  readonly skipped?: string;
}

/** Result of {@linkcode svdCompress}. */
export interface SvdCompressResult {
  /** The rewritten graph. */
  readonly graph: Graph;
  /** One entry per candidate layer, in node order. */
  readonly layers: readonly SvdLayerReport[];
}

interface Candidate {
  node: Node;
  weightName: string;
  weight: Tensor;
  /** The weight as [in, out] float32. */
  w: Float32Array;
  rows: number;
  cols: number;
  transB: boolean;
  alpha: number;
}

/**
 * Splits fully connected layers by truncated SVD.
 *
 * @param graph The model (weights as initializers or Constant nodes).
 * @param options Rank policy, overrides, backend, seed.
 * @returns The new graph and a per-layer report.
 *
 * @example Halve the rank of one MatMul
 * ```ts
 * import { svdCompress } from "@clipq/svd";
 * import { emptyGraph, float32, node } from "@clipq/onnx";
 * import assert from "node:assert/strict";
 * const w = float32([64, 64], Float32Array.from({ length: 4096 }, (_, i) => Math.sin(i)));
 * const g = emptyGraph({
 *   nodes: [node({ name: "fc", op: "MatMul", inputs: ["x", "w"], outputs: ["y"] })],
 *   initializers: new Map([["w", w]]),
 *   inputs: [{ name: "x", dtype: "float32", shape: [1, 64] }],
 *   outputs: [{ name: "y", dtype: "float32", shape: [1, 64] }],
 * });
 * const { graph, layers } = await svdCompress(g, { rank: 8 });
 * assert.deepEqual(graph.nodes.map((n) => n.name), ["fc_svd_a", "fc_svd_b"]);
 * assert.equal(layers[0]?.paramsAfter, 8 * 128);
 * ```
 */
export async function svdCompress(
  graph: Graph,
  options: SvdCompressOptions = {},
): Promise<SvdCompressResult> {
  const opts = { ...defaults, ...options };
  checkOptions(opts);
  const byName = producers(graph);
  const readers = consumers(graph);
  const layers: SvdLayerReport[] = [];
  const replace = new Map<Node, Node[]>();
  const newInits = new Map<string, Tensor>();
  const newInfos: ValueInfo[] = [];
  const taken = new Set<string>();
  freshName(graph, "", taken);
  const opset = opsetOf(graph) ?? 13;
  const shapes = new Map<string, ValueInfo>();
  for (const v of [...graph.inputs, ...graph.valueInfo, ...graph.outputs]) shapes.set(v.name, v);

  const isLinear = (n: Node) =>
    (n.domain === "" || n.domain === "ai.onnx") && (n.op === "MatMul" || n.op === "Gemm");
  const count =
    graph.nodes.filter((n) => isLinear(n) && typeof candidate(n, graph, byName, false) !== "string")
      .length;
  let index = -1;
  for (const node of graph.nodes) {
    if (!isLinear(node)) continue;
    const name = node.name || node.outputs[0] || "layer";
    const found = candidate(node, graph, byName);
    if (typeof found !== "string") index++;
    if (typeof found === "string") {
      if (found) layers.push(skipped(node, name, 0, 0, found));
      continue;
    }
    const { rows, cols } = found;
    const params = rows * cols;
    const rule = opts.overrides.find((o) =>
      o.name === name || (o.pattern !== undefined && new RegExp(o.pattern).test(name))
    );
    if (rule?.skip) {
      layers.push(skipped(node, name, rows, cols, "skipped by an override"));
      continue;
    }
    if (params < opts.minParams) {
      layers.push(
        skipped(node, name, rows, cols, `${params} weights < minParams ${opts.minParams}`),
      );
      continue;
    }
    // One NaN weight made both factors all NaN (every output NaN, not one column) and the report
    // call it lossless; the randomized path failed in the eigensolver, naming no layer.
    // Read in the stored initializer (its own layout and type). A float64 beyond float32's range
    // is refused too: the factors are computed in float32.
    const stored = found.weight.data as Float32Array | Float64Array;
    const bad = stored.findIndex((v: number) => !Number.isFinite(Math.fround(v)));
    if (bad >= 0) {
      layers.push(
        skipped(
          node,
          name,
          rows,
          cols,
          `its weight "${found.weightName}" holds ${stored[bad]} (at ${bad}): left as it is`,
        ),
      );
      continue;
    }
    const full = Math.min(rows, cols);
    // Largest k that still saves parameters: k·(rows + cols) < rows·cols.
    const breakEven = Math.ceil(params / (rows + cols)) - 1;
    const energy = rule?.energy ?? (rule?.rank === undefined ? opts.energy : undefined);
    const seed = (opts.seed ^ hash(name)) | 0;
    const svdOpts = {
      ...(opts.matmul ? { matmul: opts.matmul } : {}),
      seed,
      power: opts.power,
      oversample: opts.oversample,
      exactMaxDim: opts.exactMaxDim,
    };
    let k: number;
    let dec: TruncatedSvd | undefined;
    if (energy !== undefined) {
      const r = await rankForEnergy(found.w, rows, cols, energy, breakEven, svdOpts);
      k = r.k;
      dec = r.dec;
      if (!dec) {
        layers.push(skipped(
          node,
          name,
          rows,
          cols,
          `keeping ${energy} of the energy needs rank > ${breakEven}, which saves no parameters`,
        ));
        continue;
      }
    } else {
      const vars = { rows, cols, params, name, index, layers: count };
      const ruleRank = typeof rule?.rank === "function" ? rule.rank(vars) : rule?.rank;
      const raw = ruleRank ??
        (opts.rankFn
          ? opts.rankFn(vars)
          : opts.rank !== undefined
          ? opts.rank
          : Math.floor(opts.ratio! * params / (rows + cols)));
      // No rank fits a ratio this small: rank 1 had been taken, over the budget.
      if (ruleRank === undefined && !opts.rankFn && opts.rank === undefined && raw < 1) {
        layers.push(skipped(
          node,
          name,
          rows,
          cols,
          `ratio ${opts.ratio} allows ${
            (opts.ratio! * params).toFixed(1)
          } weights, fewer than rank 1's ${rows + cols}`,
        ));
        continue;
      }
      if (!Number.isFinite(raw) || raw < 0) {
        throw new ConfigError(
          rule?.rank !== undefined ? "overrides.rank" : "rank",
          `expected a rank ≥ 1 for layer "${name}" (${rows}×${cols}) but found ${raw}`,
        );
      }
      k = Math.min(full, Math.max(1, Math.round(raw)));
    }
    if (k > breakEven) {
      layers.push(skipped(
        node,
        name,
        rows,
        cols,
        `rank ${k} saves no parameters: ${k}·(${rows} + ${cols}) ≥ ${rows}·${cols}`,
      ));
      continue;
    }
    dec ??= await truncatedSvd(found.w, [rows, cols, k], svdOpts);
    const kept = sum2(dec.s, k);
    const keptEnergy = dec.frobenius2 > 0 ? Math.min(1, kept / dec.frobenius2) : 1;
    const relativeError = Math.sqrt(Math.max(0, 1 - keptEnergy));
    const nodes = rewrite(found, dec, k, name, taken, newInits, opset);
    replace.set(node, nodes.nodes);
    newInfos.push(midInfo(node, nodes.mid, k, shapes));
    layers.push({
      node: name,
      op: node.op,
      rows,
      cols,
      rank: k,
      keptEnergy,
      relativeError,
      paramsBefore: params,
      paramsAfter: k * (rows + cols),
      method: dec.method,
    });
  }
  if (replace.size === 0) return { graph, layers };
  const nodes = graph.nodes.flatMap((n) => replace.get(n) ?? [n]);
  // Drop weights (initializers or Constant nodes) nothing reads any more.
  const stillRead = new Set(nodes.flatMap((n) => n.inputs));
  const kept = nodes.filter((n) =>
    !(n.op === "Constant" && replacedWeight(n, replace, readers) && !stillRead.has(n.outputs[0]!))
  );
  const initializers = new Map(graph.initializers);
  for (const old of replace.keys()) {
    const w = old.inputs[1]!;
    if (!stillRead.has(w)) initializers.delete(w);
  }
  for (const [k, v] of newInits) initializers.set(k, v);
  return {
    graph: { ...graph, nodes: kept, initializers, valueInfo: [...graph.valueInfo, ...newInfos] },
    layers,
  };
}

function replacedWeight(n: Node, replace: Map<Node, Node[]>, readers: Map<string, Node[]>) {
  const out = n.outputs[0];
  return out !== undefined && (readers.get(out) ?? []).some((r) => replace.has(r));
}

function checkOptions(
  opts:
    & SvdCompressOptions
    & Required<
      Pick<
        SvdCompressOptions,
        "overrides" | "seed" | "power" | "oversample" | "minParams" | "exactMaxDim"
      >
    >,
): void {
  const policies = (["rank", "energy", "ratio", "rankFn"] as const).filter((k) =>
    opts[k] !== undefined
  );
  if (policies.length !== 1) {
    throw new ConfigError(
      "",
      `expected exactly one of rank, energy, ratio, rankFn but found ${
        policies.length ? policies.join(", ") : "none"
      }`,
    );
  }
  if (opts.rank !== undefined && !(Number.isInteger(opts.rank) && opts.rank >= 1)) {
    throw new ConfigError("rank", `expected an integer ≥ 1 but found ${opts.rank}`);
  }
  if (opts.energy !== undefined && !(opts.energy > 0 && opts.energy <= 1)) {
    throw new ConfigError("energy", `expected a number in (0, 1] but found ${opts.energy}`);
  }
  if (opts.ratio !== undefined && !(opts.ratio > 0 && opts.ratio < 1)) {
    throw new ConfigError("ratio", `expected a number in (0, 1) but found ${opts.ratio}`);
  }
  for (const key of ["power", "oversample", "minParams", "exactMaxDim"] as const) {
    const v = opts[key];
    if (!Number.isInteger(v) || v < 0) {
      throw new ConfigError(key, `expected an integer ≥ 0 but found ${v}`);
    }
  }
  if (!Number.isInteger(opts.seed)) {
    throw new ConfigError("seed", `expected an integer but found ${opts.seed}`);
  }
  opts.overrides.forEach((o, i) => {
    const key = `overrides[${i}]`;
    if ((o.name === undefined) === (o.pattern === undefined)) {
      throw new ConfigError(key, "expected exactly one of name, pattern");
    }
    if (o.pattern !== undefined) {
      try {
        new RegExp(o.pattern);
      } catch (e) {
        throw new ConfigError(`${key}.pattern`, `expected a regular expression: ${e}`);
      }
    }
    const set = [o.rank, o.energy, o.skip].filter((v) => v !== undefined).length;
    if (set !== 1) {
      throw new ConfigError(key, `expected exactly one of rank, energy, skip but found ${set}`);
    }
    if (typeof o.rank === "number" && !(Number.isInteger(o.rank) && o.rank >= 1)) {
      throw new ConfigError(`${key}.rank`, `expected an integer ≥ 1 but found ${o.rank}`);
    }
    if (o.energy !== undefined && !(o.energy > 0 && o.energy <= 1)) {
      throw new ConfigError(`${key}.energy`, `expected a number in (0, 1] but found ${o.energy}`);
    }
  });
}

/** The layer's weight as [in, out], or a skip reason ("" when it is not a candidate at all). */
function candidate(
  node: Node,
  graph: Graph,
  byName: Map<string, Node>,
  read = true,
): Candidate | string {
  const weightName = node.inputs[1] ?? "";
  const weight = constantTensor(weightName, graph, byName);
  const lhsConst = constantTensor(node.inputs[0] ?? "", graph, byName);
  if (!weight) return lhsConst ? "the constant is the left operand" : "";
  if (weight.dims.length !== 2) {
    return `weight "${weightName}" is ${weight.dims.length}-D, expected 2-D`;
  }
  if (weight.dtype !== "float32" && weight.dtype !== "float64") {
    return `weight "${weightName}" is ${weight.dtype}, expected float32 or float64`;
  }
  const [d0, d1] = weight.dims as [number, number];
  if (node.op === "Gemm" && attrInt(node, "transA", 0) !== 0) {
    return "Gemm with transA=1 is not split";
  }
  // A cheap pass only classifies; the weight is read when the layer is processed.
  if (!read) {
    return {
      node,
      weightName,
      weight,
      w: new Float32Array(0),
      rows: d0,
      cols: d1,
      transB: false,
      alpha: 1,
    };
  }
  if (node.op === "MatMul") {
    return {
      node,
      weightName,
      weight,
      w: toFloat32(weight),
      rows: d0,
      cols: d1,
      transB: false,
      alpha: 1,
    };
  }
  const transB = attrInt(node, "transB", 0) !== 0;
  const alpha = attrFloat(node, "alpha", 1);
  const raw = toFloat32(weight);
  // W as [in, out]: a transB=1 Gemm stores [out, in].
  const w = transB ? transposed(raw, d0, d1) : raw;
  return {
    node,
    weightName,
    weight,
    w,
    rows: transB ? d1 : d0,
    cols: transB ? d0 : d1,
    transB,
    alpha,
  };
}

function constantTensor(name: string, graph: Graph, byName: Map<string, Node>): Tensor | undefined {
  if (!name) return undefined;
  const init = graph.initializers.get(name);
  if (init) return graph.inputs.some((i) => i.name === name) ? undefined : init;
  const p = byName.get(name);
  if (p?.op === "Constant") {
    const v = p.attributes.value;
    if (v?.type === "tensor") return v.value;
  }
  return undefined;
}

function transposed(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) out[j * rows + i] = a[i * cols + j]!;
  }
  return out;
}

async function rankForEnergy(
  w: Float32Array,
  rows: number,
  cols: number,
  energy: number,
  breakEven: number,
  svdOpts: Parameters<typeof truncatedSvd>[2],
): Promise<{ k: number; dec?: TruncatedSvd }> {
  if (breakEven < 1) return { k: 0 };
  // Randomized SVD sees only the top of the spectrum: grow the rank until it covers the energy.
  let k = Math.min(breakEven, Math.max(16, Math.ceil(Math.min(rows, cols) / 16)));
  for (;;) {
    const dec = await truncatedSvd(w, [rows, cols, k], svdOpts);
    const target = energy * dec.frobenius2;
    let acc = 0;
    const s = dec.method === "exact" ? dec.spectrum : dec.s;
    for (let i = 0; i < s.length && i < breakEven; i++) {
      acc += s[i]! * s[i]!;
      if (acc >= target * (1 - 1e-12)) {
        const want = i + 1;
        if (want <= dec.k) return { k: want, dec: truncate(dec, want, rows, cols) };
        return { k: want, dec: await truncatedSvd(w, [rows, cols, want], svdOpts) };
      }
    }
    if (dec.method === "exact" || k >= breakEven) return { k: 0 };
    k = Math.min(breakEven, 2 * k);
  }
}

function truncate(dec: TruncatedSvd, k: number, rows: number, cols: number): TruncatedSvd {
  if (k === dec.k) return dec;
  const u = new Float32Array(rows * k);
  for (let i = 0; i < rows; i++) u.set(dec.u.subarray(i * dec.k, i * dec.k + k), i * k);
  return { ...dec, u, s: dec.s.slice(0, k), vt: dec.vt.slice(0, k * cols), k };
}

function rewrite(
  c: Candidate,
  dec: TruncatedSvd,
  k: number,
  name: string,
  taken: Set<string>,
  inits: Map<string, Tensor>,
  opset: number,
): { nodes: Node[]; mid: string } {
  const { node, rows, cols, transB, alpha } = c;
  // First factor [in, k] = U_k·Σ_k (times Gemm's alpha); second [k, out] = V_kᵀ.
  const a = new Float32Array(rows * k);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < k; j++) a[i * k + j] = dec.u[i * k + j]! * dec.s[j]! * alpha;
  }
  const b = dec.vt;
  const wa = freshName({} as Graph, `${c.weightName}_svd_a`, taken);
  const wb = freshName({} as Graph, `${c.weightName}_svd_b`, taken);
  const mid = freshName({} as Graph, `${node.outputs[0]}_svd`, taken);
  const na = freshName({} as Graph, `${name}_svd_a`, taken);
  const nb = freshName({} as Graph, `${name}_svd_b`, taken);
  const dtype = c.weight.dtype;
  const store = (data: Float32Array, r: number, cc: number, t: boolean): Tensor => {
    const d = t ? transposed(data, r, cc) : data;
    const dims = t ? [cc, r] : [r, cc];
    if (dtype === "float64") return { dtype, dims, data: Float64Array.from(d) };
    return { dtype: "float32", dims, data: d };
  };
  if (node.op === "MatMul") {
    inits.set(wa, store(a, rows, k, false));
    inits.set(wb, store(b, k, cols, false));
    return {
      nodes: [
        { ...node, name: na, inputs: [node.inputs[0]!, wa], outputs: [mid] },
        { ...node, name: nb, inputs: [mid, wb], outputs: [...node.outputs] },
      ],
      mid,
    };
  }
  // Gemm: keep the original's transB layout in both factors, so per-channel axes read the same.
  inits.set(wa, store(a, rows, k, transB));
  inits.set(wb, store(b, k, cols, transB));
  const attrs = { ...node.attributes, alpha: { type: "float", value: 1 } } as Node["attributes"];
  const firstInputs = [node.inputs[0]!, wa];
  if (opset < 11) {
    // Before opset 11 Gemm's C is required: a zero bias.
    const zb = freshName({} as Graph, `${c.weightName}_svd_zero_bias`, taken);
    // In the weight's own type: a float32 bias beside float64 factors was an invalid Gemm.
    inits.set(
      zb,
      dtype === "float64"
        ? { dtype, dims: [k], data: new Float64Array(k) }
        : { dtype: "float32", dims: [k], data: new Float32Array(k) },
    );
    firstInputs.push(zb);
  }
  const { beta: _beta, ...firstAttrs } = attrs as Record<string, Node["attributes"][string]>;
  const second = [mid, wb, ...(node.inputs[2] ? [node.inputs[2]] : [])];
  return {
    nodes: [
      { ...node, name: na, inputs: firstInputs, outputs: [mid], attributes: firstAttrs },
      { ...node, name: nb, inputs: second, outputs: [...node.outputs], attributes: attrs },
    ],
    mid,
  };
}

function midInfo(node: Node, mid: string, k: number, shapes: Map<string, ValueInfo>): ValueInfo {
  const src = shapes.get(node.inputs[0]!) ?? shapes.get(node.outputs[0]!);
  const dtype = src?.dtype ?? "float32";
  if (!src?.shape || src.shape.length === 0) return { name: mid, dtype };
  return { name: mid, dtype, shape: [...src.shape.slice(0, -1), k] };
}

function skipped(
  node: Node,
  name: string,
  rows: number,
  cols: number,
  why: string,
): SvdLayerReport {
  return {
    node: name,
    op: node.op,
    rows,
    cols,
    rank: Math.min(rows, cols),
    keptEnergy: 1,
    relativeError: 0,
    paramsBefore: rows * cols,
    paramsAfter: rows * cols,
    skipped: why,
  };
}

function sum2(s: Float64Array, k: number): number {
  let acc = 0;
  for (let i = 0; i < k; i++) acc += s[i]! * s[i]!;
  return acc;
}

function hash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h | 0;
}
