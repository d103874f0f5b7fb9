/**
 * Opset upgrade of the default ONNX domain (to 13 by default, at most 21): attributes that became
 * inputs turn into int64/scalar initializers (Reduce* axes at 18 too), Upsample becomes Resize,
 * Resize-10 gets the opset-11 input layout, Softmax/LogSoftmax/Hardmax keep their pre-13 "flatten
 * to 2-D" meaning, and a Split without split sizes gets num_outputs at 18.
 * Ops whose meaning changed in a way this module does not rewrite are an UnsupportedOpError.
 *
 * @module
 */
import { ConfigError, ModelError, UnsupportedOpError } from "./errors.ts";
import {
  attrFloat,
  attrFloats,
  type Attribute,
  attrInt,
  attrInts,
  attrString,
  freshName,
  type Graph,
  type Node,
  node as makeNode,
} from "./graph.ts";
import { inferShapes, type ShapeInfo } from "./shapes.ts";
import {
  allocate,
  type DType,
  float32,
  numberToFloat16,
  type Tensor,
  toFloat64,
} from "./tensor.ts";

/** Options of {@linkcode upgradeOpset}. */
export interface UpgradeOptions {
  /** Target opset of the default domain, 7..21 and not below the model's. */
  target?: number;
}

/** Defaults of {@linkcode UpgradeOptions}. */
export const defaults = { target: 13 } satisfies UpgradeOptions;

/**
 * Highest target opset (onnxruntime 1.30 runs it). Debian's onnx checker (onnx 1.12) knows opsets up
 * to 17 and IR ≤ 8: a model meant for it stays at 17.
 */
export const MAX_OPSET = 21;

/** Lowest source opset handled (older ones carry legacy broadcast/consumed_inputs attributes). */
export const MIN_SOURCE_OPSET = 7;

/**
 * Ops whose meaning does not change between opset 7 (or the one that introduced them) and 21 except
 * for new types, new optional attributes or inputs whose defaults keep the old behaviour
 * (Pad-18 axes, Resize-18 antialias/axes, AveragePool-19 dilations, QuantizeLinear-21 block_size…),
 * or relaxed constraints (e.g. negative axes).
 */
const UNCHANGED: ReadonlySet<string> = new Set([
  "Abs",
  "Acos",
  "Acosh",
  "Add",
  "And",
  "ArgMax",
  "ArgMin",
  "Asin",
  "Asinh",
  "Atan",
  "Atanh",
  "AveragePool",
  "BitShift",
  "BitwiseAnd",
  "BitwiseNot",
  "BitwiseOr",
  "BitwiseXor",
  "CenterCropPad",
  "Cast",
  "Ceil",
  "Celu",
  "Col2Im",
  "Compress",
  "Concat",
  "Constant",
  "ConstantOfShape",
  "Conv",
  "ConvInteger",
  "ConvTranspose",
  "Cos",
  "Cosh",
  "CumSum",
  "DepthToSpace",
  "DequantizeLinear",
  "Det",
  "Div",
  "Einsum",
  "Elu",
  "Equal",
  "Erf",
  "Exp",
  "Expand",
  "EyeLike",
  "Flatten",
  "Floor",
  "Gather",
  "GatherElements",
  "GatherND",
  "Gelu",
  "Gemm",
  "GlobalAveragePool",
  "GlobalLpPool",
  "GlobalMaxPool",
  "Greater",
  "GreaterOrEqual",
  "HardSigmoid",
  "HardSwish",
  "Identity",
  "InstanceNormalization",
  "IsInf",
  "IsNaN",
  "LRN",
  "LayerNormalization",
  "LeakyRelu",
  "Less",
  "LessOrEqual",
  "Log",
  "LpNormalization",
  "LpPool",
  "MatMul",
  "MatMulInteger",
  "Max",
  "MaxPool",
  "MaxRoiPool",
  "MaxUnpool",
  "Mean",
  "MeanVarianceNormalization",
  "Min",
  "Mish",
  "Mod",
  "Mul",
  "Neg",
  "NonMaxSuppression",
  "NonZero",
  "Not",
  "OneHot",
  "Or",
  "PRelu",
  "Pow",
  "QLinearConv",
  "QLinearMatMul",
  "QuantizeLinear",
  "Range",
  "Reciprocal",
  "Relu",
  "Reshape",
  "RoiAlign",
  "Round",
  "ScatterElements",
  "ScatterND",
  "Selu",
  "Shape",
  "Shrink",
  "Sigmoid",
  "Sign",
  "Sin",
  "Sinh",
  "Size",
  "Softplus",
  "Softsign",
  "SpaceToDepth",
  "Sqrt",
  "Sub",
  "Sum",
  "Tan",
  "Tanh",
  "ThresholdedRelu",
  "Tile",
  "Transpose",
  "Where",
  "Xor",
]);

