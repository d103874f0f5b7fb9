import assert from "node:assert/strict";
import { mulberry32 } from "@clipq/onnx/random";
import { entropyCut } from "./_entropy.ts";

/** The plain search: every candidate's KL divergence summed bin by bin. */
function reference(bins: Float64Array, total: number, levels: number): number {
  const eps = 1e-4;
  const nbins = bins.length;
  let tail = 0;
  for (let j = levels; j < nbins; j++) tail += bins[j]!;
  let bestKl = Infinity, bestI = nbins;
  for (let i = levels; i <= nbins; i++) {
    if (i > levels) tail -= bins[i - 1]!;
    const qCounts = new Float64Array(levels), qNonzero = new Float64Array(levels);
    let inside = 0;
    for (let k = 0; k < i; k++) {
      const c = bins[k]!;
      if (c === 0) continue;
      const l = Math.floor((k * levels) / i);
      qCounts[l]! += c;
      qNonzero[l]!++;
      inside += c;
    }
    if (inside === 0) continue;
    let nonzero = 0;
    for (let l = 0; l < levels; l++) nonzero += qNonzero[l]!;
    const eps1 = (eps * (i - nonzero)) / nonzero;
    let kl = 0;
    for (let k = 0; k < i; k++) {
      let p = bins[k]!;
      if (k === i - 1) p += tail;
      if (p === 0) continue;
      p /= total;
      const l = Math.floor((k * levels) / i);
      const q = bins[k] === 0 ? eps : qCounts[l]! / qNonzero[l]! / inside - eps1;
      kl += p * Math.log(p / Math.max(q, eps * 1e-3));
    }
    if (kl < bestKl) [bestKl, bestI] = [kl, i];
  }
  return bestI;
}

Deno.test("entropyCut() keeps the bins the plain per-bin KL search keeps", () => {
  const random = mulberry32(11);
  const shapes: ((k: number, n: number) => number)[] = [
    // Bell-shaped, a long thin tail, mostly empty bins, and a few spikes over a floor.
    (k, n) => Math.round(1e4 * Math.exp(-(((k / n) * 6) ** 2)) * (0.5 + random())),
    (k, n) => Math.round(5e3 * Math.exp(-(k / n) * 12) * random()),
    () => (random() < 0.1 ? Math.floor(random() * 50) : 0),
    () => (random() < 0.02 ? 1e5 : Math.floor(random() * 3)),
  ];
  for (let c = 0; c < 24; c++) {
    const n = 200 + Math.floor(random() * 500);
    const shape = shapes[c % shapes.length]!;
    const bins = Float64Array.from({ length: n }, (_, k) => shape(k, n));
    bins[n - 1] = Math.max(bins[n - 1]!, 1); // a tail ends at its largest value
    const total = bins.reduce((a, b) => a + b, 0);
    for (const levels of [8, 64, 128]) {
      if (n <= levels) continue;
      assert.equal(
        entropyCut(bins, { total, levels }),
        reference(bins, total, levels),
        `case ${c}, ${levels} levels`,
      );
    }
  }
});
