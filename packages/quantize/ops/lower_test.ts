import assert from "node:assert/strict";
import { ModelBuilder } from "@clipq/onnx/builder";
import { decode } from "@clipq/onnx/proto";
import type { Graph } from "@clipq/onnx/graph";
import { float32, int64, toFloat32 } from "@clipq/onnx/tensor";
import { inferShapes } from "@clipq/onnx/shapes";
import { lowerForOrt } from "./lower.ts";
import { floatTwin, quantize } from "../quantize.ts";
import { planQuantization } from "../plan.ts";
import { countOps, minmaxRanges, randomFeeds, runGraph, sqnr } from "../testdata/ort.ts";

/** DBNet's head: conv → ConvTranspose 2×2/2 → Relu → ConvTranspose 2×2/2 → Sigmoid. */
function dbHead(): Graph {
  const b = new ModelBuilder({ seed: 5 });
  let x = b.relu(b.conv(b.input("x", [1, 3, 8, 8]), { outChannels: 8, kernel: 3, pad: 1 }));
  x = b.relu(b.convTranspose(x, { outChannels: 6, kernel: 2, stride: 2 }));
  x = b.convTranspose(x, { outChannels: 1, kernel: 2, stride: 2 });
  b.output(b.sigmoid(x), "prob");
  return b.build();
}

async function optimized(graph: Graph, feeds: Record<string, Float32Array>): Promise<Graph> {
  const dir = await Deno.makeTempDir();
  try {
    await runGraph(graph, feeds, { optimizedPath: `${dir}/o.onnx` });
    return decode(await Deno.readFile(`${dir}/o.onnx`));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function optimizedOps(graph: Graph, feeds: Record<string, Float32Array>) {
  return countOps(await optimized(graph, feeds));
}

Deno.test("lowerForOrt() turns a ConvTranspose chain into 1×1 convs and one DepthToSpace, same outputs", async () => {
  const g = dbHead();
  const { graph, aliases, notes } = lowerForOrt(g);
  const ops = countOps(graph);
  assert.equal(ops["ConvTranspose"], undefined);
  assert.equal(ops["DepthToSpace"], 1);
  const d2s = graph.nodes.find((n) => n.op === "DepthToSpace")!;
  assert.equal(d2s.attributes.blocksize?.value, 4);
  assert.equal(d2s.outputs[0], g.nodes.find((n) => n.op === "Sigmoid")!.outputs[0]);
  assert.equal(notes.length, 3); // the RGB input pad and the two ConvTransposes
  // Every new tensor stands for an original one.
  const original = new Set(g.nodes.flatMap((n) => [...n.inputs, ...n.outputs]));
  for (const from of aliases.values()) assert.ok(original.has(from), from);
  const feeds = randomFeeds(g, 3);
  const [a, b] = [(await runGraph(g, feeds)).prob!, (await runGraph(graph, feeds)).prob!];
  assert.equal(a.length, 32 * 32);
  for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i]! - b[i]!) < 1e-5, `${i}`);
});

Deno.test("lowerForOrt() pads a 3-channel graph input to 4 channels with zero weights, same outputs", async () => {
  const b = new ModelBuilder({ seed: 2 });
  b.output(b.conv(b.input("x", [1, 3, 6, 6]), { outChannels: 4, kernel: 3, stride: 2 }), "y");
  const g = b.build();
  const { graph } = lowerForOrt(g);
  const conv = graph.nodes.find((n) => n.op === "Conv")!;
  assert.deepEqual(graph.initializers.get(conv.inputs[1]!)!.dims, [4, 4, 3, 3]);
  const feeds = randomFeeds(g, 1);
  const [y0, y1] = [(await runGraph(g, feeds)).y!, (await runGraph(graph, feeds)).y!];
  for (let i = 0; i < y0.length; i++) assert.ok(Math.abs(y0[i]! - y1[i]!) < 1e-5);
  // Excluding the conv leaves it alone.
  assert.equal(lowerForOrt(g, { exclude: { names: [g.nodes[0]!.name], ops: [] } }).graph, g);
});

Deno.test("quantize() leaves onnxruntime no float ConvTranspose and keeps the DB head's map", async () => {
  const g = dbHead();
  const feeds = [randomFeeds(g, 1), randomFeeds(g, 2)];
  const ranges = await minmaxRanges(g, feeds);
  // The plan asks ranges of original tensors only: calibration runs the float model as it is.
  const plan = planQuantization(g);
  const names = new Set(g.nodes.flatMap((n) => [...n.inputs, ...n.outputs]));
  for (const t of plan.activations) assert.ok(names.has(t), t);
  // Bias correction compares a layer with its float twin as quantize writes it: the rewritten
  // layers (the stem conv on its padded input, the ConvTransposes as 1×1 convs) are in floatTwin().
  const twin = new Map(floatTwin(g).nodes.map((n) => [n.name, n.op]));
  assert.ok(plan.weightedLayers.length > 0);
  for (const l of plan.weightedLayers) assert.ok(twin.has(l.node), l.node);
  const { graph, report } = quantize(g, { ranges });
  const ops = await optimizedOps(graph, feeds[0]!);
  assert.equal(ops["ConvTranspose"], undefined, JSON.stringify(ops));
  // The stem conv and the first ConvTranspose run int8; the last one gives the raw head output:
  // as a MatMul, int8 with a float output (no Q on it), not a float Conv.
  assert.equal(ops["QLinearConv"], 2, JSON.stringify(ops));
  assert.equal(ops["MatMulIntegerToFloat"], 1, JSON.stringify(ops));
  assert.equal((ops["Conv"] ?? 0) + (ops["FusedConv"] ?? 0), 0, JSON.stringify(ops));
  assert.deepEqual(report.floatNodes.map((f) => f.op), [
    "Transpose",
    "Add",
    "Sigmoid",
    "DepthToSpace",
  ]);
  const ref = (await runGraph(g, feeds[1]!)).prob!;
  const out = (await runGraph(graph, feeds[1]!)).prob!;
  assert.ok(sqnr(ref, out) > 25, `SQNR ${sqnr(ref, out)}`);
});

