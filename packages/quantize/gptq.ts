/**
 * Error-compensating weight rounding (GPTQ; Frantar et al., 2022, after Optimal Brain Quantization):
 * a weighted layer's rows are rounded one input at a time, and each rounding error is spread over the
 * inputs not yet rounded in the proportions that cancel it best on the calibration data, so the
 * layer's output error ‖(W − Ŵ)·x‖² over the data, rather than each weight's own error, is what
 * gets small. The data enter only as E[x·xᵀ] of the inputs (measured by @clipq/calibrate's
 * `measureInputCovariances`), so this stays a pure computation.
 *
 * Nearest rounding ignores that a layer's inputs differ in energy and are correlated: on
 * PP-OCRv4 det, pointwise convs read a few high-energy channels whose weights round to 0–2 levels,
 * and those errors dominate. GPTQ cut the summed output error of its 64 layers 7.6× there, and
 * NanoDet's 8.3×.
 *
 * The rounding is computed as Babai's nearest-plane step, which GPTQ run back to front is exactly
 * (Chen et al., 2025, arXiv 2507.18553): with H = Mᵀ·M, M lower triangular, input j is rounded to
 * cancel row j of M·e given the errors e already made. That needs one Cholesky factorization and
 * no inverse; on random cases it gave the same integers as GPTQ's update with the Cholesky factor
 * of H⁻¹.
 *
 * @module
 */
import { ConfigError, ModelError } from "@clipq/onnx/errors";
import type { InputCovariance } from "@clipq/onnx/metadata";
import { sizeOf, type Tensor, toFloat32 } from "@clipq/onnx/tensor";
import { roundHalfEven } from "./linear.ts";

/** Options of {@linkcode roundWithCovariance}. */
export interface CovarianceRoundingOptions {
  /** The weight's channel (row) axis: each channel is one row of the layer. */
  axis: number;
  /** Largest quantized magnitude (127, or 63 with `reduceRange`). */
  qmax?: number;
  /**
   * Added to the diagonal, as a fraction of its mean, before inverting: keeps the inverse finite
   * where inputs are (nearly) linearly dependent, as GPTQ does.
   */
  damp?: number;
}

/** Defaults of {@linkcode CovarianceRoundingOptions}. */
export const covarianceRoundingDefaults = { qmax: 127, damp: 0.01 } satisfies Omit<
  CovarianceRoundingOptions,
  "axis"
>;

/** Result of {@linkcode roundWithCovariance}. */
export interface CovarianceRounding {
  /** The int8 values, laid out as the weight. */
  values: Int8Array;
  /** Σ over rows of eᵀ·C·e with e the nearest rounding's error (per block, C the measured moment). */
  nearestError: number;
  /** The same for the rounding returned. */
  error: number;
}

/** Lower Cholesky factor L of a symmetric positive definite n×n matrix (A = L·Lᵀ), or undefined. */
function cholesky(a: Float64Array, n: number): Float64Array | undefined {
  const l = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    const rj = j * n;
    let d = a[rj + j]!;
    for (let k = 0; k < j; k++) d -= l[rj + k]! * l[rj + k]!;
    if (!(d > 0)) return undefined;
    const ljj = Math.sqrt(d);
    l[rj + j] = ljj;
    for (let i = j + 1; i < n; i++) {
      const ri = i * n;
      let t = a[ri + j]!;
      for (let k = 0; k < j; k++) t -= l[ri + k]! * l[rj + k]!;
      l[ri + j] = t / ljj;
    }
  }
  return l;
}

/**
 * The lower triangular M with H = Mᵀ·M. Rounding input j to cancel row j of M·e given the errors
 * e of inputs 0…j−1 is Babai's nearest-plane step, which is what GPTQ's update with the Cholesky
 * factor of H⁻¹ computes (Chen et al., 2025), without inverting H: with P the order reversal,
 * P·H·P = L·Lᵀ gives M = P·Lᵀ·P.
 */
function lowerFactor(h: Float64Array, n: number): Float64Array | undefined {
  const rev = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) rev[i * n + j] = h[(n - 1 - i) * n + (n - 1 - j)]!;
  }
  const l = cholesky(rev, n);
  if (!l) return undefined;
  const m = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    for (let k = 0; k <= j; k++) m[j * n + k] = l[(n - 1 - k) * n + (n - 1 - j)]!;
  }
  return m;
}

