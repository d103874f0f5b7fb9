import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { crc32, deflateSync } from "node:zlib";
import pngjs from "pngjs";
import jpeg from "jpeg-js";
import { DataError } from "@clipq/onnx/errors";
import { darknetPhotos, skimagePhoto } from "../../tools/assets.ts";
import { checkImageHead, decodeImage, readImage } from "./image.ts";

// deno-lint-ignore no-explicit-any
function writePng(width: number, height: number, data: Uint8Array, options: any): Uint8Array {
  const png = new pngjs.PNG({ width, height, ...options });
  png.data = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return pngjs.PNG.sync.write(png, options);
}

Deno.test("readImage() decodes the real darknet photos to RGB of the right size", async () => {
  const sizes: Record<string, [number, number]> = {
    dog: [768, 576],
    eagle: [773, 512],
    giraffe: [500, 500],
    horses: [773, 512],
    person: [640, 424],
    scream: [352, 448],
  };
  for (const file of await darknetPhotos()) {
    const name = file.split("/").pop()!.replace(".jpg", "");
    if (!(name in sizes)) continue; // kite.jpg is 1.4 MB; decoding it here adds nothing.
    const img = await readImage(file);
    assert.deepEqual([img.width, img.height], sizes[name], name);
    assert.equal(img.data.length, img.width * img.height * 3);
    // A photo has color: some pixel's channels differ.
    let colored = false;
    for (let i = 0; i < img.data.length && !colored; i += 3) {
      colored = img.data[i] !== img.data[i + 1] || img.data[i + 1] !== img.data[i + 2];
    }
    assert.ok(colored, `${name} decoded without color`);
  }
});

Deno.test("readImage() reads skimage's grayscale page.png as equal RGB channels", async () => {
  const img = await readImage(await skimagePhoto("page.png"));
  assert.deepEqual([img.width, img.height], [384, 191]);
  for (let i = 0; i < img.data.length; i += 3) {
    assert.equal(img.data[i], img.data[i + 1]);
    assert.equal(img.data[i], img.data[i + 2]);
  }
});

Deno.test("readImage() reads skimage's astronaut.png and a palette PNG", async () => {
  const astro = await readImage(await skimagePhoto("astronaut.png"));
  assert.deepEqual([astro.width, astro.height], [512, 512]);
  assert.deepEqual([...astro.data.slice(0, 3)], [154, 147, 151]);
  const pal = await readImage(await skimagePhoto("foo3x5x4indexed.png"));
  assert.deepEqual([pal.width, pal.height], [5, 3]);
  assert.deepEqual([...pal.data.slice(0, 3)], [127, 0, 255]);
});

Deno.test("readImage() rejects skimage's real truncated.jpg, naming it", async () => {
  const path = await skimagePhoto("truncated.jpg");
  await assert.rejects(
    readImage(path),
    (e) => e instanceof DataError && e.message.startsWith(`${path}: expected a decodable JPEG`),
  );
});

Deno.test("readImage() expands skimage's gray palette PNG to equal channels", async () => {
  const img = await readImage(await skimagePhoto("palette_gray.png"));
  assert.deepEqual([img.width, img.height], [10, 10]);
  assert.deepEqual([...img.data.slice(0, 6)], [250, 250, 250, 225, 225, 225]);
});

Deno.test("decodeImage() expands an 8-bit grayscale PNG to RGB", async () => {
  const bytes = writePng(2, 1, new Uint8Array([7, 200]), {
    colorType: 0,
    inputColorType: 0,
    bitDepth: 8,
  });
  assert.equal(bytes[25], 0, "the test PNG must really be grayscale");
  assert.deepEqual([...(await decodeImage(bytes, "g.png")).data], [7, 7, 7, 200, 200, 200]);
});

Deno.test("decodeImage() scales a 16-bit PNG to 8 bit", async () => {
  const samples = new Uint16Array([0, 65535, 257, 32896, 1000, 50000]);
  const bytes = writePng(2, 1, new Uint8Array(samples.buffer), {
    colorType: 2,
    inputColorType: 2,
    bitDepth: 16,
  });
  assert.equal(bytes[24], 16, "the test PNG must really be 16-bit");
  const img = await decodeImage(bytes, "deep.png");
  assert.deepEqual([...img.data], [...samples].map((v) => Math.round(v * 255 / 65535)));
});

