// Real model: PP-OCRv4's text-direction classifier (opset 9 → upgraded to 13), calibrated by min/max
// on two real images and checked on a third it never saw.
import assert from "node:assert/strict";
import { ppocrModel, skimagePhoto } from "../../tools/assets.ts";
import { loadModel, normalize, upgradeOpset } from "@clipq/onnx";
import { preprocess, readImage } from "@clipq/data";
import { quantize } from "./quantize.ts";
import { countOps, minmaxRanges, runGraph } from "./testdata/ort.ts";

Deno.test("quantize() keeps PP-OCRv4 cls probabilities within 0.05 of float on an unseen image", async () => {
  const raw = await loadModel(await ppocrModel("cls"));
  assert.throws(() => quantize(normalize(raw)), /upgrade the model first/);
  let g = upgradeOpset(normalize(raw), { target: 13 });
  g = { ...g, inputs: g.inputs.map((v) => ({ ...v, shape: [1, 3, 48, 192] })) };
  const spec = {
    size: [48, 192] as [number, number],
    resize: "stretch" as const,
    layout: "NCHW" as const,
    color: "RGB" as const,
    scale: 1 / 255,
    mean: [0.5, 0.5, 0.5],
    std: [0.5, 0.5, 0.5],
  };
  const feeds = [];
  for (const f of ["text.png", "page.png", "coffee.png"]) {
    const t = preprocess(await readImage(await skimagePhoto(f)), spec).tensor;
    feeds.push({ [g.inputs[0]!.name]: t.data as Float32Array });
  }
  const ranges = await minmaxRanges(g, feeds.slice(0, 2));
  const { graph, report } = quantize(g, { ranges });
  assert.ok(countOps(graph)["QuantizeLinear"]! > 50);
  assert.ok(report.quantizedNodes.length > 150, `${report.quantizedNodes.length} quantized`);
  for (const f of feeds) {
    const a = Object.values(await runGraph(g, f))[0]!;
    const b = Object.values(await runGraph(graph, f))[0]!;
    for (let i = 0; i < a.length; i++) {
      assert.ok(Math.abs(a[i]! - b[i]!) <= 0.05, `class ${i}: float ${a[i]} vs int8 ${b[i]}`);
    }
  }
});
