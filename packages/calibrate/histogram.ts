/**
 * Streaming, mergeable histograms of activation values.
 *
 * The grid is anchored at 0 with a power-of-two bin width `w = 2^e`: a value `x` falls in the
 * absolute bin `floor(x / w)`. When new data does not fit in `bins` bins, the width doubles (often
 * several times at once) and adjacent bins merge: since `floor(floor(x / w) / 2) = floor(x / 2w)`,
 * the merged counts are exactly those a histogram built at `2w` from the start would hold. The
 * width is always the smallest power of two (not below `2^minExponent`) at which the data's
 * [min, max] fits, so it depends only on the data seen, never on the order or on how the data was
 * split: merging shards gives exactly the single-pass counts, extremes and grid (the sum and the
 * sum of squares are float64 sums, equal up to the order of their additions). Memory is `bins`
 * numbers per tensor whatever the number of images.
 *
 * Non-finite values (NaN, ±Infinity) are counted in `nonFinite` and otherwise ignored.
 *
 * A histogram can also be fed a sample of a larger set ({@linkcode Histogram.addSample}): the
 * counts, `min`, `max` and the grid are then the sample's, `population` says how many values it
 * stands for, and `populationMin`/`populationMax` hold the extremes of all of them when they were
 * measured (exactly, inside onnxruntime). The grid depends on the binned values only, so a sample
 * gives the same counts whether or not the extremes of its set were measured beside it: a
 * calibration that measures them (to save statistics that minmax may read later) and one that
 * does not give the histogram methods the same histogram.
 *
 * @module
 */
import { DataError } from "@clipq/onnx/errors";

/** Options of {@linkcode Histogram}. */
export interface HistogramOptions {
  /** Number of bins of the grid (the span is `bins · w`). */
  bins?: number;
  /** The smallest bin width is `2^minExponent`; data of a smaller spread gets this width. */
  minExponent?: number;
}

/** Defaults of {@linkcode HistogramOptions}. */
export const defaults = {
  bins: 2048,
  minExponent: -32,
} satisfies HistogramOptions;

/** The JSON form of a histogram: only the occupied bins are written. */
export interface HistogramJSON {
  /** Number of bins of the grid. */
  bins: number;
  /** Smallest allowed width exponent. */
  minExponent: number;
  /** Bin width exponent: w = 2^exponent. */
  exponent: number;
  /** Absolute index (floor(x / w)) of `counts[0]`. */
  offset: number;
  /** Counts of the occupied bins, from the first to the last. */
  counts: number[];
  /** Number of finite values. */
  count: number;
  /** Number of values exactly 0. */
  zeros: number;
  /** Number of NaN/Infinity values seen. */
  nonFinite: number;
  /**
   * Number of values summarized: `count + nonFinite` when every value was binned, more when only a
   * sample was (absent in files written before sampling existed: then `count + nonFinite`).
   */
  population?: number;
  /** Smallest finite value binned (0 when empty). */
  min: number;
  /** Largest finite value binned (0 when empty). */
  max: number;
  /**
   * Smallest finite value of every value summarized, where a sample was binned and that is below
   * `min`; absent: `min` (see {@linkcode Histogram.populationMin}).
   */
  populationMin?: number;
  /** Largest finite value of every value summarized, where above `max`; absent: `max`. */
  populationMax?: number;
  /** Sum of the finite values. */
  sum: number;
  /** Sum of their squares. */
  sumSquares: number;
  /**
   * False when the extremes of every value were not measured, only a sample's (see
   * {@linkcode Histogram.extremesExact}); absent when they were.
   */
  extremesExact?: false;
}

/**
 * A streaming histogram on a power-of-two grid anchored at 0, exact under merging.
 *
 * @example Merging two shards equals one pass
 * ```ts
 * import { Histogram } from "@clipq/calibrate/histogram";
 * import assert from "node:assert/strict";
 * const a = new Histogram(), b = new Histogram(), all = new Histogram();
 * a.add(new Float32Array([0, 1, 2]));
 * b.add(new Float32Array([-50, 3]));
 * all.add(new Float32Array([0, 1, 2, -50, 3]));
 * assert.deepEqual(a.merge(b).toJSON(), all.toJSON());
 * ```
 */