Deno.test("decodeImage() drops alpha by default and composites over a background when asked", async () => {
  const bytes = writePng(1, 1, new Uint8Array([200, 100, 0, 128]), {
    colorType: 6,
    inputColorType: 6,
  });
  assert.deepEqual([...(await decodeImage(bytes, "a.png")).data], [200, 100, 0]);
  const a = 128 / 255;
  assert.deepEqual([...(await decodeImage(bytes, "a.png", { background: [0, 0, 255] })).data], [
    Math.round(200 * a),
    Math.round(100 * a),
    Math.round(255 * (1 - a)),
  ]);
});

Deno.test("decodeImage() decodes a JPEG written by jpeg-js", async () => {
  // jpeg-js encodes RGB; a gray RGB image round-trips with equal channels.
  const rgba = new Uint8Array(16 * 16 * 4).map((_, i) => i % 4 === 3 ? 255 : 90);
  const bytes = jpeg.encode({ width: 16, height: 16, data: rgba }, 95).data;
  const img = await decodeImage(new Uint8Array(bytes), "gray.jpg");
  assert.equal(img.width, 16);
  assert.ok(Math.abs(img.data[0]! - 90) <= 2);
});

Deno.test("decodeImage() names the file for corrupt, truncated and non-image bytes", async () => {
  const [dog] = await darknetPhotos();
  const jpg = Deno.readFileSync(dog!);
  const png = Deno.readFileSync(await skimagePhoto("astronaut.png"));
  const flipped = png.slice();
  flipped[5000] = flipped[5000]! ^ 0xff; // CRC mismatch in the image data
  const cases: [Uint8Array, RegExp][] = [
    [jpg.subarray(0, jpg.length >> 1), /dog-half\.jpg: expected a decodable JPEG/],
    [png.subarray(0, png.length >> 1), /x\.png: expected a decodable PNG/],
    [flipped, /x\.png: expected a decodable PNG/],
    [new Uint8Array(0), /empty\.bin: expected a JPEG or PNG image, found an empty file/],
    [new TextEncoder().encode('{"a": 1}'), /found 8 bytes of text/],
    [jpg.subarray(0, 3), /expected a JPEG header with the image size, found none/],
  ];
  const names = ["dog-half.jpg", "x.png", "x.png", "empty.bin", "t.json", "tiny.jpg"];
  for (const [i, [bytes, re]] of cases.entries()) {
    await assert.rejects(
      decodeImage(bytes, names[i]!),
      (e) => e instanceof DataError && re.test(e.message),
    );
  }
  await assert.rejects(
    readImage("/nonexistent/a.jpg"),
    /\/nonexistent\/a\.jpg: expected a readable image file/,
  );
});

Deno.test("decodeImage() keeps a JPEG's stored pixel order under an EXIF rotation, as libjpeg decodes it", async () => {
  const [dog] = await darknetPhotos();
  const bytes = Deno.readFileSync(dog!);
  // An APP1 Exif segment (big-endian TIFF) with Orientation = 6 (rotate 90° to display).
  const tiff = [0x4d, 0x4d, 0, 0x2a, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0];
  const payload = [0x45, 0x78, 0x69, 0x66, 0, 0, ...tiff, 0, 0, 0, 0, 0, 0];
  const app1 = [0xff, 0xe1, (payload.length + 2) >> 8, (payload.length + 2) & 255, ...payload];
  const rotated = new Uint8Array([0xff, 0xd8, ...app1, ...bytes.subarray(2)]);
  const a = await decodeImage(rotated, "rotated.jpg"), b = await decodeImage(bytes, "dog.jpg");
  assert.deepEqual([a.width, a.height], [768, 576]);
  assert.deepEqual(a.data, b.data);
  // libjpeg's pixels (smooth chroma upsampling), not jpeg-js's: they differ at colour edges.
  const j = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: false });
  let differ = 0;
  for (let i = 0; i < j.data.length; i++) if (j.data[i] !== b.data[i]) differ++;
  assert.ok(differ > 0.05 * j.data.length, `${differ} of ${j.data.length} values differ`);
});

