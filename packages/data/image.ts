/**
 * Image decoding: JPEG through mozjpeg (libjpeg-turbo compiled to WebAssembly, npm
 * `@jsquash/jpeg`) with `jpeg-js` behind it, PNG through `pngjs`, all to 8-bit interleaved RGB.
 *
 * - JPEG: a complete file (ending in its end-of-image marker) that libjpeg decodes without a
 *   single warning comes from mozjpeg: the pixels OpenCV and PIL give (they decode with
 *   libjpeg-turbo too: same IDCT, same smooth chroma upsampling), 4–6× faster than jpeg-js (7
 *   darknet photos: 75–110 vs 355–530 ms), which made decoding, not the model, most of what
 *   calibrating a light model from a folder of photos took. Anything else — truncated, damaged
 *   entropy data libjpeg warns about, Adobe CMYK/YCCK, data after the end marker — goes to jpeg-js,
 *   which decides as before: baseline and progressive; grayscale is replicated to RGB; Adobe
 *   CMYK/YCCK is converted; 4-component JPEGs without an Adobe marker and arithmetic coding are
 *   rejected with a {@linkcode DataError}.
 * - PNG: every color type and bit depth pngjs reads (grayscale, palette, 1–16 bit); 16-bit samples
 *   are scaled to 8 bit (`round(v · 255 / 65535)`). Alpha is dropped by default — as `cv2.imread`
 *   does, which is what most detectors were trained with — or composited over a fixed `background`.
 * - Headers are read first and images claiming more than {@linkcode MAX_MEGAPIXELS} megapixels are
 *   refused before anything is allocated.
 * - JPEG EXIF orientation is not applied (as `PIL.Image.open` without `exif_transpose`): pixels
 *   come in stored order.
 * - Truncated or damaged JPEG entropy data is an error (jpeg-js' `tolerantDecoding` is off), not a
 *   partly gray image; so is PNG image data that holds fewer rows than the header states (pngjs
 *   gives the missing rows as black).
 *
 * @module
 */
import { DataError } from "@clipq/onnx/errors";
import { Buffer } from "node:buffer";
import { constants as zlibConstants, inflateRawSync } from "node:zlib";
import jpeg from "jpeg-js";
import mozjpegFactory from "@jsquash/jpeg/codec/dec/mozjpeg_dec.js";
// pngjs ships no type declarations; the small surface used here is typed by `PngSync` below.
import pngjs from "pngjs";

/** An 8-bit RGB image, pixels interleaved row by row (`data[(y·width + x)·3 + c]`). */
export interface RgbImage {
  /** Width in pixels. */
  readonly width: number;
  /** Height in pixels. */
  readonly height: number;
  /** `width · height · 3` bytes, R G B per pixel. */
  readonly data: Uint8Array;
}

/** Options of {@linkcode decodeImage} and {@linkcode readImage}. */
export interface DecodeOptions {
  /**
   * RGB background to composite transparent pixels over; when absent, alpha is dropped
   * (the color stored under a transparent pixel is kept).
   */
  background?: readonly [number, number, number];
  /** Largest image accepted, in megapixels (checked from the header, before decoding). */
  maxMegapixels?: number;
}

/** Images larger than this (in megapixels) are refused unless `maxMegapixels` says otherwise. */
export const MAX_MEGAPIXELS = 100;

/** Default decode options. */
export const decodeDefaults: DecodeOptions = {
  maxMegapixels: MAX_MEGAPIXELS,
} satisfies DecodeOptions;

interface PngSync {
  sync: {
    read(
      buffer: Uint8Array,
      options?: { checkCRC?: boolean; skipRescale?: boolean },
    ): { width: number; height: number; data: Uint8Array };
  };
}
const PNG = (pngjs as unknown as { PNG: PngSync }).PNG;

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** The format of an image file from its first bytes. */
export function sniffFormat(bytes: Uint8Array): "jpeg" | "png" | undefined {
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) {
    return "jpeg";
  }
  if (bytes.length >= 8 && PNG_SIGNATURE.every((b, i) => bytes[i] === b)) return "png";
  return undefined;
}

/** How much of a file {@linkcode checkImageHead} reads: a JPEG's EXIF segment is at most 64 KiB. */
const HEAD_BYTES = 256 * 1024;

/**
 * A path listed as data must be a regular file: reading a character device (/dev/zero) grew memory
 * without end, and opening a FIFO waited for a writer that never came.
 *
 * @param path The path.
 * @param what What the file should be, for the message.
 * @throws {DataError} When the path is a folder or not a regular file (a missing one is left to the
 *   read that follows, which names it).
 */
