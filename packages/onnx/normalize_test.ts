import assert from "node:assert/strict";
import * as ort from "onnxruntime-node";
import { ModelBuilder, seededRandom } from "./builder.ts";
import { ConfigError } from "./errors.ts";
import { emptyGraph, type Graph, node } from "./graph.ts";
import { normalize, normalizeWithReport } from "./normalize.ts";
import { encode } from "./proto.ts";
import { float32, int64 } from "./tensor.ts";
import { validate } from "./validate.ts";

async function run(graph: Graph, seed = 9): Promise<Record<string, Float32Array>> {
  const session = await ort.InferenceSession.create(encode(graph), {
    graphOptimizationLevel: "disabled",
  });
  const feeds: Record<string, ort.Tensor> = {};
  for (const v of graph.inputs) {
    const dims = v.shape as number[];
    const n = dims.reduce((a, b) => a * b, 1);
    feeds[v.name] = new ort.Tensor("float32", seededRandom(seed).normals(n), dims);
  }
  const out = await session.run(feeds);
  await session.release();
  return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v.data as Float32Array]));
}

/** Largest |a − b| / max(1, |a|) over all outputs. */
async function maxRelativeDiff(a: Graph, b: Graph): Promise<number> {
  const [ra, rb] = [await run(a), await run(b)];
  assert.deepEqual(Object.keys(rb).sort(), Object.keys(ra).sort());
  let worst = 0;
  for (const k of Object.keys(ra)) {
    const x = ra[k]!, y = rb[k]!;
    assert.equal(y.length, x.length);
    for (let i = 0; i < x.length; i++) {
      worst = Math.max(worst, Math.abs(x[i]! - y[i]!) / Math.max(1, Math.abs(x[i]!)));
    }
  }
  return worst;
}

const ops = (g: Graph) => g.nodes.map((n) => n.op);

Deno.test("normalize() folds Conv+BN+Relu into Conv+Relu with the same outputs", async () => {
  const b = new ModelBuilder({ seed: 11 });
  const x = b.input("x", [1, 3, 12, 12]);
  let y = b.relu(b.batchNorm(b.conv(x, { outChannels: 8, kernel: 3 })));
  y = b.relu(
    b.batchNorm(b.conv(y, { outChannels: 8, kernel: 3, group: 4, bias: false, stride: 2 })),
  );
  b.output(y, "y");
  const g = b.build();
  const { graph, report } = normalizeWithReport(g);
  assert.deepEqual(ops(graph), ["Conv", "Relu", "Conv", "Relu"]);
  assert.equal(report.bnFolded, 2);
  assert.equal(report.prunedInitializers, 8, "the BN parameters are gone");
  assert.equal(graph.nodes[2]!.inputs.length, 3, "a bias-free conv gains a bias");
  validate(graph);
  assert.ok(await maxRelativeDiff(g, graph) <= 1e-5);
});

Deno.test("normalize() folds BN into ConvTranspose with groups along weight axis 1", async () => {
  const b = new ModelBuilder({ seed: 12 });
  const x = b.input("x", [1, 4, 5, 5]);
  b.output(
    b.batchNorm(b.convTranspose(x, { outChannels: 6, kernel: 2, stride: 2, group: 2 })),
    "y",
  );
  const g = b.build();
  const n = normalize(g);
  assert.deepEqual(ops(n), ["ConvTranspose"]);
  assert.deepEqual(n.nodes[0]!.outputs, ["y"]);
  assert.ok(await maxRelativeDiff(g, n) <= 1e-5);
});

Deno.test("normalize() folds BN into Gemm with and without transB and with a beta-scaled C", async () => {
  for (const transB of [true, false]) {
    const b = new ModelBuilder({ seed: 13 });
    const x = b.input("x", [2, 10]);
    b.output(b.sigmoid(b.batchNorm(b.gemm(x, { out: 6, transB }))), "y");
    let g = b.build();
    if (!transB) {
      // beta = 0.5 with a [1, N] C checks the bias algebra, not just the common case.
      const gemm = g.nodes[0]!;
      const c = g.initializers.get(gemm.inputs[2]!)!;
      g = {
        ...g,
        initializers: new Map(g.initializers).set(gemm.inputs[2]!, { ...c, dims: [1, 6] }),
        nodes: [{
          ...gemm,
          attributes: { ...gemm.attributes, beta: { type: "float", value: 0.5 } },
        }, ...g.nodes.slice(1)],
      };
    }
    const n = normalize(g);
    assert.deepEqual(ops(n), ["Gemm", "Sigmoid"]);
    assert.ok(await maxRelativeDiff(g, n) <= 1e-5, `transB ${transB}`);
  }
});

