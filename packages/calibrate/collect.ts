/**
 * Running the float model over calibration data and streaming every needed tensor into its
 * histogram, batch by batch: memory is one batch of outputs plus `bins` numbers per tensor,
 * whatever the number of images.
 *
 * By default each tapped tensor is reduced inside onnxruntime to a fixed, seeded sample of `samples`
 * values per image (and, for minmax, to its exact min and max, kept beside the histogram), and only
 * the sample is histogrammed; `samples: "all"` fetches and histograms every value instead, at
 * several times the cost of plain inference.
 *
 * @module
 */
import { type Graph, ModelError, producers, type Tensor, toFloat32 } from "@clipq/onnx";
import { ConfigError } from "@clipq/onnx/errors";
import {
  createSession,
  type OptimizationLevel,
  releaseOutputs,
  type Session,
} from "@clipq/runtime";
import { Histogram } from "./histogram.ts";
import type { Statistics } from "./statistics.ts";
import {
  addSampleTo,
  extremes,
  histogramSamples,
  sampleOffset,
  sampleStep,
  type SamplingPlan,
  samplingPlan,
  strided,
} from "./_sampling.ts";

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
  /**
   * Values per tensor per image to histogram (default 8192): every k-th value of each image from a
   * seeded offset, k the largest step that keeps at least this many, so every image is sampled at
   * the same positions and shards still merge exactly; min and max are computed over every value
   * inside onnxruntime (`extremes: "exact"`), so minmax ranges stay exact. A tensor with fewer
   * than twice this many values per image is taken whole. `"all"` histograms every value
   * (the exact histograms, at several times the cost: each tensor leaves onnxruntime whole). Graph
   * inputs (already in memory) are sampled the same way in JavaScript, min and max over every
   * value unless `extremes` is `"sample"`.
   */
  samples?: number | "all";
  /** Seed of the sample positions (mixed with each tensor's name). */
  seed?: number;
  /**
   * With samples: each sampled tensor's min and max over every value are measured too
   * (`"exact"`, two more passes over it in onnxruntime; kept as the histogram's `populationMin`
   * and `populationMax`), or not (`"sample"`): enough for methods that read only the counts
   * (percentile, mse, entropy, aciq), and marked on the histogram
   * ({@linkcode Histogram.extremesExact}) so that minmax refuses it. Either way the counts, grid
   * and binned extremes are the sample's and the same: the histogram methods give the same ranges.
   */
  extremes?: "exact" | "sample";
}

/** Defaults of {@linkcode CollectOptions}. */
export const defaults = {
  tensors: [],
  bins: 2048,
  optimizationLevel: "all",
  threads: 0,
  samples: 8192,
  seed: 0,
  extremes: "exact",
} satisfies CollectOptions;

