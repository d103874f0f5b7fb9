import assert from "node:assert/strict";
import { ConfigError, ModelError } from "@clipq/onnx/errors";
import { emptyGraph, type Graph, node, opsetOf } from "@clipq/onnx/graph";
import { decode, encode } from "@clipq/onnx/proto";
import { float32, int64, toFloat32 } from "@clipq/onnx/tensor";
import { ModelBuilder, seededRandom } from "@clipq/onnx/builder";
import { quantize } from "./quantize.ts";
import { planQuantization } from "./plan.ts";
import { countOps, type Feeds, minmaxRanges, randomFeeds, runGraph, sqnr } from "./testdata/ort.ts";
import { convHeavy, smallNet, yoloLike } from "./testdata/models.ts";

function convGraph(opset = 13) {
  return emptyGraph({
    opsetImports: [{ domain: "", version: opset }],
    inputs: [{ name: "x", dtype: "float32", shape: [1, 2, 4, 4] }],
    outputs: [{ name: "y", dtype: "float32" }],
    initializers: new Map([
      ["w", float32([3, 2, 1, 1], [1, -1, 0.5, 0.25, -2, 1])],
      ["b", float32([3], [0.1, -0.2, 0.3])],
    ]),
    nodes: [node({ name: "conv", op: "Conv", inputs: ["x", "w", "b"], outputs: ["y"] })],
  });
}
/**
 * The value of a constant tensor of a quantized graph: an initializer, a Mul of constants (a bias
 * scale), or a DequantizeLinear of constants (per-axis when it has an axis).
 */
function constValue(graph: Graph, name: string): Float32Array {
  const t = graph.initializers.get(name);
  if (t) return Float32Array.from(toFloat32(t));
  const n = graph.nodes.find((m) => m.outputs.includes(name));
  if (n?.op === "Mul") {
    const [a, b] = n.inputs.map((x) => constValue(graph, x!));
    const long = a!.length >= b!.length ? a! : b!;
    return long.map((_, i) => Math.fround(a![i % a!.length]! * b![i % b!.length]!));
  }
  if (n?.op === "DequantizeLinear") {
    const q = constValue(graph, n.inputs[0]!);
    const s = constValue(graph, n.inputs[1]!);
    const z = n.inputs[2] ? constValue(graph, n.inputs[2]) : new Float32Array(s.length);
    const dims = graph.initializers.get(n.inputs[0]!)!.dims;
    const axis = n.attributes["axis"]?.value as number | undefined;
    const inner = axis === undefined ? q.length : dims.slice(axis + 1).reduce((x, y) => x * y, 1);
    return q.map((v, i) => {
      const c = axis === undefined ? 0 : Math.floor(i / inner) % dims[axis]!;
      return (v - z[c]!) * s[c]!;
    });
  }
  throw new Error(`tensor "${name}" is not a constant (produced by ${n?.op})`);
}

const convRanges = new Map([
  ["x", { min: -1, max: 1, source: "test" }],
  ["y", { min: -4, max: 4, source: "test" }],
  ["r", { min: 0, max: 4, source: "test" }],
]);

Deno.test("quantize() writes Conv with bias as input Q/DQ, int8 weight DQ, int32 bias DQ, output Q/DQ", () => {
  const { graph, report } = quantize(convGraph(), { ranges: convRanges, exclude: { head: false } });
  const ops = countOps(graph);
  assert.equal(ops["QuantizeLinear"], 2);
  assert.equal(ops["DequantizeLinear"], 4);
  const conv = graph.nodes.find((n) => n.op === "Conv")!;
  const producer = (t: string) => graph.nodes.find((n) => n.outputs.includes(t));
  const wdq = producer(conv.inputs[1]!)!;
  const bdq = producer(conv.inputs[2]!)!;
  assert.equal(wdq.op, "DequantizeLinear");
  assert.equal(graph.initializers.get(wdq.inputs[0]!)?.dtype, "int8");
  assert.deepEqual(graph.initializers.get(wdq.inputs[1]!)?.dims, [3]);
  assert.equal(bdq.op, "DequantizeLinear");
  assert.equal(graph.initializers.get(bdq.inputs[0]!)?.dtype, "int32");
  assert.ok(!graph.initializers.has("w") && !graph.initializers.has("b"), "float weights are gone");
  assert.equal(producer(conv.inputs[0]!)?.op, "DequantizeLinear");
  // The graph output keeps its name, now on the output DequantizeLinear.
  assert.equal(producer("y")?.op, "DequantizeLinear");
  assert.deepEqual(report.quantizedNodes, ["conv"]);
  const bias = graph.initializers.get(bdq.inputs[0]!)!;
  // The bias scale is s_in · s_w, written as a Mul of the two scales (no second vector).
  assert.equal(producer(bdq.inputs[1]!)?.op, "Mul");
  const bscale = constValue(graph, bdq.inputs[1]!);
  const wscale = toFloat32(graph.initializers.get(wdq.inputs[1]!)!);
  const sIn = report.tensors.find((t) => t.name === "x")!.scale;
  for (let c = 0; c < 3; c++) assert.equal(bscale[c], Math.fround(sIn * wscale[c]!));
  assert.ok(Math.abs((bias.data[0] as number) * bscale[0]! - 0.1) <= bscale[0]! / 2);
});

Deno.test("quantize() puts one Q/DQ pair after Conv+Relu and none between them", () => {
  const g = convGraph();
  const withRelu = {
    ...g,
    outputs: [{ name: "r", dtype: "float32" as const }],
    nodes: [...g.nodes, node({ name: "relu", op: "Relu", inputs: ["y"], outputs: ["r"] })],
  };
  const { graph, report } = quantize(withRelu, { ranges: convRanges, exclude: { head: false } });
  const ops = countOps(graph);
  assert.equal(ops["QuantizeLinear"], 2);
  const relu = graph.nodes.find((n) => n.op === "Relu")!;
  assert.equal(graph.nodes.find((n) => n.outputs.includes(relu.inputs[0]!))?.op, "Conv");
  const q = graph.nodes.filter((n) => n.op === "QuantizeLinear").map((n) => n.inputs[0]);
  assert.ok(!q.includes("y"), "no Q on the conv output");
  assert.equal(report.tensors.find((t) => t.name === "r")?.zeroPoint, 0);
});

Deno.test("quantize() format qoperator gives exactly one QLinearConv", async () => {
  const { graph } = quantize(convGraph(), {
    ranges: convRanges,
    exclude: { head: false },
    format: "qoperator",
  });
  const ops = countOps(graph);
  assert.equal(ops["QLinearConv"], 1);
  assert.equal(ops["Conv"], undefined);
  const feeds = randomFeeds(graph, 4);
  const q = (await runGraph(graph, feeds)).y!;
  const qdq = (await runGraph(
    quantize(convGraph(), { ranges: convRanges, exclude: { head: false } }).graph,
    feeds,
  )).y!;
  for (let i = 0; i < q.length; i++) assert.ok(Math.abs(q[i]! - qdq[i]!) <= 8 / 255 + 1e-6);
});

Deno.test("quantize() int8 output stays within 25 dB SQNR of float through onnxruntime", async () => {
  const g = smallNet();
  const ranges = await minmaxRanges(g, [randomFeeds(g, 1), randomFeeds(g, 2)]);
  const feeds = randomFeeds(g, 3);
  const ref = (await runGraph(g, feeds)).logits!;
  for (
    const [format, activations] of [["qdq", "u8"], ["qdq", "s8"], ["qoperator", "u8"]] as const
  ) {
    const { graph, report } = quantize(g, { ranges, format, activations });
    assert.ok(report.quantizedNodes.includes("fc"), "the last Gemm is quantized (inputs, weights)");
    if (format === "qoperator") {
      // conv1+Relu and conv3+Clip fold into their QLinearConv; conv2 and conv4 are plain ones.
      assert.equal(countOps(graph)["QLinearConv"], 4);
      assert.equal(countOps(graph)["Relu"], undefined);
      const ops = countOps(graph);
      for (
        const op of ["QLinearAdd", "QLinearLeakyRelu", "QLinearConcat", "QLinearGlobalAveragePool"]
      ) {
        assert.equal(ops[op], 1, `${op} in ${JSON.stringify(ops)}`);
      }
      for (const op of ["Add", "LeakyRelu", "Concat", "GlobalAveragePool"]) {
        assert.equal(ops[op], undefined);
      }
    }
    const out = (await runGraph(graph, feeds)).logits!;
    const db = sqnr(ref, out);
    assert.ok(
      db >= 25,
      `${format}/${activations}: expected SQNR ≥ 25 dB but found ${db.toFixed(1)}`,
    );
  }
});

