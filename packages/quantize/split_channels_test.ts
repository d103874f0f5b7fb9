import assert from "node:assert/strict";
import { seededRandom } from "@clipq/onnx/builder";
import { emptyGraph, type Graph, node } from "@clipq/onnx/graph";
import { float32 } from "@clipq/onnx/tensor";
import { ConfigError } from "@clipq/onnx/errors";
import { channelGroups, splitChannels, splitRegions } from "./split_channels.ts";
import { quantize } from "./quantize.ts";
import { minmaxRanges, randomFeeds, runGraph, sqnr } from "./testdata/ort.ts";

const C = 6;
const group = (v: number) => ({ group: { type: "int" as const, value: v } });
const pads = { pads: { type: "ints" as const, value: [1, 1, 1, 1] } };

/**
 * PP-LCNet's pattern: 1×1 conv → hard-swish x·clip(x + 3, 0, 6)/6 → per-channel affine → 3×3
 * depthwise conv, then Relu, a per-channel Mul and another depthwise conv before a 1×1 conv.
 * Channel 5 of the first conv is 40× wider than the others.
 */
function model(extraReader = false): Graph {
  const r = seededRandom(7);
  const wp = r.uniforms(C * 4, -0.5, 0.5);
  for (let i = 5 * 4; i < 6 * 4; i++) wp[i] = wp[i]! * 40;
  const scalar = (v: number) => float32([], [v]);
  return emptyGraph({
    inputs: [{ name: "x", dtype: "float32", shape: [1, 4, 6, 6] }],
    outputs: [
      { name: "y", dtype: "float32" },
      ...(extraReader ? [{ name: "h", dtype: "float32" as const }] : []),
    ],
    initializers: new Map([
      ["wp", float32([C, 4, 1, 1], wp)],
      ["bp", float32([C], r.uniforms(C, -0.2, 0.2))],
      ["three", scalar(3)],
      ["zero", scalar(0)],
      ["six", scalar(6)],
      ["a", float32([1, C, 1, 1], r.uniforms(C, 0.5, 1.5))],
      ["b", scalar(-0.1)],
      ["wd", float32([C, 1, 3, 3], r.uniforms(C * 9, -0.5, 0.5))],
      ["bd", float32([C], r.uniforms(C, -0.2, 0.2))],
      ["m", float32([1, C, 1, 1], r.uniforms(C, 0.5, 2))],
      ["we", float32([C, 1, 3, 3], r.uniforms(C * 9, -0.5, 0.5))],
      ["wq", float32([2, C, 1, 1], r.uniforms(2 * C, -0.5, 0.5))],
    ]),
    nodes: [
      node({ name: "p", op: "Conv", inputs: ["x", "wp", "bp"], outputs: ["px"] }),
      node({ name: "add3", op: "Add", inputs: ["px", "three"], outputs: ["p3"] }),
      node({ name: "clip", op: "Clip", inputs: ["p3", "zero", "six"], outputs: ["pc"] }),
      node({ name: "mul", op: "Mul", inputs: ["px", "pc"], outputs: ["pm"] }),
      node({ name: "div", op: "Div", inputs: ["pm", "six"], outputs: ["h"] }),
      node({ name: "affine", op: "Mul", inputs: ["h", "a"], outputs: ["ha"] }),
      node({ name: "shift", op: "Add", inputs: ["ha", "b"], outputs: ["hb"] }),
      node({
        name: "d",
        op: "Conv",
        inputs: ["hb", "wd", "bd"],
        outputs: ["dx"],
        attributes: { ...group(C), ...pads },
      }),
      node({ name: "relu", op: "Relu", inputs: ["dx"], outputs: ["dr"] }),
      node({ name: "scale", op: "Mul", inputs: ["dr", "m"], outputs: ["dm"] }),
      node({
        name: "e",
        op: "Conv",
        inputs: ["dm", "we"],
        outputs: ["ex"],
        attributes: { ...group(C), ...pads },
      }),
      node({ name: "q", op: "Conv", inputs: ["ex", "wq"], outputs: ["y"] }),
    ],
  });
}

const feedsList = [1, 2, 3].map((s) => randomFeeds(model(), s));

