/**
 * @clipq/calibrate — activation ranges for int8 quantization: clip bounds read from the graph (zero
 * data, the paper's idea), streaming mergeable histograms over calibration data, the
 * minmax/percentile/mse/entropy/aciq range methods (optionally loss-aware), range overrides, range
 * refinement by the model's output error (`refineRanges`), and the measurement halves of bias
 * correction and GPTQ weight rounding.
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
export { Histogram, type HistogramJSON, type HistogramOptions } from "./histogram.ts";
export * from "./statistics.ts";
export {
  RANGE_METHODS,
  rangeFromHistogram,
  type RangeMethod,
  type RangeOptions,
  rangesFromStatistics,
} from "./range_methods.ts";
export {
  clipBounds,
  type ClipBoundsOptions,
  type ClipBoundsResult,
  type InputRange,
  type PixelSpec,
  withClipBounds,
} from "./clip_bounds.ts";
export { type CollectOptions, type CollectProgress, collectStatistics } from "./collect.ts";
export { type BiasLayer, type BiasShiftOptions, measureBiasShifts } from "./bias_shifts.ts";
export {
  type InputCovarianceOptions,
  type InputCovarianceResult,
  measureInputCovariances,
} from "./input_covariance.ts";
export { applyOverrides } from "./overrides.ts";
export {
  type Grid,
  type RangeChange,
  type RefinedRanges,
  refineRanges,
  type RefineRangesOptions,
} from "./refine_ranges.ts";
export {
  type ChannelRange,
  type ChannelRangeOptions,
  measureChannelRanges,
} from "./channel_ranges.ts";
