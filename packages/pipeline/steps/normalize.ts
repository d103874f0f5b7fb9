/**
 * The `normalize` step: Constant nodes → initializers, BatchNorm and constant affine ops folded,
 * spatial ReduceMeans written as GlobalAveragePool, dead nodes pruned, nodes sorted, and the opset
 * raised to 13 when lower (per-channel Q/DQ needs it).
 *
 * @module
 */
import { opsetOf } from "@clipq/onnx/graph";
import { normalizeWithReport } from "@clipq/onnx/normalize";
import { upgradeOpset } from "@clipq/onnx/upgrade";
import { checkOptions, type Step, type StepDefinition } from "../step.ts";
import { NORMALIZE_OPTIONS } from "./options.ts";

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
    run(graph, ctx) {
      const { graph: g, report } = normalizeWithReport(graph);
      let out = g;
      const from = opsetOf(out) ?? 1;
      if (from < o.opset) {
        out = upgradeOpset(out, { target: o.opset });
        ctx.log.info(`  opset ${from} → ${o.opset}`);
      }
      ctx.report.normalize = { ...report, opset: { from, to: Math.max(from, o.opset) } };
      return Promise.resolve(out);
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
