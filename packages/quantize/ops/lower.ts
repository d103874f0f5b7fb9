/**
 * Lowering for onnxruntime's int8 kernels: exact rewrites of float patterns that ORT would run in
 * float (or on a slow int8 path) once quantized, applied before marking so that every new tensor
 * takes the calibrated range of the original tensor it re-expresses.
 *
 * - A chain of Mul/Div/Add/Sub by scalar constants whose result y = k·p + b only Convs read folds
 *   into them: their weights take k, and b goes into the biases of the unpadded ones (a padded
 *   conv pads y with zeros, not b: it reads p + b/k through one Add, whose range is y's over k,
 *   so its integers are the ones y's would be). PP-OCRv4 det writes hard-swish as
 *   x·clip(x + 3, 0, 6)/6 followed by a learnable affine a·h + b (PP-LCNetV3): of its 76
 *   QLinearMuls, 40 were the /6 and the ·a on full-size tensors. Folded: 36 QLinearMuls, 49
 *   QLinearAdds (was 59), int8 model ~16 % faster (A/B in one process), outputs as close to the
 *   float ones as before (one rounding instead of three or four between the product and the conv).
 * - A HardSigmoid on a Conv's output folds into the conv (weights ×α, bias ×α + β) followed by a
 *   Clip to [0, 1], which ORT fuses into its QLinearConv: the HardSigmoid ran in float between a
 *   DequantizeLinear and a QuantizeLinear. A squeeze-excite residual x + x·s (DBNet's RSE neck)
 *   becomes x·(1 + s), the Add moving to the [N, C, 1, 1] gate (range s's plus 1): PP-OCRv4 det's
 *   eight full-size residual QLinearAdds (up to [1, 96, 160, 160]) and ten float islands go.
 *   Both rewrites, PP-OCRv4 det 640 (A/B in one process, same ranges): int8 31.8 → 25.5 ms
 *   against float's 63.4 (1.99× → 2.48×), file 26.96 → 26.75 % of float; map IoU vs float with
 *   each bench method as good or better (mse 0.875 → 0.885, percentile 0.907 → 0.920) but minmax
 *   (0.810 → 0.792). Bias correction measures the rewritten convs against their twins in
 *   `floatTwin()` (quantize.ts), this lowering's float output.
 * - A MaxPool reading an activation that never decreases (LeakyRelu with α ≥ 0, Sigmoid, Tanh,
 *   HardSigmoid) and nothing else runs first, on the activation's input: the activation, a lookup
 *   table over the integers in ORT (QLinearLeakyRelu), then reads a quarter of the values for a
 *   2×2 pool, and picks the same integers (a table that never decreases commutes with max). In
 *   float ORT fuses LeakyRelu into the Conv, so the int8 model paid for it in full: YOLOv3-tiny
 *   (six conv → leaky → pool) int8 16.98 → 15.37 ms against float's 34.9 (2.05× → 2.27×), NanoDet
 *   (its stem) 12.73 → 12.18 ms against 27.6 (2.16× → 2.26×), A/Bs in one process.
 * - A Conv (group 1) reading a 3-channel graph input (RGB, BGR) reads it zero-padded to 4
 *   channels, with zero weights for the added channel. ORT's
 *   fast u8·s8 convolution (MLAS ConvSym) needs input channels in multiples of 4; an RGB stem conv
 *   otherwise takes the im2col path, 3–4× slower than the float conv it replaces (NanoDet, PP-OCR).
 *   The quantizer pads the integers after the input's QuantizeLinear, with the zero point
 *   (padsOnIntegers, _qdq.ts): NanoDet's stem Pad + Q + Transpose 0.36 → 0.31 ms a run.
 * - A ConvTranspose with kernel = stride, no padding, dilation or groups (DBNet's 2× upsampling
 *   head) becomes a 1×1 Conv into stride² times the channels and a DepthToSpace (DCR): ORT has no
 *   int8 ConvTranspose, so it ran in float with weights dequantized at every run.
 * - Under the head rule, a 1×1 Conv whose raw output is a head output (no weighted layer after it)
 *   becomes Transpose → MatMul → Transpose → Add(bias): its output must stay float, and ORT has
 *   an int8 MatMul with a float output (MatMulIntegerToFloat) but no such Conv, so the head conv
 *   ran in float on dequantized input and weights (NanoDet's three heads, YOLOv3's, DBNet's).
 *   The transpose to channels-last cancels the one ORT puts after its NHWC int8 conv. Where every
 *   path from the head conv ends in a Transpose to channels-last (NanoDet: Split → Sigmoid →
 *   Reshape [N, C, H·W] → Transpose(0, 2, 1)), the ops between run on the MatMul's output
 *   flattened to [N, H·W, C] and the transpose back goes too. NanoDet 416 (A/Bs in one process):
 *   int8 9.37 → 9.08 and 9.47 → 9.25 ms against float's 23.7–23.9 (2.52× → 2.58–2.61×), outputs
 *   bit-identical; ORT's Transposes 0.59 → 0.20 ms a run (the stem's is left), its Split and
 *   bias Add, now on the last axis, +0.07 ms. One MatMul per Split part instead: no gain (tried).
 *   A path ends where only the tensor's shape is read, or where an RoI op reads it as boxes: a
 *   two-stage detector's RPN convs (objectness, deltas) place the RoIs of fc6 but no value of
 *   theirs reaches it; they ran as float Convs on dequantized inputs before.
 * - The DepthToSpace then sinks past single-consumer Relu/Clip/Sigmoid/LeakyRelu and 1×1 Convs
 *   (block-diagonal weights) and consecutive ones merge, so a chain of such ConvTransposes becomes
 *   1×1 Convs at the low resolution and one DepthToSpace at the end (ORT's DepthToSpace is a slow
 *   6-D transpose, and has no int8 kernel).
 * - A Pad with an `axes` input (opset ≥ 18, as torch's dynamo exporter writes it) gets the
 *   full-rank `pads` and no `axes` (the same op, valid at every opset from 11): ORT 1.30's
 *   transpose optimizer permutes a Pad's pads as if they had 2·rank entries when it moves the
 *   NHWC transposes of its int8 convs past the Pad — on pads of 2·len(axes) entries the Gather it
 *   inserts reads out of bounds and the int8 model fails to run at level extended/all ("indices
 *   element out of data bounds"); the float model and level basic run. A Resize with an `axes`
 *   attribute (opset ≥ 18) fails the same way (its scales or sizes are permuted as if they had
 *   one entry per axis of the input): it gets scales of 1, or the input's sizes, on the other axes.
 * - A nearest Resize that scales only H and W of a 4-D [N, C, H, W] tensor by whole factors, each
 *   output pixel a copy of one input pixel (upsampling; `nearestCopies`), with H and W static,
 *   becomes a channels-last Expand: Transpose to [N, H, W, C] → Unsqueeze → Expand
 *   [1, 1, fh, 1, fw, 1] → Reshape to [N, H·fh, W·fw, C] → Transpose back. ORT runs its int8
 *   convs channels-last; the two explicit Transposes meet and cancel the ones it puts around
 *   them, and the Adds and Muls of an FPN between stay channels-last too. ORT's own
 *   channels-last u8 nearest Resize is slow (×2 on u8 [1, 96, 80, 80]: 11.4 ms vs 0.43 ms
 *   channels-first). PP-OCRv4 det 640 with its input made static (six neck Resizes): int8 run
 *   alone 14.0–14.7 → 11.1–11.5 ms, kernel time: Transpose 2.5 → 0.6 ms, the Resizes' 1.4 ms →
 *   Expand 0.5 ms; outputs bit-identical. YOLOv3-416 (two upsamplings before a Concat): the same
 *   time. A Reshape whose shape came from a Shape at run time (for H and W unknown) kept ORT from
 *   cancelling the transposes and was slower than the view below.
 * - Any other nearest Resize of H and W only (a downscale, a fractional factor, a mode whose
 *   pixels are not plain copies, or H and W unknown) resizes a [N·C, 1, H, W] view of it
 *   (Reshape → Resize → Reshape), where ORT's kernel is fast and the transposes around it become
 *   reshapes (PP-OCR det 640 that way: Resize 8.1 → 1.8 ms, Transpose 0.6 → 1.8 ms, int8 8–9 %
 *   faster than the plain Resize).
 *
 * @module
 */
import {
  attrFloat,
  attrInt,
  attrInts,
  attrString,
  type Graph,
  type Node,
  node,
  opsetOf,
} from "@clipq/onnx/graph";
import { float32, int64, type Tensor, toFloat32 } from "@clipq/onnx/tensor";
import { inferShapes } from "@clipq/onnx/shapes";
import type { CheckedOptions } from "../options.ts";
import { softmaxExpectations } from "../_expectation.ts";

/** Result of {@linkcode lowerForOrt}. */
export interface Lowered {
  /** The rewritten graph (the input graph itself when nothing applied). */
  graph: Graph;
  /** New tensor → the original tensor whose values (so whose range) it holds, possibly permuted. */
  aliases: Map<string, string>;
  /**
   * New tensor → how its values follow from its alias's, `alias·scale + offset` (absent: the
   * same values): its range is the alias's range mapped the same way.
   */
  affine: Map<string, Affine>;
  /** What was rewritten, one line per rewrite. */
  notes: string[];
  /**
   * The float outputs of the head 1×1 convs made MatMuls (head "auto"), channels-last, transposed
   * back and with the bias added: raw head outputs, which nothing may quantize (the layer runs
   * int8 with a float output, and the first two have no original tensor to calibrate).
   */
  rawHeads: Set<string>;
}