/** A rounding already computed for one covariance: what it was computed from, and the result. */
interface Remembered {
  weight: Float32Array;
  dims: string;
  scales: Float32Array;
  options: string;
  result: CovarianceRounding;
}

/**
 * Roundings by covariance object, kept as long as the covariance is: the bias-correction pass and
 * each trial of the accuracy fallback quantize the same layers again, and GPTQ is the slow part of
 * a quantize call. A hit needs the same weight, scales and options to the bit.
 */
const remembered = new WeakMap<InputCovariance, Remembered[]>();

function sameValues(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return false;
  return true;
}

function copyOf(r: CovarianceRounding): CovarianceRounding {
  return { ...r, values: r.values.slice() };
}

/**
 * Rounds a weight to int8 on given scales, compensating each row's rounding errors on the inputs'
 * second moment (GPTQ, inputs in order of falling energy). Within each block of the covariance the
 * errors are compensated; across blocks they are not (the moment between blocks is not kept). A row
 * whose compensated error on the measured moment is not below nearest rounding's keeps nearest
 * rounding, so no row gets worse on the calibration data.
 *
 * @param weight The float weight (Conv [C_out, C_in/group, k…] on axis 0; Gemm/MatMul [K, N] on
 *   axis 1 or [N, K] on axis 0).
 * @param scales One scale, or one per channel of `axis`.
 * @param covariance The second moment of the rows' inputs, from `measureInputCovariances`.
 * @param options The row axis, qmax and damping.
 * @returns The int8 values and the summed output errors of nearest and of this rounding.
 * @throws {ModelError} When the covariance does not fit the weight (dim, groups, blocks).
 *
 * @example Two perfectly correlated inputs: the second weight absorbs the first's rounding error
 * ```ts
 * import { roundWithCovariance } from "@clipq/quantize/gptq";
 * import { float32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * // One row [0.4, 0.4] at scale 1: nearest gives [0, 0], an output error of 0.8 on x = [1, 1].
 * const c = { groups: 1, dim: 2, blocks: [0, 2], matrices: [Float64Array.of(1, 1, 1, 1)], samples: 1 };
 * const r = roundWithCovariance(float32([1, 2], [0.4, 0.4]), Float32Array.of(1), c, { axis: 0, damp: 1e-6 });
 * assert.deepEqual([...r.values], [0, 1]);
 * assert.ok(r.error < r.nearestError);
 * ```
 */
export function roundWithCovariance(
  weight: Tensor,
  scales: Float32Array,
  covariance: InputCovariance,
  options: CovarianceRoundingOptions,
): CovarianceRounding {
  const o = { ...covarianceRoundingDefaults, ...options };
  if (!(o.damp >= 0 && o.damp < Infinity)) {
    throw new ConfigError("damp", `expected a finite number ≥ 0 but found ${o.damp}`);
  }
  const w = toFloat32(weight);
  const dims = weight.dims;
  const key = JSON.stringify([o.axis, o.qmax, o.damp]);
  const seen = remembered.get(covariance) ?? [];
  const hit = seen.find((r) =>
    r.options === key && r.dims === dims.join("x") && sameValues(r.scales, scales) &&
    sameValues(r.weight, w)
  );
  if (hit) return copyOf(hit.result);
  const result = roundOnce(w, dims, scales, covariance, o);
  seen.push({
    weight: w.slice(),
    dims: dims.join("x"),
    scales: scales.slice(),
    options: key,
    result,
  });
  remembered.set(covariance, seen);
  return copyOf(result);
}