/** conv → Relu → nearest Resize ×2 → 1×1 conv, the FPN step of DBNet's neck. */
function upsampler(opset: number, batch: number): Graph {
  const b = new ModelBuilder({ seed: 7, opset });
  const x = b.relu(b.conv(b.input("x", [batch, 4, 6, 5]), { outChannels: 16, kernel: 3, pad: 1 }));
  b.output(b.conv(b.resize(x, 2), { outChannels: 8, kernel: 1 }), "y");
  return b.build();
}

/** The same graph with the input's height and width unknown until it runs. */
function dynamicSize(g: Graph): Graph {
  return {
    ...g,
    inputs: g.inputs.map((v) => ({ ...v, shape: [v.shape![0]!, v.shape![1]!, "h", "w"] })),
  };
}

/** Runs a graph whose input size is dynamic at the size of the static one it came from. */
function runAs(g: Graph, sized: Graph, feeds: Record<string, Float32Array>) {
  return runGraph({ ...g, inputs: sized.inputs }, feeds);
}

Deno.test("lowerForOrt() upsamples by a channels-last Expand when H and W are known, else resizes a one-channel view; bit-identical outputs", async () => {
  for (const [opset, batch] of [[11, 2], [13, 1]] as const) {
    const g = upsampler(opset, batch);
    const feeds = randomFeeds(g, 4);
    const a = (await runGraph(g, feeds)).y!;
    assert.equal(a.length, batch * 8 * 12 * 10);
    // Static: Transpose → Unsqueeze → Expand → Reshape → Transpose.
    const { graph, aliases, notes } = lowerForOrt(g);
    assert.equal(notes.length, 1, notes.join("\n"));
    assert.match(notes[0]!, /×2×2 nearest upsampling as a channels-last Expand/);
    assert.deepEqual(graph.nodes.map((n) => n.op), [
      "Conv",
      "Relu",
      "Transpose",
      "Unsqueeze",
      "Expand",
      "Reshape",
      "Transpose",
      "Conv",
    ]);
    const original = g.nodes.find((n) => n.op === "Resize")!;
    const expand = graph.nodes.find((n) => n.op === "Expand")!;
    assert.equal(expand.name, original.name);
    assert.equal(aliases.get(expand.outputs[0]!), original.inputs[0]);
    assert.deepEqual((await runGraph(graph, feeds)).y!, a);
    // H and W unknown: the one-channel view.
    const dynamic = lowerForOrt(dynamicSize(g));
    assert.deepEqual(dynamic.graph.nodes.map((n) => n.op), [
      "Conv",
      "Relu",
      "Reshape",
      "Resize",
      "Reshape",
      "Conv",
    ]);
    const resize = dynamic.graph.nodes.find((n) => n.op === "Resize")!;
    assert.equal(dynamic.aliases.get(resize.inputs[0]!), original.inputs[0]);
    assert.equal(dynamic.aliases.get(resize.outputs[0]!), original.outputs[0]);
    assert.deepEqual((await runAs(dynamic.graph, g, feeds)).y!, a);
  }
});

Deno.test("lowerForOrt() takes the Expand form exactly where onnxruntime's nearest Resize copies whole pixels", async () => {
  const cases: [string, string, number, boolean][] = [
    ["half_pixel", "round_prefer_floor", 2, true],
    ["half_pixel", "round_prefer_floor", 3, true],
    ["half_pixel", "round_prefer_ceil", 4, true],
    ["pytorch_half_pixel", "round_prefer_floor", 8, true],
    ["asymmetric", "floor", 3, true],
    ["asymmetric", "round_prefer_floor", 2, true],
    ["tf_half_pixel_for_nn", "floor", 2, true],
    ["asymmetric", "round_prefer_floor", 4, false],
    ["asymmetric", "round_prefer_ceil", 2, false],
    ["half_pixel", "floor", 2, false],
    ["align_corners", "round_prefer_floor", 2, false],
    ["half_pixel", "round_prefer_floor", 1.5, false],
    ["asymmetric", "floor", 0.5, false],
  ];
  for (const [mode, rounding, scale, copies] of cases) {
    const b = new ModelBuilder({ seed: 5, opset: 13 });
    const x = b.relu(b.conv(b.input("x", [1, 3, 6, 4]), { outChannels: 4, kernel: 3, pad: 1 }));
    const up = b.op("Resize", [x, "", b.initializer(float32([4], [1, 1, scale, scale]))], {
      attributes: {
        mode: { type: "string", value: "nearest" },
        coordinate_transformation_mode: { type: "string", value: mode },
        nearest_mode: { type: "string", value: rounding },
      },
      shape: [1, 4, Math.floor(6 * scale), Math.floor(4 * scale)],
    });
    b.output(b.conv(up, { outChannels: 2, kernel: 1 }), "y");
    const g = b.build();
    const { graph } = lowerForOrt(g);
    const what = `${mode}, ${rounding}, ×${scale}`;
    assert.equal(graph.nodes.some((n) => n.op === "Expand"), copies, what);
    const feeds = randomFeeds(g, 6);
    assert.deepEqual((await runGraph(graph, feeds)).y!, (await runGraph(g, feeds)).y!, what);
  }
});

