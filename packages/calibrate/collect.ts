/**
 * Running the float model over calibration data and streaming every needed tensor into its
 * histogram, batch by batch: memory is one batch of outputs plus `bins` numbers per tensor,
 * whatever the number of images.
 *
 * @module
 */
import { type Graph, ModelError, type Tensor, toFloat32 } from "@clipq/onnx";
import { ConfigError } from "@clipq/onnx/errors";
import { createSession, type OptimizationLevel } from "@clipq/runtime";
import { Histogram } from "./histogram.ts";
import type { Statistics } from "./statistics.ts";

/** Progress of a calibration run. */
export interface CollectProgress {
  /** Batches done. */
  batches: number;
  /** Items done (the first input's batch dimension summed; 1 per batch for unbatched inputs). */
  items: number;
}

/** Options of {@linkcode collectStatistics}. */
export interface CollectOptions {
  /** Tensors to histogram (graph inputs, outputs or intermediate tensors). */
  tensors: readonly string[];
  /** Called after each batch. */
  onProgress?: (progress: CollectProgress) => void;
  /** Histogram bins. */
  bins?: number;
  /** onnxruntime graph optimization level of the tapped session. */
  optimizationLevel?: OptimizationLevel;
  /** Intra-op threads (0: onnxruntime decides). */
  threads?: number;
  /** Statistics to continue (e.g. loaded from a previous shard); updated in place. */
  into?: Statistics;
}

/** Defaults of {@linkcode CollectOptions}. */
export const defaults = {
  tensors: [],
  bins: 2048,
  optimizationLevel: "all",
  threads: 0,
} satisfies CollectOptions;

/**
 * Runs the model over batches and histograms the given tensors. The next batch runs while the
 * current one is histogrammed, so at most two batches of tapped outputs are alive at once.
 *
 * @param graph The float model.
 * @param batches Input feeds by input name, one record per batch (async or sync iterable).
 * @param options Tensors, progress callback, bins, session options.
 * @returns Histograms by tensor name.
 * @throws {ModelError} When a tensor is not in the model or is not a float tensor.
 * @throws {ConfigError} When no tensors are asked for.
 *
 * @example Histogram a hidden tensor
 * ```ts
 * import { collectStatistics } from "@clipq/calibrate/collect";
 * import { emptyGraph, float32, node } from "@clipq/onnx";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({
 *   nodes: [
 *     node({ name: "r", op: "Relu", inputs: ["x"], outputs: ["h"] }),
 *     node({ name: "n", op: "Neg", inputs: ["h"], outputs: ["y"] }),
 *   ],
 *   inputs: [{ name: "x", dtype: "float32", shape: [2] }],
 *   outputs: [{ name: "y", dtype: "float32", shape: [2] }],
 * });
 * const stats = await collectStatistics(g, [{ x: float32([2], [-1, 3]) }], { tensors: ["h"] });
 * assert.deepEqual([stats.get("h")?.min, stats.get("h")?.max], [0, 3]);
 * ```
 */
export async function collectStatistics(
  graph: Graph,
  batches:
    | AsyncIterable<Readonly<Record<string, Tensor>>>
    | Iterable<Readonly<Record<string, Tensor>>>,
  options: CollectOptions,
): Promise<Statistics> {
  const o = { ...defaults, ...options };
  if (!Array.isArray(o.tensors) || o.tensors.length === 0) {
    throw new ConfigError("tensors", "expected at least one tensor name to collect statistics for");
  }
  const inputs = new Set(graph.inputs.map((v) => v.name));
  const wanted = [...new Set(o.tensors)];
  // Graph inputs come straight from the feeds; everything else is fetched as a (tapped) output.
  const fetched = wanted.filter((t) => !inputs.has(t));
  const stats: Statistics = o.into ?? new Map();
  for (const t of wanted) if (!stats.has(t)) stats.set(t, new Histogram({ bins: o.bins }));
  const session = await createSession(graph, {
    optimizationLevel: o.optimizationLevel,
    threads: o.threads,
    taps: fetched,
    label: `model "${graph.name}" (calibration)`,
  });
  const progress: CollectProgress = { batches: 0, items: 0 };
  type Feeds = Readonly<Record<string, Tensor>>;
  const iterator = Symbol.asyncIterator in batches
    ? batches[Symbol.asyncIterator]()
    : (batches as Iterable<Feeds>)[Symbol.iterator]();
  const start = async (): Promise<
    { feeds: Feeds; outputs: Promise<Record<string, Tensor>> } | undefined
  > => {
    const next = await iterator.next();
    if (next.done) return undefined;
    const feeds = next.value;
    const outputs = fetched.length > 0
      ? session.run(feeds, { outputs: fetched })
      : Promise.resolve({});
    // Awaited below; this only keeps an early failure from being reported as unhandled.
    outputs.catch(() => {});
    return { feeds, outputs };
  };
  let inflight: Awaited<ReturnType<typeof start>>;
  try {
    inflight = await start();
    while (inflight) {
      const { feeds } = inflight;
      const outputs = await inflight.outputs;
      // onnxruntime runs the next batch on its own threads while this one is histogrammed.
      inflight = await start();
      for (const t of wanted) {
        const value = inputs.has(t) ? feeds[t] : outputs[t];
        if (!value) {
          throw new ModelError(
            `model "${graph.name}": expected tensor "${t}" in the run's outputs or feeds but found none`,
          );
        }
        if (value.dtype !== "float32" && value.dtype !== "float16" && value.dtype !== "float64") {
          throw new ModelError(
            `model "${graph.name}": expected tensor "${t}" to be a float tensor but found ${value.dtype}`,
          );
        }
        stats.get(t)!.add(toFloat32(value));
      }
      progress.batches++;
      const first = session.inputNames[0];
      const dims = first ? feeds[first]?.dims : undefined;
      progress.items += dims && dims.length >= 4 ? dims[0]! : 1;
      o.onProgress?.({ ...progress });
    }
  } finally {
    // A run still in flight must end before its session is released.
    if (inflight) await inflight.outputs.catch(() => {});
    await session.release();
  }
  return stats;
}
