/**
 * The `quantize` step: int8 weights and activations (QDQ or QOperator) from the calibrated ranges,
 * with exclusions and head-aware defaults; with bias correction on, it quantizes once, measures the
 * per-channel output shifts on the calibration images and quantizes again with them.
 *
 * @module
 */
import type { Graph, Node, TensorRange } from "@clipq/onnx";
import type { Tensor } from "@clipq/onnx";
import {
  floatTwin,
  type PlanOptions,
  planQuantization,
  quantize,
  type QuantizeOptions,
} from "@clipq/quantize";
import { measureBiasShifts, measureInputCovariances, refineRanges } from "@clipq/calibrate";
import { activationParams } from "@clipq/quantize/linear";
import { ConfigError } from "@clipq/onnx/errors";
import {
  checkOptions,
  checkOverrides,
  type Step,
  type StepContext,
  type StepDefinition,
} from "../step.ts";
import { QUANTIZE_OPTIONS } from "./options.ts";
import { stepFallback } from "../fallback.ts";

async function* feedsOf(
  ctx: StepContext,
  label: string,
): AsyncGenerator<Record<string, Tensor>> {
  for await (const b of ctx.batches("calibration", { label })) yield b.feeds;
}

/** Options of {@linkcode quantizeStep}. */
export interface QuantizeStepOptions {
  format?: "qdq" | "qoperator";
  activations?: "u8" | "s8";
  weights?: "per-channel" | "per-tensor";
  weightClip?: "max" | "mse";
  /**
   * "nearest", or "gptq": errors compensated on the layer's inputs over the calibration data; the
   * object form sets the measurement (input vectors sampled per image, longest block kept whole).
   */
  weightRounding?: "nearest" | "gptq" | { method: "gptq"; positions?: number; maxBlock?: number };
  reduceRange?: boolean;
  exclude?: { names?: string[]; ops?: string[]; pattern?: string; head?: "auto" | false };
  overrides?: Record<string, { min: number; max: number }>;
  /** Accuracy-aware fallback: the largest allowed drop of agreement with the float model (0..1). */
  maxDrop?: number;
  /** How the fallback ranks layers: each quantized alone (`isolated`) or by added noise. */
  fallbackRank?: "isolated" | "noise";
}

/** Defaults of {@linkcode quantizeStep}. */
export const defaults = {
  format: "qdq",
  activations: "u8",
  weights: "per-channel",
  weightClip: "max",
  weightRounding: "nearest",
  reduceRange: false,
  exclude: { head: "auto" },
  overrides: {},
} satisfies QuantizeStepOptions;

/**
 * The per-layer measurements (bias shifts, GPTQ input moments) that still hold once more layers
 * are kept float: none for a float layer (it has no quantization error to correct), none for a
 * layer the ORT rewrites now leave in another form (a ConvTranspose no longer a 1×1 Conv, a conv
 * no longer folding its neighbour's scalar chain: it was measured on the other form).
 */
function stillValid<T>(
  measured: ReadonlyMap<string, T>,
  o: { measuredOn: Graph; quantizing: Graph; float: readonly string[] },
): Map<string, T> {
  const before = new Map(o.measuredOn.nodes.map((n) => [n.name, n]));
  const now = new Map(o.quantizing.nodes.map((n) => [n.name, n]));
  const dims = (g: Graph, n: Node) =>
    n.inputs.map((t) => g.initializers.get(t)?.dims.join("x") ?? "").join("\n");
  const same = (a?: Node, b?: Node) =>
    !!a && !!b && a.op === b.op && a.inputs.join("\n") === b.inputs.join("\n") &&
    a.outputs.join("\n") === b.outputs.join("\n") &&
    dims(o.measuredOn, a) === dims(o.quantizing, b);
  return new Map(
    [...measured].filter(([name]) =>
      !o.float.includes(name) && same(before.get(name), now.get(name))
    ),
  );
}