Deno.test("quantize() gives onnxruntime the upsampling on u8 with the same int8 outputs, as an Expand or a one-channel Resize", async () => {
  const g = upsampler(13, 1);
  // The same upsampling stated by `sizes` is not rewritten: the int8 reference.
  const resize = g.nodes.find((n) => n.op === "Resize")!;
  const sizes = "sizes_reference";
  const bySizes: Graph = {
    ...g,
    nodes: g.nodes.map((n) => n === resize ? { ...n, inputs: [n.inputs[0]!, "", "", sizes] } : n),
    initializers: new Map([...g.initializers, [sizes, int64([4], [1, 16, 12, 10])]]),
  };
  const feeds = [randomFeeds(g, 1), randomFeeds(g, 2)];
  const ranges = await minmaxRanges(g, feeds);
  const ref = quantize(bySizes, { ranges }).graph;
  const refOpt = await optimized(ref, feeds[0]!);
  const refOps = countOps(refOpt);
  const yRef = (await runGraph(ref, feeds[1]!)).y!;
  // The reference's Resize runs u8 right on the NHWC conv's output.
  const feeder = (g: Graph) => {
    const r = g.nodes.find((n) => n.op === "Resize")!;
    return g.nodes.find((n) => n.outputs.includes(r.inputs[0]!))!.op;
  };
  assert.equal(feeder(refOpt), "QLinearConv");
  assert.equal(refOps["Reshape"] ?? 0, 0, JSON.stringify(refOps));

  // Static: the Expand runs on the u8 tensor, between the NHWC convs with no transpose left.
  const q = quantize(g, { ranges }).graph;
  const ops = countOps(await optimized(q, feeds[0]!));
  assert.equal(ops["Expand"], 1, JSON.stringify(ops));
  assert.equal(ops["Resize"] ?? 0, 0, JSON.stringify(ops));
  assert.equal(ops["Transpose"] ?? 0, refOps["Transpose"] ?? 0, JSON.stringify(ops));
  assert.equal(ops["DequantizeLinear"], refOps["DequantizeLinear"], JSON.stringify(ops));
  assert.deepEqual((await runGraph(q, feeds[1]!)).y!, yRef);

  // H and W unknown: a u8 Resize of the [C, 1, H, W] view.
  const qd = quantize(dynamicSize(g), { ranges }).graph;
  const dOpt = await optimized({ ...qd, inputs: g.inputs }, feeds[0]!);
  const dOps = countOps(dOpt);
  assert.equal(dOps["Resize"], 1, JSON.stringify(dOps));
  assert.equal(dOps["DequantizeLinear"], refOps["DequantizeLinear"], JSON.stringify(dOps));
  assert.ok(["Transpose", "Reshape"].includes(feeder(dOpt)), feeder(dOpt));
  assert.equal(dOps["Reshape"], 1, JSON.stringify(dOps));
  assert.deepEqual((await runAs(qd, g, feeds[1]!)).y!, yRef);
});

/**
 * PP-LCNetV3's activation: conv → hard-swish x·clip(x + 3, 0, 6)/6 → learnable affine a·h + b,
 * read by a padded depthwise conv and an unpadded 1×1 conv (as PP-OCRv4 det's backbone taps).
 */
function hardSwishAffine(a: number, bias: number): { graph: Graph; y: string } {
  const b = new ModelBuilder({ seed: 13 });
  const x = b.conv(b.input("x", [1, 4, 8, 8]), { outChannels: 8, kernel: 3, pad: 1 });
  const hs = b.op("Div", [b.mul(x, b.clip(b.add(x, 3), 0, 6)), b.initializer(6)], {
    shape: [1, 8, 8, 8],
  });
  const y = b.add(b.mul(b.initializer(float32([1], [a])), hs), b.initializer(float32([1], [bias])));
  const dw = b.relu(b.conv(y, { outChannels: 8, kernel: 3, pad: 1, group: 8 }));
  b.output(b.conv(dw, { outChannels: 4, kernel: 1 }), "dw");
  b.output(b.conv(y, { outChannels: 4, kernel: 1 }), "pw");
  return { graph: b.build(), y };
}

