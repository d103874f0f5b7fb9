import assert from "node:assert/strict";
import { ModelError } from "@clipq/onnx/errors";
import { float32, type Tensor } from "@clipq/onnx/tensor";
import type { InputCovariance } from "@clipq/onnx/metadata";
import { mulberry32 } from "@clipq/onnx/random";
import { ModelBuilder } from "@clipq/onnx/builder";
import { roundWithCovariance } from "./gptq.ts";
import { quantizeWeight } from "./weights.ts";
import { quantize } from "./quantize.ts";
import { minmaxRanges, runGraph, sqnr } from "./testdata/ort.ts";

/** n×n second moment of `count` seeded vectors x = z·A with a few latent factors (correlated). */
function correlatedMoment(n: number, seed: number, latent = 3): Float64Array {
  const random = mulberry32(seed);
  const a = Array.from({ length: latent * n }, () => random() * 2 - 1);
  const c = new Float64Array(n * n);
  const count = 400;
  for (let s = 0; s < count; s++) {
    const z = Array.from({ length: latent }, () => random() * 2 - 1);
    const x = Array.from({ length: n }, (_, i) => {
      let v = 0.05 * (random() - 0.5); // a little independent noise keeps C invertible
      for (let k = 0; k < latent; k++) v += z[k]! * a[k * n + i]!;
      return v;
    });
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) c[i * n + j]! += x[i]! * x[j]! / count;
  }
  return c;
}

function identity(n: number): Float64Array {
  const c = new Float64Array(n * n);
  for (let i = 0; i < n; i++) c[i * n + i] = 1;
  return c;
}

function covariance(
  dim: number,
  matrices: Float64Array[],
  o: { groups?: number; blocks?: number[] } = {},
): InputCovariance {
  return { groups: o.groups ?? 1, dim, blocks: o.blocks ?? [0, dim], matrices, samples: 1 };
}

function randomWeight(dims: number[], seed: number): Tensor {
  const random = mulberry32(seed);
  const n = dims.reduce((a, b) => a * b, 1);
  return float32(dims, Array.from({ length: n }, () => random() * 2 - 1));
}

/** Σ over rows of eᵀ·C·e, rows along axis 0 of a [rows, n] weight. */
function outputError(w: Tensor, q: Int8Array, scales: Float32Array, c: Float64Array): number {
  const [rows, n] = w.dims as [number, number];
  const data = w.data as Float32Array;
  let total = 0;
  for (let r = 0; r < rows; r++) {
    const e = Array.from({ length: n }, (_, i) => data[r * n + i]! - q[r * n + i]! * scales[r]!);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) total += e[i]! * c[i * n + j]! * e[j]!;
  }
  return total;
}

Deno.test("roundWithCovariance() is nearest rounding when the inputs are uncorrelated and equal in energy", () => {
  const w = randomWeight([8, 12], 1);
  const q = quantizeWeight(w, { axis: 0 });
  const r = roundWithCovariance(w, q.scales, covariance(12, [identity(12)]), { axis: 0 });
  assert.deepEqual([...r.values], [...q.values.data]);
  assert.equal(r.error, r.nearestError);
});

Deno.test("roundWithCovariance() lowers the output error on correlated inputs, and never raises a row's", () => {
  for (const seed of [1, 2, 3]) {
    const w = randomWeight([16, 24], seed);
    const q = quantizeWeight(w, { axis: 0 });
    const c = correlatedMoment(24, seed + 10);
    const r = roundWithCovariance(w, q.scales, covariance(24, [c]), { axis: 0 });
    const near = outputError(w, q.values.data as Int8Array, q.scales, c);
    const mine = outputError(w, r.values, q.scales, c);
    assert.ok(Math.abs(r.nearestError - near) <= 1e-9 * near, `${r.nearestError} vs ${near}`);
    assert.ok(Math.abs(r.error - mine) <= 1e-9 * near, `${r.error} vs ${mine}`);
    assert.ok(mine < near / 3, `seed ${seed}: ${mine} vs nearest ${near}`);
    // Row by row: no worse than nearest.
    for (let row = 0; row < 16; row++) {
      const pick = (v: ArrayLike<number>) =>
        float32([1, 24], Array.from({ length: 24 }, (_, i) => v[row * 24 + i]!));
      const one = Float32Array.of(q.scales[row]!);
      const e1 = outputError(pick(w.data as Float32Array), pick(r.values).data as never, one, c);
      const e0 = outputError(
        pick(w.data as Float32Array),
        pick(q.values.data as Int8Array).data as never,
        one,
        c,
      );
      assert.ok(e1 <= e0 * (1 + 1e-12), `row ${row}: ${e1} > ${e0}`);
    }
    for (const v of r.values) assert.ok(v >= -127 && v <= 127);
  }
});