Deno.test("decodeImage() refuses absurd header sizes before allocating", async () => {
  const png = writePng(1, 1, new Uint8Array([1, 2, 3, 255]), { colorType: 6 });
  const huge = png.slice();
  new DataView(huge.buffer).setUint32(16, 100000);
  new DataView(huge.buffer).setUint32(20, 100000);
  await assert.rejects(
    decodeImage(huge, "huge.png"),
    /huge\.png: expected at most 100 megapixels, found 100000×100000/,
  );
  // A JPEG SOF claiming 65535×65535.
  const jpg = new Uint8Array([
    0xff,
    0xd8,
    0xff,
    0xc0,
    0,
    11,
    8,
    0xff,
    0xff,
    0xff,
    0xff,
    3,
    1,
    0x11,
    0,
  ]);
  await assert.rejects(decodeImage(jpg, "huge.jpg"), /huge\.jpg: expected at most 100 megapixels/);
});

Deno.test("checkImageHead() passes real photos and refuses what decoding would, from the header alone", async () => {
  for (const p of (await darknetPhotos()).slice(0, 3)) await checkImageHead(p);
  await checkImageHead(await skimagePhoto("astronaut.png"));
  const dir = Deno.makeTempDirSync();
  try {
    // A PNG signature and IHDR stating the size, and nothing after: the dry run used to pass
    // 0×0 and 20000×20000 images that the run then refused.
    const png = (w: number, h: number) => {
      const b = new Uint8Array(33);
      b.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52]);
      new DataView(b.buffer).setUint32(16, w);
      new DataView(b.buffer).setUint32(20, h);
      return b;
    };
    const cases: [string, Uint8Array, RegExp][] = [
      ["zero.png", png(0, 0), /zero\.png: expected a positive image size, found 0×0$/],
      [
        "huge.png",
        png(20000, 20000),
        /huge\.png: expected at most 100 megapixels, found 20000×20000/,
      ],
      // A JPEG start with no size marker in a file that ends there.
      [
        "bare.jpg",
        new Uint8Array([0xff, 0xd8, 0xff, 0xe0, 0, 4, 0, 0]),
        /bare\.jpg: expected a JPEG header with the image size, found none$/,
      ],
    ];
    for (const [name, bytes, re] of cases) {
      Deno.writeFileSync(`${dir}/${name}`, bytes);
      await assert.rejects(
        checkImageHead(`${dir}/${name}`),
        (e) => e instanceof DataError && re.test(e.message),
      );
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

/** zlib data, its Adler-32 trailer's last byte flipped on request. */
function deflated(raw: Uint8Array, corruptAdler: boolean): Uint8Array {
  const z = new Uint8Array(deflateSync(raw));
  if (corruptAdler) z[z.length - 1]! ^= 1;
  return z;
}

/** A PNG written chunk by chunk, its image data given raw (filter bytes included) and deflated. */
function pngOf(
  header: { width: number; height: number; bitDepth: number; colorType: number; interlace: number },
  raw: Uint8Array,
  { corruptAdler = false, trns }: { corruptAdler?: boolean; trns?: number[] } = {},
): Uint8Array {
  const chunk = (type: string, data: Uint8Array) => {
    const out = new Uint8Array(12 + data.length);
    const v = new DataView(out.buffer);
    v.setUint32(0, data.length);
    out.set(new TextEncoder().encode(type), 4);
    out.set(data, 8);
    v.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)) >>> 0);
    return out;
  };
  const ihdr = new Uint8Array(13);
  const v = new DataView(ihdr.buffer);
  v.setUint32(0, header.width);
  v.setUint32(4, header.height);
  ihdr.set([header.bitDepth, header.colorType, 0, 0, header.interlace], 8);
  return Buffer.concat([
    Uint8Array.of(137, 80, 78, 71, 13, 10, 26, 10),
    chunk("IHDR", ihdr),
    ...(trns ? [chunk("tRNS", Uint8Array.from(trns))] : []),
    chunk("IDAT", deflated(raw, corruptAdler)),
    chunk("IEND", new Uint8Array()),
  ]);
}

