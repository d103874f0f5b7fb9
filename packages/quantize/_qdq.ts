// The central pass: writes the marks as QuantizeLinear/DequantizeLinear. Activations get a Q→DQ
// pair right after their producer (all consumers read the DQ output); weights, biases and constant
// operands become int8/int32/uint8 initializers read through a DequantizeLinear, never float
// initializers followed by a Q — so the file holds the int8 bytes.
import { ModelError } from "@clipq/onnx/errors";
import type { Graph, Node } from "@clipq/onnx/graph";
import { type Tensor, tensor, toFloat32 } from "@clipq/onnx/tensor";
import { activationParams, quantizeLinear, type QuantParams } from "./linear.ts";
import { quantizeBias, quantizeWeight } from "./weights.ts";
import type { Marks } from "./_analyze.ts";

export interface ActivationEntry {
  params: QuantParams;
  min: number;
  max: number;
  source: string;
}

export interface WriteInput {
  /** Quantized node index → marks. */
  marks: Map<number, Marks>;
  labels: string[];
  /** Every activation tensor to quantize → its params. */
  activations: Map<string, ActivationEntry>;
  perChannel: boolean;
  weightClip: "max" | "mse";
  qmax: number;
  kind: "u8" | "s8";
}

/** One quantized weight in the report. */
export interface WeightReport {
  /** The layer (node name, or `Op#index`). */
  node: string;
  /** The weight initializer. */
  weight: string;
  perChannel: boolean;
  axis: number | undefined;
  clip: "max" | "mse";
  /** Smallest clip chosen, as a fraction of the channel's max |w|. */
  minClipRatio: number;
}

function namer(graph: Graph): (base: string) => string {
  const used = new Set<string>();
  for (const n of graph.nodes) {
    used.add(n.name);
    for (const t of [...n.inputs, ...n.outputs]) used.add(t);
  }
  for (const k of graph.initializers.keys()) used.add(k);
  for (const v of [...graph.inputs, ...graph.outputs, ...graph.valueInfo]) used.add(v.name);
  return (base) => {
    let name = base;
    for (let i = 1; used.has(name); i++) name = `${base}_${i}`;
    used.add(name);
    return name;
  };
}

