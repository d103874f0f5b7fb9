import assert from "node:assert/strict";
import { join } from "node:path";
import { ConfigError, ModelError } from "@clipq/onnx";
import { loadSource } from "./runner.ts";
import { parseConfig } from "./config.ts";
import { darknetCfg, humanModel } from "../../tools/assets.ts";

Deno.test("loadSource() lets input.size override a darknet cfg's width and height", async () => {
  const cfg = await darknetCfg("yolov3-tiny");
  const asIs = await loadSource({ darknet: { cfg } });
  const resized = await loadSource({ darknet: { cfg } }, { inputSize: [320, 256] });
  assert.deepEqual(asIs.inputs[0]?.shape, [1, 3, 416, 416]);
  assert.deepEqual(resized.inputs[0]?.shape, [1, 3, 320, 256]);
});

Deno.test("a tfjs model's outputs cut the graph where the config says, and a bad cut names the tensor", async () => {
  const tfjs = await humanModel("centernet");
  const config = await parseConfig({
    model: { tfjs, outputs: ["tower_0/keypoints", "tower_0/wh"] },
    output: join(Deno.makeTempDirSync(), "m.onnx"),
    steps: [{ use: "normalize" }],
  });
  const cut = await loadSource(config.model);
  assert.deepEqual(cut.outputs.map((o) => o.name), ["tower_0/keypoints", "tower_0/wh"]);
  // Without the cut, the in-graph decode (peak MaxPool, TopK) comes along.
  assert.equal(cut.nodes.filter((n) => n.op === "TopK").length, 0);
  assert.equal((await loadSource({ tfjs })).nodes.filter((n) => n.op === "TopK").length, 1);
  await assert.rejects(
    () => loadSource({ tfjs, outputs: ["tower_0/heatmap"] }),
    (e: unknown) => e instanceof ModelError && /"tower_0\/heatmap" names no node/.test(e.message),
  );
  await assert.rejects(
    () =>
      parseConfig({
        model: { tfjs, outputs: "tower_0/wh" },
        output: "m.onnx",
        steps: [{ use: "normalize" }],
      }),
    (e: unknown) => e instanceof ConfigError && /model/.test(e.message),
  );
});
