/**
 * The `svd-fc` step: splits fully connected layers (Gemm, MatMul with a constant 2-D weight) by
 * truncated SVD through @clipq/svd, with onnxruntime's MatMul as the matrix-multiply backend.
 *
 * @module
 */
import { type RankVars, svdCompress, type SvdCompressOptions, type SvdOverride } from "@clipq/svd";
import { ortMatMul } from "@clipq/runtime/matmul";
import type { Graph } from "@clipq/onnx";
import { ConfigError } from "@clipq/onnx/errors";
import { checkOptions, type Step, type StepDefinition } from "../step.ts";
import { SVD_OPTIONS } from "./options.ts";

/** A rank as configured: a number or an expression compiled by the config loader. */
export type RankValue = number | ((vars: Readonly<Record<string, number>>) => number);

/** Options of {@linkcode svdStep}; at most one of rank, energy, ratio. */
export interface SvdStepOptions {
  /** Kept rank: a number or an expression of rows, cols, params. */
  rank?: RankValue;
  /** Keep this fraction of Σσ² per layer. */
  energy?: number;
  /** Keep at most this fraction of each layer's parameters. */
  ratio?: number;
  /** Layers with fewer weights are left alone. */
  minParams?: number;
  /** Per-layer rules by node name or pattern; the first matching wins. */
  overrides?: SvdOverride[];
  /** Seed of the randomized SVD. */
  seed?: number;
  /** Matrix products through onnxruntime ("ort", fast) or pure TypeScript ("js"). */
  backend?: "ort" | "js";
}

/** Defaults of {@linkcode svdStep}: rank ⌈min(rows, cols)/4⌉ when no policy is given. */
export const defaults = {
  minParams: 1024,
  overrides: [],
  seed: 0,
  backend: "ort",
} satisfies SvdStepOptions;

/** The rank rule used when the config names no policy. */
export const defaultRank = (v: RankVars): number => Math.ceil(0.25 * Math.min(v.rows, v.cols));

function asRankFn(r: RankValue): (vars: RankVars) => number {
  if (typeof r === "number") return () => r;
  return (v) =>
    r({ rows: v.rows, cols: v.cols, params: v.params, index: v.index, layers: v.layers });
}

/**
 * The options of `svdCompress` that a step configuration means (backend excluded).
 *
 * @param options Validated step options.
 * @returns Options for `svdCompress`.
 *
 * @example An expression rank becomes a rank function
 * ```ts
 * import { svdCompressOptions } from "@clipq/pipeline/steps/svd";
 * import assert from "node:assert/strict";
 * const o = svdCompressOptions({ rank: (v) => v.rows! / 2 });
 * assert.equal(o.rankFn?.({ rows: 8, cols: 4, params: 32, name: "fc", index: 0, layers: 1 }), 4);
 * ```
 */
export function svdCompressOptions(options: SvdStepOptions): SvdCompressOptions {
  const o = { ...defaults, ...options };
  const set = (["rank", "energy", "ratio"] as const).filter((k) => o[k] !== undefined);
  if (set.length > 1) {
    throw new ConfigError(
      "svd-fc",
      `expected at most one of rank, energy, ratio; found ${set.join(", ")}`,
    );
  }
  const policy: SvdCompressOptions = o.energy !== undefined
    ? { energy: o.energy }
    : o.ratio !== undefined
    ? { ratio: o.ratio }
    : { rankFn: o.rank === undefined ? defaultRank : asRankFn(o.rank) };
  return { ...policy, overrides: o.overrides, minParams: o.minParams, seed: o.seed };
}

/**
 * Creates the `svd-fc` step.
 *
 * @param options Rank policy, overrides, minimum layer size, seed.
 * @returns The step.
 *
 * @example Options are checked up front
 * ```ts
 * import { svdStep } from "@clipq/pipeline/steps/svd";
 * import assert from "node:assert/strict";
 * assert.equal(svdStep({ energy: 0.95 }).name, "svd-fc");
 * assert.throws(() => svdStep({ energy: 0.9, ratio: 0.5 }), /svd-fc: expected at most one/);
 * ```
 */
