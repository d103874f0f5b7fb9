/**
 * Image folders as data sets: listing and batched, preprocessed reading with one batch in memory
 * at a time.
 *
 * @module
 */
import { dirname, join } from "node:path";
import { ConfigError, DataError } from "@clipq/onnx/errors";
import type { Tensor } from "@clipq/onnx/tensor";
import { type DecodeOptions, readImage, type RgbImage } from "./image.ts";
import { randomCropFlip } from "./augment.ts";
import {
  type BoxTransform,
  channelCount,
  preprocessInto,
  type PreprocessSpec,
  resolveSpec,
  tensorDims,
} from "./preprocess.ts";

/** Options of {@linkcode listImages}. */
export interface ListOptions {
  /** Keep only the first `limit` files (after sorting). */
  limit?: number;
  /** File extensions to keep, lower case with the dot. */
  extensions?: readonly string[];
}

/** Default listing options. */
export const listDefaults: ListOptions = {
  extensions: [".jpg", ".jpeg", ".png"],
} satisfies ListOptions;

/**
 * Whether a file name ends in one of the extensions (with the dot), matched case-insensitively as
 * {@linkcode listImages} matches them: by default, whether it names a JPEG or PNG image.
 *
 * @param path The file name or path.
 * @param extensions The extensions (default: {@linkcode listDefaults}' image extensions).
 * @returns True when it ends in one of them.
 *
 * @example Usage
 * ```ts
 * import { hasExtension } from "@clipq/data/images";
 * import assert from "node:assert/strict";
 * assert.deepEqual(["a.JPG", "b.jpeg", "c.txt", "photos"].map((p) => hasExtension(p)), [true, true, false, false]);
 * assert.equal(hasExtension("shard1.BIN", [".bin"]), true);
 * ```
 */
export function hasExtension(
  path: string,
  extensions: readonly string[] = listDefaults.extensions!,
): boolean {
  const lower = path.toLowerCase();
  return extensions.some((x) => lower.endsWith(x.toLowerCase()));
}

/**
 * Lists the image files of a folder (not recursive), sorted by name.
 *
 * @param dir The folder.
 * @param options Limit and extensions (matched case-insensitively).
 * @returns Absolute or relative paths (joined onto `dir`), sorted.
 * @throws {DataError} When the folder is missing, unreadable or has no images; names the folder.
 *
 * @example Usage
 * ```ts
 * import { listImages } from "@clipq/data/images";
 * import assert from "node:assert/strict";
 * const dir = Deno.makeTempDirSync();
 * Deno.writeFileSync(`${dir}/b.PNG`, new Uint8Array(1));
 * Deno.writeFileSync(`${dir}/a.jpg`, new Uint8Array(1));
 * Deno.writeFileSync(`${dir}/notes.txt`, new Uint8Array(1));
 * assert.deepEqual((await listImages(dir)).map((p) => p.slice(dir.length + 1)), ["a.jpg", "b.PNG"]);
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export async function listImages(dir: string, options: ListOptions = {}): Promise<string[]> {
  const opts = { ...listDefaults, ...options };
  if (opts.limit !== undefined && !(Number.isInteger(opts.limit) && opts.limit > 0)) {
    throw new ConfigError("limit", `expected a positive integer, found ${opts.limit}`);
  }
  const exts = (opts.extensions ?? []).map((e) => e.toLowerCase());
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if (!e.isFile && !e.isSymlink) continue;
      if (hasExtension(e.name, exts)) names.push(e.name);
    }
  } catch (e) {
    throw new DataError(
      `${dir}: expected a readable folder of images, found: ${(e as Error).message}`,
      {
        cause: e,
      },
    );
  }
  if (names.length === 0) {
    throw new DataError(
      `${dir}: expected image files (${exts.join(", ")}), found none`,
    );
  }
  names.sort((a, b) => a < b ? -1 : a > b ? 1 : 0);
  const kept = opts.limit ? names.slice(0, opts.limit) : names;
  return kept.map((n) => join(dir, n));
}

/** One batch of preprocessed images. */
export interface ImageBatch {
  /** float32 `[n, …]` (or `[3, h, w]` for CHW). */
  readonly tensor: Tensor;
  /** The files in the batch, in tensor order. */
  readonly files: string[];
  /** The box transform of each file. */
  readonly transforms: BoxTransform[];
  /**
   * Unreadable files skipped while assembling this batch (`onBadImage: "skip"`). Files skipped
   * after the last batch's final image are reported only through `onWarning`.
   */
  readonly skipped: number;
}

