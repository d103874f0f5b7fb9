/**
 * Static shape and dtype inference for the ops clipq's models use, with constant folding of the
 * small integer subgraphs exporters emit to compute shapes (Shape → Gather/Slice → Unsqueeze →
 * Concat → Reshape). Symbolic dims stay strings; what cannot be known is null. Ops it does not know
 * get null dtype and shape (value_info, if the graph has it, fills in); use
 * `inferShapesByRunning` from @clipq/runtime when a model needs more.
 *
 * @module
 */
import { ConfigError, ModelError } from "./errors.ts";
import {
  attrFloat,
  attrFloats,
  attrInt,
  attrInts,
  attrString,
  type Dim,
  type Graph,
  type Node,
  type ValueInfo,
} from "./graph.ts";
import { type DType, dtypeFromCode, type Tensor, toFloat64 } from "./tensor.ts";

/** What inference knows about one tensor. */
export interface ShapeInfo {
  /** Element type, or null when unknown. */
  readonly dtype: DType | null;
  /** Shape (dims may be symbolic strings or null), or null when even the rank is unknown. */
  readonly shape: readonly Dim[] | null;
}

/** Options of {@linkcode inferShapes}. */
export interface InferShapesOptions {
  /** Shapes of graph inputs that replace the declared ones (e.g. fix a dynamic batch). */
  inputShapes?: Readonly<Record<string, readonly Dim[]>>;
}

/** Defaults of {@linkcode InferShapesOptions}. */
export const defaults = { inputShapes: {} } satisfies InferShapesOptions;

/** Tensors with at most this many elements have their values tracked for folding. */
const MAX_FOLD = 4096;

type Values = readonly Dim[];

interface State {
  readonly info: Map<string, ShapeInfo>;
  /** Flattened element values of small tensors (numbers; strings for symbolic dims; null unknown). */
  readonly values: Map<string, Values>;
  readonly opset: number;
  readonly declared: ReadonlyMap<string, ValueInfo>;
}

const UNKNOWN: ShapeInfo = { dtype: null, shape: null };

const UNARY_SAME = new Set([
  "Relu",
  "LeakyRelu",
  "Sigmoid",
  "HardSigmoid",
  "HardSwish",
  "Tanh",
  "Exp",
  "Log",
  "Sqrt",
  "Abs",
  "Neg",
  "Floor",
  "Ceil",
  "Round",
  "Erf",
  "Softplus",
  "Softsign",
  "Elu",
  "Selu",
  "Celu",
  "ThresholdedRelu",
  "Clip",
  "Identity",
  "Softmax",
  "LogSoftmax",
  "Hardmax",
  "InstanceNormalization",
  "GroupNormalization",
  "LRN",
  "Reciprocal",
  "Sin",
  "Cos",
  "Mish",
  "Gelu",
  "Sign",
  "Not",
  "LpNormalization",
  "MeanVarianceNormalization",
]);

const BROADCAST_SAME = new Set([
  "Add",
  "Sub",
  "Mul",
  "Div",
  "Pow",
  "Max",
  "Min",
  "Sum",
  "Mean",
  "Mod",
  "PRelu",
  "BitShift",
]);

const BROADCAST_BOOL = new Set([
  "Equal",
  "Less",
  "Greater",
  "LessOrEqual",
  "GreaterOrEqual",
  "And",
  "Or",
  "Xor",
]);

const REDUCE = new Set([
  "ReduceMean",
  "ReduceSum",
  "ReduceMax",
  "ReduceMin",
  "ReduceProd",
  "ReduceL1",
  "ReduceL2",
  "ReduceLogSum",
  "ReduceLogSumExp",
  "ReduceSumSquare",
]);

const POOL = new Set(["MaxPool", "AveragePool", "LpPool"]);

/** The broadcast of two dims (numpy rules), or null when it cannot be known. */
function broadcastDim(a: Dim, b: Dim): Dim {
  if (a === 1) return b;
  if (b === 1) return a;
  if (a === b) return a;
  if (typeof a === "number" && typeof b !== "number") return a;
  if (typeof b === "number" && typeof a !== "number") return b;
  return null;
}

function broadcast(shapes: readonly (readonly Dim[] | null)[]): Dim[] | null {
  let out: Dim[] = [];
  for (const s of shapes) {
    if (!s) return null;
    const n = Math.max(out.length, s.length);
    const next: Dim[] = [];
    for (let i = 0; i < n; i++) {
      // Missing leading dims are 1; a present null stays unknown (so no `??` here).
      const ia = out.length - n + i;
      const ib = s.length - n + i;
      const a = ia >= 0 ? out[ia]! : 1;
      const b = ib >= 0 ? s[ib]! : 1;
      next.push(broadcastDim(a, b));
    }
    out = next;
  }
  return out;
}

function product(dims: readonly Dim[]): Dim {
  let n = 1;
  const symbols: string[] = [];
  for (const d of dims) {
    if (typeof d === "number") n *= d;
    else if (typeof d === "string") symbols.push(d);
    else return null;
  }
  if (symbols.length === 0) return n;
  // A lone symbol times 1 is still that symbol; anything else has no name.
  return symbols.length === 1 && n === 1 ? symbols[0]! : null;
}

function normAxis(axis: number, rank: number, node: Node): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) {
    throw new ModelError(
      `node "${node.name}" (${node.op}): expected axis in [${-rank}, ${
        rank - 1
      }] but found ${axis}`,
    );
  }
  return a;
}

function numbers(v: Values | undefined): number[] | undefined {
  if (!v || v.some((d) => typeof d !== "number")) return undefined;
  return v as number[];
}

