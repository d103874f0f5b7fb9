/**
 * Ranges from histograms: minmax, percentile, mse, entropy (TensorRT-style KL) and aciq, each
 * symmetric (s8) or asymmetric (u8, each tail searched on its own), optionally loss-aware.
 *
 * How the tails are handled: the signed histogram folds exactly into two magnitude histograms
 * (values ≥ 0 and values < 0; the grid is anchored at 0, so no bin straddles it). A symmetric range
 * searches the sum of both with 127 steps (128 entropy levels); an asymmetric range searches each
 * tail on its own, with that tail's share of the 255 steps (256 entropy levels) in proportion to its
 * share of [min, max]; a tail without data keeps its exact bound (min or max).
 *
 * Entropy searches the nonzero values: exact zeros are on every grid, and their spike in bin 0
 * would otherwise decide the divergence.
 *
 * Expected error (mse, loss-aware): clipping error Σ n·(x − c)² over bin centres beyond the clip,
 * plus rounding error n_inside · s²/12 (uniform rounding noise, step s); values exactly 0 carry no
 * rounding error since 0 is always representable.
 *
 * Loss-aware clipping is our reading of the paper's added loss term (its formula is not available):
 * each tail's clip c minimizes E(c)/E_min + λ·(c/c_max)², where E is the expected error above,
 * E_min the least E of the clips searched, c_max the tail's largest magnitude, and the search is
 * limited to clips not above the chosen method's clip — so λ = 0 gives the mse clip (capped by the
 * method), larger λ prefers tighter clips, and the error of the clip chosen is at most
 * (1 + λ)·E_min.
 *
 * ACIQ estimates the Laplace b as the mean |x − μ| over bin centres (one pass over the bins rather
 * than a second pass over the data; the error is at most half a bin), and the Gaussian σ exactly
 * from the running sums; for one-sided (post-ReLU) data both come from the nonzero values, its
 * zeros being the half the ReLU cut.
 *
 * @module
 */
import type { TensorRange } from "@clipq/onnx/metadata";
import { ConfigError, DataError } from "@clipq/onnx/errors";
import type { Histogram } from "./histogram.ts";
import { entropyCut } from "./_entropy.ts";

/** Range methods over histograms. */
export type RangeMethod = "minmax" | "percentile" | "mse" | "entropy" | "aciq";

/** The range methods, in documentation order. */
export const RANGE_METHODS: readonly RangeMethod[] = [
  "minmax",
  "percentile",
  "mse",
  "entropy",
  "aciq",
];

/** Options of {@linkcode rangeFromHistogram}. */
export interface RangeOptions {
  /** How to choose the clip. */
  method?: RangeMethod;
  /** Percentile (in (0, 100]) for method "percentile". */
  percentile?: number;
  /** Symmetric range [−c, c] for s8 activations; otherwise an asymmetric u8 range. */
  symmetric?: boolean;
  /** Loss-aware clip tightening with penalty weight λ, or false. */
  lossAware?: { lambda: number } | false;
  /** Distribution ACIQ assumes. */
  distribution?: "laplace" | "gaussian";
}

/** Defaults of {@linkcode RangeOptions}. */
export const defaults = {
  method: "percentile",
  percentile: 99.99,
  symmetric: false,
  lossAware: false,
  distribution: "laplace",
} satisfies RangeOptions;

type Checked = Required<RangeOptions>;

/**
 * Plain minmax reads the extremes of every value: a histogram without them (a sample's only) is
 * refused, by name. With loss-aware clipping minmax reads the histogram, as the other methods do.
 */
function checkExtremes(h: Histogram, o: Checked, what: string): void {
  if (o.method === "minmax" && !o.lossAware && !h.extremesExact) {
    throw new DataError(
      `${what}: expected exact extremes for minmax but the statistics hold a sample's (collected for a histogram method); collect them again with method "minmax"`,
    );
  }
}

