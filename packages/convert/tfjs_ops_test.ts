import assert from "node:assert/strict";
import { encode, ModelError } from "@clipq/onnx";
import { seededRandom } from "@clipq/onnx/builder";
import * as ort from "onnxruntime-node";
import * as tf from "@tensorflow/tfjs-core";
import "@tensorflow/tfjs-backend-cpu";
import { loadGraphModel } from "@tensorflow/tfjs-converter";
import { convertTfjs } from "./tfjs.ts";
import { decodeWeights, type TfNode } from "./tfjs_format.ts";

// Builds a tfjs graph model in memory: constants become weights, as the tfjs converter stores them.
class TfGraph {
  nodes: TfNode[] = [];
  specs: { name: string; shape: number[]; dtype: "float32" | "int32" }[] = [];
  chunks: Uint8Array[] = [];
  random = seededRandom(7);
  placeholder(name: string, shape: number[], dtype: "float32" | "int32" = "float32"): string {
    this.nodes.push({
      name,
      op: "Placeholder",
      attr: {
        dtype: { type: dtype === "float32" ? "DT_FLOAT" : "DT_INT32" },
        shape: { shape: { dim: shape.map((s) => ({ size: String(s) })) } },
      },
    });
    return name;
  }
  const(
    name: string,
    shape: number[],
    values: number[] | Float32Array,
    dtype: "float32" | "int32" = "float32",
  ): string {
    this.nodes.push({
      name,
      op: "Const",
      attr: { dtype: { type: dtype === "float32" ? "DT_FLOAT" : "DT_INT32" } },
    });
    this.specs.push({ name, shape, dtype });
    const arr = dtype === "float32" ? Float32Array.from(values) : Int32Array.from(values);
    this.chunks.push(new Uint8Array(arr.buffer));
    return name;
  }
  randomConst(name: string, shape: number[], scale = 0.3): string {
    const n = shape.reduce((a, b) => a * b, 1);
    return this.const(
      name,
      shape,
      Float32Array.from({ length: n }, () => (this.random.next() * 2 - 1) * scale),
    );
  }
  op(name: string, op: string, input: string[], attr: TfNode["attr"] = {}): string {
    // tfjs reads these attributes without defaults.
    const layout = /Conv|Pool/.test(op)
      ? { data_format: s("NHWC"), dilations: list([1, 1, 1, 1]) }
      : {};
    this.nodes.push({ name, op, input, attr: { ...layout, ...attr } });
    return name;
  }
  model() {
    const total = this.chunks.reduce((s, c) => s + c.byteLength, 0);
    const bytes = new Uint8Array(total);
    let at = 0;
    for (const c of this.chunks) {
      bytes.set(c, at);
      at += c.byteLength;
    }
    const json = {
      format: "graph-model",
      modelTopology: { node: this.nodes, versions: {} },
      weightsManifest: [{ paths: ["w.bin"], weights: this.specs }],
    };
    return { json, bytes };
  }
}

const s = (v: string) => ({ s: btoa(v) });
const list = (v: number[]) => ({ list: { i: v.map(String) } });

async function compare(
  g: TfGraph,
  input: string,
  shape: number[],
  outputs: string[],
  tolerance = 1e-4,
  dtype: "float32" | "int32" = "float32",
) {
  const { json, bytes } = g.model();
  const graph = convertTfjs(decodeWeights(json, [bytes], "test.json"), { outputs });
  const n = shape.reduce((a, b) => a * b, 1);
  const rnd = seededRandom(3);
  // Integer inputs: small values, so that ties and repeats occur.
  const x = dtype === "float32"
    ? Float32Array.from({ length: n }, () => rnd.next() * 2 - 1)
    : Int32Array.from({ length: n }, () => Math.floor(rnd.next() * 11) - 5);
  const session = await ort.InferenceSession.create(encode(graph));
  const got = await session.run({ [input]: new ort.Tensor(dtype, x, shape) });
  await tf.setBackend("cpu");
  const model = await loadGraphModel(tf.io.fromMemory({
    modelTopology: json.modelTopology,
    weightSpecs: json.weightsManifest[0]!.weights,
    weightData: bytes.buffer,
  }));
  const ref = model.execute(tf.tensor(x, shape, dtype), outputs) as tf.Tensor | tf.Tensor[];
  const refs = Array.isArray(ref) ? ref : [ref];
  outputs.forEach((o, i) => {
    const a = got[o.replace(/:0$/, "").replace(/:(\d+)$/, "_$1")]!;
    const b = refs[i]!;
    assert.deepEqual([...a.dims], b.shape, `${o}: shape`);
    const bd = b.dataSync();
    let m = 0;
    for (let k = 0; k < bd.length; k++) {
      m = Math.max(m, Math.abs(Number(a.data[k]!) - bd[k]!));
    }
    assert.ok(m <= tolerance, `${o}: max abs difference ${m}`);
  });
  return graph;
}