function tensorValues(t: Tensor): Values | undefined {
  if (t.dtype === "string" || t.data.length > MAX_FOLD) return undefined;
  return [...toFloat64(t)];
}

/** Reads an int list given either as attribute (older opsets) or as constant input. */
function intsArg(
  s: State,
  node: Node,
  attr: string,
  inputIndex: number,
): number[] | null | undefined {
  const a = attrInts(node, attr);
  if (a) return [...a];
  const name = node.inputs[inputIndex];
  if (!name) return undefined;
  return numbers(s.values.get(name)) ?? null;
}

function convLike(
  input: number | string | null,
  k: number,
  stride: number,
  dilation: number,
  padBegin: number,
  padEnd: number,
  autoPad: string,
  ceil: boolean,
): Dim {
  if (typeof input !== "number") return null;
  const eff = (k - 1) * dilation + 1;
  if (autoPad === "SAME_UPPER" || autoPad === "SAME_LOWER") return Math.ceil(input / stride);
  if (autoPad === "VALID") return Math.floor((input - eff) / stride) + 1;
  const span = input + padBegin + padEnd - eff;
  if (!ceil) return Math.floor(span / stride) + 1;
  let out = Math.ceil(span / stride) + 1;
  // The last window must start inside the input or its leading padding (onnxruntime's rule).
  if ((out - 1) * stride >= input + padBegin) out--;
  return out;
}

function spatial(
  node: Node,
  x: readonly Dim[],
  kernel: readonly number[],
  ceil: boolean,
): Dim[] {
  const r = kernel.length;
  const strides = attrInts(node, "strides") ?? kernel.map(() => 1);
  const dil = attrInts(node, "dilations") ?? kernel.map(() => 1);
  const pads = attrInts(node, "pads") ?? new Array<number>(2 * r).fill(0);
  const autoPad = attrString(node, "auto_pad", "NOTSET");
  return kernel.map((k, i) =>
    convLike(
      x[2 + i] ?? null,
      k,
      strides[i] ?? 1,
      dil[i] ?? 1,
      pads[i] ?? 0,
      pads[i + r] ?? 0,
      autoPad,
      ceil,
    )
  );
}

function sliceDim(
  dim: Dim,
  start: number,
  end: number,
  step: number,
): Dim {
  // The result depends on the dim (clamping) unless it is known.
  if (typeof dim !== "number") return null;
  const clamp = (v: number, lo: number, hi: number) => Math.min(Math.max(v, lo), hi);
  let s = start < 0 ? start + dim : start;
  let e = end < 0 ? end + dim : end;
  if (step > 0) {
    s = clamp(s, 0, dim);
    e = clamp(e, 0, dim);
    return Math.max(0, Math.ceil((e - s) / step));
  }
  s = clamp(s, 0, dim - 1);
  e = clamp(e, -1, dim - 1);
  return Math.max(0, Math.ceil((e - s) / step));
}

function sliceIndices(dim: number, start: number, end: number, step: number): number[] {
  const clamp = (v: number, lo: number, hi: number) => Math.min(Math.max(v, lo), hi);
  let s = start < 0 ? start + dim : start;
  let e = end < 0 ? end + dim : end;
  const out: number[] = [];
  if (step > 0) {
    s = clamp(s, 0, dim);
    e = clamp(e, 0, dim);
    for (let i = s; i < e; i += step) out.push(i);
  } else {
    s = clamp(s, 0, dim - 1);
    e = clamp(e, -1, dim - 1);
    for (let i = s; i > e; i += step) out.push(i);
  }
  return out;
}

function arith(op: string, a: Dim, b: Dim, integer: boolean): Dim {
  if (typeof a !== "number" || typeof b !== "number") {
    // x·1, x+0 keep a symbolic dim.
    if ((op === "Mul" && b === 1) || ((op === "Add" || op === "Sub") && b === 0)) return a;
    if ((op === "Mul" && a === 1) || (op === "Add" && a === 0)) return b;
    if (op === "Div" && b === 1) return a;
    return null;
  }
  switch (op) {
    case "Add":
      return a + b;
    case "Sub":
      return a - b;
    case "Mul":
      return a * b;
    case "Div":
      return integer ? Math.trunc(a / b) : a / b;
    case "Max":
      return Math.max(a, b);
    case "Min":
      return Math.min(a, b);
    case "Mod":
      return a - Math.floor(a / b) * b;
    case "Pow":
      return a ** b;
    default:
      return null;
  }
}

const INTEGER: ReadonlySet<DType> = new Set([
  "int8",
  "uint8",
  "int16",
  "uint16",
  "int32",
  "uint32",
  "int64",
  "uint64",
]);