Deno.test("lowerForOrt() folds hard-swish's /6 and a scalar affine into the convs reading it, same outputs", async () => {
  const { graph: g, y } = hardSwishAffine(0.5, 0.25);
  const { graph, aliases, affine, notes } = lowerForOrt(g);
  assert.equal(notes.length, 1, notes.join("\n"));
  const scalarOps = graph.nodes.filter((n) =>
    ["Mul", "Div", "Add", "Sub"].includes(n.op) && n.inputs.some((t) => graph.initializers.has(t))
  );
  // Left: hard-swish's x + 3, and y/k = p + b/k before the padded conv (zeros pad y, not b).
  assert.deepEqual(scalarOps.map((n) => n.op), ["Add", "Add"]);
  const shift = scalarOps[1]!;
  assert.equal(aliases.get(shift.outputs[0]!), y);
  // k = 0.5/6: y/k holds y's values times 12, b/k = 3.
  assert.ok(
    Math.abs(affine.get(shift.outputs[0]!)!.scale - 12) < 1e-6,
    JSON.stringify(affine.get(shift.outputs[0]!)),
  );
  assert.ok(Math.abs(toFloat32(graph.initializers.get(shift.inputs[1]!)!)[0]! - 3) < 1e-6);
  const product = graph.nodes.find((n) => n.op === "Mul")!.outputs[0]!;
  assert.equal(shift.inputs[0], product);
  // The unpadded 1×1 conv reads the product x·clip itself, its bias taking b·Σw.
  assert.equal(graph.nodes.filter((n) => n.op === "Conv" && n.inputs[0] === product).length, 1);
  const feeds = randomFeeds(g, 5, -4, 4);
  const [a, b] = [await runGraph(g, feeds), await runGraph(graph, feeds)];
  for (const out of ["dw", "pw"]) {
    const [u, v] = [a[out]!, b[out]!];
    for (let i = 0; i < u.length; i++) {
      assert.ok(Math.abs(u[i]! - v[i]!) <= 1e-4 * (1 + Math.abs(u[i]!)), `${out}[${i}]`);
    }
  }
  // The convs reading the fold (their weights ×k, their input p or y/k) are offered to bias
  // correction under their names; their float twins are floatTwin()'s (the pipeline's test).
  const readers = g.nodes.filter((n) => n.op === "Conv" && n.inputs[0] === y).map((n) => n.name);
  assert.equal(readers.length, 2);
  const measured = planQuantization(g, { exclude: { head: false } }).weightedLayers
    .map((l) => l.node);
  assert.ok(readers.every((r) => measured.includes(r)), `${measured}`);
  // An excluded link ends the chain: here the first one up from the convs.
  const last = g.nodes.find((n) => n.outputs[0] === y)!.name;
  assert.equal(lowerForOrt(g, { exclude: { names: [last], ops: [] } }).notes.length, 0);
});

Deno.test("quantize() runs hard-swish + affine with one QLinearMul and keeps its outputs", async () => {
  const { graph: g } = hardSwishAffine(0.5, 0.25);
  const feeds = [randomFeeds(g, 1, -4, 4), randomFeeds(g, 2, -4, 4)];
  const ranges = await minmaxRanges(g, feeds);
  const { graph } = quantize(g, { ranges, exclude: { head: false } });
  const ops = await optimizedOps(graph, feeds[0]!);
  assert.equal(ops["QLinearMul"], 1, JSON.stringify(ops)); // x·clip only
  assert.equal(ops["QLinearAdd"], 2, JSON.stringify(ops)); // x + 3 and p + b/k
  assert.equal(ops["QLinearConv"], 4, JSON.stringify(ops));
  // y/k must be quantized on y's grid scaled by 1/k: on y's own grid it would saturate 12×.
  const [ref, out] = [await runGraph(g, feeds[1]!), await runGraph(graph, feeds[1]!)];
  for (const o of ["dw", "pw"]) {
    assert.ok(sqnr(ref[o]!, out[o]!) > 25, `${o}: ${sqnr(ref[o]!, out[o]!)}`);
  }
});

/** Squeeze-excite: x·HardSigmoid(conv(relu(conv(GAP(x))))), plus x when `residual` (DBNet's RSE). */
function squeezeExcite(residual: boolean): Graph {
  const b = new ModelBuilder({ seed: 17 });
  const x = b.conv(b.input("x", [1, 4, 6, 6]), { outChannels: 8, kernel: 3, pad: 1 });
  const squeezed = b.relu(b.conv(b.globalAveragePool(x), { outChannels: 4, kernel: 1 }));
  const gate = b.hardSigmoid(b.conv(squeezed, { outChannels: 8, kernel: 1 }), 0.2, 0.5);
  const scaled = b.mul(x, gate);
  b.output(b.conv(residual ? b.add(x, scaled) : scaled, { outChannels: 4, kernel: 1 }), "y");
  return b.build();
}

Deno.test("lowerForOrt() ends a HardSigmoid's conv in a Clip and writes x + x·s as x·(1 + s), same outputs", async () => {
  for (const residual of [false, true]) {
    const g = squeezeExcite(residual);
    const { graph, aliases, affine, notes } = lowerForOrt(g);
    assert.equal(notes.length, 1, notes.join("\n"));
    const ops = graph.nodes.map((n) => n.op);
    assert.ok(!ops.includes("HardSigmoid"), ops.join());
    const clip = graph.nodes.find((n) => n.op === "Clip")!;
    const sig = g.nodes.find((n) => n.op === "HardSigmoid")!;
    // The Clip gives the HardSigmoid's values under its name; the conv before it α·z + β.
    assert.equal(clip.outputs[0], sig.outputs[0]);
    assert.equal(aliases.get(clip.inputs[0]!), sig.inputs[0]);
    assert.deepEqual(affine.get(clip.inputs[0]!), { scale: 0.2, offset: 0.5 });
    if (residual) {
      // The Add now adds 1 to the gate ([1, 8, 1, 1]); one Mul over x gives the block's output.
      const add = graph.nodes.find((n) => n.op === "Add")!;
      assert.equal(add.inputs[0], sig.outputs[0]);
      assert.deepEqual(affine.get(add.outputs[0]!), { scale: 1, offset: 1 });
      const mul = graph.nodes.find((n) => n.op === "Mul")!;
      assert.equal(mul.inputs[1], add.outputs[0]);
      assert.equal(mul.outputs[0], g.nodes.find((n) => n.op === "Add")!.outputs[0]);
    }
    // The gate's conv (α·z + β) is offered to bias correction, measured against floatTwin()'s.
    const gateConv = g.nodes.find((n) => n.outputs[0] === sig.inputs[0])!.name;
    assert.ok(planQuantization(g).weightedLayers.some((l) => l.node === gateConv));
    const feeds = randomFeeds(g, 6, -2, 2);
    const [u, v] = [(await runGraph(g, feeds)).y!, (await runGraph(graph, feeds)).y!];
    for (let i = 0; i < u.length; i++) {
      assert.ok(Math.abs(u[i]! - v[i]!) <= 1e-5 * (1 + Math.abs(u[i]!)), `${residual} y[${i}]`);
    }
  }
});

