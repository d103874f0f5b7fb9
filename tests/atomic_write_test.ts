// Output safety of the clipq command: a process killed while it writes a large model leaves the
// previous output in place (never a half-written file under the target name); the input model is
// never overwritten, also when the output is spelled differently or is a link to it.
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createHash } from "node:crypto";
import { decode, encode, ModelBuilder } from "@clipq/onnx";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const CLI = join(ROOT, "tools", "quantize.ts");

const sha = (p: string) => createHash("sha256").update(Deno.readFileSync(p)).digest("hex");

/** A model with 8192 × 8192 + 8192 ≈ 67 M float parameters (268 MB): its write takes a while. */
function largeModel(): Uint8Array {
  const b = new ModelBuilder({ seed: 3, name: "large", weightScale: 0.01 });
  b.output(b.gemm(b.input("x", [1, 8192]), { out: 8192 }), "y");
  return encode(b.build());
}

function smallModel(): Uint8Array {
  const b = new ModelBuilder({ seed: 4, name: "previous" });
  b.output(b.relu(b.input("x", [1, 4])), "y");
  return encode(b.build());
}

Deno.test("clipq killed while writing a large model leaves the previous output whole", async () => {
  const dir = await Deno.makeTempDir({ prefix: "clipq-atomic-" });
  try {
    await Deno.writeFile(join(dir, "model.onnx"), largeModel());
    const inputSha = sha(join(dir, "model.onnx"));
    const out = join(dir, "out");
    await Deno.mkdir(out);
    const target = join(out, "model.copy.onnx");
    await Deno.writeFile(target, smallModel());
    const previous = sha(target);
    // No steps: the run is load → save, so the write is most of it.
    await Deno.writeTextFile(
      join(dir, "clipq.json"),
      JSON.stringify({ model: "model.onnx", output: "out/model.copy.onnx", steps: [] }),
    );
    let caught = 0;
    for (const signal of ["SIGKILL", "SIGINT"] as const) {
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", CLI, join(dir, "clipq.json"), "--quiet"],
        cwd: ROOT,
        stdout: "null",
        stderr: "null",
      }).spawn();
      // Wait for the temporary file to appear and grow, then kill the process mid-write.
      let killed = false;
      const deadline = Date.now() + 240_000;
      while (Date.now() < deadline) {
        const temp = [...Deno.readDirSync(out)].find((e) => e.name.endsWith(".tmp"));
        if (temp) {
          const size = Deno.statSync(join(out, temp.name)).size;
          if (size > 0 && size < 200e6) {
            child.kill(signal);
            killed = true;
            break;
          }
        }
        await new Promise((r) => setTimeout(r, 2));
      }
      const status = await child.status;
      if (!killed) {
        // The whole write slipped between two polls: the run finished; the output is then complete.
        assert.equal(status.code, 0);
        assert.equal(decode(Deno.readFileSync(target)).name, "large");
        await Deno.writeFile(target, smallModel());
        continue;
      }
      caught++;
      assert.notEqual(status.code, 0, `${signal}: the process was killed`);
      assert.equal(sha(target), previous, `${signal}: the previous output is untouched`);
      // Whatever the killed process left is a hidden temporary, never the target name.
      for (const e of Deno.readDirSync(out)) {
        assert.ok(
          e.name === "model.copy.onnx" || /^\.model\.copy\.onnx\..*\.tmp$/.test(e.name),
          `${signal}: unexpected file ${e.name}`,
        );
      }
    }
    assert.ok(caught >= 1, "at least one run was killed mid-write");
    assert.equal(sha(join(dir, "model.onnx")), inputSha, "the input model is unchanged");
    console.log(`atomic write: ${caught} of 2 runs killed mid-write; previous output intact`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("clipq refuses to write over its input, however the output path is spelled", async () => {
  const dir = await Deno.makeTempDir({ prefix: "clipq-atomic-" });
  try {
    const model = join(dir, "model.onnx");
    await Deno.writeFile(model, smallModel());
    const before = sha(model);
    await Deno.mkdir(join(dir, "sub"));
    const spellings = ["model.onnx", "./model.onnx", "sub/../model.onnx", model];
    for (const output of spellings) {
      await Deno.writeTextFile(
        join(dir, "c.json"),
        JSON.stringify({ model: "model.onnx", output, steps: [] }),
      );
      const r = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", CLI, join(dir, "c.json"), "--quiet"],
        cwd: ROOT,
        stdout: "piped",
        stderr: "piped",
      }).output();
      const err = new TextDecoder().decode(r.stderr);
      assert.equal(r.code, 1, `${output}: ${err}`);
      assert.match(err, /^error: output: expected a path other than the input model/, output);
      assert.equal(sha(model), before);
    }
    // A symbolic link to the input as the output: the link is replaced, the input stays as it was.
    await Deno.symlink(model, join(dir, "link.onnx"));
    await Deno.writeTextFile(
      join(dir, "c.json"),
      JSON.stringify({ model: "model.onnx", output: "link.onnx", steps: [] }),
    );
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", CLI, join(dir, "c.json"), "--quiet"],
      cwd: ROOT,
      stdout: "null",
      stderr: "piped",
    }).output();
    const err = new TextDecoder().decode(r.stderr);
    assert.ok(r.code === 0 || r.code === 1, err);
    assert.equal(sha(model), before, "the input behind the link is unchanged");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
