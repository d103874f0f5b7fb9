/**
 * The `normalize` step: Constant nodes → initializers, BatchNorm folded, dead nodes pruned, nodes
 * sorted, and the opset raised to 13 when lower (per-channel Q/DQ needs it).
 *
 * @module
 */
import { opsetOf } from "@clipq/onnx/graph";
import type { Graph } from "@clipq/onnx";
import { ModelError } from "@clipq/onnx/errors";
import { checkOptions, type Step, type StepDefinition } from "../step.ts";
import { NORMALIZE_OPTIONS } from "./options.ts";

// TODO(pipeline): import these statically once @clipq/onnx exports ./normalize and ./upgrade;
// until then they are looked up at run time so the rest of the pipeline type-checks.
async function passes(): Promise<{
  normalizeWithReport: (g: Graph) => { graph: Graph; report: Record<string, unknown> };
  upgradeOpset: (g: Graph, o: { target: number }) => Graph;
}> {
  const specs = ["@clipq/onnx/normalize", "@clipq/onnx/upgrade"];
  const mods = await Promise.all(specs.map((s) => import(s).catch(() => ({}))));
  const n = (mods[0] as Record<string, unknown>).normalizeWithReport;
  const u = (mods[1] as Record<string, unknown>).upgradeOpset;
  const missing = (what: string) => () => {
    throw new ModelError(`normalize: ${what} is not available in this build of @clipq/onnx`);
  };
  return {
    normalizeWithReport: (n ?? missing("normalize")) as never,
    upgradeOpset: (u ?? missing("the opset upgrade")) as never,
  };
}

/** Options of {@linkcode normalizeStep}. */
export interface NormalizeStepOptions {
  /** Models below this opset are upgraded to it. */
  opset?: number;
}

/** Defaults of {@linkcode normalizeStep}. */
export const defaults = { opset: 13 } satisfies NormalizeStepOptions;

/**
 * Creates the `normalize` step.
 *
 * @param options Target opset.
 * @returns The step.
 *
 * @example Usage
 * ```ts
 * import { normalizeStep } from "@clipq/pipeline/steps/normalize";
 * import assert from "node:assert/strict";
 * assert.equal(normalizeStep().name, "normalize");
 * assert.throws(() => normalizeStep({ opset: 9 }), /normalize\.opset: expected a number ≥ 13/);
 * ```
 */
export function normalizeStep(options: NormalizeStepOptions = {}): Step {
  const o = {
    ...defaults,
    ...checkOptions<NormalizeStepOptions>(NORMALIZE_OPTIONS, options, "normalize"),
  };
  return {
    name: "normalize",
    async run(graph, ctx) {
      const { normalizeWithReport, upgradeOpset } = await passes();
      const { graph: g, report } = normalizeWithReport(graph);
      let out = g;
      const from = opsetOf(out) ?? 1;
      if (from < o.opset) {
        out = upgradeOpset(out, { target: o.opset });
        ctx.log.info(`  opset ${from} → ${o.opset}`);
      }
      ctx.report.normalize = { ...report, opset: { from, to: Math.max(from, o.opset) } };
      return out;
    },
  };
}

/** Registry entry of the `normalize` step. */
export const normalizeDefinition: StepDefinition = {
  name: "normalize",
  description: "Constant nodes to initializers, BatchNorm folding, pruning, opset upgrade to ≥ 13.",
  options: NORMALIZE_OPTIONS,
  factory: (o) => normalizeStep(o as NormalizeStepOptions),
};