/** `x·scale + offset`. */
export interface Affine {
  /** Factor. */
  scale: number;
  /** Offset added after the factor. */
  offset: number;
}

/** Options of {@linkcode lowerForOrt}. */
export interface LowerOptions {
  /** Nodes the user keeps float: they are not rewritten (names, op types, pattern). */
  exclude?: Pick<CheckedOptions["exclude"], "names" | "ops" | "pattern">;
  /**
   * "auto" (the quantizer's head rule: the last weighted layers' raw outputs stay unquantized):
   * those that are 1×1 Convs become MatMuls, which ORT runs int8 with a float output
   * (MatMulIntegerToFloat) where a Conv would run in float.
   */
  head?: "auto" | false;
}

const SINKABLE = new Set(["Relu", "Clip", "Sigmoid", "LeakyRelu"]);

interface State {
  nodes: Node[];
  inits: Map<string, Tensor>;
  aliases: Map<string, string>;
  affine: Map<string, Affine>;
  notes: string[];
  used: Set<string>;
  rawHeads: Set<string>;
}

function fresh(s: State, base: string): string {
  let name = base;
  for (let i = 1; s.used.has(name); i++) name = `${base}_${i}`;
  s.used.add(name);
  return name;
}

function excluded(n: Node, i: number, ex: LowerOptions["exclude"]): boolean {
  const label = n.name || `${n.op}#${i}`;
  return !!ex && (ex.names.includes(label) || ex.ops.includes(n.op) || !!ex.pattern?.test(label));
}

function isStandard(n: Node): boolean {
  return n.domain === "" || n.domain === "ai.onnx";
}

const AFFINE = new Set(["Mul", "Div", "Add", "Sub"]);

/** The value of a one-element float constant of rank ≤ 1 (broadcasting it keeps the other's shape). */
function scalarConstant(s: State, t: string | undefined): number | undefined {
  const c = t ? s.inits.get(t) : undefined;
  if (!c || c.dtype !== "float32" || c.dims.length > 1 || c.data.length !== 1) return undefined;
  const v = c.data[0] as number;
  return Number.isFinite(v) ? v : undefined;
}

function unpadded(n: Node): boolean {
  const auto = attrString(n, "auto_pad", "NOTSET");
  return (auto === "NOTSET" || auto === "VALID") &&
    (attrInts(n, "pads") ?? []).every((p) => p === 0);
}

/** Which nodes read each tensor and which node writes it (indices into `nodes`). */
function wiring(
  nodes: readonly Node[],
): { users: Map<string, number[]>; producer: Map<string, number> } {
  const users = new Map<string, number[]>();
  const producer = new Map<string, number>();
  nodes.forEach((n, i) => {
    for (const t of n.inputs) if (t) users.set(t, [...(users.get(t) ?? []), i]);
    for (const t of n.outputs) if (t) producer.set(t, i);
  });
  return { users, producer };
}

/**
 * A chain of scalar Mul/Div/Add/Sub whose result only Convs read, y = k·p + b, folds into them:
 * their weights take k, and b goes into the biases of unpadded ones (a padded conv pads y with
 * zeros, not with b: it reads p + b/k through one Add).
 */
function foldAffineIntoConvs(s: State, graph: Graph, ex: LowerOptions["exclude"]): void {
  const outputs = new Set(graph.outputs.map((v) => v.name));
  const { users, producer } = wiring(s.nodes);
  const readers = (t: string) => [...new Set(users.get(t) ?? [])];
  const convOk = (i: number, y: string): boolean => {
    const n = s.nodes[i]!;
    const w = n.inputs[1] ? s.inits.get(n.inputs[1]) : undefined;
    const b = n.inputs[2] ? s.inits.get(n.inputs[2]) : undefined;
    return n.op === "Conv" && isStandard(n) && !excluded(n, i, ex) && n.inputs[0] === y &&
      n.inputs.indexOf(y, 1) < 0 && !!w && w.dtype === "float32" && w.dims.length >= 3 &&
      (!n.inputs[2] || (b?.dtype === "float32" && b.dims.length === 1));
  };
  const removed = new Set<number>();
  const replaced = new Map<number, Node>();
  const added = new Map<number, Node>(); // after the chain's last node
  for (let last = 0; last < s.nodes.length; last++) {
    const y = s.nodes[last]!.outputs[0];
    if (!y || outputs.has(y)) continue;
    const convs = readers(y);
    if (convs.length === 0 || !convs.every((i) => convOk(i, y))) continue;
    // Walk up while each link is a scalar affine op whose output only the next link reads.
    const chain: { i: number; x: string; c: number }[] = [];
    for (let t = y;;) {
      const i = producer.get(t);
      const n = i === undefined ? undefined : s.nodes[i];
      if (!n || !AFFINE.has(n.op) || !isStandard(n) || excluded(n, i!, ex) || removed.has(i!)) {
        break;
      }
      if (n.inputs.length !== 2 || n.outputs.length !== 1) break;
      const [a, b] = n.inputs as [string, string];
      const ca = scalarConstant(s, a), cb = scalarConstant(s, b);
      // Constant first works for Mul and Add; Div and Sub need x first (c − x would flip k).
      const x = cb !== undefined ? a : (n.op === "Mul" || n.op === "Add") ? b : undefined;
      const c = cb ?? ca;
      if (!x || c === undefined || s.inits.has(x) || (n.op === "Div" && c === 0)) break;
      chain.unshift({ i: i!, x, c });
      if (outputs.has(x) || readers(x).length !== 1) break;
      t = x;
    }
    if (chain.length === 0) continue;
    let k = 1, b = 0;
    for (const { i, c } of chain) {
      const op = s.nodes[i]!.op;
      if (op === "Mul") [k, b] = [k * c, b * c];
      else if (op === "Div") [k, b] = [k / c, b / c];
      else if (op === "Add") b += c;
      else b -= c;
    }
    const p = chain[0]!.x;
    const padded = convs.filter((i) => !unpadded(s.nodes[i]!));
    // Only an Add left before padded convs, with nothing multiplied away: no gain.
    if (!Number.isFinite(k) || !Number.isFinite(b) || k === 0 || (k === 1 && padded.length > 0)) {
      continue;
    }
    let shifted: string | undefined;
    if (b !== 0 && padded.length > 0) {
      shifted = fresh(s, `${y}_unscaled`);
      const cName = fresh(s, `${y}_shift`);
      s.inits.set(cName, float32([], [b / k]));
      s.aliases.set(shifted, y);
      s.affine.set(shifted, { scale: 1 / k, offset: 0 });
      added.set(last, {
        name: "",
        op: "Add",
        domain: "",
        inputs: [p, cName],
        outputs: [shifted],
        attributes: {},
      });
    }
    for (const i of convs) {
      const n = s.nodes[i]!;
      const w = s.inits.get(n.inputs[1]!)!;
      const src = toFloat32(w);
      const inputs = [...n.inputs];
      if (b !== 0 && unpadded(n)) {
        // conv(k·p + b) = conv_{k·w}(p) + b·Σw per output channel.
        const per = sizeOfRest(w.dims);
        const o = w.dims[0]!;
        const bias = n.inputs[2] ? toFloat32(s.inits.get(n.inputs[2])!) : new Float32Array(o);
        const nb = new Float32Array(o);
        for (let a = 0; a < o; a++) {
          let sum = 0;
          for (let j = 0; j < per; j++) sum += src[a * per + j]!;
          nb[a] = bias[a]! + b * sum;
        }
        const bName = fresh(s, `${n.inputs[2] || `${n.name || y}_bias`}_folded`);
        s.inits.set(bName, float32([o], nb));
        inputs[2] = bName;
      }
      // New names: these weights are not the given graph's any more (a reader of the original
      // name, such as bias correction's float twin of the given graph, would get the wrong ones).
      inputs[1] = fresh(s, `${n.inputs[1]}_folded`);
      s.inits.set(inputs[1], float32(w.dims, src.map((v) => v * k)));
      inputs[0] = shifted && !unpadded(n) ? shifted : p;
      replaced.set(i, { ...n, inputs });
    }
    for (const { i } of chain) removed.add(i);
    s.notes.push(
      `${chain.map(({ i }) => s.nodes[i]!.name || `${s.nodes[i]!.op}#${i}`).join(", ")}: ` +
        `y = ${k}·x + ${b} folded into the ${convs.length} Conv(s) reading it (no int8 Mul)`,
    );
  }
  if (removed.size === 0) return;
  s.nodes = s.nodes.flatMap((n, i) => {
    if (removed.has(i)) return added.has(i) ? [added.get(i)!] : [];
    return [replaced.get(i) ?? n];
  });
}

