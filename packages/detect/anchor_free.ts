/**
 * Anchor-free decoders: FCOS/NanoDet-style distance regression and Generalized Focal Loss (GFL)
 * distribution decoding, over one or more feature levels.
 *
 * @module
 */
import { ModelError } from "@clipq/onnx/errors";
import type { Tensor } from "@clipq/onnx/tensor";
import { expectShape, floats, output, sigmoid } from "./_tensor.ts";
import type { AnchorFreeHead, GflHead } from "./head.ts";
import { CandidateBuffer, type Candidates } from "./types.ts";
import type { DecodeOptions } from "./yolo.ts";

/** One level's view: value(point, channel) = data[base + point · pStride + channel · cStride]. */
interface View {
  data: Float32Array;
  base: number;
  pStride: number;
  cStride: number;
}

interface Level {
  stride: number;
  H: number;
  W: number;
  cls: View;
  reg: View;
}

/** Grid size of a level from the input size, as the convolutions produce it. */
function grid(
  size: readonly [number, number] | undefined,
  stride: number,
  name: string,
): [number, number] {
  if (!size) {
    throw new ModelError(
      `output "${name}": channels-last levels need the model input size to know the grid, but none was given`,
    );
  }
  return [Math.ceil(size[0] / stride), Math.ceil(size[1] / stride)];
}

function levels(
  head: AnchorFreeHead | GflHead,
  outputs: Record<string, Tensor>,
  regChannels: number,
  options: DecodeOptions,
): { levels: Level[]; classes: number } {
  const b = options.batch ?? 0;
  const L = head.strides.length;
  const what = `${head.type} head`;
  const first = head.layout === "channels-first";
  // A tensor's channel count and a view factory for one of its levels.
  const open = (name: string, stride: number, start = 0) => {
    const t = output(outputs, name, what);
    const d = t.dims;
    const data = floats(t, name);
    if (first) {
      expectShape(d.length === 4 && b < d[0]!, name, `[N, K, H, W] with batch > ${b}`, d);
      const [, K, H, W] = d as [number, number, number, number];
      return {
        K,
        H,
        W,
        view: (c0: number): View => ({
          data,
          base: (b * K + c0) * H * W,
          pStride: 1,
          cStride: H * W,
        }),
      };
    }
    expectShape(
      (d.length === 3 || d.length === 4) && b < d[0]!,
      name,
      `[N, H·W, K] or [N, H, W, K] with batch > ${b}`,
      d,
    );
    const K = d[d.length - 1]!;
    const P = d.length === 4 ? d[1]! * d[2]! : d[1]!;
    const [H, W] = d.length === 4 ? [d[1]!, d[2]!] : grid(options.size, stride, name);
    if (start + H * W > P) {
      throw new ModelError(
        `output "${name}": expected at least ${
          start + H * W
        } points for stride ${stride} but found ${P}`,
      );
    }
    return {
      K,
      H,
      W,
      view: (c0: number): View => ({
        data,
        base: (b * P + start) * K + c0,
        pStride: K,
        cStride: 1,
      }),
    };
  };
  const out: Level[] = [];
  let classes = head.classes ?? -1;
  const n = head.outputs.length;
  let start = 0;
  for (let l = 0; l < L; l++) {
    const stride = head.strides[l]!;
    if (n === 2 * L) {
      const c = open(head.outputs[2 * l]!, stride);
      const r = open(head.outputs[2 * l + 1]!, stride);
      expectShape(
        r.K === regChannels && r.H === c.H && r.W === c.W,
        head.outputs[2 * l + 1]!,
        `${regChannels} regression channels on a ${c.H}×${c.W} grid`,
        outputs[head.outputs[2 * l + 1]!]!.dims,
      );
      if (classes < 0) classes = c.K;
      expectShape(
        c.K === classes,
        head.outputs[2 * l]!,
        `${classes} class channels`,
        outputs[head.outputs[2 * l]!]!.dims,
      );
      out.push({ stride, H: c.H, W: c.W, cls: c.view(0), reg: r.view(0) });
    } else {
      // One tensor per level, or (n = 1) one tensor holding every level channels-last.
      const name = head.outputs[n === 1 ? 0 : l]!;
      if (n === 1 && L > 1 && first) {
        throw new ModelError(
          `${what}: one output for ${L} strides needs layout "channels-last" (levels concatenated)`,
        );
      }
      const v = open(name, stride, n === 1 ? start : 0);
      if (classes < 0) classes = v.K - regChannels;
      expectShape(
        v.K === classes + regChannels && classes > 0,
        name,
        `${classes > 0 ? classes : "C"} class + ${regChannels} regression channels`,
        outputs[name]!.dims,
      );
      out.push({ stride, H: v.H, W: v.W, cls: v.view(0), reg: v.view(classes) });
      start += v.H * v.W;
    }
  }
  return { levels: out, classes };
}