export async function checkRegularFile(path: string, what: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch {
    return; // a missing or unreadable file: the read says so
  }
  if (!info.isFile) {
    throw new DataError(
      `${path}: expected ${what}, found a ${
        info.isDirectory ? "folder" : "non-file (a device or FIFO)"
      }`,
    );
  }
}

/**
 * Checks that a file starts as a JPEG or PNG does and that its header states a size decoding
 * accepts (positive, at most {@linkcode MAX_MEGAPIXELS}), reading only its first 256 KiB: what a
 * dry run can afford over a whole folder. The errors are the ones decoding would give.
 *
 * @param path The image file.
 * @throws {DataError} When the file cannot be read, is neither format, or states a size decoding
 * refuses, naming it.
 *
 * @example A text file named .png
 * ```ts
 * import { checkImageHead } from "@clipq/data/image";
 * import assert from "node:assert/strict";
 * const f = Deno.makeTempFileSync({ suffix: ".png" });
 * Deno.writeTextFileSync(f, "not a picture");
 * await assert.rejects(checkImageHead(f), /\.png: expected a JPEG or PNG image, found 13 bytes of text/);
 * Deno.removeSync(f);
 * ```
 */
export async function checkImageHead(path: string): Promise<void> {
  let head: Uint8Array;
  let size: number;
  await checkRegularFile(path, "an image file");
  try {
    using file = await Deno.open(path);
    size = (await file.stat()).size;
    const buf = new Uint8Array(Math.min(HEAD_BYTES, Math.max(size, 1)));
    let n = 0;
    while (n < buf.length) {
      const read = await file.read(buf.subarray(n));
      if (read === null) break;
      n += read;
    }
    head = buf.subarray(0, n);
  } catch (e) {
    throw new DataError(`${path}: expected a readable image file, found ${(e as Error).message}`, {
      cause: e,
    });
  }
  const format = sniffFormat(head);
  if (!format) {
    throw new DataError(`${path}: expected a JPEG or PNG image, found ${describe(head, size)}`);
  }
  // A JPEG's size marker past what was read (a huge EXIF block) is left to decoding.
  const dims = format === "png" ? pngSize(head) : jpegSize(head);
  if (dims || head.length === size) {
    checkSize(dims, path, format === "png" ? "PNG" : "JPEG", MAX_MEGAPIXELS);
  }
}

function describe(bytes: Uint8Array, size = bytes.length): string {
  if (size === 0) return "an empty file";
  const head = bytes.subarray(0, Math.min(bytes.length, 512));
  const printable = head.every((b) => b === 9 || b === 10 || b === 13 || (b >= 32 && b < 127));
  const hex = [...bytes.subarray(0, 4)].map((b) => b.toString(16).padStart(2, "0")).join(" ");
  return `${size} bytes of ${printable ? "text" : "binary data"} starting ${hex}`;
}

/** Width and height from a JPEG's SOF marker, or undefined when there is none before the data ends. */
function jpegSize(bytes: Uint8Array): { width: number; height: number } | undefined {
  let i = 2;
  while (i + 3 < bytes.length) {
    if (bytes[i] !== 0xff) return undefined;
    const marker = bytes[i + 1]!;
    if (marker === 0xff) {
      i++;
      continue;
    }
    const len = (bytes[i + 2]! << 8) | bytes[i + 3]!;
    // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
      if (i + 8 >= bytes.length) return undefined;
      return {
        height: (bytes[i + 5]! << 8) | bytes[i + 6]!,
        width: (bytes[i + 7]! << 8) | bytes[i + 8]!,
      };
    }
    if (marker === 0xda) return undefined;
    i += 2 + len;
  }
  return undefined;
}

function pngSize(bytes: Uint8Array): { width: number; height: number } | undefined {
  if (bytes.length < 24) return undefined;
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return { width: v.getUint32(16), height: v.getUint32(20) };
}

/** Samples per pixel of each PNG color type: gray, RGB, palette index, gray + alpha, RGBA. */
const PNG_CHANNELS: Record<number, number> = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };

/** Adam7's passes: first column and row, column and row steps. */
const ADAM7 = [
  [0, 0, 8, 8],
  [4, 0, 8, 8],
  [0, 4, 4, 8],
  [2, 0, 4, 4],
  [0, 2, 2, 4],
  [1, 0, 2, 2],
  [0, 1, 1, 2],
] as const;

