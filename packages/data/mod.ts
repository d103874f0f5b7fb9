/**
 * @clipq/data — images and data sets for calibration and evaluation: JPEG/PNG decoding (mozjpeg
 * in WebAssembly with jpeg-js behind it, pngjs), the shared preprocessing description and its
 * inverse for boxes, image folders in batches, `.npy` tensors, and COCO/VOC annotations.
 *
 * @example Preprocess an image and map a box back
 * ```ts
 * import { preprocess, toOriginalBox } from "@clipq/data";
 * import assert from "node:assert/strict";
 * const image = { width: 4, height: 2, data: new Uint8Array(4 * 2 * 3).fill(255) };
 * const { tensor, transform } = preprocess(image, { size: [8, 8], resize: "letterbox" });
 * assert.deepEqual(tensor.dims, [1, 3, 8, 8]);
 * assert.deepEqual(toOriginalBox([0, 2, 8, 6], transform), [0, 0, 4, 2]);
 * ```
 *
 * @module
 */
export * from "./image.ts";
export * from "./preprocess.ts";
export * from "./images.ts";
export * from "./npy.ts";
export * from "./coco.ts";
export * from "./voc.ts";
export * from "./augment.ts";
