// Every example config in examples/, run twice, gives byte-identical models that pass Debian onnx
// 1.12's checker (full check) and load in onnxruntime-node. The examples are real models on real
// photos (minutes of wall time each on a shared 2-core machine): run with CLIPQ_SLOW=1. The fast
// suite checks the same per output format on small models (tests/external_validation_test.ts).
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createHash } from "node:crypto";
import { decode } from "@clipq/onnx";
import { createSession } from "@clipq/runtime";
import { runCli as cli } from "./cli.ts";
import { assertChecked, checkModels } from "./checker.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

const sha = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

Deno.test({
  name: "every example config gives byte-identical, checker-valid models when run twice",
  ignore: Deno.env.get("CLIPQ_SLOW") !== "1",
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "clipq-examples-" });
    try {
      const outputs: string[] = [];
      const lines: string[] = [];
      for (
        const e of [...Deno.readDirSync(join(ROOT, "examples"))].sort((a, b) =>
          a.name < b.name ? -1 : 1
        )
      ) {
        if (!e.name.endsWith(".json")) continue;
        const cfg = JSON.parse(await Deno.readTextFile(join(ROOT, "examples", e.name)));
        // Same config text for both runs (the config hash is part of the output's provenance);
        // outputs go to the temp folder, and paths stay valid from there (asset: names).
        cfg.output = join(dir, e.name.replace(/\.json$/, ".int8.onnx"));
        delete cfg.report;
        delete cfg.$schema;
        const file = join(dir, e.name);
        await Deno.writeTextFile(file, JSON.stringify(cfg));
        const digests: string[] = [];
        const t0 = performance.now();
        for (let run = 0; run < 2; run++) {
          const r = await cli(file, "--quiet", "--no-analysis");
          assert.equal(r.code, 0, `${e.name}: ${r.stderr}`);
          digests.push(sha(await Deno.readFile(cfg.output)));
        }
        assert.equal(digests[1], digests[0], `${e.name}: the second run differs`);
        const g = decode(await Deno.readFile(cfg.output));
        const session = await createSession(g);
        session.release();
        outputs.push(cfg.output);
        lines.push(
          `${e.name}: ${digests[0]!.slice(0, 12)} twice (${
            ((performance.now() - t0) / 2000).toFixed(0)
          } s per run)`,
        );
      }
      for (const r of await checkModels(outputs)) assertChecked(r);
      assert.ok(outputs.length >= 3, `examples run: ${outputs.length}`);
      console.log(`determinism over examples/:\n  ${lines.join("\n  ")}\n  all pass onnx.checker`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