/**
 * HardSigmoid(z) = clip(α·z + β, 0, 1) on a Conv's output z: α and β go into the conv, which then
 * ends in a Clip to [0, 1] (one QLinearConv, where the HardSigmoid ran in float between a
 * DequantizeLinear and a QuantizeLinear). A squeeze-excite residual x + x·s becomes x·(1 + s): the
 * Add moves from the full-size tensor to the [N, C, 1, 1] gate.
 */
function hardSigmoidIntoConv(s: State, graph: Graph, ex: LowerOptions["exclude"]): void {
  const opset = opsetOf(graph);
  // Clip takes its bounds as inputs from opset 11.
  if ((opset ?? 0) < 11) return;
  const outputs = new Set(graph.outputs.map((v) => v.name));
  const { users, producer } = wiring(s.nodes);
  const only = (t: string): number | undefined => {
    const u = [...new Set(users.get(t) ?? [])];
    return u.length === 1 && !outputs.has(t) ? u[0] : undefined;
  };
  const usable = (i: number | undefined, op: string): i is number =>
    i !== undefined && s.nodes[i]!.op === op && isStandard(s.nodes[i]!) &&
    !excluded(s.nodes[i]!, i, ex);
  const replaced = new Map<number, Node>();
  s.nodes.forEach((h, hIdx) => {
    if (!usable(hIdx, "HardSigmoid")) return;
    const z = h.inputs[0], sig = h.outputs[0];
    const ci = z ? producer.get(z) : undefined;
    if (!z || !sig || !usable(ci, "Conv") || only(z) !== hIdx) return;
    const conv = s.nodes[ci]!;
    const w = conv.inputs[1] ? s.inits.get(conv.inputs[1]) : undefined;
    const b = conv.inputs[2] ? s.inits.get(conv.inputs[2]) : undefined;
    if (!w || w.dtype !== "float32" || (conv.inputs[2] && b?.dtype !== "float32")) return;
    const alpha = attrFloat(h, "alpha", 0.2), beta = attrFloat(h, "beta", 0.5);
    // x + x·s: the Mul's other input is x, and so is the Add's.
    const mi = only(sig);
    const m = mi === undefined ? undefined : s.nodes[mi];
    const x = m?.inputs.length === 2 ? m.inputs.find((t) => t !== sig) : undefined;
    const ai = m?.outputs[0] ? only(m.outputs[0]) : undefined;
    const a = ai === undefined ? undefined : s.nodes[ai];
    const residual = usable(mi, "Mul") && usable(ai, "Add") && !!x && !!m && !!a &&
      m.inputs.includes(sig) && a.inputs.length === 2 && a.inputs.includes(x) &&
      a.inputs.includes(m.outputs[0]!);
    const o = w.dims[0]!;
    const bias = b ? toFloat32(b) : new Float32Array(o);
    const wName = fresh(s, `${conv.inputs[1]}_hard_sigmoid`);
    const bName = fresh(s, `${conv.inputs[2] || `${conv.name || z}_bias`}_hard_sigmoid`);
    s.inits.set(wName, float32(w.dims, toFloat32(w).map((v) => v * alpha)));
    s.inits.set(bName, float32([o], bias.map((v) => v * alpha + beta)));
    const pre = fresh(s, `${z}_hard_sigmoid`);
    s.aliases.set(pre, z);
    s.affine.set(pre, { scale: alpha, offset: beta });
    replaced.set(ci, {
      ...conv,
      inputs: [conv.inputs[0]!, wName, bName],
      outputs: [pre],
    });
    const lo = fresh(s, `${sig}_min`), up = fresh(s, `${sig}_max`);
    s.inits.set(lo, float32([], [0]));
    s.inits.set(up, float32([], [1]));
    // The Clip's output is the HardSigmoid's, value for value; its [0, 1] bounds let ORT fuse it
    // into the QLinearConv (a Clip to [1, 2] would not: u8's range holds 0).
    const clip: Node = {
      name: h.name,
      op: "Clip",
      domain: "",
      inputs: [pre, lo, up],
      outputs: [sig],
      attributes: {},
    };
    replaced.set(hIdx, clip);
    if (residual) {
      // x + x·s = x·(1 + s): the Add moves to the [N, C, 1, 1] gate.
      const gate = fresh(s, `${sig}_plus_one`);
      const one = fresh(s, `${sig}_one`);
      // Of the gate's rank: a scalar shared by gates on both sides of ORT's channels-last
      // boundary made its transpose optimizer unsqueeze it in place and squeeze it back for some.
      s.inits.set(one, float32(w.dims.map(() => 1), [1]));
      s.aliases.set(gate, sig);
      s.affine.set(gate, { scale: 1, offset: 1 });
      replaced.set(mi!, { ...a!, inputs: [sig, one], outputs: [gate] });
      replaced.set(ai!, { ...m!, inputs: [x!, gate], outputs: [...a!.outputs] });
    }
    s.notes.push(
      `${h.name || `HardSigmoid#${hIdx}`}: folded into ${conv.name || `Conv#${ci}`} + Clip${
        residual ? `; x + x·s → x·(1 + s)` : ""
      }`,
    );
  });
  if (replaced.size === 0) return;
  s.nodes = s.nodes.map((n, i) => replaced.get(i) ?? n);
}

/** Elementwise activations that never decrease: max(f(a), f(b)) = f(max(a, b)). */
function monotone(n: Node): boolean {
  if (!isStandard(n)) return false;
  if (n.op === "Sigmoid" || n.op === "Tanh") return true;
  if (n.op === "LeakyRelu") return attrFloat(n, "alpha", 0.01) >= 0;
  if (n.op === "HardSigmoid") return attrFloat(n, "alpha", 0.2) >= 0;
  return false;
}

/**
 * MaxPool(f(y)) = f(MaxPool(y)) for an activation f that never decreases: the pool runs first, on
 * the activation's input, and the activation on the pooled tensor (a quarter of the values for a
 * 2×2 pool). In int8 both sides are equal integer for integer: the activation is a lookup table
 * that never decreases (QLinearLeakyRelu), and the pool picks the same input's entry.
 */
function poolBeforeActivation(s: State, graph: Graph, ex: LowerOptions["exclude"]): void {
  const { users, producer } = wiring(s.nodes);
  const outputs = new Set(graph.outputs.map((v) => v.name));
  const moved = new Map<number, Node>();
  s.nodes.forEach((pool, i) => {
    const a = pool.inputs[0];
    if (pool.op !== "MaxPool" || !isStandard(pool) || !a || excluded(pool, i, ex)) return;
    if (pool.outputs.length !== 1 || outputs.has(a) || users.get(a)?.length !== 1) return;
    const j = producer.get(a);
    if (j === undefined || moved.has(j)) return;
    const act = s.nodes[j]!;
    const y = act.inputs[0];
    if (!y || !monotone(act) || act.outputs.length !== 1 || excluded(act, j, ex)) return;
    const pooled = fresh(s, `${y}_pooled`);
    s.aliases.set(pooled, y);
    moved.set(j, { ...pool, inputs: [y, ...pool.inputs.slice(1)], outputs: [pooled] });
    moved.set(i, { ...act, inputs: [pooled], outputs: [...pool.outputs] });
    s.notes.push(
      `${pool.name || `MaxPool#${i}`}: runs before ${
        act.name || `${act.op}#${j}`
      } (${act.op} never decreases), which then reads the pooled tensor`,
    );
  });
  if (moved.size > 0) s.nodes = s.nodes.map((n, i) => moved.get(i) ?? n);
}

/** Zero-pads 3-channel graph inputs read by group-1 Convs to 4 channels. */
function padInputChannels(s: State, graph: Graph, ex: LowerOptions["exclude"]): void {
  // Pad takes its pads as an input from opset 11 (a per-tensor model below it stays there).
  const opset = opsetOf(graph);
  if ((opset ?? 0) < 11) return;
  const inputs = new Map(graph.inputs.map((v) => [v.name, v]));
  const padded = new Map<string, { name: string; channels: number }>();
  const padNodes: Node[] = [];
  s.nodes = s.nodes.map((n, i) => {
    const x = n.inputs[0];
    const wName = n.inputs[1];
    if (n.op !== "Conv" || !isStandard(n) || !x || !wName || excluded(n, i, ex)) return n;
    if (!inputs.has(x) || attrInt(n, "group", 1) !== 1) return n;
    const w = s.inits.get(wName);
    if (!w || w.dtype !== "float32" || w.dims.length !== 4) return n;
    const c = w.dims[1]!;
    const declared = inputs.get(x)!.shape?.[1];
    // Three channels (RGB, BGR) is the measured case: one more channel of zeros is cheap next to
    // the im2col path; one or two would double or quadruple the input for less.
    if (c !== 3 || (typeof declared === "number" && declared !== c)) return n;
    const to = Math.ceil(c / 4) * 4;
    let p = padded.get(x);
    if (!p) {
      const pads = fresh(s, `${x}_channel_pads`);
      s.inits.set(pads, int64([8], [0, 0, 0, 0, 0, to - c, 0, 0]));
      p = { name: fresh(s, `${x}_channels${to}`), channels: to };
      padded.set(x, p);
      s.aliases.set(p.name, x);
      padNodes.push({
        name: fresh(s, `${x}_channel_pad`),
        op: "Pad",
        domain: "",
        inputs: [x, pads],
        outputs: [p.name],
        attributes: { mode: { type: "string", value: "constant" } },
      });
    }
    const [o, , kh, kw] = w.dims as [number, number, number, number];
    const k = kh * kw;
    const src = toFloat32(w);
    const dst = new Float32Array(o * to * k);
    for (let a = 0; a < o; a++) {
      dst.set(src.subarray(a * c * k, (a + 1) * c * k), a * to * k);
    }
    const wPadded = fresh(s, `${wName}_channels${to}`);
    s.inits.set(wPadded, float32([o, to, kh, kw], dst));
    s.notes.push(
      `${
        n.name || `Conv#${i}`
      }: input "${x}" padded from ${c} to ${to} channels (ORT's fast int8 conv needs multiples of 4)`,
    );
    return { ...n, inputs: [p.name, wPadded, ...n.inputs.slice(2)] };
  });
  s.nodes.unshift(...padNodes);
}

