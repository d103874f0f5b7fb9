/**
 * Models as today's exporters write them, opsets 17 to 21 (torch.onnx.export 17, its dynamo
 * exporter 18, tf2onnx/Ultralytics 17–19; onnxruntime 1.30 runs 21): the ops whose form changed
 * since 13 — Reduce* with axes as an input (18), Split with num_outputs (18), Pad with an axes
 * input (18), Resize by sizes and scales, LayerNormalization (17) — through every path a user
 * takes, each written model run in onnxruntime at level all against the float one. Debian's
 * onnx.checker (onnx 1.12) knows opsets up to 17 only: it checks the opset-17 outputs.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  decode,
  emptyGraph,
  encode,
  float32,
  type Graph,
  int64,
  ModelBuilder,
  node,
  normalize,
  opsetOf,
  type Tensor,
  UnsupportedOpError,
} from "@clipq/onnx";
import { upgradeOpset } from "@clipq/onnx/upgrade";
import { inferShapes } from "@clipq/onnx/shapes";
import { seededRandom } from "@clipq/onnx/builder";
import { clipBounds } from "@clipq/calibrate";
import { quantize } from "@clipq/quantize";
import { createSession } from "@clipq/runtime";
import { loadConfig, runPipeline } from "@clipq/pipeline";
import { darknetPhotoDir, ppocrModel } from "../tools/assets.ts";
import { assertChecked, checkModel, checkModels } from "./checker.ts";
import { runCli } from "./cli.ts";
import { MODERN_OPSETS, modernNet } from "./_modern_models.ts";

function seededImage(seed: number): Tensor {
  return { dtype: "float32", dims: [1, 3, 32, 32], data: seededRandom(seed).uniforms(3072, 0, 1) };
}

/** Every output of `g` at level all, for one image as `images` or for the given feeds. */
async function run(
  g: Graph,
  feeds: Tensor | Record<string, Tensor>,
): Promise<Record<string, Float32Array>> {
  const session = await createSession(g, { optimizationLevel: "all" });
  try {
    const out = await session.run("dims" in feeds ? { images: feeds as Tensor } : feeds);
    return Object.fromEntries(
      Object.entries(out).map(([k, t]) => [k, Float32Array.from(t.data as Float32Array)]),
    );
  } finally {
    await session.release();
  }
}

/** Signal-to-quantization-noise ratio in dB. */
function sqnr(ref: Float32Array, q: Float32Array): number {
  let signal = 0, noise = 0;
  for (let i = 0; i < ref.length; i++) {
    signal += ref[i]! ** 2;
    noise += (ref[i]! - q[i]!) ** 2;
  }
  return 10 * Math.log10(signal / noise);
}

/** Min/max of every float tensor of `g` over the feeds, read by running it with all outputs. */
async function minmax(g: Graph, feeds: (Tensor | Record<string, Tensor>)[]) {
  const shapes = inferShapes(g);
  const names = g.nodes.flatMap((n) => n.outputs).filter((t) =>
    t && shapes.get(t)?.dtype === "float32"
  );
  const tapped: Graph = {
    ...g,
    outputs: [
      ...g.outputs,
      ...names.filter((t) => !g.outputs.some((o) => o.name === t)).map((name) => ({ name })),
    ],
  };
  const ranges = new Map([["images", { min: 0, max: 1, source: "input-spec" }]]);
  for (const x of feeds) {
    for (const [name, v] of Object.entries(await run(tapped, x))) {
      const r = ranges.get(name) ?? { min: Infinity, max: -Infinity, source: "minmax" };
      for (const a of v) [r.min, r.max] = [Math.min(r.min, a), Math.max(r.max, a)];
      ranges.set(name, r);
    }
  }
  return ranges;
}

