import assert from "node:assert/strict";
import { join } from "node:path";
import { ConfigError } from "@clipq/onnx/errors";
import { loadConfig, parseConfig } from "./config.ts";
import { builtinSteps } from "./builtins.ts";
import { workspace } from "./_fixtures_test.ts";

const registry = builtinSteps();

async function configError(raw: unknown, baseDir: string): Promise<ConfigError> {
  try {
    await parseConfig(raw, { registry, baseDir });
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error(`expected a ConfigError for ${JSON.stringify(raw)}`);
}

Deno.test("loadConfig() resolves relative paths against the config's folder", async () => {
  const ws = workspace();
  try {
    const file = ws.write({
      model: "model.onnx",
      output: "out/m.int8.onnx",
      report: "out/report.json",
      steps: [{ use: "calibrate", method: "clip-bounds", fallback: "float" }, { use: "quantize" }],
    });
    const c = await loadConfig(file);
    assert.equal(c.model, ws.model);
    assert.equal(c.output, join(ws.dir, "out/m.int8.onnx"));
    assert.equal(c.report, join(ws.dir, "out/report.json"));
    assert.deepEqual(c.steps.map((s) => s.name), ["calibrate", "quantize"]);
    assert.match(c.hash, /^[0-9a-f]{64}$/);
  } finally {
    ws.cleanup();
  }
});

Deno.test("parseConfig() names the key path and what was expected in every error", async () => {
  const ws = workspace();
  const base = { model: "model.onnx", output: "o.onnx", steps: [] as unknown[] };
  try {
    const cases: [unknown, string, RegExp][] = [
      [{ ...base, modle: 1 }, "modle", /unknown key; expected one of \$schema, model, output/],
      [
        { ...base, input: { size: [640, 640], sise: 1 } },
        "input.sise",
        /unknown key; expected one of name, size/,
      ],
      [{ ...base, input: { size: [640] } }, "input.size", /expected at least 2 item/],
      // "expected a string or an object or an object" did not say which objects.
      [
        { ...base, model: 42 },
        "model",
        /^model: expected a string or an object with darknet or an object with tfjs; found 42$/,
      ],
      [
        { ...base, input: { size: ["640", 640] } },
        "input.size[0]",
        /expected an integer; found "640"/,
      ],
      [{ ...base, input: { scale: -1 } }, "input.scale", /expected a number ≥ 1e-9; found -1/],
      [{ ...base, input: { scale: 1e300 } }, "input.scale", /expected a number ≤ 1000000/],
      [
        { ...base, input: { layout: "HWC" } },
        "input.layout",
        /expected one of NCHW, NHWC, CHW; found "HWC"/,
      ],
      [
        { ...base, data: { calibration: { limit: 2.5 } } },
        "data.calibration.limit",
        /expected an integer; found 2.5/,
      ],
      [
        { ...base, steps: [{ use: "normalize" }, { use: "calibrate", method: "percentil" }] },
        "steps[1].method",
        /expected one of minmax, percentile, mse, entropy, aciq, clip-bounds; found "percentil"/,
      ],
      [
        { ...base, steps: [{ use: "quantize", exclude: { pattern: "(" } }] },
        "steps[0].exclude.pattern",
        /expected a regular expression/,
      ],
      [
        { ...base, steps: [{ use: "quantize", exclude: { heads: "auto" } }] },
        "steps[0].exclude.heads",
        /unknown key; expected one of names, ops, pattern, head/,
      ],
      [
        { ...base, steps: [{ use: "quantise" }] },
        "steps[0].use",
        /expected one of normalize, svd-fc, calibrate, quantize, evaluate or a module path; found "quantise"/,
      ],
      [
        { ...base, steps: [{ use: "calibrate", lossAware: { lambda: "x" } }] },
        "steps[0].lossAware.lambda",
        /expected a number; found "x"/,
      ],
      [
        { ...base, steps: [{ use: "calibrate", percentile: Number.NaN }] },
        "steps[0].percentile",
        /expected a finite number; found NaN/,
      ],
      // Four values passed the schema and were refused only with the model (alpha is dropped).
      [
        { ...base, input: { mean: [0.1, 0.2, 0.3, 0.4] } },
        "input.mean",
        /at most 3/,
      ],
      [{ model: "model.onnx", steps: [] }, "output", /required/],
      [{ ...base, model: "missing.onnx" }, "model", /expected an existing file; found nothing at/],
      [{ ...base, output: "model.onnx" }, "output", /expected a path other than the input model/],
      [
        { ...base, data: { calibration: { images: "nope/" } } },
        "data.calibration.images",
        /expected an existing file or folder/,
      ],
      [{ ...base, model: "asset:ppocr-det" }, "model", /no asset resolver/],
    ];
    for (const [raw, key, re] of cases) {
      const e = await configError(raw, ws.dir);
      assert.equal(e.keyPath, key, `${JSON.stringify(raw)}: ${e.message}`);
      assert.match(e.message, re);
    }
  } finally {
    ws.cleanup();
  }
});

Deno.test("parseConfig() loads a custom step from a module path relative to the config", async () => {
  const ws = workspace();
  try {
    Deno.writeTextFileSync(
      join(ws.dir, "rename_step.ts"),
      `export default (options = {}) => {
        if (typeof options.suffix !== "string") throw new (class extends Error {})("suffix");
        return { name: "rename", run: (g) => Promise.resolve({ ...g, name: g.name + options.suffix }) };
      };`,
    );
    const c = await parseConfig(
      { model: "model.onnx", output: "o.onnx", steps: [{ use: "./rename_step.ts", suffix: "-x" }] },
      { registry, baseDir: ws.dir },
    );
    assert.equal(c.steps[0]!.name, "rename");
    const e = await configError(
      { model: "model.onnx", output: "o.onnx", steps: [{ use: "./missing_step.ts" }] },
      ws.dir,
    );
    assert.equal(e.keyPath, "steps[0].use");
    assert.match(e.message, /expected a loadable step module/);
  } finally {
    ws.cleanup();
  }
});

Deno.test("parseConfig() rejects expressions that reach outside the sandbox, naming the key", async () => {
  const ws = workspace();
  try {
    const { StepRegistry } = await import("./step.ts");
    const { SVD_OPTIONS } = await import("./steps/options.ts");
    // A registry with a step whose option takes expressions, as svd-fc's rank does.
    const reg = new StepRegistry().register({
      name: "svd-fc",
      description: "test",
      options: SVD_OPTIONS,
      factory: () => ({ name: "svd-fc", run: (g) => Promise.resolve(g) }),
    });
    for (
      const expr of [
        'import({"x": 1})',
        'createUnit("x")',
        'evaluate("1")',
        "f(x) = 1",
        "rows.constructor",
      ]
    ) {
      await assert.rejects(
        parseConfig({
          model: "model.onnx",
          output: "o.onnx",
          steps: [{ use: "svd-fc", rank: expr }],
        }, {
          registry: reg,
          baseDir: ws.dir,
        }),
        (e: unknown) => e instanceof ConfigError && e.keyPath === "steps[0].rank",
        expr,
      );
    }
    const ok = await parseConfig(
      {
        model: "model.onnx",
        output: "o.onnx",
        steps: [{ use: "svd-fc", rank: "ceil(0.25 * min(rows, cols))" }],
      },
      { registry: reg, baseDir: ws.dir },
    );
    const rank = ok.entries[0]!.options.rank as (v: Record<string, number>) => number;
    assert.equal(rank({ rows: 4096, cols: 25088, params: 0, index: 0, layers: 1 }), 1024);
  } finally {
    ws.cleanup();
  }
});

Deno.test("the README's custom step works and its factory's errors land under the entry's key", async () => {
  const readme = Deno.readTextFileSync(new URL("../../README.md", import.meta.url));
  const code = /```ts\n(\/\/ steps\/widen\.ts[\s\S]*?)```/.exec(readme)?.[1];
  assert.ok(code, "README has the widen.ts example");
  const ws = workspace();
  try {
    Deno.mkdirSync(join(ws.dir, "steps"));
    Deno.writeTextFileSync(join(ws.dir, "steps", "widen.ts"), code);
    const steps = (factor: unknown) => [
      { use: "calibrate", method: "clip-bounds", fallback: "float" },
      { use: "./steps/widen.ts", factor },
      { use: "quantize" },
    ];
    const e = await configError(
      { model: "model.onnx", output: "o.onnx", steps: steps("x") },
      ws.dir,
    );
    assert.equal(e.keyPath, "steps[1].factor");
    const c = await parseConfig({ model: "model.onnx", output: "o.onnx", steps: steps(2) }, {
      registry,
      baseDir: ws.dir,
    });
    const { createContext } = await import("./runner.ts");
    const { createReporter } = await import("./progress.ts");
    const { smallDetector } = await import("./_fixtures_test.ts");
    const graph = smallDetector();
    const ctx = createContext(graph, c, createReporter({ quiet: true }));
    await c.steps[0]!.run(graph, ctx);
    const before = ctx.ranges.get("clip_0")!;
    await c.steps[1]!.run(graph, ctx);
    assert.deepEqual(ctx.ranges.get("clip_0"), {
      min: before.min * 2,
      max: before.max * 2,
      source: "clip-bound×2",
    });
  } finally {
    ws.cleanup();
  }
});

Deno.test("parseConfig() refuses a written file that is an input (by any name), a file an input folder reads, another written file or below a file, and a non-image file as images", async () => {
  const ws = workspace();
  const base = { model: "model.onnx", output: "out/o.onnx", steps: [] as unknown[] };
  const save = (p: string) => [{ use: "calibrate", method: "minmax", statistics: { save: p } }];
  try {
    const cases: [unknown, string, RegExp][] = [
      // Saved statistics used to overwrite the model they were measured on.
      [
        { ...base, steps: save("model.onnx") },
        "steps[0].statistics.save",
        /expected a path other than the input model; found the input .*model\.onnx/,
      ],
      [
        { ...base, steps: save("out/o.onnx") },
        "steps[0].statistics.save",
        /expected a path other than output; found the same file .*o\.onnx/,
      ],
      // The report written over the evaluation annotations.
      [
        {
          ...base,
          report: "model.json",
          data: { evaluation: { annotations: "model.json" } },
          steps: [{ use: "evaluate" }],
        },
        "report",
        /expected a path other than the input data\.evaluation\.annotations; found the input .*model\.json/,
      ],
      // report.json's HTML twin used to replace the model just written.
      [
        { ...base, output: "out/r.html", report: "out/r.json" },
        "report",
        /expected a path other than output; found the same file .*r\.html/,
      ],
      [
        { ...base, report: "model.json", model: { tfjs: "model.json" } },
        "report",
        /expected a path other than the input model/,
      ],
      // Used to be dropped silently, then "expected at least one readable image among 0 files".
      [
        { ...base, data: { calibration: { images: ["model.json"] } } },
        "data.calibration.images[0]",
        /expected a folder or a \.jpg, \.jpeg or \.png file; found .*model\.json$/,
      ],
      // Used to fail only once the model had loaded (statistics) or after quantizing (annotations).
      [
        { ...base, steps: [{ use: "calibrate", statistics: { load: "stats.json" } }] },
        "steps[0].statistics.load",
        /expected an existing file; found nothing at .*stats\.json/,
      ],
      [
        { ...base, steps: [{ use: "evaluate", annotations: "val.json" }] },
        "steps[0].annotations",
        /expected an existing file or folder; found nothing at .*val\.json/,
      ],
      // Used to be accepted and never read.
      [
        { ...base, steps: [{ use: "evaluate", metric: "voc07" }] },
        "steps[0].metric",
        /expected annotations to score against .*; found none/,
      ],
      [
        { ...base, data: { evaluation: { annotations: "model.json" } } },
        "data.evaluation.annotations",
        /expected an evaluate step to read them; found none/,
      ],
      // Used to fail with an internal error (mkdir) after the whole run.
      [
        { ...base, output: "model.onnx/o.onnx" },
        "output",
        /expected .*o\.onnx to be in a folder; found a file at .*model\.onnx$/,
      ],
      // An image of a calibration folder: the model, report or statistics replaced the photo.
      [
        { ...base, output: "photos/dog.jpg", data: { calibration: { images: "photos" } } },
        "output",
        /expected a path outside the files data\.calibration\.images\[0\] reads; found .*photos\/dog\.jpg, one of them$/,
      ],
      [
        { ...base, report: "photos/dog.jpg", data: { calibration: { images: ["photos"] } } },
        "report",
        /expected a path outside the files data\.calibration\.images\[0\] reads/,
      ],
      [
        { ...base, steps: save("photos/new.PNG"), data: { calibration: { images: "photos" } } },
        "steps[0].statistics.save",
        /expected a path outside the files data\.calibration\.images\[0\] reads; found .*new\.PNG/,
      ],
      // A tfjs model's weight shard.
      [
        { ...base, model: { tfjs: "model.json" }, output: "group1-shard1of1.bin" },
        "output",
        /expected a path outside the files model\.tfjs reads/,
      ],
      // The model reached through a linked folder: it was overwritten.
      [
        { ...base, output: "linked/model.onnx" },
        "output",
        /expected a path other than the input model; found the input .*linked\/model\.onnx/,
      ],
      // A symlink to the model as the output: the write would replace the link, not the model,
      // but the name is the user's way to the model.
      [
        { ...base, output: "model-link.onnx" },
        "output",
        /expected a path other than the input model; found the input .*model-link\.onnx/,
      ],
      // A folder given as the model: "found nothing at" it.
      [
        { ...base, model: "photos" },
        "model",
        /expected an existing file; found a folder at .*photos$/,
      ],
    ];
    Deno.writeTextFileSync(join(ws.dir, "model.json"), "{}");
    Deno.mkdirSync(join(ws.dir, "photos"));
    Deno.writeFileSync(join(ws.dir, "photos", "dog.jpg"), new Uint8Array([0xff, 0xd8, 0xff]));
    Deno.symlinkSync(ws.dir, join(ws.dir, "linked"));
    Deno.symlinkSync(join(ws.dir, "model.onnx"), join(ws.dir, "model-link.onnx"));
    for (const [raw, key, re] of cases) {
      const e = await configError(raw, ws.dir);
      assert.equal(e.keyPath, key, e.message);
      assert.match(e.message, re);
    }
  } finally {
    ws.cleanup();
  }
});

Deno.test("loadConfig() refuses an output that is the config file itself", async () => {
  const ws = workspace();
  try {
    const file = ws.write({ model: "model.onnx", output: "clipq.json", steps: [] });
    await assert.rejects(
      loadConfig(file),
      (e: ConfigError) => e.keyPath === "output" && /other than the config file/.test(e.message),
    );
  } finally {
    ws.cleanup();
  }
});

Deno.test("parseConfig() refuses a step order in which a step would run and do nothing", async () => {
  const ws = workspace();
  const base = { model: "model.onnx", output: "o.onnx" };
  const calibrate = { use: "calibrate", method: "minmax" };
  try {
    const cases: [unknown[], string, RegExp][] = [
      [
        [{ use: "normalize" }, { use: "quantize" }],
        "steps[1]",
        /expected a calibrate step before quantize .*; found none, so every layer would stay float/,
      ],
      [
        [calibrate, { use: "quantize" }, { use: "quantize" }],
        "steps[2].use",
        /expected quantize before quantize \(steps\[1\]\); found it after/,
      ],
      [
        [{ use: "quantize", overrides: { images: { min: 0, max: 1 } } }, calibrate],
        "steps[1].use",
        /expected calibrate before quantize \(steps\[0\]\); found it after, where its ranges would never be read/,
      ],
      [
        [calibrate, { use: "quantize" }, { use: "svd-fc" }],
        "steps[2].use",
        /expected svd-fc before quantize/,
      ],
    ];
    for (const [steps, key, re] of cases) {
      const e = await configError({ ...base, steps }, ws.dir);
      assert.equal(e.keyPath, key, e.message);
      assert.match(e.message, re);
    }
    // Ranges from overrides alone, or from a custom step, are a source quantize reads.
    Deno.writeTextFileSync(
      join(ws.dir, "ranges.ts"),
      `export default () => ({ name: "ranges", run: (g) => g });`,
    );
    for (
      const steps of [
        [{ use: "quantize", overrides: { images: { min: 0, max: 1 } } }],
        [{ use: "./ranges.ts" }, { use: "quantize" }],
        [{ use: "svd-fc" }, calibrate, { use: "quantize" }, { use: "evaluate" }],
      ]
    ) {
      await parseConfig({ ...base, steps }, { registry, baseDir: ws.dir });
    }
  } finally {
    ws.cleanup();
  }
});

Deno.test("loadConfig() reads a config saved with a byte-order mark and names the file when the document is not an object", async () => {
  const ws = workspace();
  try {
    const config = { model: "model.onnx", output: "o.onnx", steps: [] };
    const bom = join(ws.dir, "bom.json");
    Deno.writeTextFileSync(bom, "\uFEFF" + JSON.stringify(config));
    assert.equal((await loadConfig(bom)).model, ws.model);
    const list = join(ws.dir, "list.json");
    Deno.writeTextFileSync(list, "[1, 2]");
    await assert.rejects(
      loadConfig(list),
      /list\.json: expected an object with model, output and steps; found an array of 2$/,
    );
    // A missing value reads "nothing", not "undefined undefined".
    await assert.rejects(
      loadConfig(ws.write({ ...config, steps: [{ method: "minmax" }] })),
      /steps\[0\]\.use: expected a step name or module path; found nothing$/,
    );
  } finally {
    ws.cleanup();
  }
});

Deno.test("loadConfig() keeps what worked before the custom-step and real-path checks: expressions through a custom step; the config refused through a link", async () => {
  const ws = workspace();
  try {
    // A custom module handing an expression to a built-in step: the expression engine loads on
    // demand (its signal is no failure of the module).
    Deno.writeTextFileSync(
      join(ws.dir, "wrap.ts"),
      `import { svdStep } from ${
        JSON.stringify(new URL("./steps/svd.ts", import.meta.url).href)
      };\nexport default (o: Record<string, unknown>) => svdStep(o as never);`,
    );
    const c = await loadConfig(ws.write({
      model: "model.onnx",
      output: "o.onnx",
      steps: [{ use: "./wrap.ts", rank: "ceil(rows/2)" }],
    }, "wrap.json"));
    assert.deepEqual(c.steps.map((s) => s.name), ["svd-fc"]);
    // The config file reached through a linked folder is the config file.
    Deno.symlinkSync(ws.dir, join(ws.dir, "link"));
    const cfg = ws.write({
      model: "model.onnx",
      output: "o.onnx",
      report: "link/self.json",
      steps: [],
    }, "self.json");
    await assert.rejects(
      loadConfig(cfg),
      (e) =>
        e instanceof ConfigError && e.keyPath === "report" &&
        /expected a path other than the config file; found the input .*link\/self\.json$/.test(
          e.message,
        ),
    );
  } finally {
    ws.cleanup();
  }
});