/** Ops rewritten here, with the opset where their form changed. */
const REWRITTEN: Readonly<Record<string, number>> = {
  Clip: 11,
  Slice: 10,
  Squeeze: 13,
  Unsqueeze: 13,
  Split: 18,
  Pad: 11,
  ReduceSum: 13,
  ReduceL1: 18,
  ReduceL2: 18,
  ReduceLogSum: 18,
  ReduceLogSumExp: 18,
  ReduceMax: 18,
  ReduceMean: 18,
  ReduceMin: 18,
  ReduceProd: 18,
  ReduceSumSquare: 18,
  GroupNormalization: 21,
  TopK: 10,
  Upsample: 10,
  Resize: 11,
  Softmax: 13,
  LogSoftmax: 13,
  Hardmax: 13,
  BatchNormalization: 14,
  Dropout: 12,
};

const INT64_MAX = 2n ** 63n - 1n;
const INT64_MIN = -(2n ** 63n);

/** int64 from attribute numbers, saturating (INT64_MAX read as a double is 2^63, out of range). */
function int64Of(values: readonly number[]): Tensor {
  const data = BigInt64Array.from(values, (v) => {
    const b = BigInt(Math.trunc(v));
    return b > INT64_MAX ? INT64_MAX : b < INT64_MIN ? INT64_MIN : b;
  });
  return { dtype: "int64", dims: [values.length], data };
}

/** A scalar of the given float-ish or integer dtype holding v. */
function scalarOf(dtype: DType, v: number): Tensor {
  const data = allocate(dtype, 1);
  if (data instanceof BigInt64Array || data instanceof BigUint64Array) data[0] = BigInt(v);
  else if (dtype === "float16") (data as Uint16Array)[0] = numberToFloat16(v);
  else if (Array.isArray(data)) {
    throw new ModelError(`Expected a numeric dtype for a scalar but found ${dtype}`);
  } else (data as Float32Array)[0] = v;
  return { dtype, dims: [], data };
}

function without(attrs: Readonly<Record<string, Attribute>>, ...names: string[]) {
  const out: Record<string, Attribute> = {};
  for (const [k, v] of Object.entries(attrs)) if (!names.includes(k)) out[k] = v;
  return out;
}

interface Context {
  readonly graph: Graph;
  readonly from: number;
  readonly target: number;
  readonly taken: Set<string>;
  readonly initializers: Map<string, Tensor>;
  readonly nodes: Node[];
  shapes?: Map<string, ShapeInfo>;
}

function constant(c: Context, base: string, t: Tensor): string {
  const name = freshName(c.graph, base, c.taken);
  c.initializers.set(name, t);
  return name;
}

function infoOf(c: Context, name: string): ShapeInfo | undefined {
  if (!c.shapes) {
    try {
      c.shapes = inferShapes(c.graph);
    } catch {
      c.shapes = new Map();
    }
  }
  return c.shapes.get(name);
}

function dtypeOf(c: Context, n: Node, name: string): DType {
  const d = infoOf(c, name)?.dtype;
  if (d) return d;
  throw new ModelError(
    `node "${n.name}" (${n.op}): expected to know the element type of input "${name}" to write it as a constant input, but shape inference could not tell`,
  );
}

/** Constant float values of a tensor from an initializer or a Constant node, if any. */
function constValues(c: Context, name: string): number[] | undefined {
  const t = c.initializers.get(name);
  if (t) return [...toFloat64(t)];
  const p = c.nodes.find((n) => n.outputs.includes(name)) ??
    c.graph.nodes.find((n) => n.outputs.includes(name));
  if (p?.op === "Constant" && p.attributes.value?.type === "tensor") {
    return [...toFloat64(p.attributes.value.value)];
  }
  return undefined;
}

