import assert from "node:assert/strict";
import { join } from "node:path";
import { ConfigError, DataError } from "@clipq/onnx/errors";
import { darknetPhotoDir, darknetPhotos } from "../../tools/assets.ts";
import { augmentedImages, imageBatches, listImages, preprocessBatches } from "./images.ts";
import { randomCropFlip } from "./augment.ts";
import { preprocess } from "./preprocess.ts";
import { readImage } from "./image.ts";

Deno.test("listImages() lists the darknet photos sorted, honoring limit", async () => {
  const dir = await darknetPhotoDir();
  const all = await listImages(dir);
  assert.deepEqual(all.map((p) => p.split("/").pop()), [
    "dog.jpg",
    "eagle.jpg",
    "giraffe.jpg",
    "horses.jpg",
    "kite.jpg",
    "person.jpg",
    "scream.jpg",
  ]);
  assert.equal((await listImages(dir, { limit: 2 })).length, 2);
  assert.deepEqual(await listImages(dir, { extensions: [".names"], limit: 1 }), [
    join(dir, "9k.names"),
  ]);
});

Deno.test("listImages() names a missing or empty folder", async () => {
  await assert.rejects(
    listImages("/nonexistent/calib"),
    (e) =>
      e instanceof DataError && /\/nonexistent\/calib: expected a readable folder/.test(e.message),
  );
  const empty = Deno.makeTempDirSync();
  await assert.rejects(
    listImages(empty),
    (e) => e instanceof DataError && e.message.startsWith(`${empty}: expected image files`),
  );
  await assert.rejects(listImages(empty, { limit: 0 }), ConfigError);
  Deno.removeSync(empty);
});

Deno.test("imageBatches() batches along axis 0 with the same values as preprocess()", async () => {
  const files = (await darknetPhotos()).filter((f) => !f.endsWith("kite.jpg")).slice(0, 5);
  const spec = { size: [64, 96] as [number, number] };
  const batches = [];
  for await (const b of imageBatches(files, spec, { batchSize: 2 })) batches.push(b);
  assert.deepEqual(batches.map((b) => b.tensor.dims[0]), [2, 2, 1]);
  assert.deepEqual(batches.flatMap((b) => b.files), files);
  const single = preprocess(await readImage(files[3]!), spec);
  const second = batches[1]!;
  const per = 3 * 64 * 96;
  assert.deepEqual(second.tensor.data.slice(per, 2 * per), single.tensor.data);
  assert.deepEqual(second.transforms[1], single.transform);
});

Deno.test("imageBatches() skips or fails on a corrupt image as configured", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    const [dog] = await darknetPhotos();
    const bytes = Deno.readFileSync(dog!);
    Deno.writeFileSync(join(dir, "a.jpg"), bytes);
    Deno.writeFileSync(join(dir, "b.jpg"), bytes.subarray(0, 1000));
    Deno.writeFileSync(join(dir, "c.png"), new TextEncoder().encode("not a png"));
    const files = await listImages(dir);
    const spec = { size: [32, 32] as [number, number] };
    await assert.rejects(async () => {
      for await (const _ of imageBatches(files, spec)) { /* consume */ }
    }, (e) => e instanceof DataError && e.message.includes("b.jpg"));
    const warnings: string[] = [];
    const got = [];
    for await (
      const b of imageBatches(files, spec, {
        batchSize: 4,
        onBadImage: "skip",
        onWarning: (m) => warnings.push(m),
      })
    ) got.push(b);
    assert.equal(got.length, 1);
    assert.deepEqual(got[0]!.tensor.dims, [1, 3, 32, 32]);
    assert.equal(got[0]!.skipped, 2);
    assert.equal(warnings.length, 2);
    assert.match(warnings[1]!, /c\.png: expected a JPEG or PNG image/);
    await assert.rejects(async () => {
      for await (
        const _ of imageBatches(files.slice(1), spec, { onBadImage: "skip" })
      ) { /* consume */ }
    }, /expected at least one readable image among 2 files, found none \(2 skipped\)/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("imageBatches() refuses batches larger than 1 for CHW", async () => {
  await assert.rejects(async () => {
    for await (
      const _ of imageBatches(["x.jpg"], { layout: "CHW" }, { batchSize: 2 })
    ) { /* consume */ }
  }, (e) => e instanceof ConfigError && /batchSize: expected 1 for layout CHW/.test(e.message));
});

Deno.test("augmentedImages() feeds preprocessBatches() with seeded crops of the real photos", async () => {
  const files = (await darknetPhotos()).filter((f) => /(dog|eagle|giraffe)\.jpg$/.test(f));
  const spec = { size: [32, 32] as [number, number] };
  const dims: number[][] = [];
  const names: string[] = [];
  let first: Float32Array | undefined;
  for await (
    const b of preprocessBatches(augmentedImages(files, { count: 40, seed: 7 }), spec, {
      batchSize: 16,
    })
  ) {
    dims.push([...b.tensor.dims]);
    names.push(...b.files);
    first ??= (b.tensor.data as Float32Array).slice(0, 3 * 32 * 32);
  }
  assert.deepEqual(dims, [[16, 3, 32, 32], [16, 3, 32, 32], [8, 3, 32, 32]]);
  assert.equal(names[4], `${files[1]}#4`);
  // Image 0 is randomCropFlip(dog, seed 7): the same pixels as preprocessing that crop directly.
  const crop = randomCropFlip(await readImage(files[0]!), { seed: 7, minScale: 0.5 });
  assert.deepEqual(first, preprocess(crop, spec).tensor.data);
  await assert.rejects(async () => {
    for await (const _ of augmentedImages([], { count: 1 })) { /* consume */ }
  }, ConfigError);
});