/** Infers the outputs of one node; sets values where it can fold. */
function inferNode(s: State, node: Node): ShapeInfo[] {
  const get = (i: number): ShapeInfo => {
    const n = node.inputs[i];
    return n ? s.info.get(n) ?? UNKNOWN : UNKNOWN;
  };
  const val = (i: number): Values | undefined => {
    const n = node.inputs[i];
    return n ? s.values.get(n) : undefined;
  };
  const setVal = (v: Values | undefined, o = 0) => {
    const name = node.outputs[o];
    if (name && v && v.length <= MAX_FOLD) s.values.set(name, v);
  };
  const x = get(0);
  const xs = x.shape;
  const op = node.domain === "" || node.domain === "ai.onnx"
    ? node.op
    : `${node.domain}::${node.op}`;

  if (UNARY_SAME.has(op)) return [x];
  switch (op) {
    case "Dropout":
      return [x, { dtype: "bool", shape: xs }];
    case "BatchNormalization":
      return [x, get(3), get(4), get(3), get(4)];
    case "LayerNormalization":
      return [x, { dtype: "float32", shape: null }, { dtype: "float32", shape: null }];
    case "IsNaN":
    case "IsInf":
      return [{ dtype: "bool", shape: xs }];
    case "Constant": {
      const t = constantTensor(node);
      if (!t) return [UNKNOWN];
      setVal(tensorValues(t));
      return [{ dtype: t.dtype, shape: t.dims }];
    }
    case "ConstantOfShape": {
      const v = node.attributes.value;
      const dtype = v?.type === "tensor" ? v.value.dtype : "float32";
      const shape = val(0) ?? null;
      if (shape && v?.type === "tensor" && shape.every((d) => typeof d === "number")) {
        const n = (shape as number[]).reduce((a, b) => a * b, 1);
        const fill = tensorValues(v.value)?.[0];
        if (n <= MAX_FOLD && fill !== undefined) setVal(new Array(n).fill(fill));
      }
      return [{ dtype, shape: shape ? [...shape] : null }];
    }
    case "Shape": {
      if (!xs) return [{ dtype: "int64", shape: [null] }];
      const r = xs.length;
      let start = attrInt(node, "start", 0);
      let end = attrInt(node, "end", r);
      start = Math.min(Math.max(start < 0 ? start + r : start, 0), r);
      end = Math.min(Math.max(end < 0 ? end + r : end, 0), r);
      const v = xs.slice(start, Math.max(start, end));
      setVal(v);
      return [{ dtype: "int64", shape: [v.length] }];
    }
    case "Size": {
      const p = xs ? product(xs) : null;
      setVal([p]);
      return [{ dtype: "int64", shape: [] }];
    }
    case "Cast": {
      const to = attrInt(node, "to");
      const dtype = to === undefined ? null : dtypeFromCode(to);
      const v = val(0);
      if (v && dtype) {
        setVal(INTEGER.has(dtype) ? v.map((d) => typeof d === "number" ? Math.trunc(d) : d) : v);
      }
      return [{ dtype, shape: xs }];
    }
    case "CastLike":
      setVal(val(0));
      return [{ dtype: get(1).dtype, shape: xs }];
    case "Where": {
      return [{ dtype: get(1).dtype, shape: broadcast([xs, get(1).shape, get(2).shape]) }];
    }
    case "Expand": {
      const shape = val(1);
      return [{ dtype: x.dtype, shape: shape && xs ? broadcast([xs, shape]) : null }];
    }
    case "Tile": {
      const reps = numbers(val(1));
      if (!xs || !reps) return [{ dtype: x.dtype, shape: null }];
      return [{
        dtype: x.dtype,
        shape: xs.map((d, i) =>
          reps[i] === 1 ? d : typeof d === "number" ? d * (reps[i] ?? 1) : null
        ),
      }];
    }
    case "Conv":
    case "ConvInteger": {
      const w = get(1).shape;
      if (!xs || !w) return [{ dtype: op === "Conv" ? x.dtype : "int32", shape: null }];
      const kernel = attrInts(node, "kernel_shape") ??
        w.slice(2).map((d) => (typeof d === "number" ? d : NaN));
      return [{
        dtype: op === "Conv" ? x.dtype : "int32",
        shape: [xs[0] ?? null, w[0] ?? null, ...spatial(node, xs, kernel, false)],
      }];
    }
    case "QLinearConv": {
      const w = get(3).shape;
      const dtype = get(7).dtype ?? x.dtype;
      if (!xs || !w) return [{ dtype, shape: null }];
      const kernel = attrInts(node, "kernel_shape") ??
        w.slice(2).map((d) => (typeof d === "number" ? d : NaN));
      return [{ dtype, shape: [xs[0] ?? null, w[0] ?? null, ...spatial(node, xs, kernel, false)] }];
    }
    case "ConvTranspose": {
      const w = get(1).shape;
      if (!xs || !w) return [{ dtype: x.dtype, shape: null }];
      const group = attrInt(node, "group", 1);
      const m = typeof w[1] === "number" ? w[1] * group : null;
      const kernel = attrInts(node, "kernel_shape") ??
        w.slice(2).map((d) => (typeof d === "number" ? d : NaN));
      const r = kernel.length;
      const given = attrInts(node, "output_shape");
      if (given) {
        return [{ dtype: x.dtype, shape: [xs[0] ?? null, m, ...given.slice(-r)] }];
      }
      const strides = attrInts(node, "strides") ?? kernel.map(() => 1);
      const dil = attrInts(node, "dilations") ?? kernel.map(() => 1);
      const outPad = attrInts(node, "output_padding") ?? kernel.map(() => 0);
      const pads = attrInts(node, "pads") ?? new Array<number>(2 * r).fill(0);
      const autoPad = attrString(node, "auto_pad", "NOTSET");
      const sp = kernel.map((k, i): Dim => {
        const d = xs[2 + i];
        if (typeof d !== "number") return null;
        const st = strides[i] ?? 1;
        if (autoPad === "SAME_UPPER" || autoPad === "SAME_LOWER") return d * st;
        const eff = (k - 1) * (dil[i] ?? 1) + 1;
        return st * (d - 1) + (outPad[i] ?? 0) + eff - (pads[i] ?? 0) - (pads[i + r] ?? 0);
      });
      return [{ dtype: x.dtype, shape: [xs[0] ?? null, m, ...sp] }];
    }
    case "GlobalAveragePool":
    case "GlobalMaxPool":
    case "GlobalLpPool":
      return [{
        dtype: x.dtype,
        shape: xs ? [...xs.slice(0, 2), ...xs.slice(2).map(() => 1)] : null,
      }];
    case "Gemm": {
      const a = xs;
      const b = get(1).shape;
      if (!a || !b) return [{ dtype: x.dtype, shape: null }];
      const m = attrInt(node, "transA", 0) ? a[1] : a[0];
      const n = attrInt(node, "transB", 0) ? b[0] : b[1];
      return [{ dtype: x.dtype, shape: [m ?? null, n ?? null] }];
    }
    case "MatMul":
    case "MatMulInteger":
    case "QLinearMatMul": {
      const bIndex = op === "QLinearMatMul" ? 3 : 1;
      const dtype = op === "MatMul"
        ? x.dtype
        : op === "MatMulInteger"
        ? "int32"
        : get(7).dtype ?? x.dtype;
      const a = xs;
      const b = get(bIndex).shape;
      if (!a || !b) return [{ dtype, shape: null }];
      const a2 = a.length === 1 ? [1, a[0]!] : a;
      const b2 = b.length === 1 ? [b[0]!, 1] : b;
      const batch = broadcast([a2.slice(0, -2), b2.slice(0, -2)]);
      if (!batch) return [{ dtype, shape: null }];
      const out: Dim[] = [...batch];
      if (a.length > 1) out.push(a2[a2.length - 2]!);
      if (b.length > 1) out.push(b2[b2.length - 1]!);
      return [{ dtype, shape: out }];
    }
    case "Concat": {
      const ins = node.inputs.map((_, i) => get(i));
      const shapes = ins.map((i) => i.shape);
      const dtype = ins.find((i) => i.dtype)?.dtype ?? null;
      const first = shapes.find((sh) => sh);
      if (!first || shapes.some((sh) => !sh)) return [{ dtype, shape: null }];
      const axis = normAxis(attrInt(node, "axis", 0), first.length, node);
      const out = [...first];
      let sum: Dim = 0;
      for (const sh of shapes as (readonly Dim[])[]) {
        const d = sh[axis] ?? null;
        sum = typeof sum === "number" && typeof d === "number"
          ? sum + d
          : arith("Add", sum, d, true);
      }
      out[axis] = sum;
      for (let i = 0; i < out.length; i++) {
        if (i !== axis) {
          out[i] = shapes.map((sh) => sh![i] ?? null).reduce((a, b) =>
            a === b ? a : (typeof a === "number" ? a : b)
          );
        }
      }
      if (first.length === 1 || (first.length === 0)) {
        const vs = node.inputs.map((_, i) => val(i));
        if (vs.every((v) => v)) setVal(vs.flatMap((v) => [...v!]));
      }
      return [{ dtype, shape: out }];
    }
    case "Reshape": {
      const target = val(1);
      if (!target) {
        const len = get(1).shape?.[0];
        return [{
          dtype: x.dtype,
          shape: typeof len === "number" ? new Array<Dim>(len).fill(null) : null,
        }];
      }
      const allowZero = attrInt(node, "allowzero", 0) === 1;
      const out: Dim[] = target.map((d, i) =>
        d === 0 && !allowZero ? (xs?.[i] ?? null) : d === -1 ? -1 : d
      );
      const minus = out.indexOf(-1);
      if (minus >= 0) {
        out[minus] = xs ? quotient(xs, out.filter((_, i) => i !== minus)) : null;
      }
      setVal(val(0));
      return [{ dtype: x.dtype, shape: out }];
    }
    case "Flatten": {
      if (!xs) return [{ dtype: x.dtype, shape: [null, null] }];
      const axis = attrInt(node, "axis", 1);
      const a = axis < 0 ? axis + xs.length : axis;
      return [{ dtype: x.dtype, shape: [product(xs.slice(0, a)), product(xs.slice(a))] }];
    }
    case "Transpose": {
      if (!xs) return [{ dtype: x.dtype, shape: null }];
      const perm = attrInts(node, "perm") ?? xs.map((_, i) => xs.length - 1 - i);
      return [{ dtype: x.dtype, shape: perm.map((p) => xs[p] ?? null) }];
    }
    case "Squeeze": {
      const axes = intsArg(s, node, "axes", 1);
      if (!xs || axes === null) return [{ dtype: x.dtype, shape: null }];
      const drop = axes === undefined
        ? xs.map((d, i) => (d === 1 ? i : -1)).filter((i) => i >= 0)
        : axes.map((a) => normAxis(a, xs.length, node));
      if (axes === undefined && xs.some((d) => typeof d !== "number")) {
        return [{ dtype: x.dtype, shape: null }];
      }
      setVal(val(0));
      return [{ dtype: x.dtype, shape: xs.filter((_, i) => !drop.includes(i)) }];
    }
    case "Unsqueeze": {
      const axes = intsArg(s, node, "axes", 1);
      if (!xs || !axes) return [{ dtype: x.dtype, shape: null }];
      const r = xs.length + axes.length;
      const at = new Set(axes.map((a) => normAxis(a, r, node)));
      const out: Dim[] = [];
      let j = 0;
      for (let i = 0; i < r; i++) out.push(at.has(i) ? 1 : xs[j++] ?? null);
      setVal(val(0));
      return [{ dtype: x.dtype, shape: out }];
    }
    case "Slice": {
      if (!xs) return [{ dtype: x.dtype, shape: null }];
      const starts = intsArg(s, node, "starts", 1);
      const ends = intsArg(s, node, "ends", 2);
      const axes = intsArg(s, node, "axes", 3) ??
        (node.inputs[3] ? null : starts?.map((_, i) => i));
      const steps = intsArg(s, node, "steps", 4) ??
        (node.inputs[4] ? null : starts?.map(() => 1));
      if (!starts || !ends || !axes || !steps) {
        return [{ dtype: x.dtype, shape: xs.map(() => null) }];
      }
      const out: Dim[] = [...xs];
      const picks: (number[] | null)[] = xs.map(() => null);
      axes.forEach((a, i) => {
        const ax = normAxis(a, xs.length, node);
        out[ax] = sliceDim(xs[ax] ?? null, starts[i]!, ends[i]!, steps[i]!);
        const d = xs[ax];
        if (typeof d === "number") picks[ax] = sliceIndices(d, starts[i]!, ends[i]!, steps[i]!);
      });
      const v = val(0);
      if (v && xs.length === 1) {
        const p = picks[0];
        setVal(p ? p.map((i) => v[i] ?? null) : undefined);
      }
      return [{ dtype: x.dtype, shape: out }];
    }
    case "Split": {
      if (!xs) return node.outputs.map(() => ({ dtype: x.dtype, shape: null }));
      const axis = normAxis(attrInt(node, "axis", 0), xs.length, node);
      const sizes = intsArg(s, node, "split", 1);
      const d = xs[axis];
      const k = node.outputs.length;
      return node.outputs.map((_, i) => {
        const out = [...xs];
        if (sizes) out[axis] = sizes[i] ?? null;
        else if (sizes === null) out[axis] = null;
        else if (typeof d === "number") {
          const chunk = Math.ceil(d / k);
          out[axis] = i < k - 1 ? chunk : d - chunk * (k - 1);
        } else out[axis] = null;
        return { dtype: x.dtype, shape: out };
      });
    }
    case "Pad": {
      if (!xs) return [{ dtype: x.dtype, shape: null }];
      const pads = intsArg(s, node, "pads", 1);
      if (!pads) return [{ dtype: x.dtype, shape: xs.map(() => null) }];
      const axesIn = node.inputs[3] ? numbers(val(3)) : undefined;
      if (node.inputs[3] && !axesIn) return [{ dtype: x.dtype, shape: xs.map(() => null) }];
      const axes = axesIn?.map((a) => normAxis(a, xs.length, node)) ?? xs.map((_, i) => i);
      const out = [...xs];
      axes.forEach((a, i) => {
        const d = xs[a];
        const add = (pads[i] ?? 0) + (pads[i + axes.length] ?? 0);
        out[a] = typeof d === "number" ? d + add : add === 0 ? d ?? null : null;
      });
      return [{ dtype: x.dtype, shape: out }];
    }
    case "Upsample":
    case "Resize": {
      if (!xs) return [{ dtype: x.dtype, shape: null }];
      let scales: number[] | undefined;
      let sizes: number[] | undefined;
      if (op === "Upsample") {
        scales = attrFloats(node, "scales")?.slice() ?? numbers(val(1));
      } else if (s.opset < 11 && node.inputs.length === 2) {
        scales = numbers(val(1));
      } else {
        const sc = node.inputs[2] ? numbers(val(2)) : undefined;
        if (sc && sc.length > 0) scales = sc;
        const sz = node.inputs[3] ? numbers(val(3)) : undefined;
        if (sz && sz.length > 0) sizes = sz;
      }
      const axes = attrInts(node, "axes");
      const rankAxes = axes?.map((a) => normAxis(a, xs.length, node)) ?? xs.map((_, i) => i);
      const out: Dim[] = [...xs];
      const policy = attrString(node, "keep_aspect_ratio_policy", "stretch");
      if (sizes && policy !== "stretch") {
        // Resize-18: one scale for all the axes, the smallest (not_larger) or the largest
        // (not_smaller) of sizes/input; each axis rounds its own scaled size (half up, as ORT).
        const ins = rankAxes.map((a) => xs[a]);
        const ratios = ins.map((d, i) => typeof d === "number" ? sizes![i]! / d : NaN);
        const scale = policy === "not_larger" ? Math.min(...ratios) : Math.max(...ratios);
        rankAxes.forEach((a, i) => {
          const d = ins[i];
          out[a] = Number.isFinite(scale) && typeof d === "number" ? Math.round(scale * d) : null;
        });
      } else if (sizes) rankAxes.forEach((a, i) => (out[a] = sizes![i] ?? null));
      else if (scales) {
        rankAxes.forEach((a, i) => {
          const d = xs[a];
          const f = scales![i] ?? 1;
          out[a] = f === 1 ? d ?? null : typeof d === "number" ? Math.floor(d * f) : null;
        });
      } else return [{ dtype: x.dtype, shape: xs.map(() => null) }];
      return [{ dtype: x.dtype, shape: out }];
    }
    case "Gather": {
      const idx = get(1);
      if (!xs || !idx.shape) return [{ dtype: x.dtype, shape: null }];
      const axis = normAxis(attrInt(node, "axis", 0), xs.length, node);
      const shape = [...xs.slice(0, axis), ...idx.shape, ...xs.slice(axis + 1)];
      const v = val(0);
      const iv = numbers(val(1));
      if (v && iv && xs.length === 1 && typeof xs[0] === "number") {
        const n = xs[0];
        setVal(iv.map((i) => v[i < 0 ? i + n : i] ?? null));
      }
      return [{ dtype: x.dtype, shape }];
    }
    case "GatherElements":
      return [{ dtype: x.dtype, shape: get(1).shape }];
    case "ArgMax":
    case "ArgMin": {
      if (!xs) return [{ dtype: "int64", shape: null }];
      const axis = normAxis(attrInt(node, "axis", 0), xs.length, node);
      const keep = attrInt(node, "keepdims", 1) === 1;
      return [{
        dtype: "int64",
        shape: keep ? xs.map((d, i) => (i === axis ? 1 : d)) : xs.filter((_, i) => i !== axis),
      }];
    }
    case "TopK": {
      const k = numbers(val(1))?.[0] ?? null;
      if (!xs) return [{ dtype: x.dtype, shape: null }, { dtype: "int64", shape: null }];
      const axis = normAxis(attrInt(node, "axis", -1), xs.length, node);
      const shape = xs.map((d, i) => (i === axis ? k : d));
      return [{ dtype: x.dtype, shape }, { dtype: "int64", shape }];
    }
    case "NonZero":
      return [{ dtype: "int64", shape: [xs ? xs.length : null, null] }];
    // Rows of (batch, class, box): as many as the boxes kept, which follows their values.
    case "NonMaxSuppression":
      return [{ dtype: "int64", shape: [null, 3] }];
    // One pooled map per RoI: [rois, C, h, w] (h, w default 1).
    case "RoiAlign":
    case "MaxRoiPool": {
      const rois = get(1).shape?.[0] ?? null;
      const [h, w] = op === "RoiAlign"
        ? [attrInt(node, "output_height", 1), attrInt(node, "output_width", 1)]
        : attrInts(node, "pooled_shape") ?? [null, null];
      return [{ dtype: x.dtype, shape: [rois, xs?.[1] ?? null, h ?? null, w ?? null] }];
    }
    case "Range": {
      const [a, b, d] = [0, 1, 2].map((i) => numbers(val(i))?.[0]);
      const n = a !== undefined && b !== undefined && d !== undefined
        ? Math.max(Math.ceil((b - a) / d), 0)
        : null;
      if (n !== null && n <= MAX_FOLD) setVal(Array.from({ length: n }, (_, i) => a! + i * d!));
      return [{ dtype: x.dtype, shape: [n] }];
    }
    case "DepthToSpace":
    case "SpaceToDepth": {
      if (!xs || xs.length !== 4) return [{ dtype: x.dtype, shape: null }];
      const b = attrInt(node, "blocksize", 1);
      const [n, c, h, w] = xs as [Dim, Dim, Dim, Dim];
      const num = (v: Dim, f: (q: number) => number): Dim => typeof v === "number" ? f(v) : null;
      return [{
        dtype: x.dtype,
        shape: op === "DepthToSpace"
          ? [n, num(c, (q) => q / (b * b)), num(h, (q) => q * b), num(w, (q) => q * b)]
          : [n, num(c, (q) => q * b * b), num(h, (q) => q / b), num(w, (q) => q / b)],
      }];
    }
    case "QuantizeLinear":
      return [{ dtype: get(2).dtype ?? "uint8", shape: xs }];
    case "DequantizeLinear":
      return [{ dtype: get(1).dtype ?? "float32", shape: xs }];
    case "DynamicQuantizeLinear":
      return [{ dtype: "uint8", shape: xs }, { dtype: "float32", shape: [] }, {
        dtype: "uint8",
        shape: [],
      }];
  }
  if (POOL.has(op)) {
    const kernel = attrInts(node, "kernel_shape");
    if (!xs || !kernel) return [{ dtype: x.dtype, shape: null }, { dtype: "int64", shape: null }];
    const shape = [
      xs[0] ?? null,
      xs[1] ?? null,
      ...spatial(node, xs, kernel, attrInt(node, "ceil_mode", 0) === 1),
    ];
    return [{ dtype: x.dtype, shape }, { dtype: "int64", shape }];
  }
  if (REDUCE.has(op)) {
    if (!xs) return [{ dtype: x.dtype, shape: null }];
    const axes = intsArg(s, node, "axes", 1);
    const keep = attrInt(node, "keepdims", 1) === 1;
    if (axes === null) return [{ dtype: x.dtype, shape: keep ? xs.map(() => null) : null }];
    const noop = attrInt(node, "noop_with_empty_axes", 0) === 1;
    if ((axes === undefined || axes.length === 0) && noop) return [x];
    const set = new Set(
      axes && axes.length > 0 ? axes.map((a) => normAxis(a, xs.length, node)) : xs.map((_, i) => i),
    );
    return [{
      dtype: x.dtype,
      shape: keep ? xs.map((d, i) => (set.has(i) ? 1 : d)) : xs.filter((_, i) => !set.has(i)),
    }];
  }
  if (BROADCAST_SAME.has(op) || BROADCAST_BOOL.has(op)) {
    const ins = node.inputs.map((_, i) => get(i));
    const shape = broadcast(ins.map((i) => i.shape));
    const dtype = BROADCAST_BOOL.has(op) ? "bool" : ins[0]?.dtype ?? null;
    if (node.inputs.length === 2 && dtype && (INTEGER.has(dtype) || dtype === "float32")) {
      const a = val(0);
      const b = val(1);
      if (
        a && b && shape && shape.length <= 1 &&
        (a.length === b.length || a.length === 1 || b.length === 1)
      ) {
        const n = Math.max(a.length, b.length);
        const r: Dim[] = [];
        for (let i = 0; i < n; i++) {
          r.push(
            arith(
              op,
              a[a.length === 1 ? 0 : i] ?? null,
              b[b.length === 1 ? 0 : i] ?? null,
              dtype !== "float32",
            ),
          );
        }
        setVal(r);
      }
    }
    return [{ dtype, shape }];
  }
  return node.outputs.map(() => UNKNOWN);
}

