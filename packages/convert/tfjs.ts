/**
 * tfjs graph model → ONNX Graph. NHWC ops become NCHW ONNX ops wrapped in transposes, which
 * {@linkcode sinkTransposes} then cancels, so transposes remain only at the graph's boundaries.
 * Shape arithmetic on constants (SparseToDense, Pack, StridedSlice …) is folded at import.
 *
 * @module
 */
import {
  ConfigError,
  type Graph,
  ModelError,
  type Node,
  sizeOf,
  type Tensor,
  toFloat64,
  UnsupportedOpError,
} from "@clipq/onnx";
import { emptyGraph } from "@clipq/onnx/graph";
import { type DType, ONNX_DTYPE_CODES, tensor } from "@clipq/onnx/tensor";
import {
  broadcastBinary,
  broadcastDims,
  concatConst,
  fromNumbers,
  gatherConst,
  gatherNdConst,
  permute,
  reduceConst,
  repeatConst,
  reshapeConst,
  resolveShape,
  sliceConst,
  stridesOf,
} from "./const_fold.ts";
import { readTfjsModel, type TfAttr, type TfjsModel, type TfNode } from "./tfjs_format.ts";
import { sinkTransposes } from "./transpose_sink.ts";
import { fuseConvPadBias } from "./conv_fuse.ts";

/** Options of {@linkcode convertTfjs}. */
export interface TfjsOptions {
  /** Cut the graph at these tensors (node names or `node:index`); default: the signature's outputs. */
  outputs?: string[];
  /**
   * Start the graph at these tensors instead (node name → static shape; float32): each becomes a
   * graph input and what computes it is left out, e.g. a preprocessing while loop that resizes
   * each image of the batch.
   */
  inputs?: Record<string, number[]>;
  /**
   * Static shapes for inputs whose declared shape has unknown (-1) dims. Without one, an unknown
   * batch becomes 1 and the unknown height and width of an image input (`[N, H, W, C]` or
   * `[N, C, H, W]` with C known) come from `inputSize`; any other unknown dim is an error (the
   * importer computes every shape statically).
   */
  inputShapes?: Record<string, number[]>;
  /** `[height, width]` for image inputs declared with unknown spatial dims (e.g. `[1, -1, -1, 3]`). */
  inputSize?: [number, number];
  /** Sink and cancel transposes (default true). */
  optimizeTransposes?: boolean;
  /** ONNX opset to target (13..17; default 13). */
  opset?: number;
}

/** Default options. */
export const defaults = {
  optimizeTransposes: true,
  opset: 13,
} satisfies TfjsOptions;

/** The tfjs ops this importer maps (beyond those it constant-folds). */
export const SUPPORTED_TFJS_OPS: readonly string[] = [
  "Placeholder",
  "Const",
  "Identity",
  "IdentityN",
  "StopGradient",
  "Snapshot",
  "NoOp",
  "Conv2D",
  "_FusedConv2D",
  "DepthwiseConv2dNative",
  "FusedDepthwiseConv2dNative",
  "Conv2DBackpropInput",
  "BiasAdd",
  "Add",
  "AddV2",
  "AddN",
  "Sub",
  "Mul",
  "RealDiv",
  "Maximum",
  "Minimum",
  "Relu",
  "Relu6",
  "LeakyRelu",
  "Prelu",
  "Sigmoid",
  "Tanh",
  "Elu",
  "Exp",
  "Sqrt",
  "Rsqrt",
  "Square",
  "Neg",
  "Abs",
  "Sin",
  "Cos",
  "Atan2",
  "MaxPool",
  "AvgPool",
  "Mean",
  "Max",
  "Min",
  "Pad",
  "PadV2",
  "MirrorPad",
  "ConcatV2",
  "Reshape",
  "Squeeze",
  "ExpandDims",
  "Transpose",
  "ResizeBilinear",
  "ResizeNearestNeighbor",
  "SplitV",
  "Split",
  "StridedSlice",
  "Slice",
  "Cast",
  "Softmax",
  "FusedBatchNorm",
  "FusedBatchNormV3",
  "SparseToDense",
  "Pack",
  "Shape",
  "GatherV2",
  "Fill",
  "Prod",
  "Equal",
  "NotEqual",
  "Greater",
  "GreaterEqual",
  "Less",
  "LessEqual",
  "FloorDiv",
  "FloorMod",
  "TopKV2",
  "Unpack",
  "MatMul",
  "_FusedMatMul",
  "BatchMatMulV2",
  "DepthToSpace",
  "Ceil",
  "Floor",
  "Reciprocal",
  "Size",
  "Range",
  "Tile",
  "BroadcastTo",
  "ArgMax",
  "Sum",
  "SquaredDifference",
  "LogicalAnd",
  "GatherNd",
  "Select",
  "SelectV2",
  "ZerosLike",
];

/** Elementwise ops folded on constants, by ONNX op (the others on a constant are an error). */
const FOLDED_UNARY: Readonly<Record<string, (v: number) => number>> = {
  Neg: (v) => -v,
  Abs: Math.abs,
  Sin: Math.sin,
  Cos: Math.cos,
  Exp: Math.exp,
  Sqrt: Math.sqrt,
  Tanh: Math.tanh,
  Sigmoid: (v) => 1 / (1 + Math.exp(-v)),
};

/** TensorFlow's reductions: the ONNX op, and the fold of the values it reduces on constants. */
const REDUCTIONS: Readonly<Record<string, { onnxOp: string; fold: (v: number[]) => number }>> = {
  Sum: { onnxOp: "ReduceSum", fold: (v) => v.reduce((a, b) => a + b, 0) },
  Prod: { onnxOp: "ReduceProd", fold: (v) => v.reduce((a, b) => a * b, 1) },
  Mean: { onnxOp: "ReduceMean", fold: (v) => v.reduce((a, b) => a + b, 0) / v.length },
  Max: { onnxOp: "ReduceMax", fold: (v) => v.reduce((a, b) => Math.max(a, b), -Infinity) },
  Min: { onnxOp: "ReduceMin", fold: (v) => v.reduce((a, b) => Math.min(a, b), Infinity) },
};

type Val =
  | { kind: "const"; t: Tensor }
  | { kind: "tensor"; name: string; dtype: DType; shape: number[] };

const TF_DTYPES: Record<string, DType> = {
  DT_FLOAT: "float32",
  DT_HALF: "float16",
  DT_DOUBLE: "float64",
  DT_INT32: "int32",
  DT_INT64: "int64",
  DT_INT8: "int8",
  DT_UINT8: "uint8",
  DT_INT16: "int16",
  DT_BOOL: "bool",
};

const NCHW_TO_NHWC = [0, 2, 3, 1];
const NHWC_TO_NCHW = [0, 3, 1, 2];

function b64(s: string | undefined): string {
  if (!s) return "";
  try {
    return atob(s);
  } catch {
    return s;
  }
}

/**
 * Converts a decoded tfjs graph model into an ONNX Graph.
 *
 * @param model The model (see {@linkcode readTfjsModel}).
 * @param options Outputs to cut at, input shapes, transpose optimization.
 * @returns The ONNX graph (opset 13 by default).
 * @throws {UnsupportedOpError} Listing every op the graph needs that is not supported.
 * @throws {ModelError} When the graph is malformed.
 *
 * @example A Relu6 graph
 * ```ts
 * import { convertTfjs } from "@clipq/convert/tfjs";
 * import assert from "node:assert/strict";
 * const json = {
 *   modelTopology: { node: [
 *     { name: "x", op: "Placeholder", attr: { dtype: { type: "DT_FLOAT" }, shape: { shape: { dim: [{ size: "1" }, { size: "4" }] } } } },
 *     { name: "y", op: "Relu6", input: ["x"] },
 *   ] },
 *   weightsManifest: [],
 * };
 * const g = convertTfjs({ json, weights: new Map(), source: "m.json" }, { outputs: ["y"] });
 * assert.equal(g.nodes[0]?.op, "Clip");
 * assert.equal(g.outputs[0]?.name, "y");
 * ```
 */
