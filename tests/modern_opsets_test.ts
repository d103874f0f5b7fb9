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
import { decode, encode, type Graph, opsetOf, type Tensor } from "@clipq/onnx";
import { inferShapes } from "@clipq/onnx/shapes";
import { clipBounds } from "@clipq/calibrate";
import { quantize } from "@clipq/quantize";
import { createSession } from "@clipq/runtime";
import { loadConfig, runPipeline } from "@clipq/pipeline";
import { darknetPhotoDir } from "../tools/assets.ts";
import { assertChecked, checkModel } from "./checker.ts";
import { runCli } from "./cli.ts";
import { MODERN_OPSETS, modernNet } from "./_modern_models.ts";

function seededImage(seed: number): Tensor {
  let s = seed >>> 0;
  const data = Float32Array.from({ length: 3 * 32 * 32 }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  });
  return { dtype: "float32", dims: [1, 3, 32, 32], data };
}

async function run(g: Graph, images: Tensor): Promise<Record<string, Float32Array>> {
  const session = await createSession(g, { optimizationLevel: "all" });
  try {
    const out = await session.run({ images });
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

/** Min/max of every float tensor of `g` over the images, read by running it with all outputs. */
async function minmax(g: Graph, images: Tensor[]) {
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
  for (const x of images) {
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

Deno.test("quantize() models of opsets 17–21 run in onnxruntime at level all close to float, QDQ and QOperator, per-channel and per-tensor", async () => {
  const x = seededImage(9);
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
      }
    }
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