Deno.test("normalize() keeps a standalone BN and a BN whose conv output has another reader", async () => {
  const b = new ModelBuilder({ seed: 14 });
  const x = b.input("x", [1, 4, 6, 6]);
  const standalone = b.batchNorm(b.relu(x));
  const c = b.conv(standalone, { outChannels: 4, kernel: 1 });
  b.output(b.add(b.batchNorm(c), c), "y");
  const g = b.build();
  const { graph, report } = normalizeWithReport(g);
  assert.equal(report.bnFolded, 0);
  assert.equal(ops(graph).filter((o) => o === "BatchNormalization").length, 2);
  assert.ok(await maxRelativeDiff(g, graph) <= 1e-6);
});

Deno.test("normalize() gives a shared weight a new name instead of changing the other reader", async () => {
  const b = new ModelBuilder({ seed: 15 });
  const x = b.input("x", [1, 3, 6, 6]);
  const first = b.conv(x, { outChannels: 3, kernel: 3 });
  const second = b.op("Conv", [first, "conv_0.weight", "conv_0.bias"], {
    attributes: { pads: { type: "ints", value: [1, 1, 1, 1] } },
    shape: [1, 3, 6, 6],
  });
  b.output(b.batchNorm(second), "y");
  const g = b.build();
  const n = normalize(g);
  assert.deepEqual(ops(n), ["Conv", "Conv"]);
  assert.equal(n.nodes[0]!.inputs[1], "conv_0.weight");
  assert.notEqual(n.nodes[1]!.inputs[1], "conv_0.weight");
  assert.ok(await maxRelativeDiff(g, n) <= 1e-5);
});

Deno.test("normalize() turns every Constant form into an initializer", async () => {
  const constant = (out: string, attr: Parameters<typeof node>[0]["attributes"]) =>
    node({ name: `c_${out}`, op: "Constant", inputs: [], outputs: [out], attributes: attr ?? {} });
  const g = emptyGraph({
    inputs: [{ name: "x", dtype: "float32", shape: [2, 3] }],
    nodes: [
      constant("t", { value: { type: "tensor", value: float32([3], [1, 2, 3]) } }),
      constant("f", { value_float: { type: "float", value: 0.5 } }),
      constant("fs", { value_floats: { type: "floats", value: [1, -1, 2] } }),
      constant("i", { value_int: { type: "int", value: 3 } }),
      constant("is", { value_ints: { type: "ints", value: [3, 2] } }),
      node({ name: "a", op: "Add", inputs: ["x", "t"], outputs: ["a"] }),
      node({ name: "m", op: "Mul", inputs: ["a", "f"], outputs: ["m"] }),
      node({ name: "s", op: "Sub", inputs: ["m", "fs"], outputs: ["s"] }),
      node({ name: "r", op: "Reshape", inputs: ["s", "is"], outputs: ["r"] }),
      node({
        name: "cast",
        op: "Cast",
        inputs: ["i"],
        outputs: ["i_f"],
        attributes: { to: { type: "int", value: 1 } },
      }),
      node({ name: "y", op: "Mul", inputs: ["r", "i_f"], outputs: ["y"] }),
    ],
    outputs: [{ name: "y", dtype: "float32", shape: [3, 2] }],
  });
  const { graph, report } = normalizeWithReport(g);
  assert.equal(report.constantsToInitializers, 5);
  assert.equal(ops(graph).filter((o) => o === "Constant").length, 0);
  assert.deepEqual([...graph.initializers.get("is")!.data], [3n, 2n]);
  assert.deepEqual(graph.initializers.get("i")!.dims, []);
  assert.deepEqual(graph.initializers.get("fs")!.dtype, "float32");
  const [ra, rb] = [await run(g), await run(graph)];
  assert.deepEqual(rb.y, ra.y);
});

