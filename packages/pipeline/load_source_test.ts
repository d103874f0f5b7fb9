import assert from "node:assert/strict";
import { join } from "node:path";
import { ConfigError, ModelError } from "@clipq/onnx";
import { loadSource } from "./runner.ts";
import { parseConfig } from "./config.ts";
import { workspace } from "./_fixtures_test.ts";
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
  // parseConfig wants the output's folder to exist; nothing is written there.
  const ws = workspace();
  try {
    const config = await parseConfig({
      model: { tfjs, outputs: ["tower_0/keypoints", "tower_0/wh"] },
      output: join(ws.dir, "m.onnx"),
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
  } finally {
    ws.cleanup();
  }
});

Deno.test("a tfjs model's inputs start the graph after a preprocessing while loop; input.size leaves a declared image size alone", async () => {
  const tfjs = await humanModel("handtrack");
  const start = "StatefulPartitionedCall/map/TensorArrayV2Stack/TensorListStack";
  const outputs = ["StatefulPartitionedCall/concat", "StatefulPartitionedCall/concat_1"];
  const ws = workspace();
  try {
    const config = await parseConfig({
      model: { tfjs, outputs, inputs: { [start]: [1, 320, 320, 3] } },
      output: join(ws.dir, "m.onnx"),
      steps: [{ use: "normalize" }],
    });
    const graph = await loadSource(config.model);
    assert.deepEqual(graph.inputs.map((v) => v.name), [start]);
    await assert.rejects(
      () =>
        parseConfig({
          model: { tfjs, inputs: { [start]: [1, 320, 0, 3] } },
          output: "m.onnx",
          steps: [{ use: "normalize" }],
        }),
      (e: unknown) => e instanceof ConfigError && /model/.test(e.message),
    );
    // CenterNet declares its image [1, 512, 512, 3]: input.size does not change a known size.
    const centernet = await loadSource({ tfjs: await humanModel("centernet") }, {
      inputSize: [320, 320],
    });
    assert.deepEqual(centernet.inputs[0]?.shape, [1, 512, 512, 3]);
  } finally {
    ws.cleanup();
  }
});