Deno.test("convertTfjs() matches tfjs on strided SAME convs, depthwise convs, pooling and fused batch norm (NHWC)", async () => {
  const g = new TfGraph();
  const x = g.placeholder("x", [1, 11, 13, 3]);
  const c1 = g.op("c1", "Conv2D", [x, g.randomConst("w1", [3, 3, 3, 8])], {
    padding: s("SAME"),
    strides: list([1, 2, 2, 1]),
    data_format: s("NHWC"),
  });
  const b1 = g.op("b1", "BiasAdd", [c1, g.randomConst("bias1", [8])]);
  const r1 = g.op("r1", "Relu6", [b1]);
  const d1 = g.op("d1", "DepthwiseConv2dNative", [r1, g.randomConst("dw", [3, 3, 8, 2])], {
    padding: s("SAME"),
    strides: list([1, 1, 1, 1]),
  });
  const bn = g.op("bn", "FusedBatchNormV3", [
    d1,
    g.randomConst("sc", [16], 1),
    g.randomConst("of", [16]),
    g.randomConst("mu", [16]),
    g.const("var", [16], new Array(16).fill(0.5)),
  ], { epsilon: { f: 0.001 } });
  const e = g.op("e", "Elu", [bn]);
  const mp = g.op("mp", "MaxPool", [e], {
    ksize: list([1, 3, 3, 1]),
    strides: list([1, 2, 2, 1]),
    padding: s("SAME"),
  });
  const ap = g.op("ap", "AvgPool", [e], {
    ksize: list([1, 2, 2, 1]),
    strides: list([1, 2, 2, 1]),
    padding: s("VALID"),
  });
  g.op("fc", "_FusedConv2D", [
    mp,
    g.randomConst("w2", [1, 1, 16, 4]),
    g.randomConst("bias2", [4]),
  ], {
    fused_ops: { list: { s: [btoa("BiasAdd"), btoa("LeakyRelu")] } },
    padding: s("VALID"),
    strides: list([1, 1, 1, 1]),
    leakyrelu_alpha: { f: 0.1 },
    num_args: { i: "1" },
  });
  g.op("mean", "Mean", [ap, g.const("axes", [2], [1, 2], "int32")], {
    keep_dims: { b: true },
  });
  const graph = await compare(g, "x", [1, 11, 13, 3], ["fc", "mean"]);
  assert.ok(graph.nodes.filter((n) => n.op === "Transpose").length <= 3);
});

