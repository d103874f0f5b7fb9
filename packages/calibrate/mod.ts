/**
 * @clipq/calibrate — activation ranges for int8 quantization: clip bounds read from the graph (zero
 * data, the paper's idea), streaming mergeable histograms over calibration data, and the
 * minmax/percentile/mse/entropy/aciq range methods, optionally loss-aware.
 *
 * @example Ranges from a histogram
 * ```ts
 * import { Histogram, rangesFromStatistics } from "@clipq/calibrate";
 * import assert from "node:assert/strict";
 * const stats = new Map([["x", new Histogram().add([0, 1, 2, 3])]]);
 * assert.equal(rangesFromStatistics(stats, { method: "minmax" }).get("x")?.max, 3);
 * ```
 *
 * @module
 */
export * from "./histogram.ts";
export * from "./statistics.ts";
export {
  RANGE_METHODS,
  rangeFromHistogram,
  type RangeMethod,
  type RangeOptions,
  rangesFromStatistics,
} from "./range_methods.ts";
