// The malformed-input corpus through the real CLI: every broken model, cfg, tfjs folder and image
// folder gives exit code 1 and one error line naming the file/line/node at fault (or counted
// warnings for skipped images), writes nothing, and leaves its inputs byte for byte as they were.
import assert from "node:assert/strict";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { createHash } from "node:crypto";
import { loadModel, validate } from "@clipq/onnx";
import { type CorpusCase, generateCorpus } from "./corpus/generate.ts";
import { assertChecked, checkModels } from "./checker.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const CLI = join(ROOT, "tools", "quantize.ts");
// onnxruntime logs through its own logger to stderr; those lines are not ours to count.
const ORT_LOG = /\[[VIWEF]:onnxruntime/;

/** sha256 of every file under dir except out/, by relative path. */
function checksums(dir: string, out = join(dir, "out")): Map<string, string> {
  const sums = new Map<string, string>();
  const walk = (d: string) => {
    for (const e of Deno.readDirSync(d)) {
      const p = join(d, e.name);
      if (p === out) continue;
      if (e.isDirectory) walk(p);
      else {sums.set(
          relative(dir, p),
          createHash("sha256").update(Deno.readFileSync(p)).digest("hex"),
        );}
    }
  };
  walk(dir);
  return sums;
}

function filesUnder(dir: string): string[] {
  try {
    return [...Deno.readDirSync(dir)].map((e) => e.name);
  } catch {
    return [];
  }
}

interface Outcome {
  c: CorpusCase;
  code: number;
  lines: string[];
}

async function runCase(c: CorpusCase): Promise<Outcome> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, c.config, "--quiet", "--no-analysis"],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  const lines = text.split("\n").filter((l) => l.trim() && !ORT_LOG.test(l));
  return { c, code: out.code, lines };
}

Deno.test("the malformed-input corpus: exit 1, one error line naming the culprit, nothing written, inputs untouched", async () => {
  const root = await Deno.makeTempDir({ prefix: "clipq-corpus-" });
  try {
    const cases = await generateCorpus(root);
    const before = new Map(cases.map((c) => [c.name, checksums(c.dir)]));
    // A few processes at once: each spends most of its time starting up.
    const outcomes: Outcome[] = [];
    const queue = [...cases];
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        for (let c = queue.shift(); c; c = queue.shift()) outcomes.push(await runCase(c));
      }),
    );
    outcomes.sort((a, b) => cases.indexOf(a.c) - cases.indexOf(b.c));

    const failures: string[] = [];
    const written: string[] = [];
    const tally = { rejected: 0, accepted: 0, skipped: 0 };
    for (const { c, code, lines } of outcomes) {
      const say = (m: string) => failures.push(`${c.name}: ${m}\n    ${lines.join("\n    ")}`);
      const errors = lines.filter((l) => l.startsWith("error: "));
      const warnings = lines.filter((l) => l.startsWith("warning: "));
      if (code === 2 || lines.some((l) => l.startsWith("internal error"))) {
        say("internal error (exit 2)");
        continue;
      }
      const expect = c.expect === "either" ? (code === 0 ? "ok" : "error") : c.expect;
      if (expect === "error") {
        if (code !== 1) say(`expected exit 1, got ${code}`);
        else if (errors.length !== 1) say(`expected one error line, got ${errors.length}`);
        else if (c.names && !c.names.test(errors[0]!)) say(`error does not name ${c.names}`);
        else if (!lines.some((l) => l.startsWith("hint: "))) say("no hint line");
        else tally.rejected++;
        const left = filesUnder(join(c.dir, "out"));
        if (left.length) say(`left files behind: ${left.join(", ")}`);
      } else {
        if (code !== 0) say(`expected exit 0, got ${code}`);
        else if (errors.length) say("printed an error but exited 0");
        else if (c.expect === "skip" && warnings.length !== c.warnings) {
          say(`expected ${c.warnings} skipped-image warnings, got ${warnings.length}`);
        } else {
          validate(await loadModel(c.output));
          written.push(c.output);
          if (c.expect === "skip") tally.skipped++;
          else tally.accepted++;
        }
        const left = filesUnder(join(c.dir, "out")).filter((f) => f !== "model.int8.onnx");
        if (left.length) say(`left files behind: ${left.join(", ")}`);
      }
      const after = checksums(c.dir);
      assert.deepEqual(after, before.get(c.name), `${c.name}: an input file changed`);
    }
    for (const r of await checkModels(written)) assertChecked(r);
    console.log(
      `corpus: ${cases.length} cases — ${tally.rejected} rejected with exit 1, ${tally.skipped} ran with skipped images, ${tally.accepted} accepted (valid but unusual inputs, or harmless bit flips); ${written.length} outputs pass onnx.checker`,
    );
    assert.equal(failures.length, 0, failures.join("\n"));
    assert.ok(cases.length >= 50);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
