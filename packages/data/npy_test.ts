import assert from "node:assert/strict";
import { DataError } from "@clipq/onnx/errors";
import { float32, tensor } from "@clipq/onnx/tensor";
import { skimagePhoto } from "../../tools/assets.ts";
import { readImage } from "./image.ts";
import { npyBatches, readNpy, writeNpy } from "./npy.ts";

Deno.test("readNpy() reads skimage's chessboard arrays equal to the PNGs' pixels", async () => {
  const gray = readNpy(Deno.readFileSync(await skimagePhoto("chessboard_GRAY_U8.npy")), "g.npy");
  assert.equal(gray.dtype, "uint8");
  assert.deepEqual(gray.dims, [200, 200]);
  const grayPng = await readImage(await skimagePhoto("chessboard_GRAY.png"));
  assert.deepEqual([...gray.data], [...grayPng.data].filter((_, i) => i % 3 === 0));
  const rgb = readNpy(Deno.readFileSync(await skimagePhoto("chessboard_RGB_U8.npy")), "c.npy");
  assert.deepEqual(rgb.dims, [200, 200, 3]);
  assert.deepEqual(rgb.data, (await readImage(await skimagePhoto("chessboard_RGB.png"))).data);
});

Deno.test("readNpy() reads a float64 skimage array", async () => {
  const hog = readNpy(Deno.readFileSync(await skimagePhoto("astronaut_GRAY_hog_L1.npy")), "h.npy");
  assert.equal(hog.dtype, "float64");
  assert.deepEqual(hog.dims, [311364]);
  const d = hog.data as Float64Array;
  assert.ok(d.every((v) => Number.isFinite(v) && v >= 0));
  assert.ok(d.some((v) => v > 0));
});

Deno.test("writeNpy() round-trips every numeric dtype and pads the header to 64 bytes", () => {
  const cases = [
    float32([2, 3], [1.5, -2, 3, 4, 5, 6]),
    tensor("float64", [2], [Math.PI, -1e300]),
    tensor("int8", [3], [-128, 0, 127]),
    tensor("uint8", [1, 1, 2], [0, 255]),
    tensor("int16", [2], [-300, 300]),
    tensor("uint16", [2], [1, 65535]),
    tensor("int32", [2], [-(2 ** 31), 2 ** 31 - 1]),
    tensor("int64", [2], [-5n, 2n ** 62n]),
    tensor("uint64", [1], [2n ** 64n - 1n]),
    tensor("bool", [2], [1, 0]),
    tensor("float16", [1], [0x3c00]),
    tensor("float32", [], [7]),
    tensor("float32", [0, 4]),
  ];
  for (const t of cases) {
    const bytes = writeNpy(t);
    const headerLen = new DataView(bytes.buffer).getUint16(8, true);
    assert.equal((10 + headerLen) % 64, 0);
    assert.equal(bytes[10 + headerLen - 1], 0x0a);
    const back = readNpy(bytes, "x.npy");
    assert.equal(back.dtype, t.dtype);
    assert.deepEqual(back.dims, t.dims);
    assert.deepEqual([...back.data as Iterable<unknown>], [...t.data as Iterable<unknown>]);
  }
});

