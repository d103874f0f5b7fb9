import assert from "node:assert/strict";
import { join } from "node:path";
import { float32, type Graph, ModelBuilder } from "@clipq/onnx";
import { decode } from "@clipq/onnx/proto";
import { writeNpy } from "@clipq/data/npy";
import { createSession } from "@clipq/runtime";
import { loadConfig } from "../config.ts";
import { runPipeline } from "../runner.ts";
import { ConfigError } from "@clipq/onnx/errors";
import { smallDetector, workspace } from "../_fixtures_test.ts";
import { calibrateStep, type CalibrateStepOptions } from "./calibrate.ts";

const exists = (p: string) => {
  try {
    Deno.statSync(p);
    return true;
  } catch {
    return false;
  }
};

/** Conv → hard-swish → depthwise conv → conv, one channel of the first conv 30× wider. */
function hardSwishDepthwise(): Graph {
  const b = new ModelBuilder({ seed: 3 });
  const x = b.conv(b.input("images", [1, 3, 16, 16]), { outChannels: 8, kernel: 1 });
  const hs = b.op("Div", [b.mul(x, b.clip(b.add(x, 3), 0, 6)), b.initializer(6)], {
    shape: [1, 8, 16, 16],
  });
  const dw = b.conv(hs, { outChannels: 8, kernel: 3, pad: 1, group: 8 });
  b.output(b.conv(b.relu(dw), { outChannels: 4, kernel: 1 }), "out");
  const g = b.build();
  const conv = g.nodes.find((n) => n.op === "Conv")!;
  const w = g.initializers.get(conv.inputs[1]!)!;
  const data = Float32Array.from(w.data as Float32Array, (v, i) => (i < 3 ? v * 30 : v));
  return {
    ...g,
    initializers: new Map(g.initializers).set(conv.inputs[1]!, float32([...w.dims], data)),
  };
}

Deno.test("calibrate splitChannels: the wide channel gets its own group, the int8 model its own scale, float outputs unchanged", async () => {
  const graph = hardSwishDepthwise();
  const ws = workspace(graph);
  try {
    Deno.mkdirSync(join(ws.dir, "npy"));
    const inputs = [0, 1, 2].map((k) =>
      float32(
        [1, 3, 16, 16],
        Float32Array.from({ length: 768 }, (_, i) => ((i * (k + 5)) % 89) / 44 - 1),
      )
    );
    inputs.forEach((t, k) => Deno.writeFileSync(join(ws.dir, "npy", `${k}.npy`), writeNpy(t)));
    const run = async (
      splitChannels: boolean | { minGainDb: number },
      statistics: { save?: string; load?: string } = {},
    ) => {
      const name = `${splitChannels ? "split" : "plain"}${statistics.load ? "-loaded" : ""}`;
      const cfg = await loadConfig(ws.write({
        model: "model.onnx",
        output: `out/${name}.onnx`,
        report: `out/${name}.json`,
        data: { calibration: { npy: "npy" } },
        steps: [
          { use: "calibrate", method: "minmax", splitChannels, statistics },
          { use: "quantize", exclude: { head: false } },
        ],
      }));
      return await runPipeline(cfg, { quiet: true, analyze: false });
    };
    const split = await run({ minGainDb: 3 });
    const details = split.report.details.splitChannels as {
      regions: number;
      splits: { groups: number[] }[];
    };
    assert.equal(details.regions, 1);
    assert.deepEqual(details.splits.map((s) => s.groups), [[7, 1]]);
    assert.ok(split.report.methods.includes("split-channels"));
    // `true` takes the defaults (minGainDb 6), which this region's gain also clears.
    const byDefault = await run(true);
    assert.deepEqual(byDefault.report.details.splitChannels, split.report.details.splitChannels);
    const q = decode(Deno.readFileSync(split.saved!.path));
    assert.equal(q.nodes.filter((n) => n.op === "Concat").length, 1);
    // Each group's hard-swish product (the depthwise input, its /6 folded into the conv) has its own range.
    const groups = split.report.ranges.filter((r) =>
      /\/g[01]$/.test(r.tensor) && r.tensor.startsWith(
        graph.nodes.find((n) => n.op === "Mul")!.outputs[0]!,
      )
    );
    assert.equal(groups.length, 2, JSON.stringify(split.report.ranges.map((r) => r.tensor)));
    assert.ok(groups[1]!.max > 5 * groups[0]!.max, JSON.stringify(groups));
    // Against the float model, the split int8 model is closer than the plain one.
    const plain = await run(false, { save: "stats.json" });
    // Statistics saved before the split lack the split tensors: they are collected, same ranges.
    const loaded = await run({ minGainDb: 3 }, { load: "stats.json" });
    // The same ranges, up to float rounding: the head's output (quantized here, head: false) is
    // measured on the unsplit model in the saved statistics.
    assert.deepEqual(
      loaded.report.ranges.map((r) => [r.tensor, r.source]),
      split.report.ranges.map((r) => [r.tensor, r.source]),
    );
    loaded.report.ranges.forEach((r, i) => {
      const s = split.report.ranges[i]!;
      assert.ok(Math.abs(r.min - s.min) + Math.abs(r.max - s.max) < 1e-5, `${r.tensor}`);
    });
    assert.deepEqual(loaded.report.excluded, split.report.excluded);
    const error = async (path: string) => {
      const [f, s] = [await createSession(graph), await createSession(Deno.readFileSync(path))];
      let e = 0, p = 0;
      for (const t of inputs) {
        const [a, b] = [(await f.run({ images: t })).out!, (await s.run({ images: t })).out!];
        const u = a.data as Float32Array, v = b.data as Float32Array;
        for (let i = 0; i < u.length; i++) [e, p] = [e + (u[i]! - v[i]!) ** 2, p + u[i]! ** 2];
      }
      await f.release();
      await s.release();
      return 10 * Math.log10(p / e);
    };
    const [plainDb, splitDb] = [await error(plain.saved!.path), await error(split.saved!.path)];
    assert.ok(splitDb > plainDb + 1, `int8 SQNR ${plainDb} → ${splitDb} dB`);
  } finally {
    ws.cleanup();
  }
});

