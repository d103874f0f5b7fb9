/**
 * Calibration statistics: one histogram per tensor, saved as JSON so another range method can be
 * tried without running the model again, and merged across shards.
 *
 * @module
 */
import { ConfigError, DataError } from "@clipq/onnx/errors";
import { Histogram, type HistogramJSON } from "./histogram.ts";

/** Histograms by tensor name. */
export type Statistics = Map<string, Histogram>;

/** The JSON form of {@linkcode Statistics}. */
export interface StatisticsJSON {
  /** Marks the file as clipq statistics. */
  format: "clipq.statistics";
  /** Format version. */
  version: 1;
  /** Histograms by tensor name. */
  tensors: Record<string, HistogramJSON>;
  /** Which shard [k, n] (1-based k) of the calibration images these are, when they are one. */
  shard?: [number, number];
}

/** Options of {@linkcode saveStatistics}. */
export interface SaveStatisticsOptions {
  /** The shard [k, n] (1-based k) the statistics were measured on, recorded for the merge. */
  shard?: readonly [number, number];
}

/**
 * The JSON form of statistics.
 *
 * @param stats The statistics.
 * @returns A plain object.
 *
 * @example Round trip
 * ```ts
 * import { Histogram } from "@clipq/calibrate/histogram";
 * import { statisticsFromJSON, statisticsToJSON } from "@clipq/calibrate/statistics";
 * import assert from "node:assert/strict";
 * const s = new Map([["x", new Histogram().add([1, 2, 3])]]);
 * assert.equal(statisticsFromJSON(statisticsToJSON(s)).get("x")?.max, 3);
 * ```
 */
export function statisticsToJSON(stats: ReadonlyMap<string, Histogram>): StatisticsJSON {
  const tensors: Record<string, HistogramJSON> = {};
  for (const [k, h] of stats) tensors[k] = h.toJSON();
  return { format: "clipq.statistics", version: 1, tensors };
}

/**
 * Statistics from their JSON form.
 *
 * @param json What {@linkcode statisticsToJSON} wrote.
 * @param what Name for error messages (the file).
 * @returns The statistics.
 * @throws {DataError} When the JSON is not clipq statistics.
 *
 * @example Refuses other JSON
 * ```ts
 * import { statisticsFromJSON } from "@clipq/calibrate/statistics";
 * import assert from "node:assert/strict";
 * assert.throws(() => statisticsFromJSON({ hello: 1 }, "s.json"), /s\.json/);
 * ```
 */
export function statisticsFromJSON(json: unknown, what = "statistics"): Statistics {
  const j = json as Partial<StatisticsJSON> | null;
  if (!j || j.format !== "clipq.statistics" || j.version !== 1 || typeof j.tensors !== "object") {
    throw new DataError(
      `${what}: expected {"format": "clipq.statistics", "version": 1, "tensors": {…}} but found ${
        JSON.stringify(json)?.slice(0, 80)
      }`,
    );
  }
  const out: Statistics = new Map();
  for (const [k, v] of Object.entries(j.tensors ?? {})) {
    out.set(k, Histogram.fromJSON(v, `${what}: tensor "${k}"`));
  }
  return out;
}

/**
 * Writes statistics to a JSON file (atomically: a temporary file renamed into place).
 *
 * @param path The file.
 * @param stats The statistics.
 * @returns Nothing.
 *
 * @example Save and load
 * ```ts
 * import { Histogram } from "@clipq/calibrate/histogram";
 * import { loadStatistics, saveStatistics } from "@clipq/calibrate/statistics";
 * import assert from "node:assert/strict";
 * const path = await Deno.makeTempFile({ suffix: ".json" });
 * await saveStatistics(path, new Map([["x", new Histogram().add([4, -1])]]));
 * assert.equal((await loadStatistics(path)).get("x")?.min, -1);
 * await Deno.remove(path);
 * ```
 */