/**
 * Bytes a PNG's image data inflates to, as its header states them: each row of each (Adam7) pass
 * is a filter byte and its packed samples. Undefined for a header outside the standard.
 */
function pngDataBytes(
  ihdr: { width: number; height: number; bitDepth: number; colorType: number; interlace: number },
): number | undefined {
  const channels = PNG_CHANNELS[ihdr.colorType];
  if (channels === undefined || ihdr.interlace > 1) return undefined;
  const rowBytes = (w: number) => Math.ceil(w * channels * ihdr.bitDepth / 8);
  if (ihdr.interlace === 0) return ihdr.height * (1 + rowBytes(ihdr.width));
  let total = 0;
  for (const [x0, y0, dx, dy] of ADAM7) {
    const w = Math.max(0, Math.ceil((ihdr.width - x0) / dx));
    const h = Math.max(0, Math.ceil((ihdr.height - y0) / dy));
    if (w > 0 && h > 0) total += h * (1 + rowBytes(w));
  }
  return total;
}

/**
 * A gray or RGB PNG without its `tRNS` chunk (the one color it keys out as transparent): pngjs
 * turns keyed pixels into transparent black (all four bytes 0), so with alpha dropped a white
 * background keyed out decoded black, where OpenCV and Pillow keep the stored color, as this
 * module documents. Composited over a `background`, the key stays and works. Any other file (a
 * palette's tRNS holds per-entry alpha) is returned as it is.
 */
function withoutColorKey(bytes: Uint8Array): Uint8Array {
  let colorType = -1;
  for (const { type, at, end, data } of pngChunks(bytes)) {
    if (type === "IHDR" && data.length >= 13) colorType = data[9]!;
    if (type === "tRNS" && (colorType === 0 || colorType === 2)) {
      const out = new Uint8Array(bytes.length - (end - at));
      out.set(bytes.subarray(0, at));
      out.set(bytes.subarray(end), at);
      return out;
    }
    if (type === "IDAT" || type === "IEND") break; // tRNS comes before the image data
  }
  return bytes;
}

/**
 * A PNG's chunks in file order, after the signature: type, where the chunk starts and ends (CRC
 * included), and its data. A chunk whose stated length runs past the file ends the walk (pngjs
 * reports such a file).
 */
function* pngChunks(
  bytes: Uint8Array,
): Generator<{ type: string; at: number; end: number; data: Uint8Array }> {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let at = 8; at + 12 <= bytes.length;) {
    const end = at + 12 + v.getUint32(at);
    if (end > bytes.length) return;
    const type = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
    yield { type, at, end, data: bytes.subarray(at + 8, end - 4) };
    at = end;
  }
}

/**
 * Refuses a PNG whose image data inflates to fewer bytes than its header states: pngjs decodes
 * such a file without an error, the missing rows as zeros (black, transparent), which would
 * calibrate on an image that is not the file's. Run after pngjs accepted the file, so its chunks
 * and the zlib stream's header are known sound.
 */
function checkPngData(bytes: Uint8Array, name: string): void {
  const idat: Uint8Array[] = [];
  let ihdr: Parameters<typeof pngDataBytes>[0] | undefined;
  for (const { type, data } of pngChunks(bytes)) {
    if (type === "IHDR" && data.length >= 13) {
      const v = new DataView(data.buffer, data.byteOffset, data.byteLength);
      ihdr = {
        width: v.getUint32(0),
        height: v.getUint32(4),
        bitDepth: data[8]!,
        colorType: data[9]!,
        interlace: data[12]!,
      };
    } else if (type === "IDAT") idat.push(data);
    else if (type === "IEND") break;
  }
  const expected = ihdr ? pngDataBytes(ihdr) : undefined;
  if (expected === undefined) return;
  let found: number;
  try {
    // As pngjs inflates: a stream cut short yields what it holds, which is what is counted, and
    // the Adler-32 trailer goes unchecked (pngjs stops at the image's size and never reads it), so
    // the deflate data after the zlib stream's 2-byte header is inflated raw.
    found = inflateRawSync(Buffer.concat(idat).subarray(2), {
      finishFlush: zlibConstants.Z_SYNC_FLUSH,
    }).length;
  } catch (e) {
    throw new DataError(
      `${name}: expected image data that inflates, found a broken zlib stream: ${
        (e as Error).message
      }`,
      { cause: e },
    );
  }
  if (found < expected) {
    throw new DataError(
      `${name}: expected ${expected} bytes of image data for its ${ihdr!.width}×${
        ihdr!.height
      } header, found ${found}: the PNG holds fewer rows than it states`,
    );
  }
}

