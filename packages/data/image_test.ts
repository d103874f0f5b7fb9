import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
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
