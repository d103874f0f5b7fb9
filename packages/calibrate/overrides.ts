/**
 * Per-tensor range overrides from the config.
 *
 * @module
 */
import type { TensorRange } from "@clipq/onnx/metadata";
import { ConfigError } from "@clipq/onnx/errors";

/**
 * Replaces ranges by user-given ones (source "override"); tensors not yet ranged are added.
 *
 * @param ranges Ranges found by calibration (not modified).
 * @param overrides `{tensor: {min, max}}` from the config.
 * @returns A new map with the overrides applied.
 * @throws {ConfigError} When an override is not finite min ≤ max (names `overrides.<tensor>`).
 *
 * @example Override one tensor
 * ```ts
 * import { applyOverrides } from "@clipq/calibrate/overrides";
 * import assert from "node:assert/strict";
 * const r = applyOverrides(new Map([["a", { min: 0, max: 9, source: "minmax" }]]), { a: { min: 0, max: 6 } });
 * assert.deepEqual(r.get("a"), { min: 0, max: 6, source: "override" });
 * ```
 */
export function applyOverrides(
  ranges: ReadonlyMap<string, TensorRange>,
  overrides: Readonly<Record<string, { min: number; max: number }>>,
): Map<string, TensorRange> {
  const out = new Map(ranges);
  for (const [name, r] of Object.entries(overrides)) {
    if (
      !r || typeof r.min !== "number" || typeof r.max !== "number" || !Number.isFinite(r.min) ||
      !Number.isFinite(r.max) || r.min > r.max
    ) {
      throw new ConfigError(
        `overrides.${name}`,
        `expected {min, max} with finite min ≤ max but found ${JSON.stringify(r)}`,
      );
    }
    out.set(name, { min: r.min, max: r.max, source: "override" });
  }
  return out;
}
