import assert from "node:assert/strict";
import { createSession } from "@clipq/runtime";
import { float32 } from "@clipq/onnx";
import { darknetPhotos } from "../tools/assets.ts";
import { smallDetector } from "../packages/pipeline/_fixtures_test.ts";
import { quantizeInCode } from "./custom_pipeline.ts";

Deno.test("examples/custom_pipeline.ts quantizes in code and stays close to float in ORT", async () => {
  const model = smallDetector();
  const photos = (await darknetPhotos()).slice(0, 3);
  const spec = {
    input: "images",
    size: [32, 32] as const,
    resize: "stretch" as const,
    layout: "NCHW" as const,
    color: "RGB" as const,
    scale: 1 / 255,
    mean: [0, 0, 0],
    std: [1, 1, 1],
  };
  const { graph, counts } = await quantizeInCode(model, photos, spec);
  assert.ok(counts.clipBound >= 2, "the input and the Clip output come from clip bounds");
  assert.ok(counts.data >= 1, "the Relu/LeakyRelu/Add outputs need data");
  assert.ok(graph.nodes.some((n) => n.op === "QuantizeLinear"));

  const x = float32(
    [1, 3, 32, 32],
    Float32Array.from({ length: 3072 }, (_, i) => (i * 37 % 255) / 255),
  );
  const f = await createSession(model);
  const q = await createSession(graph);
  const a = (await f.run({ images: x })).out!.data as Float32Array;
  const b = (await q.run({ images: x })).out!.data as Float32Array;
  f.release();
  q.release();
  let signal = 0, noise = 0;
  for (let i = 0; i < a.length; i++) {
    signal += a[i]! ** 2;
    noise += (a[i]! - b[i]!) ** 2;
  }
  const sqnr = 10 * Math.log10(signal / noise);
  assert.ok(sqnr > 20, `SQNR ${sqnr.toFixed(1)} dB`);
});