Deno.test("inferShapes() reads ReduceMean axes, Split num_outputs, Pad axes and Resize sizes inputs at opsets 17–21", () => {
  for (const opset of MODERN_OPSETS) {
    // The builder writes the IR version each opset came with.
    assert.equal(modernNet(opset).irVersion, opset >= 21 ? 10 : opset >= 19 ? 9 : 8);
    const s = inferShapes(modernNet(opset));
    const shape = (t: string) => s.get(t)?.shape;
    assert.deepEqual(shape("reducemean_0"), [1, 8, 1, 1], `opset ${opset}`);
    assert.deepEqual(shape("pad_0"), [1, 8, 34, 34], `opset ${opset}`);
    assert.deepEqual(shape("half0"), [1, 8, 32, 32], `opset ${opset}`);
    assert.deepEqual(shape("half1"), [1, 8, 32, 32], `opset ${opset}`);
    assert.deepEqual(shape("resize_0"), [1, 8, 32, 32], `opset ${opset}`);
    assert.deepEqual(shape("resize_1"), [1, 8, 32, 32], `opset ${opset}`);
    assert.deepEqual(shape("layernormalization_0"), [1, 8], `opset ${opset}`);
    assert.deepEqual(shape("logits"), [1, 10], `opset ${opset}`);
  }
});

Deno.test("clipBounds() carries ReLU6 bounds through ReduceMean, Pad, Split and Resize at opsets 17–21", () => {
  for (const opset of MODERN_OPSETS) {
    const { ranges } = clipBounds(modernNet(opset, { relu6: true }), {
      inputs: { images: { min: 0, max: 1 } },
    });
    for (
      const t of ["reducemean_0", "pad_0", "half0", "half1", "maxpool_0", "resize_0", "resize_1"]
    ) {
      const r = ranges.get(t);
      assert.deepEqual([r?.min, r?.max], [0, 6], `opset ${opset}: ${t}`);
    }
  }
});

