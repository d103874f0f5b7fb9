/**
 * Real-model acceptance of the paper's method: PP-OCRv4 det (full of Clip and HardSigmoid) quantized
 * to int8 QDQ with clip-bound ranges where the graph states them and a percentile (99.99) fallback
 * calibrated on real photos elsewhere; the binarized (0.3) text probability maps of int8 and float
 * must agree.
 *
 * Measured (640×640, this calibration set): page.png IoU 0.960, text.png IoU 0.713 (0.739 in
 * an earlier session's notes); with GPTQ weight rounding on the same ranges 0.962 and 0.758, the
 * output SQNR on text.png 4.7 → 5.9 dB, which the test asserts as a gain. Two exact
 * graph facts got text.png there from 0.646: normalize folds PP-LCNetV3's learnable affine blocks
 * (scalar Mul then Add after each conv) into the conv (0.646 → 0.68), and clip-bounds' reader
 * bounds stop the range of every conv output that feeds a hard-swish at −3 and of every
 * HardSigmoid input at [−3, 3] (below −3 a hard-swish gives 0 whatever the value; the percentile
 * ranges spent over half the u8 levels there) (0.68 → 0.736). The goal is ≥ 0.95 on both; what is
 * left on text.png (blurry handwriting, weak text scores) is per-tensor u8 resolution at the
 * depthwise convs after each hard-swish, whose channels differ widely in range (the conv-output
 * SQNR falls 6–8 dB at each of them), and it moves with the calibration set (the nine photos at
 * 640 instead of 320: 0.82; only three of them at 640: 0.75); bias correction made it worse
 * (0.71). Before the fixes: minmax 0.16, entropy 0.43, mse 0.74, aciq 0.49, percentile 0.68 with
 * all nine photos at 640. The first test asserts the goal on page.png and today's all-int8 level on
 * text.png, so a regression in either shows; the second reaches the goal on both the way a user
 * would: the pipeline's accuracy-aware fallback (`maxDrop` 0.05 on the two text images) keeps the
 * layers that cost text.png most float — measured: 0.80 → 0.95 with 24 of 64 layers float (the
 * stem at 320×320 among them), 1.6× the all-int8 latency (16 layers and 1.4× before the ORT
 * lowering folded the hard-swish and affine chains into the convs: the int8 part got faster and
 * its noise moved). The third refines the percentile ranges by the model's output error
 * (`refineRanges`, `calibrate.refine`), judged on page.png and two photos with text.png kept out:
 * measured page.png 0.960 → 0.985, text.png 0.713 → 0.863, all-int8.
 */
import assert from "node:assert/strict";
import { loadModel } from "@clipq/onnx/io";
import { normalize } from "@clipq/onnx/normalize";
import type { Tensor } from "@clipq/onnx";
import {
  clipBounds,
  collectStatistics,
  measureInputCovariances,
  rangesFromStatistics,
  refineRanges,
  withClipBounds,
} from "@clipq/calibrate";
import { activationParams } from "@clipq/quantize/linear";
import { floatTwin, planQuantization, quantize } from "@clipq/quantize";
import { createSession } from "@clipq/runtime";
import { preprocess, type PreprocessSpec, readImage } from "@clipq/data";
import { binarizedOverlap } from "@clipq/detect";
import { loadConfig, runPipeline } from "@clipq/pipeline";
import { join } from "node:path";
import { darknetPhotos, ppocrDetPreprocessing, ppocrModel, skimagePhoto } from "../tools/assets.ts";

/** PaddleOCR's det preprocessing at a square size. */
function spec(size: number): PreprocessSpec {
  return ppocrDetPreprocessing([size, size]);
}

async function feed(file: string, size: number): Promise<Record<string, Tensor>> {
  return { x: preprocess(await readImage(file), spec(size)).tensor };
}

function iou(a: Float32Array, b: Float32Array, threshold: number): number {
  const o = binarizedOverlap(a, b, threshold);
  return o.union === 0 ? 1 : o.intersection / o.union;
}

/**
 * The float model and its ranges as the tests calibrate them: clip bounds where the graph states
 * them (zero data), the 99.99th percentile elsewhere, over page.png and text.png at 640 and the
 * darknet photos at 320 (they hold no text; at 320 they cost a quarter and give the same ranges'
 * scale).
 */
async function calibrated() {
  const graph = normalize(await loadModel(await ppocrModel("det")));
  const plan = planQuantization(graph);
  const bounds = clipBounds(graph, { inputs: { x: spec(640) } });
  // Zero data first: only what the graph does not bound is calibrated.
  const needData = plan.activations.filter((t) => !bounds.ranges.has(t));
  const page = await skimagePhoto("page.png"), text = await skimagePhoto("text.png");
  const photos = await darknetPhotos();
  async function* batches() {
    for (const f of [page, text]) yield await feed(f, 640);
    for (const f of photos) yield await feed(f, 320);
  }
  const stats = await collectStatistics(graph, batches(), { tensors: needData });
  const ranges = withClipBounds(
    bounds,
    rangesFromStatistics(stats, { method: "percentile", percentile: 99.99 }),
  );
  return { graph, plan, bounds, needData, page, text, photos, batches, ranges };
}

