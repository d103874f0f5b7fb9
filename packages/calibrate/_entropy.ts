/**
 * The entropy (KL divergence) calibration's search for one tail of a histogram, apart from the
 * range methods so that its test can hold it against the plain O(bins²) search.
 *
 * @module
 */

const ENTROPY_EPS = 1e-4;

/**
 * TensorRT-style entropy calibration of one tail with `levels` quantization levels (more bins than
 * levels): for each candidate i (the first i bins, the tail beyond folded into bin i − 1), the KL
 * divergence of P from Q (the i bins merged into `levels` levels and spread back evenly over each
 * level's non-empty bins), smallest wins.
 *
 * Each candidate takes O(levels) instead of O(i): within a level every non-empty bin but the last
 * gets the same q, so its bins' Σ p·log(p/q) is (Σ c·log c − Σ c·(log T + log q)) / T from prefix
 * sums of c, c·log c and the non-empty count (T the total). The per-bin loop cost 20–40 ms a tail
 * at 2048 bins (YOLOv3-tiny's 23 tensors: 1.5 s); this one chose the same clip on all 1227 tails
 * and level counts of NanoDet's and PP-OCRv4 det's calibration histograms, 4× faster.
 *
 * @param bins Magnitude counts of the tail, bin 0 first.
 * @param options The tail's total count and the number of levels.
 * @returns The number of bins to keep (the clip is that many bin widths): levels … bins.length.
 */
export function entropyCut(
  bins: Float64Array,
  options: { total: number; levels: number },
): number {
  const { total, levels } = options;
  const nbins = bins.length;
  // Over bins [0, k): counts, non-empty bins, c·log c.
  const sums = new Float64Array(nbins + 1);
  const nonEmpty = new Float64Array(nbins + 1);
  const cLogC = new Float64Array(nbins + 1);
  for (let k = 0; k < nbins; k++) {
    const c = bins[k]!;
    sums[k + 1] = sums[k]! + c;
    nonEmpty[k + 1] = nonEmpty[k]! + (c > 0 ? 1 : 0);
    cLogC[k + 1] = cLogC[k]! + (c > 0 ? c * Math.log(c) : 0);
  }
  const logTotal = Math.log(total);
  // Empty bins of Q get a small probability taken from the others (as onnxruntime's calibrator
  // smooths), so folding the tail into an empty bin costs a finite, large divergence.
  const qFloor = ENTROPY_EPS * 1e-3;
  let bestKl = Infinity, bestI = nbins;
  for (let i = levels; i <= nbins; i++) {
    const inside = sums[i]!;
    if (inside === 0) continue;
    const tail = sums[nbins]! - inside;
    const nonzero = nonEmpty[i]!;
    const eps1 = (ENTROPY_EPS * (i - nonzero)) / nonzero;
    const last = i - 1;
    let kl = 0;
    // Level l holds the bins k with floor(k·levels / i) = l:
    // [ceil(l·i / levels), ceil((l+1)·i / levels)).
    let start = 0;
    for (let l = 0; l < levels; l++) {
      const end = Math.ceil(((l + 1) * i) / levels);
      const n = nonEmpty[end]! - nonEmpty[start]!;
      const q = n > 0
        ? Math.max((sums[end]! - sums[start]!) / n / inside - eps1, qFloor)
        : ENTROPY_EPS;
      const top = end > last ? last : end;
      const c = sums[top]! - sums[start]!;
      if (c > 0) kl += (cLogC[top]! - cLogC[start]! - c * (logTotal + Math.log(q))) / total;
      if (end > last) {
        // The candidate's last bin, holding the folded tail too.
        const own = bins[last]!;
        const p = (own + tail) / total;
        if (p > 0) kl += p * Math.log(p / (own === 0 ? ENTROPY_EPS : q));
      }
      start = end;
    }
    if (kl < bestKl) {
      bestKl = kl;
      bestI = i;
    }
  }
  return bestI;
}