/**
 * The graph's inferred shapes when some node is a candidate of a rewrite that needs them;
 * undefined when none is, or when inference fails (the rewrite then leaves the graph as it is).
 */
function shapesFor(
  s: State,
  graph: Graph,
  candidate: (n: Node, i: number) => boolean,
): Map<string, { shape: readonly unknown[] | null }> | undefined {
  if (!s.nodes.some(candidate)) return undefined;
  try {
    return inferShapes(graph);
  } catch {
    return undefined;
  }
}

/**
 * Pad(x, pads, value, axes) with constant pads and axes → Pad(x, full-rank pads, value). Excluded
 * Pads too: the same op in another form, and an excluded one beside int8 convs failed the same way.
 */
function padAxesToFullRank(s: State, graph: Graph): void {
  const ints = (t: string | undefined): number[] | undefined => {
    const c = t ? s.inits.get(t) : undefined;
    return c?.dtype === "int64" && c.dims.length === 1 ? [...c.data].map(Number) : undefined;
  };
  const candidate = (n: Node): boolean =>
    n.op === "Pad" && isStandard(n) && !!n.inputs[3] &&
    !!ints(n.inputs[1]) && !!ints(n.inputs[3]);
  const shapes = shapesFor(s, graph, candidate);
  if (!shapes) return;
  s.nodes = s.nodes.map((n, i) => {
    const rank = shapes.get(n.inputs[0] ?? "")?.shape?.length;
    if (!candidate(n) || rank === undefined) return n;
    const pads = ints(n.inputs[1])!, axes = ints(n.inputs[3])!;
    const at = axes.map((a) => (a < 0 ? a + rank : a));
    if (
      pads.length !== 2 * axes.length || at.some((a) => a < 0 || a >= rank) ||
      new Set(at).size !== at.length
    ) {
      return n; // malformed: left for onnxruntime to report
    }
    const full = new Array<number>(2 * rank).fill(0);
    at.forEach((a, k) => {
      full[a] = pads[k]!;
      full[a + rank] = pads[k + axes.length]!;
    });
    const name = fresh(s, `${n.inputs[1]}_full`);
    s.inits.set(name, int64([2 * rank], full));
    s.notes.push(
      `${
        n.name || `Pad#${i}`
      }: pads over all ${rank} axes instead of an axes input (ORT's transpose optimizer misreads the axes form)`,
    );
    const inputs = [n.inputs[0]!, name, ...(n.inputs[2] ? [n.inputs[2]] : [])];
    return { ...n, inputs };
  });
}

/**
 * Resize(x, roi, scales | sizes) with an axes attribute and constant scales, or constant sizes and
 * the stretch policy → the same Resize over every axis (scale 1 / the input's size elsewhere);
 * excluded ones too, as padAxesToFullRank.
 */
function resizeAxesToFullRank(s: State, graph: Graph): void {
  const candidate = (n: Node): boolean =>
    n.op === "Resize" && isStandard(n) && !!attrInts(n, "axes") &&
    // tf_crop_and_resize's roi has an entry pair per axis too: left as it is.
    attrString(n, "coordinate_transformation_mode", "half_pixel") !== "tf_crop_and_resize" &&
    (n.inputs[2] ? s.inits.get(n.inputs[2])?.dtype === "float32" : s.inits.has(n.inputs[3] ?? "") &&
      attrString(n, "keep_aspect_ratio_policy", "stretch") === "stretch");
  const shapes = shapesFor(s, graph, candidate);
  if (!shapes) return;
  s.nodes = s.nodes.map((n, i) => {
    const dims = shapes.get(n.inputs[0] ?? "")?.shape;
    if (!candidate(n) || !dims) return n;
    const rank = dims.length;
    const axes = attrInts(n, "axes")!.map((a) => (a < 0 ? a + rank : a));
    const byScales = !!n.inputs[2];
    const given = [...s.inits.get(byScales ? n.inputs[2]! : n.inputs[3]!)!.data].map(Number);
    if (
      given.length !== axes.length || axes.some((a) => a < 0 || a >= rank) ||
      new Set(axes).size !== axes.length ||
      (!byScales && dims.some((d, k) => !axes.includes(k) && typeof d !== "number"))
    ) {
      return n;
    }
    const full = dims.map((d, k) => {
      const j = axes.indexOf(k);
      return j >= 0 ? given[j]! : byScales ? 1 : d as number;
    });
    const name = fresh(s, `${n.inputs[byScales ? 2 : 3]}_full`);
    s.inits.set(name, byScales ? float32([rank], full) : int64([rank], full));
    s.notes.push(
      `${n.name || `Resize#${i}`}: ${
        byScales ? "scales" : "sizes"
      } over all ${rank} axes instead of an axes attribute (ORT's transpose optimizer misreads the axes form)`,
    );
    const attributes = { ...n.attributes };
    delete attributes.axes;
    const inputs = byScales
      ? [n.inputs[0]!, n.inputs[1] ?? "", name]
      : [n.inputs[0]!, n.inputs[1] ?? "", "", name];
    return { ...n, inputs, attributes };
  });
}

/**
 * Nearest Resize of [N, C, H, W] scaling H, W only → a channels-last Expand (whole-pixel copies,
 * H and W static), else Reshape [N·C, 1, H, W], Resize, Reshape.
 */
function resizeNearest(s: State, graph: Graph, ex: LowerOptions["exclude"]): void {
  const opset = opsetOf(graph);
  const candidate = (n: Node, i: number): boolean => {
    const scales = n.inputs[2] ? s.inits.get(n.inputs[2]) : undefined;
    return n.op === "Resize" && isStandard(n) && !excluded(n, i, ex) && (opset ?? 0) >= 11 &&
      n.inputs.length === 3 && !!n.inputs[0] && attrString(n, "mode", "nearest") === "nearest" &&
      // tf_crop_and_resize reads roi on every axis; the others map a scale-1 axis onto itself.
      attrString(n, "coordinate_transformation_mode", "half_pixel") !== "tf_crop_and_resize" &&
      !attrInts(n, "axes") && scales?.dtype === "float32" && scales.dims.length === 1 &&
      scales.dims[0] === 4 && scales.data[0] === 1 && scales.data[1] === 1;
  };
  // Without shapes the channel count is unknown; the Resize stays as it is.
  const shapes = shapesFor(s, graph, candidate);
  if (!shapes) return;
  // Short names, one shape tensor per channel count: each new tensor gets a Q/DQ pair, and the
  // names are a measurable part of an int8 file (PP-OCR det: six Resizes).
  let toView: string | undefined;
  const backs = new Map<number, string>();
  const constant = (name: string, values: number[]): string => {
    const t = fresh(s, name);
    s.inits.set(t, int64([values.length], values));
    return t;
  };
  s.nodes = s.nodes.flatMap((n, i) => {
    const x = n.inputs[0]!, y = n.outputs[0];
    const shape = shapes.get(x)?.shape;
    const c = shape?.length === 4 ? shape[1] : undefined;
    if (!candidate(n, i) || !y || typeof c !== "number") return [n];
    const scales = s.inits.get(n.inputs[2]!)!.data as Float32Array;
    const [h, w] = [shape![2], shape![3]];
    // The output shape is a constant: a Shape read at run time (for H and W unknown until then)
    // kept onnxruntime from cancelling the transposes, and the Expand form was then slower than the
    // view (PP-OCRv4 det 640, alternating with float: 23–28 → 29–35 ms).
    if (
      typeof h === "number" && typeof w === "number" &&
      nearestCopies(n, { length: h, scale: scales[2]! }) &&
      nearestCopies(n, { length: w, scale: scales[3]! })
    ) {
      const [fh, fw] = [scales[2]!, scales[3]!];
      const [nhwc, unsqueezed, copies, up] = ["nhwc", "cells", "copies", "nhwc_up"]
        .map((k) => fresh(s, `${y}_${k}`)) as [string, string, string, string];
      for (const t of [nhwc, unsqueezed, copies]) s.aliases.set(t, x);
      s.aliases.set(up, y);
      s.notes.push(
        `${
          n.name || `Resize#${i}`
        }: ×${fh}×${fw} nearest upsampling as a channels-last Expand (ORT's own channels-last u8 Resize is slow)`,
      );
      const perm = (value: number[]) => ({ perm: { type: "ints" as const, value } });
      return [
        node({
          name: "",
          op: "Transpose",
          inputs: [x],
          outputs: [nhwc],
          attributes: perm([0, 2, 3, 1]),
        }),
        // Unsqueeze takes its axes as an input from opset 13 on, as an attribute before.
        node({
          name: "",
          op: "Unsqueeze",
          outputs: [unsqueezed],
          ...((opset ?? 0) >= 13
            ? { inputs: [nhwc, constant("axes", [2, 4])] }
            : { inputs: [nhwc], attributes: { axes: { type: "ints", value: [2, 4] } } }),
        }),
        node({
          name: n.name,
          op: "Expand",
          inputs: [unsqueezed, constant("copies", [1, 1, fh, 1, fw, 1])],
          outputs: [copies],
        }),
        reshape(copies, constant("upsampled", [-1, h * fh, w * fw, c]), up),
        node({
          name: "",
          op: "Transpose",
          inputs: [up],
          outputs: [y],
          attributes: perm([0, 3, 1, 2]),
        }),
      ];
    }
    toView ??= constant("resize_view", [-1, 1, 0, 0]);
    let back = backs.get(c);
    if (!back) {
      back = fresh(s, `resize_view_c${c}`);
      // Reshape's -1 takes N back from the element count, 0 copies the resized H and W.
      s.inits.set(back, int64([4], [-1, c, 0, 0]));
      backs.set(c, back);
    }
    const xv = fresh(s, `${x}_v`), yv = fresh(s, `${y}_v`);
    s.aliases.set(xv, x);
    s.aliases.set(yv, y);
    s.notes.push(
      `${
        n.name || `Resize#${i}`
      }: resizes a [N·${c}, 1, H, W] view (ORT's channels-last u8 nearest Resize is slow)`,
    );
    return [
      reshape(x, toView, xv),
      { ...n, inputs: [xv, ...n.inputs.slice(1)], outputs: [yv] },
      reshape(yv, back, y),
    ];
  });
}