Deno.test("convertTfjs() matches tfjs on resize, deconvolution, slicing, split, concat and reshapes", async () => {
  const g = new TfGraph();
  const x = g.placeholder("x", [1, 6, 8, 4]);
  const up = g.op("up", "ResizeNearestNeighbor", [x, g.const("sz", [2], [12, 16], "int32")], {
    half_pixel_centers: { b: true },
  });
  g.op("bl", "ResizeBilinear", [x, g.const("sz2", [2], [9, 10], "int32")], {
    align_corners: { b: true },
  });
  const bl2 = g.op("bl2", "ResizeBilinear", [x, g.const("sz3", [2], [12, 16], "int32")], {
    half_pixel_centers: { b: true },
  });
  const dc = g.op("dc", "Conv2DBackpropInput", [
    g.const("os", [4], [1, 12, 16, 5], "int32"),
    g.randomConst("wt", [3, 3, 5, 4]),
    x,
  ], {
    padding: s("SAME"),
    strides: list([1, 2, 2, 1]),
  });
  const sum = g.op("sum", "AddV2", [up, g.op("mix", "Mul", [bl2, g.randomConst("k", [4])])]);
  const cat = g.op("cat", "ConcatV2", [sum, dc, g.const("ax", [], [-1], "int32")]);
  const sl = g.op("sl", "StridedSlice", [
    cat,
    g.const("b", [4], [0, 1, 0, 2], "int32"),
    g.const("en", [4], [0, 11, 0, 7], "int32"),
    g.const("st", [4], [1, 2, 1, 1], "int32"),
  ], {
    begin_mask: { i: "5" },
    end_mask: { i: "5" },
  });
  const sp = g.op("sp", "SplitV", [
    sl,
    g.const("sizes", [2], [2, -1], "int32"),
    g.const("d", [], [3], "int32"),
  ], { num_split: { i: "2" } });
  const rs = g.op("rs", "Reshape", [`${sp}:1`, g.const("shape", [3], [1, -1, 3], "int32")]);
  g.op("sq", "Squeeze", [
    g.op("ed", "ExpandDims", [rs, g.const("axis", [], [0], "int32")]),
  ], { squeeze_dims: list([0]) });
  await compare(g, "x", [1, 6, 8, 4], ["bl", "sq", `${sp}:0`]);
});

Deno.test("convertTfjs() matches tfjs on a CenterNet-style peak decode: comparisons, TopKV2, FloorDiv/FloorMod and Gather of computed tensors", async () => {
  const g = new TfGraph();
  const x = g.placeholder("x", [1, 4, 5, 3]);
  const mp = g.op("mp", "MaxPool", [x], {
    ksize: list([1, 3, 3, 1]),
    strides: list([1, 1, 1, 1]),
    padding: s("SAME"),
  });
  const peak = g.op("peak", "Cast", [g.op("eq", "Equal", [x, mp])], { DstT: { type: "DT_FLOAT" } });
  const flat = g.op("flat", "Reshape", [
    g.op("peaks", "Mul", [x, peak]),
    g.const("fs", [2], [1, -1], "int32"),
  ]);
  const top = g.op("top", "TopKV2", [flat, g.const("k", [], [6], "int32")], {
    sorted: { b: true },
  });
  const three = g.const("three", [], [3], "int32");
  const cell = g.op("cell", "FloorDiv", [`${top}:1`, three]);
  g.op("cls", "FloorMod", [`${top}:1`, three]);
  // Negative integers: floor, not truncation (−23 // 7 = −4, −23 mod 7 = 5).
  const shifted = g.op("shifted", "Sub", [`${top}:1`, g.const("thirty", [], [30], "int32")]);
  const seven = g.const("seven", [], [7], "int32");
  g.op("fdn", "FloorDiv", [shifted, seven]);
  g.op("fmn", "FloorMod", [shifted, seven]);
  const step = g.const("step", [], [0.3]);
  g.op("fdf", "FloorDiv", [x, step]);
  g.op("fmf", "FloorMod", [x, step]);
  const fifth = g.const("fifth", [], [0.2]);
  for (const op of ["NotEqual", "Greater", "GreaterEqual", "Less", "LessEqual"]) {
    g.op(op, "Cast", [g.op(`${op}/b`, op, [x, fifth])], { DstT: { type: "DT_FLOAT" } });
  }
  g.op("rows", "GatherV2", [
    g.op("cells", "Reshape", [x, g.const("cs", [2], [-1, 3], "int32")]),
    cell,
    g.const("ax0", [], [0], "int32"),
  ]);
  const graph = await compare(g, "x", [1, 4, 5, 3], [
    `${top}:0`,
    `${top}:1`,
    "cls",
    "fdn",
    "fmn",
    "fdf",
    "fmf",
    "NotEqual",
    "Greater",
    "GreaterEqual",
    "Less",
    "LessEqual",
    "rows",
  ]);
  assert.equal(graph.outputs.find((o) => o.name === "top_1")?.dtype, "int32");
  assert.deepEqual(graph.outputs.find((o) => o.name === "rows")?.shape, [1, 6, 3]);
});

