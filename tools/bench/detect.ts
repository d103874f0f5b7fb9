/**
 * Benchmark of @clipq/detect's hot paths: NMS on 10 000 candidates (goal: well under 50 ms),
 * decoding a YOLOv3-416 raw head (3 scales, 80 classes), and COCO evaluation of a synthetic set.
 *
 * @module
 */
import { cocoMap } from "../../packages/detect/coco_eval.ts";
import { decodeCandidates, decodeOutputs } from "../../packages/detect/decode.ts";
import type { GroundTruthObject } from "../../packages/detect/ground_truth.ts";
import { resolveHead } from "../../packages/detect/head.ts";
import { nms } from "../../packages/detect/nms.ts";
import type { Box, Candidates, Detection } from "../../packages/detect/types.ts";
import { float32 } from "../../packages/onnx/tensor.ts";
import { join } from "node:path";
import { loadConfig } from "../../packages/pipeline/config.ts";
import { runPipeline } from "../../packages/pipeline/runner.ts";
import { darknetPhotoDir, humanModel, nanodetHead, nanodetPreprocessing } from "../assets.ts";
import type { BenchOptions, BenchResult } from "./types.ts";

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function timeMs(f: () => unknown, runs: number): number {
  f(); // warm-up (JIT)
  const ts: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    f();
    ts.push(performance.now() - t);
  }
  return median(ts);
}

/** Random candidates clustered around a few hundred objects, as a detector's raw output looks. */
function candidates(n: number, classes: number, seed: number, maxSize = 200): Candidates {
  const r = rng(seed);
  const centres = Array.from(
    { length: maxSize < 50 ? n : 300 },
    () => [r() * 640, r() * 640, 10 + r() * maxSize, 10 + r() * maxSize],
  );
  const boxes = new Float32Array(4 * n), scores = new Float32Array(n), labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const [cx, cy, w, h] = centres[Math.floor(r() * centres.length)]!;
    const jx = (r() - 0.5) * 0.3 * w!, jy = (r() - 0.5) * 0.3 * h!;
    boxes.set([cx! + jx - w! / 2, cy! + jy - h! / 2, cx! + jx + w! / 2, cy! + jy + h! / 2], 4 * i);
    scores[i] = r();
    labels[i] = Math.floor(r() * classes);
  }
  return { boxes, scores, labels, count: n };
}

/**
 * NanoDet-m (tfjs, COCO) quantized to int8 through the pipeline (percentile calibration on the 7
 * darknet photos), then judged by the evaluate step: detection agreement of int8 with float.
 */
