/**
 * The `evaluate` step: runs the float model (the graph before `quantize`) and the current (int8)
 * model over the evaluation images through onnxruntime, decodes both with the configured head
 * (boxes mapped back through the letterbox/resize), and reports detection agreement (fidelity),
 * per-output SQNR and — when the evaluation set has COCO JSON or VOC XML annotations — mAP of both
 * models and the drop. The graph passes through unchanged.
 *
 * @module
 */
import { basename, extname, join } from "node:path";
import { loadCocoAnnotations } from "@clipq/data/coco";
import { loadVocAnnotation } from "@clipq/data/voc";
import {
  cocoGroundTruth,
  decodeBatch,
  type Detection,
  evaluateDetections,
  type GroundTruthObject,
  type HeadConfig,
  resolveHead,
  VOC_CLASSES,
  vocGroundTruth,
} from "@clipq/detect";
import { ConfigError, DataError, ModelError } from "@clipq/onnx/errors";
import { toFloat64 } from "@clipq/onnx/tensor";
import { createSession } from "@clipq/runtime";
import type { ObjectSpec } from "../spec.ts";
import { checkOptions, type Step, type StepContext, type StepDefinition } from "../step.ts";

/** Options of {@linkcode evaluateStep}. */
export interface EvaluateStepOptions {
  /** Metric against annotations; default `coco` for a JSON file, `voc` for an XML folder. */
  metric?: "coco" | "voc" | "voc07";
  /** Float detections scoring at least this are the reference for int8 agreement. */
  fidelityThreshold?: number;
  /** COCO JSON file or VOC annotation folder; defaults to `data.evaluation.annotations`. */
  annotations?: string;
  /** COCO: model label = category rank among the sorted category ids (`index`) or the id itself. */
  labels?: "index" | "category-id";
  /** Added to the class index (1 for heads whose class 0 is background, e.g. SSD softmax). */
  labelOffset?: number;
  /** VOC class names by index (default the 20 Pascal VOC classes). */
  classes?: string[];
}

/** Defaults of {@linkcode evaluateStep}. */
export const defaults = {
  fidelityThreshold: 0.3,
  labels: "index",
  labelOffset: 0,
} satisfies EvaluateStepOptions;

/** Option description of the `evaluate` step. */
export const EVALUATE_OPTIONS: ObjectSpec = {
  type: "object",
  properties: {
    metric: {
      type: "string",
      enum: ["coco", "voc", "voc07"],
      description: "Metric against annotations.",
    },
    fidelityThreshold: {
      type: "number",
      minimum: 0,
      maximum: 1,
      description: "Float detections scoring at least this are the ground truth of int8 agreement.",
    },
    annotations: {
      type: "string",
      path: true,
      description: "COCO JSON file or VOC annotation folder.",
    },
    labels: { type: "string", enum: ["index", "category-id"] },
    labelOffset: { type: "number", integer: true, minimum: 0, maximum: 1000 },
    classes: { type: "array", items: { type: "string" }, maxItems: 100000 },
  },
};

/** Ground truth for the evaluated files (undefined for files without annotations). */
async function groundTruthFor(
  path: string,
  files: readonly string[],
  o: EvaluateStepOptions & Required<Pick<EvaluateStepOptions, "labels" | "labelOffset">>,
): Promise<{ gt: (GroundTruthObject[] | undefined)[]; metric: "coco" | "voc" | "voc07" }> {
  const st = await Deno.stat(path);
  if (st.isDirectory) {
    const gt = await Promise.all(files.map(async (f) => {
      const xml = join(path, `${basename(f, extname(f))}.xml`);
      let text: string;
      try {
        text = await Deno.readTextFile(xml);
      } catch {
        return undefined;
      }
      const classes = o.classes ?? VOC_CLASSES;
      return vocGroundTruth([loadVocAnnotation(text, xml)], { classes })[0]!.map((g) => ({
        ...g,
        label: g.label + o.labelOffset,
      }));
    }));
    return { gt, metric: o.metric ?? "voc" };
  }
  const dataset = loadCocoAnnotations(await Deno.readTextFile(path), path);
  const rank = new Map(
    [...dataset.categories].sort((a, b) => a.id - b.id).map((c, i) => [c.id, i]),
  );
  const labelOf = (c: number) =>
    o.labels === "category-id" ? c : (rank.get(c) ?? -1) + o.labelOffset;
  const byName = new Map(dataset.images.map((im) => [basename(im.file), im.file]));
  const known = files.map((f) => byName.get(basename(f)));
  const present = known.filter((f): f is string => f !== undefined);
  const gts = cocoGroundTruth(dataset, { files: present, labelOf });
  let k = 0;
  return {
    gt: known.map((f) => (f === undefined ? undefined : gts[k++])),
    metric: o.metric ?? "coco",
  };
}

