// Config abuse through the clipq command (in addition to packages/pipeline's own config and
// expression tests): hostile JSON shapes, out-of-range numbers, expressions that try to leave the
// sandbox or exhaust the parser, prototype keys, and custom step modules — each a one-line
// ConfigError naming the key, exit code 1, nothing written.
import assert from "node:assert/strict";
import { join } from "node:path";
import { decode, encode } from "@clipq/onnx";
import { smallDetector } from "../packages/pipeline/_fixtures_test.ts";
import { runCli as cli } from "./cli.ts";

async function withWorkspace(f: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "clipq-abuse-" });
  try {
    await Deno.writeFile(join(dir, "model.onnx"), encode(smallDetector("abuse")));
    await f(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const base = { model: "model.onnx", output: "out/o.onnx", steps: [] as unknown[] };
const svd = (rank: unknown) => ({ ...base, steps: [{ use: "svd-fc", rank }] });

Deno.test("hostile configs are one-line ConfigErrors naming the key, exit 1, nothing written", async () => {
  await withWorkspace(async (dir) => {
    const cases: [string | unknown, RegExp][] = [
      // Not a config object at all.
      [
        "[1, 2, 3]",
        /^error: .*c\.json: expected an object with model, output and steps; found an array/,
      ],
      ["null", /^error: .*c\.json: expected an object with model, output and steps; found null/],
      [
        '"model.onnx"',
        /^error: .*c\.json: expected an object with model, output and steps; found "model\.onnx"/,
      ],
      ['{"model": "model.onnx", "output": ', /^error: .*c\.json.*JSON/i],
      ["", /^error: .*c\.json/],
      // Wrong types and shapes.
      [{ ...base, steps: "quantize" }, /^error: steps: expected an array/],
      [{ ...base, steps: { use: "quantize" } }, /^error: steps: expected an array/],
      [{ ...base, model: 42 }, /^error: model: /],
      [{ ...base, output: null }, /^error: output: /],
      [{ ...base, data: [] }, /^error: data: expected an object/],
      [{ ...base, input: { size: [640, 640, 3] } }, /^error: input\.size: expected at most 2/],
      [{ ...base, input: { mean: [0, 0, 0, 0, 0] } }, /^error: input\.mean: /],
      [{ ...base, steps: [{}] }, /^error: steps\[0\]\.use: /],
      [{ ...base, steps: [{ use: "quantize", use2: 1 }] }, /^error: steps\[0\]\.use2: unknown key/],
      // Out-of-range numbers (JSON's 1e400 parses to Infinity).
      [
        '{"model":"model.onnx","output":"o.onnx","steps":[],"input":{"scale":1e400}}',
        /^error: input\.scale: /,
      ],
      [
        { ...base, input: { size: [1e9, 1e9] } },
        /^error: input\.size\[0\]: expected a number ≤ 16384/,
      ],
      [{ ...base, data: { calibration: { limit: -1 } } }, /^error: data\.calibration\.limit: /],
      [
        { ...base, data: { calibration: { batchSize: 1e12 } } },
        /^error: data\.calibration\.batchSize: /,
      ],
      [{ ...base, data: { calibration: { limit: 0 } } }, /^error: data\.calibration\.limit: /],
      [{ ...base, input: { std: [0, 1, 1] } }, /^error: input\.std\[0\]: /],
      [
        { ...base, steps: [{ use: "calibrate", percentile: 1000 }] },
        /^error: steps\[0\]\.percentile: /,
      ],
      [
        { ...base, steps: [{ use: "calibrate", percentile: -5 }] },
        /^error: steps\[0\]\.percentile: /,
      ],
      // Prototype keys are unknown keys, not a way into Object.prototype.
      [
        '{"model":"model.onnx","output":"o.onnx","steps":[],"__proto__":{"polluted":1}}',
        /^error: __proto__: unknown key/,
      ],
      [
        '{"model":"model.onnx","output":"o.onnx","steps":[],"input":{"constructor":1}}',
        /^error: input\.constructor: unknown key/,
      ],
      // Expressions that try to reach outside the restricted scope, or to exhaust it.
      [svd('import({"x": 1})'), /^error: steps\[0\]\.rank: .*import/],
      [svd('createUnit("furlong")'), /^error: steps\[0\]\.rank: .*createUnit/],
      [svd('evaluate("1 + 1")'), /^error: steps\[0\]\.rank: .*evaluate/],
      [svd('parse("1")'), /^error: steps\[0\]\.rank: .*parse/],
      [svd('simplify("x + x")'), /^error: steps\[0\]\.rank: .*simplify/],
      [svd('derivative("x^2", "x")'), /^error: steps\[0\]\.rank: .*derivative/],
      [svd("f(x) = x"), /^error: steps\[0\]\.rank: .*function definition/],
      [svd("rows = 1"), /^error: steps\[0\]\.rank: .*assignment/],
      [svd("rows.constructor"), /^error: steps\[0\]\.rank: .*property/],
      [svd('rows["constructor"]'), /^error: steps\[0\]\.rank: .*(property|index)/],
      [svd("this"), /^error: steps\[0\]\.rank: /],
      [svd("cos"), /^error: steps\[0\]\.rank: /],
      [svd("10 ^ 400"), /^error: steps\[0\]\.rank: .*finite/],
      [svd("1e309 * rows"), /^error: steps\[0\]\.rank: /],
      [svd("(".repeat(5000) + "1" + ")".repeat(5000)), /^error: steps\[0\]\.rank: /],
      [svd("1" + "+1".repeat(200_000)), /^error: steps\[0\]\.rank: /],
      [svd(""), /^error: steps\[0\]\.rank: /],
      [svd(["rows"]), /^error: steps\[0\]\.rank: /],
    ];
    const failures: string[] = [];
    for (const [raw, re] of cases) {
      const text = typeof raw === "string" ? raw : JSON.stringify(raw);
      await Deno.writeTextFile(join(dir, "c.json"), text);
      const t = performance.now();
      const r = await cli(join(dir, "c.json"), "--quiet");
      const ms = performance.now() - t;
      const what = text.length > 80 ? text.slice(0, 80) + "…" : text;
      const lines = r.stderr.split("\n");
      if (r.code !== 1) failures.push(`${what}: exit ${r.code}\n  ${r.stderr}`);
      else if (lines.length !== 2) {
        failures.push(`${what}: not one error line and a hint\n  ${r.stderr}`);
      } else if (!re.test(lines[0]!)) failures.push(`${what}: ${lines[0]} does not match ${re}`);
      else if (ms > 10_000) failures.push(`${what}: took ${ms} ms`);
    }
    assert.deepEqual(failures, [], failures.join("\n"));
    assert.equal(({} as Record<string, unknown>).polluted, undefined, "Object.prototype is clean");
    assert.ok(!(await exists(join(dir, "out"))), "nothing written");
    assert.ok(!(await exists(join(dir, "o.onnx"))), "nothing written");
    console.log(`config abuse: ${cases.length} hostile configs rejected with exit 1`);
  });
});

Deno.test("a custom step module resolves against the config's folder, from any working directory", async () => {
  await withWorkspace(async (dir) => {
    await Deno.mkdir(join(dir, "steps"));
    await Deno.writeTextFile(
      join(dir, "steps", "rename.ts"),
      `export default function renameStep(options = {}) {
        return { name: "rename", run: (g) => Promise.resolve({ ...g, name: options.to ?? "x" }) };
      }\n`,
    );
    const cfg = join(dir, "c.json");
    const write = (steps: unknown[]) =>
      Deno.writeTextFile(cfg, JSON.stringify({ ...base, output: "out/renamed.onnx", steps }));
    await write([{ use: "./steps/rename.ts", to: "renamed-by-plugin" }]);
    const cwd = Deno.cwd();
    Deno.chdir(Deno.env.get("TMPDIR") ?? "/tmp");
    try {
      const r = await cli(cfg, "--quiet", "--no-analysis");
      assert.equal(r.code, 0, r.stderr);
    } finally {
      Deno.chdir(cwd);
    }
    const g = decode(await Deno.readFile(join(dir, "out", "renamed.onnx")));
    assert.equal(g.name, "renamed-by-plugin");

    for (
      const [steps, re] of [
        [
          [{ use: "./steps/missing.ts" }],
          /^error: steps\[0\]\.use: expected a loadable step module/,
        ],
        [[{ use: "../../../../../../etc/passwd" }], /^error: steps\[0\]\.use: /],
        [[{ use: "./c.json" }], /^error: steps\[0\]\.use: /],
      ] as const
    ) {
      await write([...steps]);
      const r = await cli(cfg, "--quiet");
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr.split("\n")[0]!, re);
    }
  });
});

async function exists(p: string): Promise<boolean> {
  try {
    await Deno.stat(p);
    return true;
  } catch {
    return false;
  }
}
