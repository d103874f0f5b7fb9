/**
 * Options of {@linkcode planQuantization} and `quantize`, their defaults, and the up-front check
 * that names the offending key.
 *
 * @module
 */
import { ConfigError } from "@clipq/onnx/errors";
import type { InputCovariances, Ranges } from "@clipq/onnx/metadata";
import type { Registry } from "./registry.ts";
import { defaultRegistry } from "./default_registry.ts";

/** Which nodes stay float. */
export interface ExcludeOptions {
  /** Node names to keep float. */
  names?: readonly string[];
  /** Op types to keep float. */
  ops?: readonly string[];
  /** Keep float the nodes whose name matches (a RegExp or its source text). */
  pattern?: string | RegExp;
  /**
   * "auto": keep the raw output of the last weighted layer on each path to a (head) graph output
   * unquantized and the decode/filter ops after it float; `false`: quantize everything supported.
   */
  head?: "auto" | false;
}

/** Options of {@linkcode planQuantization}. */
export interface PlanOptions {
  /** Exclusions. */
  exclude?: ExcludeOptions;
  /** Graph outputs that are detector head outputs (default: all). */
  headOutputs?: readonly string[];
  /** Op quantizers (default: the built-in registry). */
  registry?: Registry;
  /** Weight scales per output channel or per tensor (the opset the graph is raised to: 13 or 10). */
  weights?: "per-channel" | "per-tensor";
}

/** Options of `quantize`. */
export interface QuantizeOptions extends PlanOptions {
  /** Activation ranges by tensor name (from @clipq/calibrate). */
  ranges?: Ranges;
  /** "qdq" (QuantizeLinear/DequantizeLinear around float ops) or "qoperator" (QLinearConv …). */
  format?: "qdq" | "qoperator";
  /** "u8" asymmetric or "s8" symmetric activations. */
  activations?: "u8" | "s8";
  /** Weight clip: max |w|, or the per-channel clip minimizing squared error. */
  weightClip?: "max" | "mse";
  /** 7-bit weights in [−63, 63], for CPUs without VNNI (u8·s8 products saturate int16 there). */
  reduceRange?: boolean;
  /**
   * Per-channel shifts to subtract from each layer's float bias (bias correction), by node name,
   * measured on the layers as `floatTwin()` gives them (after the exact ORT rewrites; a rewritten
   * ConvTranspose, say, is a 1×1 Conv with C·s² output channels there). Conv/ConvTranspose/Gemm
   * without a bias get one; a MatMul's bias Add is corrected, or inserted.
   */
  biasShifts?: ReadonlyMap<string, Float32Array>;
  /**
   * Second moments of weighted layers' inputs by node name (from @clipq/calibrate's
   * `measureInputCovariances`, measured on the layers as `floatTwin()` gives them): those layers'
   * weights are rounded by GPTQ, compensating rounding errors on the data, instead of to nearest.
   */
  inputCovariances?: InputCovariances;
  /** Throw a ModelError when a tensor needs a range and has none (default: keep its node float). */
  strict?: boolean;
}

/** Defaults of {@linkcode QuantizeOptions}. */
export const defaults: Readonly<Required<Omit<QuantizeOptions, "headOutputs">>> = {
  ranges: new Map(),
  format: "qdq",
  activations: "u8",
  weights: "per-channel",
  weightClip: "max",
  reduceRange: false,
  exclude: { names: [], ops: [], head: "auto" },
  biasShifts: new Map(),
  inputCovariances: new Map(),
  strict: false,
  registry: defaultRegistry,
} satisfies QuantizeOptions;

/** Options after defaults are merged and checked. */
export interface CheckedOptions {
  ranges: Ranges;
  format: "qdq" | "qoperator";
  activations: "u8" | "s8";
  weights: "per-channel" | "per-tensor";
  weightClip: "max" | "mse";
  reduceRange: boolean;
  exclude: {
    names: readonly string[];
    ops: readonly string[];
    pattern?: RegExp;
    head: "auto" | false;
  };
  headOutputs?: readonly string[];
  biasShifts: ReadonlyMap<string, Float32Array>;
  inputCovariances: InputCovariances;
  strict: boolean;
  registry: Registry;
}

const KEYS = [
  "ranges",
  "format",
  "activations",
  "weights",
  "weightClip",
  "reduceRange",
  "exclude",
  "headOutputs",
  "biasShifts",
  "inputCovariances",
  "strict",
  "registry",
];

function oneOf<T extends string>(key: string, value: unknown, allowed: readonly T[]): T {
  if (!allowed.includes(value as T)) {
    throw new ConfigError(
      key,
      `expected one of ${allowed.map((a) => JSON.stringify(a)).join(", ")} but found ${
        JSON.stringify(value)
      }`,
    );
  }
  return value as T;
}

