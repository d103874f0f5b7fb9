// The central pass: writes the marks as QuantizeLinear/DequantizeLinear. Activations get a Q→DQ
// pair right after their producer (all consumers read the DQ output); weights, biases and constant
// operands become int8/int32/uint8 initializers read through a DequantizeLinear, never float
// initializers followed by a Q — so the file holds the int8 bytes.
//
// Beyond the int8 weights, a QDQ file is mostly names, scales and zero points, so what this pass
// adds is written compactly (PP-OCRv4 det was 30.5 % of float before, 26.9 % after; see README):
// - tensors it adds get short names (a kind letter and its base-36 count, skipping names the graph
//   uses; quantize() then renames them by use, see minifyNames) and nodes it adds none (the encoder
//   then writes no name field); original tensors and nodes keep theirs, and the report names those
//   (the model's int64 constants excepted: shapes and sizes nobody reports);
// - scale and zero-point initializers are shared by value, each on its own (equal names mean equal
//   values, so a Q and a DQ with the same parameters read the same two initializers);
// - int32 biases and, in QDQ form, int8 Conv and MatMul weights have no zero-point input (absent
//   means 0); other weights share one all-zero zero point per channel count (QGemm fusion and
//   QOperator's QLinearConv need one);
// - a per-channel bias scale s_in·s_w[c] is a Mul of the two scales rather than a second vector:
//   float32 multiplication rounds as the bias quantizer's Math.fround does, so the values are
//   identical, and onnxruntime folds the Mul into an initializer before it fuses the layer;
// - equal small constants share their quantized initializer and DequantizeLinear;
// - ops that only move or pick values (Reshape, Transpose, MaxPool, nearest Resize, a Concat on one
//   grid) run on the integers afterwards: no Q/DQ pair around them (viewsOnIntegers).
// Unnamed nodes without a name field, short int64 constants, MatMul weights without zero points
// and the views took NanoDet from 25.313 to 25.284 % of float (tools/int8_size.ts, mse).
// Activation zero points stay, even when 0: PP-OCRv4 det without them failed to load in
// onnxruntime 1.30 at level all (its QDQ fusion made "two nodes with same node name").
import { ModelError } from "@clipq/onnx/errors";
import { attrString, type Graph, type Node, opsetOf } from "@clipq/onnx/graph";
import { type Tensor, tensor, toFloat32 } from "@clipq/onnx/tensor";
import type { ActivationBounds, InputCovariances } from "@clipq/onnx/metadata";
import { activationParams, quantizeLinear, type QuantParams } from "./linear.ts";
import { roundWithCovariance } from "./gptq.ts";
import { biasScaleFloor, quantizeBias, quantizeWeight } from "./weights.ts";
import type { Marks } from "./_analyze.ts";

/**
 * Layers whose int8 weight needs no zero-point input in QDQ form (absent means 0): onnxruntime fuses
 * Conv into QLinearConv and MatMul into QLinearMatMul / MatMulIntegerToFloat the same way. Gemm
 * is not among them: onnxruntime 1.30 no longer fuses it into QGemm then.
 */
const NO_WEIGHT_ZERO_POINT = new Set(["Conv", "MatMul"]);

/** Constants up to this many elements are shared by value. */
const SHARED_CONSTANT = 64;

export interface ActivationEntry {
  params: QuantParams;
  min: number;
  max: number;
  source: string;
  /** A folded Relu/Clip's bounds (see `TensorReport.bounds`). */
  bounds?: ActivationBounds | undefined;
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
  /** Write Conv weights' zero points (QLinearConv, the QOperator form, requires them). */
  convZeroPoints: boolean;
  /** Input second moments by layer label: those layers' weights get GPTQ rounding. */
  covariances: InputCovariances;
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
  /** "nearest", or "gptq" with the layer's output error on the calibration data both ways. */
  rounding: "nearest" | "gptq";
  /** With GPTQ: Σ eᵀ·E[x·xᵀ]·e over rows with nearest rounding, and with GPTQ. */
  outputError?: { nearest: number; gptq: number };
  /**
   * Channels whose scale was raised so that their int32 bias fits (weights tiny beside the bias,
   * as a dead channel after BatchNorm folding has): absent when none.
   */
  raisedForBias?: number;
}

/**
 * Fresh names, never one the graph uses: `short(kind)` is a kind letter and its base-36 count (what
 * the quantizer adds); `suffixed(base)` keeps a readable name for the few original tensors it must
 * rename (a graph output moved off its producer).
 */