export function convertTfjs(model: TfjsModel, options: TfjsOptions = {}): Graph {
  const opts = { ...defaults, ...options };
  const src = model.source;
  const byName = new Map<string, TfNode>();
  for (const n of model.json.modelTopology.node) byName.set(n.name, n);
  // Checked up front: an opset outside 13..17 was stamped into a model onnxruntime then refused
  // (op forms of another opset), and a bad input option failed deep in the graph, at some node.
  if (!(Number.isInteger(opts.opset) && opts.opset >= 13 && opts.opset <= 17)) {
    throw new ConfigError("opset", `expected an integer in 13..17 but found ${opts.opset}`);
  }
  if (
    opts.inputSize !== undefined &&
    !(opts.inputSize.length === 2 && opts.inputSize.every((d) => Number.isInteger(d) && d > 0))
  ) {
    throw new ConfigError(
      "inputSize",
      `expected [height, width] of positive integers but found ${JSON.stringify(opts.inputSize)}`,
    );
  }
  for (const [name, shape] of Object.entries(opts.inputShapes ?? {})) {
    // A tensor opts.inputs cuts the graph at becomes a placeholder too.
    const cut = Object.keys(opts.inputs ?? {}).some((ref) => ref.replace(/:0$/, "") === name);
    if (byName.get(name)?.op !== "Placeholder" && !cut) {
      throw new ModelError(
        `${src}: inputShapes names "${name}", which is no placeholder of the graph (placeholders: ${
          model.json.modelTopology.node.filter((n) => n.op === "Placeholder").map((n) => n.name)
            .join(", ")
        })`,
      );
    }
    if (!(Array.isArray(shape) && shape.every((d) => Number.isInteger(d) && d > 0))) {
      throw new ModelError(
        `${src}: inputShapes "${name}": expected positive integer dims but found ${
          JSON.stringify(shape)
        }`,
      );
    }
    // The placeholder's declared rank, and its fixed dims, hold (they had failed at some node).
    const dim = cut ? undefined : byName.get(name)!.attr?.shape?.shape?.dim;
    const declared = dim?.map((d) => Number(d.size ?? -1));
    if (
      declared && declared.length > 0 &&
      (declared.length !== shape.length || declared.some((d, k) => d > 0 && d !== shape[k]))
    ) {
      throw new ModelError(
        `${src}: inputShapes "${name}": expected a shape that fits its declared [${
          declared.map((d) => (d > 0 ? d : "?")).join(", ")
        }] but found [${shape.join(", ")}]`,
      );
    }
  }
  // Tensors the caller starts the graph at become placeholders of the given shape.
  for (const [ref, shape] of Object.entries(opts.inputs ?? {})) {
    const name = ref.replace(/:0$/, "");
    if (!byName.has(name)) {
      throw new ModelError(
        `${src}: input "${ref}" names no node of the graph (expected a node name)`,
      );
    }
    if (
      !(Array.isArray(shape) && shape.length > 0 &&
        shape.every((d) => Number.isInteger(d) && d > 0))
    ) {
      throw new ModelError(
        `${src}: input "${ref}": expected a static shape of positive integers but found ${
          JSON.stringify(shape)
        }`,
      );
    }
    byName.set(name, {
      name,
      op: "Placeholder",
      attr: {
        dtype: { type: "DT_FLOAT" },
        shape: { shape: { dim: shape.map((d) => ({ size: String(d) })) } },
      },
    });
  }

  const parseRef = (ref: string): { node: string; index: number } => {
    const m = /^(.*?)(?::(\d+))?$/.exec(ref)!;
    return { node: m[1]!, index: m[2] ? Number(m[2]) : 0 };
  };
  // Outputs: the caller's cut, else the signature's, else every node nothing reads.
  const read = new Set(
    model.json.modelTopology.node.flatMap((n) =>
      (n.input ?? []).map((i) => parseRef(i.replace(/^\^/, "")).node)
    ),
  );
  const outputRefs = opts.outputs ??
    (model.json.signature?.outputs
      ? Object.values(model.json.signature.outputs).map((o) => o.name)
      : model.json.modelTopology.node.filter((n) =>
        !read.has(n.name) && n.op !== "Const" && n.op !== "NoOp"
      )
        .map((n) => n.name));
  if (outputRefs.length === 0) {
    throw new ModelError(`${src}: no outputs: the model has no signature; pass options.outputs`);
  }
  for (const r of outputRefs) {
    if (!byName.has(parseRef(r).node)) {
      throw new ModelError(`${src}: output "${r}" names no node of the graph`);
    }
  }

  // A cycle is a TensorFlow while loop (Enter, Merge, Switch, NextIteration, Exit nodes), which
  // exports put in post-processing (per-image NMS mapped over the batch): name the loop's ops
  // and where it starts, so the user can cut the graph before it.
  const cycleError = (dep: string, path: string[]): Error => {
    const loop = path.slice(path.indexOf(dep));
    const ops = [...new Set(loop.map((name) => byName.get(name)!.op))];
    // The loop's Merge joins the value entering it with the next iteration's: where it starts.
    const entered = loop.find((name) => byName.get(name)!.op === "Merge") ?? dep;
    return new UnsupportedOpError(
      ops.filter((op) => !SUPPORTED_TFJS_OPS.includes(op)).join(", ") || ops.join(", "),
      {
        domain: "tfjs",
        supported: SUPPORTED_TFJS_OPS,
        where:
          `${src}: a while loop (control flow: a cycle through node "${entered}") is not supported; cut the graph with options.outputs before it`,
      },
    );
  };
  // Nodes needed for the outputs, in dependency order (iterative DFS: graphs can be deep).
  const order: TfNode[] = [];
  const state = new Map<string, 1 | 2>();
  for (const r of outputRefs) {
    const stack: { name: string; next: number }[] = [{ name: parseRef(r).node, next: 0 }];
    while (stack.length) {
      const top = stack[stack.length - 1]!;
      const n = byName.get(top.name);
      if (!n) throw new ModelError(`${src}: input "${top.name}" names no node of the graph`);
      if (top.next === 0) {
        if (state.get(top.name) === 2) {
          stack.pop();
          continue;
        }
        state.set(top.name, 1);
      }
      const inputs = (n.input ?? []).filter((i) => !i.startsWith("^"));
      if (top.next < inputs.length) {
        const dep = parseRef(inputs[top.next++]!).node;
        if (state.get(dep) === 1) throw cycleError(dep, stack.map((s) => s.name));
        if (state.get(dep) !== 2) stack.push({ name: dep, next: 0 });
      } else {
        state.set(top.name, 2);
        order.push(n);
        stack.pop();
      }
    }
  }
  const missing = [...new Set(order.map((n) => n.op))].filter((op) =>
    !SUPPORTED_TFJS_OPS.includes(op)
  );
  if (missing.length) {
    throw new UnsupportedOpError(missing.join(", "), {
      domain: "tfjs",
      supported: SUPPORTED_TFJS_OPS,
      where:
        `${src}: ${missing.length} op type(s) not supported (cut the graph with options.outputs before them)`,
    });
  }

  const nodes: Node[] = [];
  const initializers = new Map<string, Tensor>();
  const inputs: Graph["inputs"][number][] = [];
  const values = new Map<string, Val[]>();
  const used = new Set<string>();
  const fresh = (base: string): string => {
    let name = base.replace(/[^A-Za-z0-9_./:-]/g, "_");
    for (let i = 1; used.has(name); i++) name = `${base}_${i}`;
    used.add(name);
    return name;
  };
  for (const n of byName.keys()) used.add(n);

  const constName = (t: Tensor, base: string): string => {
    const name = fresh(base);
    initializers.set(name, t);
    return name;
  };
  const nameOf = (
    v: Val,
    base: string,
  ): string => (v.kind === "const" ? constName(v.t, base) : v.name);
  // As nameOf, a constant first converted to `dtype` where its own differs (a computed value keeps
  // its dtype: converting it takes a Cast node).
  const nameAs = (v: Val, dtype: DType, base: string): string =>
    v.kind === "const" && v.t.dtype !== dtype
      ? constName(fromNumbers(dtype, v.t.dims, toFloat64(v.t)), base)
      : nameOf(v, base);
  const emit = (
    op: string,
    ins: string[],
    attributes: Node["attributes"],
    base: string,
    outputs = 1,
  ): string[] => {
    const outs = Array.from({ length: outputs }, (_, i) => fresh(i ? `${base}:${i}` : base));
    nodes.push({
      name: fresh(`${base}/${op}`),
      op,
      domain: "",
      inputs: ins,
      outputs: outs,
      attributes,
    });
    return outs;
  };
  const ints = (v: readonly number[]) => ({ type: "ints" as const, value: [...v] });
  const int = (v: number) => ({ type: "int" as const, value: v });
  const flt = (v: number) => ({ type: "float" as const, value: v });
  const str = (v: string) => ({ type: "string" as const, value: v });
  const i64 = (v: readonly number[]) => fromNumbers("int64", [v.length], v);

  const staticShape = (declared: number[], input: string): number[] => {
    const shape = declared.map((d, i) => (d < 0 && i === 0 ? 1 : d));
    if (!shape.some((d) => d < 0)) return shape;
    // Channels last when the last dim is known, else channels first.
    const spatial = shape.length === 4
      ? (shape[3]! > 0 ? [1, 2] : shape[1]! > 0 ? [2, 3] : [])
      : [];
    if (opts.inputSize && spatial.length) {
      spatial.forEach((axis, k) => {
        if (shape[axis]! < 0) shape[axis] = opts.inputSize![k]!;
      });
    }
    if (shape.some((d) => d < 0)) {
      throw new ModelError(
        `${src}: input "${input}" is declared [${
          declared.join(", ")
        }] with unknown dims; expected ${
          spatial.length
            ? "an input size (the config's input.size, or options.inputSize)"
            : "options.inputShapes"
        } to fix them`,
      );
    }
    return shape;
  };

  for (const n of order) {
    const where = `${src}: node "${n.name}" (${n.op})`;
    const attr = (k: string): TfAttr | undefined => n.attr?.[k];
    const attrS = (k: string) => b64(attr(k)?.s);
    const attrI = (k: string, d: number) => {
      const a = attr(k)?.i;
      return a === undefined ? d : Number(a);
    };
    const attrF = (k: string, d: number) => attr(k)?.f ?? d;
    const attrB = (k: string) => attr(k)?.b === true;
    const attrList = (k: string) => (attr(k)?.list?.i ?? []).map(Number);
    const ins: Val[] = (n.input ?? []).filter((i) => !i.startsWith("^")).map((r) => {
      const { node, index } = parseRef(r);
      const v = values.get(node)?.[index];
      if (!v) throw new ModelError(`${where}: input "${r}" has no value`);
      return v;
    });
    const inp = (i: number): Val => {
      const v = ins[i];
      if (!v) {
        throw new ModelError(`${where}: expected at least ${i + 1} inputs but found ${ins.length}`);
      }
      return v;
    };
    const constIn = (i: number, what: string): Tensor => {
      const v = inp(i);
      if (v.kind !== "const") {
        throw new ModelError(
          `${where}: expected a constant ${what} (input ${i}) but it is computed at run time`,
        );
      }
      return v.t;
    };
    const shapeOf = (v: Val): number[] => (v.kind === "const" ? [...v.t.dims] : v.shape);
    const dtypeOf = (v: Val): DType => (v.kind === "const" ? v.t.dtype : v.dtype);
    const set = (...vs: Val[]) => values.set(n.name, vs);
    const out = (name: string, dtype: DType, shape: number[]): Val => ({
      kind: "tensor",
      name,
      dtype,
      shape,
    });
    const rankOf = (v: Val) => shapeOf(v).length;
    const normAxis = (a: number, rank: number) => (a < 0 ? a + rank : a);
    const allConst = ins.every((v) => v.kind === "const");
    const nhwc = () => attrS("data_format") !== "NCHW";
    const transposed = (v: Val, perm: number[], base: string): Val => {
      if (v.kind === "const") return { kind: "const", t: permute(v.t, perm) };
      const s = v.shape;
      if (s.length !== perm.length) {
        throw new ModelError(
          `${where}: expected a rank-${perm.length} input but found [${
            s.join(", ")
          }]; does the input shape (input.size, inputs) fit this model?`,
        );
      }
      return out(
        emit("Transpose", [v.name], { perm: ints(perm) }, base)[0]!,
        v.dtype,
        perm.map((p) => s[p]!),
      );
    };
    const toNchw = (v: Val) => (nhwc() ? transposed(v, NHWC_TO_NCHW, `${n.name}/to_nchw`) : v);
    const fromNchw = (v: Val) => (nhwc() ? transposed(v, NCHW_TO_NHWC, n.name) : v);

    // The two operands of a binary op, a constant one cast to the computed one's dtype, and
    // the broadcast shape.
    const operands = (): { x: string; y: string; dtype: DType; shape: number[] } => {
      const [a, b] = [inp(0), inp(1)];
      const [sa, sb] = [shapeOf(a), shapeOf(b)];
      const shape = broadcastDims(sa, sb);
      if (!shape) {
        throw new ModelError(
          `${where}: expected shapes that broadcast but found [${sa.join(", ")}] and [${
            sb.join(", ")
          }]; does the input shape (input.size, inputs) fit this model?`,
        );
      }
      const dtype = a.kind === "tensor" ? a.dtype : dtypeOf(b);
      return {
        x: nameAs(a, dtype, `${n.name}/c`),
        y: nameAs(b, dtype, `${n.name}/c`),
        dtype,
        shape,
      };
    };

    const binary = (onnxOp: string, f: (a: number, b: number) => number) => {
      if (allConst) {
        set({ kind: "const", t: broadcastBinary(constIn(0, "a"), constIn(1, "b"), f) });
        return;
      }
      const { x, y, dtype, shape } = operands();
      set(out(emit(onnxOp, [x, y], {}, n.name)[0]!, dtype, shape));
    };
    // Comparisons give bool. ONNX has Equal, Greater and Less at every opset this importer
    // writes; the other three are their negations (GreaterOrEqual needs opset 12).
    const compare = (tfOp: string) => {
      const [base, negate] = ({
        Equal: ["Equal", false],
        NotEqual: ["Equal", true],
        Greater: ["Greater", false],
        GreaterEqual: ["Less", true],
        Less: ["Less", false],
        LessEqual: ["Greater", true],
      } as const)[tfOp as "Equal"];
      const test = {
        Equal: (a: number, b: number) => a === b,
        Greater: (a: number, b: number) => a > b,
        Less: (a: number, b: number) => a < b,
      }[base];
      if (allConst) {
        const t = broadcastBinary(
          constIn(0, "x"),
          constIn(1, "y"),
          (a, b) => (test(a, b) !== negate ? 1 : 0),
        );
        set({ kind: "const", t: fromNumbers("bool", t.dims, toFloat64(t)) });
        return;
      }
      const { x, y, shape } = operands();
      let z = emit(base, [x, y], {}, negate ? `${n.name}/${base}` : n.name)[0]!;
      if (negate) z = emit("Not", [z], {}, n.name)[0]!;
      set(out(z, "bool", shape));
    };
    // TensorFlow's FloorDiv and FloorMod round toward −∞. ONNX's integer Div truncates toward
    // zero and its Mod takes fmod only for floats, so: integers use Mod with the divisor's sign
    // (fmod 0, which is floor semantics) and divide what is left, exactly; floats use Floor.
    const floorDivMod = (mod: boolean) => {
      const f = mod
        ? (a: number, b: number) => a - b * Math.floor(a / b)
        : (a: number, b: number) => Math.floor(a / b);
      if (allConst) {
        set({ kind: "const", t: broadcastBinary(constIn(0, "x"), constIn(1, "y"), f) });
        return;
      }
      const { x, y: d, dtype, shape } = operands();
      const float = dtype === "float32" || dtype === "float64" || dtype === "float16";
      let y: string;
      if (float) {
        const q = emit(
          "Floor",
          [emit("Div", [x, d], {}, `${n.name}/div`)[0]!],
          {},
          mod ? `${n.name}/floor` : n.name,
        )[0]!;
        y = mod
          ? emit("Sub", [x, emit("Mul", [d, q], {}, `${n.name}/mul`)[0]!], {}, n.name)[0]!
          : q;
      } else {
        const r = emit("Mod", [x, d], { fmod: int(0) }, mod ? n.name : `${n.name}/mod`)[0]!;
        y = mod
          ? r
          : emit("Div", [emit("Sub", [x, r], {}, `${n.name}/sub`)[0]!, d], {}, n.name)[0]!;
      }
      set(out(y, dtype, shape));
    };
    const unary = (onnxOp: string, attributes: Node["attributes"] = {}, extra: string[] = []) => {
      const x = inp(0);
      const fold = x.kind === "const" && extra.length === 0 ? FOLDED_UNARY[onnxOp] : undefined;
      if (x.kind === "const" && fold) {
        // Shape and angle arithmetic on constants (ZerosLike's zeros negated, say).
        set({ kind: "const", t: fromNumbers(x.t.dtype, x.t.dims, toFloat64(x.t).map(fold)) });
        return;
      }
      if (x.kind === "const") {
        throw new ModelError(
          `${where}: constant input to ${n.op} is not folded; expected a computed tensor`,
        );
      }
      set(out(emit(onnxOp, [x.name, ...extra], attributes, n.name)[0]!, x.dtype, x.shape));
    };
    const convOut = (
      inH: number,
      inW: number,
      kH: number,
      kW: number,
      strides: number[],
      dil: number[],
      padding: string,
      explicit: number[],
    ): { h: number; w: number; attrs: Node["attributes"] } => {
      const [sh, sw] = [strides[0] ?? 1, strides[1] ?? 1];
      const [dh, dw] = [dil[0] ?? 1, dil[1] ?? 1];
      const ekh = (kH - 1) * dh + 1;
      const ekw = (kW - 1) * dw + 1;
      if (padding === "SAME") {
        const h = Math.ceil(inH / sh);
        const w = Math.ceil(inW / sw);
        const th = Math.max((h - 1) * sh + ekh - inH, 0);
        const tw = Math.max((w - 1) * sw + ekw - inW, 0);
        // TensorFlow puts the odd pixel of SAME padding at the end (ONNX SAME_UPPER); explicit pads
        // keep the graph valid for every runtime.
        const pads = [
          Math.floor(th / 2),
          Math.floor(tw / 2),
          th - Math.floor(th / 2),
          tw - Math.floor(tw / 2),
        ];
        return { h, w, attrs: { pads: ints(pads) } };
      }
      const pads = padding === "EXPLICIT"
        ? [explicit[0]!, explicit[2]!, explicit[1]!, explicit[3]!]
        : [0, 0, 0, 0];
      const h = Math.floor((inH + pads[0]! + pads[2]! - ekh) / sh) + 1;
      const w = Math.floor((inW + pads[1]! + pads[3]! - ekw) / sw) + 1;
      return { h, w, attrs: { pads: ints(pads) } };
    };
    const spatial = (
      list: number[],
    ) => (nhwc() ? [list[1] ?? 1, list[2] ?? 1] : [list[2] ?? 1, list[3] ?? 1]);
    const explicitPads = () => {
      const e = attrList("explicit_paddings");
      if (e.length !== 8) return [0, 0, 0, 0];
      return nhwc() ? [e[2]!, e[3]!, e[4]!, e[5]!] : [e[4]!, e[5]!, e[6]!, e[7]!];
    };
    const activation = (
      y: Val,
      act: string,
      base: string,
      alpha = 0.2,
      slope?: Tensor,
    ): Val => {
      if (!act) return y;
      const v = y as Extract<Val, { kind: "tensor" }>;
      switch (act) {
        case "Prelu": {
          if (!slope) throw new ModelError(`${where}: expected a Prelu alpha argument`);
          // TensorFlow's alpha is per channel along the last axis; a conv's output here is
          // channels first, so the slope broadcasts as [C, 1, 1].
          const c = slope.dims.reduce((a, b) => a * b, 1);
          const shaped = v.shape.length === 4 && v.shape[1] === c && c > 1
            ? reshapeConst(slope, [c, 1, 1])
            : slope;
          return out(
            emit("PRelu", [v.name, constName(shaped, `${base}/slope`)], {}, base)[0]!,
            v.dtype,
            v.shape,
          );
        }
        case "Relu":
          return out(emit("Relu", [v.name], {}, base)[0]!, v.dtype, v.shape);
        case "Relu6":
          return out(
            emit(
              "Clip",
              [
                v.name,
                constName(tensor("float32", [], [0]), `${base}/min`),
                constName(tensor("float32", [], [6]), `${base}/max`),
              ],
              {},
              base,
            )[0]!,
            v.dtype,
            v.shape,
          );
        case "LeakyRelu":
          return out(
            emit("LeakyRelu", [v.name], { alpha: flt(alpha) }, base)[0]!,
            v.dtype,
            v.shape,
          );
        case "Elu":
          return out(emit("Elu", [v.name], {}, base)[0]!, v.dtype, v.shape);
        case "Sigmoid":
          return out(emit("Sigmoid", [v.name], {}, base)[0]!, v.dtype, v.shape);
        case "Tanh":
          return out(emit("Tanh", [v.name], {}, base)[0]!, v.dtype, v.shape);
        default:
          throw new UnsupportedOpError(`${n.op} fused ${act}`, {
            where,
            supported: ["Relu", "Relu6", "LeakyRelu", "Prelu", "Elu", "Sigmoid", "Tanh"],
          });
      }
    };
    // Conv2D, _FusedConv2D, depthwise variants: weights and bias (and folded BN) go into one ONNX Conv.
    const conv = (depthwise: boolean, fused: string[], args: Tensor[]) => {
      const x = toNchw(inp(0));
      const filter = constIn(1, "filter");
      const [kh, kw, cin, cm] = filter.dims as [number, number, number, number];
      let w: Tensor;
      let outC: number;
      let group = 1;
      if (depthwise) {
        outC = cin * cm;
        group = cin;
        w = reshapeConst(permute(filter, [2, 3, 0, 1]), [outC, 1, kh, kw]);
      } else {
        outC = cm;
        w = permute(filter, [3, 2, 0, 1]);
        const xc = shapeOf(x)[1]!;
        if (xc !== cin) group = xc / cin;
      }
      let bias: Float64Array | undefined;
      let weights = toFloat64(w);
      let act = "";
      let slope: Tensor | undefined;
      for (const [k, op] of fused.entries()) {
        if (op === "Prelu" && k === fused.length - 1) {
          // Its alpha follows the bias among the fused arguments.
          act = op;
          slope = args[args.length - 1];
        } else if (op === "BiasAdd" || op === "Add") bias = toFloat64(args[0]!);
        else if (op === "FusedBatchNorm") {
          const [scale, offset, mean, variance] = args.map(toFloat64) as [
            Float64Array,
            Float64Array,
            Float64Array,
            Float64Array,
          ];
          const eps = attrF("epsilon", 1e-3);
          const per = weights.length / outC;
          const folded = new Float64Array(weights.length);
          bias = new Float64Array(outC);
          for (let c = 0; c < outC; c++) {
            const s = scale[c]! / Math.sqrt(variance[c]! + eps);
            for (let i = 0; i < per; i++) folded[c * per + i] = weights[c * per + i]! * s;
            bias[c] = offset[c]! - mean[c]! * s;
          }
          weights = folded;
        } else if (k === fused.length - 1) act = op;
        else {
          throw new UnsupportedOpError(`${n.op} fused_ops [${fused}]`, {
            where,
            supported: ["BiasAdd", "FusedBatchNorm", "Relu", "Relu6", "LeakyRelu", "Prelu"],
          });
        }
      }
      const strides = spatial(attrList("strides"));
      const dil = spatial(attrList("dilations").length ? attrList("dilations") : [1, 1, 1, 1]);
      const xs = shapeOf(x);
      const geo = convOut(xs[2]!, xs[3]!, kh, kw, strides, dil, attrS("padding"), explicitPads());
      const convInputs = [
        nameOf(x, `${n.name}/x`),
        constName(fromNumbers("float32", w.dims, weights), `${n.name}/weights`),
      ];
      if (bias) convInputs.push(constName(fromNumbers("float32", [outC], bias), `${n.name}/bias`));
      const y = out(
        emit("Conv", convInputs, {
          kernel_shape: ints([kh, kw]),
          strides: ints(strides),
          dilations: ints(dil),
          group: int(group),
          ...geo.attrs,
        }, `${n.name}/conv`)[0]!,
        "float32",
        [xs[0]!, outC, geo.h, geo.w],
      );
      set(fromNchw(activation(y, act, `${n.name}/act`, attrF("leakyrelu_alpha", 0.2), slope)));
    };

    switch (n.op) {
      case "Placeholder": {
        const dtype = TF_DTYPES[attr("dtype")?.type ?? "DT_FLOAT"] ?? "float32";
        const declared = (attr("shape")?.shape?.dim ?? []).map((d) => Number(d.size ?? -1));
        const shape = opts.inputShapes?.[n.name] ?? staticShape(declared, n.name);
        inputs.push({ name: n.name, dtype, shape });
        set(out(n.name, dtype, shape));
        break;
      }
      case "Const": {
        const w = model.weights.get(n.name);
        const tfType = attr("dtype")?.type ?? attr("value")?.tensor?.dtype ?? "DT_FLOAT";
        const dtype = TF_DTYPES[tfType] ?? "float32";
        if (w) {
          set({
            kind: "const",
            t: w.dtype === dtype ? w : fromNumbers(dtype, w.dims, toFloat64(w)),
          });
        } else {
          const dims = (attr("value")?.tensor?.tensorShape?.dim ?? []).map((d) =>
            Number(d.size ?? 0)
          );
          if (sizeOf(dims) !== 0) {
            throw new ModelError(`${where}: constant has no weight entry in the manifest`);
          }
          set({ kind: "const", t: tensor(dtype, dims) });
        }
        break;
      }
      case "Identity":
      case "StopGradient":
      case "Snapshot":
        set(inp(0));
        break;
      case "IdentityN":
        set(...ins);
        break;
      case "NoOp":
        set();
        break;
      case "Conv2D":
        conv(false, [], []);
        break;
      case "DepthwiseConv2dNative":
        conv(true, [], []);
        break;
      case "_FusedConv2D":
      case "FusedDepthwiseConv2dNative": {
        const fusedOps = (attr("fused_ops")?.list?.s ?? []).map(b64);
        const args = ins.slice(2).map((_, i) => constIn(i + 2, "fused argument"));
        conv(n.op !== "_FusedConv2D", fusedOps, args);
        break;
      }
      case "DepthToSpace": {
        // TensorFlow orders the moved values block row, block column, channel: ONNX's DCR mode.
        const x = toNchw(inp(0));
        const [nb, c, h, w] = shapeOf(x) as [number, number, number, number];
        const b = attrI("block_size", 2);
        if (c % (b * b) !== 0) {
          throw new ModelError(
            `${where}: expected channels divisible by block size² ${b * b} but found [${
              shapeOf(inp(0))
            }]`,
          );
        }
        const y = emit("DepthToSpace", [nameOf(x, `${n.name}/x`)], {
          blocksize: int(b),
          mode: str("DCR"),
        }, `${n.name}/nchw`)[0]!;
        set(fromNchw(out(y, dtypeOf(x), [nb, c / (b * b), h * b, w * b])));
        break;
      }
      case "BatchMatMulV2": {
        // Batched: ONNX MatMul broadcasts the batch dims as BatchMatMulV2 does; adj_x / adj_y
        // transpose the last two dims first.
        const [a, b] = [inp(0), inp(1)];
        const sa = shapeOf(a), sb = shapeOf(b);
        if (sa.length < 2 || sb.length < 2) {
          throw new UnsupportedOpError(`${n.op} of rank ${sa.length} × ${sb.length}`, {
            where,
            supported: ["rank ≥ 2 × rank ≥ 2"],
          });
        }
        const lastTwo = (rank: number) => [
          ...Array.from({ length: rank - 2 }, (_, i) => i),
          rank - 1,
          rank - 2,
        ];
        const x = attrB("adj_x") ? transposed(a, lastTwo(sa.length), `${n.name}/a`) : a;
        const w = attrB("adj_y") ? transposed(b, lastTwo(sb.length), `${n.name}/b`) : b;
        const [sx, sw] = [shapeOf(x), shapeOf(w)];
        const batch = broadcastDims(sx.slice(0, -2), sw.slice(0, -2));
        if (!batch || sx.at(-1) !== sw.at(-2)) {
          throw new ModelError(
            `${where}: expected [..., M, K] × [..., K, N] with batch dims that broadcast; found [${
              sx.join(", ")
            }] × [${sw.join(", ")}]`,
          );
        }
        const y = emit(
          "MatMul",
          [nameOf(x, `${n.name}/a`), nameOf(w, `${n.name}/b`)],
          {},
          n.name,
        )[0]!;
        set(out(y, dtypeOf(a), [...batch, sx.at(-2)!, sw.at(-1)!]));
        break;
      }
      case "MatMul":
      case "_FusedMatMul": {
        // A dense layer: with a constant [K, N] weight and a bias, one ONNX Gemm (what the
        // quantizer turns into QGemm); otherwise MatMul, then the bias Add.
        const [a, b] = [inp(0), inp(1)];
        const [ta, tb] = [attrB("transpose_a"), attrB("transpose_b")];
        const sa = shapeOf(a), sb = shapeOf(b);
        if (sa.length !== 2 || sb.length !== 2) {
          throw new UnsupportedOpError(`${n.op} of rank ${sa.length} × ${sb.length}`, {
            where,
            supported: ["rank 2 × rank 2"],
          });
        }
        const fusedOps = n.op === "_FusedMatMul" ? (attr("fused_ops")?.list?.s ?? []).map(b64) : [];
        const args = ins.slice(2).map((_, i) => constIn(i + 2, "fused argument"));
        let bias: Tensor | undefined;
        let act = "";
        let slope: Tensor | undefined;
        for (const [k, op] of fusedOps.entries()) {
          if (op === "BiasAdd" && k === 0) bias = args[0];
          else if (k === fusedOps.length - 1) {
            act = op;
            if (op === "Prelu") slope = args[args.length - 1];
          } else {
            throw new UnsupportedOpError(`${n.op} fused_ops [${fusedOps}]`, {
              where,
              supported: [
                "BiasAdd",
                "Relu",
                "Relu6",
                "LeakyRelu",
                "Prelu",
                "Elu",
                "Sigmoid",
                "Tanh",
              ],
            });
          }
        }
        const m = ta ? sa[1]! : sa[0]!, cols = tb ? sb[0]! : sb[1]!;
        let y: string;
        if (b.kind === "const" && bias) {
          y = emit(
            "Gemm",
            [
              nameOf(a, `${n.name}/a`),
              constName(b.t, `${n.name}/weights`),
              constName(bias, `${n.name}/bias`),
            ],
            { transA: int(ta ? 1 : 0), transB: int(tb ? 1 : 0) },
            n.name,
          )[0]!;
        } else {
          const x = ta ? transposed(a, [1, 0], `${n.name}/a`) : a;
          const w = tb ? transposed(b, [1, 0], `${n.name}/b`) : b;
          y = emit(
            "MatMul",
            [nameOf(x, `${n.name}/a`), nameOf(w, `${n.name}/weights`)],
            {},
            bias ? `${n.name}/matmul` : n.name,
          )[0]!;
          if (bias) y = emit("Add", [y, constName(bias, `${n.name}/bias`)], {}, n.name)[0]!;
        }
        const dtype = dtypeOf(a);
        set(
          activation(
            out(y, dtype, [m, cols]),
            act,
            `${n.name}/act`,
            attrF("leakyrelu_alpha", 0.2),
            slope,
          ),
        );
        break;
      }
      case "Conv2DBackpropInput": {
        const outShape = [...toFloat64(constIn(0, "output shape"))];
        const filter = constIn(1, "filter"); // [kh, kw, out, in]
        const x = toNchw(inp(2));
        const [kh, kw, oc] = filter.dims as [number, number, number, number];
        const strides = spatial(attrList("strides"));
        const xs = shapeOf(x);
        const [oh, ow] = nhwc() ? [outShape[1]!, outShape[2]!] : [outShape[2]!, outShape[3]!];
        const th = strides[0]! * (xs[2]! - 1) + kh - oh;
        const tw = strides[1]! * (xs[3]! - 1) + kw - ow;
        const pads = [
          Math.floor(th / 2),
          Math.floor(tw / 2),
          th - Math.floor(th / 2),
          tw - Math.floor(tw / 2),
        ];
        const outPad = pads.map((p) => Math.max(-p, 0));
        const y = out(
          emit("ConvTranspose", [
            nameOf(x, `${n.name}/x`),
            constName(permute(filter, [3, 2, 0, 1]), `${n.name}/weights`),
          ], {
            kernel_shape: ints([kh, kw]),
            strides: ints(strides),
            pads: ints(pads.map((p) => Math.max(p, 0))),
            output_padding: ints([Math.max(outPad[2]!, 0), Math.max(outPad[3]!, 0)]),
          }, `${n.name}/deconv`)[0]!,
          "float32",
          [xs[0]!, oc, oh, ow],
        );
        set(fromNchw(y));
        break;
      }
      case "BiasAdd": {
        const b = constIn(1, "bias");
        const x = inp(0);
        const rank = rankOf(x);
        const shaped = nhwc() ? b : reshapeConst(b, [b.dims[0]!, ...new Array(rank - 2).fill(1)]);
        ins[1] = { kind: "const", t: shaped };
        binary("Add", (a, c) => a + c);
        break;
      }
      case "Add":
      case "AddV2":
        binary("Add", (a, b) => a + b);
        break;
      case "Sub":
        binary("Sub", (a, b) => a - b);
        break;
      case "Mul":
        binary("Mul", (a, b) => a * b);
        break;
      case "RealDiv":
        binary("Div", (a, b) => a / b);
        break;
      case "Maximum":
        binary("Max", Math.max);
        break;
      case "Minimum":
        binary("Min", Math.min);
        break;
      case "AddN": {
        let acc = inp(0);
        for (let i = 1; i < ins.length; i++) {
          const a = acc as Extract<Val, { kind: "tensor" }>;
          acc = out(
            emit(
              "Add",
              [nameOf(acc, `${n.name}/a`), nameOf(inp(i), `${n.name}/b`)],
              {},
              n.name,
            )[0]!,
            a.dtype ?? "float32",
            shapeOf(acc),
          );
        }
        set(acc);
        break;
      }
      case "Relu":
        unary("Relu");
        break;
      case "Relu6":
        unary("Clip", {}, [
          constName(tensor("float32", [], [0]), `${n.name}/min`),
          constName(tensor("float32", [], [6]), `${n.name}/max`),
        ]);
        break;
      case "LeakyRelu":
        unary("LeakyRelu", { alpha: flt(attrF("alpha", 0.2)) });
        break;
      case "Prelu": {
        const slope = constIn(1, "alpha");
        unary("PRelu", {}, [constName(slope, `${n.name}/slope`)]);
        break;
      }
      case "Sigmoid":
      case "Tanh":
      case "Elu":
      case "Exp":
      case "Sqrt":
      case "Neg":
      case "Abs":
      case "Sin":
      case "Cos":
        unary(n.op);
        break;
      case "Atan2": {
        // atan2(y, x) = atan(y / x), moved by ±π where x < 0 (+π for y ≥ 0), and 0 where both are
        // 0 (TensorFlow's value; y / x is NaN there). ONNX has Atan but no Atan2.
        if (allConst) {
          set({ kind: "const", t: broadcastBinary(constIn(0, "y"), constIn(1, "x"), Math.atan2) });
          break;
        }
        const { x: y, y: x, dtype, shape } = operands();
        const zero = constName(fromNumbers(dtype, [], [0]), `${n.name}/zero`);
        const pi = constName(fromNumbers(dtype, [], [Math.PI]), `${n.name}/pi`);
        const minusPi = constName(fromNumbers(dtype, [], [-Math.PI]), `${n.name}/minus_pi`);
        const angle = emit(
          "Atan",
          [emit("Div", [y, x], {}, `${n.name}/div`)[0]!],
          {},
          `${n.name}/atan`,
        )[0]!;
        const yNegative = emit("Less", [y, zero], {}, `${n.name}/y_negative`)[0]!;
        const half = emit("Where", [yNegative, minusPi, pi], {}, `${n.name}/half_turn`)[0]!;
        const xNegative = emit("Less", [x, zero], {}, `${n.name}/x_negative`)[0]!;
        const turned = emit("Add", [angle, half], {}, `${n.name}/turned`)[0]!;
        const a = emit("Where", [xNegative, turned, angle], {}, `${n.name}/angle`)[0]!;
        const origin = emit(
          "And",
          [
            emit("Equal", [x, zero], {}, `${n.name}/x_zero`)[0]!,
            emit("Equal", [y, zero], {}, `${n.name}/y_zero`)[0]!,
          ],
          {},
          `${n.name}/origin`,
        )[0]!;
        set(out(emit("Where", [origin, zero, a], {}, n.name)[0]!, dtype, shape));
        break;
      }
      case "ZerosLike": {
        const x = inp(0);
        const shape = shapeOf(x);
        // Shapes are static here: the zeros are a constant.
        set({ kind: "const", t: fromNumbers(dtypeOf(x), shape, new Float64Array(sizeOf(shape))) });
        break;
      }
      case "Rsqrt": {
        const x = inp(0) as Extract<Val, { kind: "tensor" }>;
        const s = emit("Sqrt", [x.name], {}, `${n.name}/sqrt`)[0]!;
        set(out(emit("Reciprocal", [s], {}, n.name)[0]!, x.dtype, x.shape));
        break;
      }
      case "Square": {
        const x = inp(0) as Extract<Val, { kind: "tensor" }>;
        set(out(emit("Mul", [x.name, x.name], {}, n.name)[0]!, x.dtype, x.shape));
        break;
      }
      case "MaxPool":
      case "AvgPool": {
        const x = toNchw(inp(0));
        const [kh, kw] = spatial(attrList("ksize"));
        const strides = spatial(attrList("strides"));
        const xs = shapeOf(x);
        const geo = convOut(
          xs[2]!,
          xs[3]!,
          kh!,
          kw!,
          strides,
          [1, 1],
          attrS("padding"),
          explicitPads(),
        );
        const y = out(
          emit(n.op === "MaxPool" ? "MaxPool" : "AveragePool", [nameOf(x, `${n.name}/x`)], {
            kernel_shape: ints([kh!, kw!]),
            strides: ints(strides),
            ...geo.attrs,
          }, `${n.name}/pool`)[0]!,
          "float32",
          [xs[0]!, xs[1]!, geo.h, geo.w],
        );
        set(fromNchw(y));
        break;
      }
      case "Pad":
      case "PadV2":
      case "MirrorPad": {
        const p = [...toFloat64(constIn(1, "paddings"))];
        if (inp(0).kind === "const" && n.op !== "MirrorPad") {
          // Shape arithmetic (anchor grids): pad the constant here.
          const t = (inp(0) as Extract<Val, { kind: "const" }>).t;
          const fill = n.op === "PadV2" ? toFloat64(constIn(2, "constant value"))[0]! : 0;
          const dims = t.dims.map((d, i) => d + p[2 * i]! + p[2 * i + 1]!);
          const values = new Float64Array(sizeOf(dims)).fill(fill);
          const src = toFloat64(t);
          const inStrides = stridesOf(t.dims), outStrides = stridesOf(dims);
          for (let i = 0; i < src.length; i++) {
            let at = 0;
            for (let k = 0; k < t.dims.length; k++) {
              at += (Math.floor(i / inStrides[k]!) % t.dims[k]! + p[2 * k]!) * outStrides[k]!;
            }
            values[at] = src[i]!;
          }
          set({ kind: "const", t: fromNumbers(t.dtype, dims, values) });
          break;
        }
        const x = inp(0) as Extract<Val, { kind: "tensor" }>;
        const rank = x.shape.length;
        const pads = [
          ...Array.from({ length: rank }, (_, i) => p[2 * i]!),
          ...Array.from({ length: rank }, (_, i) => p[2 * i + 1]!),
        ];
        const mode = n.op === "MirrorPad" ? attrS("mode") : "CONSTANT";
        if (mode === "SYMMETRIC") {
          throw new UnsupportedOpError("MirrorPad mode SYMMETRIC", {
            where,
            supported: ["CONSTANT", "REFLECT"],
          });
        }
        const padIns = [x.name, constName(i64(pads), `${n.name}/pads`)];
        if (n.op === "PadV2") {
          padIns.push(
            constName(
              fromNumbers(x.dtype, [], toFloat64(constIn(2, "constant value"))),
              `${n.name}/value`,
            ),
          );
        }
        set(out(
          emit(
            "Pad",
            padIns,
            { mode: str(mode === "REFLECT" ? "reflect" : "constant") },
            n.name,
          )[0]!,
          x.dtype,
          x.shape.map((d, i) => d + pads[i]! + pads[rank + i]!),
        ));
        break;
      }
      case "ConcatV2": {
        const axisT = constIn(ins.length - 1, "axis");
        const parts = ins.slice(0, -1);
        const rank = rankOf(parts[0]!);
        const axis = normAxis(Number(toFloat64(axisT)[0]), rank);
        if (parts.every((v) => v.kind === "const")) {
          set({ kind: "const", t: concatConst(parts.map((v) => (v as { t: Tensor }).t), axis) });
          break;
        }
        const shape = [...shapeOf(parts[0]!)];
        shape[axis] = parts.reduce((s, v) => s + shapeOf(v)[axis]!, 0);
        const dtype = parts.find((v) => v.kind === "tensor")!;
        set(
          out(
            emit(
              "Concat",
              parts.map((v, i) => nameOf(v, `${n.name}/${i}`)),
              { axis: int(axis) },
              n.name,
            )[0]!,
            dtypeOf(dtype),
            shape,
          ),
        );
        break;
      }
      case "Pack": {
        const axisRaw = attrI("axis", 0);
        const parts = ins;
        const rank = rankOf(parts[0]!) + 1;
        const axis = normAxis(axisRaw, rank);
        if (parts.every((v) => v.kind === "const")) {
          const expanded = parts.map((v) => {
            const t = (v as { t: Tensor }).t;
            const dims = [...t.dims];
            dims.splice(axis, 0, 1);
            return reshapeConst(t, dims);
          });
          set({ kind: "const", t: concatConst(expanded, axis) });
          break;
        }
        const expandedNames = parts.map((v, i) =>
          emit(
            "Unsqueeze",
            [nameOf(v, `${n.name}/${i}`), constName(i64([axis]), `${n.name}/axes`)],
            {},
            `${n.name}/unsqueeze${i}`,
          )[0]!
        );
        const shape = [...shapeOf(parts[0]!)];
        shape.splice(axis, 0, parts.length);
        set(
          out(
            emit("Concat", expandedNames, { axis: int(axis) }, n.name)[0]!,
            dtypeOf(parts[0]!),
            shape,
          ),
        );
        break;
      }
      case "Reshape": {
        const x = inp(0);
        const target = [...toFloat64(constIn(1, "shape"))];
        const shape = resolveShape(shapeOf(x), target);
        if (x.kind === "const") {
          set({ kind: "const", t: reshapeConst(x.t, shape) });
          break;
        }
        set(
          out(
            emit("Reshape", [x.name, constName(i64(shape), `${n.name}/shape`)], {}, n.name)[0]!,
            x.dtype,
            shape,
          ),
        );
        break;
      }
      case "Squeeze": {
        const x = inp(0);
        const s = shapeOf(x);
        const dims = attrList("squeeze_dims").length ? attrList("squeeze_dims") : attrList("axis");
        const axes = dims.length
          ? dims.map((a) => normAxis(a, s.length))
          : s.flatMap((d, i) => (d === 1 ? [i] : []));
        const shape = s.filter((_, i) => !axes.includes(i));
        if (x.kind === "const") {
          set({ kind: "const", t: reshapeConst(x.t, shape) });
          break;
        }
        set(
          out(
            emit("Squeeze", [x.name, constName(i64(axes), `${n.name}/axes`)], {}, n.name)[0]!,
            x.dtype,
            shape,
          ),
        );
        break;
      }
      case "ExpandDims": {
        const x = inp(0);
        const s = shapeOf(x);
        const axis = normAxis(Number(toFloat64(constIn(1, "axis"))[0]), s.length + 1);
        const shape = [...s];
        shape.splice(axis, 0, 1);
        if (x.kind === "const") {
          set({ kind: "const", t: reshapeConst(x.t, shape) });
          break;
        }
        set(
          out(
            emit("Unsqueeze", [x.name, constName(i64([axis]), `${n.name}/axes`)], {}, n.name)[0]!,
            x.dtype,
            shape,
          ),
        );
        break;
      }
      case "Transpose": {
        const perm = [...toFloat64(constIn(1, "perm"))];
        set(transposed(inp(0), perm, n.name));
        break;
      }
      case "ResizeBilinear":
      case "ResizeNearestNeighbor": {
        const x = toNchw({ ...inp(0) } as Val);
        const size = [...toFloat64(constIn(1, "size"))];
        const xs = shapeOf(x);
        const alignCorners = attrB("align_corners");
        const halfPixel = attrB("half_pixel_centers");
        const linear = n.op === "ResizeBilinear";
        // TensorFlow's half-pixel nearest picks floor((i + 0.5)·in/out) = round_prefer_ceil of the
        // half_pixel source coordinate; align_corners nearest rounds, the legacy mode floors.
        const mode = alignCorners ? "align_corners" : halfPixel ? "half_pixel" : "asymmetric";
        const sizes = [xs[0]!, xs[1]!, size[0]!, size[1]!];
        const y = out(
          emit("Resize", [
            nameOf(x, `${n.name}/x`),
            "",
            "",
            constName(i64(sizes), `${n.name}/sizes`),
          ], {
            mode: str(linear ? "linear" : "nearest"),
            coordinate_transformation_mode: str(mode),
            nearest_mode: str(alignCorners || halfPixel ? "round_prefer_ceil" : "floor"),
          }, `${n.name}/resize`)[0]!,
          "float32",
          sizes,
        );
        // ResizeBilinear/NearestNeighbor are NHWC-only in TensorFlow.
        set(transposed(y, NCHW_TO_NHWC, n.name));
        break;
      }
      case "SplitV":
      case "Split": {
        const isV = n.op === "SplitV";
        const x = isV ? inp(0) : inp(1);
        const s = shapeOf(x);
        const axis = normAxis(Number(toFloat64(constIn(isV ? 2 : 0, "axis"))[0]), s.length);
        let sizes: number[];
        if (isV) {
          sizes = [...toFloat64(constIn(1, "size_splits"))];
          const known = sizes.filter((v) => v >= 0).reduce((a, b) => a + b, 0);
          sizes = sizes.map((v) => (v < 0 ? s[axis]! - known : v));
        } else {
          const k = attrI("num_split", 1);
          sizes = new Array(k).fill(s[axis]! / k);
        }
        if (x.kind === "const") throw new ModelError(`${where}: constant split is not folded`);
        const outs = emit(
          "Split",
          [x.name, constName(i64(sizes), `${n.name}/split`)],
          { axis: int(axis) },
          n.name,
          sizes.length,
        );
        set(...outs.map((o, i) => {
          const shape = [...s];
          shape[axis] = sizes[i]!;
          return out(o, x.dtype, shape);
        }));
        break;
      }
      case "Unpack": {
        // tf.unstack: one output per index along the axis, that axis removed.
        const x = inp(0);
        const s = shapeOf(x);
        const axis = normAxis(attrI("axis", 0), s.length);
        const count = s[axis]!;
        const shape = s.filter((_, i) => i !== axis);
        if (x.kind === "const") {
          const front = axis === 0
            ? x.t
            : permute(x.t, [axis, ...s.flatMap((_, i) => (i === axis ? [] : [i]))]);
          set(...Array.from({ length: count }, (_, i): Val => ({
            kind: "const",
            t: gatherConst(front, fromNumbers("int64", [], [i])),
          })));
          break;
        }
        const parts = emit(
          "Split",
          [x.name, constName(i64(new Array(count).fill(1)), `${n.name}/split`)],
          { axis: int(axis) },
          `${n.name}/split`,
          count,
        );
        const axes = constName(i64([axis]), `${n.name}/axes`);
        set(...parts.map((part, i) =>
          out(
            emit("Squeeze", [part, axes], {}, i ? `${n.name}:${i}` : n.name)[0]!,
            x.dtype,
            shape,
          )
        ));
        break;
      }
      case "StridedSlice":
      case "Slice": {
        const x = inp(0);
        const s = shapeOf(x);
        const rank = s.length;
        const begin = [...toFloat64(constIn(1, "begin"))];
        let end: number[];
        let strides: number[];
        let [bm, em, shrink, newAxis, ellipsis] = [0, 0, 0, 0, 0];
        if (n.op === "Slice") {
          const size = [...toFloat64(constIn(2, "size"))];
          end = size.map((sz, i) => (sz < 0 ? s[i]! : begin[i]! + sz));
          strides = new Array(begin.length).fill(1);
        } else {
          end = [...toFloat64(constIn(2, "end"))];
          strides = [...toFloat64(constIn(3, "strides"))];
          ellipsis = attrI("ellipsis_mask", 0);
          if (ellipsis & (ellipsis - 1)) {
            throw new ModelError(`${where}: expected at most one ellipsis in the slice spec`);
          }
          bm = attrI("begin_mask", 0);
          em = attrI("end_mask", 0);
          shrink = attrI("shrink_axis_mask", 0);
          newAxis = attrI("new_axis_mask", 0);
        }
        // The masks index the slice spec, whose new axes consume no input axis: walk the spec
        // to one (begin, end, stride) per input axis and the output shape around it.
        const starts: number[] = [], ends: number[] = [], steps: number[] = [];
        const lens: number[] = [], finalShape: number[] = [], shrunk: number[] = [];
        const axisOf = (b: number, e: number, st: number, size: number) => {
          // Clamped as TensorFlow does: forward within [0, size], backward within [−1, size − 1].
          const [lo, hi] = st > 0 ? [0, size] : [-1, size - 1];
          const b2 = Math.min(Math.max(b, lo), hi), e2 = Math.min(Math.max(e, lo), hi);
          starts.push(b2);
          ends.push(e2);
          steps.push(st);
          lens.push(Math.max(0, Math.ceil((e2 - b2) / st)));
        };
        // An ellipsis stands for every input axis the rest of the spec leaves unaddressed.
        const addressed = begin.filter((_, j) => !((newAxis >> j) & 1) && !((ellipsis >> j) & 1))
          .length;
        let d = 0;
        for (let j = 0; j < begin.length; j++) {
          if ((ellipsis >> j) & 1) {
            for (const stop = d + rank - addressed; d < stop; d++) {
              axisOf(0, s[d]!, 1, s[d]!);
              finalShape.push(s[d]!);
            }
            continue;
          }
          if ((newAxis >> j) & 1) {
            finalShape.push(1);
            continue;
          }
          if (d >= rank) {
            throw new ModelError(
              `${where}: the slice spec addresses more than the input's ${rank} axes`,
            );
          }
          const size = s[d]!;
          const st = strides[j]!;
          const b = (bm >> j) & 1
            ? (st > 0 ? 0 : size - 1)
            : begin[j]! < 0
            ? begin[j]! + size
            : begin[j]!;
          const e = (shrink >> j) & 1
            ? b + 1
            : (em >> j) & 1
            ? (st > 0 ? size : -1)
            : end[j]! < 0
            ? end[j]! + size
            : end[j]!;
          axisOf(b, e, st, size);
          if ((shrink >> j) & 1) shrunk.push(d);
          else finalShape.push(lens[d]!);
          d++;
        }
        for (; d < rank; d++) {
          axisOf(0, s[d]!, 1, s[d]!);
          finalShape.push(s[d]!);
        }
        if (x.kind === "const") {
          set({ kind: "const", t: reshapeConst(sliceConst(x.t, starts, lens, steps), finalShape) });
          break;
        }
        const axes = starts.map((_, i) => i);
        // A backward slice through index 0 ends before it: "−∞" for ONNX Slice.
        const endsFixed = ends.map((e, i) => (e === -1 && steps[i]! < 0 ? -(2 ** 62) : e));
        const reshaped = !newAxis && !shrink ? n.name : `${n.name}/slice`;
        let y = emit(
          "Slice",
          [
            x.name,
            constName(i64(starts), `${n.name}/starts`),
            constName(i64(endsFixed), `${n.name}/ends`),
            constName(i64(axes), `${n.name}/axes`),
            constName(i64(steps), `${n.name}/steps`),
          ],
          {},
          reshaped,
        )[0]!;
        if (newAxis) {
          y = emit("Reshape", [y, constName(i64(finalShape), `${n.name}/shape`)], {}, n.name)[0]!;
        } else if (shrink) {
          y = emit("Squeeze", [y, constName(i64(shrunk), `${n.name}/axes`)], {}, n.name)[0]!;
        }
        set(out(y, x.dtype, finalShape));
        break;
      }
      case "Cast": {
        const to = TF_DTYPES[attr("DstT")?.type ?? "DT_FLOAT"] ?? "float32";
        const x = inp(0);
        if (x.kind === "const") {
          set({ kind: "const", t: fromNumbers(to, x.t.dims, toFloat64(x.t)) });
          break;
        }
        set(
          out(emit("Cast", [x.name], { to: int(ONNX_DTYPE_CODES[to]) }, n.name)[0]!, to, x.shape),
        );
        break;
      }
      case "Softmax": {
        const x = inp(0) as Extract<Val, { kind: "tensor" }>;
        set(out(emit("Softmax", [x.name], { axis: int(-1) }, n.name)[0]!, x.dtype, x.shape));
        break;
      }
      case "FusedBatchNorm":
      case "FusedBatchNormV3": {
        const x = inp(0) as Extract<Val, { kind: "tensor" }>;
        const [scale, offset, mean, variance] = [1, 2, 3, 4].map((i) =>
          toFloat64(constIn(i, "batch norm parameter"))
        );
        const eps = attrF("epsilon", 1e-3);
        const c = scale!.length;
        const mul = new Float64Array(c);
        const add = new Float64Array(c);
        for (let i = 0; i < c; i++) {
          mul[i] = scale![i]! / Math.sqrt(variance![i]! + eps);
          add[i] = offset![i]! - mean![i]! * mul[i]!;
        }
        const shape = nhwc() ? [c] : [c, 1, 1];
        const m = emit(
          "Mul",
          [x.name, constName(fromNumbers("float32", shape, mul), `${n.name}/scale`)],
          {},
          `${n.name}/mul`,
        )[0]!;
        set(
          out(
            emit(
              "Add",
              [m, constName(fromNumbers("float32", shape, add), `${n.name}/offset`)],
              {},
              n.name,
            )[0]!,
            x.dtype,
            x.shape,
          ),
        );
        break;
      }
      case "SparseToDense": {
        if (!allConst) throw new UnsupportedOpError("SparseToDense on computed tensors", { where });
        const indices = constIn(0, "indices");
        const shape = [...toFloat64(constIn(1, "output shape"))];
        const vals = constIn(2, "values");
        const dflt = toFloat64(constIn(3, "default value"))[0] ?? 0;
        const dense = new Float64Array(sizeOf(shape)).fill(dflt);
        const iv = toFloat64(indices);
        const vv = toFloat64(vals);
        const rank = shape.length;
        const count = indices.dims.length === 0 ? 1 : indices.dims[0]!;
        const strides = shape.map((_, i) => sizeOf(shape.slice(i + 1)));
        for (let k = 0; k < count; k++) {
          let off = 0;
          for (let a = 0; a < rank; a++) off += iv[k * rank + a]! * strides[a]!;
          dense[off] = vv.length === 1 ? vv[0]! : vv[k]!;
        }
        set({ kind: "const", t: fromNumbers(vals.dtype, shape, dense) });
        break;
      }
      // Anchor generators compute on shapes: with static shapes these fold to constants, and map
      // to their ONNX ops on computed tensors.
      case "Ceil":
      case "Floor":
      case "Reciprocal": {
        const x = inp(0);
        if (x.kind === "const") {
          const f = { Ceil: Math.ceil, Floor: Math.floor, Reciprocal: (v: number) => 1 / v }[n.op]!;
          set({ kind: "const", t: fromNumbers(x.t.dtype, x.t.dims, toFloat64(x.t).map(f)) });
        } else unary(n.op);
        break;
      }
      case "Size": {
        const size = shapeOf(inp(0)).reduce((a, b) => a * b, 1);
        const to = TF_DTYPES[attr("out_type")?.type ?? "DT_INT32"] ?? "int32";
        set({ kind: "const", t: fromNumbers(to, [], [size]) });
        break;
      }
      case "Range": {
        const [start, limit, delta] = [0, 1, 2].map((i) =>
          toFloat64(constIn(i, "range bound"))[0]!
        );
        const count = Math.max(0, Math.ceil((limit! - start!) / delta!));
        const dtype = TF_DTYPES[attr("Tidx")?.type ?? ""] ?? constIn(0, "start").dtype;
        set({
          kind: "const",
          t: fromNumbers(
            dtype,
            [count],
            Array.from({ length: count }, (_, i) => start! + i * delta!),
          ),
        });
        break;
      }
      case "Tile":
      case "BroadcastTo": {
        const x = inp(0);
        const arg = [...toFloat64(constIn(1, n.op === "Tile" ? "multiples" : "shape"))];
        const s = shapeOf(x);
        let shape: number[];
        if (n.op === "Tile") {
          if (arg.length !== s.length) {
            throw new ModelError(
              `${where}: expected ${s.length} multiples but found ${arg.length}`,
            );
          }
          shape = s.map((d, i) => d * arg[i]!);
        } else {
          // The target shape exactly: broadcasting may not widen it.
          const to = broadcastDims(s, arg);
          if (!to || to.length !== arg.length || to.some((d, i) => d !== arg[i])) {
            throw new ModelError(`${where}: cannot broadcast [${s}] to [${arg}]`);
          }
          shape = arg;
        }
        if (x.kind === "const") {
          set({ kind: "const", t: repeatConst(x.t, shape) });
          break;
        }
        const op = n.op === "Tile" ? "Tile" : "Expand";
        const second = constName(
          i64(n.op === "Tile" ? arg : shape),
          `${n.name}/${op.toLowerCase()}`,
        );
        set(out(emit(op, [x.name, second], {}, n.name)[0]!, x.dtype, shape));
        break;
      }
      case "Shape": {
        const s = shapeOf(inp(0));
        const to = TF_DTYPES[attr("out_type")?.type ?? "DT_INT32"] ?? "int32";
        set({ kind: "const", t: fromNumbers(to, [s.length], s) });
        break;
      }
      case "GatherV2": {
        const axis = normAxis(Number(toFloat64(constIn(2, "axis"))[0]), rankOf(inp(0)));
        if (attrI("batch_dims", 0) !== 0) {
          throw new UnsupportedOpError("GatherV2 with batch_dims ≠ 0", { where });
        }
        if (allConst && axis === 0) {
          set({ kind: "const", t: gatherConst(constIn(0, "params"), constIn(1, "indices")) });
          break;
        }
        const [params, indices] = [inp(0), inp(1)];
        const ps = shapeOf(params);
        set(out(
          emit(
            "Gather",
            [nameOf(params, `${n.name}/params`), nameOf(indices, `${n.name}/indices`)],
            { axis: int(axis) },
            n.name,
          )[0]!,
          dtypeOf(params),
          [...ps.slice(0, axis), ...shapeOf(indices), ...ps.slice(axis + 1)],
        ));
        break;
      }
      case "Equal":
      case "NotEqual":
      case "Greater":
      case "GreaterEqual":
      case "Less":
      case "LessEqual":
        compare(n.op);
        break;
      case "FloorDiv":
      case "FloorMod":
        floorDivMod(n.op === "FloorMod");
        break;
      case "TopKV2": {
        const x = inp(0);
        const k = Number(toFloat64(constIn(1, "k"))[0]);
        const xs = shapeOf(x);
        const last = xs[xs.length - 1]!;
        if (!(Number.isInteger(k) && k >= 0 && k <= last)) {
          throw new ModelError(`${where}: expected k in [0, ${last}] but found ${k}`);
        }
        const shape = [...xs.slice(0, -1), k];
        // ONNX TopK returns int64 indices; TensorFlow's are int32, and the ops after them
        // (FloorDiv by an int32 constant, Gather) expect that.
        const [values, indices] = emit(
          "TopK",
          [nameOf(x, `${n.name}/x`), constName(i64([k]), `${n.name}/k`)],
          {
            axis: int(-1),
            largest: int(1),
            sorted: int(attrB("sorted") || !attr("sorted") ? 1 : 0),
          },
          n.name,
          2,
        );
        const to = TF_DTYPES[attr("index_type")?.type ?? "DT_INT32"] ?? "int32";
        const idx = to === "int64" ? indices! : emit(
          "Cast",
          [indices!],
          { to: int(ONNX_DTYPE_CODES[to]) },
          `${n.name}/indices`,
        )[0]!;
        set(out(values!, dtypeOf(x), shape), out(idx, to, shape));
        break;
      }
      case "Fill": {
        const shape = [...toFloat64(constIn(0, "dims"))];
        const v = constIn(1, "value");
        set({
          kind: "const",
          t: fromNumbers(v.dtype, shape, new Float64Array(sizeOf(shape)).fill(toFloat64(v)[0]!)),
        });
        break;
      }
      case "Mean":
      case "Max":
      case "Min":
      case "Sum":
      case "Prod": {
        const { onnxOp, fold } = REDUCTIONS[n.op]!;
        const x = inp(0);
        const xs = shapeOf(x);
        const axes = [
          ...new Set([...toFloat64(constIn(1, "axes"))].map((a) => normAxis(a, xs.length))),
        ];
        const keep = attrB("keep_dims");
        if (x.kind === "const") {
          // Shape arithmetic on constants (the number of elements of a shape, say) folds.
          set({ kind: "const", t: reduceConst(x.t, axes, { reducer: fold, keepDims: keep }) });
          break;
        }
        // No axes: TensorFlow reduces nothing, where an ONNX reduction would reduce every axis.
        if (axes.length === 0) {
          set(x);
          break;
        }
        const shape = keep
          ? xs.map((d, i) => (axes.includes(i) ? 1 : d))
          : xs.filter((_, i) => !axes.includes(i));
        const keepdims = int(keep ? 1 : 0);
        // Axes are ReduceSum's second input from opset 13, the importer's lowest; the other
        // reductions keep them an attribute until opset 18.
        const y = onnxOp === "ReduceSum"
          ? emit(onnxOp, [x.name, constName(i64(axes), `${n.name}/axes`)], { keepdims }, n.name)
          : emit(onnxOp, [x.name], { axes: ints(axes), keepdims }, n.name);
        set(out(y[0]!, x.dtype, shape));
        break;
      }
      case "ArgMax": {
        // ONNX ArgMax gives int64 (the first of tied maxima, as TensorFlow); TensorFlow's
        // output_type defaults to int64 too, and a graph that asks for int32 gets a Cast.
        const x = inp(0);
        const xs = shapeOf(x);
        const axis = normAxis(Number(toFloat64(constIn(1, "dimension"))[0]), xs.length);
        const to = TF_DTYPES[attr("output_type")?.type ?? "DT_INT64"] ?? "int64";
        if (x.kind === "const") {
          const argMax = (v: number[]) => v.indexOf(Math.max(...v));
          set({ kind: "const", t: reduceConst(x.t, [axis], { reducer: argMax, dtype: to }) });
          break;
        }
        const shape = xs.filter((_, i) => i !== axis);
        let y = emit(
          "ArgMax",
          [x.name],
          { axis: int(axis), keepdims: int(0) },
          to === "int64" ? n.name : `${n.name}/argmax`,
        )[0]!;
        if (to !== "int64") y = emit("Cast", [y], { to: int(ONNX_DTYPE_CODES[to]) }, n.name)[0]!;
        set(out(y, to, shape));
        break;
      }
      case "SquaredDifference": {
        if (allConst) {
          const sq = (a: number, b: number) => (a - b) * (a - b);
          set({ kind: "const", t: broadcastBinary(constIn(0, "x"), constIn(1, "y"), sq) });
          break;
        }
        const { x, y, dtype, shape } = operands();
        const d = emit("Sub", [x, y], {}, `${n.name}/sub`)[0]!;
        set(out(emit("Mul", [d, d], {}, n.name)[0]!, dtype, shape));
        break;
      }
      case "LogicalAnd":
        binary("And", (a, b) => (a && b ? 1 : 0));
        break;
      case "GatherNd": {
        const [params, indices] = [inp(0), inp(1)];
        const ps = shapeOf(params), is = shapeOf(indices);
        const k = is[is.length - 1]!;
        if (!(is.length >= 1 && k <= ps.length)) {
          throw new ModelError(
            `${where}: expected indices [..., k] with k ≤ ${ps.length} (the rank of params [${ps}]) but found [${is}]`,
          );
        }
        if (params.kind === "const" && indices.kind === "const") {
          set({ kind: "const", t: gatherNdConst(params.t, indices.t) });
          break;
        }
        // ONNX GatherND takes int64 indices only.
        const idx = indices.kind === "const" || indices.dtype === "int64"
          ? nameAs(indices, "int64", `${n.name}/indices`)
          : emit(
            "Cast",
            [indices.name],
            { to: int(ONNX_DTYPE_CODES.int64) },
            `${n.name}/indices`,
          )[0]!;
        set(out(
          emit(
            "GatherND",
            [nameOf(params, `${n.name}/params`), idx],
            { batch_dims: int(0) },
            n.name,
          )[0]!,
          dtypeOf(params),
          [...is.slice(0, -1), ...ps.slice(k)],
        ));
        break;
      }
      case "Select":
      case "SelectV2": {
        const [c, a, b] = [inp(0), inp(1), inp(2)];
        let [cs, as, bs] = [shapeOf(c), shapeOf(a), shapeOf(b)];
        let cond = c;
        if (n.op === "Select") {
          // Select (v1) does not broadcast: the branches share one shape, and the condition is
          // that shape or, a vector, picks whole rows along the first axis.
          if (as.join() !== bs.join()) {
            throw new ModelError(
              `${where}: expected branches of one shape but found [${as}] and [${bs}]`,
            );
          }
          if (cs.length === 1 && as.length > 1 && cs[0] === as[0]) {
            const rows = [cs[0]!, ...new Array(as.length - 1).fill(1)];
            cond = cond.kind === "const" ? { kind: "const", t: reshapeConst(cond.t, rows) } : out(
              emit(
                "Reshape",
                [cond.name, constName(i64(rows), `${n.name}/rows`)],
                {},
                `${n.name}/rows`,
              )[0]!,
              "bool",
              rows,
            );
            cs = rows;
          } else if (cs.join() !== as.join()) {
            throw new ModelError(
              `${where}: expected a condition of the branches' shape [${as}] or a vector of ${
                as[0]
              } rows but found [${cs}]`,
            );
          }
        }
        const shape = broadcastDims(cs, broadcastDims(as, bs) ?? []);
        if (!shape || !broadcastDims(as, bs)) {
          throw new ModelError(
            `${where}: expected shapes that broadcast but found [${cs}], [${as}] and [${bs}]`,
          );
        }
        if (cond.kind === "const" && a.kind === "const" && b.kind === "const") {
          const [ct, at, bt] = [cond.t, a.t, b.t].map((t) => toFloat64(repeatConst(t, shape)));
          set({
            kind: "const",
            t: fromNumbers(a.t.dtype, shape, ct!.map((v, i) => (v ? at![i]! : bt![i]!))),
          });
          break;
        }
        // A constant branch takes the computed one's dtype (a float zeros_like beside int32).
        const dtype = a.kind === "tensor" ? a.dtype : b.kind === "tensor" ? b.dtype : dtypeOf(a);
        const ins = [
          nameAs(cond, "bool", `${n.name}/cond`),
          nameAs(a, dtype, `${n.name}/1`),
          nameAs(b, dtype, `${n.name}/2`),
        ];
        set(out(emit("Where", ins, {}, n.name)[0]!, dtype, shape));
        break;
      }
      default:
        throw new UnsupportedOpError(n.op, { where, supported: SUPPORTED_TFJS_OPS });
    }
  }

  // Graph outputs: name each after its TensorFlow node (":0" dropped).
  const outputs: Graph["outputs"][number][] = [];
  const renames = new Map<string, string>();
  const outputNames = new Set<string>();
  for (const r of outputRefs) {
    const { node, index } = parseRef(r);
    const v = values.get(node)?.[index];
    if (!v) throw new ModelError(`${src}: output "${r}" has no value`);
    const name = index ? `${node}_${index}` : node;
    const inputNames = new Set(inputs.map((i) => i.name));
    if (
      v.kind === "const" || inputNames.has(v.name) || outputNames.has(v.name) || renames.has(v.name)
    ) {
      const src2 = v.kind === "const"
        ? constName(v.t, `${name}/value`)
        : (renames.get(v.name) ?? v.name);
      nodes.push({
        name: fresh(`${name}/Identity`),
        op: "Identity",
        domain: "",
        inputs: [src2],
        outputs: [name],
        attributes: {},
      });
    } else if (v.name !== name) renames.set(v.name, name);
    outputNames.add(name);
    outputs.push({
      name,
      dtype: v.kind === "const" ? v.t.dtype : v.dtype,
      shape: v.kind === "const" ? [...v.t.dims] : v.shape,
    });
  }
  const rn = (s: string) => renames.get(s) ?? s;
  const renamed = nodes.map((nd) => ({
    ...nd,
    inputs: nd.inputs.map(rn),
    outputs: nd.outputs.map(rn),
  }));

  let graph = emptyGraph({
    name: src.split("/").at(-1)?.replace(/\.json$/, "") ?? "tfjs",
    nodes: renamed,
    initializers,
    inputs,
    outputs,
    opsetImports: [{ domain: "", version: opts.opset }],
    irVersion: 8,
    producerName: "clipq-convert-tfjs",
  });
  if (opts.optimizeTransposes) graph = sinkTransposes(graph);
  return fuseConvPadBias(graph);
}

/**
 * Reads and converts a tfjs graph model (model.json and its shards).
 *
 * @param path Path of model.json.
 * @param options See {@linkcode convertTfjs}.
 * @returns The ONNX graph.
 */
export async function fromTfjs(path: string, options: TfjsOptions = {}): Promise<Graph> {
  return convertTfjs(await readTfjsModel(path), options);
}