/** Options of {@linkcode imageBatches}. */
export interface BatchOptions {
  /** Images per batch; the last batch may be smaller. CHW layout allows only 1. */
  batchSize?: number;
  /** `fail` throws the DataError of an unreadable image; `skip` warns and goes on. */
  onBadImage?: "skip" | "fail";
  /** Receives a message for each skipped image. */
  onWarning?: (message: string) => void;
  /** Decode options (alpha background, size limit). */
  decode?: DecodeOptions;
}

/** Default batching options. */
export const batchDefaults: BatchOptions = {
  batchSize: 1,
  onBadImage: "fail",
} satisfies BatchOptions;

/**
 * Reads, decodes and preprocesses images batch by batch; only the current batch is in memory.
 *
 * @param files Image paths (e.g. from {@linkcode listImages}).
 * @param spec The preprocessing (partial specs are merged with the preprocess defaults).
 * @param options Batch size and bad-image policy.
 * @returns An async iterable of batches.
 * @throws {DataError} On an unreadable image with `onBadImage: "fail"`, or when every image was skipped.
 * @throws {ConfigError} On invalid options or spec.
 *
 * @example Two images in one batch
 * ```ts
 * import { imageBatches } from "@clipq/data/images";
 * import pngjs from "pngjs";
 * import assert from "node:assert/strict";
 * const path = Deno.makeTempFileSync({ suffix: ".png" });
 * Deno.writeFileSync(path, pngjs.PNG.sync.write(new pngjs.PNG({ width: 4, height: 4 })));
 * for await (const b of imageBatches([path, path], { size: [8, 8] }, { batchSize: 2 })) {
 *   assert.deepEqual(b.tensor.dims, [2, 3, 8, 8]);
 * }
 * Deno.removeSync(path);
 * ```
 */
export function imageBatches(
  files: readonly string[],
  spec: Partial<PreprocessSpec> = {},
  options: BatchOptions = {},
): AsyncGenerator<ImageBatch> {
  const decode = options.decode ?? {};
  return assemble(files.map((f) => ({ name: f, load: () => readImage(f, decode) })), spec, options);
}

/** An image with a name (a file path, or a made-up one for generated images). */
export interface NamedImage {
  readonly name: string;
  readonly image: RgbImage;
}

/**
 * Preprocesses images that are already decoded (e.g. from {@linkcode augmentedImages}) batch by
 * batch; the `files` of each batch are the images' names.
 *
 * @param images The images, pulled one at a time.
 * @param spec The preprocessing (partial specs are merged with the preprocess defaults).
 * @param options Batch size.
 * @returns An async iterable of batches.
 * @throws {ConfigError} On invalid options or spec.
 *
 * @example Usage
 * ```ts
 * import { preprocessBatches } from "@clipq/data/images";
 * import assert from "node:assert/strict";
 * const image = { width: 2, height: 2, data: new Uint8Array(12) };
 * const names = [];
 * for await (const b of preprocessBatches([{ name: "a", image }, { name: "b", image }], { size: [4, 4] }, { batchSize: 2 })) {
 *   names.push(...b.files);
 * }
 * assert.deepEqual(names, ["a", "b"]);
 * ```
 */
export function preprocessBatches(
  images: Iterable<NamedImage> | AsyncIterable<NamedImage>,
  spec: Partial<PreprocessSpec> = {},
  options: Pick<BatchOptions, "batchSize"> = {},
): AsyncGenerator<ImageBatch> {
  async function* source() {
    for await (const { name, image } of images) yield { name, load: () => Promise.resolve(image) };
  }
  return assemble(source(), spec, options);
}

/** Options of {@linkcode augmentedImages}. */
export interface AugmentedOptions {
  /** How many images to make. */
  count: number;
  /** Base seed; image `i` uses seed `seed + i`. */
  seed?: number;
  /** Smallest crop side as a fraction of the source's (see `randomCropFlip`). */
  minScale?: number;
  /** Decode options of the source files. */
  decode?: DecodeOptions;
}

