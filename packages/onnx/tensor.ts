/**
 * Tensors: a dtype, dims and a typed array. int64/uint64 data is a BigInt64Array/BigUint64Array;
 * float16 and bfloat16 keep their raw 16-bit patterns in a Uint16Array; bool is a Uint8Array of 0/1;
 * complex64/complex128 interleave real and imaginary parts.
 *
 * @module
 */
import { ModelError } from "./errors.ts";

/** Element types ONNX defines, named as onnxruntime names them. */
export type DType =
  | "float32"
  | "uint8"
  | "int8"
  | "uint16"
  | "int16"
  | "int32"
  | "int64"
  | "string"
  | "bool"
  | "float16"
  | "float64"
  | "uint32"
  | "uint64"
  | "complex64"
  | "complex128"
  | "bfloat16";

/** Typed array (or string list) backing a tensor. */
export type TensorData =
  | Float32Array
  | Float64Array
  | Int8Array
  | Uint8Array
  | Int16Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | BigInt64Array
  | BigUint64Array
  | string[];

/** A dense tensor. */
export interface Tensor {
  /** Element type. */
  readonly dtype: DType;
  /** Dimensions; `[]` for a scalar. */
  readonly dims: readonly number[];
  /** Elements in row-major order. */
  readonly data: TensorData;
}

/** ONNX TensorProto.DataType code for each dtype. */
export const ONNX_DTYPE_CODES: Readonly<Record<DType, number>> = {
  float32: 1,
  uint8: 2,
  int8: 3,
  uint16: 4,
  int16: 5,
  int32: 6,
  int64: 7,
  string: 8,
  bool: 9,
  float16: 10,
  float64: 11,
  uint32: 12,
  uint64: 13,
  complex64: 14,
  complex128: 15,
  bfloat16: 16,
};

const DTYPE_BY_CODE = new Map<number, DType>(
  Object.entries(ONNX_DTYPE_CODES).map(([k, v]) => [v, k as DType]),
);

/**
 * The dtype of an ONNX TensorProto.DataType code.
 *
 * @param code ONNX data type code.
 * @returns The dtype name.
 * @throws {ModelError} When the code is not one ONNX defines (or float8/int4, which onnx-proto cannot carry).
 *
 * @example Usage
 * ```ts
 * import { dtypeFromCode } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * assert.equal(dtypeFromCode(1), "float32");
 * ```
 */
export function dtypeFromCode(code: number): DType {
  const d = DTYPE_BY_CODE.get(code);
  if (!d) {
    throw new ModelError(
      `Expected an ONNX tensor data type code in 1..16 but found ${code}`,
    );
  }
  return d;
}

/** Bytes per element of each dtype in ONNX raw_data (strings have no fixed size: 0). */
export const BYTES_PER_ELEMENT: Readonly<Record<DType, number>> = {
  float32: 4,
  uint8: 1,
  int8: 1,
  uint16: 2,
  int16: 2,
  int32: 4,
  int64: 8,
  string: 0,
  bool: 1,
  float16: 2,
  float64: 8,
  uint32: 4,
  uint64: 8,
  complex64: 8,
  complex128: 16,
  bfloat16: 2,
};

/**
 * Number of elements of a shape (1 for a scalar).
 *
 * @param dims The shape.
 * @returns The product of the dims.
 *
 * @example Usage
 * ```ts
 * import { sizeOf } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * assert.equal(sizeOf([2, 3, 4]), 24);
 * assert.equal(sizeOf([]), 1);
 * ```
 */
export function sizeOf(dims: readonly number[]): number {
  let n = 1;
  for (const d of dims) n *= d;
  return n;
}

/** Refuses shapes that are negative, non-integer or too large to allocate (before allocating). */
export function checkDims(dims: readonly number[], what: string, maxElements = 2 ** 31): void {
  let n = 1;
  for (const d of dims) {
    if (!Number.isSafeInteger(d) || d < 0) {
      throw new ModelError(
        `${what}: expected non-negative integer dims but found [${dims.join(", ")}]`,
      );
    }
    n *= d;
  }
  if (n > maxElements) {
    throw new ModelError(
      `${what}: expected at most ${maxElements} elements but dims [${dims.join(", ")}] claim ${n}`,
    );
  }
}

/**
 * Allocates zero-filled storage for a dtype.
 *
 * @param dtype Element type.
 * @param length Number of elements.
 * @returns A typed array (or string list) of that many elements.
 *
 * @example Usage
 * ```ts
 * import { allocate } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * assert.ok(allocate("int64", 2) instanceof BigInt64Array);
 * ```
 */
export function allocate(dtype: DType, length: number): TensorData {
  switch (dtype) {
    case "float32":
      return new Float32Array(length);
    case "float64":
      return new Float64Array(length);
    case "int8":
      return new Int8Array(length);
    case "uint8":
    case "bool":
      return new Uint8Array(length);
    case "int16":
      return new Int16Array(length);
    case "uint16":
    case "float16":
    case "bfloat16":
      return new Uint16Array(length);
    case "int32":
      return new Int32Array(length);
    case "uint32":
      return new Uint32Array(length);
    case "int64":
      return new BigInt64Array(length);
    case "uint64":
      return new BigUint64Array(length);
    case "complex64":
      return new Float32Array(2 * length);
    case "complex128":
      return new Float64Array(2 * length);
    case "string":
      return new Array<string>(length).fill("");
  }
}