/** Largest accepted `samples` (per tensor per image). */
const MAX_SAMPLES = 1 << 24;

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
  if (
    o.samples !== "all" &&
    !(Number.isInteger(o.samples) && o.samples >= 1 && o.samples <= MAX_SAMPLES)
  ) {
    throw new ConfigError(
      "samples",
      `expected "all" or an integer in [1, ${MAX_SAMPLES}] but found ${JSON.stringify(o.samples)}`,
    );
  }
  if (o.extremes !== "exact" && o.extremes !== "sample") {
    throw new ConfigError(
      "extremes",
      `expected "exact" or "sample" but found ${JSON.stringify(o.extremes)}`,
    );
  }
  if (!Number.isInteger(o.seed)) {
    throw new ConfigError("seed", `expected an integer but found ${JSON.stringify(o.seed)}`);
  }
  const inputs = new Set(graph.inputs.map((v) => v.name));
  const wanted = [...new Set(o.tensors)];
  // Graph inputs come straight from the feeds; everything else is computed by the model.
  const fetched = wanted.filter((t) => !inputs.has(t));
  const made = producers(graph);
  for (const t of fetched) {
    if (!made.has(t)) {
      throw new ModelError(
        `model "${graph.name}": expected tensor "${t}" to be produced by a node or be a graph input, but nothing produces it`,
      );
    }
  }
  const stats: Statistics = o.into ?? new Map();
  for (const t of wanted) if (!stats.has(t)) stats.set(t, new Histogram({ bins: o.bins }));
  const runner = o.samples === "all"
    ? wholeRunner(graph, fetched, o)
    : sampledRunner(graph, fetched, { ...o, samples: o.samples });
  const progress: CollectProgress = { batches: 0, items: 0 };
  type Feeds = Readonly<Record<string, Tensor>>;
  const iterator = Symbol.asyncIterator in batches
    ? batches[Symbol.asyncIterator]()
    : (batches as Iterable<Feeds>)[Symbol.iterator]();
  const start = async (): Promise<
    { feeds: Feeds; outputs: Promise<Outputs> } | undefined
  > => {
    const next = await iterator.next();
    if (next.done) return undefined;
    const feeds = next.value;
    const outputs = fetched.length > 0 ? runner.run(feeds) : Promise.resolve(EMPTY);
    // Awaited below; this only keeps an early failure from being reported as unhandled.
    outputs.catch(() => {});
    return { feeds, outputs };
  };
  // Graph inputs' samples are copied into buffers kept across batches: no garbage per batch.
  const inputScratch = new Map<string, Float32Array>();
  let inflight: Awaited<ReturnType<typeof start>>;
  try {
    inflight = await start();
    while (inflight) {
      const { feeds } = inflight;
      const outputs = await inflight.outputs;
      // onnxruntime runs the next batch on its own threads while this one is histogrammed.
      inflight = await start();
      for (const t of wanted) {
        if (!inputs.has(t)) continue;
        const value = feeds[t];
        if (!value) {
          throw new ModelError(
            `model "${graph.name}": expected graph input "${t}" in the feeds but found only [${
              Object.keys(feeds).join(", ")
            }]`,
          );
        }
        histogramInput(stats.get(t)!, floats(graph, t, value), {
          dims: value.dims,
          samples: o.samples,
          seed: o.seed,
          extremes: o.extremes,
          scratch: inputScratch,
          name: t,
        });
      }
      runner.consume(outputs, stats);
      // Histogrammed: their native memory goes back now, not at some later garbage collection
      // (dead outputs piling up between collections made peak RSS grow with the image count).
      releaseOutputs(outputs.values);
      progress.batches++;
      const first = graph.inputs.find((v) => !graph.initializers.has(v.name))?.name;
      const dims = first ? feeds[first]?.dims : undefined;
      progress.items += dims && dims.length >= 4 ? dims[0]! : 1;
      o.onProgress?.({ ...progress });
    }
  } finally {
    // A run still in flight must end before its session is released.
    if (inflight) await inflight.outputs.catch(() => {});
    await runner.release();
  }
  return stats;
}

/**
 * A graph input's values into its histogram, sampled like a tapped tensor: min and max over every
 * value (or, with `extremes: "sample"`, the sample's, sparing a pass over all 519 K values of
 * NanoDet's 416² input per image), and the counts of every k-th value at the positions the
 * calibration graph would take (histogramming a 640 × 640 image whole cost more than all the
 * reductions of a layer).
 */
function histogramInput(
  histogram: Histogram,
  values: Float32Array,
  o: {
    dims: readonly number[];
    samples: number | "all";
    seed: number;
    extremes: "exact" | "sample";
    scratch: Map<string, Float32Array>;
    name: string;
  },
): void {
  const population = o.dims.length >= 2 && o.dims[0]! > 0 ? values.length / o.dims[0]! : 0;
  const step = o.samples === "all" || !Number.isInteger(population) || population === 0
    ? 1
    : sampleStep(population, o.samples);
  if (step === 1) {
    histogram.add(values);
    return;
  }
  const sample = strided(values, {
    population,
    step,
    offset: sampleOffset(population, step, o.seed),
    into: o.scratch.get(o.name),
  });
  o.scratch.set(o.name, sample);
  addSampleTo(
    histogram,
    o.extremes === "exact"
      ? { sample, ...extremes(values), exact: true }
      : { sample, exact: false },
    values.length,
  );
}

/** What one batch's run gave, tagged with how to read it. */
interface Outputs {
  values: Record<string, Tensor>;
  plan?: SamplingPlan;
}

const EMPTY: Outputs = { values: {} };