export class Histogram {
  /** Number of bins of the grid. */
  readonly bins: number;
  /** Smallest allowed width exponent. */
  readonly minExponent: number;
  /** Current bin width exponent (w = 2^exponent). */
  exponent: number;
  /** Absolute bin index of `counts[0]`. */
  offset = 0;
  /** Bin counts (float64 so that counts stay exact far beyond 2^32). */
  counts: Float64Array;
  /** Number of finite values added. */
  count = 0;
  /** Number of NaN/Infinity values seen (not binned). */
  nonFinite = 0;
  /** Number of values summarized (binned or not): above `count + nonFinite` when sampled. */
  population = 0;
  /** Smallest finite value binned (Infinity when empty). */
  min: number = Infinity;
  /** Largest finite value binned (-Infinity when empty). */
  max: number = -Infinity;
  /**
   * Smallest finite value of every value summarized: below `min` when only a sample was binned
   * and the extremes of the whole set were measured beside it (what minmax reads), `min` when
   * every value was binned. Meaningful only while {@linkcode Histogram.extremesExact} holds.
   */
  populationMin: number = Infinity;
  /** Largest finite value of every value summarized (see `populationMin`). */
  populationMax: number = -Infinity;
  /** Number of values exactly 0 (they are exactly representable, so they carry no rounding error). */
  zeros = 0;
  /**
   * Whether `populationMin` and `populationMax` are those of every value summarized. A calibration
   * for a method that reads only the counts (percentile, mse, entropy, aciq) does not measure them
   * where it samples, which spares onnxruntime two passes over every value of every tapped tensor;
   * `minmax` refuses such a histogram. A merge is exact when both sides are.
   */
  extremesExact = true;
  /** Sum of finite values. */
  sum = 0;
  /** Sum of squares of finite values. */
  sumSquares = 0;

  /**
   * Creates an empty histogram.
   *
   * @param options Number of bins and smallest width exponent.
   */
  constructor(options: HistogramOptions = {}) {
    const o = { ...defaults, ...options };
    if (!Number.isInteger(o.bins) || o.bins < 16) {
      throw new RangeError(`Expected bins to be an integer of at least 16 but found ${o.bins}`);
    }
    if (!Number.isInteger(o.minExponent) || o.minExponent < -126 || o.minExponent > 126) {
      throw new RangeError(
        `Expected minExponent to be an integer in [-126, 126] but found ${o.minExponent}`,
      );
    }
    this.bins = o.bins;
    this.minExponent = o.minExponent;
    this.exponent = o.minExponent;
    this.counts = new Float64Array(o.bins);
  }

  /** Bin width. */
  get width(): number {
    return 2 ** this.exponent;
  }

  /** Mean of the finite values (NaN when empty). */
  get mean(): number {
    return this.count ? this.sum / this.count : NaN;
  }

  /**
   * Adds values. Once the grid covers the data seen (after the first batch, typically), this is a
   * single pass with no allocation; a value off the grid widens it once to the finite extremes of
   * the values left (one more pass over them) and binning goes on in the same loop.
   *
   * @param values The values.
   * @returns this.
   */
  add(values: ArrayLike<number>): this {
    this.population += values.length;
    this.addFrom(values, 0);
    // Every value binned is one of the population, so its extremes bound the population's too.
    this.populationMin = Math.min(this.populationMin, this.min);
    this.populationMax = Math.max(this.populationMax, this.max);
    return this;
  }

  /**
   * Adds a sample of a larger set of values whose exact min and max are known (computed over all of
   * them elsewhere, e.g. inside onnxruntime): the counts, `min`, `max` and the grid are the sample's,
   * exactly as {@linkcode Histogram.add} would make them, and `populationMin`/`populationMax` widen
   * to the set's extremes (what minmax reads). Merging stays exact when each shard samples the same
   * way. A non-finite min or max (the set held NaN or ±Infinity) is ignored: the sample's own
   * finite extremes stand in.
   *
   * @param sample The sampled values.
   * @param all The exact min and max of the whole set, and its size.
   * @returns this.
   * @throws {RangeError} When min > max or the population is smaller than the sample.
   *
   * @example The sample's counts and grid; the whole set's extremes beside them
   * ```ts
   * import { Histogram } from "@clipq/calibrate/histogram";
   * import assert from "node:assert/strict";
   * const h = new Histogram().addSample([1, 2], { min: -8, max: 30, population: 1000 });
   * assert.deepEqual([h.min, h.max, h.count, h.population], [1, 2, 2, 1000]);
   * assert.deepEqual([h.populationMin, h.populationMax], [-8, 30]);
   * ```
   */
  addSample(
    sample: ArrayLike<number>,
    all: { min: number; max: number; population: number },
  ): this {
    const { min, max, population } = all;
    if (!(population >= sample.length) || !Number.isInteger(population)) {
      throw new RangeError(
        `Expected a population of at least the sample's ${sample.length} values but found ${population}`,
      );
    }
    const known = Number.isFinite(min) && Number.isFinite(max);
    if (known && min > max) throw new RangeError(`Expected min ≤ max but found [${min}, ${max}]`);
    this.add(sample);
    this.population += population - sample.length;
    if (known) {
      this.populationMin = Math.min(this.populationMin, min);
      this.populationMax = Math.max(this.populationMax, max);
    }
    return this;
  }