Deno.test("readNpy() reads a version 2 header and rejects Fortran order, big-endian and short data", () => {
  const v1 = writeNpy(float32([2], [1, 2]));
  const h1 = new DataView(v1.buffer).getUint16(8, true);
  const v2 = new Uint8Array(v1.length + 2);
  v2.set(v1.subarray(0, 8));
  v2[6] = 2;
  new DataView(v2.buffer).setUint32(8, h1, true);
  v2.set(v1.subarray(10), 12);
  assert.deepEqual([...readNpy(v2, "v2.npy").data], [1, 2]);

  const text = String.fromCharCode(...v1);
  const edit = (from: string, to: string) =>
    Uint8Array.from(text.replace(from, to), (c) => c.charCodeAt(0));
  const bad: [Uint8Array, RegExp][] = [
    [edit("False", "True "), /f\.npy: expected C-order data, found fortran_order True/],
    [edit("'<f4'", "'>f4'"), /f\.npy: expected little-endian data, found big-endian '>f4'/],
    [edit("'<f4'", "'<c8'"), /f\.npy: expected dtype one of .*found '<c8'/],
    [v1.subarray(0, v1.length - 1), /f\.npy: expected 8 data bytes for '<f4' shape \(2\), found 7/],
    [v1.subarray(0, 30), /f\.npy: expected a \d+-byte header/],
    [new Uint8Array([1, 2, 3]), /f\.npy: expected a \.npy file/],
    [edit("(2,)", "(100000, 100000, 1000)"), /f\.npy: expected at most 2147483648 elements/],
  ];
  for (const [bytes, re] of bad) {
    assert.throws(
      () => readNpy(bytes, "f.npy"),
      (e) => e instanceof DataError && re.test(e.message),
    );
  }
});

Deno.test("npyBatches() concatenates files along axis 0 and names a mismatching file", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    const a = `${dir}/a.npy`, b = `${dir}/b.npy`, c = `${dir}/c.npy`;
    Deno.writeFileSync(a, writeNpy(float32([1, 2], [1, 2])));
    Deno.writeFileSync(b, writeNpy(float32([2, 2], [3, 4, 5, 6])));
    Deno.writeFileSync(c, writeNpy(float32([1, 3], [7, 8, 9])));
    const got = [];
    for await (const x of npyBatches([a, b, a], { batchSize: 2 })) got.push(x);
    assert.deepEqual(got.map((x) => x.tensor.dims), [[3, 2], [1, 2]]);
    assert.deepEqual([...got[0]!.tensor.data], [1, 2, 3, 4, 5, 6]);
    await assert.rejects(async () => {
      for await (const _ of npyBatches([a, c], { batchSize: 2 })) { /* consume */ }
    }, (e) => e instanceof DataError && e.message.startsWith(`${c}: expected float32 [*, 2]`));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("writeNpy() refuses data that does not fill its shape", () => {
  // It used to write a header for 6 values over 5, a file no reader accepts.
  assert.throws(
    () => writeNpy({ dtype: "float32", dims: [2, 3], data: new Float32Array(5) }),
    /writeNpy: expected 6 values for shape \[2, 3\], found 5/,
  );
});

Deno.test("npyBatches() refuses calibration data holding NaN or infinities, naming the file", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    const ok = `${dir}/ok.npy`, bad = `${dir}/bad.npy`;
    Deno.writeFileSync(ok, writeNpy(float32([1, 4], [0, 1, 2, 3])));
    Deno.writeFileSync(bad, writeNpy(float32([1, 4], [0, NaN, Infinity, 3])));
    // All-NaN inputs used to calibrate to no range at all, leave those layers float, and exit 0.
    await assert.rejects(
      async () => {
        for await (const _ of npyBatches([ok, bad])) { /* read them all */ }
      },
      (e) =>
        e instanceof DataError &&
        /bad\.npy: expected finite numbers; found 2 NaN or infinite of its 4 values$/.test(
          e.message,
        ),
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("npyBatches() refuses an empty array and a device by name", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    const empty = `${dir}/empty.npy`;
    Deno.writeFileSync(empty, writeNpy(float32([0, 3, 4, 4], [])));
    // An empty batch had reached the model, whose error blamed the model and named no file.
    await assert.rejects(
      async () => {
        for await (const _ of npyBatches([empty])) { /* consume */ }
      },
      (e) =>
        e instanceof DataError &&
        e.message === `${empty}: expected a non-empty array; found shape [0, 3, 4, 4]`,
    );
    await assert.rejects(async () => {
      for await (const _ of npyBatches(["/dev/zero"])) { /* consume */ }
    }, /\/dev\/zero: expected a \.npy file, found a non-file/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
