/**
 * The `calibrate` step: activation ranges for every tensor the quantizer needs, from clip bounds
 * (no data), a data method over the calibration images, or clip bounds with a data fallback, plus
 * per-tensor overrides. Statistics stream, save, load and merge (sharded calibration).
 *
 * @module
 */
import { dirname } from "node:path";
import type { Graph, Tensor, TensorRange } from "@clipq/onnx";
import { ClipqError, ConfigError, DataError } from "@clipq/onnx/errors";
import {
  checkShardSet,
  clipBounds,
  collectStatistics,
  loadStatisticsFile,
  measureChannelRanges,
  mergeStatistics,
  rangesFromStatistics,
  saveStatistics,
  type Statistics,
  statisticsToJSON,
  withClipBounds,
} from "@clipq/calibrate";
import { defaults as collectDefaults } from "@clipq/calibrate/collect";
import { planQuantization, splitChannels, splitRegions } from "@clipq/quantize";
import {
  checkOptions,
  checkOverrides,
  type Step,
  type StepContext,
  type StepDefinition,
} from "../step.ts";
import { CALIBRATE_OPTIONS } from "./options.ts";

/** Options of {@linkcode calibrateStep}. */
export interface CalibrateStepOptions {
  method?: "clip-bounds" | "minmax" | "percentile" | "mse" | "entropy" | "aciq";
  fallback?: "minmax" | "percentile" | "mse" | "entropy" | "aciq" | "float";
  percentile?: number;
  lossAware?: { lambda: number } | false;
  biasCorrection?: boolean;
  /**
   * Range refinement (`refineRanges` in @clipq/calibrate): each quantized tensor's range judged by
   * the model's outputs with that tensor alone on its int8 grid, over the first `images` (4)
   * calibration images; `true` for the defaults.
   */
  refine?: boolean | { images?: number; factors?: number[]; minGain?: number; screen?: number };
  /** Values per tensor per image to histogram, or "all" (see collectStatistics). */
  samples?: number | "all";
  statistics?: { save?: string; load?: string };
  overrides?: Record<string, { min: number; max: number }>;
  /**
   * Channel splitting before calibration (see `splitChannels` in @clipq/quantize): where a conv
   * feeds a depthwise conv through channel-wise ops and a few channels of the depthwise input
   * stretch its range, split the channels into up to `groups` groups with their own int8 scales
   * (exact in float); `true` for the defaults, `false` to leave the graph as it is.
   */
  splitChannels?: { groups?: number; minGainDb?: number } | boolean;
}

/** Calibration images range refinement judges on unless `refine.images` says otherwise. */
export const REFINE_IMAGES = 4;

/** Defaults of {@linkcode calibrateStep}. */
export const defaults = {
  method: "clip-bounds",
  fallback: "percentile",
  percentile: 99.99,
  lossAware: false,
  biasCorrection: false,
  refine: false,
  samples: collectDefaults.samples,
  statistics: {},
  overrides: {},
  splitChannels: false,
} satisfies CalibrateStepOptions;

/** The graph's image input name (config `input.name` or the first non-extra input). */
function imageInputName(graph: Graph, ctx: StepContext): string | undefined {
  return ctx.input.name ??
    graph.inputs.find((i) =>
      !graph.initializers.has(i.name) && !(ctx.input.extra && i.name in ctx.input.extra)
    )
      ?.name;
}

/** Feeds of the calibration images (this process's shard), counting the images seen. */
async function* feeds(
  ctx: StepContext,
  seen: { images: number },
): AsyncGenerator<Record<string, Tensor>> {
  const shard = ctx.calibration?.shard;
  for await (const batch of ctx.batches("calibration", shard ? { shard } : {})) {
    seen.images += batch.files.length;
    yield batch.feeds;
  }
}

/**
 * Channel splitting: per-channel ranges of each splittable region's depthwise input over the
 * calibration images, then the exact rewrite; the report lists what was split.
 */