  /**
   * Bins values[start…]. The grid comes first from all of them when the histogram is empty (so it
   * depends on the data's extremes only); later, a finite value off the grid widens it to the
   * finite extremes of the values left, once, and the fast loop resumes: only the stretch after
   * such a value costs a second pass (it was two slow passes over all of it, with the bins floored
   * one by one: a tenth of PP-OCRv4 det 320²'s histogramming). NaN and ±Infinity are counted and
   * skipped.
   */
  private addFrom(values: ArrayLike<number>, start: number): void {
    const len = values.length;
    let i = start;
    if (this.count === 0 && i < len) this.widenFor(values, i);
    // The fast loop truncates v/w − offset, exact for float32 values only: a float64 value such as
    // 999.9999999999999 rounded up to the next bin, past the one max names, and its count was
    // lost from the JSON (which then failed to load). Other arrays take the per-value path.
    const fast = values instanceof Float32Array;
    for (;;) {
      if (fast) i = this.binOnGrid(values, i);
      if (i >= len) return;
      const v = values[i]!;
      i++;
      // v − v is 0 only for finite v: one comparison rejects NaN and ±Infinity.
      if (v - v !== 0) {
        this.nonFinite++;
        continue;
      }
      let k = Math.floor(v * 2 ** -this.exponent) - this.offset;
      if (!(k >= 0 && k < this.bins)) {
        this.widenFor(values, i - 1);
        k = Math.floor(v * 2 ** -this.exponent) - this.offset;
      }
      this.counts[k]!++;
      this.count++;
      this.zeros += +(v === 0);
      this.sum += v;
      this.sumSquares += v * v;
      if (v < this.min) this.min = v;
      if (v > this.max) this.max = v;
    }
  }