export async function saveStatistics(
  path: string,
  stats: ReadonlyMap<string, Histogram>,
  options: SaveStatisticsOptions = {},
): Promise<void> {
  // The pid in the name lets an interrupted run remove its own temporary file, and only that.
  const tmp = `${path}.${Deno.pid}.${crypto.randomUUID()}.tmp`;
  const json = statisticsToJSON(stats);
  if (options.shard) json.shard = [options.shard[0], options.shard[1]];
  try {
    await Deno.writeTextFile(tmp, JSON.stringify(json));
    await Deno.rename(tmp, path);
  } catch (e) {
    // A full disk had left the partial file behind.
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

/**
 * Reads statistics written by {@linkcode saveStatistics}.
 *
 * @param path The file.
 * @returns The statistics.
 * @throws {DataError} When the file cannot be read or is not clipq statistics (names the file).
 *
 * @example Missing file
 * ```ts
 * import { loadStatistics } from "@clipq/calibrate/statistics";
 * import assert from "node:assert/strict";
 * await assert.rejects(loadStatistics("/nonexistent/stats.json"), /stats\.json/);
 * ```
 */
export async function loadStatistics(path: string): Promise<Statistics> {
  return (await loadStatisticsFile(path)).stats;
}

/**
 * Reads statistics written by {@linkcode saveStatistics}, with the shard they record (if any).
 *
 * @param path The file.
 * @returns The statistics and their shard.
 * @throws {DataError} When the file cannot be read or is not clipq statistics (names the file).
 */
export async function loadStatisticsFile(
  path: string,
): Promise<{ stats: Statistics; shard?: [number, number] }> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new DataError(`${path}: expected a readable statistics file (${String(e)})`, {
      cause: e,
    });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new DataError(`${path}: expected JSON (${String(e)})`, { cause: e });
  }
  const stats = statisticsFromJSON(json, path);
  const shard = (json as { shard?: unknown }).shard;
  if (shard === undefined) return { stats };
  const valid = Array.isArray(shard) && shard.length === 2 &&
    shard.every((v) => Number.isInteger(v) && v >= 1) && shard[0] <= shard[1];
  if (!valid) {
    throw new DataError(
      `${path}: expected "shard" as [k, n] with 1 ≤ k ≤ n; found ${JSON.stringify(shard)}`,
    );
  }
  return { stats, shard: shard as [number, number] };
}

/**
 * Checks that statistics files to merge are one whole split: the same shard count, each shard
 * once, none missing, no whole statistics among them. Files that all record no shard (saved by an
 * older clipq, or merged by hand) pass.
 *
 * @param files Each file with the shard it records.
 * @throws {ConfigError} Keyed `--merge-stats`, naming the files and shards at fault.
 *
 * @example A shard missing
 * ```ts
 * import { checkShardSet } from "@clipq/calibrate/statistics";
 * import assert from "node:assert/strict";
 * assert.throws(
 *   () => checkShardSet([{ file: "s.1.json", shard: [1, 3] }, { file: "s.3.json", shard: [3, 3] }]),
 *   /expected all 3 shards of the split; found no shard 2\/3/,
 * );
 * ```
 */
export function checkShardSet(
  files: readonly { file: string; shard?: readonly [number, number] }[],
): void {
  if (files.every((f) => !f.shard)) return;
  const key = "--merge-stats";
  const whole = files.find((f) => !f.shard);
  if (whole) {
    const shard = files.find((f) => f.shard)!;
    throw new ConfigError(
      key,
      `expected the shards of one split; found ${whole.file}, which is no shard, beside ${shard.file} (shard ${
        shard.shard!.join("/")
      })`,
    );
  }
  // Every file records its shard from here on.
  const first = files[0]!;
  const n = first.shard![1];
  const other = files.find((f) => f.shard![1] !== n);
  if (other) {
    throw new ConfigError(
      key,
      `expected shards of one split; found ${first.file} (shard ${
        first.shard!.join("/")
      }) and ${other.file} (shard ${other.shard!.join("/")})`,
    );
  }
  const byIndex = new Map<number, string>();
  for (const f of files) {
    const k = f.shard![0];
    const seen = byIndex.get(k);
    if (seen) {
      throw new ConfigError(
        key,
        `expected each shard once; found shard ${k}/${n} in ${seen} and ${f.file}`,
      );
    }
    byIndex.set(k, f.file);
  }
  const missing = Array.from({ length: n }, (_, i) => i + 1).filter((k) => !byIndex.has(k));
  if (missing.length > 0) {
    throw new ConfigError(
      key,
      `expected all ${n} shards of the split; found no shard ${
        missing.map((k) => `${k}/${n}`).join(", ")
      }`,
    );
  }
}

/**
 * Merges statistics of several shards (the inputs are not changed). Tensors missing from a shard
 * are taken from the others.
 *
 * @param list The shards.
 * @returns New statistics equal to a single pass over all the shards' data.
 *
 * @example Two shards
 * ```ts
 * import { Histogram } from "@clipq/calibrate/histogram";
 * import { mergeStatistics } from "@clipq/calibrate/statistics";
 * import assert from "node:assert/strict";
 * const a = new Map([["x", new Histogram().add([1])]]);
 * const b = new Map([["x", new Histogram().add([9])]]);
 * assert.equal(mergeStatistics([a, b]).get("x")?.count, 2);
 * ```
 */
export function mergeStatistics(list: readonly ReadonlyMap<string, Histogram>[]): Statistics {
  const out: Statistics = new Map();
  for (const stats of list) {
    for (const [k, h] of stats) {
      const have = out.get(k);
      if (have) have.merge(h);
      else out.set(k, h.clone());
    }
  }
  return out;
}