function graph(c: Context): Graph {
  return c.graph;
}

function crosses(c: Context, at: number): boolean {
  return c.from < at && c.target >= at;
}

/** Rewrites one node; pushes the result (one or more nodes) onto c.nodes. */
function upgradeNode(c: Context, n: Node): void {
  const push = (m: Node): void => {
    c.nodes.push(m);
  };
  const where = `node "${n.name}"`;
  switch (n.op) {
    case "Clip": {
      if (!crosses(c, 11)) return push(n);
      const dtype = dtypeOf(c, n, n.inputs[0]!);
      const min = attrFloat(n, "min");
      const max = attrFloat(n, "max");
      const inputs = [
        n.inputs[0]!,
        min === undefined ? "" : constant(c, `${n.name}_min`, scalarOf(dtype, min)),
        max === undefined ? "" : constant(c, `${n.name}_max`, scalarOf(dtype, max)),
      ];
      while (inputs.at(-1) === "") inputs.pop();
      return push({ ...n, inputs, attributes: without(n.attributes, "min", "max") });
    }
    case "Slice": {
      if (!crosses(c, 10)) return push(n);
      const starts = attrInts(n, "starts");
      const ends = attrInts(n, "ends");
      if (!starts || !ends) {
        throw new ModelError(`${where} (Slice-1): expected attributes starts and ends`);
      }
      const axes = attrInts(n, "axes");
      const inputs = [
        n.inputs[0]!,
        constant(c, `${n.name}_starts`, int64Of(starts)),
        constant(c, `${n.name}_ends`, int64Of(ends)),
        ...(axes ? [constant(c, `${n.name}_axes`, int64Of(axes))] : []),
      ];
      return push({ ...n, inputs, attributes: without(n.attributes, "starts", "ends", "axes") });
    }
    case "Squeeze":
    case "Unsqueeze":
    case "ReduceSum": {
      if (!crosses(c, 13)) return push(n);
      const axes = attrInts(n, "axes");
      const inputs = axes ? [n.inputs[0]!, constant(c, `${n.name}_axes`, int64Of(axes))] : n.inputs;
      return push({ ...n, inputs, attributes: without(n.attributes, "axes") });
    }
    case "ReduceL1":
    case "ReduceL2":
    case "ReduceLogSum":
    case "ReduceLogSumExp":
    case "ReduceMax":
    case "ReduceMean":
    case "ReduceMin":
    case "ReduceProd":
    case "ReduceSumSquare": {
      if (!crosses(c, 18)) return push(n);
      // No axes (reduce all) stays no axes input: noop_with_empty_axes defaults to 0.
      const axes = attrInts(n, "axes");
      const inputs = axes ? [n.inputs[0]!, constant(c, `${n.name}_axes`, int64Of(axes))] : n.inputs;
      return push({ ...n, inputs, attributes: without(n.attributes, "axes") });
    }
    case "Split": {
      let m = n;
      if (crosses(c, 13)) {
        const split = attrInts(n, "split");
        const inputs = split
          ? [n.inputs[0]!, constant(c, `${n.name}_split`, int64Of(split))]
          : n.inputs.slice(0, 1);
        m = { ...n, inputs, attributes: without(n.attributes, "split") };
      }
      // From 18 equal parts need their count: num_outputs, or the split sizes input.
      if (crosses(c, 18) && !m.inputs[1] && attrInt(m, "num_outputs") === undefined) {
        m = {
          ...m,
          inputs: m.inputs.slice(0, 1),
          attributes: { ...m.attributes, num_outputs: { type: "int", value: m.outputs.length } },
        };
      }
      return push(m);
    }
    case "GroupNormalization":
      // 21 made scale and bias per channel (they were per group).
      if (!crosses(c, 21)) return push(n);
      throw new UnsupportedOpError("GroupNormalization", {
        opset: c.from,
        where: `${where}: its scale and bias are per group before opset 21, per channel from 21`,
        supported: [`a target of at most 20 for GroupNormalization-${c.from}`],
      });
    case "Pad": {
      if (!crosses(c, 11)) return push(n);
      const pads = attrInts(n, "pads");
      if (!pads) throw new ModelError(`${where} (Pad-2): expected attribute pads`);
      const value = attrFloat(n, "value", 0);
      const mode = attrString(n, "mode", "constant");
      const inputs = [n.inputs[0]!, constant(c, `${n.name}_pads`, int64Of(pads))];
      if (mode === "constant" && value !== 0) {
        inputs.push(constant(c, `${n.name}_value`, scalarOf(dtypeOf(c, n, n.inputs[0]!), value)));
      }
      return push({ ...n, inputs, attributes: without(n.attributes, "pads", "value") });
    }
    case "TopK": {
      if (!crosses(c, 10)) return push(n);
      const k = attrInt(n, "k");
      if (k === undefined) throw new ModelError(`${where} (TopK-1): expected attribute k`);
      const inputs = [n.inputs[0]!, constant(c, `${n.name}_k`, int64Of([k]))];
      return push({ ...n, inputs, attributes: without(n.attributes, "k") });
    }
    case "Upsample":
      // Upsample is deprecated from 10 on; Resize with asymmetric coordinates is the same op.
      if (c.target >= 10) return push(toResize(c, n, upsampleScales(c, n)));
      if (!crosses(c, 9) || !attrFloats(n, "scales")) return push(n);
      return push({
        ...n,
        inputs: [n.inputs[0]!, upsampleScales(c, n)],
        attributes: without(n.attributes, "scales"),
      });
    case "Resize":
      if (crosses(c, 11)) return push(toResize(c, n, n.inputs[1] ?? ""));
      if (
        crosses(c, 13) &&
        attrString(n, "coordinate_transformation_mode") === "tf_half_pixel_for_nn"
      ) {
        throw new UnsupportedOpError("Resize", {
          opset: c.from,
          where:
            `node "${n.name}" with coordinate_transformation_mode "tf_half_pixel_for_nn" (removed in opset 13)`,
          supported: [
            "half_pixel",
            "pytorch_half_pixel",
            "align_corners",
            "asymmetric",
            "tf_crop_and_resize",
          ],
        });
      }
      return push(n);
    case "Softmax":
    case "LogSoftmax":
    case "Hardmax":
      if (!crosses(c, 13)) return push(n);
      return softmax(c, n);
    case "BatchNormalization": {
      if (attrInt(n, "spatial", 1) !== 1) {
        throw new UnsupportedOpError("BatchNormalization", {
          opset: c.from,
          where: `${where} with spatial=0`,
          supported: ["spatial=1"],
        });
      }
      // From 14 the running-statistics outputs exist only in training mode; inference never
      // reads them, so a model that does is not an inference model we can carry across.
      const extras = n.outputs.slice(1).filter((o) => o !== "");
      if (crosses(c, 14) && extras.length > 0) {
        const used = new Set([
          ...graph(c).nodes.flatMap((m) => m.inputs),
          ...graph(c).outputs.map((o) => o.name),
        ]);
        const read = extras.filter((o) => used.has(o));
        if (read.length > 0) {
          throw new UnsupportedOpError("BatchNormalization", {
            opset: c.from,
            where: `${where} whose training outputs [${read.join(", ")}] are read`,
            supported: ["inference BatchNormalization (output 0 only)"],
          });
        }
      }
      const outputs = crosses(c, 14) ? n.outputs.slice(0, 1) : n.outputs;
      return push({ ...n, outputs, attributes: without(n.attributes, "spatial", "is_test") });
    }
    case "Dropout": {
      // Inference ignores the ratio; at 12 it moved to an input, so keep it there.
      const ratio = attrFloat(n, "ratio");
      const attributes = without(n.attributes, "is_test", "ratio");
      if (c.target >= 12 && ratio !== undefined && c.from < 12) {
        const r = constant(c, `${n.name}_ratio`, float32([], [ratio]));
        return push({ ...n, inputs: [n.inputs[0]!, r], attributes });
      }
      return push({
        ...n,
        attributes: c.target >= 12 ? attributes : without(n.attributes, "is_test"),
      });
    }
  }
  if (UNCHANGED.has(n.op)) return push(n);
  // The known ops are every standard one: listing ~190 names made a kilobyte-long error line.
  throw new UnsupportedOpError(n.op, {
    opset: c.from,
    where: `${where}: cannot upgrade to opset ${c.target}`,
    supported: [`the ${UNCHANGED.size + Object.keys(REWRITTEN).length} standard ONNX ops`],
  });
}