function check(options: RangeOptions): Checked {
  const o = { ...defaults, ...options } as Checked;
  if (!RANGE_METHODS.includes(o.method)) {
    throw new ConfigError(
      "method",
      `expected one of ${RANGE_METHODS.join(", ")} but found ${JSON.stringify(o.method)}`,
    );
  }
  if (typeof o.percentile !== "number" || !(o.percentile > 0 && o.percentile <= 100)) {
    throw new ConfigError("percentile", `expected a number in (0, 100] but found ${o.percentile}`);
  }
  if (typeof o.symmetric !== "boolean") {
    throw new ConfigError("symmetric", `expected a boolean but found ${String(o.symmetric)}`);
  }
  if (o.lossAware !== false) {
    const l = (o.lossAware as { lambda?: unknown } | null)?.lambda;
    if (typeof l !== "number" || !(l >= 0) || !Number.isFinite(l)) {
      throw new ConfigError(
        "lossAware.lambda",
        `expected a finite number ≥ 0 but found ${JSON.stringify(l)}`,
      );
    }
  }
  if (o.distribution !== "laplace" && o.distribution !== "gaussian") {
    throw new ConfigError(
      "distribution",
      `expected "laplace" or "gaussian" but found ${JSON.stringify(o.distribution)}`,
    );
  }
  return o;
}

/** A magnitude histogram of one tail: bin j holds magnitudes in [j·w, (j+1)·w]. */
interface Tail {
  m: Float64Array;
  w: number;
  /** Largest magnitude (exact). */
  maxMag: number;
  count: number;
  /** Values exactly 0 in bin 0. */
  zeros: number;
}

/**
 * The histogram as magnitude histograms of its two tails, from 0 out. A narrow band of values far
 * from 0 (a tensor near 100 that moves by 10⁻³) would need millions of magnitude bins at the
 * histogram's width; the tails then take a width 2^k times the histogram's (exact: each bin lands
 * whole in one), at most 4 × its bin count from 0 to the largest magnitude. That is still far
 * finer than the int8 grid, which spans 0 to the clip in 255 steps.
 */
function tails(h: Histogram): { pos: Tail; neg: Tail } {
  let w = h.width, shift = 1;
  const lengths = () => [
    h.max >= 0 ? Math.floor(h.max / w) + 1 : 0,
    h.min < 0 ? -Math.floor(h.min / w) : 0,
  ];
  while (Math.max(...lengths()) > 4 * h.bins) {
    w *= 2;
    shift *= 2;
  }
  const [posLen, negLen] = lengths();
  const pos = new Float64Array(posLen!), neg = new Float64Array(negLen!);
  let pc = 0, nc = 0;
  const [first, last] = h.occupied();
  for (let i = first; i <= last; i++) {
    const c = h.counts[i]!;
    if (c === 0) continue;
    const a = h.offset + i;
    if (a >= 0) {
      pos[Math.floor(a / shift)]! += c;
      pc += c;
    } else {
      neg[Math.floor((-a - 1) / shift)]! += c;
      nc += c;
    }
  }
  return {
    pos: { m: pos, w, maxMag: Math.max(h.max, 0), count: pc, zeros: h.zeros },
    neg: { m: neg, w, maxMag: Math.max(-h.min, 0), count: nc, zeros: 0 },
  };
}

function sumTails(a: Tail, b: Tail): Tail {
  const n = Math.max(a.m.length, b.m.length);
  const m = new Float64Array(n);
  for (let i = 0; i < a.m.length; i++) m[i]! += a.m[i]!;
  for (let i = 0; i < b.m.length; i++) m[i]! += b.m[i]!;
  return {
    m,
    w: a.w,
    maxMag: Math.max(a.maxMag, b.maxMag),
    count: a.count + b.count,
    zeros: a.zeros + b.zeros,
  };
}

/** Representative magnitude of bin j (its centre, kept within the exact maximum). */
function centre(t: Tail, j: number): number {
  return Math.min((j + 0.5) * t.w, t.maxMag);
}

function percentileClip(t: Tail, p: number): number {
  const target = (p / 100) * t.count;
  let cum = 0;
  for (let j = 0; j < t.m.length; j++) {
    const c = t.m[j]!;
    if (c > 0 && cum + c >= target) {
      return Math.min((j + (target - cum) / c) * t.w, t.maxMag);
    }
    cum += c;
  }
  return t.maxMag;
}

/**
 * Expected error of each candidate clip c_j = min((j+1)·w, maxMag), j = 0 … nbins−1, with `steps`
 * quantization steps over [0, c].
 */
