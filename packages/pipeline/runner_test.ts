import assert from "node:assert/strict";
import { join } from "node:path";
import { emptyGraph, float32, ModelBuilder, node } from "@clipq/onnx";
import { decode } from "@clipq/onnx/proto";
import { ConfigError } from "@clipq/onnx/errors";
import { loadConfig } from "./config.ts";
import { createContext, imageInput, runPipeline, withStaticImageInput } from "./runner.ts";
import { createReporter } from "./progress.ts";
import { renderHtml } from "./report_html.ts";
import { smallDetector, workspace, writePng } from "./_fixtures_test.ts";

Deno.test("runPipeline() calibrates from .npy tensors and leaves no file behind when a step fails", async () => {
  const ws = workspace(smallDetector());
  try {
    ws.npy([0, 1, 2].map((k) =>
      float32(
        [1, 3, 32, 32],
        Float32Array.from({ length: 3 * 32 * 32 }, (_, i) => ((i * (k + 3)) % 97) / 96),
      )
    ));
    const cfg = await loadConfig(ws.write({
      model: "model.onnx",
      output: "out/m.onnx",
      report: "out/report.json",
      data: { calibration: { npy: "npy" } },
      steps: [{ use: "calibrate", method: "minmax" }, { use: "quantize" }],
    }));
    const { report, saved } = await runPipeline(cfg, { quiet: true, analyze: false });
    assert.ok(
      saved && decode(Deno.readFileSync(saved.path)).nodes.some((n) => n.op === "QuantizeLinear"),
    );
    const input = report.ranges.find((r) => r.tensor === "images")!;
    assert.equal(input.source, "minmax");
    assert.ok(input.min >= 0 && input.max <= 1 && input.max > 0.9);

    // A custom step that throws after calibrate: nothing is written.
    Deno.writeTextFileSync(
      join(ws.dir, "boom.ts"),
      `export default () => ({ name: "boom", run: () => { throw new Error("boom"); } });`,
    );
    const failing = await loadConfig(ws.write({
      model: "model.onnx",
      output: "out2/m.onnx",
      report: "out2/report.json",
      data: { calibration: { npy: "npy" } },
      steps: [{ use: "calibrate", method: "minmax" }, { use: "quantize" }, { use: "./boom.ts" }],
    }));
    await assert.rejects(runPipeline(failing, { quiet: true }), /boom/);
    assert.throws(() => Deno.statSync(join(ws.dir, "out2")));
  } finally {
    ws.cleanup();
  }
});

Deno.test("runPipeline() splits FC layers with a rank expression, then quantizes", async () => {
  const { ModelBuilder } = await import("@clipq/onnx/builder");
  const b = new ModelBuilder({ seed: 3, name: "fc" });
  const h = b.relu(b.gemm(b.input("x", [1, 64]), { out: 128 }));
  b.output(b.matmul(h, { out: 48 }), "y");
  const ws = workspace(b.build());
  try {
    ws.npy([float32([1, 64], Float32Array.from({ length: 64 }, (_, i) => Math.sin(i)))]);
    const cfg = await loadConfig(ws.write({
      model: "model.onnx",
      output: "out/fc.onnx",
      data: { calibration: { npy: "npy" } },
      steps: [
        { use: "svd-fc", rank: "ceil(0.25 * min(rows, cols))", backend: "js" },
        { use: "calibrate", method: "minmax" },
        { use: "quantize" },
      ],
    }));
    const { report, graph } = await runPipeline(cfg, { quiet: true, analyze: false });
    const svd = report.details["svd-fc"] as {
      layers: { rows: number; cols: number; rank: number }[];
    };
    assert.deepEqual(svd.layers.map((l) => [l.rows, l.cols, l.rank]), [[64, 128, 16], [
      128,
      48,
      12,
    ]]);
    assert.ok(report.methods.includes("svd-fc"));
    assert.ok(graph.nodes.some((n) => n.op === "QuantizeLinear"));
  } finally {
    ws.cleanup();
  }
});

Deno.test("runPipeline() feeds input.extra to other model inputs and applies bias correction", async () => {
  const { ModelBuilder } = await import("@clipq/onnx/builder");
  const b = new ModelBuilder({ seed: 5, name: "two-inputs" });
  const x = b.input("images", [1, 3, 16, 16]);
  const gain = b.input("gain", [1]);
  // Bias correction measures every quantized layer as quantize writes it (floatTwin): the RGB stem
  // (lowered to read 4 channels), the middle conv and the head conv (lowered to a MatMul).
  let y = b.relu(b.conv(x, { outChannels: 8, kernel: 3, pad: 1 }));
  y = b.relu(b.conv(y, { outChannels: 8, kernel: 3, pad: 1 }));
  b.output(b.mul(b.conv(y, { outChannels: 4, kernel: 1 }), gain), "out");
  const ws = workspace(b.build());
  try {
    ws.npy([0, 1].map((k) =>
      float32(
        [1, 3, 16, 16],
        Float32Array.from({ length: 3 * 16 * 16 }, (_, i) => ((i * (k + 5)) % 31) / 30),
      )
    ));
    const cfg = await loadConfig(ws.write({
      model: "model.onnx",
      output: "out/m.onnx",
      input: { name: "images", extra: { gain: [2] } },
      data: { calibration: { npy: "npy" } },
      steps: [
        { use: "calibrate", method: "minmax", biasCorrection: true },
        { use: "quantize" },
      ],
    }));
    const { report, graph } = await runPipeline(cfg, { quiet: true, analyze: false });
    assert.ok(report.methods.includes("bias-correction"));
    const bc = report.details.biasCorrection as { layers: number };
    assert.equal(bc.layers, 3, `bias-corrected layers: ${bc.layers}`);
    assert.deepEqual(graph.inputs.map((i) => i.name), ["images", "gain"]);

    const missing = await loadConfig(ws.write({
      model: "model.onnx",
      output: "out/m2.onnx",
      input: { extra: { gian: [2] } },
      data: { calibration: { npy: "npy" } },
      steps: [{ use: "calibrate", method: "minmax" }, { use: "quantize" }],
    }));
    await assert.rejects(
      runPipeline(missing, { quiet: true }),
      /input\.extra\.gian: expected a model input/,
    );
  } finally {
    ws.cleanup();
  }
});