function namers(
  graph: Graph,
): { short: (kind: string) => string; suffixed: (base: string) => string } {
  const used = new Set<string>();
  for (const n of graph.nodes) {
    used.add(n.name);
    for (const t of [...n.inputs, ...n.outputs]) used.add(t);
  }
  for (const k of graph.initializers.keys()) used.add(k);
  for (const v of [...graph.inputs, ...graph.outputs, ...graph.valueInfo]) used.add(v.name);
  const counters = new Map<string, number>();
  return {
    short: (kind) => {
      let k = counters.get(kind) ?? 0;
      let name: string;
      do name = `${kind}${(k++).toString(36)}`; while (used.has(name));
      counters.set(kind, k);
      used.add(name);
      return name;
    },
    suffixed: (base) => {
      let name = base;
      for (let i = 1; used.has(name); i++) name = `${base}_${i}`;
      used.add(name);
      return name;
    },
  };
}

export function writeQdq(graph: Graph, w: WriteInput): { graph: Graph; weights: WeightReport[] } {
  const { short, suffixed } = namers(graph);
  const inits = new Map(graph.initializers);
  const prelude: Node[] = [];
  const weightsReport: WeightReport[] = [];

  // Scalar scales and zero points, each shared by value.
  const shared = new Map<string, string>();
  const scalar = (dtype: "float32" | QuantParams["dtype"], v: number): string => {
    const key = `${dtype}:${Object.is(v, -0) ? 0 : v}`;
    let name = shared.get(key);
    if (!name) {
      name = short(dtype === "float32" ? "s" : "z");
      inits.set(name, tensor(dtype, [], [v]));
      shared.set(key, name);
    }
    return name;
  };
  // Per-channel int8 zero points are all 0: one vector per channel count (for the layers that need
  // one, see NO_WEIGHT_ZERO_POINT).
  const zeroVectors = new Map<number, string>();
  const zeros = (length: number): string => {
    let name = zeroVectors.get(length);
    if (!name) {
      name = short("z");
      inits.set(name, tensor("int8", [length]));
      zeroVectors.set(length, name);
    }
    return name;
  };
  const paramInputs = (p: QuantParams): [string, string] => [
    scalar("float32", p.scale),
    scalar(p.dtype, p.zeroPoint),
  ];
  // Added nodes go unnamed (ONNX node names are optional): a name would only repeat the output's.
  const added = (op: string, inputs: readonly string[], out: string, axis?: number): Node => ({
    name: "",
    op,
    domain: "",
    inputs: [...inputs],
    outputs: [out],
    attributes: axis === undefined ? {} : { axis: { type: "int", value: axis } },
  });

  const constData = new Map<string, string>(); // dtype, dims, values → quantized initializer
  const constOut = new Map<string, string>(); // initializer, scale, zero point → DQ output

  // GPTQ rounds a weight for the inputs of one layer: a weight two layers read keeps nearest rounding.
  const readers = new Map<string, number>();
  for (const m of w.marks.values()) {
    for (const mw of m.weights) readers.set(mw.name, (readers.get(mw.name) ?? 0) + 1);
  }
  // The smallest scale each weight's channels may take so that the biases added at those scales
  // fit int32 (a weight two layers read takes the larger floor): saturated, a bias had turned a
  // dead channel's constant output into 0 without a word.
  const biasFloors = new Map<string, Float64Array[]>();
  for (const m of w.marks.values()) {
    for (const b of m.biases) {
      const sIn = w.activations.get(b.input)?.params.scale;
      if (sIn === undefined) continue;
      const floors = biasFloors.get(b.weight) ?? [];
      floors.push(biasScaleFloor(graph.initializers.get(b.name)!, sIn));
      biasFloors.set(b.weight, floors);
    }
  }
  // Bias value c is added at weight scale c mod the scales' count (grouped ConvTranspose repeats).
  const floorsOf = (weight: string, channels: number): Float64Array | undefined => {
    const all = biasFloors.get(weight);
    if (!all) return undefined;
    const out = new Float64Array(channels);
    for (const f of all) {
      for (let c = 0; c < f.length; c++) out[c % channels] = Math.max(out[c % channels]!, f[c]!);
    }
    return out;
  };
  // Weights, once per (initializer, axis).
  const weightOut = new Map<string, { out: string; scales: Float32Array; scale: string }>();
  const nodeInputs = new Map<number, Map<string, string>>();
  for (const [i, m] of w.marks) {
    const rewrite = new Map<string, string>();
    nodeInputs.set(i, rewrite);
    const weightScales = new Map<string, { scales: Float32Array; scale: string }>();
    for (const mw of m.weights) {
      const axis = w.perChannel ? mw.axis : undefined;
      const key = `${mw.name}\u0000${axis}`;
      let hit = weightOut.get(key);
      const init = graph.initializers.get(mw.name)!;
      if (!hit) {
        let q: ReturnType<typeof quantizeWeight>;
        try {
          q = quantizeWeight(init, {
            axis,
            clip: w.weightClip,
            qmax: w.qmax,
            minScales: floorsOf(mw.name, axis === undefined ? 1 : init.dims[axis]!),
          });
        } catch (e) {
          throw new ModelError(
            `node "${w.labels[i]}", weight "${mw.name}": ${(e as Error).message}`,
            {
              cause: e,
            },
          );
        }
        const cov = w.covariances.get(w.labels[i]!);
        let outputError: { nearest: number; gptq: number } | undefined;
        if (cov && mw.axis !== undefined && readers.get(mw.name) === 1) {
          try {
            const r = roundWithCovariance(init, q.scales, cov, { axis: mw.axis, qmax: w.qmax });
            q = { ...q, values: tensor("int8", init.dims, r.values) };
            outputError = { nearest: r.nearestError, gptq: r.error };
          } catch (e) {
            throw new ModelError(
              `node "${w.labels[i]}", weight "${mw.name}": ${(e as Error).message}`,
              { cause: e },
            );
          }
        }
        const qName = short("w");
        inits.set(qName, q.values);
        let scale: string, zero: string;
        if (axis === undefined) {
          [scale, zero] = [scalar("float32", q.scales[0]!), scalar("int8", 0)];
        } else {
          scale = short("s");
          inits.set(scale, tensor("float32", [q.scales.length], q.scales));
          zero = zeros(q.scales.length);
        }
        const out = short("d");
        const sz = w.convZeroPoints || !NO_WEIGHT_ZERO_POINT.has(graph.nodes[i]!.op)
          ? [scale, zero]
          : [scale];
        prelude.push(added("DequantizeLinear", [qName, ...sz], out, axis));
        hit = { out, scales: q.scales, scale };
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
          rounding: outputError ? "gptq" : "nearest",
          ...(outputError ? { outputError } : {}),
          ...(q.raisedScales > 0 ? { raisedForBias: q.raisedScales } : {}),
        });
      }
      rewrite.set(mw.name, hit.out);
      weightScales.set(mw.name, hit);
    }
    for (const b of m.biases) {
      const sIn = w.activations.get(b.input)?.params.scale;
      const wq = weightScales.get(b.weight);
      if (sIn === undefined || !wq) continue;
      let q: ReturnType<typeof quantizeBias>;
      try {
        q = quantizeBias(graph.initializers.get(b.name)!, sIn, wq.scales);
      } catch (e) {
        throw new ModelError(`node "${w.labels[i]}", bias "${b.name}": ${(e as Error).message}`, {
          cause: e,
        });
      }
      const qName = short("b");
      inits.set(qName, q.values);
      const out = short("d");
      // A per-tensor weight gives one bias scale: a scalar scale without axis (a [1] scale with
      // axis 0 would claim per-channel over a bias of C elements and ORT rejects it).
      const perTensor = wq.scales.length === 1;
      let scale: string;
      if (perTensor) scale = scalar("float32", q.scales[0]!);
      else if (wq.scales.length === q.scales.length) {
        // s_in · s_w[c] in float32 is exactly quantizeBias's Math.fround(s_in · s_w[c]).
        scale = short("s");
        prelude.push(added("Mul", [scalar("float32", sIn), wq.scale], scale));
      } else {
        // Grouped ConvTranspose: the weight's scales repeat group by group over the bias.
        scale = short("s");
        inits.set(scale, tensor("float32", [q.scales.length], q.scales));
      }
      // No zero-point input: it defaults to 0, and an int32 zero per channel costs 4 bytes each.
      prelude.push(added("DequantizeLinear", [qName, scale], out, perTensor ? undefined : 0));
      rewrite.set(b.name, out);
    }
    for (const c of m.constants) {
      const t = graph.initializers.get(c)!;
      const v = toFloat32(t);
      let lo = 0, hi = 0;
      for (const x of v) [lo, hi] = [Math.min(lo, x), Math.max(hi, x)];
      const p = activationParams({ min: lo, max: hi }, w.kind, c);
      const values = quantizeLinear(v, p);
      // Small constants repeat (PP-OCR's hard-swish 3 and 1/6, once per block): equal ones share
      // their quantized initializer, and with equal parameters their DequantizeLinear too.
      const key = values.length <= SHARED_CONSTANT ? `${p.dtype}[${t.dims}]${values}` : undefined;
      let qName = key === undefined ? undefined : constData.get(key);
      if (!qName) {
        qName = short("w");
        inits.set(qName, tensor(p.dtype, t.dims, values) as Tensor);
        if (key !== undefined) constData.set(key, qName);
      }
      const sz = paramInputs(p);
      const dqKey = `${qName}:${sz}`;
      let out = constOut.get(dqKey);
      if (!out) {
        out = short("d");
        prelude.push(added("DequantizeLinear", [qName, ...sz], out));
        constOut.set(dqKey, out);
      }
      rewrite.set(c, out);
    }
  }

  // Activations: Q→DQ after the producer; graph outputs keep their name on the DQ output.
  const outputNames = new Set(graph.outputs.map((v) => v.name));
  const renamedOutput = new Map<string, string>(); // graph output → producer's new output name
  const readAs = new Map<string, string>(); // tensor → its dequantized name for consumers
  const pairs = new Map<string, Node[]>();
  for (const [t, e] of w.activations) {
    const sz = paramInputs(e.params);
    let src = t;
    let dqOut: string;
    if (outputNames.has(t) && !graph.inputs.some((v) => v.name === t)) {
      src = suffixed(`${t}_float`);
      renamedOutput.set(t, src);
      dqOut = t;
    } else {
      dqOut = short("d");
      readAs.set(t, dqOut);
    }
    const qOut = short("q");
    pairs.set(t, [
      added("QuantizeLinear", [src, ...sz], qOut),
      added("DequantizeLinear", [qOut, ...sz], dqOut),
    ]);
  }

  const produced = new Set<string>();
  graph.nodes.forEach((n) => n.outputs.forEach((o) => o && produced.add(o)));
  const nodes: Node[] = [...prelude];
  for (const [t, pair] of pairs) if (!produced.has(t)) nodes.push(...pair);
  graph.nodes.forEach((n, i) => {
    const rewrite = nodeInputs.get(i);
    const inputs = n.inputs.map((x) => rewrite?.get(x) ?? readAs.get(x) ?? x);
    const clip = foldedClip(n, w.activations);
    if (clip === "drop") {
      // Q∘Clip = Q: the Q after it reads the producer directly (see foldedClip).
      const [q, dq] = pairs.get(n.outputs[0]!)!;
      nodes.push({ ...q!, inputs: [inputs[0]!, ...q!.inputs.slice(1)] }, dq!);
      return;
    }
    if (clip === "requantize") {
      // The producer's output on the same grid first, then the Clip between DQ and Q.
      const sz = paramInputs(w.activations.get(n.outputs[0]!)!.params);
      const [qx, dqx] = [short("q"), short("d")];
      nodes.push(
        added("QuantizeLinear", [inputs[0]!, ...sz], qx),
        added("DequantizeLinear", [qx, ...sz], dqx),
      );
      inputs[0] = dqx;
    }
    nodes.push({ ...n, inputs, outputs: n.outputs.map((o) => renamedOutput.get(o) ?? o) });
    for (const o of n.outputs) {
      const pair = pairs.get(o);
      if (pair) nodes.push(...pair);
    }
  });

  return {
    graph: unreadDropped(graph, { ...graph, nodes, initializers: inits }),
    weights: weightsReport,
  };
}