function roundOnce(
  w: Float32Array,
  dims: readonly number[],
  scales: Float32Array,
  covariance: InputCovariance,
  o: Required<CovarianceRoundingOptions>,
): CovarianceRounding {
  const outer = sizeOf(dims.slice(0, o.axis));
  const channels = dims[o.axis]!;
  const inner = sizeOf(dims.slice(o.axis + 1));
  const dim = outer * inner;
  const { groups, blocks, matrices } = covariance;
  const nBlocks = blocks.length - 1;
  if (
    covariance.dim !== dim || groups < 1 || channels % groups !== 0 || blocks[0] !== 0 ||
    blocks.at(-1) !== dim || matrices.length !== groups * nBlocks ||
    (scales.length !== 1 && scales.length !== channels)
  ) {
    throw new ModelError(
      `Expected an input covariance of ${dim} values a row in ${groups} group(s) of ${
        channels / groups
      } rows, blocks from 0 to ${dim} and ${
        scales.length === 1 ? "one scale" : `${channels} scales`
      }, but found dim ${covariance.dim}, ${covariance.groups} group(s), blocks [${blocks}], ${matrices.length} matrices and ${scales.length} scales for weight dims [${dims}]`,
    );
  }
  // Element k of channel c's row lies at offset(k) + c·inner.
  const offset = (k: number) => {
    const a = Math.floor(k / inner);
    return a * channels * inner + (k - a * inner);
  };
  const values = new Int8Array(w.length);
  const rowsPerGroup = channels / groups;
  let nearestError = 0, error = 0;
  for (let g = 0; g < groups; g++) {
    for (let b = 0; b < nBlocks; b++) {
      const start = blocks[b]!, n = blocks[b + 1]! - start;
      const c = matrices[g * nBlocks + b]!;
      if (c.length !== n * n) {
        throw new ModelError(
          `Expected a ${n}×${n} covariance block (group ${g}, block ${b}) but found ${c.length} values`,
        );
      }
      // Inputs in order of falling energy; a dead input (zero energy) gets 1 so H stays invertible.
      const order = Array.from({ length: n }, (_, i) => i)
        .sort((x, y) => c[y * n + y]! - c[x * n + x]!);
      let mean = 0;
      for (let i = 0; i < n; i++) mean += c[i * n + i]!;
      mean = mean > 0 ? mean / n : 1;
      const h = new Float64Array(n * n);
      // H = C + diag(extra) in this order: errors on the measured C are ‖M·e‖² − Σ extraᵢ·eᵢ².
      const extra = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        for (let j = 0; j < n; j++) h[i * n + j] = c[order[i]! * n + order[j]!]!;
        extra[i] = (h[i * n + i]! === 0 ? 1 : 0) + o.damp * mean;
        h[i * n + i]! += extra[i]!;
      }
      const m = lowerFactor(h, n);
      if (!m) {
        throw new ModelError(
          `Expected a positive definite input covariance (group ${g}, block ${b}) but its factorization failed: a NaN or infinite input, or no damping`,
        );
      }
      const measured = (e: Float64Array, withH: number) => {
        let t = withH;
        for (let i = 0; i < n; i++) t -= extra[i]! * e[i]! * e[i]!;
        return t;
      };
      const where = Int32Array.from(order, (k) => offset(start + k));
      const row = new Float64Array(n), eNear = new Float64Array(n), eComp = new Float64Array(n);
      const qNear = new Int8Array(n), qComp = new Int8Array(n);
      for (let r = 0; r < rowsPerGroup; r++) {
        const ch = g * rowsPerGroup + r;
        const s = scales.length === 1 ? scales[0]! : scales[ch]!;
        const rowAt = ch * inner;
        for (let i = 0; i < n; i++) {
          const v = w[where[i]! + rowAt]!;
          row[i] = v;
          let q = roundHalfEven(Math.fround(v / s));
          q = q > o.qmax ? o.qmax : q < -o.qmax ? -o.qmax : q;
          qNear[i] = q;
          eNear[i] = v - q * s;
        }
        // One pass over M's rows gives both ‖M·e‖²: nearest rounding's and this rounding's.
        let total = 0, totalNear = 0;
        for (let j = 0; j < n; j++) {
          const mj = j * n;
          let acc = 0, accNear = 0;
          for (let k = 0; k < j; k++) {
            const mk = m[mj + k]!;
            acc += mk * eComp[k]!;
            accNear += mk * eNear[k]!;
          }
          const mjj = m[mj + j]!;
          const resNear = accNear + mjj * eNear[j]!;
          totalNear += resNear * resNear;
          let q = roundHalfEven(Math.fround((row[j]! + acc / mjj) / s));
          q = q > o.qmax ? o.qmax : q < -o.qmax ? -o.qmax : q;
          qComp[j] = q;
          eComp[j] = row[j]! - q * s;
          const res = mjj * eComp[j]! + acc;
          total += res * res;
        }
        const comp = measured(eComp, total);
        const near = measured(eNear, totalNear);
        const keep = comp < near ? qComp : qNear;
        nearestError += near;
        error += Math.min(comp, near);
        for (let i = 0; i < n; i++) values[where[i]! + rowAt] = keep[i]!;
      }
    }
  }
  return { values, nearestError, error };
}