Deno.test({
  name:
    "PP-OCRv4 det int8 (clip-bounds + percentile) keeps the text map of page.png (IoU ≥ 0.95) and of text.png (IoU ≥ 0.7); GPTQ rounding brings text.png closer",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const { graph, plan, bounds, needData, page, text, batches, ranges } = await calibrated();
    assert.ok(bounds.ranges.size >= 30, `clip-bound ranges: ${bounds.ranges.size}`);
    assert.ok(needData.length < plan.activations.length);
    const { graph: int8, report } = quantize(graph, { ranges });
    assert.ok(
      // 226 since the lowering folds hard-swish's /6 and the learnable affine (a·x + b) into the
      // convs after them (quantize/ops/lower.ts); float stay only the head's decode ops.
      report.quantizedNodes.length >= 220 && report.floatNodes.length <= 4,
      `quantized nodes: ${report.quantizedNodes.length}, float: ${
        JSON.stringify(report.floatNodes)
      }`,
    );

    // GPTQ rounding on the same ranges: each layer's input moment measured on the same images.
    const twin = floatTwin(graph, { ranges });
    const { covariances } = await measureInputCovariances(twin, batches(), {
      layers: plan.weightedLayers.map((l) => l.node)
        .filter((n) => report.quantizedNodes.includes(n)),
    });
    const gptq = quantize(graph, { ranges, inputCovariances: covariances });
    let [nearestError, gptqError] = [0, 0];
    for (const w of gptq.report.weights) {
      nearestError += w.outputError?.nearest ?? 0;
      gptqError += w.outputError?.gptq ?? 0;
    }
    assert.equal(gptq.report.weights.filter((w) => w.rounding === "gptq").length, 64);
    // Measured 7.3× (21.1 → 2.9): what the layers' weights add to their outputs on these images.
    assert.ok(gptqError < nearestError / 4, `layer output error ${nearestError} → ${gptqError}`);

    const f = await createSession(graph);
    const q = await createSession(int8);
    const qg = await createSession(gptq.graph);
    try {
      for (const [file, goal] of [[page, 0.95], [text, 0.7]] as const) {
        const feeds = await feed(file, 640);
        const [a] = Object.values(await f.run(feeds));
        const [b] = Object.values(await q.run(feeds));
        const [c] = Object.values(await qg.run(feeds));
        const ref = a!.data as Float32Array;
        const textPixels = ref.filter((v) => v > 0.3).length;
        assert.ok(textPixels > 1000, `${file}: the float model finds text (${textPixels} pixels)`);
        const score = iou(ref, b!.data as Float32Array, 0.3);
        const withGptq = iou(ref, c!.data as Float32Array, 0.3);
        const [db, dbGptq] = [
          sqnr(ref, b!.data as Float32Array),
          sqnr(ref, c!.data as Float32Array),
        ];
        console.log(
          `${file.split("/").at(-1)}: IoU ${score.toFixed(4)}, ${db.toFixed(2)} dB; with GPTQ ${
            withGptq.toFixed(4)
          }, ${dbGptq.toFixed(2)} dB (${textPixels} text pixels)`,
        );
        assert.ok(score >= goal, `${file}: binarized map IoU ${score.toFixed(4)} < ${goal}`);
        if (file === text) {
          // Measured: IoU 0.713 → 0.758, SQNR 4.7 → 5.9 dB.
          assert.ok(
            withGptq > score && dbGptq > db + 0.5,
            `GPTQ on text.png: ${withGptq}, ${dbGptq} dB`,
          );
        }
      }
    } finally {
      await f.release();
      await q.release();
      await qg.release();
    }
  },
});

function sqnr(ref: Float32Array, test: Float32Array): number {
  let signal = 0, noise = 0;
  for (let i = 0; i < ref.length; i++) {
    signal += ref[i]! * ref[i]!;
    noise += (ref[i]! - test[i]!) ** 2;
  }
  return 10 * Math.log10(signal / noise);
}

