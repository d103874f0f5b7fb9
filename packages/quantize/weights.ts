/**
 * Weight and bias quantization: symmetric int8 per output channel (or per tensor), with the clip of
 * each channel chosen as its max |w| or by a search minimizing the squared rounding + clipping error;
 * int32 bias with scale s_input · s_weight[c] and zero point 0.
 *
 * @module
 */
import { ModelError } from "@clipq/onnx/errors";
import { sizeOf, type Tensor, tensor, toFloat32 } from "@clipq/onnx/tensor";
import { roundHalfEven } from "./linear.ts";

/** Options of {@linkcode quantizeWeight}. */
export interface WeightOptions {
  /** Channel axis for per-channel scales; undefined for one scale for the whole tensor. */
  axis?: number | undefined;
  /** "max": clip at max |w|; "mse": per-channel search of the clip minimizing squared error. */
  clip?: "max" | "mse";
  /** Largest quantized magnitude: 127 (8-bit) or 63 (7-bit, `reduceRange`). */
  qmax?: number;
  /**
   * Smallest scale per channel (one value, or one per channel): what the layer's int32 bias needs
   * to stay in range (see {@linkcode biasScaleFloor}); a channel whose scale is raised to it is
   * counted in `raisedScales`.
   */
  minScales?: ArrayLike<number> | undefined;
}

/** Defaults of {@linkcode WeightOptions}. */
export const weightDefaults = {
  axis: undefined,
  clip: "max",
  qmax: 127,
  minScales: undefined,
} satisfies WeightOptions;

/** A quantized weight. */
export interface QuantizedWeight {
  /** int8 values, same dims as the float weight. */
  readonly values: Tensor;
  /** Scale per channel (length 1 when per-tensor), float32. */
  readonly scales: Float32Array;
  /** The clip each channel got, as a fraction of its max |w| (1 = no clipping). */
  readonly clipRatios: Float32Array;
  /** The channel axis, or undefined when per-tensor. */
  readonly axis: number | undefined;
  /** Channels whose scale was raised to `minScales` (their bias would not fit int32 otherwise). */
  readonly raisedScales: number;
}

/**
 * Largest magnitude a quantized bias may take: half the int32 range, leaving the other half to the
 * sum of the layer's int8 products it is added to (at most fan-in · 127 · 255, below 2^30 for a
 * fan-in up to 33 000), so that the int32 accumulator cannot overflow either.
 */
export const BIAS_LIMIT = 2 ** 30;

/**
 * The smallest weight scale per bias value that keeps it within {@linkcode BIAS_LIMIT} at scale
 * s_input · s_weight: |b| / (s_input · BIAS_LIMIT). A channel whose weights are tiny beside its
 * bias (a dead channel after BatchNorm folding: weights ×10⁻⁷, bias 1) would otherwise get a scale
 * at which its bias saturates int32, and output 0 instead of its bias.
 *
 * @param bias The float bias.
 * @param inputScale The scale of the layer's input activation.
 * @returns One floor per bias value.
 *
 * @example A bias of 1 at input scale 1/255 needs a weight scale of at least 255/2^30
 * ```ts
 * import { biasScaleFloor } from "@clipq/quantize/weights";
 * import { float32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * assert.deepEqual([...biasScaleFloor(float32([2], [1, 0]), 1 / 255)], [255 / 2 ** 30, 0]);
 * ```
 */
export function biasScaleFloor(bias: Tensor, inputScale: number): Float64Array {
  const b = toFloat32(bias);
  const floor = new Float64Array(b.length);
  for (let c = 0; c < b.length; c++) floor[c] = Math.abs(b[c]!) / (inputScale * BIAS_LIMIT);
  return floor;
}

/** Clip fractions the "mse" search tries (of the channel's max |w|). */
const MSE_RATIOS = Array.from({ length: 26 }, (_, k) => 1 - k * 0.02);

/**
 * The squared error of a channel quantized with the given clip, or any value ≥ `bound` as soon as
 * the running sum reaches it: the search needs only errors below the best so far, and the sum
 * never decreases, so a worse clip is dropped part-way (most of the 26 are). With roundHalfEven's
 * branch-free form this kept every choice: 6000 random channels (uniform, Gaussian, on-grid ties,
 * outliers; qmax 127 and 63) chose the same clips as the plain loop, 4–5× faster (400 → 85–110 ns
 * a weight over the 26 clips).
 */
function channelError(w: Float32Array, clip: number, qmax: number, bound: number): number {
  const s = Math.fround(clip / qmax);
  let err = 0;
  for (let i = 0; i < w.length; i++) {
    let q = roundHalfEven(Math.fround(w[i]! / s));
    if (q > qmax) q = qmax;
    else if (q < -qmax) q = -qmax;
    const d = w[i]! - q * s;
    err += d * d;
    if (err >= bound) return err;
  }
  return err;
}

/**
 * Quantizes a float weight to symmetric int8 in [−qmax, qmax]: scale = clip/qmax per channel,
 * rounded half to even as QuantizeLinear rounds. An all-zero channel gets scale 1 (any scale
 * represents zeros exactly; 1 rather than a tiny value keeps its bias from overflowing int32).
 *
 * @param weight The float weight.
 * @param options Axis, clip method, qmax.
 * @returns int8 values, scales and the clip ratios chosen.
 * @throws {ModelError} When the axis is outside the weight's rank or the weight holds NaN/Inf.
 *
 * @example Per-channel scales of a [2, 2] weight
 * ```ts
 * import { quantizeWeight } from "@clipq/quantize/weights";
 * import { float32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const q = quantizeWeight(float32([2, 2], [1, -0.5, 0, 0]), { axis: 0 });
 * assert.deepEqual([...q.values.data], [127, -64, 0, 0]);
 * assert.deepEqual([...q.scales], [Math.fround(1 / 127), 1]);
 * ```
 */