/**
 * Range refinement (`calibrate.refine`): every tensor the first quantization put on a grid of its
 * own, judged on the float graph as quantize rewrites it (`floatTwin`, whose tensor names the
 * quantizer's report uses) with the quantizer's own grid; the moved ranges go into `ranges` and the
 * graph is quantized again with them. Not judged: a range the user set (its source starts with
 * "override", also when the quantizer clamped it to a fused activation), and a tensor on another
 * one's grid ("shared with …": the output of a MaxPool, Reshape … on the integers), whose own range
 * quantize never reads.
 */
async function refined(
  graph: Graph,
  s: {
    ctx: StepContext;
    opts: QuantizeOptions;
    twin: Graph;
    result: ReturnType<typeof quantize>;
    ranges: Map<string, TensorRange>;
  },
): Promise<ReturnType<typeof quantize>> {
  const { ctx, opts, twin } = s;
  const settings = ctx.refineRanges!;
  const made = new Set(twin.nodes.flatMap((n) => n.outputs));
  const judged = s.result.report.tensors.filter((t) =>
    made.has(t.name) && !t.source.startsWith("override") && !t.source.startsWith("shared with")
  );
  const feeds: Record<string, Tensor>[] = [];
  for await (
    const b of ctx.batches("calibration", { label: "range refinement", limit: settings.images })
  ) feeds.push(b.feeds);
  ctx.log.info(
    `  range refinement: ${judged.length} tensors, each alone on its int8 grid, over ${feeds.length} image(s)`,
  );
  const t0 = performance.now();
  const bar = ctx.progress("range refinement", 2 * judged.length);
  // The ranges as the quantizer resolved them (aliases of rewritten tensors, Concat grids).
  const resolved = new Map(s.ranges);
  for (const t of judged) resolved.set(t.name, { min: t.min, max: t.max, source: t.source });
  const activations = opts.activations ?? "u8";
  const r = await refineRanges(twin, feeds, {
    tensors: judged.map((t) => t.name),
    ranges: resolved,
    grid: (range, tensor) => {
      const p = activationParams(range, activations, tensor);
      return { scale: p.scale, zeroPoint: p.zeroPoint, dtype: p.dtype as "uint8" | "int8" };
    },
    ...(settings.factors ? { factors: settings.factors } : {}),
    ...(settings.minGain !== undefined ? { minGain: settings.minGain } : {}),
    ...(settings.screen !== undefined ? { screen: settings.screen } : {}),
    bounds: new Map(judged.flatMap((t) => (t.bounds ? [[t.name, t.bounds]] : []))),
    onProgress: () => bar.tick(),
  });
  bar.done();
  for (const c of r.changes) s.ranges.set(c.tensor, c.to);
  const db = (a: number, b: number) => Number((10 * Math.log10(a / b)).toFixed(2));
  ctx.report.rangeRefinement = {
    images: feeds.length,
    tensors: judged.length,
    refined: r.changes.length,
    runs: r.runs,
    seconds: Number(((performance.now() - t0) / 1000).toFixed(1)),
    // Each moved range, and how much closer to the float outputs the tensor alone got (dB).
    changes: r.changes.map((c) => ({
      tensor: c.tensor,
      from: [c.from.min, c.from.max],
      to: [c.to.min, c.to.max],
      gainDb: db(c.error.before, c.error.after),
    })),
  };
  return quantize(graph, { ...opts, ranges: s.ranges });
}

/**
 * What decides which tensors a quantize step with these options needs ranges for: its exclusions,
 * the detector head's outputs and its weights (per-channel raises the opset to 13, which some
 * rewrites need). The runner hands them to the calibrate step before it
 * (`StepContext.quantizePlan`), so calibration measures what this step will read: excluding a
 * MaxPool, say, makes its output a tensor of its own that the next conv quantizes from.
 *
 * @param options The quantize step's options as configured.
 * @param head The config's head description (its `outputs`, when listed, are the head outputs).
 * @returns The planning options.
 *
 * @example
 * ```ts
 * import { quantizePlanOptions } from "@clipq/pipeline/steps/quantize";
 * import assert from "node:assert/strict";
 * assert.deepEqual(quantizePlanOptions({ exclude: { names: ["pool"] } }).exclude, {
 *   names: ["pool"], ops: [], head: "auto",
 * });
 * ```
 */
