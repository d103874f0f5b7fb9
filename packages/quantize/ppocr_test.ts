// Real models: PP-OCRv4's text-direction classifier (opset 9 → upgraded to 13), calibrated by min/max
// on two real images and checked on a third it never saw; PP-OCRv4 det, whose compact int8 file
// must fuse and compute exactly as the long-named, unshared form the writer emitted before.
import assert from "node:assert/strict";
import { ppocrDetPreprocessing, ppocrModel, skimagePhoto } from "../../tools/assets.ts";
import {
  decode,
  encode,
  type Graph,
  loadModel,
  type Node,
  normalize,
  upgradeOpset,
} from "@clipq/onnx";
import { tensor, toFloat32 } from "@clipq/onnx/tensor";
import { preprocess, readImage } from "@clipq/data";
import { quantize } from "./quantize.ts";
import { countOps, type Feeds, minmaxRanges, runGraph } from "./testdata/ort.ts";
import { assertChecked, checkModel } from "../../tests/checker.ts";

Deno.test("quantize() keeps PP-OCRv4 cls probabilities within 0.05 of float on an unseen image", async () => {
  const raw = await loadModel(await ppocrModel("cls"));
  assert.throws(() => quantize(normalize(raw)), /upgrade the model first/);
  let g = upgradeOpset(normalize(raw), { target: 13 });
  g = { ...g, inputs: g.inputs.map((v) => ({ ...v, shape: [1, 3, 48, 192] })) };
  const spec = {
    size: [48, 192] as [number, number],
    resize: "stretch" as const,
    layout: "NCHW" as const,
    color: "RGB" as const,
    scale: 1 / 255,
    mean: [0.5, 0.5, 0.5],
    std: [0.5, 0.5, 0.5],
  };
  const feeds = [];
  for (const f of ["text.png", "page.png", "coffee.png"]) {
    const t = preprocess(await readImage(await skimagePhoto(f)), spec).tensor;
    feeds.push({ [g.inputs[0]!.name]: t.data as Float32Array });
  }
  const ranges = await minmaxRanges(g, feeds.slice(0, 2));
  const { graph, report } = quantize(g, { ranges });
  assert.ok(countOps(graph)["QuantizeLinear"]! > 50);
  assert.ok(report.quantizedNodes.length > 150, `${report.quantizedNodes.length} quantized`);
  for (const f of feeds) {
    const a = Object.values(await runGraph(g, f))[0]!;
    const b = Object.values(await runGraph(graph, f))[0]!;
    for (let i = 0; i < a.length; i++) {
      assert.ok(Math.abs(a[i]! - b[i]!) <= 0.05, `class ${i}: float ${a[i]} vs int8 ${b[i]}`);
    }
  }
});

/**
 * The writer's compact form undone: every added tensor a long name and every added node a name, each
 * Q/DQ its own scale and zero point, each weight its own zero point, bias scales as initializers
 * instead of a Mul of two scales, shared constant DQs and merged scalar constants split per reader,
 * Conv's default attributes written out — what the writer emitted before it was made compact.
 */
function expand(g: Graph, float: Graph): Graph {
  const inits = new Map(g.initializers);
  const producer = new Map(g.nodes.flatMap((n) => n.outputs.map((o) => [o, n] as const)));
  const original = new Set([
    ...float.initializers.keys(),
    ...float.nodes.flatMap((n) => [...n.inputs, ...n.outputs]),
  ]);
  const long = (t: string) => (original.has(t) || !t ? t : `${t}_expanded_long_name`);
  // Bias scales: the Mul of two scale initializers becomes the product as an initializer.
  const nodes: Node[] = [];
  for (const n of g.nodes) {
    if (n.op === "Mul" && n.name === "" && n.inputs.every((x) => inits.has(x))) {
      const [a, b] = n.inputs.map((x) => toFloat32(inits.get(x)!));
      const p = b!.map((v) => Math.fround(a![0]! * v));
      inits.set(n.outputs[0]!, tensor("float32", [p.length], p));
      continue;
    }
    nodes.push(n);
  }
  let copies = 0;
  const copy = (name: string) => {
    const c = `${name}_copy${copies++}`;
    inits.set(c, inits.get(name)!);
    return c;
  };
  const out: Node[] = [];
  const readers = new Map<string, number>();
  for (const n of nodes) for (const x of n.inputs) readers.set(x, (readers.get(x) ?? 0) + 1);
  for (const n of nodes) {
    let node = n;
    if (n.name === "" && (n.op === "QuantizeLinear" || n.op === "DequantizeLinear")) {
      // Own scale and zero point (a weight's zero point included) for every Q and DQ.
      node = { ...n, inputs: n.inputs.map((x, i) => (i > 0 && inits.has(x) ? copy(x) : x)) };
    }
    if (n.op === "Conv") {
      const k = (n.attributes["kernel_shape"]?.value as number[] | undefined)?.length ?? 2;
      node = {
        ...node,
        attributes: {
          dilations: { type: "ints", value: new Array(k).fill(1) },
          strides: { type: "ints", value: new Array(k).fill(1) },
          pads: { type: "ints", value: new Array(2 * k).fill(0) },
          group: { type: "int", value: 1 },
          ...n.attributes,
        },
      };
    }
    // A constant DQ or scalar initializer read by several nodes: one per reader.
    node = {
      ...node,
      inputs: node.inputs.map((x) => {
        if ((readers.get(x) ?? 0) < 2) return x;
        if (inits.has(x) && node.op !== "QuantizeLinear" && node.op !== "DequantizeLinear") {
          return copy(x);
        }
        const dq = producer.get(x);
        if (dq?.op !== "DequantizeLinear" || !dq.inputs.every((i) => inits.has(i))) return x;
        const o = `${x}_for${copies++}`;
        out.push({ ...dq, inputs: dq.inputs.map(copy), outputs: [o] });
        return o;
      }),
    };
    out.push(node);
  }
  // The shared DQs every reader now has a copy of are dead.
  const needed = new Set([...out.flatMap((n) => n.inputs), ...g.outputs.map((v) => v.name)]);
  const live = out.filter((n) => n.outputs.some((o) => needed.has(o)));
  const renamed = live.map((n) => ({
    ...n,
    name: n.name || `${long(n.outputs[0]!)}_node`,
    inputs: n.inputs.map(long),
    outputs: n.outputs.map(long),
  }));
  const read = new Set(renamed.flatMap((n) => n.inputs));
  const initializers = new Map(
    [...inits].filter(([k]) => read.has(long(k)) || read.has(k)).map(([k, t]) => [long(k), t]),
  );
  return { ...g, nodes: renamed, initializers };
}