Deno.test("convertTfjs() matches tfjs on Unpack of computed and constant tensors", async () => {
  const g = new TfGraph();
  const x = g.placeholder("x", [1, 4, 5, 3]);
  const u = g.op("u", "Unpack", [x], { axis: { i: "-1" }, num: { i: "3" } });
  const c = g.op("c", "Unpack", [g.const("k", [2, 5], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])], {
    axis: { i: "0" },
    num: { i: "2" },
  });
  g.op("a", "AddV2", [`${u}:2`, `${c}:1`]);
  const graph = await compare(g, "x", [1, 4, 5, 3], [`${u}:0`, `${u}:1`, "a"]);
  assert.deepEqual(graph.outputs.map((o) => o.shape), [[1, 4, 5], [1, 4, 5], [1, 4, 5]]);
});

Deno.test("convertTfjs() matches tfjs on dense layers (MatMul, _FusedMatMul with bias and activation) and a conv fused with Prelu", async () => {
  const g = new TfGraph();
  const x = g.placeholder("x", [1, 6, 6, 3]);
  const conv = g.op("conv", "_FusedConv2D", [
    x,
    g.randomConst("cw", [3, 3, 3, 4]),
    g.randomConst("cb", [4]),
    g.randomConst("alpha", [4]),
  ], {
    fused_ops: { list: { s: [btoa("BiasAdd"), btoa("Prelu")] } },
    padding: s("SAME"),
    strides: list([1, 1, 1, 1]),
    num_args: { i: "2" },
  });
  const flat = g.op("flat", "Reshape", [conv, g.const("fs", [2], [1, -1], "int32")]);
  // [1, 144] × [144, 5] + bias, Relu: one Gemm.
  const dense = g.op("dense", "_FusedMatMul", [
    flat,
    g.randomConst("dw", [144, 5], 0.1),
    g.randomConst("db", [5]),
  ], {
    fused_ops: { list: { s: [btoa("BiasAdd"), btoa("Relu")] } },
    transpose_a: { b: false },
    transpose_b: { b: false },
    num_args: { i: "1" },
  });
  // A transposed constant weight, then a product of two computed tensors (transpose_a).
  const logits = g.op("logits", "MatMul", [dense, g.randomConst("lw", [3, 5])], {
    transpose_a: { b: false },
    transpose_b: { b: true },
  });
  g.op("gram", "MatMul", [logits, logits], { transpose_a: { b: true }, transpose_b: { b: false } });
  const graph = await compare(g, "x", [1, 6, 6, 3], ["conv", "dense", "logits", "gram"]);
  assert.deepEqual(
    graph.nodes.filter((n) => ["Gemm", "MatMul", "PRelu"].includes(n.op)).map((n) => n.op),
    ["PRelu", "Gemm", "MatMul", "MatMul"],
  );
  assert.deepEqual(graph.outputs.find((o) => o.name === "gram")?.shape, [3, 3]);
});

Deno.test("convertTfjs() matches tfjs on DepthToSpace (NHWC)", async () => {
  const g = new TfGraph();
  const x = g.placeholder("x", [1, 4, 6, 8]);
  const up = g.op("up", "DepthToSpace", [x], { block_size: { i: "2" }, data_format: s("NHWC") });
  g.op("r", "Relu", [up]);
  const graph = await compare(g, "x", [1, 4, 6, 8], ["up", "r"]);
  assert.deepEqual(graph.outputs.map((o) => o.shape), [[1, 8, 12, 2], [1, 8, 12, 2]]);
});

