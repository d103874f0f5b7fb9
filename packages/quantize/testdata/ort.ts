// Test helpers: run graphs through onnxruntime-node directly (tests only — the package itself never
// imports onnxruntime), take min/max ranges by running the float model, compare outputs.
import * as ort from "onnxruntime-node";
import { encode } from "@clipq/onnx/proto";
import type { Graph } from "@clipq/onnx/graph";
import type { TensorRange } from "@clipq/onnx/metadata";
import { seededRandom } from "@clipq/onnx/builder";
import { inferDtypes } from "../_dtypes.ts";

export type Feeds = Record<string, Float32Array>;

/** Runs a graph; returns every output as float32 (u8/i8 outputs are not expected here). */
export async function runGraph(
  graph: Graph,
  feeds: Feeds,
  options: { level?: "disabled" | "basic" | "extended" | "all"; optimizedPath?: string } = {},
): Promise<Record<string, Float32Array>> {
  const session = await ort.InferenceSession.create(encode(graph), {
    graphOptimizationLevel: options.level ?? "all",
    executionProviders: ["cpu"],
    ...(options.optimizedPath ? { optimizedModelFilePath: options.optimizedPath } : {}),
  });
  try {
    const input: Record<string, ort.Tensor> = {};
    for (const v of graph.inputs) {
      if (graph.initializers.has(v.name)) continue;
      input[v.name] = new ort.Tensor("float32", feeds[v.name]!, v.shape as number[]);
    }
    const out = await session.run(input);
    const result: Record<string, Float32Array> = {};
    for (const [k, t] of Object.entries(out)) result[k] = Float32Array.from(t.data as Float32Array);
    return result;
  } finally {
    await session.release();
  }
}

/** Seeded uniform input for every graph input, in [lo, hi). */
export function randomFeeds(graph: Graph, seed = 1, lo = -1, hi = 1): Feeds {
  const r = seededRandom(seed);
  const feeds: Feeds = {};
  for (const v of graph.inputs) {
    const n = (v.shape as number[]).reduce((a, b) => a * b, 1);
    feeds[v.name] = r.uniforms(n, lo, hi);
  }
  return feeds;
}

/** Min/max of every float tensor (inputs and node outputs) over the feeds, by running the model. */
export async function minmaxRanges(
  graph: Graph,
  feedsList: Feeds[],
): Promise<Map<string, TensorRange>> {
  const dtypes = inferDtypes(graph);
  const names = new Set<string>(graph.inputs.map((v) => v.name));
  for (const n of graph.nodes) {
    for (const o of n.outputs) if (o && dtypes.get(o) === "float32") names.add(o);
  }
  const existing = new Set(graph.outputs.map((v) => v.name));
  const tapped: Graph = {
    ...graph,
    outputs: [
      ...graph.outputs,
      ...[...names].filter((t) => !existing.has(t) && !graph.inputs.some((v) => v.name === t))
        .map((name) => ({ name, dtype: "float32" as const })),
    ],
  };
  const ranges = new Map<string, TensorRange>();
  const update = (name: string, data: Float32Array) => {
    let lo = Infinity, hi = -Infinity;
    for (const x of data) [lo, hi] = [Math.min(lo, x), Math.max(hi, x)];
    const r = ranges.get(name);
    ranges.set(name, {
      min: Math.min(lo, r?.min ?? lo),
      max: Math.max(hi, r?.max ?? hi),
      source: "minmax",
    });
  };
  for (const feeds of feedsList) {
    const out = await runGraph(tapped, feeds, { level: "disabled" });
    for (const [k, v] of Object.entries(out)) update(k, v);
    for (const [k, v] of Object.entries(feeds)) update(k, v);
  }
  return ranges;
}

/** Signal-to-quantization-noise ratio in dB of `test` against `ref`. */
export function sqnr(ref: Float32Array, test: Float32Array): number {
  let s = 0, e = 0;
  for (let i = 0; i < ref.length; i++) {
    s += ref[i]! * ref[i]!;
    e += (ref[i]! - test[i]!) ** 2;
  }
  return 10 * Math.log10(s / Math.max(e, 1e-30));
}

/** Op types of the nodes of an ONNX file onnxruntime wrote (optimized model), by decoding it. */
export function countOps(graph: Graph): Record<string, number> {
  const c: Record<string, number> = {};
  for (const n of graph.nodes) c[n.op] = (c[n.op] ?? 0) + 1;
  return c;
}
