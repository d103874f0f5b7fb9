/**
 * SSD decoder: priors with the center-size box coder and variances, softmax (background 0) or
 * sigmoid class scores.
 *
 * @module
 */
import { ModelError } from "@clipq/onnx/errors";
import type { Tensor } from "@clipq/onnx/tensor";
import { expectShape, floats, output, sigmoid } from "./_tensor.ts";
import type { SsdHead } from "./head.ts";
import { CandidateBuffer, type Candidates } from "./types.ts";
import type { DecodeOptions } from "./yolo.ts";

/**
 * Decodes SSD outputs `locations [N, P, 4]` and `scores [N, P, K]` against priors `[cx, cy, w, h]`
 * (normalized): centre `prior_c + loc · v₀ · prior_wh`, size `prior_wh · exp(loc · v₁)`, scaled to the
 * input size. With `softmax`, class 0 is background and labels are class indices ≥ 1; `none` reads
 * scores the graph already softmaxed the same way; with `sigmoid`, every index is a class.
 *
 * @param head The head description (`outputs`: locations, scores; `priors`).
 * @param outputs Model outputs by name (and the priors tensor, when `priors` names one).
 * @param options Batch index and the input size `[height, width]` (required).
 * @returns Candidates in model-input pixels (before NMS).
 * @throws {ModelError} When an output is missing, shapes disagree, or the input size is unknown.
 *
 * @example Zero offsets give the prior back
 * ```ts
 * import { decodeSsd } from "@clipq/detect/ssd";
 * import { resolveHead, type SsdHead } from "@clipq/detect/head";
 * import { float32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const head = resolveHead({ type: "ssd", outputs: ["loc", "conf"], priors: [[0.5, 0.5, 0.5, 0.25]] }) as SsdHead;
 * const c = decodeSsd(head, { loc: float32([1, 1, 4], [0, 0, 0, 0]), conf: float32([1, 1, 2], [0, 5]) }, { size: [100, 200] });
 * assert.deepEqual([...c.boxes.subarray(0, 4)], [50, 37.5, 150, 62.5]);
 * ```
 */
export function decodeSsd(
  head: SsdHead,
  outputs: Record<string, Tensor>,
  options: DecodeOptions = {},
): Candidates {
  const [ln, cn] = head.outputs as [string, string];
  const size = options.size;
  if (!size) {
    throw new ModelError(
      "ssd head: expected the model input size to scale normalized priors, but none was given",
    );
  }
  const lt = output(outputs, ln, "ssd head");
  const ct = output(outputs, cn, "ssd head");
  const priors = typeof head.priors === "string"
    ? floats(output(outputs, head.priors, "ssd head priors"), head.priors)
    : Float32Array.from(head.priors.flat());
  const P = priors.length / 4;
  const b = options.batch ?? 0;
  const ld = lt.dims, cd = ct.dims;
  expectShape(
    ld.length === 3 && ld[1] === P && ld[2] === 4 && b < ld[0]!,
    ln,
    `[N, ${P}, 4] (${P} priors) with batch > ${b}`,
    ld,
  );
  expectShape(cd.length === 3 && cd[1] === P && b < cd[0]!, cn, `[N, ${P}, K]`, cd);
  const K = cd[2]!;
  // Softmax in the decoder or in the graph ("none"): either way class 0 is background.
  const softmax = head.activation === "softmax";
  const background = head.activation !== "sigmoid";
  if (head.classes !== undefined) {
    expectShape(
      K === head.classes + (background ? 1 : 0),
      cn,
      `[N, ${P}, ${head.classes + (background ? 1 : 0)}]`,
      cd,
    );
  }
  const loc = floats(lt, ln), conf = floats(ct, cn);
  const [v0, v1] = head.variances;
  const [H, W] = size;
  const buf = new CandidateBuffer();
  const p = new Float64Array(K);
  for (let i = 0; i < P; i++) {
    const o = (b * P + i) * K;
    if (softmax) {
      let max = -Infinity;
      for (let k = 0; k < K; k++) max = Math.max(max, conf[o + k]!);
      let sum = 0;
      for (let k = 0; k < K; k++) sum += p[k] = Math.exp(conf[o + k]! - max);
      for (let k = 0; k < K; k++) p[k] = p[k]! / sum;
    } else if (head.activation === "sigmoid") {
      for (let k = 0; k < K; k++) p[k] = sigmoid(conf[o + k]!);
    } else {
      for (let k = 0; k < K; k++) p[k] = conf[o + k]!;
    }
    let decoded = false;
    let x1 = 0, y1 = 0, x2 = 0, y2 = 0;
    for (let k = background ? 1 : 0; k < K; k++) {
      const s = p[k]!;
      if (s < head.nms.score) continue;
      if (!decoded) {
        const l = (b * P + i) * 4;
        const pcx = priors[4 * i]!,
          pcy = priors[4 * i + 1]!,
          pw = priors[4 * i + 2]!,
          ph = priors[4 * i + 3]!;
        const cx = pcx + loc[l]! * v0 * pw, cy = pcy + loc[l + 1]! * v0 * ph;
        const w = pw * Math.exp(loc[l + 2]! * v1), h = ph * Math.exp(loc[l + 3]! * v1);
        x1 = (cx - w / 2) * W;
        y1 = (cy - h / 2) * H;
        x2 = (cx + w / 2) * W;
        y2 = (cy + h / 2) * H;
        decoded = true;
      }
      buf.push(x1, y1, x2, y2, s, k);
    }
  }
  return buf.toCandidates();
}
