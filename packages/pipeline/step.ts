/**
 * Steps as plugins: a factory of its options returns a step `{ name, run(graph, ctx) }`. The step
 * context carries what steps share: the input spec, data sets, calibrated ranges, the report sink,
 * progress and the logger.
 *
 * @module
 */
import type { Graph, Tensor, TensorRange } from "@clipq/onnx";
import { ConfigError } from "@clipq/onnx/errors";
import type { BoxTransform } from "@clipq/data/preprocess";
import type { PlanOptions } from "@clipq/quantize";
import { type ObjectSpec, validate } from "./spec.ts";

/** Input preprocessing as configured (`input` in the config). */
export interface InputConfig {
  /** The image input's name (default: the first graph input that is not in `extra`). */
  name?: string;
  /** `[height, width]` (default: the input's fixed shape). */
  size?: [number, number];
  /** How images are fitted to `size`. */
  resize?: "stretch" | "letterbox" | "center-crop";
  /** Tensor layout; CHW has no batch axis. */
  layout?: "NCHW" | "NHWC" | "CHW";
  /** Channel order. */
  color?: "RGB" | "BGR" | "gray";
  /** Multiplier of 0..255 pixel values. */
  scale?: number;
  /** Per-channel mean subtracted after scaling. */
  mean?: number[];
  /** Per-channel standard deviation. */
  std?: number[];
  /** Fixed values of the model's other inputs. */
  extra?: Record<string, number[]>;
  /**
   * Write `size` (and the channels: 3, or 1 for `gray`) into the image input's dims before the
   * steps, so the output model takes only that size and onnxruntime sees static shapes (the batch
   * axis stays as it is).
   */
  static?: boolean;
}

/** A batch of model feeds and the files it came from. */
export interface FeedBatch {
  /** Model inputs by name (image tensor plus `input.extra`). */
  readonly feeds: Record<string, Tensor>;
  /** The files the batch came from, in batch order. */
  readonly files: readonly string[];
  /** Per image, how boxes map between model input and original image (image data sets). */
  readonly transforms?: readonly BoxTransform[];
}

/** A progress reporter for a long step. */
export interface Progress {
  /** Advances by `n` units. */
  tick(n?: number): void;
  /** Finishes the bar. */
  done(): void;
}

/** Logger steps use; quiet mode drops `info`. */
export interface Logger {
  /** Progress information (dropped by --quiet). */
  info(message: string): void;
  /** Something the user should know (always shown). */
  warn(message: string): void;
}

/** What a step knows besides the graph. Steps read it and add to it (ranges, statistics, report). */
export interface StepContext {
  /** Input preprocessing from the config. */
  readonly input: InputConfig;
  /**
   * Model feeds from the calibration or evaluation set, batch by batch. The progress line names
   * `label` (default: the set); with `limit`, the pass ends once that many images have come out
   * (unreadable files skipped do not count) and the progress counts to it.
   */
  batches(
    set: "calibration" | "evaluation",
    options?: { shard?: [number, number]; label?: string; limit?: number },
  ): AsyncIterable<FeedBatch>;
  /** Whether a data set is configured. */
  hasData(set: "calibration" | "evaluation"): boolean;
  /** The annotation file or folder configured for a data set, if any. */
  annotations?(set: "calibration" | "evaluation"): string | undefined;
  /** Activation ranges (calibrate writes, quantize reads). */
  ranges: Map<string, TensorRange>;
  /** Calibration statistics in their JSON form, when a data method ran. */
  statistics?: unknown;
  /** The last float graph (before quantize), for float vs int8 comparisons. */
  floatGraph?: Graph;
  /** Head description from the config, if any. */
  readonly head?: Record<string, unknown>;
  /** Report sink: sections keyed by name. */
  readonly report: Record<string, unknown>;
  /** Starts a progress bar with `total` units. */
  progress(label: string, total: number): Progress;
  /** Logger. */
  readonly log: Logger;
  /** Methods used, recorded in the output model's provenance. */
  readonly methods: string[];
  /** Sharded calibration (CLI --calibrate-only / --merge-stats). */
  calibration?: CalibrationMode;
  /**
   * How the config's quantize step plans (its exclusions and head outputs), set by the runner: the
   * calibrate step measures the tensors that step will need ranges for. Absent: no exclusions.
   */
  quantizePlan?: PlanOptions;
  /** Set by calibrate when bias correction is wanted; quantize measures and applies it. */
  biasCorrection?: boolean;
  /**
   * Set by calibrate when range refinement is wanted (`calibrate.refine`); quantize runs it on the
   * graph as it rewrites it, with its own int8 grid.
   */
  refineRanges?: RangeRefinementSettings;
}

/** Range refinement as `calibrate.refine` sets it (see `refineRanges` in @clipq/calibrate). */
export interface RangeRefinementSettings {
  /** Calibration images judged on (the first ones). */
  images: number;
  factors?: number[];
  minGain?: number;
  screen?: number;
}

/** How calibration statistics are produced when calibration is split over processes. */
export interface CalibrationMode {
  /** This process's shard [k, n] (1-based k) of the calibration images. */
  shard?: [number, number];
  /** Write the statistics here. */
  statsOut?: string;
  /** Merge these statistics files instead of running the model. */
  mergeFrom?: string[];
}