Deno.test("quantize() leaves squeeze-excite no float HardSigmoid and keeps its outputs", async () => {
  for (const residual of [false, true]) {
    const g = squeezeExcite(residual);
    const feeds = [randomFeeds(g, 1, -2, 2), randomFeeds(g, 2, -2, 2)];
    const ranges = await minmaxRanges(g, feeds);
    const { graph } = quantize(g, { ranges, exclude: { head: false } });
    const ops = await optimizedOps(graph, feeds[0]!);
    // Every conv int8 (the gate's with its Clip), the gate's Add a QLinearAdd on [1, 8, 1, 1].
    assert.equal(ops["QLinearConv"], 4, JSON.stringify(ops));
    assert.equal(ops["HardSigmoid"], undefined, JSON.stringify(ops));
    assert.equal(ops["DequantizeLinear"] ?? 0, 1, JSON.stringify(ops)); // the output's
    assert.equal(ops["QLinearMul"], 1, JSON.stringify(ops));
    assert.equal(ops["QLinearAdd"] ?? 0, residual ? 1 : 0, JSON.stringify(ops));
    // The gate 1 + s must be quantized on s's range plus 1: on s's own [0, 1] it would saturate.
    const [ref, out] = [(await runGraph(g, feeds[1]!)).y!, (await runGraph(graph, feeds[1]!)).y!];
    assert.ok(sqnr(ref, out) > 25, `${residual}: SQNR ${sqnr(ref, out)}`);
  }
});

type HeadVariant =
  | "nanodet"
  | "concat"
  | "mixes-channels"
  | "other-perm"
  | "per-width"
  | "nchw-output";

/**
 * NanoDet's head: conv → LeakyRelu → 1×1 conv (12 channels) → Split [7, 5] on channels → Sigmoid
 * on the classes → Reshape [1, C, H·W] → Transpose(0, 2, 1) → outputs "cls" [1, 30, 7] and "box"
 * [1, 30, 5]. The variants change one step: "concat" joins both parts again (one output), the
 * others break the channels-last round trip somewhere.
 */
function anchorFreeHead(variant: HeadVariant): Graph {
  const b = new ModelBuilder({ seed: 19 });
  const x = b.input("x", [1, 8, 6, 5]);
  const f = b.leakyRelu(b.conv(x, { outChannels: 16, kernel: 3, pad: 1 }), 0.1);
  const y = b.conv(f, { outChannels: 12, kernel: 1 });
  if (variant === "mixes-channels") {
    // [1, 12, 30] → [1, 6, 60]: rows of the new "channels" hold two of the old ones.
    b.output(b.transpose(b.reshape(y, [1, 6, 60]), [0, 2, 1]), "out");
    return b.build();
  }
  const sizes = b.initializer(int64([2], [7, 5]));
  const [cls, box] = ["cls_raw", "box_raw"];
  b.op("Split", [y, sizes], {
    outputs: [cls, box],
    attributes: { axis: { type: "int", value: 1 } },
    shape: [1, 7, 6, 5],
  });
  // Per-channel affine on the boxes (a [1, 5, 1, 1] scale, a scalar shift) stays exact.
  const boxScale = variant === "per-width"
    ? b.initializer(float32([5], [1, 2, 3, 4, 5])) // broadcasts along W: not per channel
    : b.initializer(float32([1, 5, 1, 1], [1, 2, 3, 4, 5]));
  const scaled = b.add(b.op("Mul", [box, boxScale], { shape: [1, 5, 6, 5] }), 0.5);
  const probs = b.op("Sigmoid", [cls], { shape: [1, 7, 6, 5] });
  // Also a graph output as it is, [N, C, H, W].
  const sig = variant === "nchw-output" ? b.output(probs, "cls_map") : probs;
  if (variant === "concat") {
    const joined = b.concat([sig, scaled], 1);
    b.output(b.transpose(b.reshape(joined, [1, 12, 30]), [0, 2, 1]), "out");
    return b.build();
  }
  // [N, W, H, C]: channels last, but W before H.
  const perm = variant === "other-perm" ? [0, 3, 2, 1] : [0, 2, 1];
  const clsFlat = variant === "other-perm" ? sig : b.reshape(sig, [1, 7, 30]);
  b.output(b.transpose(clsFlat, perm), "cls");
  b.output(b.transpose(b.reshape(scaled, [1, 5, 30]), [0, 2, 1]), "box");
  return b.build();
}

async function assertSameOutputs(g: Graph, lowered: Graph, seed: number): Promise<void> {
  assert.deepEqual(lowered.outputs, g.outputs);
  const [before, after] = [inferShapes(g), inferShapes(lowered)];
  for (const o of g.outputs) assert.deepEqual(after.get(o.name)?.shape, before.get(o.name)?.shape);
  const feeds = randomFeeds(g, seed);
  const [a, b] = [await runGraph(g, feeds), await runGraph(lowered, feeds)];
  for (const o of g.outputs) {
    const [u, v] = [a[o.name]!, b[o.name]!];
    assert.equal(v.length, u.length, o.name);
    for (let i = 0; i < u.length; i++) {
      assert.ok(Math.abs(u[i]! - v[i]!) <= 1e-5 * (1 + Math.abs(u[i]!)), `${o.name}[${i}]`);
    }
  }
}

