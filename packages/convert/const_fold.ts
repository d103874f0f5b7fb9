/**
 * Small constant-tensor operations used when importing graphs: the shape arithmetic that exported
 * TensorFlow graphs carry (SparseToDense, Pack, StridedSlice of shapes …) is folded into constants
 * so the ONNX graph only holds real work.
 *
 * @module
 */
import { ModelError, sizeOf, type Tensor, toFloat64 } from "@clipq/onnx";
import { allocate, type DType, tensor } from "@clipq/onnx/tensor";

/** Row-major strides of a shape. */
export function stridesOf(dims: readonly number[]): number[] {
  const s = new Array<number>(dims.length).fill(1);
  for (let i = dims.length - 2; i >= 0; i--) s[i] = s[i + 1]! * dims[i + 1]!;
  return s;
}

/**
 * Visits every multi-index of a shape in row-major order (the last axis fastest), with the flat
 * position it has; the folds below differ only in what they read or write at each one.
 */
function forEachIndex(
  dims: readonly number[],
  visit: (idx: readonly number[], i: number) => void,
): void {
  const n = sizeOf(dims);
  const idx = new Array<number>(dims.length).fill(0);
  for (let i = 0; i < n; i++) {
    visit(idx, i);
    for (let k = dims.length - 1; k >= 0; k--) {
      if (++idx[k]! < dims[k]!) break;
      idx[k] = 0;
    }
  }
}

/**
 * Builds a tensor of a dtype from float64 values (integers rounded toward zero for int types).
 *
 * @param dtype Element type.
 * @param dims Shape.
 * @param values Values.
 * @returns The tensor.
 *
 * @example Usage
 * ```ts
 * import { fromNumbers } from "@clipq/convert/const-fold";
 * import assert from "node:assert/strict";
 * assert.deepEqual([...fromNumbers("int64", [2], [1, 2]).data], [1n, 2n]);
 * ```
 */
export function fromNumbers(
  dtype: DType,
  dims: readonly number[],
  values: ArrayLike<number>,
): Tensor {
  const out = allocate(dtype, values.length);
  if (out instanceof BigInt64Array || out instanceof BigUint64Array) {
    for (let i = 0; i < values.length; i++) out[i] = BigInt(Math.trunc(values[i]!));
  } else if (Array.isArray(out)) {
    throw new ModelError(`Expected a numeric dtype but found ${dtype}`);
  } else {
    const o = out as Float64Array;
    for (let i = 0; i < values.length; i++) o[i] = values[i]!;
  }
  return tensor(dtype, dims, out);
}

/**
 * Permutes the axes of a constant tensor (numpy transpose).
 *
 * @param t The tensor.
 * @param perm Output axis i is input axis perm[i].
 * @returns The transposed tensor.
 *
 * @example Usage
 * ```ts
 * import { permute } from "@clipq/convert/const-fold";
 * import { float32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const t = permute(float32([2, 3], [1, 2, 3, 4, 5, 6]), [1, 0]);
 * assert.deepEqual(t.dims, [3, 2]);
 * assert.deepEqual([...t.data], [1, 4, 2, 5, 3, 6]);
 * ```
 */
export function permute(t: Tensor, perm: readonly number[]): Tensor {
  const dims = perm.map((p) => t.dims[p]!);
  const inStrides = stridesOf(t.dims);
  const n = sizeOf(dims);
  const out = allocate(t.dtype, n) as unknown as { [i: number]: unknown; length: number };
  const src = t.data as unknown as { [i: number]: unknown };
  const rank = dims.length;
  const idx = new Array<number>(rank).fill(0);
  const stride = perm.map((p) => inStrides[p]!);
  for (let i = 0; i < n; i++) {
    let off = 0;
    for (let a = 0; a < rank; a++) off += idx[a]! * stride[a]!;
    out[i] = src[off];
    for (let a = rank - 1; a >= 0; a--) {
      if (++idx[a]! < dims[a]!) break;
      idx[a] = 0;
    }
  }
  return { dtype: t.dtype, dims, data: out as unknown as Tensor["data"] };
}

/**
 * The shape numpy broadcasting gives two shapes (the shorter padded with leading 1s), or undefined
 * when a dim differs and neither is 1.
 *
 * @param a One shape.
 * @param b The other.
 * @returns The broadcast shape, or undefined.
 *
 * @example Usage
 * ```ts
 * import { broadcastDims } from "@clipq/convert/const-fold";
 * import assert from "node:assert/strict";
 * assert.deepEqual(broadcastDims([2, 1], [3]), [2, 3]);
 * assert.equal(broadcastDims([2], [3]), undefined);
 * ```
 */
