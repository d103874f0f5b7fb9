/**
 * The preprocessing description shared by calibration and detection: how an image becomes a model
 * input tensor, and how boxes map between model-input and original-image coordinates.
 *
 * Resizing is bilinear with half-pixel centers, as `cv2.resize(INTER_LINEAR)` does:
 * output pixel `x` samples source coordinate `(x − offsetX + 0.5) / scaleX − 0.5`, clamped to the
 * image (edge pixels replicate). There is no antialiasing filter on downscaling (PIL has one,
 * cv2 does not), so values match cv2-based training pipelines such as Ultralytics'.
 *
 * @module
 */
import { ConfigError } from "@clipq/onnx/errors";
import { type Tensor, tensor } from "@clipq/onnx/tensor";
import type { RgbImage } from "./image.ts";

/** How an image becomes a model input. Pixel `v ∈ [0, 255]` → `x = (v · scale − mean[c]) / std[c]`. */
export interface PreprocessSpec {
  /** Model input size `[height, width]`. */
  readonly size: readonly [number, number];
  /**
   * `stretch` resizes to `size` ignoring the aspect ratio; `letterbox` keeps the aspect ratio and
   * pads (centered) with `padValue`; `center-crop` scales so the short side fills `size`, then
   * crops the center.
   */
  readonly resize: "stretch" | "letterbox" | "center-crop";
  /** `NCHW`/`NHWC` have a batch axis; `CHW` is a single image without one. */
  readonly layout: "NCHW" | "NHWC" | "CHW";
  /**
   * Channel order of the tensor (`mean`/`std` are given in this order), or `gray`: one channel,
   * the BT.601 luma `0.299·R + 0.587·G + 0.114·B` rounded to a whole pixel value, as OpenCV's and
   * Pillow's grayscale conversions give it (up to their fixed-point arithmetic).
   */
  readonly color: "RGB" | "BGR" | "gray";
  /** Multiplies the 0..255 pixel value before `mean` is subtracted. */
  readonly scale: number;
  /** Per-channel mean, 1 or 3 values (in the tensor's channel order). */
  readonly mean: readonly number[];
  /** Per-channel standard deviation, 1 or 3 positive values (in the tensor's channel order). */
  readonly std: readonly number[];
  /** Pixel value (0..255, before normalization) of the letterbox padding; 114 as in Ultralytics. */
  readonly padValue?: number;
}

/** Defaults: 640×640 letterbox NCHW RGB in [0, 1], padded with gray 114 (Ultralytics YOLO). */
export const defaults: PreprocessSpec = {
  size: [640, 640],
  resize: "letterbox",
  layout: "NCHW",
  color: "RGB",
  scale: 1 / 255,
  mean: [0, 0, 0],
  std: [1, 1, 1],
  padValue: 114,
} satisfies PreprocessSpec;

/**
 * Maps original-image coordinates to model-input coordinates: `xModel = x · scaleX + offsetX`.
 * Offsets are the letterbox padding (positive) or the center-crop margin (negative).
 */
export interface BoxTransform {
  /** Original image width. */
  readonly width: number;
  /** Original image height. */
  readonly height: number;
  /** Model input width. */
  readonly inputWidth: number;
  /** Model input height. */
  readonly inputHeight: number;
  /** Horizontal scale (model pixels per image pixel). */
  readonly scaleX: number;
  /** Vertical scale. */
  readonly scaleY: number;
  /** Horizontal offset in model pixels. */
  readonly offsetX: number;
  /** Vertical offset in model pixels. */
  readonly offsetY: number;
}

/** A box `[x1, y1, x2, y2]`. */
export type Box = readonly [number, number, number, number];

const RESIZES = ["stretch", "letterbox", "center-crop"];
const LAYOUTS = ["NCHW", "NHWC", "CHW"];
const COLORS = ["RGB", "BGR", "gray"];

/**
 * Merges a partial spec with {@linkcode defaults} and checks every field.
 *
 * @param spec The user's spec (fields missing take the defaults).
 * @param keyPath Config key path used in error messages (e.g. `input`).
 * @returns The complete spec.
 * @throws {ConfigError} Naming the key when a field is invalid.
 *
 * @example Usage
 * ```ts
 * import { resolveSpec } from "@clipq/data/preprocess";
 * import assert from "node:assert/strict";
 * assert.equal(resolveSpec({ size: [32, 48] }).resize, "letterbox");
 * assert.throws(() => resolveSpec({ layout: "HWC" as "CHW" }), /input\.layout/);
 * ```
 */