Deno.test("lowerForOrt() keeps a head MatMul's output channels-last up to the Transposes it cancels, same outputs", async () => {
  for (const variant of ["nanodet", "concat"] as const) {
    const g = anchorFreeHead(variant);
    const { graph, aliases, notes } = lowerForOrt(g, { head: "auto" });
    const ops = graph.nodes.map((n) => n.op);
    // The only Transpose left takes the MatMul's input channels-last (ORT cancels it against its
    // NHWC conv's); a Reshape, not the bias Add, follows the MatMul (no float Gemm fusion).
    const tail = variant === "nanodet"
      ? ["Split", "Mul", "Add", "Sigmoid"]
      : ["Split", "Mul", "Add", "Sigmoid", "Concat"];
    assert.deepEqual(ops, ["Conv", "LeakyRelu", "Transpose", "MatMul", "Reshape", "Add", ...tail]);
    assert.equal(notes.length, 2, notes.join("\n"));
    const bias = graph.initializers.get(graph.nodes[5]!.inputs[1]!)!;
    assert.deepEqual(bias.dims, [12]);
    const split = graph.nodes.find((n) => n.op === "Split")!;
    assert.equal(split.attributes.axis?.value, 2);
    // The box scale is a [5] vector now, broadcasting along the channels-last axis.
    const mul = graph.nodes.find((n) => n.op === "Mul")!;
    assert.deepEqual(graph.initializers.get(mul.inputs[1]!)!.dims, [5]);
    // The last op on each path writes the graph output itself.
    const last = new Set(graph.nodes.flatMap((n) => n.outputs));
    for (const o of g.outputs) assert.ok(last.has(o.name), o.name);
    // Channels-last tensors stand for the originals they permute.
    assert.equal(aliases.get(split.outputs[0]!), "cls_raw");
    await assertSameOutputs(g, graph, 3);
  }
});

Deno.test("lowerForOrt() keeps a head's NCHW round trip where channels-last would not be exact", async () => {
  for (
    const variant of ["mixes-channels", "other-perm", "per-width", "nchw-output"] as const
  ) {
    const g = anchorFreeHead(variant);
    const { graph, notes } = lowerForOrt(g, { head: "auto" });
    // Today's form: MatMul → Transpose(0, 3, 1, 2) → Add(bias [1, C, 1, 1]).
    const mi = graph.nodes.findIndex((n) => n.op === "MatMul");
    assert.deepEqual(graph.nodes.slice(mi, mi + 3).map((n) => n.op), [
      "MatMul",
      "Transpose",
      "Add",
    ]);
    assert.deepEqual(graph.nodes[mi + 1]!.attributes.perm?.value, [0, 3, 1, 2], variant);
    assert.deepEqual(graph.initializers.get(graph.nodes[mi + 2]!.inputs[1]!)!.dims, [1, 12, 1, 1]);
    assert.equal(notes.length, 1, `${variant}: ${notes.join("\n")}`);
    await assertSameOutputs(g, graph, 4);
  }
});

Deno.test("quantize() leaves onnxruntime no Transpose in a NanoDet-like head and keeps its outputs", async () => {
  const g = anchorFreeHead("nanodet");
  const feeds = [randomFeeds(g, 1), randomFeeds(g, 2)];
  const ranges = await minmaxRanges(g, feeds);
  const { graph } = quantize(g, { ranges });
  const ops = await optimizedOps(graph, feeds[0]!);
  // Left: the graph input's transpose to the stem QLinearConv's NHWC (was 4 with the head's
  // round trip and the model's two Transposes).
  assert.equal(ops["Transpose"], 1, JSON.stringify(ops));
  assert.equal(ops["MatMulIntegerToFloat"], 1, JSON.stringify(ops));
  assert.equal(ops["Gemm"] ?? 0, 0, JSON.stringify(ops));
  const [ref, out] = [await runGraph(g, feeds[1]!), await runGraph(graph, feeds[1]!)];
  for (const o of ["cls", "box"]) {
    assert.ok(sqnr(ref[o]!, out[o]!) > 25, `${o}: ${sqnr(ref[o]!, out[o]!)}`);
  }
});