Deno.test("normalize() drops Identity and Dropout and keeps graph output names", async () => {
  const g = emptyGraph({
    inputs: [{ name: "x", dtype: "float32", shape: [4] }],
    nodes: [
      node({ name: "r", op: "Relu", inputs: ["x"], outputs: ["r"] }),
      node({ name: "i1", op: "Identity", inputs: ["r"], outputs: ["i1"] }),
      node({ name: "d", op: "Dropout", inputs: ["i1"], outputs: ["d"] }),
      node({ name: "n", op: "Neg", inputs: ["d"], outputs: ["n"] }),
      node({ name: "out1", op: "Identity", inputs: ["n"], outputs: ["y1"] }),
      node({ name: "out2", op: "Identity", inputs: ["n"], outputs: ["y2"] }),
      node({ name: "passthrough", op: "Identity", inputs: ["x"], outputs: ["y3"] }),
    ],
    outputs: [{ name: "y1" }, { name: "y2" }, { name: "y3" }],
    valueInfo: [{ name: "i1", dtype: "float32", shape: [4] }, {
      name: "r",
      dtype: "float32",
      shape: [4],
    }],
  });
  const { graph, report } = normalizeWithReport(g);
  assert.equal(report.removed, 3);
  assert.deepEqual(ops(graph), ["Relu", "Neg", "Identity", "Identity"]);
  assert.deepEqual(graph.nodes[1]!.inputs, ["r"]);
  assert.deepEqual(graph.nodes[1]!.outputs, ["y1"], "Neg writes the first graph output directly");
  assert.deepEqual(graph.nodes.slice(2).map((n) => n.inputs[0]), ["y1", "x"]);
  assert.deepEqual(graph.valueInfo.map((v) => v.name), ["r"]);
  validate(graph);
  const [ra, rb] = [await run(g), await run(graph)];
  assert.deepEqual(rb, ra);
});

Deno.test("normalize() keeps a Dropout whose mask is used", () => {
  const g = emptyGraph({
    inputs: [{ name: "x", dtype: "float32", shape: [4] }],
    nodes: [node({ name: "d", op: "Dropout", inputs: ["x"], outputs: ["y", "mask"] })],
    outputs: [{ name: "y" }, { name: "mask" }],
  });
  assert.deepEqual(ops(normalize(g)), ["Dropout"]);
});

Deno.test("normalize() prunes dead nodes and initializers and sorts the rest", () => {
  const g = emptyGraph({
    inputs: [{ name: "x", dtype: "float32", shape: [2] }],
    initializers: new Map([["w", float32([2], [1, 2])], ["unused", float32([1], [0])], [
      "shape",
      int64([1], [2]),
    ]]),
    nodes: [
      node({ name: "late", op: "Mul", inputs: ["a", "w"], outputs: ["y"] }),
      node({ name: "dead", op: "Reshape", inputs: ["a", "shape"], outputs: ["z"] }),
      node({ name: "early", op: "Relu", inputs: ["x"], outputs: ["a"] }),
    ],
    outputs: [{ name: "y" }],
  });
  const { graph, report } = normalizeWithReport(g);
  assert.deepEqual(graph.nodes.map((n) => n.name), ["early", "late"]);
  assert.deepEqual([...graph.initializers.keys()], ["w"]);
  assert.equal(report.pruned, 1);
  assert.equal(report.prunedInitializers, 2);
  const off = normalize(g, { prune: false, sort: false });
  assert.deepEqual(off.nodes.map((n) => n.name), ["late", "dead", "early"]);
});

Deno.test("normalize() passes can be turned off and unknown options are refused", () => {
  const b = new ModelBuilder();
  b.output(b.batchNorm(b.conv(b.input("x", [1, 2, 3, 3]), { outChannels: 2, kernel: 1 })), "y");
  const g = b.build();
  assert.deepEqual(ops(normalize(g, { foldBatchNorm: false })), ["Conv", "BatchNormalization"]);
  assert.throws(() => normalize(g, { fold: true } as never), ConfigError);
  assert.throws(() => normalize(g, { prune: "yes" } as never), /prune: expected a boolean/);
  assert.notEqual(
    normalize(g, {
      constants: false,
      removeIdentity: false,
      foldBatchNorm: false,
      prune: false,
      sort: false,
    }),
    g,
  );
});

