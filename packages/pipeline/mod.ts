/**
 * @clipq/pipeline — the declarative clipq pipeline: config validation (with mathjs expressions),
 * steps as plugins, the runner behind `deno task quantize`, and the JSON + HTML report.
 *
 * @example Compose a step from code
 * ```ts
 * import { quantizeStep } from "@clipq/pipeline";
 * import assert from "node:assert/strict";
 * assert.equal(quantizeStep({ activations: "u8" }).name, "quantize");
 * ```
 *
 * @module
 */
export * from "./config.ts";
export * from "./step.ts";
export {
  compileExpression,
  type ExpressionOptions,
  ExpressionsNotLoaded,
  loadExpressions,
  type NumericFunction,
} from "./expression.ts";
export {
  type AnyOfSpec,
  type ArraySpec,
  type JsonSchema,
  type MapSpec,
  type NumberSpec,
  type ObjectSpec,
  type Spec,
  type StringSpec,
  toJsonSchema,
  validate,
} from "./spec.ts";
export { builtinSteps } from "./builtins.ts";
export {
  checkAgainstModel,
  createContext,
  imageInput,
  loadSource,
  type RunOptions,
  runPipeline,
  type RunResult,
  VERSION,
  writeAtomic,
} from "./runner.ts";
export { createReporter } from "./progress.ts";
export { type Analysis, analyze } from "./analysis.ts";
export { buildReport, type Report } from "./report.ts";
export {
  accuracyFallback,
  type FallbackHooks,
  type FallbackOptions,
  type FallbackResult,
  type FallbackTrial,
  type LayerSensitivity,
  layerSensitivity,
  type SensitivityOptions,
  stepFallback,
  type StepFallbackOptions,
} from "./fallback.ts";
export { escapeHtml, renderHtml } from "./report_html.ts";
export { normalizeStep } from "./steps/normalize.ts";
export { calibrateStep } from "./steps/calibrate.ts";
export { quantizeStep } from "./steps/quantize.ts";
export { svdStep } from "./steps/svd.ts";
export { evaluateStep } from "./steps/evaluate.ts";
