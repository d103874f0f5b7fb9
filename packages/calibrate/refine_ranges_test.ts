import assert from "node:assert/strict";
import { ConfigError, emptyGraph, float32, type Graph, ModelError, node } from "@clipq/onnx";
import type { TensorRange } from "@clipq/onnx/metadata";
import { type Grid, refineRanges } from "./refine_ranges.ts";

/** The quantizer's u8 grid: [min, max] widened to hold 0, 255 steps. */
function u8(r: TensorRange): Grid {
  const a = Math.min(r.min, 0), b = Math.max(r.max, 0);
  const scale = Math.fround((b - a) / 255);
  return { scale, zeroPoint: Math.round(-a / scale), dtype: "uint8" };
}

/** x → Relu → h → Mul(h, h) → y: the output weighs large h most. */
function square(): Graph {
  return emptyGraph({
    nodes: [
      node({ name: "r", op: "Relu", inputs: ["x"], outputs: ["h"] }),
      node({ name: "sq", op: "Mul", inputs: ["h", "h"], outputs: ["y"] }),
    ],
    inputs: [{ name: "x", dtype: "float32", shape: [64] }],
    outputs: [{ name: "y", dtype: "float32", shape: [64] }],
  });
}

/** 64 values in [0, 1), and one at 4. */
const feeds = [{
  x: float32([64], Float32Array.from({ length: 64 }, (_, i) => (i === 63 ? 4 : (i % 16) / 16))),
}];

Deno.test("refineRanges() widens a range that clips the values the output weighs most", async () => {
  const r = await refineRanges(square(), feeds, {
    tensors: ["h"],
    ranges: new Map([["h", { min: 0, max: 1, source: "percentile" }]]),
    grid: u8,
  });
  // Outward from 1 while the error falls: 1.4, then 2 (the last factor).
  assert.equal(r.changes.length, 1);
  assert.deepEqual([r.changes[0]!.to.min, r.changes[0]!.to.max], [0, 2]);
  assert.equal(r.changes[0]!.to.source, "percentile, refined by output error");
  // The 4 clipped to 2 instead of 1: (16 − 4)² against (16 − 1)², about 0.64 of the error.
  assert.ok(r.changes[0]!.error.after < 0.7 * r.changes[0]!.error.before);
  assert.equal(r.ranges.get("h")!.max, 2);
  // One run for the ranking, then 0.7 (worse: the search stops that way), 1.4 and 2.
  assert.equal(r.runs, 4);
  assert.deepEqual([...r.errors.keys()], ["h"]);
});

Deno.test("refineRanges() clamps candidates to a tensor's bounds and stops there", async () => {
  // h is a Clip(0, 1.5) folded into its producer: the quantizer would write no wider grid.
  const r = await refineRanges(square(), feeds, {
    tensors: ["h"],
    ranges: new Map([["h", { min: 0, max: 1, source: "percentile" }]]),
    grid: u8,
    bounds: new Map([["h", { min: 0, max: 1.5 }]]),
  });
  assert.deepEqual([r.changes[0]!.to.min, r.changes[0]!.to.max], [0, 1.5]);
  // The ranking, 0.7, 1.4, then 1.5 (2 clamped); nothing past it.
  assert.equal(r.runs, 4);
  const atBound = await refineRanges(square(), feeds, {
    tensors: ["h"],
    ranges: new Map([["h", { min: 0, max: 1, source: "percentile" }]]),
    grid: u8,
    bounds: new Map([["h", { min: 0, max: 1 }]]),
  });
  // Already at its bound: only narrower candidates (0.7) are judged.
  assert.deepEqual([atBound.changes.length, atBound.runs], [0, 2]);
});

Deno.test("refineRanges() narrows a range far wider than the values", async () => {
  const r = await refineRanges(square(), feeds, {
    tensors: ["h"],
    ranges: new Map([["h", { min: 0, max: 40, source: "minmax" }]]),
    grid: u8,
    factors: [0.25, 0.5, 2],
  });
  assert.deepEqual([r.changes[0]!.to.min, r.changes[0]!.to.max], [0, 10]);
});

Deno.test("refineRanges() scales both ends of a two-sided range too", async () => {
  // y = h·h reads h two-sided: [−1, 1] clips the −4.
  const g = emptyGraph({
    nodes: [
      node({ name: "id", op: "Identity", inputs: ["x"], outputs: ["h"] }),
      node({ name: "sq", op: "Mul", inputs: ["h", "h"], outputs: ["y"] }),
    ],
    inputs: [{ name: "x", dtype: "float32", shape: [64] }],
    outputs: [{ name: "y", dtype: "float32", shape: [64] }],
  });
  const x = float32([64], Float32Array.from({ length: 64 }, (_, i) => (i === 0 ? -4 : i / 64)));
  const r = await refineRanges(g, [{ x }], {
    tensors: ["h"],
    ranges: new Map([["h", { min: -1, max: 1, source: "percentile" }]]),
    grid: u8,
  });
  assert.ok(r.changes[0]!.to.min < -1, JSON.stringify(r.changes[0]?.to));
});