/** Runs batches and moves their outputs into the statistics. */
interface Runner {
  run(feeds: Readonly<Record<string, Tensor>>): Promise<Outputs>;
  consume(outputs: Outputs, stats: Statistics): void;
  release(): Promise<void>;
}

type SessionSettings = Required<Pick<CollectOptions, "optimizationLevel" | "threads">>;

/** The float values of a tapped tensor, refusing non-float tensors by name. */
function floats(graph: Graph, name: string, value: Tensor): Float32Array {
  if (value.dtype !== "float32" && value.dtype !== "float16" && value.dtype !== "float64") {
    throw new ModelError(
      `model "${graph.name}": expected tensor "${name}" to be a float tensor but found ${value.dtype}`,
    );
  }
  return toFloat32(value);
}

/** Every tapped tensor leaves onnxruntime whole and every value is histogrammed (`"all"`). */
function wholeRunner(graph: Graph, fetched: readonly string[], o: SessionSettings): Runner {
  let session: Promise<Session> | undefined;
  const open = () =>
    session ??= createSession(graph, {
      optimizationLevel: o.optimizationLevel,
      threads: o.threads,
      // A few runs: no memory plan, whose second run allocates afresh (see createSession).
      memoryPattern: false,
      taps: fetched,
      label: `model "${graph.name}" (calibration)`,
    });
  return {
    async run(feeds) {
      return { values: await (await open()).run(feeds, { outputs: fetched }) };
    },
    consume({ values }, stats) {
      for (const t of fetched) {
        const value = values[t];
        if (!value) {
          throw new ModelError(
            `model "${graph.name}": expected tensor "${t}" in the run's outputs but found none`,
          );
        }
        stats.get(t)!.add(floats(graph, t, value));
      }
    },
    async release() {
      if (session) await (await session).release();
    },
  };
}

/**
 * Each tapped tensor is reduced in onnxruntime to its min, max and a sample (see _sampling.ts).
 * The graph depends on the input dims (sample positions index the values of one item), so one
 * session is built per distinct set of non-batch input dims, usually exactly one.
 */
function sampledRunner(
  graph: Graph,
  fetched: readonly string[],
  o: SessionSettings & { samples: number; seed: number; extremes: "exact" | "sample" },
): Runner {
  const sessions = new Map<string, Promise<{ session: Session; plan: SamplingPlan }>>();
  // Derived samples are computed into buffers kept across batches: no garbage per batch.
  const scratch = new Map<string, Float32Array>();
  const open = (feeds: Readonly<Record<string, Tensor>>) => {
    const inputDims: Record<string, readonly number[]> = {};
    const key: string[] = [];
    for (const v of graph.inputs) {
      const dims = feeds[v.name]?.dims;
      if (!dims) continue;
      inputDims[v.name] = dims;
      const fixed = typeof v.shape?.[0] === "number" || dims.length <= 1;
      key.push(`${v.name}:${(fixed ? dims : dims.slice(1)).join("x")}`);
    }
    const k = key.join(",");
    let entry = sessions.get(k);
    if (!entry) {
      const plan = samplingPlan(graph, {
        tensors: fetched,
        samples: o.samples,
        seed: o.seed,
        inputDims,
        extremes: o.extremes,
      });
      entry = createSession(plan.graph, {
        optimizationLevel: o.optimizationLevel,
        threads: o.threads,
        memoryPattern: false,
        label: `model "${graph.name}" (calibration)`,
      }).then((session) => ({ session, plan }));
      entry.catch(() => {});
      sessions.set(k, entry);
    }
    return entry;
  };
  return {
    async run(feeds) {
      const { session, plan } = await open(feeds);
      return { values: await session.run(feeds, { outputs: plan.fetch }), plan };
    },
    consume({ values, plan }, stats) {
      if (!plan) return;
      for (const t of plan.whole) {
        const value = values[t];
        if (!value) {
          throw new ModelError(
            `model "${graph.name}": expected tensor "${t}" in the run's outputs but found none`,
          );
        }
        stats.get(t)!.add(floats(graph, t, value));
      }
      histogramSamples(plan, values, { stats, scratch, model: graph.name });
    },
    async release() {
      for (const entry of sessions.values()) {
        const opened = await entry.catch(() => undefined);
        await opened?.session.release();
      }
    },
  };
}