/**
 * Whether a nearest Resize by this whole factor along an axis of this length gives each output
 * index o the input index ⌊o / scale⌋ (every input pixel copied scale times), under the node's
 * coordinate_transformation_mode and nearest_mode as the ONNX spec computes them. A mode whose
 * source coordinate falls within 10⁻⁶ of a rounding boundary is not trusted (onnxruntime computes
 * it in float32).
 */
function nearestCopies(n: Node, axis: { length: number; scale: number }): boolean {
  const { length, scale } = axis;
  if (!Number.isInteger(scale) || scale < 1 || length < 1) return false;
  const mode = attrString(n, "coordinate_transformation_mode", "half_pixel");
  const rounding = attrString(n, "nearest_mode", "round_prefer_floor");
  const out = length * scale;
  for (let o = 0; o < out; o++) {
    let x: number;
    if (mode === "half_pixel" || (mode === "pytorch_half_pixel" && out > 1)) {
      x = (o + 0.5) / scale - 0.5;
    } else if (mode === "asymmetric") x = o / scale;
    else if (mode === "tf_half_pixel_for_nn") x = (o + 0.5) / scale;
    else return false;
    const frac = x - Math.floor(x);
    let k: number;
    if (rounding === "floor" || rounding === "ceil") {
      if (frac !== 0 && (frac < 1e-6 || frac > 1 - 1e-6)) return false;
      k = rounding === "floor" ? Math.floor(x) : Math.ceil(x);
    } else if (rounding === "round_prefer_floor" || rounding === "round_prefer_ceil") {
      if (Math.abs(frac - 0.5) < 1e-6) {
        if (frac !== 0.5) return false;
        k = rounding === "round_prefer_floor" ? Math.floor(x) : Math.ceil(x);
      } else k = Math.round(x);
    } else return false;
    if (Math.min(Math.max(k, 0), length - 1) !== Math.floor(o / scale)) return false;
  }
  return true;
}