Deno.test("convertTfjs() folds an anchor grid computed from shapes (Size, Range, Tile, BroadcastTo, Ceil, Reciprocal, Pad of constants) and maps those ops on computed tensors", async () => {
  const g = new TfGraph();
  const x = g.placeholder("x", [1, 2, 3, 4]);
  // Anchor centres from the feature map's size: (range(0, W) + 0.5) / W, tiled over rows.
  const w = g.op("w", "Cast", [g.op("size", "Size", [g.op("row", "Squeeze", [
    g.op("first", "Slice", [
      x,
      g.const("b0", [4], [0, 0, 0, 0], "int32"),
      g.const("s0", [4], [1, 1, -1, 1], "int32"),
    ]),
  ], { squeeze_dims: list([0, 1, 3]) })])], { DstT: { type: "DT_FLOAT" } });
  const cx = g.op("cx", "Mul", [
    g.op("half", "AddV2", [
      g.op("idx", "Range", [
        g.const("r0", [], [0]),
        g.op("ceilw", "Ceil", [w]),
        g.const("r1", [], [1]),
      ]),
      g.const("h5", [], [0.5]),
    ]),
    g.op("inv", "Reciprocal", [w]),
  ]);
  const grid = g.op("grid", "Tile", [
    g.op("cx2", "ExpandDims", [cx, g.const("e0", [], [0], "int32")]),
    g.const("m", [2], [2, 1], "int32"),
  ]);
  const padded = g.op("padded", "Pad", [grid, g.const("pp", [2, 2], [0, 1, 1, 0], "int32")]);
  const wide = g.op("wide", "BroadcastTo", [padded, g.const("bs", [4], [1, 2, 3, 4], "int32")]);
  g.op("y", "AddV2", [x, wide]);
  // The same ops on computed tensors.
  g.op("ceil", "Ceil", [x]);
  g.op("rec", "Reciprocal", [
    g.op("pos", "AddV2", [g.op("abs", "Abs", [x]), g.const("one", [], [1])]),
  ]);
  g.op("tiled", "Tile", [x, g.const("m2", [4], [1, 2, 1, 2], "int32")]);
  g.op("bc", "BroadcastTo", [
    g.op("m1", "Max", [x, g.const("ax1", [1], [1], "int32")], { keep_dims: { b: true } }),
    g.const("bs2", [4], [1, 2, 3, 4], "int32"),
  ]);
  const graph = await compare(g, "x", [1, 2, 3, 4], ["y", "ceil", "rec", "tiled", "bc"]);
  // The grid is folded: no Range or Size node, one constant added to x.
  assert.equal(graph.nodes.filter((n) => ["Range", "Size", "Pad"].includes(n.op)).length, 0);
});

Deno.test("convertTfjs() matches tfjs on ArgMax (int32 and int64 indices), Sum, SquaredDifference and GatherNd of computed params or indices", async () => {
  const g = new TfGraph();
  const x = g.placeholder("x", [1, 4, 5, 3]);
  const am = g.op("am", "ArgMax", [x, g.const("d1", [], [-1], "int32")], {
    output_type: { type: "DT_INT32" },
  });
  g.op("am64", "ArgMax", [x, g.const("d2", [], [1], "int32")]);
  g.op("sum", "Sum", [x, g.const("a12", [2], [1, 2], "int32")], { keep_dims: { b: true } });
  g.op("sumLast", "Sum", [x, g.const("a3", [1], [-1], "int32")], { keep_dims: { b: false } });
  g.op("sqd", "SquaredDifference", [x, g.const("c3", [3], [0.5, -0.25, 0])]);
  // Computed int32 indices into a constant table, and constant indices into computed params.
  g.op("table", "GatherNd", [
    g.const("t", [3, 2], [1, 2, 3, 4, 5, 6]),
    g.op("amx", "ExpandDims", [am, g.const("e", [], [-1], "int32")]),
  ]);
  g.op("picked", "GatherNd", [x, g.const("ij", [2, 3], [0, 1, 2, 0, 3, 4], "int32")]);
  const graph = await compare(g, "x", [1, 4, 5, 3], [
    "am",
    "am64",
    "sum",
    "sumLast",
    "sqd",
    "table",
    "picked",
  ]);
  const dtype = (name: string) => graph.outputs.find((o) => o.name === name)?.dtype;
  assert.equal(dtype("am"), "int32");
  assert.equal(dtype("am64"), "int64", "TensorFlow's default output_type");
  assert.deepEqual(graph.outputs.map((o) => o.shape), [
    [1, 4, 5],
    [1, 5, 3],
    [1, 1, 1, 3],
    [1, 4, 5],
    [1, 4, 5, 3],
    [1, 4, 5, 2],
    [2, 3],
  ]);
});