function strings(key: string, value: unknown): readonly string[] {
  if (!Array.isArray(value) || value.some((v) => typeof v !== "string")) {
    throw new ConfigError(key, `expected an array of strings but found ${JSON.stringify(value)}`);
  }
  return value;
}

/**
 * Merges options with {@linkcode defaults} and checks every key, so a misspelled key or a bad value
 * fails before any work.
 *
 * @param options User options.
 * @returns The checked options.
 * @throws {ConfigError} Naming the key that is unknown or has a bad value.
 *
 * @example A misspelled key is refused
 * ```ts
 * import { checkOptions } from "@clipq/quantize/options";
 * import assert from "node:assert/strict";
 * assert.equal(checkOptions({}).format, "qdq");
 * assert.throws(() => checkOptions({ fromat: "qdq" } as never), /fromat/);
 * assert.throws(() => checkOptions({ format: "qoperator", activations: "s8" }), /activations/);
 * ```
 */
export function checkOptions(options: QuantizeOptions): CheckedOptions {
  if (typeof options !== "object" || options === null) {
    throw new ConfigError("", `expected an options object but found ${JSON.stringify(options)}`);
  }
  for (const k of Object.keys(options)) {
    if (!KEYS.includes(k)) {
      throw new ConfigError(k, `unknown option; expected one of ${KEYS.join(", ")}`);
    }
  }
  const o = { ...defaults, ...options };
  const format = oneOf("format", o.format, ["qdq", "qoperator"] as const);
  const activations = oneOf("activations", o.activations, ["u8", "s8"] as const);
  if (format === "qoperator" && activations === "s8") {
    throw new ConfigError(
      "activations",
      'expected "u8" with format "qoperator" (s8 QLinearConv is several times slower than float in onnxruntime on x64) but found "s8"',
    );
  }
  const weights = oneOf("weights", o.weights, ["per-channel", "per-tensor"] as const);
  const weightClip = oneOf("weightClip", o.weightClip, ["max", "mse"] as const);
  if (typeof o.reduceRange !== "boolean") {
    throw new ConfigError(
      "reduceRange",
      `expected a boolean but found ${JSON.stringify(o.reduceRange)}`,
    );
  }
  if (typeof o.strict !== "boolean") {
    throw new ConfigError("strict", `expected a boolean but found ${JSON.stringify(o.strict)}`);
  }
  if (!(o.ranges instanceof Map)) {
    throw new ConfigError("ranges", "expected a Map of tensor ranges");
  }
  if (!(o.biasShifts instanceof Map)) {
    throw new ConfigError("biasShifts", "expected a Map from node name to Float32Array");
  }
  for (const [k, v] of o.biasShifts) {
    if (!(v instanceof Float32Array)) {
      throw new ConfigError(`biasShifts.${k}`, "expected a Float32Array of per-channel shifts");
    }
  }
  if (!(o.inputCovariances instanceof Map)) {
    throw new ConfigError("inputCovariances", "expected a Map from node name to InputCovariance");
  }
  if (!(o.registry instanceof Map)) throw new ConfigError("registry", "expected a Registry map");
  const ex = (o.exclude ?? {}) as ExcludeOptions;
  if (typeof ex !== "object") throw new ConfigError("exclude", "expected an object");
  for (const k of Object.keys(ex)) {
    if (!["names", "ops", "pattern", "head"].includes(k)) {
      throw new ConfigError(
        `exclude.${k}`,
        "unknown option; expected one of names, ops, pattern, head",
      );
    }
  }
  let pattern: RegExp | undefined;
  if (ex.pattern instanceof RegExp) pattern = ex.pattern;
  else if (typeof ex.pattern === "string") {
    try {
      pattern = new RegExp(ex.pattern);
    } catch (e) {
      throw new ConfigError(
        "exclude.pattern",
        `expected a regular expression but found ${JSON.stringify(ex.pattern)}`,
        { cause: e },
      );
    }
  } else if (ex.pattern !== undefined) {
    throw new ConfigError(
      "exclude.pattern",
      `expected a string or RegExp but found ${JSON.stringify(ex.pattern)}`,
    );
  }
  const head = ex.head === undefined ? "auto" : ex.head;
  if (head !== "auto" && head !== false) {
    throw new ConfigError(
      "exclude.head",
      `expected "auto" or false but found ${JSON.stringify(head)}`,
    );
  }
  const checked: CheckedOptions = {
    ranges: o.ranges,
    format,
    activations,
    weights,
    weightClip,
    reduceRange: o.reduceRange,
    exclude: {
      names: strings("exclude.names", ex.names ?? []),
      ops: strings("exclude.ops", ex.ops ?? []),
      head,
      ...(pattern ? { pattern } : {}),
    },
    biasShifts: o.biasShifts,
    inputCovariances: o.inputCovariances,
    strict: o.strict,
    registry: o.registry,
  };
  if (o.headOutputs !== undefined) checked.headOutputs = strings("headOutputs", o.headOutputs);
  return checked;
}
