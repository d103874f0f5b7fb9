/**
 * NumPy `.npy` files (format versions 1, 2 and 3): little-endian numeric arrays in C order.
 *
 * @module
 */
import { ConfigError, DataError } from "@clipq/onnx/errors";
import { allocate, BYTES_PER_ELEMENT, type DType, sizeOf, type Tensor } from "@clipq/onnx/tensor";
import { checkRegularFile } from "./image.ts";

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // "\x93NUMPY"

/** NumPy type codes (without byte order) and our dtypes. */
const DESCR: Readonly<Record<string, DType>> = {
  f2: "float16",
  f4: "float32",
  f8: "float64",
  i1: "int8",
  u1: "uint8",
  i2: "int16",
  u2: "uint16",
  i4: "int32",
  u4: "uint32",
  i8: "int64",
  u8: "uint64",
  b1: "bool",
};
const CODE: Partial<Record<DType, string>> = Object.fromEntries(
  Object.entries(DESCR).map(([k, v]) => [v, k]),
);

/** Largest array read, in elements (checked from the header before allocating). */
export const MAX_NPY_ELEMENTS = 2 ** 31;

/**
 * Parses a `.npy` file.
 *
 * @param bytes The file contents.
 * @param name File name for error messages.
 * @returns The tensor (float16 as raw bits in a Uint16Array, bool as 0/1 bytes).
 * @throws {DataError} On a bad magic, header, dtype, byte order, Fortran order or data length.
 *
 * @example Round trip
 * ```ts
 * import { readNpy, writeNpy } from "@clipq/data/npy";
 * import { float32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const t = readNpy(writeNpy(float32([2, 2], [1, 2, 3, 4])), "a.npy");
 * assert.deepEqual(t.dims, [2, 2]);
 * assert.deepEqual([...t.data], [1, 2, 3, 4]);
 * ```
 */
export function readNpy(bytes: Uint8Array, name: string): Tensor {
  if (bytes.length < 10 || !MAGIC.every((b, i) => bytes[i] === b)) {
    throw new DataError(`${name}: expected a .npy file starting with \\x93NUMPY, found none`);
  }
  const major = bytes[6]!;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let headerLen: number, start: number;
  if (major === 1) {
    headerLen = view.getUint16(8, true);
    start = 10;
  } else if (major === 2 || major === 3) {
    if (bytes.length < 12) {
      throw new DataError(`${name}: expected a .npy v${major} header, found ${bytes.length} bytes`);
    }
    headerLen = view.getUint32(8, true);
    start = 12;
  } else {
    throw new DataError(`${name}: expected .npy format version 1, 2 or 3, found ${major}`);
  }
  if (start + headerLen > bytes.length) {
    throw new DataError(
      `${name}: expected a ${headerLen}-byte header, found ${bytes.length - start} bytes`,
    );
  }
  const header = new TextDecoder(major === 3 ? "utf-8" : "latin1").decode(
    bytes.subarray(start, start + headerLen),
  );
  const descr = /'descr'\s*:\s*'([^']*)'/.exec(header)?.[1];
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape'\s*:\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) {
    throw new DataError(
      `${name}: expected a header with 'descr', 'fortran_order' and 'shape', found ${
        JSON.stringify(header.trim())
      }`,
    );
  }
  if (fortran === "True") {
    throw new DataError(
      `${name}: expected C-order data, found fortran_order True (save with np.ascontiguousarray)`,
    );
  }
  const order = descr[0]!;
  const code = descr.slice(1);
  const dtype = "<|=>".includes(order) ? DESCR[code] : undefined;
  if (!dtype) {
    throw new DataError(
      `${name}: expected dtype one of ${
        Object.keys(DESCR).map((k) => `<${k}`).join(", ")
      }, found '${descr}'`,
    );
  }
  const bytesPer = BYTES_PER_ELEMENT[dtype];
  if (order === ">" && bytesPer > 1) {
    throw new DataError(`${name}: expected little-endian data, found big-endian '${descr}'`);
  }
  const parts = shapeText.split(",").map((s) => s.trim()).filter((s) => s !== "");
  const dims = parts.map(Number);
  if (!dims.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new DataError(`${name}: expected a shape of non-negative integers, found (${shapeText})`);
  }
  const n = sizeOf(dims);
  if (n > MAX_NPY_ELEMENTS) {
    throw new DataError(
      `${name}: expected at most ${MAX_NPY_ELEMENTS} elements, found shape (${dims.join(", ")})`,
    );
  }
  const dataStart = start + headerLen;
  const want = n * bytesPer;
  const found = bytes.length - dataStart;
  if (found !== want) {
    throw new DataError(
      `${name}: expected ${want} data bytes for '${descr}' shape (${
        dims.join(", ")
      }), found ${found}`,
    );
  }
  const data = allocate(dtype, n) as Exclude<ReturnType<typeof allocate>, string[]>;
  // Copy into fresh storage: the data offset need not be aligned for the element type.
  new Uint8Array(data.buffer).set(bytes.subarray(dataStart, dataStart + want));
  return { dtype, dims, data };
}

/**
 * Writes a tensor as a version 1 `.npy` file (little-endian, C order).
 *
 * @param t A numeric tensor.
 * @returns The file contents.
 * @throws {DataError} For string and complex tensors, which .npy needs other dtypes for.
 *
 * @example Usage
 * ```ts
 * import { writeNpy } from "@clipq/data/npy";
 * import { tensor } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const bytes = writeNpy(tensor("uint8", [3], [1, 2, 3]));
 * assert.equal(bytes.length % 64, 3);
 * assert.deepEqual([...bytes.slice(-3)], [1, 2, 3]);
 * ```
 */