/**
 * Makes `count` seeded random crops and flips of a few photos, cycling through them: a large
 * calibration or benchmark set from a handful of real images. Each source is decoded once, and
 * only the current output image is kept, so memory does not grow with `count`.
 *
 * @param files Source image paths.
 * @param options Count, seed and crop scale.
 * @returns Named images (`<file>#<i>`), one at a time.
 * @throws {DataError} When a source cannot be read.
 *
 * @example Usage
 * ```ts
 * import { augmentedImages } from "@clipq/data/images";
 * import pngjs from "pngjs";
 * import assert from "node:assert/strict";
 * const path = Deno.makeTempFileSync({ suffix: ".png" });
 * Deno.writeFileSync(path, pngjs.PNG.sync.write(new pngjs.PNG({ width: 8, height: 8 })));
 * const names = [];
 * for await (const x of augmentedImages([path], { count: 3 })) names.push(x.name);
 * assert.deepEqual(names, [`${path}#0`, `${path}#1`, `${path}#2`]);
 * Deno.removeSync(path);
 * ```
 */
export async function* augmentedImages(
  files: readonly string[],
  options: AugmentedOptions,
): AsyncGenerator<NamedImage> {
  const { count, seed = 0, minScale = 0.5 } = options;
  if (!(Number.isInteger(count) && count >= 0)) {
    throw new ConfigError("count", `expected a non-negative integer, found ${count}`);
  }
  if (files.length === 0 && count > 0) {
    throw new ConfigError("files", "expected at least one source image, found none");
  }
  const sources = new Map<string, RgbImage>();
  for (let i = 0; i < count; i++) {
    const file = files[i % files.length]!;
    let src = sources.get(file);
    if (!src) sources.set(file, src = await readImage(file, options.decode ?? {}));
    yield { name: `${file}#${i}`, image: randomCropFlip(src, { seed: seed + i, minScale }) };
  }
}

async function* assemble(
  source:
    | Iterable<{ name: string; load: () => Promise<RgbImage> }>
    | AsyncIterable<{
      name: string;
      load: () => Promise<RgbImage>;
    }>,
  spec: Partial<PreprocessSpec>,
  options: BatchOptions,
): AsyncGenerator<ImageBatch> {
  const opts = { ...batchDefaults, ...options };
  const s = resolveSpec(spec);
  const batchSize = opts.batchSize ?? 1;
  if (!(Number.isInteger(batchSize) && batchSize > 0)) {
    throw new ConfigError("batchSize", `expected a positive integer, found ${batchSize}`);
  }
  if (s.layout === "CHW" && batchSize !== 1) {
    throw new ConfigError(
      "batchSize",
      `expected 1 for layout CHW (it has no batch axis), found ${batchSize}`,
    );
  }
  if (opts.onBadImage !== "skip" && opts.onBadImage !== "fail") {
    throw new ConfigError("onBadImage", `expected "skip" or "fail", found ${opts.onBadImage}`);
  }
  const per = channelCount(s) * s.size[0] * s.size[1];
  let data = new Float32Array(per * batchSize);
  let batchFiles: string[] = [];
  let transforms: BoxTransform[] = [];
  let skipped = 0;
  let yielded = 0;
  let total = 0;
  const flush = (): ImageBatch => {
    const n = batchFiles.length;
    const tensor: Tensor = {
      dtype: "float32",
      dims: tensorDims(s, n),
      data: n === batchSize ? data : data.slice(0, n * per),
    };
    const batch = { tensor, files: batchFiles, transforms, skipped };
    // A fresh buffer per batch: consumers may keep the previous tensor while we fill the next.
    data = new Float32Array(per * batchSize);
    batchFiles = [];
    transforms = [];
    skipped = 0;
    yielded++;
    return batch;
  };
  // Named in the error when nothing was readable (names are file paths for files on disk).
  const folders = new Set<string>();
  for await (const { name, load } of source) {
    total++;
    if (folders.size < 4) folders.add(dirname(name));
    let transform: BoxTransform;
    try {
      transform = preprocessInto(await load(), s, data, batchFiles.length * per);
    } catch (e) {
      if (opts.onBadImage === "skip" && e instanceof DataError) {
        skipped++;
        opts.onWarning?.(`skipped unreadable image: ${e.message}`);
        continue;
      }
      throw e;
    }
    batchFiles.push(name);
    transforms.push(transform);
    if (batchFiles.length === batchSize) yield flush();
  }
  if (batchFiles.length > 0) yield flush();
  else if (yielded === 0) {
    throw new DataError(
      `expected at least one readable image among ${total} files, found none${
        skipped ? ` (${skipped} skipped)` : ""
      }${folders.size ? ` in ${[...folders].join(", ")}` : ""}`,
    );
  }
}