Deno.test("roundWithCovariance() reads rows along axis 1 of a [K, N] weight as along axis 0 of its transpose", () => {
  const wt = randomWeight([6, 10], 4); // [N, K]
  const [n, k] = [6, 10];
  const w = float32(
    [k, n],
    Array.from({ length: k * n }, (_, i) => {
      const [kk, nn] = [Math.floor(i / n), i % n];
      return (wt.data as Float32Array)[nn * k + kk]!;
    }),
  );
  const c = covariance(k, [correlatedMoment(k, 5)]);
  const scales = quantizeWeight(wt, { axis: 0 }).scales;
  const byRows = roundWithCovariance(wt, scales, c, { axis: 0 });
  const byCols = roundWithCovariance(w, scales, c, { axis: 1 });
  for (let kk = 0; kk < k; kk++) {
    for (let nn = 0; nn < n; nn++) {
      assert.equal(byCols.values[kk * n + nn], byRows.values[nn * k + kk]);
    }
  }
  assert.equal(byCols.error, byRows.error);
});

Deno.test("roundWithCovariance() gives each group its own moment and compensates only within a block", () => {
  const corr = correlatedMoment(4, 7);
  const sub = (from: number) =>
    Float64Array.from(
      { length: 4 },
      (_, i) => corr[(from + Math.floor(i / 2)) * 4 + from + (i % 2)]!,
    );
  const [top, bottom] = [sub(0), sub(2)];
  const rows = (w: Tensor, from: number, to: number, cols: [number, number]) =>
    float32(
      [to - from, cols[1] - cols[0]],
      Array.from({ length: (to - from) * (cols[1] - cols[0]) }, (_, i) => {
        const n = cols[1] - cols[0];
        return (w.data as Float32Array)[
          (from + Math.floor(i / n)) * w.dims[1]! + cols[0] + (i % n)
        ]!;
      }),
    );
  // A grouped layer: 4 rows in 2 groups of 2 reading 2 values each; group 0's moment is the identity.
  const w = randomWeight([4, 2], 6);
  const scales = quantizeWeight(w, { axis: 0 }).scales;
  const grouped = roundWithCovariance(w, scales, covariance(2, [identity(2), top], { groups: 2 }), {
    axis: 0,
  });
  const nearest = quantizeWeight(w, { axis: 0 }).values.data as Int8Array;
  assert.deepEqual([...grouped.values.slice(0, 4)], [...nearest.slice(0, 4)]);
  const second = roundWithCovariance(rows(w, 2, 4, [0, 2]), scales.slice(2), covariance(2, [top]), {
    axis: 0,
  });
  assert.deepEqual([...grouped.values.slice(4)], [...second.values]);
  // Blocks: with the moment between them cut away, each block is rounded as on its own.
  const wide = randomWeight([3, 4], 9);
  const s3 = quantizeWeight(wide, { axis: 0 }).scales;
  const blocked = roundWithCovariance(
    wide,
    s3,
    covariance(4, [top, bottom], { blocks: [0, 2, 4] }),
    { axis: 0 },
  );
  const left = roundWithCovariance(rows(wide, 0, 3, [0, 2]), s3, covariance(2, [top]), { axis: 0 });
  const right = roundWithCovariance(rows(wide, 0, 3, [2, 4]), s3, covariance(2, [bottom]), {
    axis: 0,
  });
  for (let r = 0; r < 3; r++) {
    assert.deepEqual(
      [...blocked.values.slice(r * 4, r * 4 + 4)],
      [...left.values.slice(r * 2, r * 2 + 2), ...right.values.slice(r * 2, r * 2 + 2)],
    );
  }
  assert.ok(Math.abs(blocked.error - (left.error + right.error)) < 1e-12);
});

Deno.test("roundWithCovariance() names what does not fit", () => {
  const w = randomWeight([4, 6], 8);
  const s = quantizeWeight(w, { axis: 0 }).scales;
  assert.throws(
    () => roundWithCovariance(w, s, covariance(5, [identity(5)]), { axis: 0 }),
    (e) => e instanceof ModelError && /6 values a row.*found dim 5.*\[4,6\]/.test(e.message),
  );
  assert.throws(
    () => roundWithCovariance(w, s, covariance(6, [identity(6)], { groups: 3 }), { axis: 0 }),
    ModelError,
  );
  assert.throws(
    () => roundWithCovariance(w, s, covariance(6, [identity(5)]), { axis: 0 }),
    /6×6 covariance block/,
  );
});