function checkSize(
  size: { width: number; height: number } | undefined,
  name: string,
  what: string,
  maxMegapixels: number,
): void {
  if (!size) {
    throw new DataError(`${name}: expected a ${what} header with the image size, found none`);
  }
  if (size.width <= 0 || size.height <= 0) {
    throw new DataError(
      `${name}: expected a positive image size, found ${size.width}×${size.height}`,
    );
  }
  const mp = size.width * size.height / 1e6;
  if (mp > maxMegapixels) {
    throw new DataError(
      `${name}: expected at most ${maxMegapixels} megapixels, found ${size.width}×${size.height} (${
        mp.toFixed(1)
      } MP)`,
    );
  }
}

/** libjpeg in WebAssembly, with the warnings and errors it printed during the last decode. */
interface Mozjpeg {
  decode(data: ArrayBuffer, preserveOrientation: boolean): {
    width: number;
    height: number;
    data: Uint8ClampedArray;
  } | null;
}
let mozjpeg: Promise<{ decoder: Mozjpeg; messages: string[] } | undefined> | undefined;

/** The mozjpeg decoder, instantiated once (~60–110 ms); undefined when it cannot be loaded. */
function mozjpegDecoder(): Promise<{ decoder: Mozjpeg; messages: string[] } | undefined> {
  mozjpeg ??= (async () => {
    const messages: string[] = [];
    try {
      const options = {
        noInitialRun: true,
        // libjpeg reports through these: collected, so that a warning sends the file to jpeg-js.
        print: (m: string) => messages.push(m),
        printErr: (m: string) => messages.push(m),
      };
      const decoder = await mozjpegFactory(options as Parameters<typeof mozjpegFactory>[0]);
      return { decoder: decoder as unknown as Mozjpeg, messages };
    } catch {
      return undefined;
    }
  })();
  return mozjpeg;
}

/** Whether the JPEG ends in its end-of-image marker (zero padding after it allowed). */
function complete(bytes: Uint8Array): boolean {
  let end = bytes.length;
  while (end > 4 && bytes[end - 1] === 0) end--;
  return bytes[end - 2] === 0xff && bytes[end - 1] === 0xd9;
}

/** mozjpeg's RGB pixels, or undefined when libjpeg warned, failed or was not available. */
async function decodeMozjpeg(bytes: Uint8Array): Promise<RgbImage | undefined> {
  if (!complete(bytes)) return undefined;
  const moz = await mozjpegDecoder();
  if (!moz) return undefined;
  moz.messages.length = 0;
  let out: ReturnType<Mozjpeg["decode"]>;
  try {
    // Stored pixel order, as documented above: no EXIF rotation.
    out = moz.decoder.decode(bytes.slice().buffer, false);
  } catch {
    return undefined;
  }
  const n = out ? out.width * out.height : 0;
  if (!out || moz.messages.length > 0 || n === 0 || out.data.length !== n * 4) return undefined;
  return { width: out.width, height: out.height, data: rgbOf(out.data) };
}

/** RGBA pixels as RGB: alpha dropped, or composited over `background` when one is given. */
function rgbOf(
  src: Uint8Array | Uint8ClampedArray,
  background?: readonly [number, number, number],
): Uint8Array {
  const n = src.length / 4;
  const rgb = new Uint8Array(n * 3);
  if (background) {
    for (let i = 0; i < n; i++) {
      const a = src[i * 4 + 3]! / 255;
      for (let c = 0; c < 3; c++) {
        rgb[i * 3 + c] = Math.round(src[i * 4 + c]! * a + background[c]! * (1 - a));
      }
    }
  } else {
    for (let i = 0; i < n; i++) {
      rgb[i * 3] = src[i * 4]!;
      rgb[i * 3 + 1] = src[i * 4 + 1]!;
      rgb[i * 3 + 2] = src[i * 4 + 2]!;
    }
  }
  return rgb;
}

/**
 * Decodes a JPEG or PNG file's bytes to 8-bit RGB.
 *
 * @param bytes The file contents.
 * @param name The file name, used in error messages.
 * @param options Alpha handling and the size limit.
 * @returns The image.
 * @throws {DataError} When the bytes are not a JPEG/PNG clipq can decode; the message names the file.
 *
 * @example Decode a PNG
 * ```ts
 * import { decodeImage } from "@clipq/data/image";
 * import pngjs from "pngjs";
 * import assert from "node:assert/strict";
 * const png = new pngjs.PNG({ width: 1, height: 1 });
 * png.data.set([10, 20, 30, 255]);
 * const img = await decodeImage(pngjs.PNG.sync.write(png), "dot.png");
 * assert.deepEqual([...img.data], [10, 20, 30]);
 * ```
 */
