import assert from "node:assert/strict";
import { ConfigError } from "@clipq/onnx/errors";
import { darknetPhotos } from "../../tools/assets.ts";
import { readImage } from "./image.ts";
import {
  type Box,
  boxTransform,
  preprocess,
  resolveSpec,
  toModelBox,
  toOriginalBox,
} from "./preprocess.ts";

const img2x2 = {
  width: 2,
  height: 2,
  // (R, G, B) per pixel: row 0 = (0,10,20) (40,50,60); row 1 = (80,90,100) (120,130,140)
  data: new Uint8Array([0, 10, 20, 40, 50, 60, 80, 90, 100, 120, 130, 140]),
};

Deno.test("preprocess() normalizes a 2×2 image per channel (known answer, NCHW)", () => {
  const { tensor, transform } = preprocess(img2x2, {
    size: [2, 2],
    resize: "stretch",
    scale: 0.5,
    mean: [1, 2, 3],
    std: [2, 4, 5],
  });
  assert.deepEqual(tensor.dims, [1, 3, 2, 2]);
  assert.deepEqual(
    [...tensor.data],
    [
      // R: (v/2 - 1)/2
      -0.5,
      9.5,
      19.5,
      29.5,
      // G: (v/2 - 2)/4
      0.75,
      5.75,
      10.75,
      15.75,
      // B: (v/2 - 3)/5
      1.4,
      5.4,
      9.4,
      13.4,
    ].map(Math.fround),
  );
  assert.deepEqual([transform.scaleX, transform.offsetX], [1, 0]);
});

Deno.test("preprocess() writes NHWC, CHW and BGR orders", () => {
  const base = { size: [2, 2] as const, resize: "stretch" as const, scale: 1 };
  const nhwc = preprocess(img2x2, { ...base, layout: "NHWC" }).tensor;
  assert.deepEqual(nhwc.dims, [1, 2, 2, 3]);
  assert.deepEqual([...nhwc.data], [...img2x2.data]);
  const chw = preprocess(img2x2, { ...base, layout: "CHW", color: "BGR" }).tensor;
  assert.deepEqual(chw.dims, [3, 2, 2]);
  assert.deepEqual([...chw.data], [20, 60, 100, 140, 10, 50, 90, 130, 0, 40, 80, 120]);
});

Deno.test("preprocess() writes one channel of BT.601 luma for gray", () => {
  const base = {
    size: [2, 2] as const,
    resize: "stretch" as const,
    scale: 1,
    color: "gray" as const,
  };
  // round(0.299·R + 0.587·G + 0.114·B): 8.15 → 8, 48.15 → 48, 88.15 → 88, 128.15 → 128.
  const nhwc = preprocess(img2x2, { ...base, layout: "NHWC" }).tensor;
  assert.deepEqual([nhwc.dims, [...nhwc.data]], [[1, 2, 2, 1], [8, 48, 88, 128]]);
  assert.deepEqual(preprocess(img2x2, { ...base, layout: "NCHW" }).tensor.dims, [1, 1, 2, 2]);
  assert.deepEqual(preprocess(img2x2, { ...base, layout: "CHW" }).tensor.dims, [1, 2, 2]);
  // A gray image read as RGB keeps its values; one mean and std; the letterbox pads with padValue.
  const gray = { width: 2, height: 1, data: new Uint8Array([7, 7, 7, 250, 250, 250]) };
  const boxed = preprocess(gray, {
    size: [2, 2],
    resize: "letterbox",
    layout: "NHWC",
    color: "gray",
    scale: 1,
    mean: [2],
    std: [5],
    padValue: 102,
  }).tensor;
  assert.deepEqual([...boxed.data], [1, 49.6, 20, 20].map(Math.fround));
  // Three different means are three channels' worth.
  assert.throws(
    () => resolveSpec({ color: "gray", mean: [0.4, 0.5, 0.6] }),
    /input\.mean: expected 1 value for a gray \(one-channel\) input/,
  );
  assert.equal(resolveSpec({ color: "gray", std: [0.2, 0.2, 0.2] }).std.length, 3);
});

Deno.test("preprocess() resizes bilinearly with half-pixel centers, as cv2 does", () => {
  // cv2.resize(np.array([[0, 100]]), (4, 1)) → [0, 25, 75, 100]; 2 → 3 gives [0, 50, 100].
  const row = { width: 2, height: 1, data: new Uint8Array([0, 0, 0, 100, 100, 100]) };
  const spec = { resize: "stretch" as const, scale: 1 };
  assert.deepEqual([...preprocess(row, { ...spec, size: [1, 4] }).tensor.data.slice(0, 4)], [
    0,
    25,
    75,
    100,
  ]);
  assert.deepEqual(
    [...preprocess(row, { ...spec, size: [1, 3] }).tensor.data.slice(0, 3)].map((v) =>
      Math.round(Number(v) * 1000) / 1000
    ),
    [0, 50, 100],
  );
  // Downscaling 4 → 2 averages pixel pairs: sample at 0.5 and 2.5.
  const four = {
    width: 4,
    height: 1,
    data: new Uint8Array([0, 0, 0, 40, 40, 40, 80, 80, 80, 120, 120, 120]),
  };
  assert.deepEqual([...preprocess(four, { ...spec, size: [1, 2] }).tensor.data.slice(0, 2)], [
    20,
    100,
  ]);
});