/**
 * Builds a tensor, checking that the data length matches the dims.
 *
 * @param dtype Element type.
 * @param dims Shape.
 * @param data Elements; numbers are converted to the dtype's storage.
 * @returns The tensor.
 *
 * @example Usage
 * ```ts
 * import { tensor } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const t = tensor("int64", [2], [3, 4]);
 * assert.deepEqual([...t.data], [3n, 4n]);
 * ```
 */
export function tensor(
  dtype: DType,
  dims: readonly number[],
  data?: TensorData | readonly number[] | readonly bigint[],
): Tensor {
  const n = sizeOf(dims);
  const perElement = dtype === "complex64" || dtype === "complex128" ? 2 : 1;
  let out: TensorData;
  if (data === undefined) out = allocate(dtype, n);
  else if (Array.isArray(data)) {
    out = allocate(dtype, n);
    if (dtype === "string") {
      for (let i = 0; i < data.length; i++) (out as string[])[i] = String(data[i]);
    } else if (out instanceof BigInt64Array || out instanceof BigUint64Array) {
      for (let i = 0; i < data.length; i++) out[i] = BigInt(data[i] as unknown as number | bigint);
    } else {
      const o = out as Float32Array;
      for (let i = 0; i < data.length; i++) o[i] = Number(data[i]);
    }
    if (data.length !== n * perElement) {
      throw new ModelError(
        `Expected ${n * perElement} elements for dims [${
          dims.join(", ")
        }] but found ${data.length}`,
      );
    }
  } else {
    out = data as TensorData;
    if (out.length !== n * perElement) {
      throw new ModelError(
        `Expected ${n * perElement} elements for dims [${dims.join(", ")}] but found ${out.length}`,
      );
    }
  }
  return { dtype, dims: [...dims], data: out };
}

/**
 * Reads a tensor's elements as float64 numbers (int64 converted, float16/bfloat16 decoded).
 *
 * @param t The tensor.
 * @returns A new Float64Array.
 *
 * @example Usage
 * ```ts
 * import { tensor, toFloat64 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * assert.deepEqual([...toFloat64(tensor("int64", [2], [1, -2]))], [1, -2]);
 * ```
 */
export function toFloat64(t: Tensor): Float64Array {
  const d = t.data;
  if (Array.isArray(d)) throw new ModelError("Expected a numeric tensor but found a string tensor");
  const out = new Float64Array(d.length);
  if (t.dtype === "float16") {
    for (let i = 0; i < d.length; i++) out[i] = float16ToNumber(d[i] as number);
  } else if (t.dtype === "bfloat16") {
    const f = new Float32Array(1);
    const u = new Uint32Array(f.buffer);
    for (let i = 0; i < d.length; i++) {
      u[0] = (d[i] as number) << 16;
      out[i] = f[0]!;
    }
  } else if (d instanceof BigInt64Array || d instanceof BigUint64Array) {
    for (let i = 0; i < d.length; i++) out[i] = Number(d[i]);
  } else {
    for (let i = 0; i < d.length; i++) out[i] = d[i] as number;
  }
  return out;
}

/**
 * Reads a float tensor (float32/float64/float16/bfloat16) as a Float32Array, sharing storage for float32.
 *
 * @param t The tensor.
 * @returns Float32 values.
 *
 * @example Usage
 * ```ts
 * import { tensor, toFloat32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * assert.deepEqual([...toFloat32(tensor("float64", [1], [0.5]))], [0.5]);
 * ```
 */
export function toFloat32(t: Tensor): Float32Array {
  if (t.data instanceof Float32Array && t.dtype === "float32") return t.data;
  return Float32Array.from(toFloat64(t));
}

/**
 * Decodes an IEEE half-precision bit pattern.
 *
 * @param h 16-bit pattern.
 * @returns The number.
 *
 * @example Usage
 * ```ts
 * import { float16ToNumber } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * assert.equal(float16ToNumber(0x3c00), 1);
 * ```
 */
export function float16ToNumber(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

/**
 * Encodes a number as IEEE half precision (round to nearest even).
 *
 * @param x The number.
 * @returns The 16-bit pattern.
 *
 * @example Usage
 * ```ts
 * import { numberToFloat16 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * assert.equal(numberToFloat16(1), 0x3c00);
 * ```
 */
export function numberToFloat16(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0]!;
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    if (rem > half || (rem === half && (r & 1))) r++;
    return sign | r;
  }
  let r = mant >> 13;
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (r & 1))) r++;
  if (r === 0x400) {
    r = 0;
    e++;
    if (e >= 31) return sign | 0x7c00;
  }
  return sign | (e << 10) | r;
}

/**
 * A float32 tensor from numbers.
 *
 * @param dims Shape.
 * @param values Elements.
 * @returns The tensor.
 *
 * @example Usage
 * ```ts
 * import { float32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * assert.equal(float32([2], [1, 2]).dtype, "float32");
 * ```
 */
export function float32(dims: readonly number[], values: readonly number[] | Float32Array): Tensor {
  return tensor(
    "float32",
    dims,
    values instanceof Float32Array ? values : Float32Array.from(values),
  );
}

/**
 * An int64 tensor from numbers.
 *
 * @param dims Shape.
 * @param values Elements.
 * @returns The tensor.
 *
 * @example Usage
 * ```ts
 * import { int64 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * assert.deepEqual([...int64([1], [7]).data], [7n]);
 * ```
 */
export function int64(dims: readonly number[], values: readonly (number | bigint)[]): Tensor {
  return tensor("int64", dims, BigInt64Array.from(values, (v) => BigInt(v)));
}