export async function decodeImage(
  bytes: Uint8Array,
  name: string,
  options: DecodeOptions = {},
): Promise<RgbImage> {
  const opts = { ...decodeDefaults, ...options };
  const maxMp = opts.maxMegapixels ?? MAX_MEGAPIXELS;
  if (!(maxMp > 0)) {
    throw new RangeError(`Expected maxMegapixels to be positive but found ${maxMp}`);
  }
  const bg = opts.background;
  if (bg && (bg.length !== 3 || bg.some((v) => !(v >= 0 && v <= 255)))) {
    throw new RangeError(
      `Expected background to be 3 values in [0, 255] but found [${bg.join(", ")}]`,
    );
  }
  const format = sniffFormat(bytes);
  if (format === "jpeg") {
    checkSize(jpegSize(bytes), name, "JPEG", maxMp);
    const fast = await decodeMozjpeg(bytes);
    if (fast) return fast;
    let out: { width: number; height: number; data: Uint8Array };
    try {
      out = jpeg.decode(bytes, {
        useTArray: true,
        formatAsRGBA: false,
        // Truncated or damaged entropy data would otherwise decode silently to gray blocks.
        tolerantDecoding: false,
        maxResolutionInMP: maxMp,
        maxMemoryUsageInMB: Math.max(512, Math.ceil(maxMp * 1e6 * 8 / 2 ** 20)),
      });
    } catch (e) {
      throw new DataError(
        `${name}: expected a decodable JPEG, found one jpeg-js rejects: ${(e as Error).message}`,
        { cause: e },
      );
    }
    if (out.data.length !== out.width * out.height * 3) {
      throw new DataError(
        `${name}: expected ${
          out.width * out.height * 3
        } RGB bytes from the JPEG decoder, found ${out.data.length}`,
      );
    }
    return { width: out.width, height: out.height, data: out.data };
  }
  if (format === "png") {
    checkSize(pngSize(bytes), name, "PNG", maxMp);
    let out: { width: number; height: number; data: Uint8Array };
    try {
      // pngjs expands palette and grayscale to RGBA and scales 16-bit samples to 8 bit.
      const png = bg ? bytes : withoutColorKey(bytes);
      out = PNG.sync.read(Buffer.from(png.buffer, png.byteOffset, png.byteLength));
    } catch (e) {
      throw new DataError(
        `${name}: expected a decodable PNG, found one pngjs rejects: ${(e as Error).message}`,
        { cause: e },
      );
    }
    checkPngData(bytes, name);
    const n = out.width * out.height;
    if (out.data.length !== n * 4) {
      throw new DataError(
        `${name}: expected ${n * 4} RGBA bytes from the PNG decoder, found ${out.data.length}`,
      );
    }
    return { width: out.width, height: out.height, data: rgbOf(out.data, bg) };
  }
  throw new DataError(`${name}: expected a JPEG or PNG image, found ${describe(bytes)}`);
}

/**
 * Reads and decodes a JPEG or PNG file.
 *
 * @param path The file.
 * @param options Alpha handling and the size limit.
 * @returns The image.
 * @throws {DataError} When the file cannot be read or decoded; the message names the file.
 *
 * @example Read a PNG written to a temporary file
 * ```ts
 * import { readImage } from "@clipq/data/image";
 * import pngjs from "pngjs";
 * import assert from "node:assert/strict";
 * const png = new pngjs.PNG({ width: 2, height: 1 });
 * png.data.set([1, 2, 3, 255, 4, 5, 6, 255]);
 * const path = Deno.makeTempFileSync({ suffix: ".png" });
 * Deno.writeFileSync(path, pngjs.PNG.sync.write(png));
 * const img = await readImage(path);
 * assert.equal(img.width, 2);
 * Deno.removeSync(path);
 * ```
 */
export async function readImage(path: string, options: DecodeOptions = {}): Promise<RgbImage> {
  let bytes: Uint8Array;
  await checkRegularFile(path, "an image file");
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    throw new DataError(`${path}: expected a readable image file, found: ${(e as Error).message}`, {
      cause: e,
    });
  }
  return decodeImage(bytes, path, options);
}