Deno.test("convertTfjs() matches tfjs on ArgMax, Sum, SquaredDifference and GatherNd of int32 tensors", async () => {
  const g = new TfGraph();
  const x = g.placeholder("x", [2, 6], "int32");
  const am = g.op("am", "ArgMax", [x, g.const("d", [], [1], "int32")], {
    output_type: { type: "DT_INT32" },
  });
  g.op("sum", "Sum", [x, g.const("a", [1], [0], "int32")]);
  g.op("sqd", "SquaredDifference", [x, g.const("three", [], [3], "int32")]);
  // Each row's largest value, by the index ArgMax found: GatherNd with [row, column] pairs.
  g.op("max", "GatherNd", [
    x,
    g.op("rc", "Pack", [g.const("rows", [2], [0, 1], "int32"), am], { axis: { i: "1" } }),
  ]);
  const graph = await compare(g, "x", [2, 6], ["am", "sum", "sqd", "max"], 0, "int32");
  assert.deepEqual(graph.outputs.map((o) => o.dtype), ["int32", "int32", "int32", "int32"]);
});

Deno.test("convertTfjs() matches tfjs on LogicalAnd, Select and SelectV2 (broadcasting)", async () => {
  const g = new TfGraph();
  const x = g.placeholder("x", [1, 4, 5, 3]);
  const inside = g.op("inside", "LogicalAnd", [
    g.op("gt", "Greater", [x, g.const("lo", [], [-0.3])]),
    g.op("lt", "Less", [x, g.const("hi", [], [0.6])]),
  ]);
  g.op("insideF", "Cast", [inside], { DstT: { type: "DT_FLOAT" } });
  g.op("sel", "Select", [inside, x, g.const("z", [1, 4, 5, 3], new Array(60).fill(0))]);
  g.op("selV2", "SelectV2", [
    g.op("gt0", "Greater", [x, g.const("zero2", [], [0])]),
    x,
    g.const("half", [], [0.5]),
  ]);
  const graph = await compare(g, "x", [1, 4, 5, 3], ["insideF", "sel", "selV2"]);
  assert.equal(graph.nodes.filter((n) => n.op === "Where").length, 2);
});

Deno.test("convertTfjs() matches tfjs on StridedSlice with new_axis_mask, of computed and constant tensors", async () => {
  const g = new TfGraph();
  const x = g.placeholder("x", [1, 4, 5, 3]);
  // x[:, newaxis, 1:4, ::2] (tfjs 4.22 misplaces values when a spec also shrinks an axis).
  g.op("s", "StridedSlice", [
    x,
    g.const("b", [4], [0, 0, 1, 0], "int32"),
    g.const("e", [4], [0, 0, 4, 0], "int32"),
    g.const("st", [4], [1, 1, 1, 2], "int32"),
  ], {
    begin_mask: { i: "1" },
    new_axis_mask: { i: "2" },
    end_mask: { i: "9" },
  });
  // A constant grid [5, 3] sliced to grid[newaxis, newaxis, :, :]: it broadcasts onto x.
  const grid = g.const("grid", [5, 3], Array.from({ length: 15 }, (_, i) => i / 10));
  g.op("y", "AddV2", [
    x,
    g.op("g4", "StridedSlice", [
      grid,
      g.const("b2", [4], [0, 0, 0, 0], "int32"),
      g.const("e2", [4], [0, 0, 0, 0], "int32"),
      g.const("st2", [4], [1, 1, 1, 1], "int32"),
    ], { begin_mask: { i: "12" }, end_mask: { i: "12" }, new_axis_mask: { i: "3" } }),
  ]);
  const graph = await compare(g, "x", [1, 4, 5, 3], ["s", "y"]);
  assert.deepEqual(graph.outputs.map((o) => o.shape), [[1, 1, 3, 3, 3], [1, 4, 5, 3]]);
});