function expectedErrors(t: Tail, steps: number): { clips: Float64Array; errors: Float64Array } {
  const n = t.m.length;
  // Suffix sums of n, n·x, n·x² over bins beyond j, so each candidate costs O(1).
  const s0 = new Float64Array(n + 1), s1 = new Float64Array(n + 1), s2 = new Float64Array(n + 1);
  for (let j = n - 1; j >= 0; j--) {
    const c = t.m[j]!, x = centre(t, j);
    s0[j] = s0[j + 1]! + c;
    s1[j] = s1[j + 1]! + c * x;
    s2[j] = s2[j + 1]! + c * x * x;
  }
  const clips = new Float64Array(n), errors = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    const clip = Math.min((j + 1) * t.w, t.maxMag);
    const beyond = j + 1;
    const clipErr = s2[beyond]! - 2 * clip * s1[beyond]! + clip * clip * s0[beyond]!;
    const inside = s0[0]! - s0[beyond]! - t.zeros;
    const step = clip / steps;
    clips[j] = clip;
    errors[j] = Math.max(clipErr, 0) + Math.max(inside, 0) * step * step / 12;
  }
  return { clips, errors };
}

function mseClip(t: Tail, steps: number): number {
  if (t.m.length === 0) return t.maxMag;
  const { clips, errors } = expectedErrors(t, steps);
  let best = 0;
  for (let j = 1; j < errors.length; j++) if (errors[j]! < errors[best]!) best = j;
  return clips[best]!;
}

/**
 * TensorRT-style entropy calibration of one tail with `levels` quantization levels, over its
 * nonzero values. Exact zeros (often half of a ReLU's output) sit on every grid and carry no
 * quantization error; left in bin 0, their spike decides the divergence, since any candidate wider
 * than `levels` bins merges bin 0 with bin 1 and spreads it, so the narrowest candidate always won
 * (BlazeFace's ReLU outputs clipped at 4 where 1 % of the values lie above 7.6; two of its outputs
 * at 0.1 dB SQNR).
 */
function entropyClip(t: Tail, levels: number): number {
  if (t.m.length <= levels || levels < 2) return t.maxMag;
  let bins = t.m, total = t.count;
  if (t.zeros > 0) {
    bins = Float64Array.from(t.m);
    bins[0] = Math.max(bins[0]! - t.zeros, 0);
    total -= t.zeros;
  }
  if (!(total > 0)) return t.maxMag;
  return Math.min(entropyCut(bins, { total, levels }) * t.w, t.maxMag);
}

function meanAbsDeviation(h: Histogram, about: number): number {
  const [first, last] = h.occupied();
  const w = h.width;
  let s = 0;
  for (let i = first; i <= last; i++) {
    const c = h.counts[i]!;
    if (c === 0) continue;
    const x = Math.min(Math.max((h.offset + i + 0.5) * w, h.min), h.max);
    s += c * Math.abs(x - about);
  }
  // Exact zeros sit at 0, not at the centre of their bin.
  const zeroBinCentre = Math.min(Math.max(0.5 * w, h.min), h.max);
  s += h.zeros * (Math.abs(0 - about) - Math.abs(zeroBinCentre - about));
  return s / h.count;
}

/**
 * The clip minimizing e(α)/e_min + λ·(α/α_max)², over the clips up to `cap` (the method's own
 * clip): e is the tail's expected quantization error and e_min the least any of those clips
 * reaches. Measured against e_min rather than the tensor's energy, λ means the same on every tensor
 * and at every bit width, and it bounds what tightening may cost: the chosen clip's error is at
 * most (1 + λ)·e_min. (Against the energy, where 8-bit errors are ~10⁻⁴, any λ ≥ 10⁻³ outweighed
 * the error term and clipped PP-OCRv4 det's output to 0.2 dB SQNR.)
 */