/**
 * The dim a Reshape's -1 stands for: the input's element count over the other target dims, with
 * symbols that appear on both sides cancelled; null when not a plain number or single symbol.
 */
function quotient(input: readonly Dim[], known: readonly Dim[]): Dim {
  if (input.includes(null) || known.includes(null)) return null;
  const inSyms = input.filter((d): d is string => typeof d === "string");
  const outSyms: string[] = [];
  for (const d of known) {
    if (typeof d !== "string") continue;
    const i = inSyms.indexOf(d);
    if (i >= 0) inSyms.splice(i, 1);
    else outSyms.push(d);
  }
  if (outSyms.length > 0) return null;
  const inNum = (input.filter((d) => typeof d === "number") as number[]).reduce((a, b) => a * b, 1);
  const outNum = (known.filter((d) => typeof d === "number") as number[]).reduce(
    (a, b) => a * b,
    1,
  );
  if (outNum === 0) return null;
  const q = inNum / outNum;
  if (inSyms.length === 0) return Number.isInteger(q) ? q : null;
  return inSyms.length === 1 && q === 1 ? inSyms[0]! : null;
}

/** The tensor a Constant node holds, from whichever value_* attribute it uses. */
function constantTensor(node: Node): Tensor | undefined {
  const a = node.attributes;
  if (a.value?.type === "tensor") return a.value.value;
  const f = attrFloat(node, "value_float");
  if (a.value_float && f !== undefined) {
    return { dtype: "float32", dims: [], data: Float32Array.of(f) };
  }
  const fs = attrFloats(node, "value_floats");
  if (fs) return { dtype: "float32", dims: [fs.length], data: Float32Array.from(fs) };
  const i = attrInt(node, "value_int");
  if (i !== undefined) return { dtype: "int64", dims: [], data: BigInt64Array.of(BigInt(i)) };
  const is = attrInts(node, "value_ints");
  if (is) return { dtype: "int64", dims: [is.length], data: BigInt64Array.from(is, BigInt) };
  return undefined;
}

