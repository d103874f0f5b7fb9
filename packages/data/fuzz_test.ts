import assert from "node:assert/strict";
import jpeg from "jpeg-js";
import pngjs from "pngjs";
import { DataError } from "@clipq/onnx/errors";
import { seededRandom } from "@clipq/onnx/builder";
import { float32 } from "@clipq/onnx/tensor";
import { decodeImage } from "./image.ts";
import { readNpy, writeNpy } from "./npy.ts";
import { loadVocAnnotation } from "./voc.ts";
import { loadCocoAnnotations } from "./coco.ts";

const CASES = 600;

/** Seeded mutations: byte replacements, bit flips, truncation. */
function mutator(seed: number): (b: Uint8Array) => Uint8Array {
  const r = seededRandom(seed);
  return (b) => {
    const c = b.slice();
    for (let k = 1 + Math.floor(r.next() * 4); k > 0; k--) {
      const m = r.next();
      const at = Math.floor(r.next() * c.length);
      if (m < 0.6) c[at] = Math.floor(r.next() * 256);
      else if (m < 0.85) c[at] = c[at]! ^ (1 << Math.floor(r.next() * 8));
      else return c.subarray(0, at);
    }
    return c;
  };
}

async function fuzz(
  what: string,
  seed: number,
  input: Uint8Array,
  parse: (b: Uint8Array) => unknown,
) {
  const mutate = mutator(seed);
  let rejected = 0;
  for (let i = 0; i < CASES; i++) {
    const bytes = mutate(input);
    try {
      await parse(bytes);
    } catch (e) {
      assert.ok(e instanceof DataError, `${what} case ${i}: ${(e as Error)?.stack ?? e}`);
      rejected++;
    }
  }
  console.log(`${what}: ${CASES} mutations, ${rejected} rejected with DataError, none otherwise`);
  assert.ok(rejected > 0);
}

Deno.test("decodeImage() throws only DataError on mutated JPEG and PNG files", async () => {
  const rgba = new Uint8Array(24 * 16 * 4).map((_, i) => (i * 37) % 256);
  const jpg = new Uint8Array(jpeg.encode({ width: 24, height: 16, data: rgba }, 90).data);
  const png = new pngjs.PNG({ width: 24, height: 16 });
  png.data.set(rgba);
  await fuzz("jpeg", 1, jpg, (b) => decodeImage(b, "f.jpg"));
  await fuzz("png", 2, new Uint8Array(pngjs.PNG.sync.write(png)), (b) => decodeImage(b, "f.png"));
});

Deno.test("readNpy(), loadVocAnnotation() and loadCocoAnnotations() throw only DataError on mutations", async () => {
  await fuzz(
    "npy",
    3,
    writeNpy(float32([3, 4], new Array(12).fill(1.5))),
    (b) => readNpy(b, "f.npy"),
  );
  const enc = (s: string) => new TextEncoder().encode(s);
  const dec = (b: Uint8Array) => new TextDecoder().decode(b);
  const voc = "<annotation><filename>a.jpg</filename><size><width>10</width><height>10</height>" +
    "</size><object><name>dog</name><difficult>0</difficult><bndbox><xmin>1</xmin><ymin>2</ymin>" +
    "<xmax>3</xmax><ymax>4</ymax></bndbox></object></annotation>";
  await fuzz("voc", 4, enc(voc), (b) => loadVocAnnotation(dec(b), "a.xml"));
  const coco = JSON.stringify({
    images: [{ id: 1, file_name: "a.jpg", width: 9, height: 9 }],
    categories: [{ id: 1, name: "dog" }],
    annotations: [{ image_id: 1, category_id: 1, bbox: [1, 2, 3, 4], iscrowd: 0 }],
  });
  await fuzz("coco", 5, enc(coco), (b) => loadCocoAnnotations(dec(b), "a.json"));
});