  /** Widens the grid to cover what it holds and the finite values of values[start…]. */
  private widenFor(values: ArrayLike<number>, start: number): void {
    let lo = Infinity, hi = -Infinity;
    for (let i = start; i < values.length; i++) {
      const v = values[i]!;
      // NaN and ±Infinity are skipped when binned: ±Infinity would stretch the grid without end.
      if (v - v !== 0) continue;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    if (lo > hi) return;
    this.fit(Math.min(lo, this.min), Math.max(hi, this.max));
  }

  /**
   * Bins values[start…] while they lie on the grid, two per step, each with its own sums and
   * extremes (one running sum is a chain of dependent additions that sets the pace), the bin
   * truncated rather than floored once it is known to be ≥ 0, as in addSample.
   *
   * @returns Where it stopped: the first of the pair that left the grid, or the end.
   */
  private binOnGrid(values: ArrayLike<number>, start: number): number {
    const len = values.length;
    const counts = this.counts, n = this.bins, off = this.offset;
    const inv = 2 ** -this.exponent;
    let lo = this.min, hi = this.max, lo2 = lo, hi2 = hi;
    let s = 0, s2 = 0, t = 0, t2 = 0, z = 0;
    let i = start;
    for (const pairs = start + ((len - start) & ~1); i < pairs; i += 2) {
      const v = values[i]!, u = values[i + 1]!;
      const a = v * inv - off, b = u * inv - off;
      // NaN fails every comparison, so non-finite values also leave the fast path.
      if (!(a >= 0 && a < n && b >= 0 && b < n)) break;
      counts[a | 0]!++;
      counts[b | 0]!++;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
      if (u < lo2) lo2 = u;
      if (u > hi2) hi2 = u;
      // Branch-free: post-ReLU data is half zeros, and a branch on it mispredicts (3× slower).
      z += +(v === 0) + +(u === 0);
      s += v;
      t += u;
      s2 += v * v;
      t2 += u * u;
    }
    if (i === len - 1) {
      const v = values[i]!;
      const a = v * inv - off;
      if (a >= 0 && a < n) {
        counts[a | 0]!++;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
        z += +(v === 0);
        s += v;
        s2 += v * v;
        i++;
      }
    }
    this.count += i - start;
    this.zeros += z;
    this.sum += s + t;
    this.sumSquares += s2 + t2;
    this.min = Math.min(lo, lo2);
    this.max = Math.max(hi, hi2);
    return i;
  }

  /**
   * Merges another histogram into this one (exact: the result equals one pass over both inputs).
   *
   * @param other A histogram with the same number of bins and minimum exponent.
   * @returns this.
   * @throws {RangeError} When the grids differ in bins or minExponent.
   */
  merge(other: Histogram): this {
    if (other.bins !== this.bins || other.minExponent !== this.minExponent) {
      throw new RangeError(
        `Expected histograms with the same grid (bins ${this.bins}, minExponent ${this.minExponent}) but found bins ${other.bins}, minExponent ${other.minExponent}`,
      );
    }
    this.nonFinite += other.nonFinite;
    this.population += other.population;
    this.extremesExact &&= other.extremesExact;
    this.populationMin = Math.min(this.populationMin, other.populationMin);
    this.populationMax = Math.max(this.populationMax, other.populationMax);
    if (other.count === 0) return this;
    this.fit(Math.min(this.min, other.min), Math.max(this.max, other.max), other.exponent);
    const shift = this.exponent - other.exponent;
    const f = 2 ** shift;
    for (let i = 0; i < other.counts.length; i++) {
      const c = other.counts[i]!;
      if (c === 0) continue;
      this.counts[Math.floor((other.offset + i) / f) - this.offset]! += c;
    }
    this.count += other.count;
    this.zeros += other.zeros;
    this.sum += other.sum;
    this.sumSquares += other.sumSquares;
    this.min = Math.min(this.min, other.min);
    this.max = Math.max(this.max, other.max);
    return this;
  }

  /**
   * Widens the grid (smallest exponent ≥ the current one and `atLeast` at which [lo, hi] fits) and
   * moves the window so that it covers [lo, hi].
   */
  private fit(lo: number, hi: number, atLeast = this.minExponent): void {
    const n = this.bins;
    // Any exponent with 2^e ≤ (hi − lo)/n cannot fit, so starting there skips hopeless tries.
    const spread = hi - lo;
    let e = Math.max(
      this.exponent,
      atLeast,
      spread > 0 ? Math.floor(Math.log2(spread / n)) : this.minExponent,
    );
    while (Math.floor(hi * 2 ** -e) - Math.floor(lo * 2 ** -e) + 1 > n) e++;
    const first = Math.floor(lo * 2 ** -e);
    const last = Math.floor(hi * 2 ** -e);
    const f = 2 ** (e - this.exponent);
    if (e === this.exponent && first >= this.offset && last < this.offset + n) return;
    const old = this.counts;
    const oldOffset = this.offset;
    // Keep the window where it is when it still covers the data: fewer copies in the common case.
    let offset = oldOffset;
    if (e !== this.exponent || first < offset || last >= offset + n) offset = first;
    const next = new Float64Array(n);
    if (this.count > 0) {
      for (let i = 0; i < n; i++) {
        const c = old[i]!;
        if (c !== 0) next[Math.floor((oldOffset + i) / f) - offset]! += c;
      }
    }
    this.counts = next;
    this.offset = offset;
    this.exponent = e;
  }

  /**
   * Index range [first, last] (into `counts`) of the occupied bins; [0, -1] when empty.
   *
   * @returns The first and last occupied positions.
   */
  occupied(): [number, number] {
    if (this.count === 0) return [0, -1];
    const w = this.width;
    return [Math.floor(this.min / w) - this.offset, Math.floor(this.max / w) - this.offset];
  }

  /**
   * The JSON form (only occupied bins; the same data gives the same JSON however it was split).
   *
   * @returns A plain object.
   */
  toJSON(): HistogramJSON {
    const [first, last] = this.occupied();
    const empty = this.count === 0;
    return {
      bins: this.bins,
      minExponent: this.minExponent,
      exponent: this.exponent,
      offset: empty ? 0 : this.offset + first,
      counts: empty ? [] : Array.from(this.counts.subarray(first, last + 1)),
      count: this.count,
      zeros: this.zeros,
      nonFinite: this.nonFinite,
      population: this.population,
      min: empty ? 0 : this.min,
      max: empty ? 0 : this.max,
      ...(!empty && this.extremesExact && this.populationMin < this.min
        ? { populationMin: this.populationMin }
        : {}),
      ...(!empty && this.extremesExact && this.populationMax > this.max
        ? { populationMax: this.populationMax }
        : {}),
      sum: this.sum,
      sumSquares: this.sumSquares,
      ...(this.extremesExact ? {} : { extremesExact: false as const }),
    };
  }

  /**
   * Rebuilds a histogram from its JSON form.
   *
   * @param json What {@linkcode Histogram.toJSON} wrote.
   * @param what Name for error messages (a file or tensor).
   * @returns The histogram.
   * @throws {DataError} When the JSON is not a histogram this class wrote.
   */
  static fromJSON(json: unknown, what = "histogram"): Histogram {
    const j = json as Partial<HistogramJSON> | null;
    const num = (k: keyof HistogramJSON) => {
      const v = j?.[k];
      if (typeof v !== "number" || !Number.isFinite(v)) {
        throw new DataError(`${what}: expected a finite number at "${k}" but found ${String(v)}`);
      }
      return v;
    };
    if (!j || typeof j !== "object" || !Array.isArray(j.counts)) {
      throw new DataError(`${what}: expected a histogram object with a counts array`);
    }
    const int = (k: keyof HistogramJSON, lo: number, hi: number) => {
      const v = num(k);
      if (!Number.isInteger(v) || v < lo || v > hi) {
        throw new DataError(
          `${what}: expected an integer in [${lo}, ${hi}] at "${k}" but found ${v}`,
        );
      }
      return v;
    };
    const h = new Histogram({
      bins: int("bins", 16, 1 << 24),
      minExponent: int("minExponent", -126, 126),
    });
    const count = int("count", 0, Number.MAX_SAFE_INTEGER);
    // A width 2^exponent that float64 holds. (A hand-edited offset of 10^18, its min and max left
    // as they were, had sent the range methods into a loop no signal could stop: the check of
    // min and max against the offset and counts below refuses it.)
    h.exponent = int("exponent", h.minExponent, 1023);
    h.nonFinite = int("nonFinite", 0, Number.MAX_SAFE_INTEGER);
    h.population = j.population === undefined
      ? count + h.nonFinite
      : int("population", count + h.nonFinite, Number.MAX_SAFE_INTEGER);
    h.zeros = int("zeros", 0, count);
    h.sum = num("sum");
    h.sumSquares = num("sumSquares");
    h.extremesExact = j.extremesExact !== false;
    if (count > 0) {
      if (j.counts.length > h.bins || j.counts.length === 0) {
        throw new DataError(
          `${what}: expected 1..${h.bins} counts but found ${j.counts.length}`,
        );
      }
      // Any integer: a constant tensor keeps the finest width, so its offset is value · 2^32.
      h.offset = num("offset");
      if (!Number.isInteger(h.offset)) {
        throw new DataError(`${what}: expected an integer at "offset" but found ${h.offset}`);
      }
      h.min = num("min");
      h.max = num("max");
      // What toJSON writes: the first and last counts are the bins of min and max.
      const w = h.width;
      if (
        !(h.min <= h.max) || Math.floor(h.min / w) !== h.offset ||
        Math.floor(h.max / w) !== h.offset + j.counts.length - 1
      ) {
        throw new DataError(
          `${what}: expected min and max in the first and last of the ${j.counts.length} counts from bin ${h.offset} (width 2^${h.exponent}) but found [${h.min}, ${h.max}]`,
        );
      }
      h.populationMin = j.populationMin === undefined ? h.min : num("populationMin");
      h.populationMax = j.populationMax === undefined ? h.max : num("populationMax");
      if (!(h.populationMin <= h.min && h.populationMax >= h.max)) {
        throw new DataError(
          `${what}: expected populationMin ≤ min and populationMax ≥ max but found ${h.populationMin} and ${h.populationMax} around [${h.min}, ${h.max}]`,
        );
      }
      let total = 0;
      j.counts.forEach((c, i) => {
        if (typeof c !== "number" || !(c >= 0) || !Number.isFinite(c)) {
          throw new DataError(`${what}: expected counts[${i}] ≥ 0 but found ${String(c)}`);
        }
        h.counts[i] = c;
        total += c;
      });
      if (total !== count) {
        throw new DataError(
          `${what}: expected counts summing to count ${count} but found ${total}`,
        );
      }
      h.count = count;
    }
    return h;
  }

  /**
   * A copy.
   *
   * @returns A new histogram with the same contents.
   */
  clone(): Histogram {
    return Histogram.fromJSON(this.toJSON());
  }
}