Deno.test("runPipeline() refines ranges by the model's output error (calibrate.refine) and needs data for it", async () => {
  const { createSession } = await import("@clipq/runtime");
  const ws = workspace(smallDetector());
  try {
    const inputs = [0, 1, 2].map((k) =>
      float32(
        [1, 3, 32, 32],
        Float32Array.from({ length: 3 * 32 * 32 }, (_, i) => ((i * (k + 3)) % 97) / 96),
      )
    );
    ws.npy(inputs);
    // A median "percentile" clips half of every data range: the refinement has to widen them.
    const config = (name: string, refine: unknown) =>
      ws.write({
        model: "model.onnx",
        output: `${name}.onnx`,
        data: { calibration: { npy: "npy" } },
        steps: [
          { use: "calibrate", method: "percentile", percentile: 50, refine },
          { use: "quantize" },
        ],
      }, `${name}.json`);
    const plain = await runPipeline(await loadConfig(config("plain", false)), {
      quiet: true,
      analyze: false,
    });
    const refined = await runPipeline(await loadConfig(config("refined", { images: 2 })), {
      quiet: true,
      analyze: false,
    });
    assert.ok(refined.report.methods.includes("refine"));
    const details = refined.report.details.rangeRefinement as {
      images: number;
      tensors: number;
      refined: number;
      changes: { tensor: string; from: number[]; to: number[]; gainDb: number }[];
    };
    assert.equal(details.images, 2);
    assert.ok(details.refined >= 1 && details.refined <= details.tensors, JSON.stringify(details));
    for (const c of details.changes) assert.ok(c.to[1]! > c.from[1]! && c.gainDb > 0, c.tensor);
    // Only tensors on a grid of their own are judged: a MaxPool's output shares its input's.
    const sources = new Map(
      (refined.report.details.quantize as { tensors: { name: string; source: string }[] }).tensors
        .map((t) => [t.name, t.source]),
    );
    assert.equal(sources.get("maxpool_0"), "shared with clip_0");
    assert.ok(!details.changes.some((c) => sources.get(c.tensor)?.startsWith("shared with")));
    const moved = refined.report.ranges.find((r) => r.tensor === details.changes[0]!.tensor)!;
    assert.match(moved.source, /refined by output error/);
    const html = renderHtml(refined.report);
    assert.match(html, /Ranges refined by output error \(\d+ of \d+ tensors, 2 image\(s\)/);
    assert.ok(html.includes(`<td>${details.changes[0]!.tensor}</td>`));
    // Closer to the float model on every calibration input.
    const run = async (g: Parameters<typeof createSession>[0]) => {
      const s = await createSession(g);
      const out = [];
      for (const x of inputs) {
        out.push(Object.values(await s.run({ images: x }))[0]!.data as Float32Array);
      }
      await s.release();
      return out;
    };
    const [f, a, b] = [
      await run(smallDetector()),
      await run(plain.graph),
      await run(refined.graph),
    ];
    const error = (q: Float32Array[]) =>
      q.reduce((e, y, k) => e + y.reduce((s, v, i) => s + (v - f[k]![i]!) ** 2, 0), 0);
    assert.ok(error(b) < error(a), `output error ${error(a)} → ${error(b)}`);

    // A range the user set is never moved (one the refinement moved above, made by a model node).
    const made = new Set(smallDetector().nodes.flatMap((n) => n.outputs));
    const pinned = details.changes.find((c) => made.has(c.tensor))!.tensor;
    const overridden = await runPipeline(
      await loadConfig(ws.write({
        model: "model.onnx",
        output: "pinned.onnx",
        data: { calibration: { npy: "npy" } },
        steps: [
          { use: "calibrate", method: "percentile", percentile: 50, refine: { images: 2 } },
          { use: "quantize", overrides: { [pinned]: { min: -1, max: 1 } } },
        ],
      }, "pinned.json")),
      { quiet: true, analyze: false },
    );
    const kept = overridden.report.details.rangeRefinement as typeof details;
    assert.ok(!kept.changes.some((c) => c.tensor === pinned), JSON.stringify(kept.changes));
    assert.equal(overridden.report.ranges.find((r) => r.tensor === pinned)?.source, "override");

    const noData = await loadConfig(ws.write({
      model: "model.onnx",
      output: "none.onnx",
      steps: [{ use: "calibrate", method: "clip-bounds", fallback: "float", refine: true }, {
        use: "quantize",
      }],
    }, "none.json"));
    await assert.rejects(
      runPipeline(noData, { quiet: true }),
      (e) =>
        e instanceof ConfigError &&
        /steps\[0\]\.refine: expected calibration images to judge the ranges on/.test(e.message),
    );
  } finally {
    ws.cleanup();
  }
});

Deno.test("runPipeline() reuses saved statistics without running the model and gets the same model", async () => {
  const ws = workspace(smallDetector());
  try {
    ws.npy([0, 1].map((k) =>
      float32(
        [1, 3, 32, 32],
        Float32Array.from({ length: 3 * 32 * 32 }, (_, i) => ((i * (k + 7)) % 53) / 52),
      )
    ));
    const steps = (statistics: Record<string, string>) => [
      { use: "calibrate", method: "clip-bounds", fallback: "mse", samples: 512, statistics },
      { use: "quantize" },
    ];
    const first = await loadConfig(ws.write({
      model: "model.onnx",
      output: "a.onnx",
      data: { calibration: { npy: "npy" } },
      steps: steps({ save: "stats.json" }),
    }));
    await runPipeline(first, { quiet: true });
    const stats = JSON.parse(Deno.readTextFileSync(join(ws.dir, "stats.json")));
    assert.equal(stats.format, "clipq.statistics");
    // No data set at all: the saved histograms are all the second run needs.
    const second = await loadConfig(ws.write({
      model: "model.onnx",
      output: "b.onnx",
      steps: steps({ load: "stats.json" }),
    }));
    const { graph } = await runPipeline(second, { quiet: true });
    const a = decode(Deno.readFileSync(join(ws.dir, "a.onnx")));
    assert.deepEqual({ ...graph, metadata: new Map() }, { ...a, metadata: new Map() });
    // Saved by an mse run, the histograms still hold every value's extremes (mse alone would have
    // taken its sample's, and some tensors here are sampled): minmax reads them.
    const tensors = Object.values(stats.tensors) as { count: number; population: number }[];
    assert.ok(tensors.some((h) => h.count < h.population), "some tensor is sampled");
    assert.ok(tensors.every((h) => !("extremesExact" in h)));
    const third = await loadConfig(ws.write({
      model: "model.onnx",
      output: "c.onnx",
      steps: [
        {
          use: "calibrate",
          method: "clip-bounds",
          fallback: "minmax",
          statistics: { load: "stats.json" },
        },
        { use: "quantize" },
      ],
    }));
    assert.ok((await runPipeline(third, { quiet: true })).saved);
  } finally {
    ws.cleanup();
  }
});

Deno.test("runPipeline({ calibrateOnly }) writes shard statistics, even when clip bounds need no data", async () => {
  const ws = workspace(smallDetector());
  try {
    const cfg = await loadConfig(ws.write({
      model: "model.onnx",
      output: "out/m.onnx",
      steps: [{ use: "calibrate", method: "clip-bounds", fallback: "float" }, { use: "quantize" }],
    }));
    const stats = join(ws.dir, "stats.1.json");
    await runPipeline(cfg, { quiet: true, calibrateOnly: true, shard: [1, 2], statsOut: stats });
    const json = JSON.parse(Deno.readTextFileSync(stats));
    assert.deepEqual([json.format, Object.keys(json.tensors)], ["clipq.statistics", []]);
    assert.throws(() => Deno.statSync(join(ws.dir, "out")), "no model with --calibrate-only");
  } finally {
    ws.cleanup();
  }
});

Deno.test("runPipeline() names an unreadable calibration image, or skips it with a warning", async () => {
  const { darknetPhotos } = await import("../../tools/assets.ts");
  const { DataError } = await import("@clipq/onnx/errors");
  const ws = workspace(smallDetector());
  try {
    const dir = join(ws.dir, "photos");
    Deno.mkdirSync(dir);
    for (const p of (await darknetPhotos()).slice(0, 2)) {
      Deno.copyFileSync(p, join(dir, p.split("/").pop()!));
    }
    Deno.writeFileSync(
      join(dir, "broken.jpg"),
      new Uint8Array([0xff, 0xd8, 0xff, 0xe0, 0, 16, 1, 2]),
    );
    const config = (onBadImage: string, output: string) =>
      loadConfig(ws.write({
        model: "model.onnx",
        output,
        data: { calibration: { images: "photos", onBadImage } },
        steps: [{ use: "calibrate", method: "percentile" }, { use: "quantize" }],
      }));
    await assert.rejects(
      runPipeline(await config("fail", "out/a.onnx"), { quiet: true }),
      (e: unknown) => e instanceof DataError && /broken\.jpg/.test((e as Error).message),
    );
    assert.throws(() => Deno.statSync(join(ws.dir, "out")));
    const warnings: string[] = [];
    const { saved } = await runPipeline(await config("skip", "out/b.onnx"), {
      quiet: true,
      write: (t) => warnings.push(t),
    });
    assert.ok(saved);
    assert.ok(
      warnings.some((w) => w.startsWith("warning:") && w.includes("broken.jpg")),
      warnings.join(""),
    );
  } finally {
    ws.cleanup();
  }
});

Deno.test("runPipeline() with clip-bounds stops a hard-swish input's data range at −3", async () => {
  const { emptyGraph, node } = await import("@clipq/onnx");
  const scalar = (v: number) => float32([], [v]);
  const ws = workspace(emptyGraph({
    inputs: [{ name: "x", dtype: "float32", shape: [1, 1, 4, 4] }],
    outputs: [{ name: "y", dtype: "float32", shape: [1, 1, 4, 4] }],
    initializers: new Map([
      ["w", float32([1, 1, 1, 1], [20])],
      ["w2", float32([1, 1, 1, 1], [0.5])],
      ["three", scalar(3)],
      ["zero", scalar(0)],
      ["six", scalar(6)],
    ]),
    nodes: [
      node({ name: "conv", op: "Conv", inputs: ["x", "w"], outputs: ["c"] }),
      node({ name: "add", op: "Add", inputs: ["c", "three"], outputs: ["t"] }),
      node({ name: "clip", op: "Clip", inputs: ["t", "zero", "six"], outputs: ["g"] }),
      node({ name: "mul", op: "Mul", inputs: ["c", "g"], outputs: ["p"] }),
      node({ name: "div", op: "Div", inputs: ["p", "six"], outputs: ["h"] }),
      node({ name: "conv2", op: "Conv", inputs: ["h", "w2"], outputs: ["y"] }),
    ],
    opsetImports: [{ domain: "", version: 13 }],
  }));
  try {
    const v = Float32Array.from({ length: 16 }, (_, i) => (i - 8) / 8); // c = 20x ∈ [−20, 17.5]
    ws.npy([float32([1, 1, 4, 4], v)]);
    const cfg = await loadConfig(ws.write({
      model: "model.onnx",
      output: "out/m.onnx",
      data: { calibration: { npy: "npy" } },
      steps: [{ use: "calibrate", method: "clip-bounds", fallback: "minmax" }, { use: "quantize" }],
    }));
    const { report } = await runPipeline(cfg, { quiet: true, analyze: false });
    const c = report.ranges.find((r) => r.tensor === "c")!;
    assert.deepEqual([c.min, c.max, c.source], [-3, 17.5, "minmax"]);
  } finally {
    ws.cleanup();
  }
});

Deno.test("runPipeline() calibrates what the quantize step's exclusions leave to quantize", async () => {
  const graph = smallDetector();
  const pool = graph.nodes.find((n) => n.op === "MaxPool")!;
  const ws = workspace(graph);
  try {
    ws.npy([float32([1, 3, 32, 32], Float32Array.from({ length: 3072 }, (_, i) => (i % 89) / 88))]);
    // A float MaxPool's output is a tensor of its own for the conv after it (quantized, the pool
    // shares its input's range, so calibration would not measure it).
    const cfg = await loadConfig(ws.write({
      model: "model.onnx",
      output: "out/m.onnx",
      data: { calibration: { npy: "npy" } },
      steps: [
        { use: "calibrate", method: "minmax" },
        { use: "quantize", exclude: { names: [pool.name] } },
      ],
    }));
    const { report } = await runPipeline(cfg, { quiet: true, analyze: false });
    const notHead = report.excluded.filter((e) => !e.reason.includes("head: auto"));
    assert.deepEqual(notHead.map((e) => `${e.node}: ${e.reason}`), [
      `${pool.name}: excluded by name`,
    ]);
    assert.ok(report.ranges.some((r) => r.tensor === pool.outputs[0]));
    // The report lists the exact rewrites made for onnxruntime (the RGB input padded to 4
    // channels), the HTML page too.
    const rewrites = (report.details.quantize as { rewrites: string[] }).rewrites;
    assert.ok(rewrites.some((r) => r.includes("padded from 3 to 4 channels")), rewrites.join("\n"));
    assert.ok(renderHtml(report).includes("padded from 3 to 4 channels"));
    // A name no node has is an error, not a node silently left quantized.
    const misspelt = await loadConfig(ws.write({
      model: "model.onnx",
      output: "out2/m.onnx",
      data: { calibration: { npy: "npy" } },
      steps: [{ use: "calibrate" }, { use: "quantize", exclude: { names: ["maxpol_0"] } }],
    }));
    await assert.rejects(
      runPipeline(misspelt, { quiet: true, analyze: false }),
      /^ConfigError: steps\[1\]\.exclude\.names: expected names of the model's nodes .*found "maxpol_0"/,
    );
    assert.throws(() => Deno.statSync(join(ws.dir, "out2")));
    // So is a range override for a tensor the model does not have.
    const override = await loadConfig(ws.write({
      model: "model.onnx",
      output: "out3/m.onnx",
      data: { calibration: { npy: "npy" } },
      steps: [
        { use: "calibrate", overrides: { "conv_O": { min: 0, max: 1 } } },
        { use: "quantize" },
      ],
    }));
    await assert.rejects(
      runPipeline(override, { quiet: true, analyze: false }),
      /^ConfigError: steps\[0\]\.overrides: expected tensors of the model .*found "conv_O"/,
    );
    assert.throws(() => Deno.statSync(join(ws.dir, "out3")));
  } finally {
    ws.cleanup();
  }
});

Deno.test("runPipeline() checks data, batch size and head outputs against the model, naming the file or key", async () => {
  const { ModelBuilder } = await import("@clipq/onnx/builder");
  const { default: pngjs } = await import("pngjs");
  const { ConfigError, DataError } = await import("@clipq/onnx/errors");
  const ws = workspace(smallDetector());
  try {
    const png = new pngjs.PNG({ width: 40, height: 30 });
    png.data.fill(128);
    Deno.mkdirSync(join(ws.dir, "photos"));
    Deno.writeFileSync(join(ws.dir, "photos", "a.png"), pngjs.PNG.sync.write(png));
    const steps = [{ use: "calibrate", method: "minmax" }, { use: "quantize" }];
    const run = async (over: Record<string, unknown>, dir = ws) =>
      await runPipeline(
        await loadConfig(dir.write({ model: "model.onnx", output: "out/o.onnx", steps, ...over })),
        { quiet: true, analyze: false },
      );
    const cases: [Record<string, unknown>, RegExp, typeof ConfigError | typeof DataError][] = [
      // onnxruntime's refusal of these named neither the file nor the sizes, and blamed the model.
      [
        {
          data: {
            calibration: { npy: ws.npy([float32([1, 3, 16, 16], new Float32Array(768))], "small") },
          },
        },
        /small\/0\.npy: expected shape \[1, 3, 32, 32\] of model input images; found \[1, 3, 16, 16\]/,
        DataError,
      ],
      [
        {
          data: {
            calibration: {
              npy: ws.npy(
                [{ dtype: "uint8", dims: [1, 3, 32, 32], data: new Uint8Array(3072) }],
                "bytes",
              ),
            },
          },
        },
        /bytes\/0\.npy: expected float32 for model input images; found uint8/,
        DataError,
      ],
      // Used to be reported as "data.calibration.images: expected at least one calibration image".
      [
        { data: { calibration: { npy: ws.npy([], "none") } } },
        /none: expected \.npy files \(data\.calibration\.npy\); found none/,
        DataError,
      ],
      [
        { data: { calibration: { images: "photos", batchSize: 2 } } },
        /^data\.calibration\.batchSize: expected 1, the fixed batch size of input images; found 2/,
        ConfigError,
      ],
      // Checked with the model before any step (a step that feeds no image never saw it).
      [
        {
          data: { calibration: { images: "photos" } },
          input: { mean: [0.5, 0.5] },
          steps: [{ use: "normalize" }],
        },
        /^input\.mean: expected 1 or 3 finite numbers, found \[0\.5,0\.5\]/,
        ConfigError,
      ],
      // A layout of the wrong rank used to blame input.color ("found 1: set input.color to gray").
      [
        { data: { calibration: { images: "photos" } }, input: { layout: "CHW" } },
        /^input\.layout: expected "NCHW" or "NHWC" for input images \[1, 3, 32, 32\] of rank 4; found "CHW", a layout of rank 3/,
        ConfigError,
      ],
      [
        { data: { calibration: { images: "photos" } }, input: { color: "gray" } },
        /^input\.color: expected 1 channel\(s\) .* found 3: set input\.color to "RGB" or "BGR"/,
        ConfigError,
      ],
      // NHWC on an NCHW input read its 3 channels as the height and blamed input.size.
      [
        { data: { calibration: { images: "photos" } }, input: { layout: "NHWC" } },
        /^input\.layout: expected "NCHW" for input images \[1, 3, 32, 32\], whose second axis holds its 3 channels; found "NHWC"/,
        ConfigError,
      ],
      // Used to surface as "headOutputs: …" from inside the quantizer.
      [
        { data: { calibration: { images: "photos" } }, head: { type: "db", outputs: ["map"] } },
        /^head\.outputs\[0\]: expected one of the model outputs out; found "map"/,
        ConfigError,
      ],
    ];
    for (const [over, re, type] of cases) {
      await assert.rejects(run(over), (e) => e instanceof type && re.test(e.message));
      assert.throws(() => Deno.statSync(join(ws.dir, "out")), "nothing written");
    }
    // No graph output: onnxruntime's "OrtValue indexes should have been populated".
    const silent = workspace({ ...smallDetector(), outputs: [] });
    try {
      await assert.rejects(
        run({}, silent),
        /^ModelError: the input model: expected at least one graph output; found none$/,
      );
    } finally {
      silent.cleanup();
    }
    // A NaN weight: every tensor after it had no range, its layers stayed float, and the run
    // exited 0 with a model 99 % of float's size.
    const g = smallDetector();
    const [wName, w] = [...g.initializers].find(([, t]) => t.dims.length === 4)!;
    const broken = workspace({
      ...g,
      initializers: new Map([...g.initializers, [wName, {
        ...w,
        data: new Float32Array(w.data.length).fill(NaN),
      }]]),
    });
    try {
      await assert.rejects(
        run({ data: { calibration: { images: join(ws.dir, "photos") } } }, broken),
        new RegExp(
          `^ModelError: initializer ${wName}: expected numbers; found ${w.data.length} NaN of its ${w.data.length} values`,
        ),
      );
    } finally {
      broken.cleanup();
    }
    const b = new ModelBuilder({ seed: 1 });
    b.output(b.relu(b.input("img", [3, 32, 32])), "y");
    const chw = workspace(b.build());
    try {
      Deno.mkdirSync(join(chw.dir, "photos"));
      Deno.copyFileSync(join(ws.dir, "photos", "a.png"), join(chw.dir, "photos", "a.png"));
      await assert.rejects(
        run({ data: { calibration: { images: "photos" } }, input: { layout: "NHWC" } }, chw),
        /^ConfigError: input\.layout: expected "CHW" for input img \[3, 32, 32\] of rank 3; found "NHWC", a layout of rank 4/,
      );
      // Used to name the key "batchSize" alone.
      await assert.rejects(
        run({ data: { calibration: { images: "photos", batchSize: 2 } } }, chw),
        /^ConfigError: data\.calibration\.batchSize: expected 1 for input img with layout CHW \(it has no batch axis\); found 2/,
      );
    } finally {
      chw.cleanup();
    }
  } finally {
    ws.cleanup();
  }
});

Deno.test("runPipeline() refuses an unwritable output folder before any step, and a failed report takes its folders along", async () => {
  const ws = workspace(smallDetector());
  try {
    ws.npy([float32([1, 3, 32, 32], new Float32Array(3072).fill(0.5))]);
    const calibrate = { use: "calibrate", method: "minmax" };
    const config = (over: Record<string, unknown>) =>
      loadConfig(ws.write({
        model: "model.onnx",
        output: "out/o.onnx",
        data: { calibration: { npy: "npy" } },
        steps: [calibrate, { use: "quantize" }],
        ...over,
      }));
    if (Deno.build.os === "linux") {
      // procfs takes no new files, even from root. This used to fail after the whole run, naming
      // a temporary file, with the hint that the model was malformed.
      Deno.writeTextFileSync(
        join(ws.dir, "mark.ts"),
        `export default () => ({ name: "mark", run: (g) => { globalThis.clipqRan = true; return g; } });`,
      );
      await assert.rejects(
        runPipeline(
          await config({ report: "/proc/clipq-report.json", steps: [{ use: "./mark.ts" }] }),
          {
            quiet: true,
          },
        ),
        /^ConfigError: report: expected a writable folder for \/proc\/clipq-report\.json; found \/proc not writable/,
      );
      assert.equal((globalThis as { clipqRan?: boolean }).clipqRan, undefined, "no step ran");
    }
    // A step that puts a folder where report.html goes: the report fails after the model was
    // written; the model, report.json and the folders the run made all go.
    Deno.writeTextFileSync(
      join(ws.dir, "block.ts"),
      `export default () => ({ name: "block", run: (g) => { Deno.mkdirSync(${
        JSON.stringify(join(ws.dir, "new", "a", "r.html"))
      }, { recursive: true }); return g; } });`,
    );
    const blocked = await config({
      output: "new/a/o.onnx",
      report: "new/a/r.json",
      steps: [calibrate, { use: "quantize" }, { use: "./block.ts" }],
    });
    await assert.rejects(runPipeline(blocked, { quiet: true, analyze: false }));
    assert.throws(() => Deno.statSync(join(ws.dir, "new")), "no folder left behind");
  } finally {
    ws.cleanup();
  }
});

Deno.test("runPipeline() refuses the image input in input.extra and a calibration shard that holds no file", async () => {
  const ws = workspace(smallDetector());
  try {
    ws.npy([0, 1].map((k) => float32([1, 3, 32, 32], new Float32Array(3072).fill(k))));
    Deno.mkdirSync(join(ws.dir, "photos"));
    const { default: pngjs } = await import("pngjs");
    Deno.writeFileSync(
      join(ws.dir, "photos", "a.png"),
      pngjs.PNG.sync.write(new pngjs.PNG({ width: 8, height: 8 })),
    );
    const config = (over: Record<string, unknown>) =>
      loadConfig(ws.write({
        model: "model.onnx",
        output: "out/o.onnx",
        data: { calibration: { npy: "npy" } },
        steps: [{ use: "calibrate", method: "minmax" }, { use: "quantize" }],
        ...over,
      }));
    // onnxruntime used to refuse the fixed values' shape, naming neither key.
    await assert.rejects(
      runPipeline(
        await config({
          input: { extra: { images: [1] } },
          data: { calibration: { images: "photos" } },
        }),
        { quiet: true },
      ),
      /^ConfigError: input\.name: expected one of the model inputs images; found none \(input\.extra gives them all fixed values\)/,
    );
    await assert.rejects(
      runPipeline(
        await config({
          input: { name: "images", extra: { images: [1] } },
          data: { calibration: { images: "photos" } },
        }),
        { quiet: true },
      ),
      /^ConfigError: input\.extra\.images: expected inputs other than the image input images/,
    );
    // Two files, three shards: the third used to fail with "… among 0 files, found none".
    await assert.rejects(
      runPipeline(await config({}), {
        quiet: true,
        calibrateOnly: true,
        shard: [3, 3],
        statsOut: join(ws.dir, "s3.json"),
      }),
      /^ConfigError: --shard: expected a shard that holds some of the 2 calibration file\(s\); found 3\/3, which holds none/,
    );
    assert.throws(() => Deno.statSync(join(ws.dir, "s3.json")));
    assert.throws(() => Deno.statSync(join(ws.dir, "out")));
  } finally {
    ws.cleanup();
  }
});

Deno.test("runPipeline() wants a value of the right count for every other model input before any step", async () => {
  const { ModelBuilder } = await import("@clipq/onnx/builder");
  const b = new ModelBuilder({ seed: 1 });
  const x = b.conv(b.input("images", [1, 3, 8, 8]), { outChannels: 4, kernel: 3, pad: 1 });
  const y = b.relu(b.add(x, b.input("shift", [1, 4, 1, 1])));
  b.output(b.conv(y, { outChannels: 2, kernel: 1 }), "y");
  const ws = workspace(b.build());
  try {
    ws.npy([float32([1, 3, 8, 8], new Float32Array(192).fill(0.5))]);
    const run = async (input: Record<string, unknown>) =>
      await runPipeline(
        await loadConfig(ws.write({
          model: "model.onnx",
          output: "out/o.onnx",
          input,
          data: { calibration: { npy: "npy" } },
          steps: [{ use: "calibrate", method: "minmax" }, { use: "quantize" }],
        })),
        { quiet: true, analyze: false },
      );
    // onnxruntime's refusals named neither key, and their hint blamed the model.
    await assert.rejects(
      run({}),
      /^ConfigError: input\.extra: expected values for every model input besides images; found none for shift \[1, 4, 1, 1\]/,
    );
    await assert.rejects(
      run({ extra: { shift: [1, 2, 3] } }),
      /^ConfigError: input\.extra\.shift: expected 4 value\(s\) for input shift \[1, 4, 1, 1\]; found 3/,
    );
    assert.throws(() => Deno.statSync(join(ws.dir, "out")));
    const { saved } = await run({ extra: { shift: [0, 1, 2, 3] } });
    assert.ok(saved);
  } finally {
    ws.cleanup();
  }
});

Deno.test("runPipeline() warns when evaluation images are configured but nothing reads them, and keys step warnings by entry", async () => {
  const ws = workspace(smallDetector());
  try {
    ws.npy([float32([1, 3, 32, 32], new Float32Array(3072).fill(0.5))]);
    const { default: pngjs } = await import("pngjs");
    Deno.mkdirSync(join(ws.dir, "photos"));
    Deno.writeFileSync(
      join(ws.dir, "photos", "a.png"),
      pngjs.PNG.sync.write(new pngjs.PNG({ width: 8, height: 8 })),
    );
    const text: string[] = [];
    const run = async (report?: string) =>
      await runPipeline(
        await loadConfig(ws.write({
          model: "model.onnx",
          output: "out/o.onnx",
          ...(report ? { report } : {}),
          data: { calibration: { npy: "npy" }, evaluation: { images: "photos" } },
          steps: [{ use: "calibrate", method: "minmax" }, { use: "quantize" }],
        })),
        { quiet: true, write: (t) => text.push(t) },
      );
    await run();
    assert.match(text.join(""), /warning: data\.evaluation: nothing reads these images/);
    // A step's own warning is keyed by its entry, as its errors are.
    text.length = 0;
    await runPipeline(
      await loadConfig(ws.write({
        model: "model.onnx",
        output: "out/o.onnx",
        data: { calibration: { npy: "npy" } },
        steps: [{ use: "calibrate", method: "minmax" }, {
          use: "quantize",
          exclude: { ops: ["Gemm"] },
        }],
      })),
      { quiet: true, write: (t) => text.push(t) },
    );
    assert.match(text.join(""), /^warning: steps\[1\]\.exclude\.ops: "Gemm" kept no node float/m);
    text.length = 0;
    await run("out/r.json"); // the report's analysis reads them
    assert.doesNotMatch(text.join(""), /data\.evaluation/);
  } finally {
    ws.cleanup();
  }
});

Deno.test("runPipeline() refuses a head that does not fit the model's outputs before any step runs", async () => {
  const ws = workspace(smallDetector()); // "out" is [1, 6, 16, 16]: one anchor × (5 + 1 class)
  try {
    ws.npy([float32([1, 3, 32, 32], Float32Array.from({ length: 3072 }, (_, i) => (i % 61) / 60))]);
    const config = (anchors: number[][][]) =>
      loadConfig(ws.write({
        model: "model.onnx",
        output: "out/m.onnx",
        data: { calibration: { npy: "npy" } },
        head: { type: "yolov3", outputs: ["out"], strides: [2], classes: 1, anchors },
        steps: [{ use: "calibrate", method: "minmax" }, { use: "quantize" }],
      }));
    const lines: string[] = [];
    // Two anchors need 12 channels: refused under head, before calibration starts.
    await assert.rejects(
      runPipeline(await config([[[4, 4], [8, 8]]]), { write: (t) => lines.push(t) }),
      (e) =>
        e instanceof ConfigError && e.keyPath === "head" &&
        /output "out": expected shape .*; the yolov3 head description does not fit/.test(e.message),
    );
    assert.ok(!lines.some((l) => /step 1\//.test(l)), lines.join(""));
    assert.throws(() => Deno.statSync(join(ws.dir, "out")));
    // One anchor fits.
    const { saved } = await runPipeline(await config([[[4, 4]]]), { quiet: true, analyze: false });
    assert.ok(saved);
  } finally {
    ws.cleanup();
  }
  // The same with dynamic sizes ([1, 3, h, w] → [1, 6, ?, ?]): checked at input.size, where it
  // used to pass unchecked.
  const g = smallDetector();
  const dynamic = workspace({
    ...g,
    inputs: g.inputs.map((v) => ({ ...v, shape: [1, 3, "h", "w"] })),
    outputs: g.outputs.map((v) => ({ ...v, shape: [1, 6, "oh", "ow"] })),
    valueInfo: [],
  });
  try {
    Deno.mkdirSync(join(dynamic.dir, "photos"));
    writePng(join(dynamic.dir, "photos", "a.png"), 1);
    await assert.rejects(
      runPipeline(
        await loadConfig(dynamic.write({
          model: "model.onnx",
          output: "out/m.onnx",
          input: { size: [32, 32] },
          data: { calibration: { images: "photos" } },
          head: {
            type: "yolov3",
            outputs: ["out"],
            strides: [2],
            classes: 1,
            anchors: [[[4, 4], [8, 8]]],
          },
          steps: [{ use: "calibrate", method: "minmax" }, { use: "quantize" }],
        })),
        { quiet: true },
      ),
      (e) =>
        e instanceof ConfigError && e.keyPath === "head" &&
        /output "out": expected shape .* but found \[1, 6, 16, 16\]/.test(e.message),
    );
  } finally {
    dynamic.cleanup();
  }
});

for (const dtype of ["uint8", "int32"] as const) {
  Deno.test(`runPipeline() feeds ${dtype} pixels to a model that takes them, and wants raw pixels in the input spec`, async () => {
    const { darknetPhotos } = await import("../../tools/assets.ts");
    const { emptyGraph, node, tensor } = await import("@clipq/onnx");
    // TensorFlow Object Detection API (uint8) or MoveNet (int32): pixels in, the model scales them.
    const inner = smallDetector();
    const g = emptyGraph({
      ...inner,
      inputs: [{ name: "pixels", dtype, shape: [1, 3, 32, 32] }],
      initializers: new Map([...inner.initializers, ["inv255", tensor("float32", [], [1 / 255])]]),
      nodes: [
        node({
          name: "cast",
          op: "Cast",
          inputs: ["pixels"],
          outputs: ["f"],
          attributes: { to: { type: "int", value: 1 } },
        }),
        node({ name: "scale", op: "Mul", inputs: ["f", "inv255"], outputs: ["images"] }),
        ...inner.nodes,
      ],
    });
    const ws = workspace(g);
    try {
      const dir = join(ws.dir, "photos");
      Deno.mkdirSync(dir);
      for (const p of (await darknetPhotos()).slice(0, 2)) {
        Deno.copyFileSync(p, join(dir, p.split("/").pop()!));
      }
      const config = (input: Record<string, unknown>) =>
        loadConfig(ws.write({
          model: "model.onnx",
          output: "out/m.onnx",
          input: { size: [32, 32], ...input },
          data: { calibration: { images: "photos" } },
          steps: [{ use: "calibrate", method: "minmax" }, { use: "quantize" }],
        }));
      const { report, saved } = await runPipeline(await config({ scale: 1 }), {
        quiet: true,
        analyze: false,
      });
      assert.ok(saved);
      // Whole pixel values reached the model: the Cast's output spans them.
      const f = report.ranges.find((r) => r.tensor === "f")!;
      assert.ok(f.min >= 0 && f.max <= 255 && f.max > 200, JSON.stringify(f));
      await assert.rejects(
        async () => runPipeline(await config({}), { quiet: true, analyze: false }),
        (e: unknown) =>
          e instanceof ConfigError && /input\.scale/.test(e.message) &&
          new RegExp(`${dtype} pixels`).test(e.message),
      );
    } finally {
      ws.cleanup();
    }
  });
}

Deno.test("a step's batches name what they are for on the progress line and stop at the limit asked", async () => {
  const ws = workspace();
  try {
    const images = join(ws.dir, "images");
    Deno.mkdirSync(images);
    for (const k of [1, 2, 3]) writePng(join(images, `${k}.png`), k);
    // Unreadable, and first: skipped, it does not count toward the limit.
    Deno.writeTextFileSync(join(images, "0.png"), "not a png");
    const config = await loadConfig(ws.write({
      model: "model.onnx",
      output: "out.onnx",
      input: { size: [32, 32] },
      data: { calibration: { images: "images", onBadImage: "skip" } },
      steps: [{ use: "normalize" }],
    }));
    const lines: string[] = [];
    const ctx = createContext(
      smallDetector(),
      config,
      createReporter({ write: (t) => lines.push(t) }),
    );
    const count = async (batches: AsyncIterable<{ files: readonly string[] }>) => {
      let n = 0;
      for await (const b of batches) n += b.files.length;
      return n;
    };
    assert.equal(await count(ctx.batches("calibration", { label: "report: x", limit: 2 })), 2);
    assert.equal(await count(ctx.batches("calibration")), 3);
    // The limited pass counts the images it gave; the whole pass counts every file, skipped too.
    assert.deepEqual(lines.filter((l) => !l.startsWith("warning: ")), [
      "report: x 1/2\n",
      "report: x 2/2\n",
      "calibration 2/4\n",
      "calibration 3/4\n",
      "calibration 4/4\n",
    ]);
    assert.equal(
      lines.filter((l) => /^warning: skipped unreadable image: .*0\.png/.test(l)).length,
      2,
    );
  } finally {
    ws.cleanup();
  }
});

Deno.test("withStaticImageInput() writes one channel for a gray input, three otherwise", () => {
  const g = emptyGraph({
    inputs: [{ name: "x", dtype: "float32", shape: ["n", "c", "h", "w"] }],
    outputs: [{ name: "y", dtype: "float32" }],
    nodes: [node({ name: "id", op: "Identity", inputs: ["x"], outputs: ["y"] })],
  });
  const shape = (input: Record<string, unknown>) =>
    withStaticImageInput(g, { size: [16, 12], static: true, ...input }).inputs[0]!.shape;
  assert.deepEqual(shape({ color: "gray" }), ["n", 1, 16, 12]);
  assert.deepEqual(shape({ color: "gray", layout: "NHWC" }), ["n", 16, 12, 1]);
  assert.deepEqual(shape({}), ["n", 3, 16, 12]);
});

Deno.test("runPipeline() with input.static writes input.size into a dynamic model's input, so quantize sees static shapes", async () => {
  const b = new ModelBuilder({ seed: 5 });
  const x = b.input("images", [1, 3, "h", "w"]);
  const h = b.relu(b.conv(x, { outChannels: 4, kernel: 3, pad: 1 }));
  b.output(b.conv(b.resize(h, 2), { outChannels: 2, kernel: 3, pad: 1 }), "out");
  const ws = workspace(b.build());
  try {
    ws.npy([0, 1].map((k) =>
      float32(
        [1, 3, 16, 12],
        Float32Array.from({ length: 3 * 16 * 12 }, (_, i) => ((i * (k + 3)) % 17) / 16),
      )
    ));
    const run = async (input: Record<string, unknown>, output: string) =>
      await runPipeline(
        await loadConfig(ws.write({
          model: "model.onnx",
          output,
          input: { name: "images", ...input },
          data: { calibration: { npy: "npy" } },
          steps: [{ use: "calibrate", method: "minmax" }, { use: "quantize" }],
        })),
        { quiet: true, analyze: false },
      );
    const fixed = await run({ size: [16, 12], static: true }, "out/static.onnx");
    assert.deepEqual(fixed.graph.inputs[0]!.shape, [1, 3, 16, 12]);
    const rewrites = (fixed.report.details.quantize as { rewrites: string[] }).rewrites;
    assert.ok(rewrites.some((r) => /channels-last Expand/.test(r)), rewrites.join("\n"));
    // Without it the model keeps its dynamic size, and the upsampling its one-channel view.
    const dynamic = await run({ size: [16, 12] }, "out/dynamic.onnx");
    assert.deepEqual(dynamic.graph.inputs[0]!.shape, [1, 3, "h", "w"]);
    const kept = (dynamic.report.details.quantize as { rewrites: string[] }).rewrites;
    assert.ok(kept.some((r) => /one-channel|\[N·4, 1, H, W\] view/.test(r)), kept.join("\n"));
    await assert.rejects(
      () => run({ static: true }, "out/none.onnx"),
      /input\.static: expected input\.size/,
    );
  } finally {
    ws.cleanup();
  }
});

Deno.test("runPipeline() warns when the data give tensors no range, not when clip-bounds' fallback float leaves them without", async () => {
  const ws = workspace(smallDetector());
  try {
    // Finite inputs so large that every conv output overflows: no tensor gets a finite value, and
    // the model came out almost all float behind a plain "wrote …".
    ws.npy([float32([1, 3, 32, 32], new Float32Array(3 * 32 * 32).fill(3e38))]);
    const run = async (steps: unknown[]) => {
      const lines: string[] = [];
      const cfg = await loadConfig(ws.write({
        model: "model.onnx",
        output: "out/m.onnx",
        data: { calibration: { npy: "npy" } },
        steps,
      }));
      await runPipeline(cfg, { analyze: false, write: (t) => lines.push(t) });
      return lines.filter((l) => l.startsWith("warning: ")).join("");
    };
    assert.match(
      await run([{ use: "calibrate", method: "percentile" }, { use: "quantize" }]),
      /warning: \d+ of \d+ tensors got no range from the data \(first: .*\): every value seen was NaN or infinite, or the statistics hold none; their nodes stay float/,
    );
    const onPurpose = await run([
      { use: "calibrate", method: "clip-bounds", fallback: "float" },
      { use: "quantize" },
    ]);
    assert.ok(!/got no range/.test(onPurpose), onPurpose);
  } finally {
    ws.cleanup();
  }
});

Deno.test("imageInput() says so when every model input has an initializer", () => {
  const g = emptyGraph({
    nodes: [node({ name: "r", op: "Relu", inputs: ["x"], outputs: ["y"] })],
    inputs: [{ name: "x", dtype: "float32", shape: [1, 3, 4, 4] }],
    initializers: new Map([["x", float32([1, 3, 4, 4], new Float32Array(48))]]),
    outputs: [{ name: "y" }],
  });
  // It had read "expected one of the model inputs ; found none (input.extra gives them all …)".
  assert.throws(
    () => imageInput(g, {}),
    (e: Error) =>
      e instanceof ConfigError &&
      e.message ===
        "input.name: expected a model input for the images; found none: every input has an initializer, a fixed value (x)",
  );
});