/**
 * A Clip folded into its producer (no Q/DQ between them, one after the Clip) is left float between
 * the producer and that QuantizeLinear. Where its bounds quantize to the grid's end levels, the Q
 * alone gives exactly what Clip then Q give (both are monotone and saturate alike), and the Clip is
 * dropped ("drop"). Otherwise (a u8 zero point that puts −0.5 a level inside the grid, a bound the
 * grid's rounded ends overshoot) it must stay, and onnxruntime 1.30's optimizer at level all
 * refused the model with the producer Conv/Gemm/MatMul between DequantizeLinear and the float
 * Clip ("two nodes with same node name"): the producer's output is then quantized on the Clip's
 * grid first ("requantize"), so that the producer fuses as usual and the Clip runs between its own
 * DQ and Q; values differ from the plain fold by at most one level, at the bounds.
 */
function foldedClip(
  n: Node,
  activations: ReadonlyMap<string, ActivationEntry>,
): "drop" | "requantize" | undefined {
  if (n.op !== "Clip" || (n.domain !== "" && n.domain !== "ai.onnx")) return undefined;
  const e = activations.get(n.outputs[0]!);
  if (!e?.bounds) return undefined;
  const { min, max } = e.bounds;
  const [lo, hi] = e.params.dtype === "uint8" ? [0, 255] : [-128, 127];
  const ends = quantizeLinear([Number.isFinite(min) ? min : -Infinity, max ?? Infinity], e.params);
  return ends[0] === lo && ends[1] === hi ? "drop" : "requantize";
}