async function split(
  graph: Graph,
  ctx: StepContext,
  options: { groups?: number; minGainDb?: number },
): Promise<Graph> {
  const regions = splitRegions(graph);
  if (regions.length === 0) {
    ctx.report.splitChannels = { regions: 0, splits: [] };
    return graph;
  }
  const channelRanges = await measureChannelRanges(graph, feeds(ctx, { images: 0 }), {
    tensors: regions.map((r) => r.tensor),
  });
  const result = splitChannels(graph, { ...options, channelRanges });
  ctx.report.splitChannels = {
    regions: regions.length,
    splits: result.splits.map((s) => ({
      conv: s.conv,
      depthwise: s.depthwise,
      groups: s.groups.map((g) => g.length),
      gainDb: Number(s.gainDb.toFixed(2)),
    })),
  };
  ctx.methods.push("split-channels");
  ctx.log.info(
    `  split-channels: ${result.splits.length} of ${regions.length} conv → depthwise regions split`,
  );
  return result.graph;
}

/**
 * Statistics to load as a whole calibration: one shard's hold only its images, and loaded alone
 * they quietly stood for all of them.
 *
 * @param path The statistics file.
 * @param key The config key that names it.
 * @returns The statistics.
 * @throws {ConfigError} When the file records a shard of a split.
 */
export async function loadWholeStatistics(path: string, key: string): Promise<Statistics> {
  const loaded = await loadStatisticsFile(path);
  if (loaded.shard) {
    const [k, n] = loaded.shard;
    throw new ConfigError(
      key,
      `expected whole statistics; found shard ${k}/${n} of a split in ${path} (merge all ${n} with --merge-stats)`,
    );
  }
  return loaded.stats;
}

/** Saves statistics, creating their folder as the output's is (a missing one failed naming a temp file). */
async function save(
  path: string,
  stats: Statistics,
  shard?: readonly [number, number],
): Promise<void> {
  try {
    await Deno.mkdir(dirname(path), { recursive: true });
    await saveStatistics(path, stats, shard ? { shard } : {});
  } catch (e) {
    // A full disk is the environment's, not a bug of clipq's (it had ended as an internal error).
    // Only the system's own I/O errors (they carry its error number); a bug stays a bug.
    if (e instanceof ClipqError || !/\(os error \d+\)/.test(String((e as Error)?.message))) throw e;
    throw new DataError(`${path}: cannot write the statistics: ${(e as Error).message}`, {
      cause: e,
    });
  }
}

/**
 * Options the chosen method would accept and then ignore are errors: a `percentile` beside
 * `method: "minmax"` reads as if it clipped, and did nothing.
 */
function checkReadOptions(
  given: CalibrateStepOptions,
  o: Required<CalibrateStepOptions>,
): void {
  const uses = o.method === "clip-bounds"
    ? `method "clip-bounds" with fallback "${o.fallback}"`
    : `method "${o.method}"`;
  if (given.fallback !== undefined && o.method !== "clip-bounds") {
    throw new ConfigError(
      "calibrate.fallback",
      `expected only with method "clip-bounds" (it calibrates what clip bounds leave unbounded); found ${uses}, which has no fallback`,
    );
  }
  const percentile = o.method === "percentile" ||
    (o.method === "clip-bounds" && o.fallback === "percentile");
  if (given.percentile !== undefined && !percentile) {
    throw new ConfigError(
      "calibrate.percentile",
      `expected only with method or fallback "percentile"; found ${uses}, which does not read it`,
    );
  }
  const data = o.method !== "clip-bounds" || o.fallback !== "float";
  for (const key of ["statistics", "samples", "lossAware"] as const) {
    if (given[key] !== undefined && given[key] !== false && !data) {
      throw new ConfigError(
        `calibrate.${key}`,
        `expected only with a data method; found ${uses}, which measures no data`,
      );
    }
  }
}

/**
 * The statistics a step reads from files must cover every tensor it calibrates from data: ones saved
 * from another model (or with other exclusions) would leave the missing tensors float, silently.
 */
function checkCoverage(
  stats: Statistics,
  tensors: readonly string[],
  key: string,
  from: string,
): void {
  const missing = tensors.filter((t) => !stats.has(t));
  if (missing.length === 0) return;
  const shown = missing.slice(0, 3).map((t) => JSON.stringify(t)).join(", ");
  throw new ConfigError(
    key,
    `expected statistics of the ${tensors.length} tensors this model calibrates from data; found none for ${shown}${
      missing.length > 3 ? ` and ${missing.length - 3} more` : ""
    } in ${from} (saved from another model, or with other quantize exclusions?)`,
  );
}