Deno.test("decodeImage() refuses a PNG whose image data holds fewer rows than its header states", async () => {
  // 16×16 RGB, 8-bit: 16 rows of a filter byte and 48 sample bytes.
  const header = { width: 16, height: 16, bitDepth: 8, colorType: 2, interlace: 0 };
  const rows = (n: number) => Uint8Array.from({ length: n * 49 }, (_, i) => i % 49 === 0 ? 0 : 200);
  const whole = await decodeImage(pngOf(header, rows(16)), "whole.png");
  assert.ok(whole.data.every((x) => x === 200));
  // Every row there and a wrong Adler-32 after them: pngjs stops at the image's size and never
  // reads the checksum, so neither does the row count (a full inflate had refused the file).
  const badCheck = pngOf(header, rows(16), { corruptAdler: true });
  assert.ok((await decodeImage(badCheck, "adler.png")).data.every((x) => x === 200));
  for (const n of [15, 8, 0]) {
    await assert.rejects(
      () => decodeImage(pngOf(header, rows(n)), "short.png"),
      (e) =>
        e instanceof DataError &&
        e.message ===
          `short.png: expected 784 bytes of image data for its 16×16 header, found ${
            n * 49
          }: the PNG holds fewer rows than it states`,
    );
  }
  // Adam7 interlacing, 4-bit gray 5×3: its seven passes hold 1×1, 1×1, none, 1×1, 3×1, 2×2 and
  // 5×1 pixels, each row a filter byte and whole bytes: 2 + 2 + 0 + 2 + 3 + 2·2 + 4 = 17 bytes.
  const gray = { width: 5, height: 3, bitDepth: 4, colorType: 0, interlace: 1 };
  const rowBytes = [2, 2, 2, 3, 2, 2, 4];
  const adam7 = Uint8Array.from(rowBytes.flatMap((n) => [0, ...Array(n - 1).fill(0xff)]));
  assert.equal(adam7.length, 17);
  const white = await decodeImage(pngOf(gray, adam7), "adam7.png");
  assert.deepEqual([white.width, white.height], [5, 3]);
  assert.ok(white.data.every((x) => x === 255), "every pixel of every pass came from the file");
  await assert.rejects(
    // pngjs itself refuses interlaced data cut short; the count above is what keeps a whole
    // interlaced file from being refused.
    () => decodeImage(pngOf(gray, adam7.subarray(0, 13)), "adam7.png"),
    DataError,
  );
});

Deno.test("readImage() and checkImageHead() refuse a device or FIFO listed as an image, without reading it", async () => {
  // /dev/zero had grown memory without end; opening a FIFO had waited for a writer forever.
  const dir = await Deno.makeTempDir();
  try {
    const fifo = `${dir}/pipe.png`;
    const made = await new Deno.Command("mkfifo", { args: [fifo] }).output();
    assert.ok(made.success);
    for (const path of ["/dev/zero", fifo]) {
      for (const read of [() => readImage(path), () => checkImageHead(path)]) {
        await assert.rejects(
          read,
          (e: Error) =>
            e instanceof DataError &&
            e.message === `${path}: expected an image file, found a non-file (a device or FIFO)`,
        );
      }
    }
    await assert.rejects(() => readImage(dir), /expected an image file, found a folder/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("decodeImage() keeps the stored color of a gray or RGB PNG's color-keyed pixels, and composites them over a background", async () => {
  // White keyed out as transparent (tRNS): pngjs gives such pixels as transparent black, so with
  // alpha dropped they had decoded black, where OpenCV and Pillow keep the stored white.
  const gray = pngOf(
    { width: 2, height: 1, bitDepth: 8, colorType: 0, interlace: 0 },
    Uint8Array.of(0, 255, 40),
    {
      trns: [0, 255],
    },
  );
  assert.deepEqual([...(await decodeImage(gray, "g.png")).data], [255, 255, 255, 40, 40, 40]);
  const rgb = pngOf(
    { width: 2, height: 1, bitDepth: 8, colorType: 2, interlace: 0 },
    Uint8Array.of(0, 255, 255, 255, 10, 20, 30),
    { trns: [0, 255, 0, 255, 0, 255] },
  );
  assert.deepEqual([...(await decodeImage(rgb, "c.png")).data], [255, 255, 255, 10, 20, 30]);
  // Over a background the key still makes the pixel transparent.
  const over = await decodeImage(rgb, "c.png", { background: [0, 128, 0] });
  assert.deepEqual([...over.data], [0, 128, 0, 10, 20, 30]);
});