Deno.test("quantize() models of opsets 17–21 run in onnxruntime at level all close to float, QDQ and QOperator, per-channel and per-tensor; the opset-17 ones pass onnx.checker", async () => {
  const x = seededImage(9);
  const checked: Graph[] = [];
  for (const opset of MODERN_OPSETS) {
    const g = modernNet(opset);
    const ranges = await minmax(g, [seededImage(1), seededImage(2)]);
    const ref = await run(g, x);
    for (const format of ["qdq", "qoperator"] as const) {
      for (const weights of ["per-channel", "per-tensor"] as const) {
        const what = `opset ${opset} ${format} ${weights}`;
        const { graph } = quantize(g, { ranges, format, weights });
        assert.equal(opsetOf(graph), opset, what);
        // The Pad keeps the pads but as full-rank pads (see lower.ts): ORT's transpose optimizer
        // misreads the axes form next to its int8 NHWC convs and the model failed to run.
        const pad = graph.nodes.find((n) => n.name === "pad_0")!;
        assert.equal(pad.inputs[3] ?? "", "", what);
        const out = await run(graph, x);
        const db = [sqnr(ref.out!, out.out!), sqnr(ref.logits!, out.logits!)];
        assert.ok(
          db[0]! >= 30 && db[1]! >= 15,
          `${what}: SQNR out, logits ${db.map((d) => d.toFixed(1))} dB`,
        );
        if (opset === 17) checked.push(graph);
      }
    }
  }
  // Debian's onnx.checker knows opsets up to 17: the opset-17 models, all four forms.
  const dir = await Deno.makeTempDir({ prefix: "clipq-modern-check-" });
  try {
    const paths = checked.map((_, i) => join(dir, `m${i}.onnx`));
    checked.forEach((g, i) => Deno.writeFileSync(paths[i]!, encode(g)));
    for (const r of await checkModels(paths)) assertChecked(r);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A temp folder holding the model and a config over the darknet photos, stretched to 32×32. */
async function workspace(graph: Graph, steps: unknown[]) {
  const dir = await Deno.makeTempDir({ prefix: "clipq-modern-" });
  await Deno.writeFile(join(dir, "model.onnx"), encode(graph));
  const photos = await darknetPhotoDir();
  const config = join(dir, "clipq.json");
  await Deno.writeTextFile(
    config,
    JSON.stringify({
      model: "model.onnx",
      output: "out/int8.onnx",
      report: "out/report.json",
      input: {
        name: "images",
        size: [32, 32],
        resize: "stretch",
        layout: "NCHW",
        color: "RGB",
        scale: 1 / 255,
        mean: [0, 0, 0],
        std: [1, 1, 1],
      },
      // One anchor, one class at stride 1: the 6-channel output decodes as a YOLOv3 head.
      head: { type: "yolov3", outputs: ["out"], strides: [1], anchors: [[[4, 4]]], classes: 1 },
      data: { calibration: { images: photos, limit: 4 }, evaluation: { images: photos, limit: 3 } },
      steps,
    }),
  );
  return { dir, config, output: join(dir, "out", "int8.onnx") };
}

/** The float vs int8 SQNR of output "out" that evaluate reports. */
function outputSqnr(accuracy: unknown): number {
  return (accuracy as { outputSqnr?: { out?: number } } | undefined)?.outputSqnr?.out ?? 0;
}

interface Details {
  "svd-fc": { layers: unknown[] };
  calibration: { samples: number | "all" };
  biasCorrection: { layers: number };
  fallback: { met: boolean };
}

Deno.test("runPipeline() takes opset 18 and 21 models through normalize, svd-fc, calibrate (all samples, bias correction, split channels), maxDrop and evaluate", async () => {
  for (const opset of [18, 21]) {
    const ws = await workspace(modernNet(opset), [
      { use: "normalize" },
      { use: "svd-fc", rank: "ceil(0.5 * min(rows, cols))", minParams: 0, backend: "js" },
      {
        use: "calibrate",
        method: "clip-bounds",
        fallback: "percentile",
        samples: "all",
        biasCorrection: true,
        splitChannels: {},
      },
      { use: "quantize", maxDrop: 0.05 },
      { use: "evaluate" },
    ]);
    try {
      const { report, saved } = await runPipeline(await loadConfig(ws.config), {
        quiet: true,
        analyze: false,
      });
      const details = report.details as unknown as Details;
      assert.equal(details["svd-fc"].layers.length, 2, `opset ${opset}`);
      assert.equal(details.calibration.samples, "all");
      assert.ok(
        details.biasCorrection.layers >= 8,
        `opset ${opset}: ${details.biasCorrection.layers}`,
      );
      assert.equal(details.fallback.met, true);
      const int8 = decode(await Deno.readFile(saved!.path));
      assert.equal(opsetOf(int8), opset);
      assert.ok(int8.nodes.some((n) => n.op === "QuantizeLinear"));
      const db = outputSqnr(report.accuracy);
      assert.ok(db >= 30, `opset ${opset}: output SQNR ${db} dB`);
    } finally {
      await Deno.remove(ws.dir, { recursive: true });
    }
  }
});

Deno.test("runPipeline() with bias correction writes QOperator models (opsets 17 and 19); the opset-17 one passes onnx.checker", async () => {
  for (const opset of [17, 19]) {
    const ws = await workspace(modernNet(opset, { relu6: true }), [
      { use: "normalize" },
      { use: "calibrate", method: "clip-bounds", fallback: "percentile", biasCorrection: true },
      { use: "quantize", format: "qoperator", weights: "per-tensor" },
      { use: "evaluate" },
    ]);
    try {
      // The bias shifts were measured on the QOperator graph, where a float copy of a layer
      // read its integer input: onnxruntime refused the measuring model.
      const { report, saved } = await runPipeline(await loadConfig(ws.config), {
        quiet: true,
        analyze: false,
      });
      const details = report.details as unknown as Details;
      assert.ok(details.biasCorrection.layers >= 8);
      assert.notEqual(details.calibration.samples, "all");
      const int8 = decode(await Deno.readFile(saved!.path));
      assert.equal(opsetOf(int8), opset);
      assert.ok(int8.nodes.some((n) => n.op === "QLinearConv"));
      const db = outputSqnr(report.accuracy);
      // ReLU6's [0, 6] as the clip bound, over activations mostly below 2: coarser steps.
      assert.ok(db >= 20, `opset ${opset}: output SQNR ${db} dB`);
      if (opset <= 17) assertChecked(await checkModel(saved!.path));
    } finally {
      await Deno.remove(ws.dir, { recursive: true });
    }
  }
});

Deno.test("clipq CLI quantizes an opset-20 model", async () => {
  const ws = await workspace(modernNet(20), [
    { use: "normalize" },
    { use: "calibrate", method: "percentile" },
    { use: "quantize" },
  ]);
  try {
    const r = await runCli(ws.config, "--quiet");
    assert.equal(r.code, 0, r.stderr);
    const int8 = decode(await Deno.readFile(ws.output));
    assert.equal(opsetOf(int8), 20);
    const x = seededImage(3);
    const db = sqnr((await run(modernNet(20), x)).out!, (await run(int8, x)).out!);
    assert.ok(db >= 30, `SQNR ${db} dB`);
  } finally {
    await Deno.remove(ws.dir, { recursive: true });
  }
});

/** Max abs difference of every output of two graphs on the same feed, at level disabled. */
async function maxDiff(a: Graph, b: Graph, feeds: Record<string, Tensor>): Promise<number> {
  const outs = async (g: Graph) => {
    const s = await createSession(g, { optimizationLevel: "disabled" });
    try {
      return await s.run(feeds);
    } finally {
      await s.release();
    }
  };
  const [x, y] = [await outs(a), await outs(b)];
  let d = 0;
  for (const [k, t] of Object.entries(x)) {
    assert.deepEqual(y[k]?.dims, t.dims, k);
    for (let i = 0; i < t.data.length; i++) {
      d = Math.max(d, Math.abs(Number(y[k]!.data[i]) - Number(t.data[i])));
    }
  }
  return d;
}

Deno.test("upgradeOpset() to 18–21 turns Reduce* axes into an input and gives equal Splits num_outputs, same outputs in onnxruntime", async () => {
  const b = new ModelBuilder({ opset: 13, seed: 2 });
  const x = b.relu(b.conv(b.input("images", [1, 3, 32, 32]), { outChannels: 8, kernel: 3 }));
  const ints = (value: number[]) => ({ type: "ints" as const, value });
  const mean = b.op("ReduceMean", [x], { attributes: { axes: ints([2, 3]) }, shape: [1, 8, 1, 1] });
  const l2 = b.op("ReduceL2", [x], {
    attributes: { axes: ints([-1]), keepdims: { type: "int", value: 0 } },
    shape: [1, 8, 32],
  });
  const whole = b.op("ReduceMax", [x], { shape: [1, 1, 1, 1] });
  b.op("Split", [x], {
    attributes: { axis: { type: "int", value: 1 } },
    outputs: ["s0", "s1", "s2", "s3"],
    shape: [1, 2, 32, 32],
  });
  b.output(b.mul(mean, whole), "gate");
  b.output(l2, "rows");
  for (const t of ["s0", "s3"]) b.output(t);
  const g = b.build();
  const feeds = { images: seededImage(4) };
  for (const target of [18, 19, 21]) {
    const up = upgradeOpset(g, { target });
    assert.equal(opsetOf(up), target);
    assert.equal(up.irVersion, target >= 21 ? 10 : target >= 19 ? 9 : 8);
    const byOp = (op: string) => up.nodes.find((n) => n.op === op)!;
    assert.equal(byOp("ReduceMean").attributes.axes, undefined);
    assert.equal(up.initializers.get(byOp("ReduceMean").inputs[1]!)?.data.join(), "2,3");
    assert.equal(up.initializers.get(byOp("ReduceL2").inputs[1]!)?.data.join(), "-1");
    assert.deepEqual(byOp("ReduceMax").inputs.length, 1);
    assert.deepEqual(byOp("Split").attributes.num_outputs, { type: "int", value: 4 });
    assert.ok((await maxDiff(g, up, feeds)) <= 1e-6, `opset ${target}`);
  }
  // The opset-17 exporter model at 21: split sizes, Pad, Resize and LayerNormalization carry over.
  const m = modernNet(17);
  const m21 = upgradeOpset(m, { target: 21 });
  assert.ok((await maxDiff(m, m21, feeds)) <= 1e-5);
  assert.equal(m21.nodes.find((n) => n.op === "ReduceMean")!.inputs.length, 2);
});

Deno.test("upgradeOpset() refuses GroupNormalization-18 at 21 (its scale became per channel), naming node, op and opset", () => {
  const g = emptyGraph({
    opsetImports: [{ domain: "", version: 18 }],
    nodes: [node({
      name: "gn",
      op: "GroupNormalization",
      inputs: ["x", "s", "b"],
      outputs: ["y"],
      attributes: { num_groups: { type: "int", value: 2 } },
    })],
    initializers: new Map([["s", float32([2], [1, 1])], ["b", float32([2], [0, 0])]]),
    inputs: [{ name: "x", dtype: "float32", shape: [1, 4, 2, 2] }],
    outputs: [{ name: "y", dtype: "float32", shape: [1, 4, 2, 2] }],
  });
  assert.equal(opsetOf(upgradeOpset(g, { target: 20 })), 20);
  assert.throws(
    () => upgradeOpset(g, { target: 21 }),
    (e: unknown) =>
      e instanceof UnsupportedOpError && /GroupNormalization/.test(e.message) &&
      /"gn"/.test(e.message) && /opset 18/.test(e.message) && !e.message.includes("\n"),
  );
});

Deno.test("upgradeOpset() keeps PP-OCRv4 det outputs at opset 21, and its int8 model is the opset-13 one's, output for output", async () => {
  const det = decode(await Deno.readFile(await ppocrModel("det")));
  const data = seededRandom(11).uniforms(3 * 160 * 160, -1, 1);
  const feeds = {
    [det.inputs[0]!.name]: { dtype: "float32" as const, dims: [1, 3, 160, 160], data },
  };
  const up = upgradeOpset(det, { target: 21 });
  assert.equal(opsetOf(up), 21);
  assert.ok((await maxDiff(det, up, feeds)) <= 1e-5);
  // Its weights are Constant nodes: normalize makes them initializers, as the pipeline does.
  const [g13, g21] = [normalize(upgradeOpset(det, { target: 13 })), normalize(up)];
  const ranges = await minmax(g21, [feeds]);
  const q13 = quantize(g13, { ranges }), q21 = quantize(g21, { ranges });
  assert.ok(q21.report.quantizedNodes.length > 50, `${q21.report.quantizedNodes.length} quantized`);
  assert.deepEqual(q21.report.quantizedNodes, q13.report.quantizedNodes);
  assert.equal(opsetOf(q21.graph), 21);
  const [a, b] = [await run(q13.graph, feeds), await run(q21.graph, feeds)];
  for (const [name, v] of Object.entries(a)) assert.deepEqual(b[name], v, name);
});

Deno.test("upgradeOpset() keeps PP-OCRv4 rec outputs (ten ReduceMean with axes attributes, opset 9) at opsets 18 and 21", async () => {
  const rec = decode(await Deno.readFile(await ppocrModel("rec")));
  const data = seededRandom(5).uniforms(3 * 48 * 320, -1, 1);
  const feeds = {
    [rec.inputs[0]!.name]: { dtype: "float32" as const, dims: [1, 3, 48, 320], data },
  };
  for (const target of [18, 21]) {
    const up = upgradeOpset(rec, { target });
    const means = up.nodes.filter((n) => n.op === "ReduceMean");
    assert.equal(means.length, 10);
    for (const n of means) {
      assert.equal(n.attributes.axes, undefined, n.name);
      assert.equal(up.initializers.get(n.inputs[1]!)?.dtype, "int64", n.name);
    }
    const d = await maxDiff(rec, up, feeds);
    assert.ok(d <= 1e-5, `opset ${target}: max abs difference ${d}`);
  }
});

Deno.test("quantize() keeps Gelu (20), Mish (18) and GroupNormalization (18, per channel at 21) float, with their shapes known, and the model runs close to float", async () => {
  for (const opset of [20, 21]) {
    const b = new ModelBuilder({ opset, seed: 1 });
    const same = { shape: [1, 8, 16, 16] };
    let x = b.conv(b.input("images", [1, 3, 16, 16]), { outChannels: 8, kernel: 3 });
    x = b.op("Gelu", [x], {
      ...same,
      attributes: { approximate: { type: "string", value: "tanh" } },
    });
    x = b.op("Mish", [b.conv(x, { outChannels: 8, kernel: 3 })], same);
    // Scale and bias per group (2) up to 20, per channel (8) from 21.
    const k = opset >= 21 ? 8 : 2;
    x = b.op("GroupNormalization", [
      x,
      b.initializer(float32([k], b.random.uniforms(k, 0.5, 1.5))),
      b.initializer(float32([k], b.random.uniforms(k, -0.1, 0.1))),
    ], { ...same, attributes: { num_groups: { type: "int", value: 2 } } });
    b.output(b.conv(x, { outChannels: 4, kernel: 3 }), "y");
    const g = b.build();
    assert.deepEqual(inferShapes(g).get("groupnormalization_0")?.shape, [1, 8, 16, 16]);
    const images = {
      images: {
        dtype: "float32" as const,
        dims: [1, 3, 16, 16],
        data: (seededImage(6).data as Float32Array).subarray(0, 768),
      },
    };
    const { graph, report } = quantize(g, { ranges: await minmax(g, [images]) });
    assert.deepEqual(report.floatNodes.map((f) => f.op), ["Gelu", "Mish", "GroupNormalization"]);
    assert.ok(report.quantizedNodes.includes("conv_2"));
    const db = sqnr((await run(g, images)).y!, (await run(graph, images)).y!);
    assert.ok(db >= 25, `opset ${opset}: SQNR ${db} dB`);
  }
});

Deno.test("inferShapes() gives Resize-18 by sizes with keep_aspect_ratio_policy the shape onnxruntime gives", async () => {
  const cases = [
    ["not_larger", [1, 1, 5, 10], [3, 5], [2, 3]],
    ["not_smaller", [1, 1, 5, 10], [3, 5], [2, 3]],
    ["not_larger", [1, 1, 10, 15], [8, 8], [2, 3]],
    ["not_smaller", [1, 1, 7, 10], [3, 3], [2, 3]],
    ["not_larger", [1, 1, 5, 10], [1, 1, 3, 5], undefined],
    ["stretch", [1, 1, 5, 10], [3, 5], [2, 3]],
  ] as const;
  for (const [policy, dims, sizes, axes] of cases) {
    const g = emptyGraph({
      opsetImports: [{ domain: "", version: 18 }],
      nodes: [node({
        name: "r",
        op: "Resize",
        inputs: ["x", "", "", "sizes"],
        outputs: ["y"],
        attributes: {
          keep_aspect_ratio_policy: { type: "string", value: policy },
          ...(axes ? { axes: { type: "ints", value: [...axes] } } : {}),
        },
      })],
      initializers: new Map([["sizes", int64([sizes.length], [...sizes])]]),
      inputs: [{ name: "x", dtype: "float32", shape: [...dims] }],
      outputs: [{ name: "y", dtype: "float32" }],
    });
    const x = float32([...dims], new Float32Array(dims.reduce((a: number, b: number) => a * b, 1)));
    const session = await createSession(g, { optimizationLevel: "disabled" });
    try {
      const { y } = await session.run({ x });
      assert.deepEqual(inferShapes(g).get("y")?.shape, y!.dims, `${policy} [${dims}] → [${sizes}]`);
    } finally {
      await session.release();
    }
  }
});

Deno.test("quantize() takes Resize-18/19 forms (axes attribute, antialias, half_pixel_symmetric) and the int8 model runs close to float", async () => {
  for (const opset of [18, 19, 21]) {
    const b = new ModelBuilder({ opset, seed: 3 });
    const str = (value: string) => ({ type: "string" as const, value });
    let x = b.relu(b.conv(b.input("images", [1, 3, 32, 32]), { outChannels: 8, kernel: 3 }));
    // Antialiased linear downsampling of H and W named by the axes attribute.
    x = b.op("Resize", [x, "", b.initializer(float32([2], [0.5, 0.5]))], {
      attributes: {
        mode: str("linear"),
        antialias: { type: "int", value: 1 },
        axes: { type: "ints", value: [2, 3] },
      },
      shape: [1, 8, 16, 16],
    });
    x = b.relu(b.conv(x, { outChannels: 8, kernel: 3 }));
    // Nearest upsampling back (half_pixel_symmetric exists from 19).
    x = b.op("Resize", [x, "", b.initializer(float32([4], [1, 1, 2, 2]))], {
      attributes: {
        mode: str("nearest"),
        coordinate_transformation_mode: str(opset >= 19 ? "half_pixel_symmetric" : "half_pixel"),
      },
      shape: [1, 8, 32, 32],
    });
    b.output(
      b.conv(b.relu(b.conv(x, { outChannels: 8, kernel: 3 })), { outChannels: 4, kernel: 1 }),
      "y",
    );
    const g = b.build();
    assert.deepEqual(inferShapes(g).get("resize_0")?.shape, [1, 8, 16, 16]);
    const feeds = { images: seededImage(8) };
    const ranges = await minmax(g, [{ images: seededImage(1) }, { images: seededImage(2) }]);
    for (const format of ["qdq", "qoperator"] as const) {
      const { graph } = quantize(g, { ranges, format });
      const db = sqnr((await run(g, feeds)).y!, (await run(graph, feeds)).y!);
      assert.ok(db >= 25, `opset ${opset} ${format}: SQNR ${db} dB`);
    }
  }
});

Deno.test("runPipeline() splits the channels of a conv → depthwise region in an opset-18 model", async () => {
  const b = new ModelBuilder({ opset: 18, seed: 7 });
  let x = b.relu(b.conv(b.input("images", [1, 3, 32, 32]), { outChannels: 8, kernel: 1 }));
  x = b.relu(b.conv(x, { outChannels: 8, kernel: 3, group: 8 }));
  x = b.conv(b.relu(b.conv(x, { outChannels: 8, kernel: 1 })), { outChannels: 6, kernel: 1 });
  b.output(x, "out");
  const g = b.build();
  // One channel of the first conv 40× wider than the others: it stretches the depthwise input.
  const w = g.initializers.get("conv_0.weight")!.data as Float32Array;
  for (let i = 5 * 3; i < 6 * 3; i++) w[i] = w[i]! * 40;
  const ws = await workspace(g, [
    { use: "calibrate", method: "minmax", splitChannels: {} },
    { use: "quantize" },
    { use: "evaluate" },
  ]);
  try {
    const { report, saved } = await runPipeline(await loadConfig(ws.config), {
      quiet: true,
      analyze: false,
    });
    const split = (report.details as { splitChannels?: { regions: number } }).splitChannels;
    assert.ok((split?.regions ?? 0) >= 1, JSON.stringify(split));
    assert.equal(opsetOf(decode(await Deno.readFile(saved!.path))), 18);
    const db = outputSqnr(report.accuracy);
    assert.ok(db >= 25, `output SQNR ${db} dB`);
  } finally {
    await Deno.remove(ws.dir, { recursive: true });
  }
});

Deno.test("the calibration sampling graph of an opset-21 model writes its ops in the opset-21 form and runs", async () => {
  const { samplingPlan } = await import("../packages/calibrate/_sampling.ts");
  const g = modernNet(21);
  const tensors = ["relu_0", "reducemean_0", "pad_0", "half0", "resize_0", "resize_1"];
  const plan = samplingPlan(g, {
    tensors,
    samples: 256,
    seed: 1,
    inputDims: { images: [1, 3, 32, 32] },
  });
  const added = plan.graph.nodes.slice(g.nodes.length);
  assert.ok(added.length > 0);
  for (const n of added) {
    assert.ok(["Flatten", "ReduceMin", "ReduceMax", "Slice"].includes(n.op), n.op);
    // Reduce* take axes as an input from 18: none here, a whole-tensor reduction.
    if (n.op.startsWith("Reduce")) {
      assert.deepEqual([n.inputs.length, n.attributes.axes], [1, undefined]);
    }
    if (n.op === "Slice") assert.equal(n.inputs.length, 5);
  }
  assert.equal(opsetOf(plan.graph), 21);
  const out = await run(plan.graph, seededImage(1));
  for (const t of plan.tensors) assert.ok(out[t.sample], t.sample);
});

Deno.test("quantize() with the axes-form Pad or Resize excluded (kept float) still runs at level all", async () => {
  const g = modernNet(18);
  const ranges = await minmax(g, [seededImage(1)]);
  const x = seededImage(4);
  const ref = await run(g, x);
  for (
    const exclude of [{ names: ["pad_0"] }, { ops: ["Pad", "Resize"] }, {
      pattern: "^(pad|resize)",
    }]
  ) {
    const { graph, report } = quantize(g, { ranges, exclude });
    const pad = report.floatNodes.find((f) => f.node === "pad_0");
    assert.ok(pad, JSON.stringify(report.floatNodes));
    assert.ok(report.rewrites.some((r) => r.startsWith("pad_0: pads over all 4 axes")));
    const db = sqnr(ref.out!, (await run(graph, x)).out!);
    assert.ok(db >= 30, `${JSON.stringify(exclude)}: SQNR ${db} dB`);
  }
});