Deno.test({
  name:
    "PP-OCRv4 det through the pipeline with the accuracy-aware fallback (maxDrop 0.05) keeps the text maps of page.png and text.png (IoU ≥ 0.95)",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "clipq-ppocr-fallback-" });
    try {
      const page = await skimagePhoto("page.png"), text = await skimagePhoto("text.png");
      const config = join(dir, "ppocr.json");
      await Deno.writeTextFile(
        config,
        JSON.stringify({
          model: await ppocrModel("det"),
          output: "ppocr-det.int8.onnx",
          report: "report.json",
          input: { name: "x", ...spec(640) },
          head: { type: "db", outputs: ["sigmoid_0.tmp_0"] },
          data: {
            calibration: { images: [page, text, ...await darknetPhotos()] },
            // The fallback keeps agreement on these: the two images that hold text.
            evaluation: { images: [page, text] },
          },
          steps: [
            { use: "normalize" },
            { use: "calibrate", method: "clip-bounds", fallback: "percentile", percentile: 99.99 },
            { use: "quantize", maxDrop: 0.05 },
          ],
        }),
      );
      const { report } = await runPipeline(await loadConfig(config), {
        quiet: true,
        analyze: false,
      });
      const fallback = (report.details as Record<string, unknown>).fallback as {
        met: boolean;
        initialScore: number;
        score: number;
        reverted: string[];
        latency?: { slowdown: number };
      };
      assert.equal(fallback.met, true, `fallback score ${fallback.score}`);
      assert.ok(
        fallback.initialScore < 0.95,
        "all-int8 misses the goal on text.png (else no test)",
      );
      assert.ok(fallback.reverted.length < 40, `${fallback.reverted.length} layers float`);
      console.log(
        `fallback: ${fallback.initialScore.toFixed(4)} → ${fallback.score.toFixed(4)} with ` +
          `${fallback.reverted.length} of 64 layers float, ${
            fallback.latency?.slowdown.toFixed(2)
          }× the all-int8 latency`,
      );
      // Measured again here, from the written file, independently of the fallback's own scoring.
      const f = await createSession(normalize(await loadModel(await ppocrModel("det"))));
      const q = await createSession(await loadModel(join(dir, "ppocr-det.int8.onnx")));
      try {
        for (const file of [page, text]) {
          const feeds = await feed(file, 640);
          const [a] = Object.values(await f.run(feeds));
          const [b] = Object.values(await q.run(feeds));
          const score = iou(a!.data as Float32Array, b!.data as Float32Array, 0.3);
          console.log(`${file.split("/").at(-1)}: IoU ${score.toFixed(4)}`);
          assert.ok(score >= 0.95, `${file}: binarized map IoU ${score.toFixed(4)} < 0.95`);
        }
      } finally {
        await f.release();
        await q.release();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "PP-OCRv4 det: ranges refined by the model's output error take the all-int8 text map of text.png, kept out of the refinement, from IoU ~0.71 to ≥ 0.8",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const { graph, page, text, photos, ranges } = await calibrated();
    const plain = quantize(graph, { ranges });
    // Judged on page.png and two photos: text.png stays unseen by the refinement.
    const judgedOn = [
      await feed(page, 640),
      await feed(photos[0]!, 640),
      await feed(photos[1]!, 640),
    ];
    const refined = await refineRanges(floatTwin(graph, { ranges }), judgedOn, {
      // As the pipeline judges them: the tensors on a grid of their own (a MaxPool's output, say,
      // shares its input's).
      tensors: plain.report.tensors.filter((t) => !t.source.startsWith("shared with"))
        .map((t) => t.name),
      ranges: new Map([
        ...ranges,
        ...plain.report.tensors.map((t) => [t.name, { ...t }] as const),
      ]),
      grid: (r, t) => {
        const p = activationParams(r, "u8", t);
        return { scale: p.scale, zeroPoint: p.zeroPoint, dtype: "uint8" };
      },
    });
    // Measured: 57 of 160 ranges moved.
    assert.ok(refined.changes.length >= 20, `${refined.changes.length} ranges moved`);
    console.log(
      `${refined.changes.length} of ${refined.errors.size} ranges moved, ${refined.runs} runs`,
    );
    const int8 = quantize(graph, { ranges: refined.ranges });
    const f = await createSession(graph);
    const a = await createSession(plain.graph);
    const b = await createSession(int8.graph);
    try {
      // Measured: page.png 0.960 → 0.985, text.png 0.713 → 0.863.
      for (const [file, goal] of [[page, 0.97], [text, 0.8]] as const) {
        const feeds = await feed(file, 640);
        const [ref] = Object.values(await f.run(feeds));
        const [y0] = Object.values(await a.run(feeds));
        const [y1] = Object.values(await b.run(feeds));
        const [before, after] = [y0!, y1!].map((y) =>
          iou(ref!.data as Float32Array, y.data as Float32Array, 0.3)
        );
        console.log(`${file.split("/").at(-1)}: IoU ${before!.toFixed(4)} → ${after!.toFixed(4)}`);
        assert.ok(after! >= goal && after! > before!, `${file}: ${before} → ${after}`);
      }
    } finally {
      await f.release();
      await a.release();
      await b.release();
    }
  },
});