async function optimizedOps(graph: Graph, feeds: Feeds): Promise<{
  ops: Record<string, number>;
  out: Record<string, Float32Array>;
}> {
  const dir = await Deno.makeTempDir();
  try {
    const out = await runGraph(graph, feeds, { optimizedPath: `${dir}/o.onnx` });
    const ops: Record<string, number> = {};
    for (const n of decode(await Deno.readFile(`${dir}/o.onnx`)).nodes) {
      const k = n.domain ? `${n.domain}.${n.op}` : n.op;
      ops[k] = (ops[k] ?? 0) + 1;
    }
    return { ops, out };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("quantize() writes PP-OCRv4 det compactly: same onnxruntime fusion, bit-identical outputs, onnx.checker passes, ≤ 27.5 % of float", async () => {
  const g = normalize(await loadModel(await ppocrModel("det")));
  const spec = ppocrDetPreprocessing([256, 256]);
  const feeds = [];
  for (const f of ["page.png", "text.png"]) {
    feeds.push({
      x: preprocess(await readImage(await skimagePhoto(f)), spec).tensor.data as Float32Array,
    });
  }
  const fixed = { ...g, inputs: g.inputs.map((v) => ({ ...v, shape: [1, 3, 256, 256] })) };
  const ranges = await minmaxRanges(fixed, feeds.slice(0, 1));
  const floatBytes = encode(g).length;
  for (
    const [format, goal, saved] of [["qdq", 0.275, 100_000], ["qoperator", 0.27, 30_000]] as const
  ) {
    const { graph, report } = quantize(fixed, { ranges, format });
    const compact = await optimizedOps(graph, feeds[1]!);
    const expanded = expand(graph, fixed);
    const wide = await optimizedOps(expanded, feeds[1]!);
    assert.deepEqual(compact.ops, wide.ops, `${format}: onnxruntime fuses both the same way`);
    assert.ok(
      (compact.ops["com.microsoft.QLinearConv"] ?? 0) >= 62,
      `${format}: ${JSON.stringify(compact.ops)}`,
    );
    for (const [k, v] of Object.entries(wide.out)) {
      const a = new Uint8Array(v.buffer), b = new Uint8Array(compact.out[k]!.buffer);
      assert.ok(a.length === b.length && a.every((x, i) => x === b[i]), `${format}: ${k} differs`);
    }
    const file = encode(graph);
    // Debian's onnx 1.12 checker (full check) takes the compact file.
    assertChecked(await checkModel(file));
    const bytes = file.length;
    const wideBytes = encode(expanded).length;
    assert.ok(bytes < wideBytes - saved, `${format}: ${bytes} B, ${wideBytes} B expanded`);
    assert.ok(bytes / floatBytes <= goal, `${format}: ${(100 * bytes / floatBytes).toFixed(2)} %`);
    // The report names the model's own tensors, weights and nodes, not the quantizer's (the ORT
    // lowering's few new tensors are named after the one they come from; its unnamed Reshape views
    // get the label of any unnamed node, `Op#index`).
    const names = new Set(g.nodes.flatMap((n) => [...n.inputs, ...n.outputs, n.name]));
    for (const k of g.initializers.keys()) names.add(k);
    const theirs = (t: string) =>
      names.has(t) || /^[A-Za-z]+#\d+$/.test(t) ||
      [...t.matchAll(/_/g)].some((m) => names.has(t.slice(0, m.index)));
    const odd = [
      ...report.tensors.map((t) => t.name),
      ...report.weights.flatMap((w) => [w.weight, w.node]),
      ...report.quantizedNodes,
    ].filter((t) => !theirs(t));
    assert.deepEqual(odd, [], "the report names the model's tensors, weights and nodes");
  }
});