/** Per-channel min/max of a tensor by running the graph with it as an extra output. */
async function channelRanges(g: Graph, tensor: string) {
  const tapped = { ...g, outputs: [...g.outputs, { name: tensor, dtype: "float32" as const }] };
  const min = new Float32Array(C).fill(Infinity), max = new Float32Array(C).fill(-Infinity);
  for (const f of feedsList) {
    const v = (await runGraph(tapped, f, { level: "disabled" }))[tensor]!;
    const inner = v.length / C;
    for (let i = 0; i < v.length; i++) {
      const c = Math.floor(i / inner);
      min[c] = Math.min(min[c]!, v[i]!);
      max[c] = Math.max(max[c]!, v[i]!);
    }
  }
  return new Map([[tensor, { min, max }]]);
}

Deno.test("splitRegions() finds the conv → hard-swish → depthwise region", () => {
  assert.deepEqual(splitRegions(model()), [{
    conv: "p",
    depthwise: "d",
    tensor: "hb",
    channels: C,
  }]);
});

Deno.test("splitRegions() skips a region whose tensor is read outside it", () => {
  assert.deepEqual(splitRegions(model(true)), []);
});

Deno.test("splitChannels() gives the wide channel its own group and keeps the float outputs", async () => {
  const g = model();
  const { graph, splits } = splitChannels(g, { channelRanges: await channelRanges(g, "hb") });
  assert.equal(splits.length, 1);
  assert.deepEqual(splits[0]!.groups, [[0, 1, 2, 3, 4], [5]]);
  assert.ok(splits[0]!.gainDb > 6, `gain ${splits[0]!.gainDb}`);
  const ops = graph.nodes.map((n) => n.op);
  assert.equal(ops.filter((o) => o === "Concat").length, 1);
  assert.equal(ops.filter((o) => o === "Conv").length, 2 + 2 + 2);
  for (const f of feedsList) {
    const [a, b] = [(await runGraph(g, f)).y!, (await runGraph(graph, f)).y!];
    assert.ok(sqnr(a, b) > 100, `float SQNR ${sqnr(a, b)}`);
  }
});

Deno.test("splitChannels() gives each group's depthwise input its own int8 scale", async () => {
  const g = model();
  const { graph } = splitChannels(g, { channelRanges: await channelRanges(g, "hb") });
  const quantized = async (h: Graph) => {
    const ranges = await minmaxRanges(h, feedsList);
    const q = quantize(h, { ranges, exclude: { head: false } });
    let s = 0;
    for (const f of feedsList) {
      s += sqnr((await runGraph(h, f)).y!, (await runGraph(q.graph, f)).y!);
    }
    return { sqnr: s / feedsList.length, tensors: q.report.tensors };
  };
  const [plain, split] = [await quantized(g), await quantized(graph)];
  const scales = split.tensors.filter((t) => t.name.startsWith("hb/g")).map((t) => t.scale);
  assert.equal(scales.length, 2);
  assert.ok(scales[1]! > 10 * scales[0]!, `scales ${scales}`);
  assert.ok(split.sqnr > plain.sqnr + 3, `int8 SQNR ${plain.sqnr} → ${split.sqnr}`);
});

Deno.test("splitChannels() leaves the graph alone below minGainDb or without ranges", async () => {
  const g = model();
  const even = new Map([["hb", { min: new Float32Array(C), max: new Float32Array(C).fill(1) }]]);
  assert.equal(splitChannels(g, { channelRanges: even }).graph, g);
  assert.equal(splitChannels(g, { channelRanges: new Map() }).graph, g);
  const wide = await channelRanges(g, "hb");
  assert.equal(splitChannels(g, { channelRanges: wide, minGainDb: 60 }).splits.length, 0);
});

Deno.test("splitChannels() checks its options and the ranges' channel count", () => {
  const g = model();
  assert.throws(() => splitChannels(g, { channelRanges: new Map(), groups: 1 }), ConfigError);
  assert.throws(
    () => splitChannels(g, { channelRanges: new Map([["hb", { min: [0], max: [1] }]]) }),
    /channelRanges\.hb.*expected 6 per-channel values; found 1 minima/,
  );
});

Deno.test("channelGroups() cuts sorted spans where the noise power falls most", () => {
  assert.deepEqual(channelGroups([1, 1, 1, 1], 2).groups, [[0, 1, 2, 3]]);
  assert.equal(channelGroups([1, 1, 1, 1], 2).gainDb, 0);
  const three = channelGroups([100, 1, 10, 1, 10, 100], 3);
  assert.deepEqual(three.groups, [[1, 3], [2, 4], [0, 5]]);
  // 6·100² against 2·1² + 2·10² + 2·100²
  assert.equal(three.gainDb.toFixed(3), (10 * Math.log10(60000 / 20202)).toFixed(3));
});