export function quantizePlanOptions(
  options: Pick<QuantizeStepOptions, "exclude" | "weights">,
  head?: Record<string, unknown>,
): PlanOptions {
  const exclude: NonNullable<QuantizeStepOptions["exclude"]> = options.exclude ?? defaults.exclude;
  const headOutputs = Array.isArray(head?.outputs) ? head.outputs as string[] : undefined;
  return {
    weights: options.weights ?? defaults.weights,
    exclude: {
      names: exclude.names ?? [],
      ops: exclude.ops ?? [],
      head: exclude.head ?? "auto",
      ...(exclude.pattern !== undefined ? { pattern: exclude.pattern } : {}),
    },
    ...(headOutputs ? { headOutputs } : {}),
  };
}

/**
 * An exclusion by op type or pattern that kept no node float is worth a warning, not an error:
 * configs are shared across models. Judged on what the quantizer reports, so an op the lowering
 * rewrote away (or a misspelt "conv") is caught too.
 */
function warnUnmatched(
  exclude: NonNullable<QuantizeStepOptions["exclude"]>,
  floatNodes: readonly { reason: string }[],
  graph: Graph,
  ctx: StepContext,
): void {
  const reasons = floatNodes.map((f) => f.reason);
  const ops = [...new Set(graph.nodes.map((n) => n.op))];
  for (const op of exclude.ops ?? []) {
    if (reasons.includes(`excluded by op type ${op}`)) continue;
    const like = ops.find((o) => o.toLowerCase() === op.toLowerCase() && o !== op);
    ctx.log.warn(
      `quantize.exclude.ops: ${JSON.stringify(op)} kept no node float (${
        like
          ? `did you mean ${like}?`
          : ops.includes(op)
          ? "its nodes are float already"
          : "the model has no such op"
      })`,
    );
  }
  if (
    exclude.pattern !== undefined && !reasons.some((r) => r.startsWith("excluded by pattern"))
  ) {
    ctx.log.warn(`quantize.exclude.pattern: /${exclude.pattern}/ matches no node name`);
  }
}

/**
 * Names `quantize.exclude.names` gives must be nodes of the graph: a misspelt one would silently
 * leave its node quantized. Unnamed nodes are labelled Op#index as the report lists them (indices
 * after the quantizer's rewrites): any such label of an op the model has passes. The dry run
 * checks the same against the model as the steps before quantize leave it.
 *
 * @param graph The graph quantize gets.
 * @param names The names.
 * @param key The config key to name.
 * @throws {ConfigError} When a name is no node's.
 */