/** ConvTranspose(kernel = stride, no pads) → 1×1 Conv (DCR channel order) + DepthToSpace. */
function convTransposeToConv(s: State, ex: LowerOptions["exclude"]): void {
  const out: Node[] = [];
  s.nodes.forEach((n, i) => {
    const [x, wName, bName] = n.inputs;
    const y = n.outputs[0];
    const w = wName ? s.inits.get(wName) : undefined;
    const k = attrInts(n, "kernel_shape") ?? w?.dims.slice(2);
    const strides = attrInts(n, "strides");
    const ok = n.op === "ConvTranspose" && isStandard(n) && x && y && w && !excluded(n, i, ex) &&
      w.dtype === "float32" && w.dims.length === 4 && k && strides && k.length === 2 &&
      k[0] === k[1] && k[0] === strides[0] && k[1] === strides[1] && k[0]! > 1 &&
      attrInt(n, "group", 1) === 1 && (attrInts(n, "pads") ?? []).every((p) => p === 0) &&
      (attrInts(n, "dilations") ?? []).every((d) => d === 1) &&
      (attrInts(n, "output_padding") ?? []).every((d) => d === 0) &&
      !attrInts(n, "output_shape") && attrString(n, "auto_pad", "NOTSET") === "NOTSET" &&
      (!bName || s.inits.get(bName)?.dtype === "float32");
    if (!ok) {
      out.push(n);
      return;
    }
    const [cin, cout] = w.dims as [number, number];
    const S = k[0]!;
    const src = toFloat32(w);
    const dst = new Float32Array(cout * S * S * cin);
    for (let ci = 0; ci < cin; ci++) {
      for (let co = 0; co < cout; co++) {
        for (let a = 0; a < S * S; a++) {
          dst[(a * cout + co) * cin + ci] = src[(ci * cout + co) * S * S + a]!;
        }
      }
    }
    const wConv = fresh(s, `${wName}_as_conv`);
    s.inits.set(wConv, float32([cout * S * S, cin, 1, 1], dst));
    const inputs = [x, wConv];
    if (bName) {
      const b = toFloat32(s.inits.get(bName)!);
      const bb = new Float32Array(cout * S * S);
      for (let a = 0; a < S * S; a++) bb.set(b, a * cout);
      const bConv = fresh(s, `${bName}_as_conv`);
      s.inits.set(bConv, float32([cout * S * S], bb));
      inputs.push(bConv);
    }
    const depth = fresh(s, `${y}_depth`);
    s.aliases.set(depth, y);
    out.push({
      name: n.name,
      op: "Conv",
      domain: "",
      inputs,
      outputs: [depth],
      attributes: { kernel_shape: { type: "ints", value: [1, 1] } },
    });
    out.push(depthToSpace(s, n.name || `ConvTranspose#${i}`, depth, y, S));
    s.notes.push(
      `${
        n.name || `ConvTranspose#${i}`
      }: ConvTranspose ${S}×${S}/${S} → 1×1 Conv + DepthToSpace (ORT has no int8 ConvTranspose)`,
    );
  });
  s.nodes = out;
}

function depthToSpace(s: State, base: string, x: string, y: string, block: number): Node {
  return {
    name: fresh(s, `${base}_depth_to_space`),
    op: "DepthToSpace",
    domain: "",
    inputs: [x],
    outputs: [y],
    attributes: {
      blocksize: { type: "int", value: block },
      mode: { type: "string", value: "DCR" },
    },
  };
}

function isDcr(n: Node): boolean {
  return n.op === "DepthToSpace" && isStandard(n) && attrString(n, "mode", "DCR") === "DCR";
}

/** Output channel permutation that lets one DepthToSpace(s1·s2) replace D2S(s2)∘D2S(s1). */
function mergedOrder(s1: number, s2: number, c2: number): Int32Array {
  const S = s1 * s2;
  const perm = new Int32Array(S * S * c2); // new channel → old channel
  for (let i1 = 0; i1 < s1; i1++) {
    for (let j1 = 0; j1 < s1; j1++) {
      for (let i2 = 0; i2 < s2; i2++) {
        for (let j2 = 0; j2 < s2; j2++) {
          for (let c = 0; c < c2; c++) {
            const old = (i1 * s1 + j1) * s2 * s2 * c2 + (i2 * s2 + j2) * c2 + c;
            const now = ((i1 * s2 + i2) * S + (j1 * s2 + j2)) * c2 + c;
            perm[now] = old;
          }
        }
      }
    }
  }
  return perm;
}

/** Sinks DepthToSpace (DCR) past unary ops and 1×1 Convs, and merges consecutive ones. */
function sinkDepthToSpace(s: State, graph: Graph, ex: LowerOptions["exclude"]): void {
  const outputs = new Set(graph.outputs.map((v) => v.name));
  for (let changed = true; changed;) {
    changed = false;
    const users = new Map<string, number[]>();
    const producer = new Map<string, number>();
    s.nodes.forEach((n, i) => {
      for (const t of n.inputs) if (t) users.set(t, [...(users.get(t) ?? []), i]);
      for (const t of n.outputs) if (t) producer.set(t, i);
    });
    for (let i = 0; i < s.nodes.length && !changed; i++) {
      const d = s.nodes[i]!;
      if (!isDcr(d)) continue;
      const x = d.inputs[0]!, y = d.outputs[0]!;
      const block = attrInt(d, "blocksize", 0);
      const u = users.get(y) ?? [];
      if (outputs.has(y) || u.length !== 1) continue;
      const ui = u[0]!;
      const next = s.nodes[ui]!;
      if (excluded(next, ui, ex) || !isStandard(next) || next.inputs[0] !== y) continue;
      const z = next.outputs[0]!;
      if (SINKABLE.has(next.op)) {
        // act(D2S(x)) = D2S(act(x)): the activation now runs on x's layout.
        const mid = fresh(s, `${z}_depth`);
        s.aliases.set(mid, z);
        s.nodes[i] = { ...next, inputs: [x, ...next.inputs.slice(1)], outputs: [mid] };
        s.nodes[ui] = { ...d, inputs: [mid], outputs: [z] };
        changed = true;
      } else if (next.op === "Conv" && isPointwise(next, s)) {
        // Conv1×1(D2S(x)) = D2S(Conv'(x)), Conv' block-diagonal over the block² positions.
        const w = s.inits.get(next.inputs[1]!)!;
        const [co, ci] = w.dims as [number, number];
        const B = block * block;
        const src = toFloat32(w);
        const dst = new Float32Array(B * co * B * ci);
        for (let a = 0; a < B; a++) {
          for (let o = 0; o < co; o++) {
            dst.set(src.subarray(o * ci, (o + 1) * ci), (a * co + o) * B * ci + a * ci);
          }
        }
        const wName = fresh(s, `${next.inputs[1]}_blocked${block}`);
        s.inits.set(wName, float32([B * co, B * ci, 1, 1], dst));
        const inputs = [x, wName];
        const bName = next.inputs[2];
        if (bName) {
          const b = toFloat32(s.inits.get(bName)!);
          const bb = new Float32Array(B * co);
          for (let a = 0; a < B; a++) bb.set(b, a * co);
          const nb = fresh(s, `${bName}_blocked${block}`);
          s.inits.set(nb, float32([B * co], bb));
          inputs.push(nb);
        }
        const mid = fresh(s, `${z}_depth`);
        s.aliases.set(mid, z);
        s.nodes[i] = { ...next, inputs, outputs: [mid] };
        s.nodes[ui] = { ...d, inputs: [mid], outputs: [z] };
        changed = true;
      } else if (isDcr(next)) {
        // D2S(s2)(D2S(s1)(x)) = D2S(s1·s2)(x') with x' channel-permuted at its producing Conv.
        const s2 = attrInt(next, "blocksize", 0);
        const chain = permutableChain(s, x, producer, users, outputs);
        if (!chain) continue;
        const conv = s.nodes[chain.conv]!;
        const w = s.inits.get(conv.inputs[1]!)!;
        const channels = w.dims[0]!;
        if (channels % (block * block * s2 * s2) !== 0) continue;
        const perm = mergedOrder(block, s2, channels / (block * block * s2 * s2));
        const per = sizeOfRest(w.dims);
        const src = toFloat32(w);
        const dst = new Float32Array(src.length);
        perm.forEach((old, now) => dst.set(src.subarray(old * per, (old + 1) * per), now * per));
        const wName = fresh(s, `${conv.inputs[1]}_reordered`);
        s.inits.set(wName, float32(w.dims, dst));
        const inputs = [conv.inputs[0]!, wName];
        if (conv.inputs[2]) {
          const b = toFloat32(s.inits.get(conv.inputs[2])!);
          const nb = fresh(s, `${conv.inputs[2]}_reordered`);
          s.inits.set(nb, float32([channels], Float32Array.from(perm, (old) => b[old]!)));
          inputs.push(nb);
        }
        s.nodes[chain.conv] = { ...conv, inputs };
        s.nodes[i] = {
          ...d,
          outputs: [z],
          attributes: { ...d.attributes, blocksize: { type: "int", value: block * s2 } },
        };
        s.nodes.splice(ui, 1);
        changed = true;
      }
    }
  }
}

const WEIGHTED = new Set(["Conv", "ConvTranspose", "Gemm", "MatMul"]);

/** Ops that read only their input's shape. */
const SHAPE_ONLY = new Set(["Shape", "Size", "ConstantOfShape", "EyeLike"]);

/** Ops that pool input 0 over the boxes of input 1 (input 2: the boxes' batch indices). */
const ROI_OPS = new Set(["RoiAlign", "MaxRoiPool", "RoiPool"]);

/** A head conv lowered to MatMul: its channels-last output and what brings it back to NCHW. */
interface HeadMatMul {
  /** The MatMul's output, [N, H, W, C]. */
  last: string;
  /** The Transpose(0, 3, 1, 2)'s output. */
  first: string;
  /** The conv's output: the bias Add's (or the Transpose's when there is no bias). */
  y: string;
  /** The conv's bias, [C] (absent: none). */
  bias?: string;
  channels: number;
}

/** 1×1 Convs with no weighted layer between them and a graph output → channels-last MatMul. */
function headConvsToMatMul(
  s: State,
  graph: Graph,
  ex: LowerOptions["exclude"],
): HeadMatMul[] {
  const heads: HeadMatMul[] = [];
  const users = new Map<string, Node[]>();
  for (const n of s.nodes) {
    for (const t of n.inputs) if (t) users.set(t, [...(users.get(t) ?? []), n]);
  }
  const outputs = new Set(graph.outputs.map((v) => v.name));
  // A DFL expectation decodes (it stays float): not a weighted layer here, and not a head conv.
  const expectations = softmaxExpectations(s.nodes, s.inits);
  // Whether every path from t ends at a graph output without meeting a weighted layer.
  const memo = new Map<string, boolean>();
  const rawToOutputs = (t: string, depth = 0): boolean => {
    const hit = memo.get(t);
    if (hit !== undefined) return hit;
    const u = users.get(t) ?? [];
    let ok = depth < 64 && (u.length > 0 || outputs.has(t));
    for (const n of u) {
      if (!ok) break;
      // No value of t flows on where only its shape is read, or where an RoI op reads t as boxes
      // (it samples input 0 there): a two-stage detector's RPN convs feed fc6 only that way.
      if (isStandard(n) && (SHAPE_ONLY.has(n.op) || (ROI_OPS.has(n.op) && n.inputs[0] !== t))) {
        continue;
      }
      if ((WEIGHTED.has(n.op) && !expectations.has(n)) || !isStandard(n)) ok = false;
      else ok = n.outputs.every((o) => !o || rawToOutputs(o, depth + 1));
    }
    memo.set(t, ok);
    return ok;
  };
  const out: Node[] = [];
  s.nodes.forEach((n, i) => {
    const [x, wName, bName] = n.inputs;
    const y = n.outputs[0];
    if (
      n.op !== "Conv" || !isStandard(n) || !x || !y || excluded(n, i, ex) || !isPointwise(n, s) ||
      expectations.has(n) ||
      (bName && !s.inits.has(bName)) || !rawToOutputs(y)
    ) {
      out.push(n);
      return;
    }
    const w = s.inits.get(wName!)!;
    const [co, ci] = w.dims as [number, number];
    const src = toFloat32(w);
    // Non-finite weights stay where the quantizer reports them, under the layer's own names.
    if (!src.every(Number.isFinite)) {
      out.push(n);
      return;
    }
    const wt = new Float32Array(ci * co);
    for (let o = 0; o < co; o++) for (let c = 0; c < ci; c++) wt[c * co + o] = src[o * ci + c]!;
    const base = n.name || `Conv#${i}`;
    const wMat = fresh(s, `${wName}_as_matmul`);
    s.inits.set(wMat, float32([ci, co], wt));
    const xLast = fresh(s, `${x}_channels_last`);
    const yLast = fresh(s, `${y}_channels_last`);
    s.aliases.set(xLast, x);
    const perm = (p: number[]) => ({ perm: { type: "ints" as const, value: p } });
    out.push({
      name: "", // unnamed like the quantizer's own nodes; the MatMul keeps the layer's name
      op: "Transpose",
      domain: "",
      inputs: [x],
      outputs: [xLast],
      attributes: perm([0, 2, 3, 1]),
    });
    out.push({
      name: n.name,
      op: "MatMul",
      domain: "",
      inputs: [xLast, wMat],
      outputs: [yLast],
      attributes: {},
    });
    // The bias goes after the transpose back: before it ORT would fuse MatMul + Add into a float Gemm.
    const yFirst = bName ? fresh(s, `${y}_without_bias`) : y;
    out.push({
      name: "",
      op: "Transpose",
      domain: "",
      inputs: [yLast],
      outputs: [yFirst],
      attributes: perm([0, 3, 1, 2]),
    });
    if (bName) {
      const b4 = fresh(s, `${bName}_per_channel`);
      s.inits.set(b4, float32([1, co, 1, 1], toFloat32(s.inits.get(bName)!)));
      out.push({
        name: "",
        op: "Add",
        domain: "",
        inputs: [yFirst, b4],
        outputs: [y],
        attributes: {},
      });
    }
    s.notes.push(
      `${base}: head 1×1 Conv → MatMul (ORT runs it int8 with a float output: MatMulIntegerToFloat)`,
    );
    // The MatMul's output, the transpose back and the conv's own output (after the bias Add).
    for (const t of [yLast, yFirst, y]) s.rawHeads.add(t);
    heads.push({ last: yLast, first: yFirst, y, channels: co, ...(bName ? { bias: bName } : {}) });
  });
  s.nodes = out;
  return heads;
}