Deno.test("normalize() lists new initializers as graph inputs in IR 3 models, as IR 3 requires", async () => {
  const g = emptyGraph({
    irVersion: 3,
    opsetImports: [{ domain: "", version: 8 }],
    inputs: [{ name: "x", dtype: "float32", shape: [2] }],
    nodes: [
      node({
        name: "c",
        op: "Constant",
        inputs: [],
        outputs: ["k"],
        attributes: { value: { type: "tensor", value: float32([2], [3, 4]) } },
      }),
      node({ name: "m", op: "Mul", inputs: ["x", "k"], outputs: ["y"] }),
    ],
    outputs: [{ name: "y", dtype: "float32", shape: [2] }],
  });
  const n = normalize(g);
  assert.deepEqual(n.inputs.map((v) => v.name), ["x", "k"]);
  assert.deepEqual(n.inputs[1], { name: "k", dtype: "float32", shape: [2] });
  const [ra, rb] = [await run(g), await run(n)];
  assert.deepEqual(rb, ra);
});

Deno.test("normalize() also normalizes If branches, keeping outer-scope reads and branch outputs", async () => {
  const branch = (name: string, nodes: ReturnType<typeof node>[], output: string): Graph =>
    emptyGraph({
      name,
      opsetImports: [],
      irVersion: 0,
      nodes,
      outputs: [{ name: output, dtype: "float32", shape: [2] }],
    });
  const thenBranch = branch("then", [
    node({
      name: "k",
      op: "Constant",
      inputs: [],
      outputs: ["k"],
      attributes: { value: { type: "tensor", value: float32([2], [2, 3]) } },
    }),
    node({ name: "m", op: "Mul", inputs: ["xr", "k"], outputs: ["m"] }),
    node({ name: "dead", op: "Neg", inputs: ["m"], outputs: ["unused"] }),
    node({ name: "id", op: "Identity", inputs: ["m"], outputs: ["t_out"] }),
  ], "t_out");
  const elseBranch = branch("else", [
    node({ name: "pass", op: "Identity", inputs: ["xr"], outputs: ["e_out"] }),
  ], "e_out");
  const g = emptyGraph({
    inputs: [{ name: "x", dtype: "float32", shape: [2] }, { name: "c", dtype: "bool", shape: [] }],
    nodes: [
      node({ name: "r", op: "Relu", inputs: ["x"], outputs: ["r"] }),
      node({ name: "alias", op: "Identity", inputs: ["r"], outputs: ["xr"] }),
      node({
        name: "if",
        op: "If",
        inputs: ["c"],
        outputs: ["y"],
        attributes: {
          then_branch: { type: "graph", value: thenBranch },
          else_branch: { type: "graph", value: elseBranch },
        },
      }),
    ],
    outputs: [{ name: "y", dtype: "float32", shape: [2] }],
  });
  const { graph, report } = normalizeWithReport(g);
  validate(graph);
  const then = graph.nodes.find((n) => n.op === "If")!.attributes.then_branch!.value as Graph;
  assert.deepEqual(then.nodes.map((n) => n.op), ["Mul"]);
  assert.deepEqual(then.nodes[0]!.outputs, ["t_out"]);
  assert.deepEqual([...then.initializers.keys()], ["k"]);
  assert.equal(report.constantsToInitializers, 1);
  assert.equal(report.pruned, 1);
  // The top-level Identity feeds both branches by name, so its output name stays.
  assert.deepEqual(graph.nodes.map((n) => n.op), ["Relu", "If"]);
  assert.deepEqual(graph.nodes[0]!.outputs, ["xr"]);
  for (const cond of [true, false]) {
    const outputs = [];
    for (const model of [g, graph]) {
      const session = await ort.InferenceSession.create(encode(model));
      const out = await session.run({
        x: new ort.Tensor("float32", Float32Array.from([-1, 2]), [2]),
        c: new ort.Tensor("bool", Uint8Array.from([cond ? 1 : 0]), []),
      });
      outputs.push([...(out.y!.data as Float32Array)]);
      await session.release();
    }
    assert.deepEqual(outputs[1], outputs[0]);
    assert.deepEqual(outputs[0], cond ? [0, 6] : [0, 2]);
  }
});