export function checkExcludeNames(graph: Graph, names: readonly string[], key: string): void {
  const nodes = new Set(graph.nodes.map((n) => n.name));
  const ops = new Set(graph.nodes.map((n) => n.op));
  const unknown = names.filter((name) =>
    !nodes.has(name) && !ops.has(/^(.+)#\d+$/.exec(name)?.[1] ?? "")
  );
  if (unknown.length > 0) {
    throw new ConfigError(
      key,
      `expected names of the model's nodes (an unnamed one is Op#index); found ${
        unknown.map((n) => JSON.stringify(n)).join(", ")
      }, which no node has`,
    );
  }
}

/**
 * Creates the `quantize` step.
 *
 * @param options Format, activation/weight types, exclusions, range overrides.
 * @returns The step.
 *
 * @example Options are checked up front
 * ```ts
 * import { quantizeStep } from "@clipq/pipeline/steps/quantize";
 * import assert from "node:assert/strict";
 * assert.equal(quantizeStep({ format: "qoperator" }).name, "quantize");
 * assert.throws(() => quantizeStep({ format: "qdqq" as "qdq" }), /quantize\.format: expected one of qdq, qoperator/);
 * ```
 */
export function quantizeStep(options: QuantizeStepOptions = {}): Step {
  const o = {
    ...defaults,
    ...checkOptions<QuantizeStepOptions>(QUANTIZE_OPTIONS, options, "quantize"),
  } as Required<QuantizeStepOptions>;
  for (const [t, r] of Object.entries(o.overrides)) {
    if (!(r.min < r.max)) {
      throw new ConfigError(
        `quantize.overrides.${t}`,
        `expected min < max; found [${r.min}, ${r.max}]`,
      );
    }
  }
  // Only the fallback ranks layers; without maxDrop the ranking would be accepted and unused.
  if (o.fallbackRank !== undefined && o.maxDrop === undefined) {
    throw new ConfigError(
      "quantize.fallbackRank",
      "expected only with maxDrop (it ranks the layers the fallback reverts); found no maxDrop",
    );
  }
  return {
    name: "quantize",
    async run(graph, ctx) {
      checkExcludeNames(graph, o.exclude.names ?? [], "quantize.exclude.names");
      checkOverrides(graph, o.overrides, "quantize.overrides");
      ctx.floatGraph = graph;
      const ranges = new Map<string, TensorRange>(ctx.ranges);
      for (const [t, r] of Object.entries(o.overrides)) {
        ranges.set(t, { min: r.min, max: r.max, source: "override" });
      }
      ctx.ranges = ranges;
      const opts: QuantizeOptions = {
        ranges,
        format: o.format,
        activations: o.activations,
        weightClip: o.weightClip,
        reduceRange: o.reduceRange,
        ...quantizePlanOptions(o, ctx.head),
      };
      const gptqOptions: { positions?: number; maxBlock?: number } | undefined =
        o.weightRounding === "gptq"
          ? {}
          : typeof o.weightRounding === "object"
          ? o.weightRounding
          : undefined;
      const measures = ctx.biasCorrection || gptqOptions !== undefined;
      // Ranges are refined and layers measured as quantize writes them: on the float graph after
      // its rewrites (which do not depend on the ranges, so one twin serves all three).
      const twin = measures || ctx.refineRanges ? floatTwin(graph, opts) : undefined;
      let result = quantize(graph, opts);
      if (twin && ctx.refineRanges) {
        result = await refined(graph, { ctx, opts, twin, result, ranges });
      }
      let biasShifts: Map<string, Float32Array> | undefined;
      // The weighted layers quantize wrote quantized, as both measurements below name them (GPTQ
      // rounding leaves the same layers quantized).
      const quantizedLayers = measures
        ? planQuantization(graph, opts).weightedLayers
          .filter((l) => result.report.quantizedNodes.includes(l.node))
        : [];
      if (twin && gptqOptions) {
        if (!ctx.hasData("calibration")) {
          throw new ConfigError(
            "quantize.weightRounding",
            'expected calibration images to measure the layers\' inputs on ("gptq"); found none',
          );
        }
        ctx.log.info("  weight rounding (gptq): measuring the second moment of each layer's input");
        const measured = await measureInputCovariances(
          twin,
          feedsOf(ctx, "weight rounding (gptq)"),
          {
            layers: quantizedLayers.map((l) => l.node),
            ...(gptqOptions.positions ? { positions: gptqOptions.positions } : {}),
            ...(gptqOptions.maxBlock ? { maxBlock: gptqOptions.maxBlock } : {}),
          },
        );
        opts.inputCovariances = measured.covariances;
        result = quantize(graph, opts);
        let nearest = 0, gptq = 0;
        for (const w of result.report.weights) {
          nearest += w.outputError?.nearest ?? 0;
          gptq += w.outputError?.gptq ?? 0;
        }
        ctx.report.weightRounding = {
          method: "gptq",
          layers: result.report.weights.filter((w) => w.rounding === "gptq").length,
          skipped: measured.skipped,
          // Σ over layers of the output error E[‖(W − Ŵ)·x‖²] on the calibration images.
          outputError: { nearest, gptq },
        };
      }
      if (twin && ctx.biasCorrection) {
        ctx.log.info("  bias correction: measuring per-channel output shifts");
        const producers = new Map(
          twin.nodes.flatMap((n) => n.outputs.map((t) => [t, n.op] as const)),
        );
        const layers = quantizedLayers.map((l) => ({
          node: l.node,
          output: l.output,
          channelAxis:
            producers.get(l.output) === "Conv" || producers.get(l.output) === "ConvTranspose"
              ? 1
              : -1,
        }));
        // In QOperator form a layer reads integers (QLinearConv, MatMulInteger…) that its float
        // reference copy cannot; the QDQ form has the same integers, read through DequantizeLinear.
        const measured = o.format === "qdq"
          ? result.graph
          : quantize(graph, { ...opts, format: "qdq" }).graph;
        const shifts = await measureBiasShifts(twin, measured, feedsOf(ctx, "bias correction"), {
          layers,
          optimizationLevel: "basic",
        });
        result = quantize(graph, { ...opts, biasShifts: shifts });
        biasShifts = shifts;
        ctx.report.biasCorrection = { layers: shifts.size };
      }
      if (o.maxDrop !== undefined) {
        // Re-quantizes with the most sensitive layers excluded (fallback.ts) until the drop holds.
        const without = (names: readonly string[]) => {
          const exclude = { ...opts.exclude, names: [...(opts.exclude?.names ?? []), ...names] };
          // Only the measurements need checking against the graph each trial quantizes.
          const valid = measures && twin && {
            measuredOn: twin,
            quantizing: floatTwin(graph, { ...opts, exclude }),
            float: names,
          };
          const shifts = biasShifts && valid && stillValid(biasShifts, valid);
          const covariances = opts.inputCovariances && valid &&
            stillValid(opts.inputCovariances, valid);
          return quantize(graph, {
            ...opts,
            ...(shifts ? { biasShifts: shifts } : {}),
            ...(covariances ? { inputCovariances: covariances } : {}),
            exclude,
          });
        };
        const fb = await stepFallback(graph, ctx, {
          quantize: (names) => without(names).graph,
          quantizedNodes: result.report.quantizedNodes,
        }, { maxDrop: o.maxDrop, ...(o.fallbackRank ? { rank: o.fallbackRank } : {}) });
        if (fb.reverted.length > 0) {
          result = without((ctx.report.fallback as { floatNodes: string[] }).floatNodes);
        }
        ctx.methods.push(`fallback:${o.maxDrop}`);
      }
      ctx.methods.push(
        `quantize:${o.format}-${o.activations}-${o.weights}-${o.weightClip}${
          gptqOptions ? "-gptq" : ""
        }${o.reduceRange ? "-reduce-range" : ""}`,
      );
      warnUnmatched(o.exclude, result.report.floatNodes, graph, ctx);
      ctx.report.excluded = result.report.floatNodes;
      // Channels whose weights are tiny beside their bias (dead after BatchNorm folding) and got a
      // larger scale so that the int32 bias fits: CenterNet's MobileNetV3 has such channels.
      const raised = result.report.weights.flatMap((w) =>
        w.raisedForBias ? [{ node: w.node, channels: w.raisedForBias }] : []
      );
      if (raised.length > 0) {
        ctx.log.info(
          `  int32 biases: ${
            raised.reduce((a, r) => a + r.channels, 0)
          } channels of ${raised.length} layers get a weight scale their bias fits at`,
        );
      }
      ctx.report.quantize = {
        quantizedNodes: result.report.quantizedNodes.length,
        tensors: result.report.tensors,
        weights: result.report.weights.length,
        ...(raised.length > 0 ? { raisedForBias: raised } : {}),
        initializerSizes: result.report.sizes,
        rewrites: result.report.rewrites,
      };
      return result.graph;
    },
  };
}

/** Registry entry of the `quantize` step. */
export const quantizeDefinition: StepDefinition = {
  name: "quantize",
  description: "int8 quantization (QDQ or QOperator) with exclusions and a float detection head.",
  options: QUANTIZE_OPTIONS,
  factory: (o) => quantizeStep(o as QuantizeStepOptions),
};