export function resolveSpec(
  spec: Partial<PreprocessSpec> = {},
  keyPath = "input",
): PreprocessSpec {
  const s: PreprocessSpec = { ...defaults, ...spec };
  const key = (k: string) => keyPath ? `${keyPath}.${k}` : k;
  const show = (v: unknown) => JSON.stringify(v) ?? String(v);
  const size = s.size as unknown;
  if (
    !Array.isArray(size) || size.length !== 2 ||
    !size.every((v) => Number.isInteger(v) && v > 0 && v <= 16384)
  ) {
    throw new ConfigError(
      key("size"),
      `expected [height, width] of integers in 1..16384, found ${show(size)}`,
    );
  }
  if (!RESIZES.includes(s.resize)) {
    throw new ConfigError(
      key("resize"),
      `expected one of ${RESIZES.join(", ")}, found ${show(s.resize)}`,
    );
  }
  if (!LAYOUTS.includes(s.layout)) {
    throw new ConfigError(
      key("layout"),
      `expected one of ${LAYOUTS.join(", ")}, found ${show(s.layout)}`,
    );
  }
  if (!COLORS.includes(s.color)) {
    throw new ConfigError(key("color"), `expected one of RGB, BGR, gray, found ${show(s.color)}`);
  }
  // A scale ≤ 0 flips or flattens every pixel: the config refuses it, so does the library.
  if (typeof s.scale !== "number" || !Number.isFinite(s.scale) || s.scale <= 0) {
    throw new ConfigError(key("scale"), `expected a finite number > 0, found ${show(s.scale)}`);
  }
  for (const k of ["mean", "std"] as const) {
    const v = s[k] as unknown;
    if (
      !Array.isArray(v) || (v.length !== 1 && v.length !== 3) ||
      !v.every((x) => typeof x === "number" && Number.isFinite(x) && (k === "mean" || x > 0))
    ) {
      throw new ConfigError(
        key(k),
        `expected 1 or 3 finite numbers${k === "std" ? " > 0" : ""}, found ${show(v)}`,
      );
    }
  }
  if (s.color === "gray") {
    // One channel: one mean and one std (three equal values, as the defaults are, say the same).
    for (const k of ["mean", "std"] as const) {
      if (!s[k].every((x) => x === s[k][0])) {
        throw new ConfigError(
          key(k),
          `expected 1 value for a gray (one-channel) input, found ${show(s[k])}`,
        );
      }
    }
  }
  const pad = s.padValue ?? 114;
  if (typeof pad !== "number" || !(pad >= 0 && pad <= 255)) {
    throw new ConfigError(key("padValue"), `expected a number in [0, 255], found ${show(pad)}`);
  }
  return s;
}

/**
 * The box transform a spec applies to an image of a given size (no pixels needed: annotations can
 * be mapped without decoding the image).
 *
 * @param imageSize `{width, height}` of the original image.
 * @param spec The preprocessing (partial specs are merged with {@linkcode defaults}).
 * @returns The transform.
 *
 * @example Letterbox a 200×100 image into 64×64
 * ```ts
 * import { boxTransform } from "@clipq/data/preprocess";
 * import assert from "node:assert/strict";
 * const t = boxTransform({ width: 200, height: 100 }, { size: [64, 64], resize: "letterbox" });
 * assert.deepEqual([t.scaleX, t.scaleY, t.offsetX, t.offsetY], [0.32, 0.32, 0, 16]);
 * ```
 */