Deno.test("normalize() turns string Constants into string initializers and keeps sparse ones", () => {
  const g = emptyGraph({
    nodes: [
      node({
        name: "s",
        op: "Constant",
        inputs: [],
        outputs: ["s"],
        attributes: { value_string: { type: "string", value: "hi" } },
      }),
      node({
        name: "ss",
        op: "Constant",
        inputs: [],
        outputs: ["ss"],
        attributes: { value_strings: { type: "strings", value: ["a", "b"] } },
      }),
      node({
        name: "sp",
        op: "Constant",
        inputs: [],
        outputs: ["sp"],
        attributes: { sparse_value: { type: "opaque", value: {} } },
      }),
    ],
    outputs: [{ name: "s" }],
  });
  const n = normalize(g, { prune: false });
  assert.deepEqual(
    n.nodes.map((x) => x.name),
    ["s", "sp"],
    "a graph output and a sparse Constant stay nodes",
  );
  assert.deepEqual(n.initializers.get("ss"), { dtype: "string", dims: [2], data: ["a", "b"] });
  const s = normalize({ ...g, outputs: [{ name: "ss" }] }, { prune: false })
    .initializers.get("s");
  assert.deepEqual(s, { dtype: "string", dims: [], data: ["hi"] });
});

Deno.test("normalize() folds constant Mul/Add/Sub/Div chains after a Conv or Gemm into its weights and bias", async () => {
  const r = seededRandom(21);
  const g = emptyGraph({
    inputs: [
      { name: "x", dtype: "float32", shape: [1, 3, 6, 6] },
      { name: "v", dtype: "float32", shape: [2, 5] },
    ],
    outputs: [{ name: "y", dtype: "float32" }, { name: "z", dtype: "float32" }],
    initializers: new Map([
      ["w", float32([4, 3, 3, 3], r.normals(108))],
      ["b", float32([4], r.normals(4))],
      ["a", float32([], [0.7])], // PP-LCNet's learnable affine block: a scalar scale…
      ["c", float32([4, 1, 1], [0.1, -0.2, 0.3, 2])], // …then a shift, here per channel
      ["d", float32([1, 4, 1, 1], [1, 2, 3, 4])],
      ["six", float32([1], [6])],
      ["gw", float32([5, 3], r.normals(15))],
      ["gc", float32([3], [1, -1, 0.5])],
    ]),
    nodes: [
      node({ name: "conv", op: "Conv", inputs: ["x", "w", "b"], outputs: ["c0"] }),
      node({ name: "scale", op: "Mul", inputs: ["a", "c0"], outputs: ["c1"] }),
      node({ name: "shift", op: "Add", inputs: ["c1", "c"], outputs: ["c2"] }),
      node({ name: "sub", op: "Sub", inputs: ["c2", "d"], outputs: ["c3"] }),
      node({ name: "div", op: "Div", inputs: ["c3", "six"], outputs: ["c4"] }),
      node({ name: "relu", op: "Relu", inputs: ["c4"], outputs: ["y"] }),
      node({ name: "gemm", op: "Gemm", inputs: ["v", "gw"], outputs: ["g0"] }),
      node({ name: "gadd", op: "Add", inputs: ["g0", "gc"], outputs: ["z"] }),
    ],
  });
  const { graph, report } = normalizeWithReport(g);
  assert.deepEqual(ops(graph), ["Conv", "Relu", "Gemm"]);
  assert.equal(report.affineFolded, 5);
  assert.deepEqual(graph.nodes[2]!.outputs, ["z"], "graph output names stay");
  validate(graph);
  assert.ok(await maxRelativeDiff(g, graph) <= 1e-5);
  assert.deepEqual(ops(normalize(g, { foldAffine: false })), ops(g));
});

Deno.test("normalize() keeps a constant Mul that broadcasts along space, reversed Sub/Div and a shared conv output", () => {
  const g = emptyGraph({
    inputs: [{ name: "x", dtype: "float32", shape: [1, 2, 4, 4] }],
    outputs: [{ name: "y1" }, { name: "y2" }, { name: "y3" }, { name: "y4" }],
    initializers: new Map([
      ["w", float32([2, 2, 1, 1], [1, 2, 3, 4])],
      ["row", float32([1, 1, 1, 4], [1, 2, 3, 4])],
      ["k", float32([], [2])],
    ]),
    nodes: [
      node({ name: "c1", op: "Conv", inputs: ["x", "w"], outputs: ["a"] }),
      node({ name: "m", op: "Mul", inputs: ["a", "row"], outputs: ["y1"] }),
      node({ name: "c2", op: "Conv", inputs: ["x", "w"], outputs: ["b"] }),
      node({ name: "s", op: "Sub", inputs: ["k", "b"], outputs: ["y2"] }),
      node({ name: "c3", op: "Conv", inputs: ["x", "w"], outputs: ["c"] }),
      node({ name: "d", op: "Div", inputs: ["k", "c"], outputs: ["y3"] }),
      node({ name: "c4", op: "Conv", inputs: ["x", "w"], outputs: ["e"] }),
      node({ name: "m4", op: "Mul", inputs: ["e", "k"], outputs: ["y4"] }),
      node({ name: "r4", op: "Relu", inputs: ["e"], outputs: ["f"] }),
    ],
  });
  const { graph, report } = normalizeWithReport(g, { prune: false });
  assert.equal(report.affineFolded, 0);
  assert.deepEqual(ops(graph), ops(g));
});

