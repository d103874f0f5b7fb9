// End-to-end tests of the clipq command: config → `deno run tools/quantize.ts cfg` → int8 model that
// onnxruntime runs, report.json with its fields, report.html rendered in headless Chromium.
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createHash } from "node:crypto";
import { decode, float32, METADATA_KEYS, ModelBuilder, saveModel } from "@clipq/onnx";
import { writeNpy } from "@clipq/data/npy";
import { createSession } from "@clipq/runtime";
import { Histogram, saveStatistics } from "@clipq/calibrate";
import { smallDetector, workspace } from "../packages/pipeline/_fixtures_test.ts";
import { darknetPhotos, ensureChromium } from "./assets.ts";
import { runCli as cli } from "../tests/cli.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const CLI = join(ROOT, "tools", "quantize.ts");
const EVIL = "<img src=x onerror=alert(1)>";

/** Runs the CLI as its own process (exit codes as the shell sees them). */
async function spawnCli(
  ...args: string[]
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

const sha = (p: string) => createHash("sha256").update(Deno.readFileSync(p)).digest("hex");
const exists = (p: string) => {
  try {
    Deno.statSync(p);
    return true;
  } catch {
    return false;
  }
};

async function photoDir(dir: string, n = 3): Promise<string> {
  const photos = join(dir, "photos");
  Deno.mkdirSync(photos);
  for (const p of (await darknetPhotos()).slice(0, n)) {
    Deno.copyFileSync(p, join(photos, p.split("/").pop()!));
  }
  return photos;
}

function evilDetector() {
  // A node named like an HTML injection, to prove the report escapes model-provided strings: the
  // MaxPool, which the configs below keep float (the conv after it still quantizes its output).
  const g = smallDetector("evil");
  return { ...g, nodes: g.nodes.map((n) => n.op === "MaxPool" ? { ...n, name: EVIL } : n) };
}

Deno.test("clipq writes an int8 model ORT runs, report.json and a report.html that renders", async () => {
  const ws = workspace(evilDetector());
  try {
    await photoDir(ws.dir);
    const cfg = ws.write({
      $schema: "../packages/pipeline/config.schema.json",
      model: "model.onnx",
      output: "out/model.int8.onnx",
      report: "out/report.json",
      input: { size: [32, 32], resize: "letterbox" },
      data: { calibration: { images: "photos" } },
      steps: [
        { use: "calibrate", method: "clip-bounds", fallback: "percentile", percentile: 99.9 },
        { use: "quantize", format: "qdq", activations: "u8", exclude: { names: [EVIL] } },
      ],
    });
    const r = await spawnCli(cfg, "--quiet");
    assert.equal(r.code, 0, r.stderr);
    const out = join(ws.dir, "out");
    const int8 = decode(Deno.readFileSync(join(out, "model.int8.onnx")));
    assert.ok(int8.nodes.some((n) => n.op === "QuantizeLinear"));
    const provenance = JSON.parse(int8.metadata.get(METADATA_KEYS.provenance)!);
    assert.equal(provenance.clipq, "0.1.0");
    assert.match(provenance.config, /^[0-9a-f]{64}$/);
    assert.deepEqual(provenance.methods, [
      "calibrate:clip-bounds+percentile",
      "quantize:qdq-u8-per-channel-max",
    ]);

    const session = await createSession(int8);
    const y = await session.run({
      images: { dtype: "float32", dims: [1, 3, 32, 32], data: new Float32Array(3072).fill(0.5) },
    });
    session.release();
    assert.deepEqual(y.out?.dims, [1, 6, 16, 16]);

    const report = JSON.parse(Deno.readTextFileSync(join(out, "report.json")));
    assert.ok(report.sizes.int8 > 0 && report.sizes.int8 < report.sizes.float);
    assert.deepEqual(report.timings.map((t: { name: string }) => t.name), [
      "load",
      "calibrate",
      "quantize",
      "analysis",
    ]);
    const sources = new Set(report.ranges.map((x: { source: string }) => x.source));
    assert.ok(
      sources.has("clip-bound") && sources.has("percentile") && sources.has("input-spec"),
      [...sources].join(),
    );
    assert.ok(
      report.excluded.some((x: { node: string; reason: string }) => x.node === EVIL && x.reason),
    );
    assert.ok(report.sqnr.layers.length >= 2);
    for (const l of report.sqnr.layers) {
      assert.ok(l.sqnr > 15 && l.sqnr <= 200, `${l.node}: ${l.sqnr} dB`);
    }
    assert.ok(report.latency.float.median > 0 && report.latency.int8.median > 0);
    assert.ok(report.histograms.length > 0 && report.histograms[0].clip);

    const chromium = await ensureChromium();
    const profile = Deno.makeTempDirSync({ prefix: "clipq-chromium-" });
    try {
      const dump = await new Deno.Command(chromium, {
        args: [
          "--headless",
          "--no-sandbox",
          "--disable-gpu",
          "--disable-background-networking",
          "--disable-component-update",
          "--no-first-run",
          `--user-data-dir=${profile}`,
          "--dump-dom",
          `file://${join(out, "report.html")}`,
        ],
        stdout: "piped",
        stderr: "null",
      }).output();
      const dom = new TextDecoder().decode(dump.stdout);
      const svgs = dom.match(/<svg[^>]*class="chart"/g) ?? [];
      assert.ok(
        svgs.length >= 4,
        `expected size, latency, SQNR and histogram charts; found ${svgs.length}`,
      );
      assert.ok((dom.match(/<rect /g) ?? []).length > 20, "charts have bars");
      assert.ok(
        dom.includes("&lt;img src=x onerror=alert(1)&gt;"),
        "the node name appears as text",
      );
      assert.ok(!/<img/i.test(dom), "no img element was injected");
    } finally {
      Deno.removeSync(profile, { recursive: true });
    }
  } finally {
    ws.cleanup();
  }
});

Deno.test("clipq gives the same bytes for the same config, and sharded calibration merges to them", async () => {
  const ws = workspace();
  try {
    await photoDir(ws.dir, 4);
    // Sampled (the test model's tensors are small enough to be taken whole by default): shards
    // measure exact extremes for the file that minmax may read, the single run only the sample's,
    // and the histograms must not differ by it (the models had, by a few scales).
    const steps = [{ use: "calibrate", method: "percentile", samples: 64 }, { use: "quantize" }];
    const base = { model: "model.onnx", data: { calibration: { images: "photos" } }, steps };
    const a = ws.write({ ...base, output: "a.onnx" }, "a.json");
    assert.equal((await cli(a, "--quiet")).code, 0);
    const first = sha(join(ws.dir, "a.onnx"));
    assert.equal((await cli(a, "--quiet")).code, 0);
    assert.equal(sha(join(ws.dir, "a.onnx")), first, "second run differs");

    for (const k of [1, 2]) {
      const r = await cli(
        a,
        "--quiet",
        "--calibrate-only",
        "--shard",
        `${k}/2`,
        "--stats",
        join(ws.dir, `stats.${k}.json`),
      );
      assert.equal(r.code, 0, r.stderr);
    }
    assert.ok(!exists(join(ws.dir, "b.onnx")));
    const b = ws.write({ ...base, output: "b.onnx" }, "a.json");
    const r = await cli(b, "--quiet", "--merge-stats", join(ws.dir, "stats.*.json"));
    assert.equal(r.code, 0, r.stderr);
    // Same config text but a different output name: compare the models without provenance.
    const strip = (p: string) => {
      const g = decode(Deno.readFileSync(p));
      return { ...g, metadata: new Map() };
    };
    assert.deepEqual(strip(join(ws.dir, "b.onnx")), strip(join(ws.dir, "a.onnx")));
    // Each shard records its place in the split: one left out, or one of another split, used to
    // merge into a model without a word.
    const shard3 = await cli(
      a,
      "--quiet",
      "--calibrate-only",
      "--shard",
      "1/3",
      "--stats",
      join(ws.dir, "other.1.json"),
    );
    assert.equal(shard3.code, 0, shard3.stderr);
    const c = ws.write({ ...base, output: "c.onnx" }, "c.json");
    const merge = (...names: string[]) =>
      cli(c, "--quiet", "--merge-stats", ...names.map((n) => join(ws.dir, n)));
    for (
      const [files, error] of [
        [
          ["stats.1.json"],
          /^error: --merge-stats: expected all 2 shards of the split; found no shard 2\/2$/,
        ],
        [
          ["stats.1.json", "other.1.json"],
          /^error: --merge-stats: expected shards of one split; found .*stats\.1\.json \(shard 1\/2\) and .*other\.1\.json \(shard 1\/3\)$/,
        ],
      ] as const
    ) {
      assertBadInput(
        await merge(...files),
        error,
        /^hint: merge the statistics of every shard of one --shard K\/N split/,
      );
      assert.ok(!exists(join(ws.dir, "c.onnx")));
    }
    // A copy of one shard beside it: the shard it records is there twice.
    Deno.copyFileSync(join(ws.dir, "stats.1.json"), join(ws.dir, "copy.json"));
    assertBadInput(
      await merge("stats.1.json", "copy.json"),
      /^error: --merge-stats: expected each shard once; found shard 1\/2 in .*stats\.1\.json and .*copy\.json$/,
      /^hint: merge the statistics of every shard of one --shard K\/N split/,
    );
    // One shard loaded as if whole, beside --merge-stats, or with its shard field edited.
    const loading = ws.write({
      ...base,
      output: "c.onnx",
      steps: [{ use: "calibrate", method: "percentile", statistics: { load: "stats.1.json" } }, {
        use: "quantize",
      }],
    }, "load.json");
    assertBadInput(
      await cli(loading, "--quiet"),
      /^error: steps\[0\]\.statistics\.load: expected whole statistics; found shard 1\/2 of a split in .*stats\.1\.json \(merge all 2 with --merge-stats\)$/,
    );
    // The dry run sees it as well.
    assertBadInput(
      await cli(loading, "--dry-run"),
      /^error: steps\[0\]\.statistics\.load: expected whole statistics; found shard 1\/2/,
    );
    assertBadInput(
      await cli(loading, "--quiet", "--merge-stats", join(ws.dir, "stats.*.json")),
      /^error: --merge-stats: expected either --merge-stats or calibrate\.statistics\.load; found both/,
    );
    const edited = JSON.parse(Deno.readTextFileSync(join(ws.dir, "stats.2.json")));
    Deno.writeTextFileSync(
      join(ws.dir, "edited.json"),
      JSON.stringify({ ...edited, shard: [3, 2] }),
    );
    assertBadInput(
      await merge("stats.1.json", "edited.json"),
      /^error: .*edited\.json: expected "shard" as \[k, n\] with 1 ≤ k ≤ n; found \[3,2\]$/,
    );
    assert.ok(!exists(join(ws.dir, "c.onnx")));
  } finally {
    ws.cleanup();
  }
});

Deno.test("clipq exits 1 on bad input (one-line error naming the key) and 2 on a bug, and writes nothing", async () => {
  const ws = workspace();
  try {
    const photos = await photoDir(ws.dir, 1);
    const before = sha(ws.model);
    const ok = {
      model: "model.onnx",
      output: "out/o.onnx",
      report: "out/r.json",
      data: { calibration: { images: photos } },
    };
    const cases: [unknown, RegExp][] = [
      [{ ...ok, steps: [], extra: true }, /^error: extra: unknown key; expected one of/],
      [
        { ...ok, steps: [{ use: "quantize", reduceRange: "yes" }] },
        /^error: steps\[0\]\.reduceRange: expected true or false; found "yes"/,
      ],
      [
        { ...ok, steps: [{ use: "calibrate", method: "percentil" }] },
        /^error: steps\[0\]\.method: expected one of minmax, percentile, mse, entropy, aciq, clip-bounds; found "percentil"/,
      ],
      [
        { ...ok, input: { size: [640, -1] }, steps: [] },
        /^error: input\.size\[1\]: expected a number ≥ 1; found -1/,
      ],
      [{ ...ok, model: "nope.onnx", steps: [] }, /^error: model: expected an existing file/],
      [
        { ...ok, output: "model.onnx", steps: [] },
        /^error: output: expected a path other than the input model/,
      ],
      [
        { ...ok, steps: [{ use: "./no_such_step.ts" }] },
        /^error: steps\[0\]\.use: expected a loadable step module/,
      ],
    ];
    for (const [raw, re] of cases) {
      const r = await cli(ws.write(raw), "--quiet");
      assert.equal(r.code, 1, `${JSON.stringify(raw)}\n${r.stderr}`);
      const lines = r.stderr.trim().split("\n");
      assert.match(lines[0]!, re);
      assert.match(lines[1]!, /^hint: /);
      assert.equal(lines.length, 2);
      assert.ok(!exists(join(ws.dir, "out")), "no output written");
      assert.equal(sha(ws.model), before, "input untouched");
    }
    // The same as the shell sees it: a separate process exits with status 1.
    const spawned = await spawnCli(ws.write(cases[2]![0]), "--quiet");
    assert.equal(spawned.code, 1);
    assert.match(spawned.stderr, /^error: steps\[0\]\.method/);
    // A bug (an error that is not a ClipqError) inside a custom step: exit 2, nothing written.
    Deno.writeTextFileSync(
      join(ws.dir, "buggy.ts"),
      `export default () => ({ name: "buggy", run: () => { throw new TypeError("x is undefined"); } });`,
    );
    const bug = await cli(ws.write({ ...ok, steps: [{ use: "./buggy.ts" }] }), "--quiet");
    assert.equal(bug.code, 2, bug.stderr);
    // Named as the entry's and the module's, not as clipq's: it had said "this is a clipq bug".
    assert.match(
      bug.stderr,
      /^internal error in steps\[0\] \(custom step \.\/buggy\.ts\): TypeError: x is undefined\n\s+at /,
    );
    assert.match(
      bug.stderr,
      /hint: the error comes from that step module's own code, not from clipq$/,
    );
    assert.ok(!exists(join(ws.dir, "out")));
    // Its factory throwing, or its run returning no graph: the same, where they read as clipq's
    // bugs ("graph.inputs is not iterable").
    for (
      const [name, code, error] of [
        ["factory.ts", `export default () => { throw new Error("bad opts"); };`, /Error: bad opts/],
        [
          "nothing.ts",
          `export default () => ({ name: "nothing", run: () => {} });`,
          /TypeError: run\(\) returned undefined, not a Graph/,
        ],
      ] as const
    ) {
      Deno.writeTextFileSync(join(ws.dir, name), code);
      const r = await cli(ws.write({ ...ok, steps: [{ use: `./${name}` }] }), "--quiet");
      assert.equal(r.code, 2, r.stderr);
      assert.match(
        r.stderr,
        new RegExp(
          `^internal error in steps\\[0\\] \\(custom step \\./${name.replace(".", "\\.")}\\): `,
        ),
      );
      assert.match(r.stderr, error);
      assert.ok(!r.stderr.includes("clipq bug"), r.stderr);
      assert.ok(!exists(join(ws.dir, "out")));
    }
    // A timer or promise the step leaves behind throwing while the run goes on: no call of the
    // run's can catch it, and Deno's own uncaught error had ended the process with exit 1 (bad
    // input's code). A process of its own, where the CLI installs its handlers.
    for (
      const [name, leftover, error] of [
        ["timer.ts", `setTimeout(() => { throw new RangeError("late"); }, 0);`, /RangeError: late/],
        ["promise.ts", `Promise.reject(new SyntaxError("never awaited"));`, /never awaited/],
      ] as const
    ) {
      Deno.writeTextFileSync(
        join(ws.dir, name),
        `export default () => ({ name: "leaky", run: (g) => { ${leftover} return g; } });`,
      );
      const r = await spawnCli(
        ws.write({
          ...ok,
          steps: [{ use: `./${name}` }, { use: "calibrate", method: "minmax" }, {
            use: "quantize",
          }],
        }),
        "--quiet",
      );
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /^internal error outside the run's own calls: /);
      assert.match(r.stderr, error);
      assert.match(
        r.stderr,
        new RegExp(
          `hint: no call of the run's could catch it; a timer or promise a custom step left unawaited is the likely source \\(steps\\[0\\] \\(\\./${
            name.replace(".", "\\.")
          }\\)\\); no model or report written\n$`,
        ),
      );
      assert.ok(!exists(join(ws.dir, "out")), "nothing written, no folder left");
      assert.equal(sha(ws.model), before, "input untouched");
    }
    // Thrown once the model is in place, before its report: the model goes too (it had stayed,
    // with "no model or report written" on stderr). The step wraps Deno.renameSync, which puts the
    // saved model in place, to reject a promise nobody awaits right after it. A thrown string
    // has no stack to print.
    Deno.writeTextFileSync(
      join(ws.dir, "late.ts"),
      `export default () => ({ name: "late", run: (g) => {
        const rename = Deno.renameSync;
        Deno.renameSync = (from, to) => {
          rename(from, to);
          if (String(to).endsWith("o.onnx")) Promise.reject("model in place");
        };
        return g;
      } });`,
    );
    // Without a report the model is the last write: the rejection then came after the run's last
    // await, and the process had exited 0 with the model in place before it was reported.
    for (const report of [ok.report, undefined]) {
      const { report: _, ...rest } = ok;
      const late = await spawnCli(
        ws.write({
          ...rest,
          ...(report ? { report } : {}),
          steps: [{ use: "./late.ts" }, { use: "calibrate", method: "minmax" }, {
            use: "quantize",
          }],
        }),
        "--quiet",
      );
      assert.equal(late.code, 2, `report ${report}: ${late.stderr}`);
      assert.match(
        late.stderr,
        /^internal error outside the run's own calls: model in place\nhint: /m,
      );
      assert.ok(!exists(join(ws.dir, "out")), "the model removed, and its folder");
    }
    // A model that is not ONNX: ModelError, exit 1, nothing written.
    Deno.writeTextFileSync(join(ws.dir, "bad.onnx"), "not a model");
    const r = await cli(
      ws.write({
        ...ok,
        model: "bad.onnx",
        steps: [{ use: "calibrate", method: "minmax" }, { use: "quantize" }],
      }),
      "--quiet",
    );
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^error: .*bad\.onnx/);
    assert.ok(!exists(join(ws.dir, "out")));
  } finally {
    ws.cleanup();
  }
});