Deno.test("quantize() with input covariances rounds by GPTQ: a MatMul on correlated inputs comes closer to float in onnxruntime", async () => {
  const b = new ModelBuilder({ seed: 21 });
  const x = b.input("x", [64, 48]);
  b.output(b.matmul(x, { out: 32, name: "fc" }), "y");
  const g = b.build();
  // Inputs with 4 latent factors: a few directions carry the energy.
  const random = mulberry32(3);
  const mix = Array.from({ length: 4 * 48 }, () => random() * 2 - 1);
  const sample = () => {
    const data = new Float32Array(64 * 48);
    for (let r = 0; r < 64; r++) {
      const z = Array.from({ length: 4 }, () => random() * 2 - 1);
      for (let i = 0; i < 48; i++) {
        let v = 0.02 * (random() - 0.5);
        for (let k = 0; k < 4; k++) v += z[k]! * mix[k * 48 + i]!;
        data[r * 48 + i] = v;
      }
    }
    return { x: data };
  };
  const calibration = sample(), held = sample();
  const c = new Float64Array(48 * 48);
  for (let r = 0; r < 64; r++) {
    for (let i = 0; i < 48; i++) {
      for (let j = 0; j < 48; j++) {
        c[i * 48 + j]! += calibration.x[r * 48 + i]! * calibration.x[r * 48 + j]! / 64;
      }
    }
  }
  const ranges = await minmaxRanges(g, [calibration, held]);
  const ref = (await runGraph(g, held)).y!;
  // 7-bit weights: their rounding, not the inputs' 8-bit grid, is what limits the output here.
  const nearest = quantize(g, { ranges, reduceRange: true });
  const gptq = quantize(g, {
    ranges,
    reduceRange: true,
    inputCovariances: new Map([["fc", covariance(48, [c])]]),
  });
  const [dbNearest, dbGptq] = [
    sqnr(ref, (await runGraph(nearest.graph, held)).y!),
    sqnr(ref, (await runGraph(gptq.graph, held)).y!),
  ];
  assert.ok(
    dbGptq > dbNearest + 3,
    `GPTQ ${dbGptq.toFixed(1)} dB vs nearest ${dbNearest.toFixed(1)} dB`,
  );
  const report = gptq.report.weights.find((w) => w.node === "fc")!;
  assert.equal(report.rounding, "gptq");
  assert.ok(report.outputError!.gptq < report.outputError!.nearest);
  assert.equal(nearest.report.weights[0]!.rounding, "nearest");
  // Per-tensor scales and the QOperator form round the same way.
  const inputCovariances = new Map([["fc", covariance(48, [c])]]);
  for (const options of [{ weights: "per-tensor" }, { format: "qoperator" }] as const) {
    const [n, q] = [
      quantize(g, { ranges, reduceRange: true, ...options }),
      quantize(g, { ranges, reduceRange: true, inputCovariances, ...options }),
    ];
    const [dbN, dbQ] = [
      sqnr(ref, (await runGraph(n.graph, held)).y!),
      sqnr(ref, (await runGraph(q.graph, held)).y!),
    ];
    assert.ok(dbQ > dbN + 2, `${JSON.stringify(options)}: GPTQ ${dbQ} dB vs nearest ${dbN} dB`);
    assert.equal(q.report.weights[0]!.rounding, "gptq");
  }
  assert.throws(
    () => quantize(g, { ranges, inputCovariances: new Map([["nope", covariance(48, [c])]]) }),
    /inputCovariances: expected a node named "nope"/,
  );
});

Deno.test("roundWithCovariance() reuses a rounding only for the same weight, scales and options", () => {
  const w = randomWeight([6, 16], 12);
  const scales = quantizeWeight(w, { axis: 0 }).scales;
  const cov = covariance(16, [correlatedMoment(16, 13)]);
  const first = roundWithCovariance(w, scales, cov, { axis: 0 });
  first.values.fill(0); // the caller's copy: changing it changes nothing remembered
  const again = roundWithCovariance(w, scales, cov, { axis: 0 });
  assert.notDeepEqual([...again.values], [...first.values]);
  const fresh = roundWithCovariance(w, scales, { ...cov }, { axis: 0 });
  assert.deepEqual([...again.values], [...fresh.values]);
  // Another weight, other scales or qmax: computed anew.
  const moved = float32(
    [6, 16],
    Float32Array.from(w.data as Float32Array, (v, i) => i === 5 ? v * 0.5 : v),
  );
  const m = roundWithCovariance(moved, scales, cov, { axis: 0 });
  const mFresh = roundWithCovariance(moved, scales, { ...cov }, { axis: 0 });
  assert.deepEqual([...m.values], [...mFresh.values]);
  const q63 = roundWithCovariance(w, scales, cov, { axis: 0, qmax: 63 });
  assert.ok(q63.values.every((v) => v >= -63 && v <= 63));
  assert.ok([...q63.values].some((v, i) => v !== again.values[i]));
});
