/**
 * Seeded augmentation, for growing a handful of real photos into a larger calibration or
 * benchmark set (e.g. 256 images from 7).
 *
 * @module
 */
import type { RgbImage } from "./image.ts";
import { mulberry32 } from "@clipq/onnx/random";

/** Options of {@linkcode randomCropFlip}. */
export interface CropFlipOptions {
  /** Seed of the pseudo-random generator; the same seed gives the same crop and flip. */
  seed?: number;
  /** Smallest crop side as a fraction of the image side, in (0, 1]. */
  minScale?: number;
}

/** Default augmentation options. */
export const augmentDefaults: CropFlipOptions = {
  seed: 0,
  minScale: 0.5,
} satisfies CropFlipOptions;

/**
 * Crops a random rectangle (each side a random fraction in [minScale, 1] of the image's, at a
 * random position) and mirrors it horizontally with probability ½, at native resolution.
 *
 * @param image The source image (not modified).
 * @param options Seed and smallest crop scale.
 * @returns A new image.
 *
 * @example Same seed, same result
 * ```ts
 * import { randomCropFlip } from "@clipq/data/augment";
 * import assert from "node:assert/strict";
 * const image = { width: 8, height: 8, data: new Uint8Array(8 * 8 * 3).map((_, i) => i % 251) };
 * const a = randomCropFlip(image, { seed: 3 });
 * assert.deepEqual(a, randomCropFlip(image, { seed: 3 }));
 * assert.ok(a.width >= 4 && a.width <= 8);
 * ```
 */
export function randomCropFlip(image: RgbImage, options: CropFlipOptions = {}): RgbImage {
  const opts = { ...augmentDefaults, ...options };
  const minScale = opts.minScale ?? 0.5;
  if (!(minScale > 0 && minScale <= 1)) {
    throw new RangeError(`Expected minScale in (0, 1] but found ${minScale}`);
  }
  const next = mulberry32(opts.seed ?? 0);
  const { width: W, height: H } = image;
  const w = Math.max(1, Math.round(W * (minScale + (1 - minScale) * next())));
  const h = Math.max(1, Math.round(H * (minScale + (1 - minScale) * next())));
  const x0 = Math.floor(next() * (W - w + 1));
  const y0 = Math.floor(next() * (H - h + 1));
  const flip = next() < 0.5;
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    const srcRow = ((y0 + y) * W + x0) * 3;
    if (!flip) {
      data.set(image.data.subarray(srcRow, srcRow + w * 3), y * w * 3);
      continue;
    }
    for (let x = 0; x < w; x++) {
      const s = srcRow + (w - 1 - x) * 3;
      const d = (y * w + x) * 3;
      data[d] = image.data[s]!;
      data[d + 1] = image.data[s + 1]!;
      data[d + 2] = image.data[s + 2]!;
    }
  }
  return { width: w, height: h, data };
}