export function writeNpy(t: Tensor): Uint8Array {
  const code = CODE[t.dtype];
  if (!code || Array.isArray(t.data)) {
    throw new DataError(
      `writeNpy: expected a tensor of ${Object.values(DESCR).join(", ")}, found ${t.dtype}`,
    );
  }
  const data = t.data as Exclude<Tensor["data"], string[]>;
  // The header would promise what the data does not hold: a file no reader can use.
  const count = t.dims.reduce((a, d) => a * d, 1);
  if (data.length !== count) {
    throw new DataError(
      `writeNpy: expected ${count} values for shape [${t.dims.join(", ")}], found ${data.length}`,
    );
  }
  const shape = t.dims.length === 1 ? `(${t.dims[0]},)` : `(${t.dims.join(", ")})`;
  const descr = `${BYTES_PER_ELEMENT[t.dtype] === 1 ? "|" : "<"}${code}`;
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shape}, }`;
  // Pad with spaces so the data starts on a 64-byte boundary, newline last (as NumPy writes).
  const total = 10 + header.length + 1;
  header += " ".repeat((64 - (total % 64)) % 64) + "\n";
  const head = new TextEncoder().encode(header);
  const out = new Uint8Array(10 + head.length + data.byteLength);
  out.set(MAGIC);
  out[6] = 1;
  out[7] = 0;
  new DataView(out.buffer).setUint16(8, head.length, true);
  out.set(head, 10);
  out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), 10 + head.length);
  return out;
}

/** Options of {@linkcode npyBatches}. */
export interface NpyBatchOptions {
  /** Files per batch, concatenated along axis 0 (they must agree on the other axes). */
  batchSize?: number;
}

/**
 * Calibration data holding NaN or ±Infinity poisons every range after it: the run kept those
 * layers float and exited 0 with a model near float's size.
 */
function checkFinite(t: Tensor, file: string): void {
  const data = t.data;
  if (!(data instanceof Float32Array || data instanceof Float64Array)) return;
  let bad = 0;
  for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i]!)) bad++;
  if (bad > 0) {
    throw new DataError(
      `${file}: expected finite numbers; found ${bad} NaN or infinite of its ${t.data.length} values`,
    );
  }
}

/**
 * Reads `.npy` files one batch at a time.
 *
 * @param files The files, each holding one tensor (with a leading batch axis when `batchSize > 1`).
 * @param options Batch size.
 * @returns An async iterable of `{tensor, files}`.
 * @throws {DataError} When a file cannot be read or parsed, or files of one batch disagree on shape or dtype.
 *
 * @example Usage
 * ```ts
 * import { npyBatches, writeNpy } from "@clipq/data/npy";
 * import { float32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const path = Deno.makeTempFileSync({ suffix: ".npy" });
 * Deno.writeFileSync(path, writeNpy(float32([1, 2], [5, 6])));
 * const dims = [];
 * for await (const b of npyBatches([path, path], { batchSize: 2 })) dims.push(b.tensor.dims);
 * assert.deepEqual(dims, [[2, 2]]);
 * Deno.removeSync(path);
 * ```
 */
export async function* npyBatches(
  files: readonly string[],
  options: NpyBatchOptions = {},
): AsyncGenerator<{ tensor: Tensor; files: string[] }> {
  const batchSize = options.batchSize ?? 1;
  if (!(Number.isInteger(batchSize) && batchSize > 0)) {
    throw new ConfigError("batchSize", `expected a positive integer, found ${batchSize}`);
  }
  for (let i = 0; i < files.length; i += batchSize) {
    const group = files.slice(i, i + batchSize);
    const tensors: Tensor[] = [];
    for (const f of group) {
      let bytes: Uint8Array;
      await checkRegularFile(f, "a .npy file");
      try {
        bytes = await Deno.readFile(f);
      } catch (e) {
        throw new DataError(`${f}: expected a readable .npy file, found: ${(e as Error).message}`, {
          cause: e,
        });
      }
      const t = readNpy(bytes, f);
      if (t.dims.some((d) => d === 0)) {
        // An empty batch reached the model and failed there, blaming the model.
        throw new DataError(`${f}: expected a non-empty array; found shape [${t.dims.join(", ")}]`);
      }
      checkFinite(t, f);
      tensors.push(t);
    }
    if (tensors.length === 1) {
      yield { tensor: tensors[0]!, files: group };
      continue;
    }
    const first = tensors[0]!;
    const rest = first.dims.slice(1).join(",");
    tensors.forEach((t, j) => {
      if (t.dims.length === 0 || t.dims.slice(1).join(",") !== rest || t.dtype !== first.dtype) {
        throw new DataError(
          `${group[j]}: expected ${first.dtype} [*, ${rest}] like ${group[0]}, found ${t.dtype} [${
            t.dims.join(", ")
          }]`,
        );
      }
    });
    const dims = [tensors.reduce((s, t) => s + t.dims[0]!, 0), ...first.dims.slice(1)];
    const data = allocate(first.dtype, sizeOf(dims)) as Exclude<Tensor["data"], string[]>;
    const out = new Uint8Array(data.buffer);
    let at = 0;
    for (const t of tensors) {
      const d = t.data as Exclude<Tensor["data"], string[]>;
      out.set(new Uint8Array(d.buffer, d.byteOffset, d.byteLength), at);
      at += d.byteLength;
    }
    yield { tensor: { dtype: first.dtype, dims, data }, files: group };
  }
}