Deno.test("convertTfjs() folds ArgMax, Sum, SquaredDifference, LogicalAnd, GatherNd and Select of constants", async () => {
  const g = new TfGraph();
  const x = g.placeholder("x", [2, 3]);
  const k = g.const("k", [2, 3], [1, 5, 3, 4, 2, 6]);
  const am = g.op("am", "ArgMax", [k, g.const("d", [], [1], "int32")], {
    output_type: { type: "DT_INT32" },
  });
  const rowMax = g.op("rowMax", "GatherNd", [
    k,
    g.op("rc", "Pack", [g.const("r", [2], [0, 1], "int32"), am], { axis: { i: "1" } }),
  ]);
  const colSum = g.op("colSum", "Sum", [k, g.const("a0", [1], [0], "int32")]);
  const sqd = g.op("sqd", "SquaredDifference", [k, g.const("four", [], [4])]);
  const both = g.op("both", "LogicalAnd", [
    g.op("gt", "Greater", [k, g.const("two", [], [2])]),
    g.op("lt", "Less", [k, g.const("six", [], [6])]),
  ]);
  const pick = g.op("pick", "SelectV2", [both, sqd, g.const("m1", [], [-1])]);
  // [[5], [6]] + [5, 7, 9] + [[−1, 1, 1], [0, −1, −1]], added to x.
  const folded = g.op("folded", "AddV2", [
    g.op("f1", "AddV2", [
      g.op("rm", "ExpandDims", [rowMax, g.const("e", [], [1], "int32")]),
      colSum,
    ]),
    pick,
  ]);
  g.op("y", "AddV2", [x, folded]);
  const graph = await compare(g, "x", [2, 3], ["y"]);
  assert.deepEqual(graph.nodes.map((n) => n.op), ["Add"]);
  assert.deepEqual(
    [...graph.initializers.values()][0]?.data,
    Float32Array.from([9, 13, 15, 11, 12, 14]),
  );
});

Deno.test("convertTfjs() reads Select's vector condition as TensorFlow does: it picks whole rows", async () => {
  // tfjs 4.22 broadcasts it instead (and refuses [4] against [4, 3]), so ORT is checked by hand.
  const g = new TfGraph();
  const x = g.placeholder("x", [4, 3]);
  const positive = g.op("positive", "Greater", [
    g.op("rowSum", "Sum", [x, g.const("a1", [1], [1], "int32")]),
    g.const("zero", [], [0]),
  ]);
  g.op("y", "Select", [positive, x, g.op("neg", "Neg", [x])]);
  const { json, bytes } = g.model();
  const graph = convertTfjs(decodeWeights(json, [bytes], "test.json"), { outputs: ["y"] });
  const x0 = Float32Array.from([1, 2, -4, 1, 1, 1, -1, 1, -2, 3, -1, -1]);
  const session = await ort.InferenceSession.create(encode(graph));
  const { y } = await session.run({ x: new ort.Tensor("float32", x0, [4, 3]) });
  assert.deepEqual([...(y!.data as Float32Array)], [-1, -2, 4, 1, 1, 1, 1, -1, 2, 3, -1, -1]);
  // A condition of neither the branches' shape nor their row count is refused, naming both.
  const bad = new TfGraph();
  const xb = bad.placeholder("x", [4, 3]);
  bad.op("y", "Select", [
    bad.op("c", "Greater", [bad.const("v", [3], [1, 0, 1]), bad.const("z", [], [0])]),
    xb,
    xb,
  ]);
  const m = bad.model();
  assert.throws(
    () => convertTfjs(decodeWeights(m.json, [m.bytes], "test.json"), { outputs: ["y"] }),
    (e: unknown) =>
      e instanceof ModelError && /node "y" \(Select\)/.test(e.message) &&
      /\[4,3\]/.test(e.message) && /found \[3\]/.test(e.message),
  );
});