export function broadcastDims(
  a: readonly number[],
  b: readonly number[],
): number[] | undefined {
  const rank = Math.max(a.length, b.length);
  const pa = [...new Array(rank - a.length).fill(1), ...a];
  const pb = [...new Array(rank - b.length).fill(1), ...b];
  if (pa.some((d, i) => d !== pb[i] && d !== 1 && pb[i] !== 1)) return undefined;
  return pa.map((d, i) => (d === 1 ? pb[i]! : d));
}

/**
 * Elementwise binary operation with numpy broadcasting on constants.
 *
 * @param a Left operand.
 * @param b Right operand.
 * @param f The operation on numbers.
 * @returns A tensor of a's dtype.
 *
 * @example Usage
 * ```ts
 * import { broadcastBinary } from "@clipq/convert/const-fold";
 * import { float32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const t = broadcastBinary(float32([2, 1], [1, 2]), float32([3], [10, 20, 30]), (x, y) => x + y);
 * assert.deepEqual([...t.data], [11, 21, 31, 12, 22, 32]);
 * ```
 */
export function broadcastBinary(a: Tensor, b: Tensor, f: (x: number, y: number) => number): Tensor {
  const dims = broadcastDims(a.dims, b.dims);
  if (!dims) throw new ModelError(`Cannot broadcast shapes [${a.dims}] and [${b.dims}]`);
  const rank = dims.length;
  const ad = [...new Array(rank - a.dims.length).fill(1), ...a.dims];
  const bd = [...new Array(rank - b.dims.length).fill(1), ...b.dims];
  const av = toFloat64(a);
  const bv = toFloat64(b);
  const as = stridesOf(ad).map((s, i) => (ad[i] === 1 ? 0 : s));
  const bs = stridesOf(bd).map((s, i) => (bd[i] === 1 ? 0 : s));
  const out = new Float64Array(sizeOf(dims));
  forEachIndex(dims, (idx, i) => {
    let ao = 0;
    let bo = 0;
    for (let k = 0; k < rank; k++) {
      ao += idx[k]! * as[k]!;
      bo += idx[k]! * bs[k]!;
    }
    out[i] = f(av[ao]!, bv[bo]!);
  });
  return fromNumbers(a.dtype, dims, out);
}

/**
 * Concatenates constant tensors along an axis.
 *
 * @param parts Tensors of equal rank and dtype.
 * @param axis Non-negative axis.
 * @returns The concatenation.
 *
 * @example Usage
 * ```ts
 * import { concatConst } from "@clipq/convert/const-fold";
 * import { int64 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * assert.deepEqual([...concatConst([int64([1], [1]), int64([2], [2, 3])], 0).data], [1n, 2n, 3n]);
 * ```
 */
export function concatConst(parts: readonly Tensor[], axis: number): Tensor {
  const first = parts[0]!;
  const dims = [...first.dims];
  dims[axis] = parts.reduce((s, p) => s + p.dims[axis]!, 0);
  const outer = sizeOf(first.dims.slice(0, axis));
  const values: number[] = [];
  const vals = parts.map(toFloat64);
  for (let o = 0; o < outer; o++) {
    parts.forEach((p, pi) => {
      const inner = sizeOf(p.dims.slice(axis));
      const v = vals[pi]!;
      for (let i = 0; i < inner; i++) values.push(v[o * inner + i]!);
    });
  }
  return fromNumbers(first.dtype, dims, values);
}

/**
 * Repeats a constant tensor to a larger shape: each output index reads the input at that index
 * modulo the input's dims (Tile when each target dim is a multiple, broadcasting of size-1 dims).
 *
 * @param t The tensor (of the target's rank or lower; missing leading dims count as 1).
 * @param shape Target dims.
 * @returns The repeated tensor.
 *
 * @example Usage
 * ```ts
 * import { repeatConst } from "@clipq/convert/const-fold";
 * import { int64 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * assert.deepEqual([...repeatConst(int64([2], [1, 2]), [2, 4]).data], [1n, 2n, 1n, 2n, 1n, 2n, 1n, 2n]);
 * ```
 */