/** `next` without the initializers nothing reads any more (and, in old models, their inputs). */
function unreadDropped(original: Graph, next: Graph): Graph {
  const read = new Set<string>(next.outputs.map((v) => v.name));
  for (const n of next.nodes) for (const x of n.inputs) read.add(x);
  const inits = new Map([...next.initializers].filter(([k]) => read.has(k)));
  // Old models list initializers among the graph inputs too; a removed one must go from both.
  const inputs = next.inputs.filter((v) => !original.initializers.has(v.name) || inits.has(v.name));
  return { ...next, initializers: inits, inputs };
}

/**
 * Ops that only move or select values: on the integers they give what DQ → op → Q gives (MaxPool
 * too: DQ is increasing, so the largest integer dequantizes to the largest value; its padding is
 * never picked). Transpose: the head lowering's channels-last view of each head conv's input.
 * Expand copies values (the lowering's channels-last nearest upsampling). Resize in mode nearest
 * moves too (see viewsOnIntegers).
 */
const VIEWS = new Set([
  "Reshape",
  "Flatten",
  "Squeeze",
  "Unsqueeze",
  "Transpose",
  "MaxPool",
  "Expand",
]);

/**
 * A zero Pad of a float tensor whose only reader is a per-tensor QuantizeLinear pads the integers
 * instead, with the zero point (Q(0) is the zero point exactly): `x → Pad → Q` becomes
 * `x → Q → Pad(value z)`. The lowering's channel pad of an RGB graph input (3 → 4 channels for
 * ORT's fast u8 conv) then pads bytes instead of floats. NanoDet 416, kernel time per run (ORT
 * profile, min of 8): Pad 0.162 → 0.033 ms, the stem's QuantizeLinear (now the first reader of the
 * input) 0.056 → 0.128 ms, its QLinearConv the same; the stem 0.36 → 0.31 ms. End to end: within
 * noise on an idle machine, 1–2.5 % faster in three A/Bs on a loaded one (less memory traffic).
 */