function upsampleScales(c: Context, n: Node): string {
  const attr = attrFloats(n, "scales");
  if (attr) return constant(c, `${n.name}_scales`, float32([attr.length], attr));
  const s = n.inputs[1];
  if (!s) throw new ModelError(`node "${n.name}" (Upsample): expected scales`);
  return s;
}

/** Resize-11+ with the asymmetric coordinates and floor rounding of Upsample/Resize-10. */
function toResize(c: Context, n: Node, scales: string): Node {
  let mode = attrString(n, "mode", "nearest");
  if (mode === "bilinear" || mode === "trilinear") mode = "linear";
  if (mode !== "nearest" && mode !== "linear") {
    throw new UnsupportedOpError(n.op, {
      opset: c.from,
      where: `node "${n.name}" with mode "${mode}"`,
      supported: ["nearest", "linear"],
    });
  }
  const attributes: Record<string, Attribute> = {
    ...without(n.attributes, "mode", "scales"),
    mode: { type: "string", value: mode },
    coordinate_transformation_mode: { type: "string", value: "asymmetric" },
  };
  if (mode === "nearest") {
    // Old nearest truncated the source coordinate when upsampling (floor) but rounded up when
    // downsampling; one nearest_mode covers only all-up or all-down.
    const values = constValues(c, scales);
    if (!values) {
      throw new UnsupportedOpError(n.op, {
        opset: c.from,
        where: `node "${n.name}" with non-constant scales "${scales}" in nearest mode`,
        supported: ["constant scales"],
      });
    }
    const down = values.some((v) => v < 1);
    const up = values.some((v) => v > 1);
    if (down && up) {
      throw new UnsupportedOpError(n.op, {
        opset: c.from,
        where: `node "${n.name}" with scales [${values.join(", ")}] mixing up- and downsampling`,
        supported: ["all scales ≥ 1", "all scales ≤ 1"],
      });
    }
    attributes.nearest_mode = { type: "string", value: down ? "ceil" : "floor" };
  }
  // roi is optional from 13; Resize-11/12 need an (empty) tensor there.
  const roi = c.target >= 13 ? "" : constant(c, `${n.name}_roi`, float32([0], []));
  return makeNode({
    ...n,
    op: "Resize",
    inputs: [n.inputs[0]!, roi, scales],
    attributes,
  });
}