export function repeatConst(t: Tensor, shape: readonly number[]): Tensor {
  const own = [...new Array(shape.length - t.dims.length).fill(1), ...t.dims];
  const inStrides = stridesOf(own);
  const v = toFloat64(t);
  const values = new Float64Array(sizeOf(shape));
  forEachIndex(shape, (idx, i) => {
    let at = 0;
    for (let k = 0; k < shape.length; k++) at += (idx[k]! % own[k]!) * inStrides[k]!;
    values[i] = v[at]!;
  });
  return fromNumbers(t.dtype, shape, values);
}

/**
 * Gathers along axis 0 of a constant tensor.
 *
 * @param params The tensor.
 * @param indices Indices (negative counts from the end).
 * @returns The gathered tensor.
 *
 * @example Usage
 * ```ts
 * import { gatherConst } from "@clipq/convert/const-fold";
 * import { int64 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * assert.deepEqual([...gatherConst(int64([3], [5, 6, 7]), int64([2], [2, -3])).data], [7n, 5n]);
 * ```
 */
export function gatherConst(params: Tensor, indices: Tensor): Tensor {
  const idx = toFloat64(indices);
  const inner = sizeOf(params.dims.slice(1));
  const v = toFloat64(params);
  const values: number[] = [];
  for (const raw of idx) {
    const i = raw < 0 ? raw + params.dims[0]! : raw;
    if (i < 0 || i >= params.dims[0]!) {
      throw new ModelError(`Gather index ${raw} out of range for dims [${params.dims}]`);
    }
    for (let k = 0; k < inner; k++) values.push(v[i * inner + k]!);
  }
  return fromNumbers(params.dtype, [...indices.dims, ...params.dims.slice(1)], values);
}

/**
 * Reshapes a constant (resolving one -1).
 *
 * @param t The tensor.
 * @param shape New shape.
 * @returns The reshaped tensor (shares data).
 *
 * @example Usage
 * ```ts
 * import { reshapeConst } from "@clipq/convert/const-fold";
 * import { float32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * assert.deepEqual(reshapeConst(float32([4], [1, 2, 3, 4]), [2, -1]).dims, [2, 2]);
 * ```
 */
export function reshapeConst(t: Tensor, shape: readonly number[]): Tensor {
  return { dtype: t.dtype, dims: resolveShape(t.dims, shape), data: t.data };
}

/**
 * Resolves a TensorFlow/ONNX reshape target (-1 inferred; 0 copies the input dim only when `zeroCopies`).
 *
 * @param from Input dims.
 * @param shape Target with -1/0 markers.
 * @param zeroCopies ONNX semantics for 0.
 * @returns Concrete dims.
 *
 * @example Usage
 * ```ts
 * import { resolveShape } from "@clipq/convert/const-fold";
 * import assert from "node:assert/strict";
 * assert.deepEqual(resolveShape([2, 3, 4], [0, -1], true), [2, 12]);
 * ```
 */
export function resolveShape(
  from: readonly number[],
  shape: readonly number[],
  zeroCopies = false,
): number[] {
  const dims = shape.map((d, i) => (zeroCopies && d === 0 ? from[i]! : d));
  const total = sizeOf(from);
  const known = dims.reduce((s, d) => (d === -1 ? s : s * d), 1);
  const unknown = dims.filter((d) => d === -1).length;
  if (unknown > 1) throw new ModelError(`Reshape target [${shape}] has more than one -1`);
  if (unknown === 1) {
    if (known === 0 || total % known !== 0) {
      throw new ModelError(`Cannot reshape [${from}] (${total} elements) to [${shape}]`);
    }
    return dims.map((d) => (d === -1 ? total / known : d));
  }
  if (known !== total) {
    throw new ModelError(`Cannot reshape [${from}] (${total} elements) to [${shape}]`);
  }
  return dims;
}

/**
 * Strided slice of a constant tensor: along each axis, `lens[i]` elements from `begin[i]` in
 * steps of `strides[i]` (negative steps walk backwards).
 *
 * @param t The tensor.
 * @param begin First index per axis (non-negative).
 * @param lens Output length per axis.
 * @param strides Step per axis.
 * @returns The slice, of dims `lens`.
 *
 * @example Every other column of the last row
 * ```ts
 * import { sliceConst } from "@clipq/convert/const-fold";
 * import { int64 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const t = sliceConst(int64([2, 3], [1, 2, 3, 4, 5, 6]), [1, 0], [1, 2], [1, 2]);
 * assert.deepEqual([...t.data], [4n, 6n]);
 * ```
 */