/** Elementwise ops with no operand but scalars: they run the same on any layout. */
const LAYOUT_FREE = new Set([
  "Sigmoid",
  "Relu",
  "LeakyRelu",
  "Clip",
  "Tanh",
  "Exp",
  "HardSigmoid",
  "Identity",
  "Neg",
  "Abs",
  "Softplus",
  "Elu",
]);

/** A tensor that keeps its values channels-last, flattened to [N, L, C]. */
interface ChannelsLast {
  /** The [N, L, C] tensor. */
  rep: string;
  /** The original tensor's dims ([N, C, spatial…]). */
  dims: number[];
}

/**
 * The head MatMul's output, kept channels-last where every path from the conv's output ends in a
 * Transpose to channels-last (NanoDet: Add(bias) → Split → Sigmoid → Reshape [N, C, H·W] →
 * Transpose(0, 2, 1)): the layout round trip goes, the ops between run on a flattened
 * [N, H·W, C] tensor. The bias Add follows a Reshape, not the MatMul (ORT would fuse MatMul + Add
 * into a float Gemm before its QDQ fusion). Exact: each op moved computes the same values.
 */
function headChannelsLast(
  s: State,
  graph: Graph,
  ex: LowerOptions["exclude"],
  heads: readonly HeadMatMul[],
): void {
  let shapes: Map<string, { shape: readonly unknown[] | null }>;
  try {
    shapes = inferShapes({ ...graph, nodes: s.nodes, initializers: s.inits });
  } catch {
    return;
  }
  const dimsOf = (t: string): number[] | undefined => {
    const d = shapes.get(t)?.shape;
    return d && d.every((v) => typeof v === "number" && v > 0) ? d as number[] : undefined;
  };
  const outputs = new Set(graph.outputs.map((v) => v.name));
  // One [0, -1, C] shape per channel count.
  const flatShapes = new Map<number, string>();
  for (const h of heads) {
    const plan = planChannelsLast(s, h, { dimsOf, outputs, ex, flatShapes });
    if (!plan) continue;
    const { replaced, sinks } = plan;
    const nodes: Node[] = [];
    s.nodes.forEach((n, i) => {
      if (!replaced.has(i)) nodes.push(n);
      else nodes.push(...replaced.get(i)!);
    });
    // A sink whose channels-last tensor nothing else reads renames it; otherwise a Reshape (or an
    // Identity) gives the Transpose's output.
    const uses = new Map<string, number>();
    for (const n of nodes) for (const t of n.inputs) uses.set(t, (uses.get(t) ?? 0) + 1);
    for (const k of sinks) uses.set(k.rep, (uses.get(k.rep) ?? 0) + 1);
    const renamed = new Map<string, string>();
    const added = new Map<string, Node>(); // sink output → node, placed at the sink
    for (const k of sinks) {
      const same = k.repDims.length === k.dims.length &&
        k.repDims.every((d, j) => d === k.dims[j]);
      if (same && uses.get(k.rep) === 1) {
        renamed.set(k.rep, k.out);
        s.aliases.delete(k.rep);
        continue;
      }
      const inputs = [k.rep];
      if (!same) {
        const shape = fresh(s, `${k.out}_shape`);
        s.inits.set(shape, int64([k.dims.length], k.dims));
        inputs.push(shape);
      }
      added.set(k.out, {
        name: "",
        op: same ? "Identity" : "Reshape",
        domain: "",
        inputs,
        outputs: [k.out],
        attributes: {},
      });
    }
    s.nodes = nodes.flatMap((n) => {
      if (n.op === "__sink") return added.has(n.outputs[0]!) ? [added.get(n.outputs[0]!)!] : [];
      const outs = n.outputs.map((t) => renamed.get(t) ?? t);
      return [outs.some((t, j) => t !== n.outputs[j]) ? { ...n, outputs: outs } : n];
    });
    s.notes.push(
      `${h.y}: kept channels-last through ${plan.moved.join(", ")} to ${sinks.length} ` +
        `Transpose(s) that it cancels`,
    );
  }
}

/** The rewrite of one head's consumers to channels-last, or undefined when one is not exact. */
function planChannelsLast(
  s: State,
  h: HeadMatMul,
  { dimsOf, outputs, ex, flatShapes }: {
    dimsOf: (t: string) => number[] | undefined;
    outputs: ReadonlySet<string>;
    ex: LowerOptions["exclude"];
    flatShapes: Map<number, string>;
  },
):
  | {
    replaced: Map<number, Node[]>;
    sinks: { rep: string; repDims: number[]; out: string; dims: number[] }[];
    moved: string[];
  }
  | undefined {
  const yDims = dimsOf(h.y);
  if (!yDims || yDims.length !== 4 || yDims[1] !== h.channels || outputs.has(h.y)) return undefined;
  const { users, producer } = wiring(s.nodes);
  const ti = producer.get(h.first), yi = producer.get(h.y);
  if (ti === undefined || yi === undefined) return undefined;
  const planned = new Map<string, ChannelsLast>();
  const flat = (d: readonly number[]) => [d[0]!, sizeOfRest(d.slice(1)), d[1]!];
  const replaced = new Map<number, Node[]>();
  const sinks: { rep: string; repDims: number[]; out: string; dims: number[] }[] = [];
  const moved: string[] = [];
  const repOf = (t: string, dims: number[]): string => {
    const rep = fresh(s, `${t}_nhwc`);
    planned.set(t, { rep, dims });
    return rep;
  };
  const handled = new Set<number>([ti, yi]);
  // MatMul [N, H, W, C] → Reshape [N, H·W, C] → Add(bias [C]).
  const flatShape = flatShapes.get(h.channels) ?? fresh(s, `head_flat_c${h.channels}`);
  const yRep = repOf(h.y, yDims);
  if (h.bias) {
    const pre = fresh(s, `${h.y}_nhwc_without_bias`);
    replaced.set(ti, [reshape(h.last, flatShape, pre)]);
    replaced.set(yi, [{ ...s.nodes[yi]!, inputs: [pre, h.bias], outputs: [yRep] }]);
  } else {
    replaced.set(ti, [reshape(h.last, flatShape, yRep)]);
  }
  const scalarInit = (t: string) => {
    const c = s.inits.get(t);
    return !!c && c.data.length === 1 && c.dims.length <= 1;
  };
  for (let i = yi + 1; i < s.nodes.length; i++) {
    const n = s.nodes[i]!;
    const ins = n.inputs.filter((t) => planned.has(t));
    if (ins.length === 0) continue;
    if (!isStandard(n) || excluded(n, i, ex)) return undefined;
    // Operands other than channels-last tensors must be constants.
    if (n.inputs.some((t) => t && !planned.has(t) && !s.inits.has(t))) return undefined;
    const x = n.inputs[0] ?? "";
    const px = planned.get(x);
    const r = px?.dims.length ?? 0;
    const axis = (a: number) => (a < 0 ? a + r : a);
    const label = n.name || `${n.op}#${i}`;
    handled.add(i);
    if (LAYOUT_FREE.has(n.op) && px && n.inputs.slice(1).every((t) => !t || scalarInit(t))) {
      const y = n.outputs[0]!;
      replaced.set(i, [{
        ...n,
        inputs: [px.rep, ...n.inputs.slice(1)],
        outputs: [repOf(y, px.dims)],
      }]);
    } else if (AFFINE.has(n.op) && n.inputs.length === 2 && ins.length === 1) {
      // x ∘ c with c constant per channel (or scalar): c as a [C] vector broadcasts channels-last.
      const j = planned.has(n.inputs[0]!) ? 0 : 1;
      const p = planned.get(n.inputs[j]!)!;
      const c = s.inits.get(n.inputs[1 - j]!)!;
      const rank = p.dims.length;
      if (c.dtype !== "float32" || c.dims.length > rank) return undefined;
      const cd = [...Array(rank - c.dims.length).fill(1), ...c.dims] as number[];
      if (cd.some((d, k) => k !== 1 && d !== 1) || (cd[1] !== 1 && cd[1] !== p.dims[1])) {
        return undefined;
      }
      const cName = fresh(s, `${n.inputs[1 - j]}_nhwc`);
      s.inits.set(cName, float32([cd[1]!], toFloat32(c)));
      const inputs = [...n.inputs];
      inputs[j] = p.rep;
      inputs[1 - j] = cName;
      replaced.set(i, [{ ...n, inputs, outputs: [repOf(n.outputs[0]!, p.dims)] }]);
    } else if (n.op === "Split" && px && ins.length === 1 && axis(attrInt(n, "axis", 0)) === 1) {
      const outs: string[] = [];
      for (const o of n.outputs) {
        const d = dimsOf(o);
        if (!d || d.length !== r || d.some((v, k) => k !== 1 && v !== px.dims[k])) return undefined;
        outs.push(repOf(o, d));
      }
      const attributes = { ...n.attributes, axis: { type: "int" as const, value: 2 } };
      replaced.set(i, [{
        ...n,
        inputs: [px.rep, ...n.inputs.slice(1)],
        attributes,
        outputs: outs,
      }]);
    } else if (n.op === "Concat" && ins.length === n.inputs.length && px) {
      // Every input channels-last, joined on the channel axis, with the same spatial size.
      const ps = n.inputs.map((t) => planned.get(t)!);
      const d = dimsOf(n.outputs[0]!);
      if (
        axis(attrInt(n, "axis", 0)) !== 1 || !d || d.length !== r ||
        ps.some((p) => p.dims.length !== r || p.dims.some((v, k) => k !== 1 && v !== d[k]))
      ) {
        return undefined;
      }
      const attributes = { ...n.attributes, axis: { type: "int" as const, value: 2 } };
      replaced.set(i, [{
        ...n,
        inputs: ps.map((p) => p.rep),
        attributes,
        outputs: [repOf(n.outputs[0]!, d)],
      }]);
    } else if (n.op === "Reshape" && px && n.inputs[0] === x && ins.length === 1) {
      // [N, C, spatial…] → [N, C, spatial′…]: the same [N, L, C] channels-last.
      const d = dimsOf(n.outputs[0]!);
      if (!d || d.length < 2 || d[0] !== px.dims[0] || d[1] !== px.dims[1]) return undefined;
      planned.set(n.outputs[0]!, { rep: px.rep, dims: d });
      replaced.set(i, []);
    } else if (n.op === "Transpose" && px && r >= 3) {
      // To [N, spatial…, C]: the channels-last values themselves.
      const perm = attrInts(n, "perm");
      const want = [0, ...Array.from({ length: r - 2 }, (_, k) => k + 2), 1];
      if (!perm || perm.length !== r || perm.some((v, k) => v !== want[k])) return undefined;
      const out = n.outputs[0]!;
      sinks.push({ rep: px.rep, repDims: flat(px.dims), out, dims: want.map((k) => px.dims[k]!) });
      // Placeholder where the sink's node (if any) goes.
      replaced.set(i, [{
        name: "",
        op: "__sink",
        domain: "",
        inputs: [],
        outputs: [out],
        attributes: {},
      }]);
      continue;
    } else return undefined;
    moved.push(label);
  }
  // Every reader of a channels-last tensor was rewritten, and none of them is a graph output.
  for (const t of planned.keys()) {
    if (outputs.has(t)) return undefined;
    if ((users.get(t) ?? []).some((u) => !handled.has(u))) return undefined;
  }
  if (sinks.length === 0) return undefined;
  s.inits.set(flatShape, int64([3], [0, -1, h.channels]));
  flatShapes.set(h.channels, flatShape);
  // A Reshape's output shares its input's channels-last tensor: that one aliases the first.
  const aliased = new Set<string>();
  for (const [t, p] of planned) {
    if (!aliased.has(p.rep)) s.aliases.set(p.rep, t);
    aliased.add(p.rep);
  }
  return { replaced, sinks, moved };
}