/**
 * Infers the dtype and shape of every tensor in a graph (inputs, initializers, node outputs),
 * visiting nodes in order (the graph should be topologically sorted). Where inference knows
 * nothing, value_info recorded in the graph is used.
 *
 * @param graph The graph.
 * @param options Input shapes to use instead of the declared ones.
 * @returns Tensor name → dtype and shape.
 * @throws {ConfigError} When `inputShapes` names a tensor that is not a graph input.
 * @throws {ModelError} When an axis attribute is out of range for its input's rank.
 *
 * @example Shapes through a Conv and a Reshape with a folded target shape
 * ```ts
 * import { inferShapes } from "@clipq/onnx/shapes";
 * import { emptyGraph, float32, int64, node } from "@clipq/onnx";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({
 *   nodes: [
 *     node({ name: "c", op: "Conv", inputs: ["x", "w"], outputs: ["y"], attributes: { pads: { type: "ints", value: [1, 1, 1, 1] } } }),
 *     node({ name: "s", op: "Shape", inputs: ["y"], outputs: ["s"] }),
 *     node({ name: "g", op: "Gather", inputs: ["s", "zero"], outputs: ["n"] }),
 *     node({ name: "u", op: "Unsqueeze", inputs: ["n", "zero1"], outputs: ["n1"] }),
 *     node({ name: "k", op: "Concat", inputs: ["n1", "minus1"], outputs: ["t"], attributes: { axis: { type: "int", value: 0 } } }),
 *     node({ name: "r", op: "Reshape", inputs: ["y", "t"], outputs: ["z"] }),
 *   ],
 *   initializers: new Map([
 *     ["w", float32([4, 3, 3, 3], new Float32Array(108))],
 *     ["zero", int64([], [0])],
 *     ["zero1", int64([1], [0])],
 *     ["minus1", int64([1], [-1])],
 *   ]),
 *   inputs: [{ name: "x", dtype: "float32", shape: ["batch", 3, 8, 8] }],
 *   outputs: [{ name: "z", dtype: "float32" }],
 * });
 * const shapes = inferShapes(g);
 * assert.deepEqual(shapes.get("y"), { dtype: "float32", shape: ["batch", 4, 8, 8] });
 * assert.deepEqual(shapes.get("z"), { dtype: "float32", shape: ["batch", 256] });
 * assert.deepEqual(inferShapes(g, { inputShapes: { x: [2, 3, 8, 8] } }).get("z")?.shape, [2, 256]);
 * ```
 */