export function svdStep(options: SvdStepOptions = {}): Step {
  const o = checkOptions<SvdStepOptions>(SVD_OPTIONS, options, "svd-fc");
  checkOverrideRules(o.overrides ?? []);
  const compress = svdCompressOptions(o);
  return {
    name: "svd-fc",
    async run(graph, ctx) {
      const rules = o.overrides ?? [];
      checkOverrideNames(graph, rules);
      let result;
      try {
        result = await svdCompress(graph, {
          ...compress,
          ...(o.backend === "js" ? {} : { matmul: ortMatMul() }),
        });
      } catch (e) {
        // @clipq/svd names its own option ("rank"); the config knows it as the step's.
        if (e instanceof ConfigError && !e.keyPath.startsWith("svd-fc")) {
          throw new ConfigError(
            e.keyPath ? `svd-fc.${e.keyPath}` : "svd-fc",
            e.keyPath ? e.message.slice(e.keyPath.length + 2) : e.message,
            { cause: e },
          );
        }
        throw e;
      }
      const { graph: out, layers } = result;
      checkOverrideRanks(layers, rules);
      rules.forEach((r, i) => {
        if (r.pattern !== undefined && !layers.some((l) => new RegExp(r.pattern!).test(l.node))) {
          ctx.log.warn(
            `svd-fc.overrides[${i}].pattern: /${r.pattern}/ matches no fully connected layer (${
              layers.length ? layers.map((l) => l.node).join(", ") : "the model has none"
            })`,
          );
        }
      });
      const split = layers.filter((l) => !l.skipped);
      if (split.length === 0) {
        const why = [...new Set(layers.map((l) => l.skipped))].join("; ");
        ctx.log.warn(
          layers.length === 0
            ? "svd-fc: the model has no Gemm or MatMul with a constant 2-D weight; nothing was split"
            : `svd-fc: none of the ${layers.length} fully connected layers was split (${why})`,
        );
      }
      let before = 0, after = 0;
      for (const l of layers) {
        before += l.paramsBefore;
        after += l.paramsAfter;
      }
      for (const l of split) {
        ctx.log.info(
          `  ${l.node} ${l.rows}×${l.cols} → rank ${l.rank}: relative error ${
            l.relativeError.toFixed(4)
          }, kept energy ${l.keptEnergy.toFixed(4)}`,
        );
      }
      ctx.report["svd-fc"] = { layers, paramsBefore: before, paramsAfter: after };
      if (split.length > 0) ctx.methods.push("svd-fc");
      return out;
    },
  };
}

/** Each override names its layers one way and does one thing (checked when the config loads). */
function checkOverrideRules(rules: readonly SvdOverride[]): void {
  rules.forEach((r, i) => {
    const key = `svd-fc.overrides[${i}]`;
    if ((r.name === undefined) === (r.pattern === undefined)) {
      const both = r.name !== undefined;
      throw new ConfigError(
        key,
        `expected exactly one of name, pattern; found ${both ? "both" : "neither"}`,
      );
    }
    const set = (["rank", "energy", "skip"] as const).filter((k) => r[k] !== undefined);
    if (set.length !== 1) {
      throw new ConfigError(
        key,
        `expected exactly one of rank, energy, skip; found ${set.length ? set.join(", ") : "none"}`,
      );
    }
  });
}

/** A misspelt layer name would leave its rule unused and the layer at the default policy. */
function checkOverrideNames(graph: Graph, rules: readonly SvdOverride[]): void {
  const linear = graph.nodes.filter((n) => n.op === "MatMul" || n.op === "Gemm")
    .map((n) => n.name || n.outputs[0] || "layer");
  rules.forEach((r, i) => {
    if (r.name === undefined || linear.includes(r.name)) return;
    const other = graph.nodes.find((n) => n.name === r.name);
    throw new ConfigError(
      `svd-fc.overrides[${i}].name`,
      `expected the name of a Gemm or MatMul node; found ${JSON.stringify(r.name)}, ${
        other ? `a ${other.op} node` : "which no node has"
      } (fully connected layers: ${linear.length ? linear.join(", ") : "none"})`,
    );
  });
}

/** A rank a named layer cannot have (it was clamped, and the layer then left unsplit). */
function checkOverrideRanks(
  layers: readonly { node: string; rows: number; cols: number }[],
  rules: readonly SvdOverride[],
): void {
  rules.forEach((r, i) => {
    const l = layers.find((l) => l.node === r.name);
    if (!l || typeof r.rank !== "number" || l.rows === 0) return;
    const full = Math.min(l.rows, l.cols);
    if (r.rank > full) {
      throw new ConfigError(
        `svd-fc.overrides[${i}].rank`,
        `expected at most min(rows, cols) = ${full} for layer "${l.node}" (${l.rows}×${l.cols}); found ${r.rank}`,
      );
    }
  });
}

/** Registry entry of the `svd-fc` step. */
export const svdDefinition: StepDefinition = {
  name: "svd-fc",
  description: "Truncated SVD of fully connected layers (Gemm, MatMul with a constant weight).",
  options: SVD_OPTIONS,
  factory: (o) => svdStep(o as SvdStepOptions),
};