/** A pipeline step. */
export interface Step {
  /** Step name (`quantize`, or a custom step's name). */
  readonly name: string;
  /**
   * Runs the step.
   *
   * @param graph The graph so far.
   * @param ctx The shared context.
   * @returns The new graph.
   */
  run(graph: Graph, ctx: StepContext): Promise<Graph>;
}

/** A step factory: options in, step out (options are validated up front). */
export type StepFactory = (options?: Record<string, unknown>) => Step;

/** A registered step: its option description (for validation and the JSON Schema) and factory. */
export interface StepDefinition {
  /** The name configs use (`"use": name`). */
  readonly name: string;
  /** One line for the JSON Schema and docs. */
  readonly description: string;
  /** Its options (validated at load, written into the JSON Schema). */
  readonly options: ObjectSpec;
  /** Creates the step from validated options. */
  readonly factory: StepFactory;
}

/**
 * Validates step options against a step's description, merged over its defaults, and names the
 * step in error key paths.
 *
 * @param spec The options description.
 * @param options The options given.
 * @param where Key path prefix (e.g. `steps[2]` or the step name).
 * @returns The validated options with defaults.
 *
 * @example Usage
 * ```ts
 * import { checkOptions } from "@clipq/pipeline/step";
 * import assert from "node:assert/strict";
 * const spec = { type: "object", properties: { n: { type: "number" } } } as const;
 * assert.deepEqual(checkOptions(spec, { n: 1 }, "x"), { n: 1 });
 * assert.throws(() => checkOptions(spec, { m: 1 }, "x"), /x\.m: unknown key/);
 * ```
 */
export function checkOptions<T>(
  spec: ObjectSpec,
  options: unknown,
  where: string,
): T {
  if (options === undefined) options = {};
  return validate(spec, options, { path: where }) as T;
}

/** Step names clipq registers itself. */
export class StepRegistry {
  #steps = new Map<string, StepDefinition>();

  /**
   * Registers a step; a duplicate name is an error.
   *
   * @param def The step definition.
   * @returns this.
   */
  register(def: StepDefinition): this {
    if (this.#steps.has(def.name)) {
      throw new ConfigError("steps", `step "${def.name}" is registered twice`);
    }
    this.#steps.set(def.name, def);
    return this;
  }

  /**
   * The definition of a step by name.
   *
   * @param name Step name.
   * @returns The definition, or undefined.
   */
  get(name: string): StepDefinition | undefined {
    return this.#steps.get(name);
  }

  /**
   * All registered steps, in registration order.
   *
   * @returns The definitions.
   */
  list(): StepDefinition[] {
    return [...this.#steps.values()];
  }
}

/**
 * Checks that range overrides name tensors of the graph: one no node writes (and no input is)
 * would be set, reported, and never read.
 *
 * @param graph The graph the step runs on.
 * @param overrides Ranges by tensor name.
 * @param key The config key (e.g. `quantize.overrides`).
 *
 * @example
 * ```ts
 * import { checkOverrides } from "@clipq/pipeline/step";
 * import { ModelBuilder } from "@clipq/onnx/builder";
 * import assert from "node:assert/strict";
 * const b = new ModelBuilder();
 * b.output(b.relu(b.input("x", [1, 4])), "y");
 * checkOverrides(b.build(), { y: { min: 0, max: 1 } }, "calibrate.overrides");
 * assert.throws(
 *   () => checkOverrides(b.build(), { z: { min: 0, max: 1 } }, "calibrate.overrides"),
 *   /calibrate\.overrides: expected tensors of the model .* found "z"/,
 * );
 * ```
 */
export function checkOverrides(
  graph: Graph,
  overrides: Record<string, unknown>,
  key: string,
): void {
  const tensors = new Set([
    ...graph.inputs.map((v) => v.name),
    ...graph.nodes.flatMap((n) => n.outputs),
  ]);
  const unknown = Object.keys(overrides).filter((t) => !tensors.has(t));
  if (unknown.length > 0) {
    throw new ConfigError(
      key,
      `expected tensors of the model (node outputs or graph inputs); found ${
        unknown.map((t) => JSON.stringify(t)).join(", ")
      }, which no node writes`,
    );
  }
}

/**
 * An error thrown by a custom step's own code (not a ClipqError), in its factory or its run: a bug in that module, which the
 * command reports as an internal error of that entry, with the module's stack.
 *
 * @example
 * ```ts
 * import { CustomStepError } from "@clipq/pipeline/step";
 * import assert from "node:assert/strict";
 * const e = new CustomStepError("steps[2]", "./mine.ts", new TypeError("x is undefined"));
 * assert.equal(e.message, "steps[2] (custom step ./mine.ts): TypeError: x is undefined");
 * ```
 */
export class CustomStepError extends Error {
  /**
   * @param entry The entry's key, `steps[2]`.
   * @param use The entry's module specifier.
   * @param cause What the step (or its factory) threw.
   */
  constructor(entry: string, use: string, cause: unknown) {
    const what = cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause);
    super(`${entry} (custom step ${use}): ${what}`, { cause });
    this.name = "CustomStepError";
  }
}
