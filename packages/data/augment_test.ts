import assert from "node:assert/strict";
import { darknetPhotos } from "../../tools/assets.ts";
import { readImage, type RgbImage } from "./image.ts";
import { randomCropFlip } from "./augment.ts";

Deno.test("randomCropFlip() makes 256 distinct, reproducible crops from the real photos", async () => {
  const photos: RgbImage[] = [];
  for (const f of (await darknetPhotos()).slice(0, 3)) photos.push(await readImage(f));
  const sizes = new Set<string>();
  for (let i = 0; i < 256; i++) {
    const src = photos[i % photos.length]!;
    const a = randomCropFlip(src, { seed: i, minScale: 0.6 });
    assert.ok(a.width >= Math.round(src.width * 0.6) && a.width <= src.width);
    assert.ok(a.height >= Math.round(src.height * 0.6) && a.height <= src.height);
    assert.equal(a.data.length, a.width * a.height * 3);
    sizes.add(`${i % photos.length}:${a.width}x${a.height}`);
  }
  assert.ok(sizes.size > 200, `only ${sizes.size} distinct crops`);
  const again = randomCropFlip(photos[0]!, { seed: 5 });
  assert.deepEqual(again, randomCropFlip(photos[0]!, { seed: 5 }));
});

Deno.test("randomCropFlip() crops and mirrors pixels exactly", () => {
  // A 1-row image with distinct pixels: every output must be a contiguous run, possibly reversed.
  const image = { width: 10, height: 1, data: new Uint8Array(30).map((_, i) => Math.floor(i / 3)) };
  let flipped = 0;
  for (let seed = 0; seed < 40; seed++) {
    const out = randomCropFlip(image, { seed, minScale: 0.3 });
    const px = [...out.data].filter((_, i) => i % 3 === 0);
    const rev = px[0]! > px[px.length - 1]!;
    if (rev) flipped++;
    const run = rev ? [...px].reverse() : px;
    run.forEach((v, i) => assert.equal(v, run[0]! + i));
  }
  assert.ok(flipped > 5 && flipped < 35, `${flipped} of 40 flipped`);
});