function padsOnIntegers(graph: Graph): Graph {
  const readers = new Map<string, Node[]>();
  for (const n of graph.nodes) {
    for (const x of n.inputs) if (x) readers.set(x, [...(readers.get(x) ?? []), n]);
  }
  const graphOutputs = new Set(graph.outputs.map((v) => v.name));
  const names = new Set(graph.nodes.flatMap((n) => [...n.inputs, ...n.outputs]));
  const moved = new Map<Node, Node[]>();
  for (const pad of graph.nodes) {
    const [x, pads, value] = pad.inputs;
    const out = pad.outputs[0];
    if (
      pad.op !== "Pad" || pad.domain !== "" || !x || !pads || !out || graphOutputs.has(out) ||
      attrString(pad, "mode", "constant") !== "constant" || (opsetOf(graph) ?? 0) < 11
    ) continue;
    const c = value ? graph.initializers.get(value) : undefined;
    if (value && (!c || c.data.length !== 1 || Number(c.data[0]) !== 0)) continue;
    const q = readers.get(out);
    if (q?.length !== 1 || q[0]!.op !== "QuantizeLinear" || "axis" in q[0]!.attributes) continue;
    const [, scale, zeroPoint] = q[0]!.inputs;
    const z = zeroPoint ? graph.initializers.get(zeroPoint) : undefined;
    // A per-tensor zero point (absent: 0, which Pad's default value is).
    if (zeroPoint && (!z || z.data.length !== 1)) continue;
    let qx = `${x}_quantized`;
    for (let k = 1; names.has(qx); k++) qx = `${x}_quantized_${k}`;
    names.add(qx);
    const padInputs = [qx, pads, zeroPoint ?? "", ...pad.inputs.slice(3)];
    while (padInputs.length > 2 && !padInputs[padInputs.length - 1]) padInputs.pop();
    moved.set(pad, []);
    moved.set(q[0]!, [
      { ...q[0]!, inputs: [x, scale!, ...(zeroPoint ? [zeroPoint] : [])], outputs: [qx] },
      { ...pad, inputs: padInputs, outputs: [...q[0]!.outputs] },
    ]);
  }
  if (moved.size === 0) return graph;
  return { ...graph, nodes: graph.nodes.flatMap((n) => moved.get(n) ?? [n]) };
}