Deno.test("normalize() writes a ReduceMean over every spatial axis as GlobalAveragePool, and keeps the others", async () => {
  const mean = (name: string, x: string, axes: number[], keepdims = 1) =>
    node({
      name,
      op: "ReduceMean",
      inputs: [x],
      outputs: [name],
      attributes: {
        axes: { type: "ints", value: axes },
        keepdims: { type: "int", value: keepdims },
      },
    });
  const g = emptyGraph({
    inputs: [{ name: "x", dtype: "float32", shape: [1, 3, 5, 4] }],
    outputs: ["se", "neg", "nhwc", "flat", "ch"].map((name) => ({ name, dtype: "float32" })),
    nodes: [
      mean("se", "x", [2, 3]), // squeeze-excite: x.mean((2, 3), keepdim=True)
      mean("neg", "x", [-1, -2]),
      mean("nhwc", "x", [1, 2]), // over H, W of an NHWC tensor: not the NCHW pool
      mean("flat", "x", [2, 3], 0), // no kept dims: a [1, 3] result
      mean("ch", "x", [1]),
    ],
    opsetImports: [{ domain: "", version: 13 }],
  });
  const { graph, report } = normalizeWithReport(g);
  assert.deepEqual(ops(graph), [
    "GlobalAveragePool",
    "GlobalAveragePool",
    "ReduceMean",
    "ReduceMean",
    "ReduceMean",
  ]);
  assert.equal(report.globalPools, 2);
  assert.deepEqual(graph.nodes.map((n) => n.outputs[0]), ["se", "neg", "nhwc", "flat", "ch"]);
  assert.ok(await maxRelativeDiff(g, graph) <= 1e-6);
  assert.deepEqual(ops(normalize(g, { globalPools: false })), ops(g));
  // Opset 18 gives the axes as an input.
  const g18 = emptyGraph({
    inputs: [{ name: "x", dtype: "float32", shape: [2, 3, 5, 4] }],
    outputs: [{ name: "y", dtype: "float32" }],
    initializers: new Map([["axes", int64([2], [2, 3])]]),
    nodes: [node({ name: "y", op: "ReduceMean", inputs: ["x", "axes"], outputs: ["y"] })],
    opsetImports: [{ domain: "", version: 18 }],
  });
  const n18 = normalize(g18);
  assert.deepEqual(ops(n18), ["GlobalAveragePool"]);
  assert.equal(n18.initializers.size, 0, "the axes initializer is pruned");
  assert.ok(await maxRelativeDiff(g18, n18) <= 1e-6);
});