/** A bad-input run: exit 1, an error line and a hint line, and nothing new in the folder. */
function assertBadInput(
  r: { code: number; stderr: string },
  error: RegExp,
  hint: RegExp = /^hint: /,
): void {
  assert.equal(r.code, 1, r.stderr);
  const lines = r.stderr.trim().split("\n");
  assert.equal(lines.length, 2, r.stderr);
  assert.match(lines[0]!, error);
  assert.match(lines[1]!, hint);
}

Deno.test("clipq never writes over the model, the config or its own output (--stats, statistics.save)", async () => {
  const ws = workspace();
  try {
    await photoDir(ws.dir, 1);
    const before = sha(ws.model);
    const cfg = ws.write({
      model: "model.onnx",
      output: "out/o.onnx",
      data: { calibration: { images: "photos" } },
      steps: [{ use: "calibrate", method: "minmax" }, { use: "quantize" }],
    });
    const cfgBefore = sha(cfg);
    // --stats over the model used to replace it with statistics JSON.
    for (const [target, what] of [[ws.model, "the input model"], [cfg, "the config file"]]) {
      assertBadInput(
        await cli(cfg, "--quiet", "--calibrate-only", "--stats", target!),
        new RegExp(`^error: --stats: expected a path other than ${what}; found `),
      );
    }
    assertBadInput(
      await cli(cfg, "--quiet", "--stats", join(ws.dir, "s.json")),
      /^error: --stats: expected --calibrate-only with --stats; found none/,
      /^hint: the flags are listed by --help/,
    );
    assertBadInput(
      await cli(cfg, "--quiet", "--merge-stats", join(ws.dir, "a.json"), join(ws.dir, "b.json")),
      /^error: --merge-stats: expected a statistics file; found nothing at .*a\.json/,
    );
    assertBadInput(
      await cli(cfg, "--quiet", "--calibrate-only", "--stats", ws.dir),
      /^error: --stats: expected a file path; found a folder at /,
    );
    // A folder's path ("o/" had been written as a file o), and a device or FIFO (the rename that
    // puts the model in place had replaced /dev/null's like).
    const fifo = join(ws.dir, "fifo.onnx");
    assert.ok((await new Deno.Command("mkfifo", { args: [fifo] }).output()).success);
    for (
      const [output, error] of [
        ["o/", /^error: output: expected a file path; found "o\/", a folder's$/],
        ["o/.", /^error: output: expected a file path; found "o\/\.", a folder's$/],
        [
          fifo,
          /^error: output: expected a regular file path; found a device or FIFO at .*fifo\.onnx$/,
        ],
      ] as const
    ) {
      assertBadInput(
        await cli(
          ws.write({ model: "model.onnx", output, steps: [{ use: "normalize" }] }, "o.json"),
          "--quiet",
        ),
        error,
      );
    }
    assert.ok(!exists(join(ws.dir, "o")));
    assertBadInput(
      await cli(cfg, "--quiet", "--calibrate-only", "--stats", "stats/"),
      /^error: --stats: expected a file path; found "stats\/", a folder's$/,
    );
    // One shard twice counted its images twice, and the run went on (a copy: the sharded test).
    Deno.writeTextFileSync(join(ws.dir, "a.json"), "{}");
    Deno.writeTextFileSync(join(ws.dir, "b.json"), "{}");
    assertBadInput(
      await cli(cfg, "--quiet", "--merge-stats", join(ws.dir, "a.json"), join(ws.dir, "a.json")),
      /^error: --merge-stats: expected each shard's statistics once; found the same file in .*a\.json and .*a\.json$/,
    );
    // An image the calibration folder lists, as the output: the photo was replaced by the model.
    const photo = join(ws.dir, "photos", [...Deno.readDirSync(join(ws.dir, "photos"))][0]!.name);
    const photoBefore = sha(photo);
    const overPhoto = ws.write({
      model: "model.onnx",
      output: photo,
      data: { calibration: { images: "photos" } },
      steps: [{ use: "calibrate", method: "minmax" }, { use: "quantize" }],
    }, "over-photo.json");
    assertBadInput(
      await cli(overPhoto, "--quiet"),
      /^error: output: expected a path outside the files data\.calibration\.images\[0\] reads; found /,
    );
    // The same photo as --stats, or reached through a symlink the folder lists.
    assertBadInput(
      await cli(cfg, "--quiet", "--calibrate-only", "--stats", photo),
      /^error: --stats: expected a path outside the files data\.calibration\.images\[0\] reads; found /,
    );
    Deno.mkdirSync(join(ws.dir, "linked"));
    Deno.symlinkSync(photo, join(ws.dir, "linked", "l.jpg"));
    assertBadInput(
      await cli(
        ws.write({
          model: "model.onnx",
          output: photo,
          data: { calibration: { images: "linked" } },
          steps: [{ use: "calibrate", method: "minmax" }, { use: "quantize" }],
        }, "over-link.json"),
        "--quiet",
      ),
      /^error: output: expected a path other than the input data\.calibration\.images\[0\]; found the input /,
    );
    assert.equal(sha(photo), photoBefore, "the photo is untouched");
    // A custom step's module as the output: it was replaced by the model.
    const stepFile = join(ws.dir, "mine.ts");
    Deno.writeTextFileSync(stepFile, `export default () => ({ name: "mine", run: (g) => g });`);
    assertBadInput(
      await cli(
        ws.write({
          model: "model.onnx",
          output: "mine.ts",
          data: { calibration: { images: "photos" } },
          steps: [{ use: "./mine.ts" }, { use: "calibrate", method: "minmax" }, {
            use: "quantize",
          }],
        }, "over-step.json"),
        "--quiet",
      ),
      /^error: output: expected a path other than the input steps\[0\]\.use; found the input .*mine\.ts$/,
    );
    const saving = ws.write({
      model: "model.onnx",
      output: "out/o.onnx",
      data: { calibration: { images: "photos" } },
      steps: [
        { use: "calibrate", method: "minmax", statistics: { save: "model.onnx" } },
        { use: "quantize" },
      ],
    }, "saving.json");
    assertBadInput(
      await cli(saving, "--quiet"),
      /^error: steps\[0\]\.statistics\.save: expected a path other than the input model/,
    );
    assert.equal(sha(ws.model), before, "the model is untouched");
    assert.equal(sha(cfg), cfgBefore, "the config is untouched");
    assert.ok(!exists(join(ws.dir, "out")));
  } finally {
    ws.cleanup();
  }
});

Deno.test("clipq's hint fits the file at fault: darknet weights, annotations, tfjs graphs, images", async () => {
  const ws = workspace();
  try {
    const photos = await photoDir(ws.dir, 1);
    Deno.writeTextFileSync(
      join(ws.dir, "t.cfg"),
      "[net]\nwidth=32\nheight=32\nchannels=3\n\n" +
        "[convolutional]\nfilters=4\nsize=3\nstride=1\npad=1\nactivation=leaky\n",
    );
    Deno.writeFileSync(join(ws.dir, "t.weights"), new Uint8Array(100));
    const steps = [{ use: "calibrate", method: "minmax" }, { use: "quantize" }];
    const base = { output: "out/o.onnx", data: { calibration: { images: photos } }, steps };
    assertBadInput(
      await cli(
        ws.write({ ...base, model: { darknet: { cfg: "t.cfg", weights: "t.weights" } } }),
        "--quiet",
      ),
      /^error: .*t\.weights: expected darknet weights, \d+ floats/,
      /^hint: the darknet \.cfg or \.weights file/,
    );
    // A photo given as the cfg, an ONNX file as model.json: their bytes (NULs included) went into
    // the error line, and the hint sent the user to onnx.checker.
    const photo = join(photos, [...Deno.readDirSync(photos)][0]!.name);
    assertBadInput(
      await cli(
        ws.write({ ...base, model: { darknet: { cfg: photo } } }, "photo-cfg.json"),
        "--quiet",
      ),
      /^error: .*\.jpg: expected a darknet \.cfg text file; found binary data starting ff d8 ff e[01]$/,
      /^hint: the darknet \.cfg or \.weights file/,
    );
    assertBadInput(
      await cli(ws.write({ ...base, model: { tfjs: "model.onnx" } }, "onnx-tfjs.json"), "--quiet"),
      /^error: .*model\.onnx: expected a tfjs model\.json \(JSON text\); found binary data$/,
      /^hint: the tfjs model\.json or its weight shards/,
    );
    Deno.writeTextFileSync(join(ws.dir, "bad.json"), JSON.stringify({ images: [{ id: 1 }] }));
    const evaluation = { images: photos, annotations: "bad.json" };
    assertBadInput(
      await cli(
        ws.write({
          ...base,
          model: "model.onnx",
          data: { ...base.data, evaluation },
          head: { type: "anchor-free", outputs: ["out"], strides: [16] },
          steps: [...steps, { use: "evaluate" }],
        }),
        "--quiet",
      ),
      /^error: .*bad\.json: images\[0\]/,
      /^hint: fix or replace the file or folder named above/,
    );
    // A model that runs at 32² but not 33²: onnxruntime printed its own error line in colour before
    // the message, quoted its C++ source, and the hint sent the user to onnx.checker.
    const b = new ModelBuilder({ seed: 3 });
    const x = b.input("x", [1, 3, "h", "w"]);
    const sum = b.add(
      b.conv(x, { outChannels: 3, kernel: 3, stride: 2, pad: 1 }),
      b.maxPool(x, { kernel: 2, stride: 2 }),
    );
    b.output(b.conv(b.relu(sum), { outChannels: 2, kernel: 1 }), "y");
    await saveModel(join(ws.dir, "odd.onnx"), b.build());
    const odd = await cli(
      ws.write({
        ...base,
        model: "odd.onnx",
        input: { size: [33, 33] },
        steps: [{ use: "calibrate", method: "minmax" }, { use: "quantize" }],
      }, "odd.json"),
      "--quiet",
    );
    assertBadInput(
      odd,
      /^error: onnxruntime failed to run .*Attempting to broadcast an axis by a dimension other than 1\. 16 by 17$/,
      /^hint: the model cannot run on this input; check input\.size and input\.layout/,
    );
    assert.ok(!odd.stderr.includes("onnxruntime_src"), odd.stderr);
    Deno.writeTextFileSync(join(ws.dir, "list.json"), "[]");
    assertBadInput(
      await cli(join(ws.dir, "list.json"), "--quiet"),
      /^error: .*list\.json: expected an object with model, output and steps; found an array of 0/,
      /^hint: the config must be a JSON object/,
    );
    // A message with its detail on later lines (as onnxruntime's are) stays whole, on one line.
    Deno.writeTextFileSync(
      join(ws.dir, "multi.ts"),
      `import { DataError } from ${
        JSON.stringify(new URL("../packages/onnx/errors.ts", import.meta.url).href)
      };\nexport default () => ({ name: "multi", run: () => { throw new DataError("x.npy: bad dims\\n index: 2 Got: 16 Expected: 32\\n"); } });`,
    );
    assertBadInput(
      await cli(
        ws.write({ ...base, model: "model.onnx", steps: [{ use: "./multi.ts" }] }),
        "--quiet",
      ),
      /^error: x\.npy: bad dims index: 2 Got: 16 Expected: 32$/,
    );
    // tfjs: a while loop, and an input size the graph cannot take.
    const tfjsModel = (name: string, node: unknown[]) =>
      Deno.writeTextFileSync(
        join(ws.dir, name),
        JSON.stringify({ modelTopology: { node }, weightsManifest: [] }),
      );
    const image = {
      name: "x",
      op: "Placeholder",
      attr: {
        dtype: { type: "DT_FLOAT" },
        shape: { shape: { dim: [1, -1, -1, 3].map((d) => ({ size: String(d) })) } },
      },
    };
    tfjsModel("loop.json", [
      image,
      { name: "w/Enter", op: "Enter", input: ["x"] },
      { name: "w/Merge", op: "Merge", input: ["w/Enter", "w/NextIteration"] },
      { name: "w/Switch", op: "Switch", input: ["w/Merge", "w/Merge"] },
      { name: "w/NextIteration", op: "NextIteration", input: ["w/Switch:1"] },
      { name: "w/Exit", op: "Exit", input: ["w/Switch"] },
      { name: "y", op: "Relu", input: ["w/Exit"] },
    ]);
    const tfjsBase = { ...base, input: { size: [8, 8], layout: "NHWC" } };
    assertBadInput(
      await cli(ws.write({ ...tfjsBase, model: { tfjs: "loop.json", outputs: ["y"] } }), "--quiet"),
      /^error: .*loop\.json: a while loop \(control flow: a cycle through node "w\/Merge"\)/,
      /^hint: start the graph after the loop \(model\.inputs\) or end it before/,
    );
    const s2 = (v: string) => ({ s: btoa(v) });
    const ints = (v: number[]) => ({ list: { i: v.map(String) } });
    tfjsModel("halves.json", [
      image,
      {
        name: "p",
        op: "MaxPool",
        input: ["x"],
        attr: {
          ksize: ints([1, 2, 2, 1]),
          strides: ints([1, 2, 2, 1]),
          padding: s2("VALID"),
          data_format: s2("NHWC"),
        },
      },
      { name: "y", op: "AddV2", input: ["x", "p"] },
    ]);
    assertBadInput(
      await cli(
        ws.write({ ...tfjsBase, model: { tfjs: "halves.json", outputs: ["y"] } }),
        "--quiet",
      ),
      /^error: .*halves\.json: node "y" \(AddV2\): expected shapes that broadcast but found \[1, 8, 8, 3\] and \[1, 4, 4, 3\]/,
      /^hint: give the input size the model was exported for/,
    );
    assertBadInput(
      await cli(
        ws.write({ ...tfjsBase, model: { tfjs: "halves.json", inputs: { x: [1, 8, 8] } } }),
        "--quiet",
      ),
      /^error: .*halves\.json: node "p" \(MaxPool\): expected a rank-4 input but found \[1, 8, 8\]/,
      /^hint: give the input size the model was exported for/,
    );
    assertBadInput(
      await cli(
        ws.write({ ...tfjsBase, model: { tfjs: "halves.json", inputs: { image: [1, 8, 8, 3] } } }),
        "--quiet",
      ),
      /^error: .*halves\.json: input "image" names no node of the graph/,
      /^hint: model\.inputs and model\.outputs take TensorFlow node names/,
    );
    Deno.writeTextFileSync(join(photos, "broken.jpg"), "not a jpeg");
    assertBadInput(
      await cli(ws.write({ ...base, model: "model.onnx" }), "--quiet"),
      /^error: .*broken\.jpg: expected a JPEG or PNG image/,
      /onBadImage to "skip"/,
    );
    assert.ok(!exists(join(ws.dir, "out")));
  } finally {
    ws.cleanup();
  }
});

Deno.test("clipq --dry-run prints the plan, checks the config against the model and writes nothing; --help documents the flags", async () => {
  const ws = workspace();
  try {
    const cfg = ws.write({
      model: "model.onnx",
      output: "out/o.onnx",
      steps: [{ use: "calibrate", method: "clip-bounds", fallback: "float" }, { use: "quantize" }],
    });
    const r = await cli(cfg, "--dry-run");
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /1\. calibrate \{"method":"clip-bounds","fallback":"float"\}/);
    assert.match(r.stdout, /2\. quantize/);
    assert.ok(!exists(join(ws.dir, "out")));
    const h = await cli("--help");
    assert.equal(h.code, 0);
    for (
      const flag of [
        "--dry-run",
        "--quiet",
        "--calibrate-only",
        "--shard",
        "--stats",
        "--merge-stats",
      ]
    ) {
      assert.ok(h.stdout.includes(flag), flag);
    }
    // The config is checked against the model too: a size its fixed input cannot take used to
    // pass --dry-run and fail the run.
    const sized = ws.write({
      model: "model.onnx",
      output: "out/o.onnx",
      input: { size: [64, 64] },
      data: { calibration: { images: ws.dir } },
      steps: [{ use: "calibrate", method: "clip-bounds", fallback: "float" }, { use: "quantize" }],
    }, "sized.json");
    assertBadInput(
      await cli(sized, "--dry-run"),
      /^error: input\.size: expected \[32, 32\], the fixed size of input images/,
    );
    assert.ok(!exists(join(ws.dir, "out")));
    // The images too, by their first bytes: an empty folder and a text file named .png passed
    // --dry-run and failed the run.
    Deno.mkdirSync(join(ws.dir, "empty"));
    Deno.mkdirSync(join(ws.dir, "fake"));
    Deno.writeTextFileSync(join(ws.dir, "fake", "a.png"), "hello");
    for (
      const [folder, error] of [
        ["empty", /^error: .*empty: expected image files \(\.jpg, \.jpeg, \.png\), found none$/],
        ["fake", /^error: .*a\.png: expected a JPEG or PNG image, found 5 bytes of text/],
      ] as const
    ) {
      const images = ws.write({
        model: "model.onnx",
        output: "out/o.onnx",
        data: { calibration: { images: folder } },
        steps: [{ use: "calibrate", method: "minmax" }, { use: "quantize" }],
      }, `${folder}.json`);
      assertBadInput(await cli(images, "--dry-run"), error);
    }
    // An ONNX model whose external data file is missing: the hint had blamed tfjs weight shards.
    const ext = new ModelBuilder({ seed: 5, opset: 13 });
    ext.output(ext.conv(ext.input("x", [1, 8, 8, 8]), { outChannels: 8, kernel: 3 }), "y");
    const saved = await saveModel(join(ws.dir, "ext.onnx"), ext.build(), {
      externalDataThreshold: 100,
    });
    Deno.removeSync(saved.external!.path);
    assertBadInput(
      await cli(
        ws.write(
          { model: "ext.onnx", output: "out/o.onnx", steps: [{ use: "normalize" }] },
          "ext.json",
        ),
        "--dry-run",
      ),
      /^error: .*ext\.onnx: cannot read external data file .*ext\.onnx\.data/,
      /^hint: the model's external data file is missing or does not match the model/,
    );
    // A kernel larger than its padded input at input.size: onnxruntime's "Invalid dimension: -3"
    // had named no node.
    const big = new ModelBuilder({ seed: 5, opset: 13 });
    big.output(
      big.conv(big.input("x", [1, 3, "h", "w"]), { outChannels: 4, kernel: 7, pad: 0 }),
      "y",
    );
    await saveModel(join(ws.dir, "big.onnx"), big.build());
    assertBadInput(
      await cli(
        ws.write({
          model: "big.onnx",
          output: "out/o.onnx",
          input: { size: [4, 4] },
          steps: [{ use: "normalize" }],
        }, "big.json"),
        "--dry-run",
      ),
      /^error: node ".*" \(Conv\): expected positive output dims at input\.size \[4, 4\]; found \[1, 4, -2, -2\]/,
      /^hint: input\.size is too small for the model's kernels and strides/,
    );
    // The model opens in onnxruntime too: an op it does not have passed the dry run.
    const b = new ModelBuilder({ seed: 5, opset: 13 });
    b.output(
      b.op("FrobnicateX", [b.relu(b.input("x", [1, 3, 8, 8]))], { shape: [1, 3, 8, 8] }),
      "y",
    );
    await saveModel(join(ws.dir, "frob.onnx"), b.build());
    assertBadInput(
      await cli(
        ws.write(
          { model: "frob.onnx", output: "out/o.onnx", steps: [{ use: "normalize" }] },
          "frob.json",
        ),
        "--dry-run",
      ),
      /^error: onnxruntime could not load the input model: .*No Op registered for FrobnicateX/,
      /^hint: the node's op is not an operator onnxruntime has/,
    );
    // Three that passed the dry run and failed the run (exclusions after calibrating):
    // an exclusion no node has, statistics of another model, an output folder that takes no file.
    const quantizeOnly = { model: "model.onnx", output: "out/o.onnx" };
    assertBadInput(
      await cli(
        ws.write({
          ...quantizeOnly,
          steps: [
            { use: "normalize" },
            { use: "calibrate", method: "clip-bounds", fallback: "float" },
            { use: "quantize", exclude: { names: ["nonexistent"] } },
          ],
        }, "names.json"),
        "--dry-run",
      ),
      /^error: steps\[2\]\.exclude\.names: expected names of the model's nodes .*found "nonexistent", which no node has$/,
    );
    const other = new Histogram().add([1, 2]);
    await saveStatistics(join(ws.dir, "other.json"), new Map([["no_such_tensor", other]]));
    assertBadInput(
      await cli(
        ws.write({
          ...quantizeOnly,
          steps: [
            { use: "calibrate", method: "minmax", statistics: { load: "other.json" } },
            { use: "quantize" },
          ],
        }, "other.json.cfg.json"),
        "--dry-run",
      ),
      /^error: steps\[0\]\.statistics\.load: expected statistics of this model's tensors; found none of them among the 1 in .*other\.json \(saved from another model\?\)$/,
    );
    // /proc takes no file, even from root.
    assertBadInput(
      await cli(
        ws.write(
          { ...quantizeOnly, output: "/proc/o.onnx", steps: [{ use: "normalize" }] },
          "w.json",
        ),
        "--dry-run",
      ),
      /^error: output: expected a writable folder for \/proc\/o\.onnx; found \/proc not writable/,
    );
    assert.ok(!exists(join(ws.dir, "out")));
    const bad = await cli("--shard", "3/2");
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^error: --shard: expected K\/N/);
  } finally {
    ws.cleanup();
  }
});