export function sliceConst(
  t: Tensor,
  begin: readonly number[],
  lens: readonly number[],
  strides: readonly number[],
): Tensor {
  const inStrides = stridesOf(t.dims);
  const v = toFloat64(t);
  const values = new Float64Array(sizeOf(lens));
  forEachIndex(lens, (idx, i) => {
    let at = 0;
    for (let k = 0; k < lens.length; k++) at += (begin[k]! + idx[k]! * strides[k]!) * inStrides[k]!;
    values[i] = v[at]!;
  });
  return fromNumbers(t.dtype, lens, values);
}

/**
 * Reduces a constant tensor over some axes: each output element is `reducer` of the input values
 * that map to it, in row-major order (so over one axis, in that axis's order).
 *
 * @param t The tensor.
 * @param axes Non-negative axes to reduce.
 * @param options `keepDims` keeps the reduced axes as 1s; `dtype` of the result (default t's).
 * @returns The reduction.
 *
 * @example Row sums, and the index of each column's largest value (ArgMax)
 * ```ts
 * import { reduceConst } from "@clipq/convert/const-fold";
 * import { float32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const t = float32([2, 3], [1, 5, 3, 4, 2, 6]);
 * const sum = (v: number[]) => v.reduce((a, b) => a + b, 0);
 * assert.deepEqual([...reduceConst(t, [1], { reducer: sum }).data], [9, 12]);
 * const argMax = (v: number[]) => v.indexOf(Math.max(...v));
 * assert.deepEqual([...reduceConst(t, [0], { reducer: argMax, dtype: "int32" }).data], [1, 0, 1]);
 * ```
 */
export function reduceConst(
  t: Tensor,
  axes: readonly number[],
  options: { reducer: (values: number[]) => number; keepDims?: boolean; dtype?: DType },
): Tensor {
  const kept = t.dims.map((d, i) => (axes.includes(i) ? 1 : d));
  const groups: number[][] = Array.from({ length: sizeOf(kept) }, () => []);
  const outStrides = stridesOf(kept);
  const v = toFloat64(t);
  forEachIndex(t.dims, (idx, i) => {
    let at = 0;
    for (let k = 0; k < idx.length; k++) if (kept[k] !== 1) at += idx[k]! * outStrides[k]!;
    groups[at]!.push(v[i]!);
  });
  const dims = options.keepDims ? kept : t.dims.filter((_, i) => !axes.includes(i));
  return fromNumbers(options.dtype ?? t.dtype, dims, groups.map(options.reducer));
}

/**
 * GatherNd (TensorFlow, ONNX GatherND with batch_dims 0) of constants: the last axis of
 * `indices` addresses the leading axes of `params`; what those leave is copied whole.
 *
 * @param params The tensor read.
 * @param indices Integer indices `[..., k]`, k ≤ rank of params.
 * @returns A tensor of dims `indices.dims[:-1] + params.dims[k:]`.
 * @throws {ModelError} When an index is out of range.
 *
 * @example Two rows of a matrix, then one element
 * ```ts
 * import { gatherNdConst } from "@clipq/convert/const-fold";
 * import { float32, int64 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const m = float32([2, 2], [1, 2, 3, 4]);
 * assert.deepEqual([...gatherNdConst(m, int64([2, 1], [1, 0])).data], [3, 4, 1, 2]);
 * assert.deepEqual([...gatherNdConst(m, int64([1, 2], [1, 0])).data], [3]);
 * ```
 */
export function gatherNdConst(params: Tensor, indices: Tensor): Tensor {
  const k = indices.dims[indices.dims.length - 1] ?? 0;
  if (k > params.dims.length) {
    throw new ModelError(
      `GatherNd: expected index tuples of at most ${params.dims.length} values (the rank of [${params.dims}]) but found ${k}`,
    );
  }
  const inner = sizeOf(params.dims.slice(k));
  const strides = stridesOf(params.dims);
  const idx = toFloat64(indices);
  const v = toFloat64(params);
  const values: number[] = [];
  for (let r = 0; r < sizeOf(indices.dims.slice(0, -1)); r++) {
    let at = 0;
    for (let a = 0; a < k; a++) {
      const raw = idx[r * k + a]!;
      if (raw < 0 || raw >= params.dims[a]!) {
        throw new ModelError(`GatherNd index ${raw} out of range for dims [${params.dims}]`);
      }
      at += raw * strides[a]!;
    }
    for (let i = 0; i < inner; i++) values.push(v[at + i]!);
  }
  return fromNumbers(params.dtype, [...indices.dims.slice(0, -1), ...params.dims.slice(k)], values);
}