/**
 * Moves view ops onto the integers: `Q → DQ → Reshape → Q' → DQ'` with the same scale and zero
 * point on both sides becomes `Q → Reshape → DQ'` — a Q/DQ pair fewer per view (onnxruntime drops
 * such pairs itself when it loads the model, so the fused graph and the outputs stay the same:
 * Q(DQ(x)) = x exactly for 8-bit x, |x − z|·s/s is within 2⁻¹⁶ of an integer). Reshapes matter:
 * the lowering views each nearest Resize as one channel (`[N·C, 1, H, W]`) and back. A Concat
 * whose every input is on its output's grid (see _concat.ts) moves too, all inputs at once: where
 * onnxruntime would make DQ → Concat → Q a QLinearConcat, it runs a plain Concat of the integers.
 */
export function viewsOnIntegers(graph: Graph): Graph {
  graph = padsOnIntegers(graph);
  const { nodes } = graph;
  const graphOutputs = new Set(graph.outputs.map((v) => v.name));
  // MaxPool takes 8-bit integers from opset 12 on.
  const maxPool = (opsetOf(graph) ?? 0) >= 12;
  const producer = new Map<string, Node>();
  const readers = new Map<string, Node[]>();
  for (const n of nodes) {
    for (const o of n.outputs) producer.set(o, n);
    for (const x of n.inputs) readers.set(x, [...(readers.get(x) ?? []), n]);
  }
  const removed = new Set<Node>();
  const replaced = new Map<Node, Node>();
  for (const n of nodes) {
    const concat = n.op === "Concat";
    // Nearest Resize only picks values; linear and cubic interpolate, which on the integers would
    // round differently (NanoDet's 4 bilinear Resizes stay between DQ and Q).
    const resize = n.op === "Resize" && attrString(n, "mode", "nearest") === "nearest";
    if ((!VIEWS.has(n.op) && !concat && !resize) || n.domain !== "" || n.outputs.length !== 1) {
      continue;
    }
    if (n.op === "MaxPool" && !maxPool) continue;
    const moved = concat ? n.inputs : n.inputs.slice(0, 1);
    const dqs = moved.map((x) => producer.get(x));
    if (
      !dqs.every((dq) =>
        dq?.op === "DequantizeLinear" && producer.get(dq.inputs[0]!)?.op === "QuantizeLinear"
      )
    ) continue;
    const out = n.outputs[0]!;
    const next = readers.get(out) ?? [];
    const q = next[0];
    if (
      next.length !== 1 || q?.op !== "QuantizeLinear" || graphOutputs.has(out) ||
      "axis" in q.attributes ||
      !dqs.every((dq) =>
        q.inputs[1] === dq!.inputs[1] && q.inputs[2] === dq!.inputs[2] &&
        !("axis" in dq!.attributes)
      )
    ) continue;
    replaced.set(n, {
      ...n,
      inputs: [...dqs.map((dq) => dq!.inputs[0]!), ...n.inputs.slice(moved.length)],
      outputs: [q.outputs[0]!],
    });
    removed.add(q);
    for (const dq of new Set(dqs)) {
      const dqReaders = readers.get(dq!.outputs[0]!)!.filter((r) => r !== n);
      readers.set(dq!.outputs[0]!, dqReaders);
      if (dqReaders.length === 0 && !graphOutputs.has(dq!.outputs[0]!)) removed.add(dq!);
    }
  }
  if (removed.size === 0) return graph;
  const kept = nodes.filter((n) => !removed.has(n)).map((n) => replaced.get(n) ?? n);
  return unreadDropped(graph, { ...graph, nodes: kept });
}
