/**
 * The built-in steps, registered by name.
 *
 * @module
 */
import { StepRegistry } from "./step.ts";
import { normalizeDefinition } from "./steps/normalize.ts";
import { calibrateDefinition } from "./steps/calibrate.ts";
import { quantizeDefinition } from "./steps/quantize.ts";
import { evaluateDefinition } from "./steps/evaluate.ts";
import { svdDefinition } from "./steps/svd.ts";

/**
 * A registry with the built-in steps (normalize, svd-fc, calibrate, quantize, evaluate).
 *
 * @returns A new registry (add custom steps to it freely).
 *
 * @example Usage
 * ```ts
 * import { builtinSteps } from "@clipq/pipeline/builtins";
 * import assert from "node:assert/strict";
 * assert.ok(builtinSteps().get("quantize"));
 * ```
 */
export function builtinSteps(): StepRegistry {
  return new StepRegistry()
    .register(normalizeDefinition)
    .register(svdDefinition)
    .register(calibrateDefinition)
    .register(quantizeDefinition)
    .register(evaluateDefinition);
}
