import assert from "node:assert/strict";
import { loadSource } from "./runner.ts";
import { darknetCfg } from "../../tools/assets.ts";

Deno.test("loadSource() lets input.size override a darknet cfg's width and height", async () => {
  const cfg = await darknetCfg("yolov3-tiny");
  const asIs = await loadSource({ darknet: { cfg } });
  const resized = await loadSource({ darknet: { cfg } }, { inputSize: [320, 256] });
  assert.deepEqual(asIs.inputs[0]?.shape, [1, 3, 416, 416]);
  assert.deepEqual(resized.inputs[0]?.shape, [1, 3, 320, 256]);
});