/**
 * Creates the `calibrate` step.
 *
 * @param options Method, fallback, percentile, loss-aware clipping, statistics, overrides.
 * @returns The step.
 *
 * @example Options are checked up front
 * ```ts
 * import { calibrateStep } from "@clipq/pipeline/steps/calibrate";
 * import assert from "node:assert/strict";
 * assert.equal(calibrateStep({ method: "entropy" }).name, "calibrate");
 * assert.throws(() => calibrateStep({ method: "percentil" as "percentile" }), /calibrate\.method: expected one of/);
 * assert.throws(() => calibrateStep({ samples: 0 }), /calibrate\.samples: expected a number ≥ 1/);
 * ```
 */
export function calibrateStep(options: CalibrateStepOptions = {}): Step {
  const given = checkOptions<CalibrateStepOptions>(CALIBRATE_OPTIONS, options, "calibrate");
  const o = { ...defaults, ...given } as Required<CalibrateStepOptions>;
  checkReadOptions(given, o);
  for (const [t, r] of Object.entries(o.overrides)) {
    if (!(r.min < r.max)) {
      throw new ConfigError(
        `calibrate.overrides.${t}`,
        `expected min < max; found [${r.min}, ${r.max}]`,
      );
    }
  }
  return {
    name: "calibrate",
    async run(graph, ctx) {
      checkOverrides(graph, o.overrides, "calibrate.overrides");
      if (o.splitChannels) {
        graph = await split(graph, ctx, o.splitChannels === true ? {} : o.splitChannels);
      }
      const plan = planQuantization(graph, ctx.quantizePlan ?? {});
      const needed = plan.activations;
      const ranges = new Map<string, TensorRange>();
      let dataTensors: string[] = needed;
      let unbounded: string[] = [];
      let bounds: ReturnType<typeof clipBounds> | undefined;
      if (o.method === "clip-bounds") {
        const name = imageInputName(graph, ctx);
        const pixel = {
          scale: ctx.input.scale ?? 1 / 255,
          mean: ctx.input.mean ?? [0, 0, 0],
          std: ctx.input.std ?? [1, 1, 1],
        };
        const cb = clipBounds(graph, { inputs: name ? { [name]: pixel } : {} });
        bounds = cb;
        for (const t of needed) {
          const r = cb.ranges.get(t);
          if (r) ranges.set(t, r);
        }
        unbounded = needed.filter((t) => !ranges.has(t));
        dataTensors = o.fallback === "float" ? [] : unbounded;
        ctx.methods.push(`calibrate:clip-bounds+${o.fallback}`);
        ctx.log.info(
          `  clip-bounds: ${ranges.size} of ${needed.length} tensors bounded, ${unbounded.length} left to ${o.fallback}`,
        );
      } else ctx.methods.push(`calibrate:${o.method}`);
      if (dataTensors.length > 0) {
        // The range method of the tensors calibrated from data (dataTensors is empty for "float").
        const method = o.method === "clip-bounds"
          ? o.fallback as Exclude<typeof o.fallback, "float">
          : o.method;
        const collect = (tensors: string[], seen: { images: number }) =>
          collectStatistics(graph, feeds(ctx, seen), {
            tensors,
            samples: o.samples,
            // Only minmax reads the extremes; the histogram methods read the counts, so their
            // extremes come from the sample (two passes fewer over every tapped value). Saved
            // statistics (and shards) keep exact ones: any method may read them later.
            extremes: (method === "minmax" && o.lossAware === false) || o.statistics.save ||
                ctx.calibration?.statsOut
              ? "exact"
              : "sample",
            // Fetching every tapped tensor whole runs best without layout changes (each tap of an
            // NCHWc tensor costs a reorder); reduced in the graph, the full optimizations win.
            optimizationLevel: o.samples === "all" ? "basic" : "all",
          });
        const mode = ctx.calibration;
        let stats: Statistics;
        if (mode?.mergeFrom && o.statistics.load) {
          throw new ConfigError(
            "--merge-stats",
            `expected either --merge-stats or calibrate.statistics.load; found both (${o.statistics.load})`,
          );
        }
        if (mode?.mergeFrom) {
          const files = await Promise.all(
            mode.mergeFrom.map(async (file) => ({ file, ...await loadStatisticsFile(file) })),
          );
          // A shard left out or one from another split merged silently into the wrong ranges.
          checkShardSet(files);
          stats = mergeStatistics(files.map((f) => f.stats));
          checkCoverage(stats, dataTensors, "--merge-stats", mode.mergeFrom.join(", "));
        } else if (o.statistics.load) {
          stats = await loadWholeStatistics(o.statistics.load, "calibrate.statistics.load");
          // Statistics saved before channel splitting lack the split tensors: collect those.
          const missing = dataTensors.filter((t) => !stats.has(t));
          if (o.splitChannels && missing.length > 0) {
            const more = await collect(missing, { images: 0 });
            stats = new Map([...stats, ...more]);
          }
          checkCoverage(stats, dataTensors, "calibrate.statistics.load", o.statistics.load);
        } else {
          const seen = { images: 0 };
          stats = await collect(dataTensors, seen);
          if (seen.images === 0) {
            throw new ConfigError(
              "data.calibration.images",
              "expected at least one calibration image; found none",
            );
          }
        }
        if (mode?.statsOut) await save(mode.statsOut, stats, mode.shard);
        if (o.statistics.save && !mode?.shard) await save(o.statistics.save, stats);
        const wanted: Statistics = new Map();
        for (const t of dataTensors) {
          const h = stats.get(t);
          if (h) wanted.set(t, h);
        }
        ctx.statistics = statisticsToJSON(wanted);
        let values = 0, population = 0;
        for (const h of wanted.values()) {
          values += h.count + h.nonFinite;
          population += h.population;
        }
        // Loaded or merged statistics carry their own sampling: the report says what they hold.
        ctx.report.calibration = {
          samples: mode?.mergeFrom || o.statistics.load ? "as loaded" : o.samples,
          tensors: wanted.size,
          valuesBinned: values,
          valuesSeen: population,
        };
        const found = rangesFromStatistics(wanted, {
          method,
          percentile: o.percentile,
          lossAware: o.lossAware,
        });
        // One-sided clip bounds (Relu ≥ 0, what a hard-swish or HardSigmoid reader ignores) narrow
        // the data ranges of the tensors clip-bounds left to the fallback.
        const narrowed = bounds ? withClipBounds(bounds, found) : found;
        for (const t of found.keys()) ranges.set(t, narrowed.get(t)!);
        // Data that gave tensors no finite value (a .npy of 3e38: every conv overflows) left their
        // nodes float behind a plain "wrote …"; the reason was only in the report.
        const empty = dataTensors.filter((t) => !found.has(t) && !o.overrides[t]);
        if (empty.length > 0) {
          ctx.log.warn(
            `${empty.length} of ${dataTensors.length} tensors got no range from the data (first: ${
              empty[0]
            }): every value seen was NaN or infinite, or the statistics hold none${
              ctx.calibration?.statsOut ? "" : "; their nodes stay float"
            }`,
          );
        }
        if (o.lossAware) ctx.methods.push(`loss-aware:${o.lossAware.lambda}`);
      } else if (ctx.calibration?.statsOut) {
        // Nothing needs data (clip bounds cover it all): the shard's statistics are empty, so a later
        // --merge-stats still finds every file it expects.
        await save(ctx.calibration.statsOut, new Map(), ctx.calibration.shard);
      }
      for (const [t, r] of Object.entries(o.overrides)) {
        ranges.set(t, { min: r.min, max: r.max, source: "override" });
      }
      ctx.ranges = ranges;
      ctx.report.unbounded = unbounded;
      if (o.biasCorrection) {
        ctx.biasCorrection = true;
        ctx.methods.push("bias-correction");
      }
      if (o.refine) {
        if (!ctx.hasData("calibration")) {
          throw new ConfigError(
            "calibrate.refine",
            "expected calibration images to judge the ranges on; found none",
          );
        }
        const given = o.refine === true ? {} : o.refine;
        ctx.refineRanges = { images: REFINE_IMAGES, ...given };
        ctx.methods.push("refine");
      }
      return graph;
    },
  };
}

/** Registry entry of the `calibrate` step. */
export const calibrateDefinition: StepDefinition = {
  name: "calibrate",
  description: "Activation ranges: clip-bounds (zero data) with a data fallback, or a data method.",
  options: CALIBRATE_OPTIONS,
  factory: (o) => calibrateStep(o as CalibrateStepOptions),
};