Deno.test("refineRanges() keeps a range whose best candidate gains less than minGain", async () => {
  const r = await refineRanges(square(), feeds, {
    tensors: ["h"],
    ranges: new Map([["h", { min: 0, max: 1, source: "percentile" }]]),
    grid: u8,
    minGain: 0.99,
  });
  assert.deepEqual(r.changes, []);
  assert.equal(r.ranges.get("h")!.max, 1);
});

Deno.test("refineRanges() judges a graph output after its DequantizeLinear", async () => {
  const g = emptyGraph({
    nodes: [node({ name: "r", op: "Relu", inputs: ["x"], outputs: ["h"] })],
    inputs: [{ name: "x", dtype: "float32", shape: [64] }],
    outputs: [{ name: "h", dtype: "float32", shape: [64] }],
  });
  const r = await refineRanges(g, feeds, {
    tensors: ["h"],
    ranges: new Map([["h", { min: 0, max: 1, source: "percentile" }]]),
    grid: u8,
  });
  // The 4 clipped to 1 is the error: the range widens.
  assert.ok(r.errors.get("h")! > 0);
  assert.equal(r.changes[0]!.to.max, 2);
});

Deno.test("refineRanges() ranks every tensor but moves only those that matter (screen)", async () => {
  // y = a + b/1000: b's grid barely reaches the output.
  const g = emptyGraph({
    nodes: [
      node({ name: "ra", op: "Relu", inputs: ["x"], outputs: ["a"] }),
      node({ name: "rb", op: "Relu", inputs: ["x"], outputs: ["b"] }),
      node({ name: "s", op: "Mul", inputs: ["b", "k"], outputs: ["c"] }),
      node({ name: "y", op: "Add", inputs: ["a", "c"], outputs: ["y"] }),
    ],
    inputs: [{ name: "x", dtype: "float32", shape: [64] }],
    outputs: [{ name: "y", dtype: "float32", shape: [64] }],
    initializers: new Map([["k", float32([], [1e-3])]]),
  });
  const ranges = new Map([
    ["a", { min: 0, max: 1, source: "percentile" }],
    ["b", { min: 0, max: 1, source: "percentile" }],
  ]);
  const r = await refineRanges(g, feeds, { tensors: ["a", "b"], ranges, grid: u8, screen: 0.01 });
  assert.deepEqual(r.changes.map((c) => c.tensor), ["a"]);
  assert.ok(r.errors.get("b")! < 1e-4 * r.errors.get("a")!);
  // b's ranking run only: a took 1 + 3 runs, b 1.
  assert.equal(r.runs, 5);
});

Deno.test("refineRanges() gives the same ranges on every run", async () => {
  const once = () =>
    refineRanges(square(), feeds, {
      tensors: ["h"],
      ranges: new Map([["h", { min: 0, max: 1.3, source: "mse" }]]),
      grid: u8,
    });
  assert.deepEqual((await once()).changes, (await once()).changes);
});

Deno.test("refineRanges() refuses a tensor without a range, no feeds and bad options", async () => {
  const ranges = new Map([["h", { min: 0, max: 1, source: "percentile" }]]);
  await assert.rejects(
    refineRanges(square(), feeds, { tensors: ["y2"], ranges, grid: u8 }),
    (e) => e instanceof ModelError && /expected a range for tensor "y2"/.test(e.message),
  );
  await assert.rejects(
    refineRanges(square(), [], { tensors: ["h"], ranges, grid: u8 }),
    ConfigError,
  );
  await assert.rejects(
    refineRanges(square(), feeds, { tensors: ["h"], ranges, grid: u8, factors: [0, 2] }),
    /factors: expected positive numbers/,
  );
  await assert.rejects(
    refineRanges(square(), feeds, { tensors: ["h"], ranges, grid: u8, minGain: 1 }),
    /minGain/,
  );
  await assert.rejects(
    refineRanges(square(), feeds, {
      tensors: ["x"],
      ranges: new Map([["x", { min: 0, max: 1, source: "input" }]]),
      grid: u8,
    }),
    /expected tensor "x" to be made by a node/,
  );
});