Deno.test("every example config validates and resolves its assets (--dry-run)", async () => {
  for (const e of Deno.readDirSync(join(ROOT, "examples"))) {
    if (!e.name.endsWith(".json")) continue;
    const r = await cli(join(ROOT, "examples", e.name), "--dry-run");
    assert.equal(r.code, 0, `${e.name}: ${r.stderr}`);
    assert.match(r.stdout, /steps:\n {2}1\. normalize/, e.name);
  }
  const r = await cli("--dry-run");
  assert.match(r.stdout, /ppocr-det\.int8\.onnx/, "no argument runs examples/default.json");
});

Deno.test({
  name: "the default example (PP-OCRv4 det) quantizes end to end with clip-bounds + percentile",
  // About 30 s of CPU, minutes of wall time on a shared 2-core machine: run with CLIPQ_SLOW=1.
  ignore: Deno.env.get("CLIPQ_SLOW") !== "1",
  fn: async () => {
    const dir = Deno.makeTempDirSync({ prefix: "clipq-default-" });
    try {
      const cfg = JSON.parse(Deno.readTextFileSync(join(ROOT, "examples", "default.json")));
      cfg.output = join(dir, "ppocr-det.int8.onnx");
      cfg.report = join(dir, "report.json");
      delete cfg.$schema;
      const file = join(dir, "default.json");
      Deno.writeTextFileSync(file, JSON.stringify(cfg));
      const r = await cli(file, "--quiet");
      assert.equal(r.code, 0, r.stderr);
      const report = JSON.parse(Deno.readTextFileSync(cfg.report));
      const sources = new Set(report.ranges.map((x: { source: string }) => x.source));
      assert.ok(sources.has("clip-bound") && sources.has("percentile"), [...sources].join());
      assert.ok(report.sizes.ratio < 0.35, `int8/float ${report.sizes.ratio}`);
      const int8 = decode(Deno.readFileSync(cfg.output));
      assert.ok(int8.opsetImports.some((o) => o.domain === "" && o.version >= 13));
      const s = await createSession(int8);
      const y = await s.run({
        x: { dtype: "float32", dims: [1, 3, 640, 640], data: new Float32Array(3 * 640 * 640) },
      });
      s.release();
      assert.deepEqual(Object.values(y)[0]!.dims, [1, 1, 640, 640]);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test("clipq interrupted mid-run removes its temporary files and the folders it created", async () => {
  const ws = workspace();
  try {
    const ready = join(ws.dir, "ready");
    // A step that leaves what an interrupted write would (a folder the run made, a model and a
    // statistics temporary file), then waits to be interrupted.
    Deno.writeTextFileSync(
      join(ws.dir, "hang.ts"),
      `export default () => ({ name: "hang", run: async () => {
  Deno.mkdirSync(${JSON.stringify(join(ws.dir, "out", "deep"))}, { recursive: true });
  Deno.writeTextFileSync(${
        JSON.stringify(join(ws.dir, "out", "deep"))
      } + "/.o.onnx." + Deno.pid + ".1234.tmp", "x");
  Deno.writeTextFileSync(${
        JSON.stringify(join(ws.dir, "stats"))
      } + "/s.json." + Deno.pid + ".abcd.tmp", "x");
  // Another process's, writing to the same folder: it had been removed too.
  Deno.writeTextFileSync(${JSON.stringify(join(ws.dir, "stats", "s.json.1.abcd.tmp"))}, "x");
  Deno.writeTextFileSync(${JSON.stringify(ready)}, "");
  await new Promise((r) => setTimeout(r, 60000));
} });`,
    );
    Deno.mkdirSync(join(ws.dir, "npy"));
    Deno.writeFileSync(
      join(ws.dir, "npy", "0.npy"),
      writeNpy(float32([1, 3, 32, 32], new Float32Array(3072).fill(0.5))),
    );
    const cfg = ws.write({
      model: "model.onnx",
      output: "out/deep/o.onnx",
      data: { calibration: { npy: "npy" } },
      steps: [
        { use: "calibrate", method: "minmax", statistics: { save: "stats/s.json" } },
        { use: "./hang.ts" },
      ],
    });
    const p = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", CLI, cfg, "--quiet"],
      cwd: ROOT,
      stdout: "null",
      stderr: "piped",
    }).spawn();
    for (let i = 0; i < 600 && !exists(ready); i++) await new Promise((r) => setTimeout(r, 50));
    p.kill("SIGINT");
    const out = await p.output();
    assert.equal(out.code, 130);
    assert.match(new TextDecoder().decode(out.stderr), /interrupted: no model or report written/);
    assert.ok(!exists(join(ws.dir, "out")), "the output folders the run made are gone");
    // Statistics saved before the interrupt are complete and stay; this run's temporary file goes,
    // another process's stays.
    assert.deepEqual(
      [...Deno.readDirSync(join(ws.dir, "stats"))].map((e) => e.name).sort(),
      ["s.json", "s.json.1.abcd.tmp"],
    );

    // Interrupted with the model in place and its report being written: the model goes too (it
    // had stayed, without a report, under "no model or report written"). The step wraps
    // Deno.writeTextFile to stall the report's write.
    Deno.removeSync(ready);
    Deno.writeTextFileSync(
      join(ws.dir, "stall.ts"),
      `export default () => ({ name: "stall", run: (g) => {
  const write = Deno.writeTextFile;
  Deno.writeTextFile = async (path, ...rest) => {
    if (String(path).includes("r.json")) {
      Deno.writeTextFileSync(${JSON.stringify(ready)}, "");
      await new Promise((r) => setTimeout(r, 60000));
    }
    return write(path, ...rest);
  };
  return g;
} });`,
    );
    const stalled = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        CLI,
        ws.write({
          model: "model.onnx",
          output: "out/deep/o.onnx",
          report: "out/deep/r.json",
          data: { calibration: { npy: "npy" } },
          steps: [{ use: "./stall.ts" }, { use: "calibrate", method: "minmax" }, {
            use: "quantize",
          }],
        }),
        "--quiet",
        "--no-analysis",
      ],
      cwd: ROOT,
      stdout: "null",
      stderr: "piped",
    }).spawn();
    for (let i = 0; i < 600 && !exists(ready); i++) await new Promise((r) => setTimeout(r, 50));
    assert.ok(exists(join(ws.dir, "out", "deep", "o.onnx")), "the model is in place");
    stalled.kill("SIGINT");
    const second = await stalled.output();
    assert.equal(second.code, 130);
    assert.ok(!exists(join(ws.dir, "out")), "the model, its temporary report and the folders gone");
  } finally {
    ws.cleanup();
  }
});