Deno.test("calibrateStep() refuses options its method would ignore, naming the key", () => {
  const cases: [CalibrateStepOptions, RegExp][] = [
    [
      { method: "minmax", percentile: 99 },
      /calibrate\.percentile: expected only with method or fallback "percentile"; found method "minmax"/,
    ],
    [
      { fallback: "mse", percentile: 99.9 },
      /calibrate\.percentile: .*found method "clip-bounds" with fallback "mse"/,
    ],
    [
      { method: "entropy", fallback: "mse" },
      /calibrate\.fallback: expected only with method "clip-bounds"/,
    ],
    [
      { fallback: "float", statistics: { save: "/tmp/s.json" } },
      /calibrate\.statistics: expected only with a data method; found .* fallback "float"/,
    ],
  ];
  for (const [options, re] of cases) assert.throws(() => calibrateStep(options), re);
  // What the defaults (clip-bounds, fallback percentile) and each method do read.
  for (
    const ok of [
      { percentile: 99.9 },
      { method: "percentile", percentile: 99 },
      { method: "clip-bounds", fallback: "float" },
      { method: "mse", lossAware: { lambda: 0.1 } },
    ] as CalibrateStepOptions[]
  ) {
    assert.equal(calibrateStep(ok).name, "calibrate");
  }
});

Deno.test("statistics.load saved from another model is refused; statistics.save creates its folder", async () => {
  const ws = workspace(smallDetector());
  try {
    Deno.mkdirSync(join(ws.dir, "npy"));
    const t = float32([1, 3, 32, 32], Float32Array.from({ length: 3072 }, (_, i) => (i % 17) / 8));
    Deno.writeFileSync(join(ws.dir, "npy", "0.npy"), writeNpy(t));
    const run = async (statistics: { save?: string; load?: string }, output = "out/o.onnx") =>
      await runPipeline(
        await loadConfig(ws.write({
          model: "model.onnx",
          output,
          data: { calibration: { npy: "npy" } },
          steps: [{ use: "calibrate", method: "minmax", statistics }, { use: "quantize" }],
        })),
        { quiet: true, analyze: false },
      );
    // A folder that does not exist yet used to fail naming a temporary file.
    await run({ save: "stats/a/own.json" });
    const own = JSON.parse(Deno.readTextFileSync(join(ws.dir, "stats/a/own.json")));
    // The statistics of another model: every tensor name differs.
    const other = {
      ...own,
      tensors: Object.fromEntries(
        Object.entries(own.tensors).map(([k, v]) => [`other/${k}`, v]),
      ),
    };
    Deno.writeTextFileSync(join(ws.dir, "other.json"), JSON.stringify(other));
    await assert.rejects(
      run({ load: "other.json" }, "out/p.onnx"),
      (e) =>
        e instanceof ConfigError && e.keyPath === "steps[0].statistics.load" &&
        /expected statistics of the \d+ tensors this model calibrates from data; found none for "[^"]+", .* more in .*other\.json \(saved from another model/
          .test(e.message),
    );
    assert.ok(!exists(join(ws.dir, "out", "p.onnx")), "nothing written");
    await run({ load: "stats/a/own.json" }, "out/q.onnx");
  } finally {
    ws.cleanup();
  }
});