export function boxTransform(
  imageSize: { readonly width: number; readonly height: number },
  spec: Partial<PreprocessSpec> = {},
): BoxTransform {
  const s = resolveSpec(spec);
  const { width: W, height: H } = imageSize;
  if (!(Number.isInteger(W) && W > 0 && Number.isInteger(H) && H > 0)) {
    throw new RangeError(`Expected a positive integer image size but found ${W}×${H}`);
  }
  const [h, w] = s.size;
  const base = { width: W, height: H, inputWidth: w, inputHeight: h };
  if (s.resize === "stretch") {
    return { ...base, scaleX: w / W, scaleY: h / H, offsetX: 0, offsetY: 0 };
  }
  const r = s.resize === "letterbox" ? Math.min(h / H, w / W) : Math.max(h / H, w / W);
  // The resized content is a whole number of pixels; its scale is exact per axis.
  const newW = Math.max(1, Math.round(W * r));
  const newH = Math.max(1, Math.round(H * r));
  // Ultralytics centers with round(d/2 − 0.1), which is floor(d/2) for whole-pixel d.
  return {
    ...base,
    scaleX: newW / W,
    scaleY: newH / H,
    // `0 -` rather than unary minus: a zero crop margin is 0, not -0.
    offsetX: s.resize === "letterbox" ? Math.floor((w - newW) / 2) : 0 - Math.floor((newW - w) / 2),
    offsetY: s.resize === "letterbox" ? Math.floor((h - newH) / 2) : 0 - Math.floor((newH - h) / 2),
  };
}

/**
 * The tensor dims a spec produces for a batch (`batch` is ignored for CHW, which has no batch axis).
 *
 * @param spec A resolved spec.
 * @param batch Number of images.
 * @returns The dims.
 *
 * @example Usage
 * ```ts
 * import { resolveSpec, tensorDims } from "@clipq/data/preprocess";
 * import assert from "node:assert/strict";
 * assert.deepEqual(tensorDims(resolveSpec({ size: [2, 3], layout: "NHWC" }), 4), [4, 2, 3, 3]);
 * ```
 */
export function tensorDims(spec: PreprocessSpec, batch = 1): number[] {
  const [h, w] = spec.size;
  const c = channelCount(spec);
  if (spec.layout === "CHW") return [c, h, w];
  return spec.layout === "NCHW" ? [batch, c, h, w] : [batch, h, w, c];
}

/**
 * How many channels a spec's tensor has: 1 for `gray`, else 3.
 *
 * @param spec A spec.
 * @returns 1 or 3.
 *
 * @example Usage
 * ```ts
 * import { channelCount } from "@clipq/data/preprocess";
 * import assert from "node:assert/strict";
 * assert.deepEqual([channelCount({ color: "gray" }), channelCount({ color: "BGR" })], [1, 3]);
 * ```
 */
export function channelCount(spec: Pick<PreprocessSpec, "color">): 1 | 3 {
  return spec.color === "gray" ? 1 : 3;
}

/**
 * Writes one preprocessed image into `out` starting at element `offset` (batches are filled in
 * place, without copies).
 *
 * @param image The decoded image.
 * @param spec A resolved spec (see {@linkcode resolveSpec}).
 * @param out Destination; `channels · h · w` elements from `offset` are written (3 channels, or 1
 *   for `gray`).
 * @param offset First element to write.
 * @returns The box transform applied.
 *
 * @example Fill the second slot of a batch of two
 * ```ts
 * import { preprocessInto, resolveSpec } from "@clipq/data/preprocess";
 * import assert from "node:assert/strict";
 * const out = new Float32Array(2 * 3);
 * const image = { width: 1, height: 1, data: new Uint8Array([255, 0, 51]) };
 * preprocessInto(image, resolveSpec({ size: [1, 1] }), out, 3);
 * assert.deepEqual([...out], [0, 0, 0, 1, 0, 0.2].map(Math.fround));
 * ```
 */