/** An unnamed Reshape, as the quantizer's own Q/DQ nodes: a name would only repeat the output's. */
function reshape(x: string, shape: string, y: string): Node {
  return node({ name: "", op: "Reshape", inputs: [x, shape], outputs: [y] });
}

function sizeOfRest(dims: readonly number[]): number {
  return dims.slice(1).reduce((a, b) => a * b, 1);
}

function isPointwise(n: Node, s: State): boolean {
  const w = n.inputs[1] ? s.inits.get(n.inputs[1]) : undefined;
  const b = n.inputs[2] ? s.inits.get(n.inputs[2]) : undefined;
  return !!w && w.dtype === "float32" && w.dims.length === 4 && w.dims[2] === 1 &&
    w.dims[3] === 1 && attrInt(n, "group", 1) === 1 &&
    (attrInts(n, "strides") ?? []).every((v) => v === 1) &&
    (attrInts(n, "pads") ?? []).every((v) => v === 0) &&
    attrString(n, "auto_pad", "NOTSET") === "NOTSET" && (!n.inputs[2] || b?.dtype === "float32");
}

/** x's producer chain up to a Conv through single-consumer channelwise-uniform unary ops. */
function permutableChain(
  s: State,
  x: string,
  producer: Map<string, number>,
  users: Map<string, number[]>,
  outputs: Set<string>,
): { conv: number } | undefined {
  let t = x;
  for (;;) {
    if (outputs.has(t) || (users.get(t)?.length ?? 0) !== 1) return undefined;
    const p = producer.get(t);
    if (p === undefined) return undefined;
    const n = s.nodes[p]!;
    if (!isStandard(n)) return undefined;
    if (n.op === "Conv" && attrInt(n, "group", 1) === 1 && s.inits.has(n.inputs[1] ?? "")) {
      return { conv: p };
    }
    if (!SINKABLE.has(n.op) || n.inputs.slice(1).some((c) => c && !s.inits.has(c))) {
      return undefined;
    }
    if (n.op === "Clip" || n.op === "LeakyRelu") {
      // Scalar parameters only: a per-channel one would need permuting too.
      if (n.inputs.slice(1).some((c) => c && s.inits.get(c)!.dims.some((d) => d !== 1))) {
        return undefined;
      }
    }
    t = n.inputs[0]!;
  }
}

/**
 * Rewrites a float graph into an equivalent one whose int8 form onnxruntime runs on fast kernels
 * (see the module doc for the rewrites). Excluded nodes are left alone.
 *
 * @param graph The float graph (weights as initializers).
 * @param options Exclusions (as checked by the quantizer's options).
 * @returns The graph, the aliases of new tensors to original ones, and notes.
 *
 * @example An RGB stem conv reads its input padded to 4 channels
 * ```ts
 * import { lowerForOrt } from "@clipq/quantize/ops/lower";
 * import { ModelBuilder } from "@clipq/onnx/builder";
 * import assert from "node:assert/strict";
 * const b = new ModelBuilder({ seed: 1 });
 * b.output(b.conv(b.input("x", [1, 3, 8, 8]), { outChannels: 8, kernel: 3, pad: 1 }), "y");
 * const { graph, aliases } = lowerForOrt(b.build());
 * assert.deepEqual(graph.nodes.map((n) => n.op), ["Pad", "Conv"]);
 * assert.equal(aliases.get(graph.nodes[1]!.inputs[0]!), "x");
 * ```
 */
export function lowerForOrt(graph: Graph, options: LowerOptions = {}): Lowered {
  const s: State = {
    nodes: [...graph.nodes],
    inits: new Map(graph.initializers),
    aliases: new Map(),
    affine: new Map(),
    notes: [],
    used: new Set(),
    rawHeads: new Set(),
  };
  for (const n of graph.nodes) {
    s.used.add(n.name);
    for (const t of [...n.inputs, ...n.outputs]) if (t) s.used.add(t);
  }
  for (const k of graph.initializers.keys()) s.used.add(k);
  for (const v of [...graph.inputs, ...graph.outputs, ...graph.valueInfo]) s.used.add(v.name);
  const ex = options.exclude;
  foldAffineIntoConvs(s, graph, ex);
  hardSigmoidIntoConv(s, graph, ex);
  poolBeforeActivation(s, graph, ex);
  padInputChannels(s, graph, ex);
  padAxesToFullRank(s, graph);
  resizeAxesToFullRank(s, graph);
  resizeNearest(s, graph, ex);
  convTransposeToConv(s, ex);
  if (s.nodes.some(isDcr)) sinkDepthToSpace(s, graph, ex);
  if (options.head === "auto") {
    const heads = headConvsToMatMul(s, graph, ex);
    if (heads.length > 0) headChannelsLast(s, graph, ex, heads);
  }
  if (s.notes.length === 0) {
    return { graph, aliases: s.aliases, affine: s.affine, notes: [], rawHeads: s.rawHeads };
  }
  // Rewrites stack (a sunk activation's output aliases a lowered conv's): resolve to originals,
  // composing the affine maps met on the way.
  for (const [t, from] of s.aliases) {
    let o = from;
    let { scale, offset } = s.affine.get(t) ?? { scale: 1, offset: 0 };
    for (let k = 0; s.aliases.has(o) && k < s.aliases.size; k++) {
      const f = s.affine.get(o);
      // t = o·scale + offset and o = o'·f.scale + f.offset.
      if (f) [scale, offset] = [scale * f.scale, f.offset * scale + offset];
      o = s.aliases.get(o)!;
    }
    s.aliases.set(t, o);
    if (scale !== 1 || offset !== 0) s.affine.set(t, { scale, offset });
  }
  // Initializers the rewrites replaced (or made and replaced again); unread ones of the input
  // graph that no rewrite touched stay as they were.
  const readBy = (nodes: readonly Node[]) => {
    const read = new Set<string>(graph.outputs.map((v) => v.name));
    for (const n of nodes) for (const t of n.inputs) read.add(t);
    for (const v of graph.inputs) read.add(v.name);
    return read;
  };
  const before = readBy(graph.nodes), after = readBy(s.nodes);
  for (const k of [...s.inits.keys()]) {
    if (!after.has(k) && (before.has(k) || !graph.initializers.has(k))) s.inits.delete(k);
  }
  return {
    graph: { ...graph, nodes: s.nodes, initializers: s.inits },
    aliases: s.aliases,
    affine: s.affine,
    notes: s.notes,
    rawHeads: s.rawHeads,
  };
}