Deno.test("clipq reports a full disk while writing the model or the report as bad input (exit 1), naming the file, and writes nothing", async () => {
  const ws = workspace();
  try {
    // The step makes the report's write (or the model's) fail as a full disk does.
    const full = (which: string) =>
      Deno.writeTextFileSync(
        join(ws.dir, "full.ts"),
        `export default () => ({ name: "full", run: (g) => {
  const enospc = () => Promise.reject(new Error("No space left on device (os error 28)"));
  const [writeText, write] = [Deno.writeTextFile, Deno.writeFile];
  Deno.writeTextFile = (path, ...rest) => String(path).includes("${which}") ? enospc() : writeText(path, ...rest);
  Deno.writeFile = (path, ...rest) => String(path).includes("${which}") ? enospc() : write(path, ...rest);
  return g;
} });`,
      );
    Deno.mkdirSync(join(ws.dir, "npy"));
    Deno.writeFileSync(
      join(ws.dir, "npy", "0.npy"),
      writeNpy(float32([1, 3, 32, 32], new Float32Array(3072).fill(0.5))),
    );
    // The report's had ended as an internal error (exit 2); the model's had the hint about paths.
    for (
      const [which, error] of [
        ["r.json", /^error: .*r\.json: cannot write the report: No space left on device/],
        ["o.onnx", /^error: .*o\.onnx: cannot write the file: No space left on device/],
      ] as const
    ) {
      full(which);
      const r = await spawnCli(
        ws.write({
          model: "model.onnx",
          output: "out/o.onnx",
          report: "out/r.json",
          data: { calibration: { npy: "npy" } },
          steps: [{ use: "./full.ts" }, { use: "calibrate", method: "minmax" }, {
            use: "quantize",
          }],
        }),
        "--quiet",
        "--no-analysis",
      );
      assertBadInput(r, error, /^hint: the disk is full/);
      assert.ok(!exists(join(ws.dir, "out")));
    }
  } finally {
    ws.cleanup();
  }
});