function decode(
  head: AnchorFreeHead | GflHead,
  outputs: Record<string, Tensor>,
  options: DecodeOptions,
  bins: number,
): Candidates {
  const { levels: ls, classes: C } = levels(head, outputs, 4 * bins, options);
  const thr = head.nms.score;
  const act = head.activation === "sigmoid" ? sigmoid : (x: number) => x;
  const buf = new CandidateBuffer();
  const scores = new Float64Array(C);
  const dist = new Float64Array(4);
  for (const { stride, H, W, cls, reg } of ls) {
    for (let gy = 0; gy < H; gy++) {
      for (let gx = 0; gx < W; gx++) {
        const p = gy * W + gx;
        let any = false;
        for (let c = 0; c < C; c++) {
          const s = act(cls.data[cls.base + p * cls.pStride + c * cls.cStride]!);
          scores[c] = s;
          if (s >= thr) any = true;
        }
        if (!any) continue;
        for (let side = 0; side < 4; side++) {
          const at = (k: number) =>
            reg.data[reg.base + p * reg.pStride + (side * bins + k) * reg.cStride]!;
          if (bins === 1) {
            dist[side] = at(0) * stride;
            continue;
          }
          // Expectation of the softmax distribution over bins 0..regMax.
          let max = -Infinity;
          for (let k = 0; k < bins; k++) max = Math.max(max, at(k));
          let sum = 0, e = 0;
          for (let k = 0; k < bins; k++) {
            const v = Math.exp(at(k) - max);
            sum += v;
            e += k * v;
          }
          dist[side] = (e / sum) * stride;
        }
        const cx = (gx + head.centerOffset) * stride, cy = (gy + head.centerOffset) * stride;
        for (let c = 0; c < C; c++) {
          if (scores[c]! >= thr) {
            buf.push(cx - dist[0]!, cy - dist[1]!, cx + dist[2]!, cy + dist[3]!, scores[c]!, c);
          }
        }
      }
    }
  }
  return buf.toCandidates();
}

/**
 * Decodes an FCOS/NanoDet-style head: per level class scores (σ of logits, or as-is) and
 * distances `l, t, r, b` (× stride) from the point `(g + centerOffset) · stride`.
 *
 * @param head The head description.
 * @param outputs Model outputs by name.
 * @param options Batch index; input size for channels-last `[N, H·W, K]` levels.
 * @returns Candidates in model-input pixels (before NMS).
 * @throws {ModelError} When an output is missing or its channels do not fit.
 *
 * @example One point of one level
 * ```ts
 * import { decodeAnchorFree } from "@clipq/detect/anchor-free";
 * import { type AnchorFreeHead, resolveHead } from "@clipq/detect/head";
 * import { float32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const head = resolveHead({ type: "anchor-free", outputs: ["p8"], strides: [8] }) as AnchorFreeHead;
 * // 1 class logit then l, t, r, b = 1, 1, 2, 2 strides from the centre (4, 4).
 * const c = decodeAnchorFree(head, { p8: float32([1, 5, 1, 1], [9, 1, 1, 2, 2]) });
 * assert.deepEqual([...c.boxes.subarray(0, 4)], [-4, -4, 20, 20]);
 * ```
 */
export function decodeAnchorFree(
  head: AnchorFreeHead,
  outputs: Record<string, Tensor>,
  options: DecodeOptions = {},
): Candidates {
  return decode(head, outputs, options, 1);
}

/**
 * Decodes a Generalized Focal Loss head (NanoDet-Plus): each of `l, t, r, b` is a softmax
 * distribution over bins `0..regMax`; the distance is its expectation × stride.
 *
 * @param head The head description.
 * @param outputs Model outputs by name.
 * @param options Batch index; input size for channels-last `[N, H·W, K]` outputs.
 * @returns Candidates in model-input pixels (before NMS).
 * @throws {ModelError} When an output is missing or its channels do not fit.
 *
 * @example A distribution peaked at bin 2
 * ```ts
 * import { decodeGfl } from "@clipq/detect/anchor-free";
 * import { type GflHead, resolveHead } from "@clipq/detect/head";
 * import { float32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const head = resolveHead({ type: "gfl", outputs: ["p"], strides: [8], regMax: 2, centerOffset: 0.5 }) as GflHead;
 * const side = [-50, -50, 50]; // all the mass on bin 2 → 2 · 8 = 16 pixels
 * const c = decodeGfl(head, { p: float32([1, 13, 1, 1], [9, ...side, ...side, ...side, ...side]) });
 * assert.ok(Math.abs(c.boxes[0]! - (4 - 16)) < 1e-4);
 * ```
 */
export function decodeGfl(
  head: GflHead,
  outputs: Record<string, Tensor>,
  options: DecodeOptions = {},
): Candidates {
  return decode(head, outputs, options, head.regMax + 1);
}