/**
 * Pre-13 Softmax flattens the input to 2-D at `axis` and normalizes each row; from 13 it
 * normalizes along one axis. Equal when the axis is the last one; otherwise Flatten → Softmax →
 * Reshape back to the input's shape.
 */
function softmax(c: Context, n: Node): void {
  const x = n.inputs[0]!;
  const axis = attrInt(n, "axis", 1);
  const rank = infoOf(c, x)?.shape?.length;
  if (rank !== undefined && (axis === -1 || axis === rank - 1)) {
    c.nodes.push({ ...n, attributes: { ...n.attributes, axis: { type: "int", value: -1 } } });
    return;
  }
  const flat = freshName(c.graph, `${n.name}_flat`, c.taken);
  const soft = freshName(c.graph, `${n.name}_2d`, c.taken);
  const shape = freshName(c.graph, `${n.name}_shape`, c.taken);
  c.nodes.push(
    makeNode({
      name: flat,
      op: "Flatten",
      inputs: [x],
      outputs: [flat],
      attributes: { axis: { type: "int", value: axis } },
    }),
    {
      ...n,
      inputs: [flat],
      outputs: [soft],
      attributes: { ...n.attributes, axis: { type: "int", value: 1 } },
    },
    makeNode({ name: shape, op: "Shape", inputs: [x], outputs: [shape] }),
    makeNode({
      name: freshName(c.graph, `${n.name}_reshape`, c.taken),
      op: "Reshape",
      inputs: [soft, shape],
      outputs: [n.outputs[0]!],
    }),
  );
}