async function nanodetAgreement(): Promise<BenchResult> {
  const dir = await Deno.makeTempDir({ prefix: "clipq-bench-nanodet-" });
  try {
    const photos = await darknetPhotoDir();
    const cfg = join(dir, "nanodet.json");
    await Deno.writeTextFile(
      cfg,
      JSON.stringify({
        model: { tfjs: await humanModel("nanodet") },
        output: "out/nanodet.int8.onnx",
        report: "out/report.json",
        input: nanodetPreprocessing([416, 416]),
        data: { calibration: { images: photos }, evaluation: { images: photos } },
        head: nanodetHead({ score: 0.05 }),
        steps: [
          { use: "normalize" },
          { use: "calibrate", method: "percentile", percentile: 99.99 },
          { use: "quantize" },
          { use: "evaluate" },
        ],
      }),
    );
    const { report } = await runPipeline(await loadConfig(cfg), { quiet: true });
    const acc = report.accuracy as {
      images: number;
      fidelity: { ap50: number; map: number; references: number };
      outputSqnr: Record<string, number>;
      ms: number;
    };
    return {
      name: "detect nanodet-m int8 agreement",
      metrics: {
        images: acc.images,
        referenceDetections: acc.fidelity.references,
        agreementAp50: acc.fidelity.ap50,
        agreementMap: acc.fidelity.map,
        minOutputSqnrDb: Math.min(...Object.values(acc.outputSqnr)),
        evaluateMs: acc.ms,
        sizeRatio: report.sizes.ratio,
      },
      notes:
        "Float detections ≥ 0.3 are the ground truth of the int8 model's (pycocotools AP); percentile 99.99 calibration, QDQ u8, head kept float.",
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * Times NMS, YOLOv3 decoding and COCO evaluation; without `quick`, also quantizes NanoDet and
 * reports int8-vs-float detection agreement.
 *
 * @param options `quick` uses fewer runs and a smaller evaluation set, and skips NanoDet.
 * @returns The results.
 */
export async function run(options: BenchOptions): Promise<BenchResult[]> {
  const runs = options.quick ? 5 : 21;
  const c = candidates(10_000, 80, 1);
  const nmsAware = timeMs(() => nms(c, { score: 0 }), runs);
  const nmsAgnostic = timeMs(() => nms(c, { score: 0, classAgnostic: true }), runs);
  const nmsUnlimited = timeMs(() => nms(c, { score: 0, maxDetections: 10_000 }), runs);
  const keptUnlimited = nms(c, { score: 0, maxDetections: 10_000 }).length;
  const agnosticUnlimited = timeMs(
    () => nms(c, { score: 0, maxDetections: 10_000, classAgnostic: true }),
    runs,
  );
  // Small boxes spread over the image (few overlaps, most kept): the spatial-grid path.
  const sparse = candidates(10_000, 80, 4, 6);
  const sparseMs = timeMs(
    () => nms(sparse, { score: 0, maxDetections: 10_000, classAgnostic: true }),
    runs,
  );
  const sparseKept = nms(sparse, { score: 0, maxDetections: 10_000, classAgnostic: true }).length;
  const keptAgnosticUnlimited = nms(c, { score: 0, maxDetections: 10_000, classAgnostic: true })
    .length;

  // YOLOv3-416 raw head: 13², 26², 52² cells × 3 anchors × 85 channels of random logits.
  const r = rng(2);
  const strides = [32, 16, 8];
  const outputs = Object.fromEntries(strides.map((s) => {
    const g = 416 / s;
    const x = new Float32Array(255 * g * g);
    for (let i = 0; i < x.length; i++) x[i] = (r() - 0.5) * 8 - 2;
    return [`out${s}`, float32([1, 255, g, g], x)];
  }));
  const head = resolveHead({
    type: "yolov3",
    outputs: strides.map((s) => `out${s}`),
    strides,
    anchors: [[[116, 90], [156, 198], [373, 326]], [[30, 61], [62, 45], [59, 119]], [[10, 13], [
      16,
      30,
    ], [33, 23]]],
    classes: 80,
  });
  const decodeMs = timeMs(() => decodeOutputs(head, outputs), runs);
  const decodeCandidatesCount = decodeCandidates(head, outputs).count;

  // Synthetic COCO set: ground truth and noisy detections (some misses, some false positives).
  const images = options.quick ? 100 : 500;
  const gt: GroundTruthObject[][] = [];
  const dets: Detection[][] = [];
  const e = rng(3);
  for (let i = 0; i < images; i++) {
    const g: GroundTruthObject[] = [];
    const d: Detection[] = [];
    for (let k = 0; k < 7; k++) {
      const x = e() * 500, y = e() * 500, w = 8 + e() * 150, h = 8 + e() * 150;
      const box: Box = [x, y, x + w, y + h];
      const label = Math.floor(e() * 20);
      g.push({ box, label, iscrowd: e() < 0.03 });
      if (e() < 0.85) {
        const j = () => (e() - 0.5) * 0.2 * w;
        d.push({
          box: [box[0] + j(), box[1] + j(), box[2] + j(), box[3] + j()],
          score: e(),
          label,
        });
      }
    }
    for (let k = 0; k < 20; k++) {
      const x = e() * 500, y = e() * 500;
      d.push({
        box: [x, y, x + 20 + e() * 100, y + 20 + e() * 100],
        score: e() * 0.6,
        label: Math.floor(e() * 20),
      });
    }
    gt.push(g);
    dets.push(d);
  }
  let map = 0;
  const cocoMs = timeMs(() => (map = cocoMap(dets, gt).map), options.quick ? 3 : 7);
  const results: BenchResult[] = [
    {
      name: "detect nms 10k candidates",
      metrics: {
        candidates: 10_000,
        classes: 80,
        classAwareMs: nmsAware,
        classAgnosticMs: nmsAgnostic,
        unlimitedMs: nmsUnlimited,
        unlimitedKept: keptUnlimited,
        agnosticUnlimitedMs: agnosticUnlimited,
        agnosticUnlimitedKept: keptAgnosticUnlimited,
        sparseAgnosticUnlimitedMs: sparseMs,
        sparseAgnosticUnlimitedKept: sparseKept,
      },
      notes:
        `Greedy NMS, IoU 0.45, median of ${runs} runs; candidates jittered around 300 objects (10–210 px in 640²), or for "sparse" 10 000 boxes of 10–16 px; maxDetections 100 unless "unlimited" (10 000). Goal: well under 50 ms.`,
    },
    {
      name: "detect yolov3-416 decode",
      metrics: {
        cells: 3 * (13 * 13 + 26 * 26 + 52 * 52),
        candidatesAboveScore: decodeCandidatesCount,
        decodeMs,
      },
      notes:
        "Raw [1, 255, H, W] outputs of random logits (a stress case: far more candidates above score 0.01 than a trained model gives), decode + NMS.",
    },
    {
      name: "detect coco eval synthetic",
      metrics: {
        images,
        objectsPerImage: 7,
        detectionsPerImage: 20 + 6,
        classes: 20,
        evalMs: cocoMs,
        map,
      },
      notes: "cocoMap over 10 IoU thresholds × 4 areas × 3 maxDets, median of runs.",
    },
  ];
  if (!options.quick) results.push(await nanodetAgreement());
  return results;
}

if (import.meta.main) {
  console.log(JSON.stringify(await run({ quick: Deno.args.includes("--quick") }), null, 2));
}