/**
 * Decodes a batch; an output whose shape the head description cannot read (anchors or classes
 * that do not fit) is the description's error, so it is reported under `head`, not as a broken
 * model file.
 *
 * @param head The resolved head description.
 * @param outputs The model outputs by name.
 * @param options As `decodeBatch` takes them.
 * @returns Detections per image.
 * @throws {ConfigError} Under `head`, when an output's shape does not fit the description.
 *
 * @example
 * ```ts
 * import { decodeHead } from "@clipq/pipeline/steps/evaluate";
 * import { resolveHead } from "@clipq/detect";
 * import { float32 } from "@clipq/onnx";
 * import assert from "node:assert/strict";
 * const head = resolveHead({ type: "yolo-decoded", outputs: ["d"] });
 * assert.throws(() => decodeHead(head, { d: float32([1, 1, 5], [0, 0, 1, 1, 1]) }), /^ConfigError: head:/);
 * ```
 */
export function decodeHead(
  head: HeadConfig,
  outputs: Parameters<typeof decodeBatch>[1],
  options: Parameters<typeof decodeBatch>[2] = {},
): Detection[][] {
  try {
    return decodeBatch(head, outputs, options);
  } catch (e) {
    if (e instanceof ModelError && /^output "[^"]+": expected shape /.test(e.message)) {
      throw new ConfigError(
        "head",
        `${e.message}; the ${head.type} head description does not fit this output`,
        { cause: e },
      );
    }
    throw e;
  }
}

/**
 * Creates the `evaluate` step.
 *
 * @param options Metric, fidelity threshold, annotations and label mapping.
 * @returns The step.
 *
 * @example Options are checked up front
 * ```ts
 * import { evaluateStep } from "@clipq/pipeline/steps/evaluate";
 * import assert from "node:assert/strict";
 * assert.equal(evaluateStep().name, "evaluate");
 * assert.throws(() => evaluateStep({ metric: "map" as "coco" }), /evaluate\.metric: expected one of coco, voc, voc07/);
 * ```
 */