function lossAwareClip(t: Tail, steps: number, cap: number, lambda: number) {
  if (t.m.length === 0 || t.maxMag === 0) return Math.min(cap, t.maxMag);
  const { clips, errors } = expectedErrors(t, steps);
  let last = 0;
  while (last + 1 < clips.length && clips[last + 1]! <= cap) last++;
  let least = Infinity;
  for (let j = 0; j <= last; j++) least = Math.min(least, errors[j]!);
  // A clip with no error at all (every value on the grid) leaves only the zero-error clips in play.
  const unit = least > 0 ? least : Number.MIN_VALUE;
  let best = 0, bestObj = Infinity;
  for (let j = 0; j <= last; j++) {
    const rel = clips[j]! / t.maxMag;
    const obj = errors[j]! / unit + lambda * rel * rel;
    if (obj < bestObj) {
      bestObj = obj;
      best = j;
    }
  }
  return Math.min(clips[best]!, cap);
}

/**
 * Chooses a range for one tensor from its histogram.
 *
 * @param hist The tensor's histogram.
 * @param options Method, percentile, symmetric, loss-aware penalty, ACIQ distribution.
 * @returns The range; `source` is the method name (with "+loss-aware" when the penalty applied).
 * @throws {ConfigError} When an option is not one of the allowed values.
 * @throws {RangeError} When the histogram is empty.
 * @throws {DataError} When the method is minmax and the histogram's extremes are a sample's.
 *
 * @example The 90th percentile of 0..99 is 89 within one bin
 * ```ts
 * import { Histogram } from "@clipq/calibrate/histogram";
 * import { rangeFromHistogram } from "@clipq/calibrate/range-methods";
 * import assert from "node:assert/strict";
 * const h = new Histogram().add(Array.from({ length: 100 }, (_, i) => i));
 * const r = rangeFromHistogram(h, { method: "percentile", percentile: 90 });
 * assert.ok(Math.abs(r.max - 89) <= h.width);
 * ```
 */
export function rangeFromHistogram(hist: Histogram, options: RangeOptions = {}): TensorRange {
  return rangeOf(hist, check(options), "a histogram");
}

/** rangeFromHistogram on checked options; `what` names the histogram in a refusal. */
function rangeOf(hist: Histogram, o: Checked, what: string): TensorRange {
  if (hist.count === 0) {
    throw new RangeError("Expected a histogram with at least one finite value but found none");
  }
  checkExtremes(hist, o, what);
  const { pos, neg } = tails(hist);
  const source = o.lossAware ? `${o.method}+loss-aware` : o.method;

  const clipOf = (t: Tail, steps: number, oneSided: boolean): number => {
    switch (o.method) {
      case "minmax":
        return t.maxMag;
      case "percentile":
        return percentileClip(t, o.percentile);
      case "mse":
        return mseClip(t, steps);
      case "entropy":
        return entropyClip(t, steps + 1);
      case "aciq":
        return aciqClip(t, oneSided);
    }
  };
  const aciqClip = (t: Tail, oneSided: boolean): number => {
    const alpha = aciqAlpha(hist, o.distribution, { oneSided, steps: 255 });
    // The clip is about the mean for two-sided data; its magnitude on this tail is |μ ± α|.
    const centreShift = oneSided ? 0 : (t === neg ? -hist.mean : hist.mean);
    return Math.min(Math.max(centreShift + alpha, 0), t.maxMag);
  };
  const refine = (t: Tail, steps: number, clip: number): number =>
    o.lossAware ? lossAwareClip(t, steps, clip, o.lossAware.lambda) : clip;

  if (o.method === "minmax" && !o.lossAware) {
    // The extremes of every value: a sampled histogram bins only the sample's.
    const [min, max] = [hist.populationMin, hist.populationMax];
    if (!o.symmetric) return { min, max, source };
    const c = Math.max(-min, max, 0);
    return { min: -c, max: c, source };
  }
  if (o.symmetric) {
    const all = sumTails(pos, neg);
    // ACIQ treats data on one side of 0 as one-sided (post-ReLU), which also holds for s8.
    const oneSided = hist.min >= 0 || hist.max <= 0;
    const c = o.method === "aciq"
      ? refine(all, 127, aciqSymmetric(hist, o.distribution, oneSided))
      : refine(all, 127, clipOf(all, 127, oneSided));
    return { min: -c, max: c, source };
  }
  const span = Math.max(hist.max, 0) - Math.min(hist.min, 0);
  const oneSided = hist.min >= 0 || hist.max <= 0;
  const stepsOf = (t: Tail) => Math.max(1, Math.round((255 * t.maxMag) / (span || 1)));
  const hi = pos.count > 0 && hist.max > 0
    ? refine(pos, stepsOf(pos), clipOf(pos, stepsOf(pos), oneSided))
    : hist.max;
  const lo = neg.count > 0 && hist.min < 0
    ? -refine(neg, stepsOf(neg), clipOf(neg, stepsOf(neg), oneSided))
    : hist.min;
  // A tail with no data beyond 0 keeps its exact bound (e.g. min > 0 for all-positive data), and
  // a clip never cuts below all the data of a side: a band far from 0 (π everywhere) sits in one
  // magnitude bin, whose representative can fall short of the band.
  return {
    min: hist.min >= 0 ? hist.min : Math.min(lo, hist.max),
    max: hist.max <= 0 ? hist.max : Math.max(hi, hist.min),
    source,
  };
}