Deno.test("convertTfjs() matches tfjs on Sin, Cos, Atan2 (every quadrant, the axes, the origin), ZerosLike, Min and BatchMatMulV2", async () => {
  const g = new TfGraph();
  const x = g.placeholder("x", [2, 3, 4]);
  g.op("sin", "Sin", [x]);
  g.op("cos", "Cos", [x]);
  // y = x against constant x-coordinates of both signs and zero; the constant's zeros meet the
  // input's values, and Atan2(0·x, 0) is the origin.
  const xs = g.const("xs", [4], [-0.5, 0, 0.7, -1]);
  g.op("atan2", "Atan2", [x, xs]);
  g.op("atan2Swapped", "Atan2", [xs, x]);
  const zeros = g.op("zeros", "ZerosLike", [x]);
  g.op("origin", "Atan2", [zeros, g.const("zero", [], [0])]);
  g.op("shifted", "AddV2", [x, zeros]);
  g.op("min", "Min", [x, g.const("a", [1], [1], "int32")], { keep_dims: { b: false } });
  // [2, 3, 4] × [2, 4, 3] (x transposed by adj_y), and × a constant [1, 4, 5] that broadcasts.
  g.op("gram", "BatchMatMulV2", [x, x], { adj_x: { b: false }, adj_y: { b: true } });
  g.op("dense", "BatchMatMulV2", [x, g.randomConst("w", [1, 4, 5])], {
    adj_x: { b: false },
    adj_y: { b: false },
  });
  g.op("inner", "BatchMatMulV2", [x, x], { adj_x: { b: true }, adj_y: { b: false } });
  const graph = await compare(g, "x", [2, 3, 4], [
    "sin",
    "cos",
    "atan2",
    "atan2Swapped",
    "zeros",
    "origin",
    "shifted",
    "min",
    "gram",
    "dense",
    "inner",
  ], 1e-5);
  assert.deepEqual(graph.outputs.map((o) => o.shape), [
    [2, 3, 4],
    [2, 3, 4],
    [2, 3, 4],
    [2, 3, 4],
    [2, 3, 4],
    [2, 3, 4],
    [2, 3, 4],
    [2, 4],
    [2, 3, 3],
    [2, 3, 5],
    [2, 4, 4],
  ]);
});

Deno.test("convertTfjs() matches tfjs on Prod of computed tensors and StridedSlice with an ellipsis", async () => {
  const g = new TfGraph();
  const x = g.placeholder("x", [2, 3, 4]);
  g.op("prod", "Prod", [x, g.const("a1", [1], [1], "int32")], { keep_dims: { b: true } });
  g.op("prodLast", "Prod", [x, g.const("a2", [2], [-1, 0], "int32")], { keep_dims: { b: false } });
  // x[..., 1:3] and x[1, ..., 2]: the ellipsis stands for the axes the spec leaves out.
  const spec = (name: string, values: number[]) => g.const(name, [values.length], values, "int32");
  g.op("tail", "StridedSlice", [x, spec("b1", [0, 1]), spec("e1", [0, 3]), spec("s1", [1, 1])], {
    ellipsis_mask: { i: "1" },
  });
  g.op(
    "ends",
    "StridedSlice",
    [x, spec("b2", [1, 0, 2]), spec("e2", [2, 0, 3]), spec("s2", [1, 1, 1])],
    { ellipsis_mask: { i: "2" }, shrink_axis_mask: { i: "5" } },
  );
  const graph = await compare(g, "x", [2, 3, 4], ["prod", "prodLast", "tail", "ends"], 1e-6);
  assert.deepEqual(graph.outputs.map((o) => o.shape), [[2, 1, 4], [3], [2, 3, 2], [3]]);
});
