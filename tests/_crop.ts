// The region of a decoded image inside a box: a face as a detector's box would give it, for the
// tests of models that read one face (the emotion classifier, the attention face mesh).
import type { RgbImage } from "@clipq/data";

/** The part of an image inside [x1, y1, x2, y2) (whole pixels, within the image). */
export function crop(image: RgbImage, [x1, y1, x2, y2]: readonly number[]): RgbImage {
  const w = x2! - x1!, h = y2! - y1!, data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    const row = ((y1! + y) * image.width + x1!) * 3;
    data.set(image.data.subarray(row, row + w * 3), y * w * 3);
  }
  return { width: w, height: h, data };
}