export function quantizeWeight(weight: Tensor, options: WeightOptions = {}): QuantizedWeight {
  const o = { ...weightDefaults, ...options };
  const w = toFloat32(weight);
  const dims = weight.dims;
  let outer = 1, channels = 1, inner = w.length;
  if (o.axis !== undefined) {
    if (!Number.isInteger(o.axis) || o.axis < 0 || o.axis >= dims.length) {
      throw new ModelError(
        `Expected a channel axis in 0..${
          dims.length - 1
        } for weight dims [${dims}] but found ${o.axis}`,
      );
    }
    outer = sizeOf(dims.slice(0, o.axis));
    channels = dims[o.axis]!;
    inner = sizeOf(dims.slice(o.axis + 1));
  }
  const per = outer * inner;
  const floors = o.minScales;
  if (floors && floors.length !== 1 && floors.length !== channels) {
    throw new ModelError(
      `Expected minScales of 1 or ${channels} values but found ${floors.length}`,
    );
  }
  let raised = 0;
  const scales = new Float32Array(channels);
  const ratios = new Float32Array(channels);
  const values = new Int8Array(w.length);
  const buf = new Float32Array(per);
  for (let c = 0; c < channels; c++) {
    let k = 0, maxAbs = 0;
    for (let a = 0; a < outer; a++) {
      const base = (a * channels + c) * inner;
      for (let i = 0; i < inner; i++) {
        const v = w[base + i]!;
        if (!Number.isFinite(v)) {
          throw new ModelError(`Expected finite weights but found ${v} in channel ${c}`);
        }
        buf[k++] = v;
        const m = Math.abs(v);
        if (m > maxAbs) maxAbs = m;
      }
    }
    let ratio = 1;
    if (o.clip === "mse" && maxAbs > 0) {
      let best = Infinity;
      for (const r of MSE_RATIOS) {
        const e = channelError(buf, maxAbs * r, o.qmax, best);
        if (e < best) [best, ratio] = [e, r];
      }
    }
    let s = maxAbs > 0 ? Math.fround(maxAbs * ratio / o.qmax) : 1;
    const floor = floors ? floors[floors.length === 1 ? 0 : c]! : 0;
    if (s < floor) {
      // Rounded up so that the float32 scale is not below the floor either.
      s = Math.fround(floor);
      if (s < floor) s = Math.fround(floor * (1 + 2 ** -23));
      raised++;
    }
    scales[c] = s;
    ratios[c] = ratio;
    for (let a = 0; a < outer; a++) {
      const base = (a * channels + c) * inner;
      for (let i = 0; i < inner; i++) {
        let q = roundHalfEven(Math.fround(w[base + i]! / s));
        if (q > o.qmax) q = o.qmax;
        else if (q < -o.qmax) q = -o.qmax;
        values[base + i] = q;
      }
    }
  }
  return {
    values: tensor("int8", dims, values),
    scales,
    clipRatios: ratios,
    axis: o.axis,
    raisedScales: raised,
  };
}

/**
 * Quantizes a bias to int32 with scale s_input · s_weight[c] and zero point 0. When the bias has
 * more channels than the weight has scales (grouped ConvTranspose, whose weight axis 1 holds
 * C_out/group channels), the scales repeat group by group. Values beyond int32 saturate.
 *
 * @param bias The float bias, one value per output channel.
 * @param inputScale The scale of the layer's input activation.
 * @param weightScales The weight's scales (one, or one per channel).
 * @returns int32 values and their per-channel float32 scales.
 * @throws {ModelError} When the bias length is not a multiple of the number of weight scales, or
 *   a bias value is NaN or infinite.
 *
 * @example Usage
 * ```ts
 * import { quantizeBias } from "@clipq/quantize/weights";
 * import { float32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const b = quantizeBias(float32([2], [0.5, -1]), 0.5, Float32Array.of(0.25, 0.5));
 * assert.deepEqual([...b.values.data], [4, -4]);
 * ```
 */
export function quantizeBias(
  bias: Tensor,
  inputScale: number,
  weightScales: Float32Array,
): { values: Tensor; scales: Float32Array } {
  const b = toFloat32(bias);
  const n = b.length;
  if (weightScales.length !== 1 && n % weightScales.length !== 0) {
    throw new ModelError(
      `Expected a bias of ${weightScales.length} (or a multiple) values but found ${n}`,
    );
  }
  const scales = new Float32Array(n);
  const q = new Int32Array(n);
  for (let c = 0; c < n; c++) {
    const s = Math.fround(
      inputScale * weightScales[weightScales.length === 1 ? 0 : c % weightScales.length]!,
    );
    scales[c] = s;
    if (!Number.isFinite(b[c]!)) {
      // Saturated to ±2^31, an infinite bias had been quantized without a word.
      throw new ModelError(`Expected finite biases but found ${b[c]} in channel ${c}`);
    }
    const v = roundHalfEven(b[c]! / s);
    q[c] = v > 2147483647 ? 2147483647 : v < -2147483648 ? -2147483648 : v;
  }
  return { values: tensor("int32", [n], q), scales };
}