Deno.test("quantize() QDQ graphs fuse into QLinearConv at onnxruntime level all", async () => {
  const g = convHeavy();
  const ranges = await minmaxRanges(g, [randomFeeds(g, 1)]);
  const { graph } = quantize(g, { ranges, exclude: { head: false } });
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/opt.onnx`;
    await runGraph(graph, randomFeeds(g, 2), { level: "all", optimizedPath: path });
    const ops = countOps(decode(await Deno.readFile(path)));
    const qconv = Object.entries(ops).filter(([k]) => k.includes("QLinearConv"))
      .reduce((a, [, v]) => a + v, 0);
    assert.equal(qconv, 3, `expected 3 fused convs but found ops ${JSON.stringify(ops)}`);
    assert.equal(ops["Conv"], undefined);
    assert.equal(ops["Relu"], undefined, "Relu folded into the u8 zero point");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("quantize() keeps an excluded conv between quantized ones float in onnxruntime, which would quantize it", async () => {
  // DQ → Conv (float weights) → Relu → Q is what onnxruntime's WeightBiasQuantization quantizes
  // itself (per-tensor int8 weights) and fuses: the exclusion gave 3 QLinearConv, not 2.
  const g = convHeavy();
  const ranges = await minmaxRanges(g, [randomFeeds(g, 1)]);
  const middle = g.nodes.filter((n) => n.op === "Conv")[1]!.name;
  for (const format of ["qdq", "qoperator"] as const) {
    const { graph, report } = quantize(g, {
      ranges,
      format,
      exclude: { names: [middle], head: false },
    });
    assert.ok(report.floatNodes.some((f) => f.node === middle));
    // Its input DequantizeLinear repeats the activation's scale per channel: the same numbers.
    const conv = graph.nodes.find((n) => n.name === middle)!;
    const dq = graph.nodes.find((n) => n.outputs.includes(conv.inputs[0]!))!;
    assert.equal(dq.op, "DequantizeLinear");
    // Axis 1, DequantizeLinear's default (the writer leaves it out).
    assert.equal(dq.attributes.axis?.value ?? 1, 1);
    const scales = graph.initializers.get(dq.inputs[1]!)!;
    assert.deepEqual(scales.dims, [256]);
    assert.equal(new Set(toFloat32(scales)).size, 1);
    const dir = await Deno.makeTempDir();
    try {
      const feeds = randomFeeds(g, 2);
      const path = `${dir}/opt.onnx`;
      const int8 = await runGraph(graph, feeds, { level: "all", optimizedPath: path });
      const optimized = decode(await Deno.readFile(path));
      const qconv = optimized.nodes.filter((n) => n.op === "QLinearConv").map((n) => n.name);
      assert.equal(qconv.length, 2, `${format}: ${JSON.stringify(countOps(optimized))}`);
      assert.ok(!qconv.some((n) => n.startsWith(middle)), `${middle} fused: ${qconv}`);
      assert.ok(optimized.nodes.some((n) => n.op === "Conv" && n.name.startsWith(middle)));
      // Same numbers as the graph evaluated without onnxruntime's fusions.
      const plain = await runGraph(graph, feeds, { level: "disabled" });
      assert.ok(sqnr(plain.y!, int8.y!) > 40, `${sqnr(plain.y!, int8.y!)}`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
});

Deno.test("quantize() head auto keeps head conv outputs and the decode float, weights int8", async () => {
  const g = yoloLike();
  const ranges = await minmaxRanges(g, [randomFeeds(g, 1, 0, 1)]);
  const { graph, report } = quantize(g, { ranges });
  const qInputs = new Set(
    graph.nodes.filter((n) => n.op === "QuantizeLinear").map((n) => n.inputs[0]),
  );
  assert.ok(!qInputs.has("head8") && !qInputs.has("head4"), "no Q/DQ on raw head outputs");
  for (const op of ["Reshape", "Transpose", "Sigmoid", "Mul", "Concat"]) {
    const float = report.floatNodes.filter((f) => f.op === op);
    assert.ok(float.length > 0 && float.every((f) => /decodes detections/.test(f.reason)), op);
  }
  const producer = (t: string) => graph.nodes.find((n) => n.outputs.includes(t));
  // The 1×1 head convs run as MatMuls (ops/lower.ts): ORT's int8 MatMul with a float output.
  const convs = graph.nodes.filter((n) => n.op === "Conv" || n.op === "MatMul");
  assert.equal(convs.length, 5);
  for (const c of convs) {
    const dq = producer(c.inputs[1]!)!;
    assert.equal(dq.op, "DequantizeLinear");
    assert.equal(graph.initializers.get(dq.inputs[0]!)?.dtype, "int8");
    assert.equal(producer(c.inputs[0]!)?.op, "DequantizeLinear", "head inputs are quantized");
  }
  const feeds = randomFeeds(g, 2, 0, 1);
  const ref = (await runGraph(g, feeds)).detections!;
  const out = (await runGraph(graph, feeds)).detections!;
  assert.ok(sqnr(ref, out) >= 25);
  // Without the head rule, the decode is quantized too.
  const all = quantize(g, { ranges, exclude: { head: false } }).report;
  assert.ok(all.quantizedNodes.some((n) => n.startsWith("sigmoid")));
});

Deno.test("quantize() int8 conv-heavy model is at most 25.3 % of the float size", () => {
  const g = convHeavy();
  const ranges = new Map([...planQuantization(g, { exclude: { head: false } }).activations]
    .map((t) => [t, { min: 0, max: 4, source: "test" }]));
  const { graph, report } = quantize(g, { ranges, exclude: { head: false } });
  assert.ok(report.sizes.ratio <= 0.253, `initializers: ${report.sizes.ratio}`);
  const ratio = encode(graph).length / encode(g).length;
  assert.ok(ratio <= 0.253, `file: expected ≤ 25.3 % but found ${(ratio * 100).toFixed(2)} %`);
});

Deno.test("quantize() leaves a node float when a range is missing, or throws when strict", () => {
  const ranges = new Map([["x", { min: -1, max: 1, source: "test" }]]);
  const { report } = quantize(convGraph(), { ranges, exclude: { head: false } });
  assert.deepEqual(report.floatNodes, [{
    node: "conv",
    op: "Conv",
    reason: 'no range for tensor "y"',
  }]);
  assert.throws(
    () => quantize(convGraph(), { ranges, exclude: { head: false }, strict: true }),
    (e) => e instanceof ModelError && /conv/.test(e.message) && /"y"/.test(e.message),
  );
});

Deno.test("quantize() excludes nodes by name, op type and pattern with the reason", () => {
  const g = smallNet();
  const ranges = new Map(
    planQuantization(g).activations.map((t) => [t, { min: -1, max: 1, source: "t" }]),
  );
  const { report } = quantize(g, {
    ranges,
    exclude: { names: ["conv2"], ops: ["Resize"], pattern: "^conv4$" },
  });
  const why = (n: string) => report.floatNodes.find((f) => f.node === n)?.reason;
  assert.equal(why("conv2"), "excluded by name");
  assert.match(why(report.floatNodes.find((f) => f.op === "Resize")!.node)!, /op type Resize/);
  assert.match(why("conv4")!, /pattern/);
  assert.ok(report.quantizedNodes.includes("conv1"));
});

Deno.test("quantize() raises opset 11 to 13 when safe and names the op when not", async () => {
  const { graph } = quantize(convGraph(11), { ranges: convRanges });
  assert.equal(opsetOf(graph), 13);
  const g = convGraph(11);
  const withSplit = {
    ...g,
    nodes: [...g.nodes, node({ name: "split", op: "Split", inputs: ["y"], outputs: ["s1", "s2"] })],
  };
  assert.throws(() => quantize(withSplit, { ranges: convRanges }), /Split.*upgrade/);
  const perTensor = quantize(convGraph(11), { ranges: convRanges, weights: "per-tensor" }).graph;
  assert.equal(opsetOf(perTensor), 11);
  // Opset 11 has no per-axis DequantizeLinear: the int32 bias must use a scalar scale there.
  const feeds = randomFeeds(perTensor, 3);
  assert.ok((await runGraph(perTensor, feeds)).y);
});

Deno.test("quantize() checks options up front and names the key", () => {
  assert.throws(
    () => quantize(convGraph(), { format: "qlinear" as never }),
    (e) => e instanceof ConfigError && e.keyPath === "format",
  );
  assert.throws(
    () => quantize(convGraph(), { format: "qoperator", activations: "s8" }),
    /activations/,
  );
  assert.throws(() => quantize(convGraph(), { exclude: { pattern: "(" } }), /exclude\.pattern/);
  assert.throws(() => quantize(convGraph(), { headOutputs: ["nope"] }), /headOutputs/);
});

Deno.test("quantize() applies bias shifts, adding a bias where the layer has none", () => {
  const g = convGraph();
  const shifts = new Map([["conv", Float32Array.of(0.1, 0.1, -0.2)]]);
  const { graph } = quantize(g, {
    ranges: convRanges,
    exclude: { head: false },
    biasShifts: shifts,
  });
  const conv = graph.nodes.find((n) => n.op === "Conv")!;
  const dq = graph.nodes.find((n) => n.outputs.includes(conv.inputs[2]!))!;
  const q = graph.initializers.get(dq.inputs[0]!)!.data as Int32Array;
  const s = constValue(graph, dq.inputs[1]!);
  const expected = [0, -0.3, 0.5];
  for (let c = 0; c < 3; c++) assert.ok(Math.abs(q[c]! * s[c]! - expected[c]!) <= s[c]!);
  const noBias = {
    ...g,
    nodes: [node({ name: "conv", op: "Conv", inputs: ["x", "w"], outputs: ["y"] })],
  };
  const r = quantize(noBias, { ranges: convRanges, exclude: { head: false }, biasShifts: shifts });
  assert.equal(r.graph.nodes.find((n) => n.op === "Conv")!.inputs.length, 3);
  assert.throws(
    () => quantize(g, { ranges: convRanges, biasShifts: new Map([["conv", Float32Array.of(1)]]) }),
    /3 per-channel/,
  );
});

Deno.test("quantize() handles grouped ConvTranspose, MatMul of two activations and per-tensor weights", async () => {
  const b = new ModelBuilder({ seed: 11 });
  const x = b.input("x", [1, 4, 6, 6]);
  const t = b.convTranspose(x, { outChannels: 4, kernel: 2, stride: 2, group: 2 });
  const r = b.reshape(t, [1, 4, 144]);
  const m = b.op("MatMul", [b.transpose(r, [0, 2, 1]), r], { shape: [1, 144, 144] });
  b.output(b.relu(m), "y");
  const g = b.build();
  const ranges = await minmaxRanges(g, [randomFeeds(g, 1)]);
  const feeds = randomFeeds(g, 2);
  const ref = (await runGraph(g, feeds)).y!;
  for (const weights of ["per-channel", "per-tensor"] as const) {
    const { graph, report } = quantize(g, { ranges, weights, exclude: { head: false } });
    assert.equal(report.floatNodes.length, 0, JSON.stringify(report.floatNodes));
    const out = (await runGraph(graph, feeds)).y!;
    assert.ok(sqnr(ref, out) >= 25, `${weights}: ${sqnr(ref, out)}`);
  }
});

Deno.test("quantize() reduceRange keeps weights in [-63, 63]; the report explains every scale", () => {
  const g = smallNet();
  const ranges = new Map(
    planQuantization(g).activations.map((t) => [t, { min: -1, max: 3, source: "percentile" }]),
  );
  const { graph, report } = quantize(g, { ranges, reduceRange: true, weightClip: "mse" });
  for (const [name, t] of graph.initializers) {
    if (t.dtype !== "int8") continue;
    for (const v of t.data as Int8Array) assert.ok(v >= -63 && v <= 63, `${name}: ${v}`);
  }
  const pooled = report.tensors.find((t) => t.name.startsWith("maxpool"))!;
  assert.match(pooled.source, /^shared with /);
  const conv2 = report.tensors.find((t) => t.name === "conv2")!;
  assert.deepEqual([conv2.min, conv2.max, conv2.source, conv2.zeroPoint], [
    -1,
    3,
    "percentile",
    64,
  ]);
  const relu = report.tensors.find((t) => t.name.startsWith("relu"))!;
  assert.deepEqual([relu.min, relu.zeroPoint, relu.source], [0, 0, "percentile, clamped to Relu"]);
  assert.equal(report.weights.length, 5);
  assert.ok(report.weights.every((w) => w.perChannel && w.clip === "mse" && w.minClipRatio <= 1));
});

Deno.test("quantize() derives a folded Relu's range from its producer's when only that was given", () => {
  const g = convGraph();
  const withRelu = {
    ...g,
    outputs: [{ name: "r", dtype: "float32" as const }],
    nodes: [...g.nodes, node({ name: "relu", op: "Relu", inputs: ["y"], outputs: ["r"] })],
  };
  const ranges = new Map([
    ["x", { min: -1, max: 1, source: "test" }],
    ["y", { min: -4, max: 2, source: "minmax" }],
  ]);
  const { report } = quantize(withRelu, { ranges, exclude: { head: false } });
  assert.deepEqual(report.quantizedNodes, ["conv", "relu"]);
  const r = report.tensors.find((t) => t.name === "r")!;
  assert.deepEqual([r.min, r.max, r.source], [0, 2, "minmax through Relu"]);
});

Deno.test("quantize() Gemm without transB and MatMul by a constant match float within 25 dB", async () => {
  const b = new ModelBuilder({ seed: 13 });
  const x = b.input("x", [4, 16]);
  const h = b.relu(b.gemm(x, { out: 32, transB: false, name: "fc1" }));
  b.output(b.matmul(h, { out: 8, name: "fc2" }), "y");
  const g = b.build();
  const plan = planQuantization(g);
  assert.deepEqual(plan.weightedLayers.map((w) => w.channelAxis), [1, 1]);
  const ranges = await minmaxRanges(g, [randomFeeds(g, 1)]);
  const feeds = randomFeeds(g, 2);
  const ref = (await runGraph(g, feeds)).y!;
  for (const format of ["qdq", "qoperator"] as const) {
    const { graph, report } = quantize(g, { ranges, format });
    assert.deepEqual(report.quantizedNodes.filter((n) => n.startsWith("fc")), ["fc1", "fc2"]);
    const db = sqnr(ref, (await runGraph(graph, feeds)).y!);
    assert.ok(db >= 25, `${format}: ${db}`);
  }
});

Deno.test("quantize() applies MatMul bias shifts to the bias Add after it, or adds one", async () => {
  const b = new ModelBuilder({ seed: 17 });
  const x = b.input("x", [2, 8]);
  const h = b.add(b.matmul(x, { out: 4, name: "mm1" }), [0.1, 0.2, 0.3, 0.4]);
  b.output(b.matmul(b.relu(h), { out: 4, name: "mm2" }), "y");
  const g = b.build();
  const ranges = await minmaxRanges(g, [randomFeeds(g, 1)]);
  const feeds = randomFeeds(g, 2);
  const shift = Float32Array.of(0.5, -0.5, 0.25, 0);
  const shifts = new Map([["mm1", shift], ["mm2", shift]]);
  const plain = quantize(g, { ranges, exclude: { head: false } });
  const corrected = quantize(g, { ranges, biasShifts: shifts, exclude: { head: false } });
  assert.equal(countOps(corrected.graph)["Add"], countOps(plain.graph)["Add"]! + 1);
  // y = mm2(relu(mm1(x) + c)): a shift s on mm2 lowers y by s exactly; on mm1 it changes relu's input.
  // With head auto, y is mm2's raw output (no output Q to saturate the shift away).
  const p = (await runGraph(quantize(g, { ranges }).graph, feeds)).y!;
  const onlyMm2 = quantize(g, { ranges, biasShifts: new Map([["mm2", shift]]) });
  assert.ok(onlyMm2.report.quantizedNodes.includes("mm2"));
  const q = (await runGraph(onlyMm2.graph, feeds)).y!;
  for (let i = 0; i < p.length; i++) {
    assert.ok(Math.abs(p[i]! - shift[i % 4]! - q[i]!) <= 1e-5, `${i}: ${p[i]} ${q[i]}`);
  }
  assert.ok(corrected.report.quantizedNodes.includes("mm1"), "mm1 keeps its (corrected) bias Add");
  // mm1's bias Add now adds c − shift (quantized u8, so within one step of it).
  const cg = corrected.graph;
  const reader = (t: string) => cg.nodes.find((n) => n.inputs.includes(t))!;
  const mm1 = cg.nodes.find((n) => n.name === "mm1")!;
  const add = reader(reader(reader(mm1.outputs[0]!).outputs[0]!).outputs[0]!); // Q, DQ, Add
  assert.equal(add.op, "Add");
  const c = add.inputs[1]!;
  const step = constValue(cg, cg.nodes.find((n) => n.outputs.includes(c))!.inputs[1]!)[0]!;
  const added = constValue(cg, c);
  [0.1, 0.2, 0.3, 0.4].forEach((c, i) => {
    assert.ok(Math.abs(added[i]! - (c - shift[i]!)) <= step, `${i}: ${added[i]}`);
  });
  const pre = corrected.report.tensors.find((t) => t.source.endsWith("before bias correction"));
  assert.ok(pre && corrected.report.quantizedNodes.includes("mm2"), "mm2 keeps a derived range");
});

Deno.test("quantize() clamps a folded Relu's range at 0 so onnxruntime can fuse the layer", () => {
  const g = convGraph();
  const withRelu = {
    ...g,
    outputs: [{ name: "r", dtype: "float32" as const }],
    nodes: [...g.nodes, node({ name: "relu", op: "Relu", inputs: ["y"], outputs: ["r"] })],
  };
  const ranges = new Map([
    ["x", { min: -1, max: 1, source: "test" }],
    ["r", { min: -0.5, max: 2, source: "override" }],
  ]);
  const tensors = quantize(withRelu, { ranges, exclude: { head: false } }).report.tensors;
  const r = tensors.find((t) => t.name === "r")!;
  assert.deepEqual([r.min, r.max, r.zeroPoint, r.source], [0, 2, 0, "override, clamped to Relu"]);
  // The report states the bounds, so a range search (calibrate.refine) stays inside them.
  assert.deepEqual(r.bounds, { min: 0 });
  const clip = {
    ...g,
    outputs: [{ name: "c", dtype: "float32" as const }],
    nodes: [
      ...g.nodes,
      node({ name: "relu6", op: "Clip", inputs: ["y", "lo", "hi"], outputs: ["c"] }),
    ],
    initializers: new Map([
      ...g.initializers,
      ["lo", float32([], [0])],
      ["hi", float32([], [6])],
    ]),
  };
  const c = quantize(clip, {
    ranges: new Map([["x", ranges.get("x")!], ["c", { min: 0, max: 9, source: "minmax" }]]),
    exclude: { head: false },
  }).report.tensors.find((t) => t.name === "c")!;
  assert.deepEqual([c.max, c.source, c.bounds], [6, "minmax, clamped to Clip", { min: 0, max: 6 }]);
  // A tensor no folded activation bounds has none.
  assert.equal(tensors.find((t) => t.name === "x")!.bounds, undefined);
});

Deno.test("quantize() Gemm and MatMul fuse into QGemm and QLinearMatMul at onnxruntime level all", async () => {
  const b = new ModelBuilder({ seed: 1 });
  const x = b.input("x", [4, 64]);
  const h = b.relu(b.gemm(x, { out: 64, transB: false }));
  const h2 = b.relu(b.matmul(h, { out: 64 }));
  b.output(b.relu(b.gemm(h2, { out: 8 })), "y");
  const g = b.build();
  const ranges = await minmaxRanges(g, [randomFeeds(g, 1)]);
  const { graph } = quantize(g, { ranges, exclude: { head: false } });
  const dir = await Deno.makeTempDir();
  try {
    await runGraph(graph, randomFeeds(g, 2), { optimizedPath: `${dir}/o.onnx` });
    const ops = countOps(decode(await Deno.readFile(`${dir}/o.onnx`)));
    assert.equal(ops["QGemm"], 2, JSON.stringify(ops));
    assert.equal(ops["QLinearMatMul"], 1, JSON.stringify(ops));
    assert.equal(ops["Relu"], undefined);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("quantize() writes a batched MatMul weight per tensor, which onnxruntime's QLinearMatMul runs", async () => {
  // x [2, 3, 8] × constant [2, 8, 5] → relu → another MatMul: per-column scales of a batched B
  // would have to be [1, 5] per batch in QLinearMatMul, which a DequantizeLinear axis cannot say.
  const r = seededRandom(4);
  const g = emptyGraph({
    inputs: [{ name: "x", dtype: "float32", shape: [2, 3, 8] }],
    outputs: [{ name: "y", dtype: "float32" }],
    initializers: new Map([
      ["w", float32([2, 8, 5], r.uniforms(80, -0.5, 0.5))],
      ["w2", float32([5, 4], r.uniforms(20, -0.5, 0.5))],
    ]),
    nodes: [
      node({ name: "mm", op: "MatMul", inputs: ["x", "w"], outputs: ["h"] }),
      node({ name: "relu", op: "Relu", inputs: ["h"], outputs: ["r"] }),
      node({ name: "mm2", op: "MatMul", inputs: ["r", "w2"], outputs: ["y"] }),
    ],
  });
  const ranges = await minmaxRanges(g, [randomFeeds(g, 1), randomFeeds(g, 2)]);
  const { graph, report } = quantize(g, { ranges, exclude: { head: false } });
  const perChannel = Object.fromEntries(report.weights.map((w) => [w.node, w.perChannel]));
  assert.deepEqual(perChannel, { mm: false, mm2: true });
  const feeds = randomFeeds(g, 3);
  const [ref, got] = [await runGraph(g, feeds), await runGraph(graph, feeds)];
  assert.ok(sqnr(ref.y!, got.y!) > 30, `SQNR ${sqnr(ref.y!, got.y!)}`);
});

Deno.test("quantize() leaves onnxruntime one Q at the input and one DQ at the output of smallNet", async () => {
  const g = smallNet();
  const ranges = await minmaxRanges(g, [randomFeeds(g, 1), randomFeeds(g, 2)]);
  const { graph } = quantize(g, { ranges, exclude: { head: false } });
  const dir = await Deno.makeTempDir();
  try {
    await runGraph(graph, randomFeeds(g, 3), { optimizedPath: `${dir}/o.onnx` });
    const ops = countOps(decode(await Deno.readFile(`${dir}/o.onnx`)));
    assert.equal(ops["QuantizeLinear"], 1, JSON.stringify(ops));
    assert.equal(ops["DequantizeLinear"], 1, JSON.stringify(ops));
    for (
      const op of [
        "Conv",
        "Relu",
        "Clip",
        "LeakyRelu",
        "Add",
        "Concat",
        "Gemm",
        "GlobalAveragePool",
      ]
    ) {
      assert.equal(ops[op], undefined, `float ${op} left in ${JSON.stringify(ops)}`);
    }
    assert.equal(ops["QLinearConv"], 4);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("quantize() turns Div by a constant into Mul by its reciprocal, unless Div is excluded", async () => {
  const b = new ModelBuilder({ seed: 19 });
  const x = b.input("x", [1, 4, 6, 6]);
  const c = b.conv(x, { outChannels: 4, kernel: 3, name: "conv" });
  const d = b.op("Div", [b.mul(c, b.relu(c)), b.initializer(6)], {
    name: "div",
    shape: [1, 4, 6, 6],
  });
  b.output(b.conv(d, { outChannels: 4, kernel: 1, name: "head" }), "y");
  const g = b.build();
  const ranges = await minmaxRanges(g, [randomFeeds(g, 1)]);
  const feeds = randomFeeds(g, 2);
  const { graph, report } = quantize(g, { ranges });
  // The Mul by 1/6 then folds into the head conv's weights (ops/lower.ts), or else into a
  // DequantizeLinear scale (ops/rescale.ts): not float, and no Div, no Mul left.
  assert.ok(!report.floatNodes.some((f) => f.node === "div"));
  assert.equal(graph.nodes.find((n) => n.name === "div"), undefined);
  assert.ok(!graph.nodes.some((n) => n.op === "Div"));
  const ref = (await runGraph(g, feeds)).y!;
  assert.ok(sqnr(ref, (await runGraph(graph, feeds)).y!) >= 25);
  const kept = quantize(g, { ranges, exclude: { ops: ["Div"] } });
  assert.equal(kept.graph.nodes.find((n) => n.name === "div")?.op, "Div");
  assert.match(kept.report.floatNodes.find((f) => f.node === "div")!.reason, /op type Div/);
});

Deno.test("quantize() names the node and weight holding a NaN", () => {
  const g = convGraph();
  const bad = {
    ...g,
    initializers: new Map([...g.initializers, ["w", float32([3, 2, 1, 1], [1, NaN, 0, 0, 0, 0])]]),
  };
  assert.throws(
    () => quantize(bad, { ranges: convRanges }),
    (e) =>
      e instanceof ModelError && /node "conv", weight "w"/.test(e.message) && /NaN/.test(e.message),
  );
});

Deno.test("quantize() writes what it adds compactly: short names, unnamed nodes, parameters shared by value", () => {
  const g = smallNet();
  const ranges = new Map(
    planQuantization(g).activations.map((t) => [t, { min: -1, max: 3, source: "test" }]),
  );
  const { graph } = quantize(g, { ranges, exclude: { head: false } });
  const originalNodes = new Set(g.nodes.map((n) => n.name));
  // The model's tensors, and those of nodes the ORT lowering added (named, unlike the quantizer's).
  const original = new Set([
    ...g.nodes.flatMap((n) => [...n.inputs, ...n.outputs]),
    ...graph.nodes.filter((n) => n.name !== "").flatMap((n) => n.outputs),
  ]);
  const added = graph.nodes.filter((n) => !originalNodes.has(n.name) && n.op.endsWith("Linear"));
  assert.ok(added.length > 20 && added.every((n) => n.name === ""), "added Q/DQ go unnamed");
  for (const n of added) {
    for (const t of [...n.inputs, ...n.outputs].filter((t) => !original.has(t))) {
      assert.match(t, /^[a-zA-Z][0-9a-zA-Z]?$/, `added tensor name "${t}"`);
    }
  }
  // Every scalar value is one initializer, however many Q/DQ nodes read it.
  const scalars = [...graph.initializers.values()].filter((t) => t.dims.length === 0)
    .map((t) => `${t.dtype}:${t.data[0]}`);
  assert.equal(new Set(scalars).size, scalars.length, scalars.join(" "));
  // Conv weights have no zero point (a Gemm's keeps one, shared per channel count: QGemm fusion
  // needs it, as the QGemm test checks).
  assert.ok(
    ![...graph.initializers.values()].some((t) => t.dtype === "int8" && t.dims.length === 1),
  );
  // ONNX default attributes (dilations 1, group 1, strides 1 …) and the kernel_shape the weight
  // states are not written.
  const conv = graph.nodes.find((n) => n.name === "conv1")!;
  assert.deepEqual(Object.keys(conv.attributes), ["pads"]);
  const producer = (t: string) => graph.nodes.find((n) => n.outputs.includes(t))!;
  assert.equal(producer(conv.inputs[1]!).inputs.length, 2);
});

Deno.test("quantize() shares equal scalar constants under one short name and keeps distinct ones", () => {
  const g = emptyGraph({
    opsetImports: [{ domain: "", version: 13 }],
    inputs: [{ name: "x", dtype: "float32", shape: [1, 4] }],
    outputs: [{ name: "y", dtype: "float32" }],
    initializers: new Map([
      ["long.zero.a", float32([], [0])],
      ["long.six.a", float32([], [6])],
      ["long.zero.b", float32([], [0])],
      ["long.six.b", float32([], [6])],
      ["minus.zero", float32([], [-0])],
    ]),
    nodes: [
      node({ name: "c1", op: "Clip", inputs: ["x", "long.zero.a", "long.six.a"], outputs: ["a"] }),
      node({ name: "c2", op: "Clip", inputs: ["a", "long.zero.b", "long.six.b"], outputs: ["b"] }),
      node({ name: "c3", op: "Clip", inputs: ["b", "minus.zero", "long.six.a"], outputs: ["y"] }),
    ],
  });
  const { graph } = quantize(g, { ranges: new Map(), exclude: { head: false } });
  const [c1, c2, c3] = ["c1", "c2", "c3"].map((n) => graph.nodes.find((m) => m.name === n)!);
  assert.deepEqual(c1!.inputs, c2!.inputs.map((x, i) => (i === 0 ? "x" : x)));
  assert.match(c1!.inputs[1]!, /^[a-zA-Z][0-9a-zA-Z]?$/);
  assert.notEqual(c3!.inputs[1], c1!.inputs[1], "−0 stays apart from 0");
  assert.equal(graph.initializers.size, 3);
});

/**
 * `q` with each view op that reads a QuantizeLinear's integers (directly or through other such
 * views) written back as DQ → op → Q on that QuantizeLinear's parameters.
 */
function expandIntegerViews(q: Graph): { graph: Graph; views: string[] } {
  const params = new Map<string, string[]>(); // integer tensor → its scale and zero point
  const views: string[] = [];
  const nodes = q.nodes.flatMap((n, i) => {
    if (n.op === "QuantizeLinear") params.set(n.outputs[0]!, n.inputs.slice(1));
    const sz = params.get(n.inputs[0]!);
    // (A Pad reading a QuantizeLinear is the RGB input's channel pad, padding the integers with
    // the zero point: no view of a quantized op's output, see lower_test.ts.)
    if (n.op === "QuantizeLinear" || n.op === "DequantizeLinear" || n.op === "Pad" || !sz) {
      return [n];
    }
    views.push(n.op);
    params.set(n.outputs[0]!, sz);
    // A view moves its first input; a Concat all of them.
    const moved = n.op === "Concat" ? n.inputs.length : 1;
    const dqs = n.inputs.slice(0, moved).map((x, k) =>
      node({ name: "", op: "DequantizeLinear", inputs: [x, ...sz], outputs: [`f${i}_${k}`] })
    );
    return [
      ...dqs,
      {
        ...n,
        inputs: [...dqs.map((d) => d.outputs[0]!), ...n.inputs.slice(moved)],
        outputs: [`r${i}`],
      },
      node({ name: "", op: "QuantizeLinear", inputs: [`r${i}`, ...sz], outputs: [n.outputs[0]!] }),
    ];
  });
  return { graph: { ...q, nodes }, views };
}

/** Runs a quantized graph and its expanded form: same outputs, same onnxruntime fusion. */
async function assertSameAsExpanded(q: Graph, feeds: Feeds, views: string[]) {
  const e = expandIntegerViews(q);
  assert.deepEqual(e.views, views);
  const dir = await Deno.makeTempDir();
  try {
    const a = await runGraph(q, feeds, { optimizedPath: `${dir}/a.onnx` });
    const b = await runGraph(e.graph, feeds, { optimizedPath: `${dir}/e.onnx` });
    assert.deepEqual(a, b);
    const ops = (p: string) => countOps(decode(Deno.readFileSync(p)));
    // The same fusion, except that onnxruntime makes DQ → Concat → Q a QLinearConcat (which
    // copies when the grids agree) where the integers need only a Concat.
    const { QLinearConcat, ...expanded } = ops(`${dir}/e.onnx`);
    if (QLinearConcat) expanded.Concat = (expanded.Concat ?? 0) + QLinearConcat;
    assert.deepEqual(ops(`${dir}/a.onnx`), expanded);
    assert.ok(encode(q).length < encode(e.graph).length);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("quantize() runs a Reshape between quantized ops on the integers, bit-identical to its Q/DQ pair", async () => {
  const b = new ModelBuilder({ seed: 11 });
  let x = b.input("x", [1, 3, 8, 8]);
  x = b.relu(b.conv(x, { outChannels: 8, kernel: 3, pad: 1 }));
  x = b.reshape(x, [1, 8, 4, 16]);
  // (A 3×3 head conv stays a Conv; a 1×1 one would run as Transpose → MatMul, ops/lower.ts.)
  b.output(b.conv(x, { outChannels: 4, kernel: 3, pad: 1 }), "y");
  const g = b.build();
  const feeds = randomFeeds(g, 3);
  const { graph: q } = quantize(g, { ranges: await minmaxRanges(g, [feeds]) });
  await assertSameAsExpanded(q, feeds, ["Reshape"]);
});

Deno.test("quantize() runs MaxPool, nearest Resize and the head lowering's Transpose on the integers, bit-identical", async () => {
  const b = new ModelBuilder({ seed: 12 });
  let x = b.input("x", [1, 3, 8, 8]);
  x = b.relu(b.conv(x, { outChannels: 8, kernel: 3, pad: 1 }));
  x = b.maxPool(x, { kernel: 3, stride: 2, pad: 1 });
  b.output(b.conv(x, { outChannels: 4, kernel: 1 }), "y");
  const g = b.build();
  const feeds = randomFeeds(g, 3);
  const { graph: q } = quantize(g, { ranges: await minmaxRanges(g, [feeds]) });
  await assertSameAsExpanded(q, feeds, ["MaxPool", "Transpose"]);
  // A nearest upsampling only copies values: it moves too (the lowering makes it a channels-last
  // Expand; lower_test.ts has the one-channel view of an unknown size).
  const r = new ModelBuilder({ seed: 16 });
  let y = r.relu(r.conv(r.input("x", [1, 3, 8, 8]), { outChannels: 8, kernel: 3, pad: 1 }));
  y = r.resize(y, 2);
  r.output(r.conv(y, { outChannels: 4, kernel: 3, pad: 1 }), "y");
  const up = r.build();
  const upFeeds = randomFeeds(up, 4);
  const upQ = quantize(up, { ranges: await minmaxRanges(up, [upFeeds]) }).graph;
  await assertSameAsExpanded(upQ, upFeeds, [
    "Transpose",
    "Unsqueeze",
    "Expand",
    "Reshape",
    "Transpose",
  ]);
  // Below opset 12 MaxPool takes no 8-bit integers: per-tensor weights keep such a model at 10.
  const old = { ...g, opsetImports: [{ domain: "", version: 10 }] };
  const p = quantize(old, { ranges: await minmaxRanges(g, [feeds]), weights: "per-tensor" }).graph;
  assert.equal(opsetOf(p), 10);
  const pool = p.nodes.find((n) => n.op === "MaxPool")!;
  assert.equal(p.nodes.find((n) => n.outputs[0] === pool.inputs[0])?.op, "DequantizeLinear");
});

Deno.test("quantize() writes what its file needs: no name on added nodes, no unused Resize attributes, short int64 constants", async () => {
  const b = new ModelBuilder({ seed: 13 });
  let x = b.input("x", [1, 3, 8, 8]);
  x = b.relu(b.conv(x, { outChannels: 8, kernel: 3, pad: 1, name: "conv" }));
  const scales = b.initializer(float32([4], [1, 1, 2, 2]));
  const linear = (mode: string) =>
    b.op("Resize", [x, "", scales], {
      attributes: {
        mode: { type: "string", value: mode },
        // (asymmetric with round_prefer_ceil: not whole-pixel copies, so the nearest one stays a
        // Resize rather than the lowering's Expand.)
        coordinate_transformation_mode: { type: "string", value: "asymmetric" },
        // Read only in mode nearest; cubic_coeff_a only in mode cubic.
        nearest_mode: { type: "string", value: "round_prefer_ceil" },
        cubic_coeff_a: { type: "float", value: -0.5 },
      },
      shape: [1, 8, 16, 16],
    });
  const shape = b.initializer(int64([3], [1, 8, 256]), "a/long/exporter/name/Reshape/shape");
  const up = b.add(linear("linear"), linear("nearest"));
  b.output(
    b.op("Reshape", [b.relu(b.conv(up, { outChannels: 8, kernel: 3, pad: 1 })), shape]),
    "y",
  );
  const g = b.build();
  const feeds = randomFeeds(g, 3);
  const { graph: q } = quantize(g, {
    ranges: await minmaxRanges(g, [feeds]),
    exclude: { head: false },
  });
  const [lin, near] = q.nodes.filter((n) => n.op === "Resize");
  assert.deepEqual(Object.keys(lin!.attributes).sort(), ["coordinate_transformation_mode", "mode"]);
  // (mode nearest: the default)
  assert.deepEqual(Object.keys(near!.attributes).sort(), [
    "coordinate_transformation_mode",
    "nearest_mode",
  ]);
  const reshape = q.nodes.findLast((n) => n.op === "Reshape")!;
  assert.match(reshape.inputs[1]!, /^[a-zA-Z][0-9a-zA-Z]?$/);
  assert.deepEqual([...q.initializers.get(reshape.inputs[1]!)!.data], [1n, 8n, 256n]);
  assert.ok(q.nodes.some((n) => n.name === "conv"), "the model's nodes keep their names");
  // An unnamed node costs no name field: naming the added nodes "" vs leaving them out is free,
  // and the file reads back with the same empty names.
  const bytes = encode(q);
  const added = q.nodes.filter((n) => n.name === "").length;
  assert.ok(added > 10);
  const named = encode({ ...q, nodes: q.nodes.map((n) => ({ ...n, name: n.name || "n" })) });
  assert.equal(named.length - bytes.length, 3 * added);
  assert.deepEqual(decode(bytes).nodes.map((n) => n.name), q.nodes.map((n) => n.name));
  assert.deepEqual(await runGraph(q, feeds), await runGraph(decode(bytes), feeds));
});

/** Two Relu branches of one input concatenated, then a 3×3 conv: the ranges are the caller's. */
function twoBranches(): Graph {
  const b = new ModelBuilder({ seed: 14 });
  const x = b.input("x", [1, 3, 8, 8]);
  const l = b.relu(b.conv(x, { outChannels: 4, kernel: 3, pad: 1 }));
  const r = b.relu(b.conv(x, { outChannels: 4, kernel: 3, pad: 1 }));
  b.output(b.conv(b.concat([l, r]), { outChannels: 4, kernel: 3, pad: 1 }), "y");
  return b.build();
}

Deno.test("quantize() puts a Concat's inputs on its output's grid and runs it on the integers, bit-identical", async () => {
  const g = twoBranches();
  const feeds = randomFeeds(g, 5);
  const [left, right] = g.nodes.find((n) => n.op === "Concat")!.inputs;
  const cat = g.nodes.find((n) => n.op === "Concat")!.outputs[0]!;
  const ranges = new Map(await minmaxRanges(g, [feeds]));
  ranges.set(left!, { min: 0, max: 2, source: "minmax" });
  ranges.set(right!, { min: 0, max: 1.5, source: "minmax" });
  ranges.set(cat, { min: 0, max: 2, source: "minmax" });
  const { graph: q, report } = quantize(g, { ranges });
  const grid = (t: string) => report.tensors.find((r) => r.name === t)!;
  assert.deepEqual([grid(right!).max, grid(right!).scale], [2, grid(cat).scale]);
  assert.equal(grid(right!).source, `minmax, the grid of Concat "${cat}"`);
  // Q → Concat → DQ: the Concat copies integers (no QLinearConcat in onnxruntime).
  await assertSameAsExpanded(q, feeds, ["Concat"]);
  const dir = await Deno.makeTempDir();
  try {
    await runGraph(q, feeds, { optimizedPath: `${dir}/o.onnx` });
    const ops = countOps(decode(await Deno.readFile(`${dir}/o.onnx`)));
    assert.equal(ops["QLinearConcat"], undefined, JSON.stringify(ops));
    assert.equal(ops["QLinearConv"], 2, JSON.stringify(ops)); // (the head conv stays float)
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("quantize() keeps a Concat input's own grid when another op reads it and the grid does not cover it (CReLU: Concat(x, −x), then Relu)", async () => {
  const b = new ModelBuilder({ seed: 15 });
  const x = b.input("x", [1, 3, 8, 8]);
  const c = b.conv(x, { outChannels: 4, kernel: 3, pad: 1 });
  const crelu = b.relu(
    b.maxPool(b.concat([c, b.op("Neg", [c], { shape: [1, 4, 8, 8] })], 1), {
      kernel: 2,
      stride: 2,
    }),
  );
  b.output(b.conv(crelu, { outChannels: 4, kernel: 1 }), "y");
  const g = b.build();
  const feeds = randomFeeds(g, 6);
  const ranges = new Map(await minmaxRanges(g, [feeds]));
  // FaceBoxes' Concat took its grid from the Relu after it, from 0: it does not cover x.
  const cat = g.nodes.find((n) => n.op === "Concat")!.outputs[0]!;
  ranges.set(cat, { ...ranges.get(cat)!, min: 0 });
  const { graph: q, report } = quantize(g, { ranges, exclude: { head: false } });
  // The conv's output keeps its negative half (the Neg needs it): its grid is its own.
  const own = report.tensors.find((r) => r.name === c)!;
  assert.ok(own.min < 0, JSON.stringify(own));
  assert.ok(!own.source.includes("the grid of Concat"), own.source);
  const [want, got] = [(await runGraph(g, feeds)).y!, (await runGraph(q, feeds)).y!];
  assert.ok(sqnr(want, got) > 30, `SQNR ${sqnr(want, got).toFixed(1)} dB`);
});

Deno.test("quantize() puts a Concat input that a conv reads too on the Concat's grid where that grid covers it (NanoDet's blocks)", async () => {
  const b = new ModelBuilder({ seed: 16 });
  const x = b.input("x", [1, 3, 8, 8]);
  const l = b.relu(b.conv(x, { outChannels: 4, kernel: 3, pad: 1 }));
  const r = b.relu(b.conv(x, { outChannels: 4, kernel: 3, pad: 1 }));
  const cat = b.concat([l, r]);
  b.output(b.conv(cat, { outChannels: 4, kernel: 3, pad: 1 }), "y");
  b.output(b.conv(r, { outChannels: 4, kernel: 1 }), "z");
  const g = b.build();
  const feeds = randomFeeds(g, 7);
  const ranges = new Map(await minmaxRanges(g, [feeds]));
  const withRight = (max: number) => {
    ranges.set(l, { min: 0, max: 2, source: "minmax" });
    ranges.set(r, { min: 0, max, source: "minmax" });
    ranges.set(cat, { min: 0, max: 2, source: "minmax" });
    return quantize(g, { ranges, exclude: { head: false } });
  };
  const grid = (q: ReturnType<typeof quantize>, t: string) =>
    q.report.tensors.find((e) => e.name === t)!;
  // Inside the grid, or past it by under 2 % of its width: both readers read it on the grid.
  for (const max of [1.5, 2.03]) {
    const q = withRight(max);
    assert.equal(grid(q, r).source, `minmax, the grid of Concat "${cat}"`);
    assert.equal(grid(q, r).scale, grid(q, cat).scale);
    await assertSameAsExpanded(q.graph, feeds, ["Concat"]);
  }
  const dir = await Deno.makeTempDir();
  try {
    await runGraph(withRight(1.5).graph, feeds, { optimizedPath: `${dir}/o.onnx` });
    const ops = countOps(decode(await Deno.readFile(`${dir}/o.onnx`)));
    assert.equal(ops["QLinearConcat"], undefined, JSON.stringify(ops));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  // Further past it, the conv reading it would lose values it was calibrated with: its own grid.
  const past = withRight(2.2);
  assert.equal(grid(past, r).max, 2.2);
  assert.ok(
    past.graph.nodes.some((n) => n.op === "QuantizeLinear" && n.inputs[0] === cat),
    "the Concat stays between DequantizeLinear and QuantizeLinear (a QLinearConcat)",
  );
});

Deno.test("quantize() keeps a Concat input's own grid when it is under half the output's range or feeds another Concat", async () => {
  const g = twoBranches();
  const feeds = randomFeeds(g, 5);
  const concat = g.nodes.find((n) => n.op === "Concat")!;
  const [left, right] = concat.inputs;
  const ranges = new Map(await minmaxRanges(g, [feeds]));
  ranges.set(left!, { min: 0, max: 2, source: "minmax" });
  ranges.set(right!, { min: 0, max: 0.9, source: "minmax" });
  ranges.set(concat.outputs[0]!, { min: 0, max: 2, source: "minmax" });
  const narrow = quantize(g, { ranges });
  const max = (q: typeof narrow, t: string) => q.report.tensors.find((r) => r.name === t)!.max;
  assert.equal(max(narrow, right!), 0.9);
  assert.equal(narrow.graph.nodes.find((n) => n.op === "Concat")!.inputs.length, 2);
  assert.ok(
    narrow.graph.nodes.some((n) => n.op === "QuantizeLinear" && n.inputs[0] === concat.outputs[0]),
    "the Concat stays between DequantizeLinear and QuantizeLinear (a QLinearConcat)",
  );
  // The same input read by a second Concat: each would want its own grid.
  const twice: Graph = {
    ...g,
    nodes: [
      ...g.nodes,
      node({
        name: "cat2",
        op: "Concat",
        inputs: [right!, left!],
        outputs: ["cat2"],
        attributes: { axis: { type: "int", value: 1 } },
      }),
    ],
    outputs: [...g.outputs, { name: "cat2", dtype: "float32" }],
  };
  ranges.set(right!, { min: 0, max: 1.5, source: "minmax" });
  ranges.set("cat2", { min: 0, max: 2, source: "minmax" });
  const shared = quantize(twice, { ranges, exclude: { head: false } });
  assert.equal(max(shared, right!), 1.5);
});

Deno.test("quantize() gives a Concat input written by a pass-through op its grid where the chain starts", async () => {
  const b = new ModelBuilder({ seed: 15 });
  const x = b.input("x", [1, 3, 8, 8]);
  const l = b.relu(b.conv(x, { outChannels: 4, kernel: 3, pad: 1 }));
  const r = b.relu(b.conv(x, { outChannels: 4, kernel: 3, pad: 1 }));
  const pooled = b.maxPool(r, { kernel: 3, stride: 1, pad: 1 });
  const cat = b.concat([l, pooled]);
  b.output(b.conv(cat, { outChannels: 4, kernel: 3, pad: 1 }), "y");
  const g = b.build();
  const feeds = randomFeeds(g, 6);
  const ranges = new Map(await minmaxRanges(g, [feeds]));
  ranges.set(l, { min: 0, max: 2, source: "minmax" });
  ranges.set(r, { min: 0, max: 1.5, source: "minmax" });
  ranges.set(cat, { min: 0, max: 2, source: "minmax" });
  const { graph: q, report } = quantize(g, { ranges });
  const grid = (t: string) => report.tensors.find((e) => e.name === t)!;
  assert.deepEqual([grid(r).max, grid(pooled).scale], [2, grid(cat).scale]);
  // Q → MaxPool and Q → Concat → DQ: all on the integers.
  await assertSameAsExpanded(q, feeds, ["MaxPool", "Concat"]);
});

Deno.test("quantize() head auto walks through a peak test's bool Equal: the heatmap and its MaxPool stay float, and the peaks are float's", async () => {
  // CenterNet's decode: peaks = h · (h == MaxPool(h)), with h = Sigmoid(last conv), channels last.
  const b = new ModelBuilder({ seed: 1 });
  const conv = b.conv(b.input("x", [1, 3, 8, 8]), { outChannels: 2, kernel: 3, pad: 1 });
  b.output(conv);
  const g0 = b.build();
  const perm = { perm: { type: "ints" as const, value: [0, 2, 3, 1] } };
  const g = emptyGraph({
    ...g0,
    nodes: [
      ...g0.nodes,
      node({ name: "sig", op: "Sigmoid", inputs: [conv], outputs: ["h"] }),
      node({
        name: "t1",
        op: "Transpose",
        inputs: ["h"],
        outputs: ["keypoints"],
        attributes: perm,
      }),
      node({
        name: "pool",
        op: "MaxPool",
        inputs: ["h"],
        outputs: ["m"],
        attributes: {
          kernel_shape: { type: "ints", value: [3, 3] },
          pads: { type: "ints", value: [1, 1, 1, 1] },
        },
      }),
      node({ name: "t2", op: "Transpose", inputs: ["m"], outputs: ["mt"], attributes: perm }),
      node({ name: "eq", op: "Equal", inputs: ["keypoints", "mt"], outputs: ["peak"] }),
      node({
        name: "cast",
        op: "Cast",
        inputs: ["peak"],
        outputs: ["peakf"],
        attributes: { to: { type: "int", value: 1 } },
      }),
      node({ name: "mask", op: "Mul", inputs: ["keypoints", "peakf"], outputs: ["peaks"] }),
    ],
    outputs: [{ name: "peaks", dtype: "float32", shape: [1, 8, 8, 2] }],
  });
  const x = Float32Array.from({ length: 192 }, (_, i) => (i * 37 % 101) / 101);
  const ranges = await minmaxRanges(g, [{ x }]);
  const want = (await runGraph(g, { x })).peaks!;
  for (const exclude of [{ head: "auto" as const }, { head: "auto" as const, ops: ["MaxPool"] }]) {
    const { graph: q, report } = quantize(g, { ranges, exclude });
    const quantizedTensors = q.nodes.filter((n) => n.op === "QuantizeLinear").map((n) =>
      n.inputs[0]
    );
    assert.deepEqual(quantizedTensors, ["x"], JSON.stringify(exclude));
    for (const name of ["sig", "pool", "eq", "mask"]) {
      const why = report.floatNodes.find((e) => e.node === name)?.reason ?? "quantized";
      assert.match(why, /head: auto|excluded/, `${name}: ${why}`);
    }
    // The last conv still runs int8 (float output): the heatmap moves a little, the peaks do not.
    const got = (await runGraph(q, { x })).peaks!;
    const positions = (a: Float32Array) => [...a].flatMap((v, i) => (v > 0 ? [i] : []));
    assert.deepEqual(positions(got), positions(want));
  }
});

Deno.test("quantize() keeps a dead channel's bias: its weight scale is raised so the int32 bias fits", async () => {
  const b = new ModelBuilder({ seed: 1 });
  const x = b.input("x", [1, 4, 6, 6]);
  const wv = b.random.normals(4 * 4 * 9, 0.3);
  for (let i = 0; i < 36; i++) wv[i] = wv[i]! * 1e-7; // output channel 0: dead, bias 1
  const w = b.initializer(float32([4, 4, 3, 3], wv));
  const bias = b.initializer(float32([4], [1, -1, 0.5, 0.1]));
  const y = b.op("Conv", [x, w, bias], {
    attributes: {
      kernel_shape: { type: "ints", value: [3, 3] },
      pads: { type: "ints", value: [1, 1, 1, 1] },
    },
    shape: [1, 4, 6, 6],
  });
  b.output(y, "y");
  const g = b.build();
  const ranges = new Map([
    ["x", { min: -1, max: 1, source: "test" }],
    ["y", { min: -3, max: 3, source: "test" }],
  ]);
  const feeds: Feeds = { x: new Float32Array(144).map((_, i) => Math.sin(i * 1.7)) };
  const ref = (await runGraph(g, feeds)).y!;
  const { graph, report } = quantize(g, { ranges, exclude: { head: false } });
  const out = (await runGraph(graph, feeds)).y!;
  // Saturated, the bias had made channel 0 output 0.04 instead of 1.
  for (let i = 0; i < 36; i++) assert.ok(Math.abs(out[i]! - ref[i]!) < 0.05, `${out[i]}`);
  assert.equal(report.weights[0]?.raisedForBias, 1);
});

Deno.test("quantize() drops a folded Clip the grid saturates exactly, and gives the others their own Q/DQ", async () => {
  // Clip(-0.5, 6) on u8: zero point 20 puts -0.5 in level 0 and 6 in level 255, so Q alone is
  // Q∘Clip; left float between the layer and its Q (whose grid's -0.51 onnxruntime takes for a
  // reason to keep it), the Clip had made onnxruntime 1.30 refuse the model at level all ("two
  // nodes with same node name"), with Conv, Gemm and MatMul producers alike. On s8's symmetric
  // grid the bounds are not its end levels: the Clip stays, between a DQ and a Q of its own. A
  // Clip in the "ai.onnx" domain (the default one's other name) had been fused but left in place.
  const cases = [[-0.5, "conv"], [-0.5, "conv-ai.onnx"], [-0.45, "gemm"], [-0.45, "matmul"]];
  for (const [lo, kind] of cases as [number, string][]) {
    const b = new ModelBuilder({ seed: 9 });
    const conv = kind.startsWith("conv");
    const x = b.input("x", conv ? [1, 4, 8, 8] : [2, 8]);
    const h = conv
      ? b.conv(x, { outChannels: 4, kernel: 3 })
      : kind === "gemm"
      ? b.gemm(x, { out: 8 })
      : b.matmul(x, { out: 8 });
    const c = b.op("Clip", [h, b.initializer(float32([], [lo])), b.initializer(float32([], [6]))], {
      name: "clip",
      shape: conv ? [1, 4, 6, 6] : [2, 8],
    });
    b.output(conv ? b.conv(c, { outChannels: 4, kernel: 1 }) : b.gemm(c, { out: 4 }), "y");
    const built = b.build();
    const g = kind === "conv-ai.onnx"
      ? {
        ...built,
        nodes: built.nodes.map((n) => n.op === "Clip" ? { ...n, domain: "ai.onnx" } : n),
      }
      : built;
    const r = (min: number, max: number) => ({ min, max, source: "test" });
    const ranges = new Map([["x", r(-1, 1)], ["clip", r(lo, 6)], ["y", r(-3, 3)]]);
    const feeds = randomFeeds(g, 3);
    const ref = (await runGraph(g, feeds)).y!;
    for (const activations of ["u8", "s8"] as const) {
      const { graph } = quantize(g, { ranges, activations, exclude: { head: false } });
      const clips = countOps(graph).Clip ?? 0;
      if (activations === "u8") assert.equal(clips, 0, "dropped");
      else {
        // Kept, between a DequantizeLinear and a QuantizeLinear of its own.
        assert.equal(clips, 1);
        const clip = graph.nodes.find((n) => n.op === "Clip")!;
        const from = graph.nodes.find((n) => n.outputs.includes(clip.inputs[0]!))!;
        assert.equal(from.op, "DequantizeLinear", `${kind} ${activations}`);
      }
      for (const level of ["disabled", "all"] as const) {
        const out = (await runGraph(graph, feeds, { level })).y!;
        assert.ok(sqnr(ref, out) > 25, `${kind} Clip(${lo}) ${activations} ${level}`);
      }
    }
  }
});

Deno.test("QOperator runs a nearest Resize on the integers and keeps linear and cubic ones float", async () => {
  for (const mode of ["nearest", "linear", "cubic"]) {
    const b = new ModelBuilder({ seed: 6 });
    const x = b.input("x", [1, 4, 6, 6]);
    const h = b.conv(x, { outChannels: 4, kernel: 3, pad: 1 });
    const r = b.op("Resize", [h, "", b.initializer(float32([4], [1, 1, 2, 2]))], {
      attributes: { mode: { type: "string", value: mode } },
      shape: [1, 4, 12, 12],
    });
    b.output(b.conv(r, { outChannels: 4, kernel: 1 }), "y");
    const g = b.build();
    const rg = (min: number, max: number) => ({ min, max, source: "test" });
    const ranges = new Map([["x", rg(-1, 1)], [h, rg(-3, 3)], [r, rg(-3, 3)], ["y", rg(-3, 3)]]);
    const { graph } = quantize(g, { ranges, format: "qoperator", exclude: { head: false } });
    // Interpolating on uint8 rounds otherwise than in float, and cubic did not run at level
    // disabled ("Tensor type mismatch"). (A nearest ×2 is lowered to integer copies.)
    const resize = graph.nodes.find((n) => n.op === "Resize");
    const from = resize && graph.nodes.find((n) => n.outputs.includes(resize.inputs[0]!))!.op;
    if (mode !== "nearest") assert.equal(from, "DequantizeLinear", mode);
    else assert.ok(from === undefined || from === "QLinearConv", `${mode}: ${from}`);
    const feeds = randomFeeds(g, 2);
    const ref = (await runGraph(g, feeds)).y!;
    for (const level of ["disabled", "all"] as const) {
      // Ranges of ±3 for values within about ±1: 22 dB, the same as QDQ's.
      assert.ok(sqnr(ref, (await runGraph(graph, feeds, { level })).y!) > 20, `${mode} ${level}`);
    }
  }
});

Deno.test("quantize() leaves an opset-10 model's RGB input unpadded (Pad takes its pads as an input from opset 11)", async () => {
  const b = new ModelBuilder({ seed: 2, opset: 10 });
  const x = b.input("x", [1, 3, 8, 8]);
  b.output(b.relu(b.conv(x, { outChannels: 4, kernel: 3 })), "y");
  const g = b.build();
  const r = (min: number, max: number) => ({ min, max, source: "test" });
  const ranges = new Map([["x", r(-1, 1)], ["y", r(0, 2)]]);
  // Per-tensor weights keep the model at opset 10; the stem's channel pad had been written in the
  // opset-11 form, which onnxruntime and onnx.checker refuse.
  const { graph } = quantize(g, { ranges, weights: "per-tensor", exclude: { head: false } });
  assert.equal(opsetOf(graph), 10);
  assert.equal(countOps(graph).Pad ?? 0, 0);
  const feeds = randomFeeds(g, 4);
  assert.ok(sqnr((await runGraph(g, feeds)).y!, (await runGraph(graph, feeds)).y!) > 25);
});
