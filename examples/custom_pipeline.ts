/**
 * A clipq pipeline composed in code from the packages, without the runner or a config file:
 * normalize → zero-data clip bounds → data ranges for what clipping leaves unbounded → int8 QDQ.
 *
 *     deno run -A examples/custom_pipeline.ts model.onnx photos/ out.int8.onnx
 *
 * @module
 */
import { type Graph, normalize, opsetOf, type TensorRange, upgradeOpset } from "@clipq/onnx";
import { loadModel, saveModel } from "@clipq/onnx/io";
import { clipBounds, collectStatistics, rangesFromStatistics } from "@clipq/calibrate";
import { imageBatches, listImages, type PreprocessSpec } from "@clipq/data";
import { planQuantization, quantize, type QuantizeReport } from "@clipq/quantize";

/** What {@linkcode quantizeInCode} returns. */
export interface CustomResult {
  graph: Graph;
  report: QuantizeReport;
  /** How many activation ranges came from clip bounds and how many from images. */
  counts: { clipBound: number; data: number };
}

/**
 * Quantizes a float model: ranges from the network's own clipping where it states them, percentile
 * ranges from `images` for the rest.
 *
 * @param model The float graph.
 * @param images Calibration image files.
 * @param spec Preprocessing of the image input (named `input`).
 * @returns The int8 graph, the quantizer's report and where the ranges came from.
 */
export async function quantizeInCode(
  model: Graph,
  images: readonly string[],
  spec: PreprocessSpec & { input: string },
): Promise<CustomResult> {
  let graph = normalize(model);
  if ((opsetOf(graph) ?? 1) < 13) graph = upgradeOpset(graph, { target: 13 });

  const needed = planQuantization(graph).activations;
  const bounds = clipBounds(graph, { inputs: { [spec.input]: spec } });
  const ranges = new Map<string, TensorRange>();
  for (const t of needed) {
    const r = bounds.ranges.get(t);
    if (r) ranges.set(t, r);
  }
  const unbounded = needed.filter((t) => !ranges.has(t));
  if (unbounded.length > 0) {
    const feeds = (async function* () {
      for await (const b of imageBatches(images, spec)) yield { [spec.input]: b.tensor };
    })();
    const stats = await collectStatistics(graph, feeds, { tensors: unbounded });
    for (const [t, r] of rangesFromStatistics(stats, { method: "percentile", percentile: 99.99 })) {
      ranges.set(t, r);
    }
  }
  const { graph: int8, report } = quantize(graph, { ranges, format: "qdq", activations: "u8" });
  return {
    graph: int8,
    report,
    counts: { clipBound: needed.length - unbounded.length, data: unbounded.length },
  };
}

if (import.meta.main) {
  const [modelPath, imageDir, output] = Deno.args;
  if (!modelPath || !imageDir || !output) {
    console.error(
      "usage: deno run -A examples/custom_pipeline.ts model.onnx images/ out.int8.onnx",
    );
    Deno.exit(1);
  }
  const model = await loadModel(modelPath);
  const input = model.inputs[0]!.name;
  const result = await quantizeInCode(model, await listImages(imageDir, { limit: 16 }), {
    input,
    size: [640, 640],
    resize: "letterbox",
    layout: "NCHW",
    color: "RGB",
    scale: 1 / 255,
    mean: [0, 0, 0],
    std: [1, 1, 1],
  });
  await saveModel(output, result.graph);
  console.log(
    `${output}: ${result.counts.clipBound} ranges from clip bounds, ${result.counts.data} from images; ` +
      `${result.report.floatNodes.length} nodes kept float`,
  );
}