function aciqSymmetric(h: Histogram, distribution: string, oneSided: boolean): number {
  const maxMag = Math.max(Math.abs(h.min), Math.abs(h.max));
  // One-sided data has 127 steps of the s8 grid, as much as two-sided data has per side.
  const alpha = aciqAlpha(h, distribution, { oneSided, steps: 127 });
  return Math.min(oneSided ? alpha : Math.abs(h.mean) + alpha, maxMag);
}

/**
 * ACIQ's clip α of a Laplace (b) or Gaussian (σ) fit, about the mean for two-sided data. One-sided
 * (post-ReLU) data is the positive half of a distribution about 0: its exact zeros stand for the
 * half the ReLU cut, so b = E[x | x > 0] and σ² = E[x² | x > 0] come from the nonzero values.
 * Counting the zeros halved b on a ReLU output with half its values 0, clipped it at half ACIQ's
 * optimum and took BlazeFace's lowest output SQNR to 1.6 dB. Its optimum depends on the steps that
 * cover [0, α]: 255 (u8, one-sided data) minimize 2b²·e^(−α/b) + α²/(12·255²) at 11.16·b (4.2·σ);
 * 127 (s8, or either side of two-sided data) at 9.89·b (3.92·σ).
 */
function aciqAlpha(
  h: Histogram,
  distribution: string,
  options: { oneSided: boolean; steps: 127 | 255 },
): number {
  const whole = options.oneSided && options.steps === 255;
  const [laplace, gaussian] = whole ? [11.16, 4.2] : [9.89, 3.92];
  if (options.oneSided) {
    const nonzero = h.count - h.zeros;
    if (!(nonzero > 0)) return 0;
    return distribution === "laplace"
      ? laplace * meanAbsDeviation(h, 0) * h.count / nonzero
      : gaussian * Math.sqrt(h.sumSquares / nonzero);
  }
  const mu = h.mean;
  return distribution === "laplace"
    ? laplace * meanAbsDeviation(h, mu)
    : gaussian * Math.sqrt(Math.max(h.sumSquares / h.count - mu * mu, 0));
}

/**
 * Ranges for every tensor of a set of statistics, with the same options for all.
 *
 * @param stats Histograms by tensor name.
 * @param options As for {@linkcode rangeFromHistogram}.
 * @returns Ranges by tensor name (empty histograms are skipped).
 * @throws {DataError} When the method is minmax and a histogram's extremes are a sample's (named).
 * @throws {ConfigError} When an option is not one of the allowed values.
 *
 * @example Minmax is exact
 * ```ts
 * import { Histogram } from "@clipq/calibrate/histogram";
 * import { rangesFromStatistics } from "@clipq/calibrate/range-methods";
 * import assert from "node:assert/strict";
 * const stats = new Map([["x", new Histogram().add(new Float32Array([-0.3, 2.71]))]]);
 * const r = rangesFromStatistics(stats, { method: "minmax" }).get("x");
 * assert.deepEqual(r, { min: Math.fround(-0.3), max: Math.fround(2.71), source: "minmax" });
 * ```
 */
export function rangesFromStatistics(
  stats: ReadonlyMap<string, Histogram>,
  options: RangeOptions = {},
): Map<string, TensorRange> {
  const o = check(options);
  const out = new Map<string, TensorRange>();
  for (const [name, h] of stats) {
    if (h.count > 0) out.set(name, rangeOf(h, o, `tensor "${name}"`));
  }
  return out;
}