Deno.test("normalize() writes Max/Min with scalar constants as Clip, and Min(Max(x, 0), 6) as one Clip", async () => {
  const g = emptyGraph({
    inputs: [{ name: "x", dtype: "float32", shape: [1, 2, 3, 3] }],
    outputs: ["relu6", "floor", "ceil", "shared", "wide", "pair"].map((name) => ({
      name,
      dtype: "float32" as const,
    })),
    initializers: new Map([
      ["zero", float32([], [0])],
      ["six", float32([1], [6])],
      ["neg", float32([], [-0.5])],
      ["half", float32([1, 2, 1, 1], [0.5, 1])],
    ]),
    nodes: [
      // Keras' ReLU(max_value=6): one Clip.
      node({ name: "m0", op: "Max", inputs: ["x", "zero"], outputs: ["a"] }),
      node({ name: "relu6", op: "Min", inputs: ["a", "six"], outputs: ["relu6"] }),
      node({ name: "floor", op: "Max", inputs: ["neg", "x"], outputs: ["floor"] }),
      node({ name: "ceil", op: "Min", inputs: ["x", "six"], outputs: ["ceil"] }),
      // The Max's output is read twice: it stays a Clip of its own.
      node({ name: "m1", op: "Max", inputs: ["x", "zero"], outputs: ["shared"] }),
      node({ name: "wide", op: "Min", inputs: ["shared", "six"], outputs: ["wide"] }),
      // A per-channel bound is not a scalar: kept.
      node({ name: "pair", op: "Max", inputs: ["x", "half"], outputs: ["pair"] }),
    ],
    opsetImports: [{ domain: "", version: 13 }],
  });
  const { graph, report } = normalizeWithReport(g);
  assert.deepEqual(ops(graph), ["Clip", "Clip", "Clip", "Clip", "Clip", "Max"]);
  assert.equal(report.clips, 5);
  const relu6 = graph.nodes.find((n) => n.outputs[0] === "relu6")!;
  assert.deepEqual(relu6.inputs, ["x", "zero", "six"]);
  assert.deepEqual(graph.nodes.find((n) => n.outputs[0] === "floor")!.inputs, ["x", "neg"]);
  assert.deepEqual(graph.nodes.find((n) => n.outputs[0] === "ceil")!.inputs, ["x", "", "six"]);
  validate(graph);
  assert.ok(await maxRelativeDiff(g, graph) <= 1e-6);
  assert.deepEqual(ops(normalize(g, { clips: false })), ops(g));
  // Below opset 11 Clip takes its bounds as attributes: left alone.
  const g10 = { ...g, opsetImports: [{ domain: "", version: 10 }] };
  assert.deepEqual(ops(normalize(g10)), ops(g));
});

Deno.test("normalize() makes a constant of one repeated value scalar, drops x − 0 and x · 1, and keeps what would change a shape", async () => {
  const g = emptyGraph({
    inputs: [
      { name: "x", dtype: "float32", shape: [1, 4, 4, 3] },
      { name: "v", dtype: "float32", shape: [1, 4, 4, 1] },
    ],
    outputs: ["scaled", "flipped", "out", "wider", "mixed"].map((name) => ({
      name,
      dtype: "float32" as const,
    })),
    initializers: new Map([
      ["zeros", float32([1, 1, 1, 3], [0, 0, 0])],
      ["ones", float32([1, 1, 1, 3], [1, 1, 1])],
      ["k", float32([1, 1, 1, 3], [0.25, 0.25, 0.25])],
      ["mean", float32([1, 1, 1, 3], [0.5, 0.25, 0.125])],
    ]),
    nodes: [
      // TensorFlow's input normalization: (x − [0, 0, 0]) · [k, k, k] − 1 → x · k − 1.
      node({ name: "sub0", op: "Sub", inputs: ["x", "zeros"], outputs: ["a"] }),
      node({ name: "scale", op: "Mul", inputs: ["a", "k"], outputs: ["scaled"] }),
      // 1 / x is no identity: the constant only becomes scalar.
      node({ name: "flip", op: "Div", inputs: ["ones", "x"], outputs: ["flipped"] }),
      // x · 1 is a graph output: it stays, by a scalar.
      node({ name: "one", op: "Mul", inputs: ["x", "ones"], outputs: ["out"] }),
      // v is [1, 4, 4, 1]: the constant widens it to 3 channels, so it stays as it is.
      node({ name: "wide", op: "Add", inputs: ["v", "zeros"], outputs: ["wider"] }),
      // Distinct values per channel: kept.
      node({ name: "norm", op: "Sub", inputs: ["x", "mean"], outputs: ["mixed"] }),
    ],
    opsetImports: [{ domain: "", version: 13 }],
  });
  const { graph, report } = normalizeWithReport(g);
  assert.equal(report.uniformConstants, 4);
  assert.deepEqual(ops(graph), ["Mul", "Div", "Mul", "Add", "Sub"]);
  const byOut = (o: string) => graph.nodes.find((n) => n.outputs[0] === o)!;
  assert.equal(byOut("scaled").inputs[0], "x");
  for (const o of ["scaled", "flipped", "out"]) {
    const c = byOut(o).inputs.find((i) => graph.initializers.has(i))!;
    assert.deepEqual(graph.initializers.get(c)!.dims, [], o);
  }
  assert.deepEqual(byOut("wider").inputs, ["v", "zeros"]);
  assert.deepEqual(byOut("mixed").inputs, ["x", "mean"]);
  validate(graph);
  assert.equal(await maxRelativeDiff(g, graph), 0);
  assert.deepEqual(ops(normalize(g, { uniformConstants: false })), ops(g));
});