Deno.test("preprocess() letterboxes with centered padding of padValue", () => {
  const wide = { width: 4, height: 2, data: new Uint8Array(4 * 2 * 3).fill(200) };
  const { tensor, transform } = preprocess(wide, {
    size: [4, 4],
    resize: "letterbox",
    scale: 1,
    padValue: 114,
  });
  assert.deepEqual(
    [transform.scaleX, transform.scaleY, transform.offsetX, transform.offsetY],
    [1, 1, 0, 1],
  );
  const r = [...tensor.data.slice(0, 16)];
  assert.deepEqual(r, [
    114,
    114,
    114,
    114,
    200,
    200,
    200,
    200,
    200,
    200,
    200,
    200,
    114,
    114,
    114,
    114,
  ]);
});

Deno.test("preprocess() center-crops after scaling the short side", () => {
  // 6×2 image with columns 0..5 → scale 2 gives 12×4; center crop of 4 keeps resized columns 4..7.
  const data = new Uint8Array(6 * 2 * 3);
  for (let y = 0; y < 2; y++) {
    for (let x = 0; x < 6; x++) data.fill(x * 10, (y * 6 + x) * 3, (y * 6 + x) * 3 + 3);
  }
  const { tensor, transform } = preprocess({ width: 6, height: 2, data }, {
    size: [4, 4],
    resize: "center-crop",
    scale: 1,
  });
  assert.deepEqual([transform.scaleX, transform.offsetX, transform.offsetY], [2, -4, 0]);
  // Resized column c samples source (c + 0.5)/2 − 0.5: c=4 → 1.75 → 17.5, 5 → 22.5, 6 → 27.5, 7 → 32.5.
  assert.deepEqual([...tensor.data.slice(0, 4)], [17.5, 22.5, 27.5, 32.5]);
  assert.deepEqual(toOriginalBox([0, 0, 4, 4], transform), [2, 0, 4, 2]);
});

Deno.test("toOriginalBox() inverts toModelBox() within 1e-6 for letterbox on real photos", async () => {
  for (const file of (await darknetPhotos()).slice(0, 3)) {
    const image = await readImage(file);
    for (const size of [[416, 416], [320, 640], [640, 320]] as const) {
      const { transform: t, tensor } = preprocess(image, { size, resize: "letterbox" });
      assert.deepEqual(tensor.dims, [1, 3, size[0], size[1]]);
      const box: Box = [
        image.width * 0.1,
        image.height * 0.2,
        image.width * 0.7,
        image.height * 0.95,
      ];
      const back = toOriginalBox(toModelBox(box, t), t);
      back.forEach((v, i) => assert.ok(Math.abs(v - box[i]!) < 1e-6, `${v} vs ${box[i]}`));
      // The content fills one axis exactly and is centered on the other.
      const m = toModelBox([0, 0, image.width, image.height], t);
      assert.ok(Math.abs(m[0] - (size[1] - m[2])) <= 1 && Math.abs(m[1] - (size[0] - m[3])) <= 1);
      const near = (a: number, b: number) => Math.abs(a - b) < 1e-9;
      assert.ok((near(m[0], 0) && near(m[2], size[1])) || (near(m[1], 0) && near(m[3], size[0])));
    }
  }
});

Deno.test("toOriginalBox() clamps boxes that reach into the padding", () => {
  const t = boxTransform({ width: 200, height: 100 }, { size: [64, 64] });
  assert.deepEqual(toOriginalBox([-5, 0, 70, 64], t), [0, 0, 200, 100]);
});

Deno.test("resolveSpec() names the bad key", () => {
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ size: [0, 4] }, /input\.size: expected \[height, width\]/],
    [{ size: [4] }, /input\.size/],
    [
      { resize: "fit" },
      /input\.resize: expected one of stretch, letterbox, center-crop, found "fit"/,
    ],
    [{ color: "rgb" }, /input\.color/],
    [{ scale: NaN }, /input\.scale/],
    [{ scale: -1 }, /input\.scale: expected a finite number > 0, found -1/],
    [{ scale: 0 }, /input\.scale: expected a finite number > 0, found 0/],
    [{ mean: [1, 2] }, /input\.mean: expected 1 or 3 finite numbers/],
    [{ std: [1, 0, 1] }, /input\.std: expected 1 or 3 finite numbers > 0/],
    [{ padValue: 300 }, /input\.padValue/],
  ];
  for (const [spec, re] of bad) {
    assert.throws(() => resolveSpec(spec), (e) => e instanceof ConfigError && re.test(e.message));
  }
});