export function writeQdq(graph: Graph, w: WriteInput): { graph: Graph; weights: WeightReport[] } {
  const fresh = namer(graph);
  const inits = new Map(graph.initializers);
  const prelude: Node[] = [];
  const weightsReport: WeightReport[] = [];

  // Scale and zero-point initializers, shared by every tensor with the same parameters.
  const paramNames = new Map<string, [string, string]>();
  const paramInputs = (p: QuantParams, base: string, scales?: Float32Array): [string, string] => {
    const key = scales ? "" : `${p.dtype}:${p.scale}:${p.zeroPoint}`;
    const hit = key ? paramNames.get(key) : undefined;
    if (hit) return hit;
    const s = fresh(`${base}_scale`);
    const z = fresh(`${base}_zero_point`);
    if (scales) {
      inits.set(s, tensor("float32", [scales.length], scales));
      inits.set(z, tensor(p.dtype, [scales.length]));
    } else {
      inits.set(s, tensor("float32", [], Float32Array.of(p.scale)));
      inits.set(z, tensor(p.dtype, [], [p.zeroPoint]));
    }
    const names: [string, string] = [s, z];
    if (key) paramNames.set(key, names);
    return names;
  };
  const dq = (input: string, sz: readonly string[], out: string, axis?: number): Node => ({
    name: fresh(`${out}_DequantizeLinear`),
    op: "DequantizeLinear",
    domain: "",
    inputs: [input, ...sz],
    outputs: [out],
    attributes: axis === undefined ? {} : { axis: { type: "int", value: axis } },
  });

  // Weights, once per (initializer, axis).
  const weightOut = new Map<string, { out: string; scales: Float32Array }>();
  const nodeInputs = new Map<number, Map<string, string>>();
  for (const [i, m] of w.marks) {
    const rewrite = new Map<string, string>();
    nodeInputs.set(i, rewrite);
    const weightScales = new Map<string, Float32Array>();
    for (const mw of m.weights) {
      const axis = w.perChannel ? mw.axis : undefined;
      const key = `${mw.name}\u0000${axis}`;
      let hit = weightOut.get(key);
      const init = graph.initializers.get(mw.name)!;
      if (!hit) {
        let q: ReturnType<typeof quantizeWeight>;
        try {
          q = quantizeWeight(init, { axis, clip: w.weightClip, qmax: w.qmax });
        } catch (e) {
          throw new ModelError(
            `node "${w.labels[i]}", weight "${mw.name}": ${(e as Error).message}`,
            {
              cause: e,
            },
          );
        }
        const qName = fresh(`${mw.name}_quantized`);
        inits.set(qName, q.values);
        const p: QuantParams = { scale: q.scales[0]!, zeroPoint: 0, dtype: "int8" };
        const sz = axis === undefined ? paramInputs(p, mw.name) : paramInputs(p, mw.name, q.scales);
        const out = fresh(`${mw.name}_dequantized`);
        prelude.push(dq(qName, sz, out, axis));
        hit = { out, scales: q.scales };
        weightOut.set(key, hit);
        let minRatio = 1;
        for (const r of q.clipRatios) minRatio = Math.min(minRatio, r);
        weightsReport.push({
          node: w.labels[i]!,
          weight: mw.name,
          perChannel: axis !== undefined,
          axis,
          clip: w.weightClip,
          minClipRatio: minRatio,
        });
      }
      rewrite.set(mw.name, hit.out);
      weightScales.set(mw.name, hit.scales);
    }
    for (const b of m.biases) {
      const sIn = w.activations.get(b.input)?.params.scale;
      const sW = weightScales.get(b.weight);
      if (sIn === undefined || !sW) continue;
      const q = quantizeBias(graph.initializers.get(b.name)!, sIn, sW);
      const qName = fresh(`${b.name}_quantized`);
      inits.set(qName, q.values);
      // No zero-point input: it defaults to 0, and an int32 zero per channel costs 4 bytes each.
      const s = fresh(`${b.name}_scale`);
      const out = fresh(`${b.name}_dequantized`);
      // A per-tensor weight gives one bias scale: a scalar scale without axis (a [1] scale with
      // axis 0 would claim per-channel over a bias of C elements and ORT rejects it).
      const perTensor = sW.length === 1;
      inits.set(
        s,
        perTensor
          ? tensor("float32", [], [q.scales[0]!])
          : tensor("float32", [q.scales.length], q.scales),
      );
      prelude.push(dq(qName, [s], out, perTensor ? undefined : 0));
      rewrite.set(b.name, out);
    }
    for (const c of m.constants) {
      const t = graph.initializers.get(c)!;
      const v = toFloat32(t);
      let lo = 0, hi = 0;
      for (const x of v) [lo, hi] = [Math.min(lo, x), Math.max(hi, x)];
      const p = activationParams({ min: lo, max: hi }, w.kind, c);
      const qName = fresh(`${c}_quantized`);
      inits.set(qName, tensor(p.dtype, t.dims, quantizeLinear(v, p)) as Tensor);
      const out = fresh(`${c}_dequantized`);
      prelude.push(dq(qName, paramInputs(p, c), out));
      rewrite.set(c, out);
    }
  }

  // Activations: Q→DQ after the producer; graph outputs keep their name on the DQ output.
  const outputNames = new Set(graph.outputs.map((v) => v.name));
  const renamedOutput = new Map<string, string>(); // graph output → producer's new output name
  const readAs = new Map<string, string>(); // tensor → its dequantized name for consumers
  const pairs = new Map<string, Node[]>();
  for (const [t, e] of w.activations) {
    const sz = paramInputs(e.params, t);
    let src = t;
    let dqOut: string;
    if (outputNames.has(t) && !graph.inputs.some((v) => v.name === t)) {
      src = fresh(`${t}_float`);
      renamedOutput.set(t, src);
      dqOut = t;
    } else {
      dqOut = fresh(`${t}_dequantized`);
      readAs.set(t, dqOut);
    }
    const qOut = fresh(`${t}_quantized`);
    pairs.set(t, [
      {
        name: fresh(`${t}_QuantizeLinear`),
        op: "QuantizeLinear",
        domain: "",
        inputs: [src, ...sz],
        outputs: [qOut],
        attributes: {},
      },
      dq(qOut, sz, dqOut),
    ]);
  }

  const produced = new Set<string>();
  graph.nodes.forEach((n) => n.outputs.forEach((o) => o && produced.add(o)));
  const nodes: Node[] = [...prelude];
  for (const [t, pair] of pairs) if (!produced.has(t)) nodes.push(...pair);
  graph.nodes.forEach((n, i) => {
    const rewrite = nodeInputs.get(i);
    nodes.push({
      ...n,
      inputs: n.inputs.map((x) => rewrite?.get(x) ?? readAs.get(x) ?? x),
      outputs: n.outputs.map((o) => renamedOutput.get(o) ?? o),
    });
    for (const o of n.outputs) {
      const pair = pairs.get(o);
      if (pair) nodes.push(...pair);
    }
  });

  // Drop float initializers nothing reads any more.
  const read = new Set<string>(graph.outputs.map((v) => v.name));
  for (const n of nodes) for (const x of n.inputs) read.add(x);
  for (const k of [...inits.keys()]) if (!read.has(k)) inits.delete(k);
  // Old models list initializers among the graph inputs too; a removed one must go from both.
  const inputs = graph.inputs.filter((v) => !graph.initializers.has(v.name) || inits.has(v.name));
  return { graph: { ...graph, nodes, initializers: inits, inputs }, weights: weightsReport };
}