export function evaluateStep(options: EvaluateStepOptions = {}): Step {
  const o:
    & EvaluateStepOptions
    & Required<Pick<EvaluateStepOptions, "fidelityThreshold" | "labels" | "labelOffset">> = {
      ...defaults,
      ...checkOptions<EvaluateStepOptions>(EVALUATE_OPTIONS, options, "evaluate"),
    };
  return {
    name: "evaluate",
    async run(graph, ctx: StepContext) {
      const head = resolveHead(ctx.head, { metadata: graph.metadata });
      const floatGraph = ctx.floatGraph ?? graph;
      const selfCompared = ctx.floatGraph === undefined;
      if (selfCompared) {
        ctx.log.warn(
          "evaluate: no quantize step ran before evaluate; the model is compared with itself",
        );
      }
      const set = ctx.hasData("evaluation") ? "evaluation" : "calibration";
      if (set === "calibration") {
        ctx.log.warn(
          "evaluate: no evaluation images configured; using the calibration images (agreement only)",
        );
      }
      const t0 = performance.now();
      // One run an image: no memory plan, whose second run allocates afresh (see createSession).
      const few = { memoryPattern: false } as const;
      const floatSession = await createSession(floatGraph, { ...few, label: "float model" });
      const int8Session = await createSession(graph, { ...few, label: "int8 model" });
      const float: Detection[][] = [], int8: Detection[][] = [];
      const files: string[] = [];
      const sums = new Map<string, [number, number]>();
      let mapped = true;
      try {
        const size = ctx.input.size;
        for await (const b of ctx.batches(set, { label: "evaluation" })) {
          const [fo, qo] = [await floatSession.run(b.feeds), await int8Session.run(b.feeds)];
          for (const name of head.outputs) {
            if (!fo[name] || !qo[name]) continue;
            const x = toFloat64(fo[name]), y = toFloat64(qo[name]);
            const acc = sums.get(name) ?? [0, 0];
            for (let i = 0; i < Math.min(x.length, y.length); i++) {
              const d = x[i]! - y[i]!;
              acc[0] += x[i]! * x[i]!;
              acc[1] += d * d;
            }
            sums.set(name, acc);
          }
          if (!b.transforms) mapped = false;
          const opts = {
            ...(b.transforms ? { transforms: b.transforms } : { batchSize: b.files.length }),
            ...(size ? { size: size as [number, number] } : {}),
          };
          float.push(...decodeHead(head, fo, opts));
          int8.push(...decodeHead(head, qo, opts));
          files.push(...b.files);
        }
      } finally {
        await floatSession.release();
        await int8Session.release();
      }
      const annotations = o.annotations ?? ctx.annotations?.(set);
      let gt: (GroundTruthObject[] | undefined)[] | undefined;
      let metric = o.metric ?? "coco";
      if (annotations) {
        if (!mapped) {
          throw new DataError(
            `${annotations}: boxes cannot be compared with annotations because the image batches carry no preprocessing transforms`,
          );
        }
        ({ gt, metric } = await groundTruthFor(annotations, files, o));
      }
      const labeled = gt ? [...gt.keys()].filter((i) => gt![i] !== undefined) : [];
      if (annotations && files.length > 0) {
        // Annotations of other images gave no mAP at all, and no word about it.
        const unlabeled = files.filter((_, i) => gt![i] === undefined).map((f) => basename(f));
        if (labeled.length === 0) {
          throw new DataError(
            `${annotations}: expected annotations of the ${set} images; found none for any of the ${files.length} (${
              unlabeled.slice(0, 3).join(", ")
            }${files.length > 3 ? ", …" : ""})`,
          );
        }
        if (unlabeled.length > 0) {
          ctx.log.warn(
            `evaluate: ${unlabeled.length} of ${files.length} ${set} images have no annotation in ${annotations} (${
              unlabeled.slice(0, 3).join(", ")
            }${unlabeled.length > 3 ? ", …" : ""}); mAP is over the ${labeled.length} annotated`,
          );
        }
      }
      const fidelityResult =
        evaluateDetections({ float, int8 }, { fidelityThreshold: o.fidelityThreshold }).fidelity;
      const accuracy = labeled.length
        ? evaluateDetections({
          float: labeled.map((i) => float[i]!),
          int8: labeled.map((i) => int8[i]!),
          groundTruth: labeled.map((i) => gt![i]!),
        }, { metric, fidelityThreshold: o.fidelityThreshold })
        : undefined;
      const sqnr = Object.fromEntries([...sums].map(([name, [s, n]]) => [
        name,
        n === 0 ? null : 10 * Math.log10(s / n),
      ]));
      ctx.report.accuracy = {
        head: head.type,
        dataSet: set,
        images: files.length,
        fidelity: { ...fidelityResult, threshold: o.fidelityThreshold },
        ...(selfCompared
          ? { note: "no quantize step before evaluate: float and int8 are the same model" }
          : {}),
        ...(accuracy
          ? {
            metric,
            annotatedImages: labeled.length,
            float: accuracy.float,
            int8: accuracy.int8,
            drop: accuracy.drop,
          }
          : {}),
        outputSqnr: sqnr,
        detections: {
          float: float.reduce((s, d) => s + d.length, 0),
          int8: int8.reduce((s, d) => s + d.length, 0),
        },
        ms: Math.round(performance.now() - t0),
      };
      const f = fidelityResult;
      ctx.log.info(
        `  fidelity AP50 ${f.ap50.toFixed(4)} mAP ${f.map.toFixed(4)} over ${files.length} images` +
          (accuracy?.drop
            ? `; mAP float ${accuracy.float!.map.toFixed(4)} int8 ${accuracy.int8!.map.toFixed(4)}`
            : ""),
      );
      return graph;
    },
  };
}

/** Registry entry of the `evaluate` step. */
export const evaluateDefinition: StepDefinition = {
  name: "evaluate",
  description:
    "Float vs int8 on the evaluation images: detection agreement, mAP with annotations, output SQNR.",
  options: EVALUATE_OPTIONS,
  factory: (o) => evaluateStep(o as EvaluateStepOptions),
};