export function inferShapes(
  graph: Graph,
  options: InferShapesOptions = {},
): Map<string, ShapeInfo> {
  const o: Required<InferShapesOptions> = { ...defaults, ...options };
  const inputNames = new Set(graph.inputs.map((v) => v.name));
  for (const name of Object.keys(o.inputShapes)) {
    if (!inputNames.has(name)) {
      throw new ConfigError(
        `inputShapes.${name}`,
        `expected the name of a graph input (${[...inputNames].join(", ")}) but found "${name}"`,
      );
    }
  }
  const declared = new Map<string, ValueInfo>();
  for (const v of [...graph.outputs, ...graph.valueInfo]) {
    if (v.dtype || v.shape) declared.set(v.name, v);
  }
  const s: State = {
    info: new Map(),
    values: new Map(),
    opset: graph.opsetImports.find((i) => i.domain === "" || i.domain === "ai.onnx")?.version ?? 13,
    declared,
  };
  for (const [name, t] of graph.initializers) {
    s.info.set(name, { dtype: t.dtype, shape: [...t.dims] });
    const v = tensorValues(t);
    if (v) s.values.set(name, v);
  }
  for (const v of graph.inputs) {
    if (graph.initializers.has(v.name) && !o.inputShapes[v.name]) continue;
    const shape = o.inputShapes[v.name] ?? v.shape;
    s.info.set(v.name, { dtype: v.dtype ?? null, shape: shape ? [...shape] : null });
  }
  for (const node of graph.nodes) {
    let outs: ShapeInfo[];
    try {
      outs = inferNode(s, node);
    } catch (e) {
      if (e instanceof ModelError) throw e;
      throw new ModelError(
        `node "${node.name}" (${node.op}): shape inference failed: ${
          e instanceof Error ? e.message : String(e)
        }`,
        { cause: e },
      );
    }
    node.outputs.forEach((name, i) => {
      if (!name) return;
      const got = outs[i] ?? UNKNOWN;
      const d = declared.get(name);
      s.info.set(name, {
        dtype: got.dtype ?? d?.dtype ?? null,
        shape: got.shape ? got.shape.map((v) => (Number.isNaN(v) ? null : v)) : d?.shape ?? null,
      });
    });
  }
  return s.info;
}