export function preprocessInto(
  image: RgbImage,
  spec: PreprocessSpec,
  out: Float32Array,
  offset: number,
): BoxTransform {
  const t = boxTransform(image, spec);
  const { width: W, height: H, data } = image;
  if (data.length !== W * H * 3) {
    throw new RangeError(
      `Expected ${W * H * 3} bytes for a ${W}×${H} RGB image but found ${data.length}`,
    );
  }
  const [h, w] = spec.size;
  const channels = channelCount(spec);
  const mean = spec.mean.length === 1 ? [spec.mean[0]!, spec.mean[0]!, spec.mean[0]!] : spec.mean;
  const std = spec.std.length === 1 ? [spec.std[0]!, spec.std[0]!, spec.std[0]!] : spec.std;
  // The pixels sampled: the RGB bytes (3 a pixel), or for gray each pixel's luma (1 a pixel).
  const stride = channels;
  const pixels = channels === 3 ? data : luma(data);
  // Output channel c reads source channel src[c]; x = v·a[c] + b[c]; padding gives p[c]. Typed
  // arrays and a loop whose value is always a double: with plain arrays and a value that was
  // either the padding (an integer) or a float, every value was boxed in a heap number (1.2 MB of
  // garbage and 0.7–0.8 ms per 160 × 160 image; now none and 0.45–0.5 ms), and a calibration's
  // stream of that garbage grew V8's young generation with the number of images.
  const src = Int32Array.from(spec.color === "BGR" ? [2, 1, 0] : [0, 1, 2]);
  const a = Float64Array.from([0, 1, 2], (c) => spec.scale / std[c]!);
  const b = Float64Array.from([0, 1, 2], (c) => -mean[c]! / std[c]!);
  const pad = spec.padValue ?? 114;
  const p = Float64Array.from([0, 1, 2], (c) => pad * a[c]! + b[c]!);

  // Per output column: source column pair and weight; -1 marks padding.
  const x0s = new Int32Array(w), x1s = new Int32Array(w), fxs = new Float32Array(w);
  for (let x = 0; x < w; x++) {
    const inside = x >= t.offsetX && x < t.offsetX + Math.round(W * t.scaleX);
    if (!inside) {
      x0s[x] = -1;
      continue;
    }
    const sx = Math.min(Math.max((x - t.offsetX + 0.5) / t.scaleX - 0.5, 0), W - 1);
    const x0 = Math.floor(sx);
    x0s[x] = x0;
    x1s[x] = Math.min(x0 + 1, W - 1);
    fxs[x] = sx - x0;
  }
  const contentH = Math.round(H * t.scaleY);
  // Channel c of pixel (y, x) goes to out[offset + c · planeStep + y · rowStep + x · pixelStep].
  const planar = spec.layout !== "NHWC";
  const planeStep = planar ? h * w : 1;
  const rowStep = planar ? w : w * channels, pixelStep = planar ? 1 : channels;
  // One channel at a time: the innermost loop has no per-channel lookups or branches (a channel
  // loop inside it took 0.7 ms).
  for (let c = 0; c < channels; c++) {
    const sc = src[c]!, ac = a[c]!, bc = b[c]!, padded = p[c]!;
    for (let y = 0; y < h; y++) {
      const row = offset + c * planeStep + y * rowStep;
      if (!(y >= t.offsetY && y < t.offsetY + contentH)) {
        for (let x = 0; x < w; x++) out[row + x * pixelStep] = padded;
        continue;
      }
      const sy = Math.min(Math.max((y - t.offsetY + 0.5) / t.scaleY - 0.5, 0), H - 1);
      const y0 = Math.floor(sy), fy = sy - y0;
      const r0 = y0 * W * stride + sc, r1 = Math.min(y0 + 1, H - 1) * W * stride + sc;
      for (let x = 0; x < w; x++) {
        const x0 = x0s[x]!;
        let v = padded;
        if (x0 >= 0) {
          const i0 = x0 * stride, i1 = x1s[x]! * stride, fx = fxs[x]!;
          const top = pixels[r0 + i0]! + (pixels[r0 + i1]! - pixels[r0 + i0]!) * fx;
          const bot = pixels[r1 + i0]! + (pixels[r1 + i1]! - pixels[r1 + i0]!) * fx;
          v = (top + (bot - top) * fy) * ac + bc;
        }
        out[row + x * pixelStep] = v;
      }
    }
  }
  return t;
}

/**
 * Turns an image into a model input tensor (float32; batch of 1, or no batch axis for CHW).
 *
 * @param image The decoded image.
 * @param spec The preprocessing (partial specs are merged with {@linkcode defaults}).
 * @returns The tensor and the box transform it applied.
 * @throws {ConfigError} When the spec is invalid.
 *
 * @example A 2×1 image stretched to 4×1 samples at half-pixel centers (as cv2 does)
 * ```ts
 * import { preprocess } from "@clipq/data/preprocess";
 * import assert from "node:assert/strict";
 * const image = { width: 2, height: 1, data: new Uint8Array([0, 0, 0, 100, 100, 100]) };
 * const { tensor } = preprocess(image, { size: [1, 4], resize: "stretch", scale: 1 });
 * assert.deepEqual([...tensor.data.slice(0, 4)], [0, 25, 75, 100]);
 * ```
 */
