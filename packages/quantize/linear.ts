/**
 * Linear quantization arithmetic exactly as ONNX QuantizeLinear defines it: `y = saturate(round(x /
 * scale) + zero_point)` with round half to even, the division done in float32 as onnxruntime does
 * it; and the choice of scale and zero point for an activation range.
 *
 * @module
 */
import { ModelError } from "@clipq/onnx/errors";

/** Element types a quantized tensor can have. */
export type QuantType = "uint8" | "int8" | "int32";

/** Scale, zero point and element type of one quantized tensor (per-tensor). */
export interface QuantParams {
  /** Scale, a float32 value. */
  readonly scale: number;
  /** Zero point, an integer in the type's range. */
  readonly zeroPoint: number;
  /** Quantized element type. */
  readonly dtype: QuantType;
}

const LIMITS: Readonly<Record<QuantType, readonly [number, number]>> = {
  uint8: [0, 255],
  int8: [-128, 127],
  int32: [-2147483648, 2147483647],
};

/**
 * The representable range [min, max] of a quantized element type.
 *
 * @param dtype The type.
 * @returns The saturation bounds.
 *
 * @example Usage
 * ```ts
 * import { limits } from "@clipq/quantize/linear";
 * import assert from "node:assert/strict";
 * assert.deepEqual(limits("uint8"), [0, 255]);
 * ```
 */
export function limits(dtype: QuantType): readonly [number, number] {
  return LIMITS[dtype];
}

/**
 * Rounds to the nearest integer, ties to even (IEEE round-half-even, as QuantizeLinear rounds).
 *
 * @param x A number.
 * @returns The rounded integer.
 *
 * @example Ties go to the even neighbour
 * ```ts
 * import { roundHalfEven } from "@clipq/quantize/linear";
 * import assert from "node:assert/strict";
 * assert.deepEqual([0.5, 1.5, 2.5, -1.5, 2.4].map(roundHalfEven), [0, 2, 2, -2, 2]);
 * ```
 */
export function roundHalfEven(x: number): number {
  // Math.round takes ties up; a tie (r − x is then exactly 0.5) to an odd r moves down to even.
  // One predictable branch: comparing x − floor(x) with 0.5 both ways mispredicted on real weights
  // (the mse weight clip's search, which rounds every weight 26 times, ran 4× slower). Math.round
  // gives −0 for −0.5 ≤ x < 0, where the floor-based rounding gave 0 (and −0 only for −0).
  const r = Math.round(x);
  const y = r - x === 0.5 && (r & 1) !== 0 ? r - 1 : r;
  return y === 0 && x !== 0 ? 0 : y;
}

/**
 * Quantizes values with one scale and zero point, as ONNX QuantizeLinear does.
 *
 * @param values Float values.
 * @param params Scale, zero point and element type.
 * @returns The quantized values (Uint8Array, Int8Array or Int32Array by dtype).
 *
 * @example The ONNX golden case
 * ```ts
 * import { quantizeLinear } from "@clipq/quantize/linear";
 * import assert from "node:assert/strict";
 * const q = quantizeLinear([0, 2, 3, 1000, -254, -1000], { scale: 2, zeroPoint: 128, dtype: "uint8" });
 * assert.deepEqual([...q], [128, 129, 130, 255, 1, 0]);
 * ```
 */
export function quantizeLinear(
  values: ArrayLike<number>,
  params: QuantParams,
): Uint8Array | Int8Array | Int32Array {
  const [lo, hi] = LIMITS[params.dtype];
  const out = params.dtype === "uint8"
    ? new Uint8Array(values.length)
    : params.dtype === "int8"
    ? new Int8Array(values.length)
    : new Int32Array(values.length);
  const s = Math.fround(params.scale);
  for (let i = 0; i < values.length; i++) {
    const v = roundHalfEven(Math.fround(Math.fround(values[i]!) / s)) + params.zeroPoint;
    out[i] = v < lo ? lo : v > hi ? hi : v;
  }
  return out;
}

/**
 * Dequantizes values: `(q − zero_point) · scale`, as ONNX DequantizeLinear does.
 *
 * @param values Quantized values.
 * @param params Scale and zero point.
 * @returns Float32 values.
 *
 * @example Usage
 * ```ts
 * import { dequantizeLinear } from "@clipq/quantize/linear";
 * import assert from "node:assert/strict";
 * assert.deepEqual([...dequantizeLinear([128, 130], { scale: 2, zeroPoint: 128, dtype: "uint8" })], [0, 4]);
 * ```
 */
export function dequantizeLinear(values: ArrayLike<number>, params: QuantParams): Float32Array {
  const out = new Float32Array(values.length);
  const s = Math.fround(params.scale);
  for (let i = 0; i < values.length; i++) out[i] = (values[i]! - params.zeroPoint) * s;
  return out;
}

/**
 * Scale and zero point for an activation range. `u8`: asymmetric over [min, max] widened to include
 * 0, so zero (padding, Relu's floor) is exactly representable: s = (b − a)/255, z = round(−a/s).
 * `s8`: symmetric, s = max(|a|, |b|)/127, z = 0. A range of width 0 (a tensor that is always 0)
 * gets scale 1: any scale represents 0 exactly, and 1 keeps the int32 bias scale s_in·s_w large.
 *
 * @param range The calibrated range.
 * @param kind "u8" or "s8".
 * @param tensor Tensor name, for error messages.
 * @returns Scale, zero point and type.
 * @throws {ModelError} When the range is not finite or min > max.
 *
 * @example A ReLU6 output
 * ```ts
 * import { activationParams } from "@clipq/quantize/linear";
 * import assert from "node:assert/strict";
 * const p = activationParams({ min: 0, max: 6 }, "u8");
 * assert.equal(p.zeroPoint, 0);
 * assert.equal(p.scale, Math.fround(6 / 255));
 * assert.equal(activationParams({ min: -1, max: 3 }, "u8").zeroPoint, 64);
 * ```
 */
export function activationParams(
  range: { readonly min: number; readonly max: number },
  kind: "u8" | "s8",
  tensor = "tensor",
): QuantParams {
  const { min, max } = range;
  if (!Number.isFinite(min) || !Number.isFinite(max) || min > max) {
    throw new ModelError(
      `tensor "${tensor}": expected a finite range with min ≤ max but found [${min}, ${max}]`,
    );
  }
  const a = Math.min(min, 0);
  const b = Math.max(max, 0);
  if (kind === "s8") {
    const m = Math.max(-a, b);
    return { scale: m > 0 ? Math.fround(m / 127) : 1, zeroPoint: 0, dtype: "int8" };
  }
  if (b - a <= 0) return { scale: 1, zeroPoint: 0, dtype: "uint8" };
  const scale = Math.fround((b - a) / 255);
  const z = roundHalfEven(-a / scale);
  return { scale, zeroPoint: Math.min(255, Math.max(0, z)), dtype: "uint8" };
}
