import assert from "node:assert/strict";
import { join } from "node:path";
import { float32 } from "@clipq/onnx";
import { decode } from "@clipq/onnx/proto";
import { writeNpy } from "@clipq/data/npy";
import { loadConfig } from "./config.ts";
import { runPipeline } from "./runner.ts";
import { smallDetector, workspace } from "./_fixtures_test.ts";

Deno.test("runPipeline() calibrates from .npy tensors and leaves no file behind when a step fails", async () => {
  const ws = workspace(smallDetector());
  try {
    Deno.mkdirSync(join(ws.dir, "npy"));
    for (let k = 0; k < 3; k++) {
      const v = Float32Array.from({ length: 3 * 32 * 32 }, (_, i) => ((i * (k + 3)) % 97) / 96);
      Deno.writeFileSync(join(ws.dir, "npy", `${k}.npy`), writeNpy(float32([1, 3, 32, 32], v)));
    }
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