export function preprocess(
  image: RgbImage,
  spec: Partial<PreprocessSpec> = {},
): { tensor: Tensor; transform: BoxTransform } {
  const s = resolveSpec(spec);
  const dims = tensorDims(s);
  const data = new Float32Array(channelCount(s) * s.size[0] * s.size[1]);
  const transform = preprocessInto(image, s, data, 0);
  return { tensor: { dtype: "float32", dims, data }, transform };
}

/**
 * Each RGB pixel's BT.601 luma, rounded to a whole value (OpenCV's RGB2GRAY and Pillow's "L"
 * conversion round the same weighted sum; a gray image read as RGB keeps its values exactly).
 */
function luma(rgb: Uint8Array): Uint8Array {
  const out = new Uint8Array(rgb.length / 3);
  for (let i = 0, j = 0; i < out.length; i++, j += 3) {
    out[i] = Math.round(0.299 * rgb[j]! + 0.587 * rgb[j + 1]! + 0.114 * rgb[j + 2]!);
  }
  return out;
}

function clamp(v: number, hi: number): number {
  return v < 0 ? 0 : v > hi ? hi : v;
}

/**
 * Maps a box from model-input coordinates back to the original image, clamped to the image.
 *
 * @param box `[x1, y1, x2, y2]` in model-input pixels.
 * @param transform The transform {@linkcode preprocess} returned.
 * @returns The box in original-image pixels.
 *
 * @example Undo a letterbox
 * ```ts
 * import { boxTransform, toOriginalBox } from "@clipq/data/preprocess";
 * import assert from "node:assert/strict";
 * const t = boxTransform({ width: 200, height: 100 }, { size: [64, 64] });
 * assert.deepEqual(toOriginalBox([0, 16, 32, 48], t), [0, 0, 100, 100]);
 * ```
 */
export function toOriginalBox(box: Box, transform: BoxTransform): [number, number, number, number] {
  const t = transform;
  return [
    clamp((box[0] - t.offsetX) / t.scaleX, t.width),
    clamp((box[1] - t.offsetY) / t.scaleY, t.height),
    clamp((box[2] - t.offsetX) / t.scaleX, t.width),
    clamp((box[3] - t.offsetY) / t.scaleY, t.height),
  ];
}

/**
 * Maps a box from original-image coordinates to model-input coordinates (not clamped: a
 * center-crop may push it outside the input).
 *
 * @param box `[x1, y1, x2, y2]` in original-image pixels.
 * @param transform The transform {@linkcode preprocess} returned.
 * @returns The box in model-input pixels.
 *
 * @example Apply a letterbox
 * ```ts
 * import { boxTransform, toModelBox } from "@clipq/data/preprocess";
 * import assert from "node:assert/strict";
 * const t = boxTransform({ width: 200, height: 100 }, { size: [64, 64] });
 * assert.deepEqual(toModelBox([0, 0, 100, 100], t), [0, 16, 32, 48]);
 * ```
 */
export function toModelBox(box: Box, transform: BoxTransform): [number, number, number, number] {
  const t = transform;
  return [
    box[0] * t.scaleX + t.offsetX,
    box[1] * t.scaleY + t.offsetY,
    box[2] * t.scaleX + t.offsetX,
    box[3] * t.scaleY + t.offsetY,
  ];
}

/**
 * Preprocessed float pixels as the uint8 or int32 pixels a model input takes (TensorFlow Object
 * Detection API exports, MoveNet): rounded, since resizing interpolates, and held to [0, 255].
 *
 * @param t A preprocessed image of raw pixels (scale 1, mean 0, std 1).
 * @param dtype The input's pixel type.
 * @returns The pixels, of t's dims.
 *
 * @example Interpolated values round to whole pixels
 * ```ts
 * import { asPixels } from "@clipq/data/preprocess";
 * import { float32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const p = asPixels(float32([1, 3], [0.4, 127.5, 300]), "int32");
 * assert.deepEqual([p.dtype, [...p.data]], ["int32", [0, 128, 255]]);
 * ```
 */
export function asPixels(t: Tensor, dtype: "uint8" | "int32"): Tensor {
  const from = t.data as Float32Array;
  const data = dtype === "uint8" ? new Uint8Array(from.length) : new Int32Array(from.length);
  for (let i = 0; i < from.length; i++) data[i] = Math.min(255, Math.max(0, Math.round(from[i]!)));
  return tensor(dtype, t.dims, data);
}