Deno.test("quantize() pads an RGB input's fourth channel on the integers with the zero point, same int8 outputs", async () => {
  const b = new ModelBuilder({ seed: 23 });
  const x = b.relu(b.conv(b.input("x", [1, 3, 8, 8]), { outChannels: 8, kernel: 3, pad: 1 }));
  b.output(b.conv(x, { outChannels: 4, kernel: 3, pad: 1 }), "y");
  const g = b.build();
  // Inputs in [-0.5, 1): a zero point above 0, which Pad's default value 0 would not match.
  const feeds = [randomFeeds(g, 1, -0.5, 1), randomFeeds(g, 2, -0.5, 1)];
  const { graph } = quantize(g, { ranges: await minmaxRanges(g, feeds), exclude: { head: false } });
  const q = graph.nodes.find((n) => n.op === "QuantizeLinear" && n.inputs[0] === "x")!;
  const pad = graph.nodes.find((n) => n.op === "Pad")!;
  assert.deepEqual(pad.inputs.slice(0, 1), q.outputs);
  assert.equal(pad.inputs[2], q.inputs[2]);
  const zp = graph.initializers.get(q.inputs[2]!)!;
  assert.equal(zp.dtype, "uint8");
  assert.ok(Number(zp.data[0]) > 0, `zero point ${zp.data[0]}`);
  // onnxruntime still fuses the stem (and the second conv) into QLinearConv, the Pad on bytes.
  const opt = await optimized(graph, feeds[0]!);
  assert.equal(countOps(opt)["QLinearConv"], 2, JSON.stringify(countOps(opt)));
  const optPad = opt.nodes.find((n) => n.op === "Pad")!;
  assert.equal(opt.nodes.find((n) => n.outputs.includes(optPad.inputs[0]!))?.op, "QuantizeLinear");
  // The float pad before the QuantizeLinear (the form before) gives the same int8 outputs.
  const before: Graph = {
    ...graph,
    nodes: graph.nodes.flatMap((n) => {
      if (n === pad) return [];
      if (n !== q) return [n];
      return [
        { ...pad, inputs: ["x", pad.inputs[1]!], outputs: ["x_padded"] },
        { ...q, inputs: ["x_padded", ...q.inputs.slice(1)], outputs: pad.outputs },
      ];
    }),
  };
  const [y, yBefore] = [
    (await runGraph(graph, feeds[1]!)).y!,
    (await runGraph(before, feeds[1]!)).y!,
  ];
  assert.deepEqual(y, yBefore);
});

/** conv → LeakyRelu → MaxPool 2×2 → conv; `tap` also makes the LeakyRelu's output a graph output. */
function leakyPool(tap: boolean): { graph: Graph; conv: string; pool: string } {
  const b = new ModelBuilder({ seed: 21 });
  const conv = b.conv(b.input("x", [1, 4, 8, 8]), { outChannels: 8, kernel: 3 });
  const act = b.leakyRelu(conv, 0.1);
  const pool = b.maxPool(act, { kernel: 2 });
  b.output(b.conv(pool, { outChannels: 4, kernel: 3 }), "y");
  if (tap) b.output(act, "act");
  return { graph: b.build(), conv, pool };
}

Deno.test("lowerForOrt() pools before a LeakyRelu, which then reads a quarter of the values, same outputs", async () => {
  const { graph: g, conv, pool } = leakyPool(false);
  const { graph, aliases, notes } = lowerForOrt(g);
  assert.equal(notes.length, 1, notes.join("\n"));
  assert.deepEqual(graph.nodes.map((n) => n.op), ["Conv", "MaxPool", "LeakyRelu", "Conv"]);
  const [maxPool, leaky] = [graph.nodes[1]!, graph.nodes[2]!];
  assert.equal(maxPool.inputs[0], conv);
  assert.equal(aliases.get(maxPool.outputs[0]!), conv);
  assert.deepEqual(leaky.outputs, [pool]);
  const feeds = randomFeeds(g, 5);
  assert.deepEqual((await runGraph(graph, feeds)).y!, (await runGraph(g, feeds)).y!);
  // Not when the activation has another reader, decreases somewhere, or is excluded.
  assert.equal(lowerForOrt(leakyPool(true).graph).notes.length, 0);
  const relu = { ...g, nodes: g.nodes.map((n) => n.op === "LeakyRelu" ? { ...n, op: "Relu" } : n) };
  assert.equal(lowerForOrt(relu).notes.length, 0);
  const negative: Graph = {
    ...g,
    nodes: g.nodes.map((n) =>
      n.op === "LeakyRelu" ? { ...n, attributes: { alpha: { type: "float", value: -0.5 } } } : n
    ),
  };
  assert.equal(lowerForOrt(negative).notes.length, 0);
  assert.equal(lowerForOrt(g, { exclude: { names: [], ops: ["LeakyRelu"] } }).notes.length, 0);
});

Deno.test("quantize() pools the integers before QLinearLeakyRelu: the same int8 outputs", async () => {
  // With the LeakyRelu's output also a graph output the pool is not moved: the reference.
  const moved = leakyPool(false), kept = leakyPool(true);
  const feeds = [randomFeeds(moved.graph, 1), randomFeeds(moved.graph, 2)];
  const ranges = await minmaxRanges(kept.graph, feeds);
  // The moved LeakyRelu writes the pool's output: it takes the range the reference's activation
  // output has (which its pool shares).
  ranges.set(moved.pool, ranges.get("act")!); // the graph output the activation became
  // The last conv's output is quantized too (not a head): ORT then runs every conv int8.
  const options = { ranges, exclude: { head: false as const } };
  const movedResult = quantize(moved.graph, options);
  assert.ok(movedResult.report.rewrites.some((r) => r.includes("runs before")));
  const q = movedResult.graph;
  const ref = quantize(kept.graph, options).graph;
  const ops = await optimizedOps(q, feeds[0]!);
  assert.equal(ops["QLinearLeakyRelu"], 1, JSON.stringify(ops));
  assert.equal(ops["LeakyRelu"], undefined, JSON.stringify(ops));
  const [y, yRef] = [(await runGraph(q, feeds[1]!)).y!, (await runGraph(ref, feeds[1]!)).y!];
  assert.deepEqual(y, yRef);
});