/**
 * The IR version an opset came with (onnx 1.10: IR 8 and opset 15; 1.14: 9 and 19; 1.16: 10 and 21),
 * 7 below 15.
 *
 * @param opset Opset of the default domain.
 * @returns The IR version to write with it.
 *
 * @example Usage
 * ```ts
 * import { irVersionFor } from "@clipq/onnx/upgrade";
 * import assert from "node:assert/strict";
 * assert.deepEqual([13, 17, 18, 19, 21].map(irVersionFor), [7, 8, 8, 9, 10]);
 * ```
 */
export function irVersionFor(opset: number): number {
  return opset >= 21 ? 10 : opset >= 19 ? 9 : opset >= 15 ? 8 : 7;
}

/**
 * Upgrades the default ONNX domain to a target opset, rewriting ops whose form or meaning changed.
 * Returns the graph unchanged when it is already at the target.
 *
 * @param graph A top-level graph (opset ≥ 7).
 * @param options Target opset (default 13, at most 21).
 * @returns A new graph importing the target opset.
 * @throws {ConfigError} When the target is out of range or below the model's opset.
 * @throws {UnsupportedOpError} For an op this module cannot carry across (names op and opset).
 * @throws {ModelError} When the model's opset is below 7 or a node lacks required attributes.
 *
 * @example Clip's min/max attributes become inputs at opset 11
 * ```ts
 * import { upgradeOpset } from "@clipq/onnx/upgrade";
 * import { emptyGraph, node, opsetOf } from "@clipq/onnx";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({
 *   opsetImports: [{ domain: "", version: 9 }],
 *   nodes: [node({ name: "c", op: "Clip", inputs: ["x"], outputs: ["y"], attributes: {
 *     min: { type: "float", value: 0 }, max: { type: "float", value: 6 } } })],
 *   inputs: [{ name: "x", dtype: "float32", shape: [2] }],
 *   outputs: [{ name: "y", dtype: "float32", shape: [2] }],
 * });
 * const up = upgradeOpset(g);
 * assert.equal(opsetOf(up), 13);
 * assert.deepEqual(up.nodes[0]?.inputs, ["x", "c_min", "c_max"]);
 * assert.deepEqual([...up.initializers.get("c_max")!.data], [6]);
 * ```
 */
export function upgradeOpset(graph: Graph, options: UpgradeOptions = {}): Graph {
  const { target } = { ...defaults, ...options };
  const from = graph.opsetImports.find((o) => o.domain === "" || o.domain === "ai.onnx")?.version;
  if (from === undefined) {
    throw new ModelError(
      `model "${graph.name}": expected an ONNX (default domain) opset import but found none`,
    );
  }
  if (!Number.isInteger(target) || target > MAX_OPSET || target < MIN_SOURCE_OPSET) {
    throw new ConfigError(
      "target",
      `expected an integer opset in ${MIN_SOURCE_OPSET}..${MAX_OPSET} but found ${target}`,
    );
  }
  if (target < from) {
    throw new ConfigError(
      "target",
      `expected a target at or above the model's opset ${from} (downgrades are not supported) but found ${target}`,
    );
  }
  if (from < MIN_SOURCE_OPSET) {
    throw new ModelError(
      `model "${graph.name}": expected opset ≥ ${MIN_SOURCE_OPSET} to upgrade but found ${from}`,
    );
  }
  if (target === from) return graph;
  const c: Context = {
    graph,
    from,
    target,
    taken: new Set(),
    initializers: new Map(graph.initializers),
    nodes: [],
  };
  // freshName fills `taken` from the graph on first use when the set is empty.
  freshName(graph, "__clipq_upgrade", c.taken);
  for (const n of graph.nodes) {
    if (n.domain !== "" && n.domain !== "ai.onnx") c.nodes.push(n);
    else upgradeNode(c, n);
  }
  return {
    ...graph,
    nodes: c.nodes,
    initializers: c.initializers,
    opsetImports: graph.opsetImports.map((o) =>
      o.domain === "" || o.domain === "ai.onnx" ? { ...o, version: target } : o
    ),
    irVersion: Math.max(graph.irVersion, irVersionFor(target)),
  };
}