/**
 * Refreshes value_info from {@linkcode inferShapes}: every intermediate tensor gets its inferred
 * dtype and shape (entries inference cannot improve are kept when the tensor still exists, and
 * entries of tensors no longer in the graph are dropped); graph outputs lacking a dtype or shape get
 * the inferred one.
 *
 * @param graph The graph.
 * @param options Passed to {@linkcode inferShapes}.
 * @returns A new graph.
 *
 * @example Usage
 * ```ts
 * import { withValueInfo } from "@clipq/onnx/shapes";
 * import { emptyGraph, node } from "@clipq/onnx";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({
 *   nodes: [
 *     node({ name: "r", op: "Relu", inputs: ["x"], outputs: ["h"] }),
 *     node({ name: "p", op: "GlobalAveragePool", inputs: ["h"], outputs: ["y"] }),
 *   ],
 *   inputs: [{ name: "x", dtype: "float32", shape: [1, 8, 4, 4] }],
 *   outputs: [{ name: "y" }],
 * });
 * const out = withValueInfo(g);
 * assert.deepEqual(out.valueInfo, [{ name: "h", dtype: "float32", shape: [1, 8, 4, 4] }]);
 * assert.deepEqual(out.outputs, [{ name: "y", dtype: "float32", shape: [1, 8, 1, 1] }]);
 * ```
 */