Deno.test("lowerForOrt() writes a Pad's axes input (opset 18) as full-rank pads, and the int8 model runs at level all", async () => {
  const b = new ModelBuilder({ seed: 4, opset: 18 });
  const x = b.relu(b.conv(b.input("x", [1, 4, 8, 8]), { outChannels: 8, kernel: 3 }));
  const padded = b.op("Pad", [
    x,
    b.initializer(int64([4], [1, 2, 0, 1])),
    "",
    b.initializer(int64([2], [-1, 2])),
  ], {
    shape: [1, 8, 11, 9],
  });
  b.output(
    b.conv(b.relu(b.conv(padded, { outChannels: 8, kernel: 3 })), { outChannels: 4, kernel: 3 }),
    "y",
  );
  const g = b.build();
  const { graph, notes } = lowerForOrt(g);
  const pad = graph.nodes.find((n) => n.op === "Pad")!;
  assert.equal(pad.inputs.length, 2);
  // Axes [-1, 2]: W gets 1 before and 0 after, H 2 before and 1 after.
  assert.equal([...graph.initializers.get(pad.inputs[1]!)!.data].join(), "0,0,2,1,0,0,1,0");
  assert.ok(notes.some((l) => l.startsWith(`${pad.name}: pads over all 4 axes`)), String(notes));
  assert.deepEqual(inferShapes(graph).get(pad.outputs[0]!)?.shape, [1, 8, 11, 9]);
  const feeds = randomFeeds(g, 2);
  const ref = (await runGraph(g, feeds)).y!;
  const int8 = quantize(g, { ranges: await minmaxRanges(g, [randomFeeds(g, 1)]) }).graph;
  assert.ok(sqnr(ref, (await runGraph(int8, feeds)).y!) >= 25);
});

Deno.test("lowerForOrt() writes a Resize's axes attribute (opset 18) as scales or sizes over every axis", () => {
  for (const form of ["scales", "sizes"] as const) {
    const b = new ModelBuilder({ seed: 4, opset: 18 });
    const x = b.relu(b.conv(b.input("x", [1, 4, 8, 8]), { outChannels: 8, kernel: 3 }));
    const up = form === "scales"
      ? b.op("Resize", [x, "", b.initializer(float32([2], [2, 3]))], {
        // align_corners: the pixels are not plain copies, so the Resize stays (as a view).
        attributes: {
          axes: { type: "ints", value: [-1, 2] },
          coordinate_transformation_mode: { type: "string", value: "align_corners" },
        },
        shape: [1, 8, 24, 16],
      })
      : b.op("Resize", [x, "", "", b.initializer(int64([2], [24, 16]))], {
        attributes: { axes: { type: "ints", value: [-1, 2] } },
        shape: [1, 8, 16, 24],
      });
    b.output(b.conv(up, { outChannels: 4, kernel: 3 }), "y");
    const g = b.build();
    const { graph } = lowerForOrt(g);
    const resize = graph.nodes.find((n) => n.op === "Resize")!;
    assert.equal(resize.attributes.axes, undefined);
    const t = graph.initializers.get(resize.inputs[form === "scales" ? 2 : 3]!)!;
    // Axes [W, H]: W takes the first entry, H the second.
    assert.equal([...t.data].join(), form === "scales" ? "1,1,3,2" : "1,8,16,24");
    // (The scales form then resizes a one-channel view: a nearest Resize of H and W only.)
    assert.deepEqual(
      inferShapes(graph).get(up)?.shape,
      form === "scales" ? [1, 8, 24, 16] : [1, 8, 16, 24],
    );
  }
});

/** An RPN-like head conv whose raw output only places RoIs (RoiAlign's input 1) before an FC layer. */
function roiHead(): Graph {
  const b = new ModelBuilder({ seed: 9, opset: 16 });
  const feature = b.relu(b.conv(b.input("x", [1, 3, 16, 16]), { outChannels: 8, kernel: 3 }));
  const raw = b.conv(feature, { outChannels: 4, kernel: 1, name: "rpn" });
  const pooled = b.op("GlobalAveragePool", [raw], { shape: [1, 4, 1, 1] });
  const rois = b.mul(b.op("Abs", [b.reshape(pooled, [1, 4])], { shape: [1, 4] }), 8);
  const count = b.op("Shape", [rois], {
    attributes: { end: { type: "int", value: 1 } },
    dtype: "int64",
    shape: [1],
  });
  const batch = b.op("ConstantOfShape", [count], {
    attributes: { value: { type: "tensor", value: int64([1], [0]) } },
    dtype: "int64",
    shape: [1],
  });
  const aligned = b.op("RoiAlign", [feature, rois, batch], {
    attributes: {
      output_height: { type: "int", value: 2 },
      output_width: { type: "int", value: 2 },
      sampling_ratio: { type: "int", value: 2 },
    },
    shape: [1, 8, 2, 2],
  });
  b.output(rois, "rois");
  b.output(b.gemm(b.flatten(aligned), { out: 3, name: "fc" }), "scores");
  return b.build();
}

Deno.test("lowerForOrt() lowers a head conv whose output reaches an FC layer only as RoiAlign's boxes, same outputs", async () => {
  const g = roiHead();
  const { graph, notes } = lowerForOrt(g, { head: "auto" });
  assert.equal(graph.nodes.find((n) => n.name === "rpn")?.op, "MatMul");
  assert.match(notes.join("\n"), /rpn: head 1×1 Conv → MatMul/);
  await assertSameOutputs(g, graph, 5);
  // Read as RoiAlign's features (input 0), the same conv output is no raw head output.
  const features = {
    ...g,
    nodes: g.nodes.map((n) =>
      n.op === "RoiAlign" ? { ...n, inputs: ["rpn", ...n.inputs.slice(1)] } : n
    ),
  };
  assert.equal(
    lowerForOrt(features, { head: "auto" }).graph.nodes.find((n) => n.name === "rpn")?.op,
    "Conv",
  );
});