export function withValueInfo(graph: Graph, options: InferShapesOptions = {}): Graph {
  const shapes = inferShapes(graph, options);
  const old = new Map(graph.valueInfo.map((v) => [v.name, v]));
  const skip = new Set([
    ...graph.inputs.map((v) => v.name),
    ...graph.outputs.map((v) => v.name),
    ...graph.initializers.keys(),
  ]);
  const valueInfo: ValueInfo[] = [];
  const seen = new Set<string>();
  for (const n of graph.nodes) {
    for (const name of n.outputs) {
      if (!name || skip.has(name) || seen.has(name)) continue;
      seen.add(name);
      const s = shapes.get(name);
      const prev = old.get(name);
      if (s?.dtype) {
        valueInfo.push({
          ...(prev?.docString ? { docString: prev.docString } : {}),
          name,
          dtype: s.dtype,
          ...(s.shape ? { shape: s.shape } : prev?.shape ? { shape: prev.shape } : {}),
        });
      } else if (prev) valueInfo.push(prev);
    }
  }
  const outputs = graph.outputs.map((v) => {
    const s = shapes.get(v.name);
    if (!s || v.opaqueType) return v;
    return {
      ...v,
      ...(v.dtype ? {} : s.dtype ? { dtype: s.dtype } : {}),
      ...(v.shape ? {} : s.shape ? { shape: s.shape } : {}),
    };
  });
  return { ...graph, valueInfo, outputs };
}

/**
 * Ops whose output length depends on input values, not only on input shapes (TopK too when its
 * k is not a constant).
 */
const VALUE_SHAPED = new Set([
  "NonMaxSuppression",
  "NonZero",
  "Unique",
  "Compress",
  "If",
  "Loop",
  "Scan",
]);

/**
 * Tensors whose shape may change from run to run whatever the input dims: the outputs of
 * {@linkcode VALUE_SHAPED} ops and everything computed from them (a two-stage detector's RoI
 * features after NonMaxSuppression). Declared value_info may still give them static dims — the
 * one length a traced export saw — which hold for no other run: calibration takes such tensors
 * whole, and value_info observed on one run leaves their dims unknown.
 *
 * @param graph The model.
 * @returns The names of such tensors.
 *
 * @example The boxes NMS keeps, and what is computed from them
 * ```ts
 * import { valueShaped } from "@clipq/onnx/shapes";
 * import { emptyGraph, node } from "@clipq/onnx";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({
 *   nodes: [
 *     node({ name: "nms", op: "NonMaxSuppression", inputs: ["boxes", "scores"], outputs: ["keep"] }),
 *     node({ name: "g", op: "Gather", inputs: ["flat", "keep"], outputs: ["kept"] }),
 *     node({ name: "r", op: "Relu", inputs: ["x"], outputs: ["y"] }),
 *   ],
 * });
 * assert.deepEqual([...valueShaped(g)], ["keep", "kept"]);
 * ```
 */
export function valueShaped(graph: Graph): Set<string> {
  const out = new Set<string>();
  for (const n of graph.nodes) {
    const k = n.op === "TopK" ? n.inputs[1] : undefined;
    if (
      VALUE_SHAPED.has(n.op) || (k !== undefined && !graph.initializers.has(k)) ||
      n.inputs.some((x) => x && out.has(x))
    ) { for (const o of n.outputs) if (o) out.add(o); }
  }
  return out;
}
