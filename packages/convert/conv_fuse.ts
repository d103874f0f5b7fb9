/**
 * Folds what exporters leave beside convolutions back into them: a zero constant Pad of the
 * spatial axes before a Conv becomes the Conv's pads, and a per-channel constant Add after a Conv
 * becomes its bias. Graphs converted from TensorFlow (via onnx-tf or tfjs) keep both apart, which
 * would leave an Add between Conv and its activation and stop int8 Conv+activation fusion. A −∞
 * Pad before a MaxPool (TensorFlow's SAME pooling) becomes the MaxPool's pads.
 *
 * @module
 */
import { consumers, type Graph, type Node, producers } from "@clipq/onnx/graph";
import { type Tensor, toFloat64 } from "@clipq/onnx/tensor";
import { fromNumbers } from "./const_fold.ts";

function constant(graph: Graph, name: string | undefined): Tensor | undefined {
  return name ? graph.initializers.get(name) : undefined;
}

/**
 * TensorFlow's SAME max pooling arrives as Pad(−∞) → MaxPool: MaxPool's own pads are −∞, so the
 * spatial pads move into it (when each is below the kernel size, as ONNX requires). The separate Pad
 * ran in float even in int8 models (ORT has no int8 Pad) and cut ORT's NCHWc float chain too.
 */
function padIntoMaxPool(
  g: Graph,
  pool: Node,
  single: (name: string) => boolean,
): Graph | undefined {
  const pad = producers(g).get(pool.inputs[0]!);
  if (!pad || pad.op !== "Pad" || pad.domain || !single(pad.outputs[0]!) || pad.inputs[3]) {
    return undefined;
  }
  const mode = pad.attributes.mode;
  if (mode && !(mode.type === "string" && mode.value === "constant")) return undefined;
  const value = constant(g, pad.inputs[2]);
  const pads = constant(g, pad.inputs[1]);
  if (!value || !pads || !toFloat64(value).every((v) => v === -Infinity)) return undefined;
  const kernel = pool.attributes.kernel_shape;
  const autoPad = pool.attributes.auto_pad;
  if (
    kernel?.type !== "ints" ||
    (autoPad && !(autoPad.type === "string" && autoPad.value === "NOTSET"))
  ) {
    return undefined;
  }
  const p = [...toFloat64(pads)];
  const r = p.length / 2;
  const s = kernel.value.length;
  if (r !== s + 2 || p[0] !== 0 || p[1] !== 0 || p[r] !== 0 || p[r + 1] !== 0) return undefined;
  const old = pool.attributes.pads?.type === "ints"
    ? pool.attributes.pads.value
    : new Array(2 * s).fill(0);
  const merged = Array.from(
    { length: 2 * s },
    (_, i) => old[i]! + p[i < s ? i + 2 : r + 2 + (i - s)]!,
  );
  if (merged.some((v, i) => v < 0 || v >= kernel.value[i % s]!)) return undefined;
  const fused: Node = {
    ...pool,
    inputs: [pad.inputs[0]!],
    attributes: { ...pool.attributes, pads: { type: "ints", value: merged } },
  };
  return { ...g, nodes: g.nodes.filter((n) => n !== pad).map((n) => (n === pool ? fused : n)) };
}

/**
 * Merges Pad→Conv and Conv→Add(per-channel constant) into the Conv, and Pad(−∞)→MaxPool into the
 * MaxPool.
 *
 * @param graph The graph.
 * @returns An equivalent graph with fewer nodes.
 *
 * @example A bias Add folds into the Conv
 * ```ts
 * import { fuseConvPadBias } from "@clipq/convert/conv-fuse";
 * import { emptyGraph, node } from "@clipq/onnx/graph";
 * import { float32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({
 *   inputs: [{ name: "x", dtype: "float32", shape: [1, 1, 3, 3] }],
 *   outputs: [{ name: "z", dtype: "float32" }],
 *   initializers: new Map([["w", float32([2, 1, 1, 1], [1, 2])], ["b", float32([1, 2, 1, 1], [5, 6])]]),
 *   nodes: [
 *     node({ name: "c", op: "Conv", inputs: ["x", "w"], outputs: ["y"] }),
 *     node({ name: "a", op: "Add", inputs: ["y", "b"], outputs: ["z"] }),
 *   ],
 * });
 * const out = fuseConvPadBias(g);
 * assert.equal(out.nodes.length, 1);
 * assert.deepEqual([...out.initializers.get(out.nodes[0]!.inputs[2]!)!.data], [5, 6]);
 * ```
 */
export function fuseConvPadBias(graph: Graph): Graph {
  let g = graph;
  for (let changed = true; changed;) {
    changed = false;
    const prod = producers(g);
    const cons = consumers(g);
    const outputs = new Set(g.outputs.map((o) => o.name));
    const single = (name: string) => (cons.get(name)?.length ?? 0) === 1 && !outputs.has(name);
    for (const conv of g.nodes) {
      if (conv.op === "MaxPool" && !conv.domain) {
        const fused = padIntoMaxPool(g, conv, single);
        if (fused) {
          g = fused;
          changed = true;
          break;
        }
        continue;
      }
      if (conv.op !== "Conv" || conv.domain) continue;
      const w = constant(g, conv.inputs[1]);
      if (!w) continue;
      const rank = w.dims.length;
      // Pad → Conv
      const pad = prod.get(conv.inputs[0]!);
      if (pad && pad.op === "Pad" && !pad.domain && single(pad.outputs[0]!)) {
        const mode = pad.attributes.mode;
        const pads = constant(g, pad.inputs[1]);
        const value = constant(g, pad.inputs[2]);
        const autoPad = conv.attributes.auto_pad;
        const zero = !value || toFloat64(value).every((v) => v === 0);
        if (
          pads && zero && !pad.inputs[3] &&
          (!mode || (mode.type === "string" && mode.value === "constant")) &&
          (!autoPad || (autoPad.type === "string" && autoPad.value === "NOTSET"))
        ) {
          const p = [...toFloat64(pads)];
          const r = p.length / 2;
          if (
            r === rank && p[0] === 0 && p[1] === 0 && p[r] === 0 && p[r + 1] === 0 &&
            p.every((v) => v >= 0)
          ) {
            const s = rank - 2;
            const old = conv.attributes.pads?.type === "ints"
              ? conv.attributes.pads.value
              : new Array(2 * s).fill(0);
            const merged = Array.from(
              { length: 2 * s },
              (_, i) => old[i]! + p[i < s ? i + 2 : r + 2 + (i - s)]!,
            );
            const fused: Node = {
              ...conv,
              inputs: [pad.inputs[0]!, ...conv.inputs.slice(1)],
              attributes: { ...conv.attributes, pads: { type: "ints", value: merged } },
            };
            g = {
              ...g,
              nodes: g.nodes.filter((n) => n !== pad).map((n) => (n === conv ? fused : n)),
            };
            changed = true;
            break;
          }
        }
      }
      // Conv → Add(constant per channel)
      const y = conv.outputs[0]!;
      const add = cons.get(y)?.[0];
      if (!add || add.op !== "Add" || add.domain || !single(y)) continue;
      const other = add.inputs[0] === y ? add.inputs[1] : add.inputs[0];
      const c = constant(g, other);
      const outC = w.dims[0]!;
      if (!c || c.dtype !== "float32") continue;
      const dims = c.dims;
      const perChannel = (dims.length === rank - 1 && dims[0] === outC && dims.slice(1).every((d) =>
        d === 1
      )) ||
        (dims.length === rank && dims[0] === 1 && dims[1] === outC &&
          dims.slice(2).every((d) => d === 1));
      const scalar = dims.every((d) => d === 1);
      if (!perChannel && !scalar) continue;
      const cv = toFloat64(c);
      const oldBias = constant(g, conv.inputs[2]);
      if (conv.inputs[2] && !oldBias) continue;
      const ob = oldBias ? toFloat64(oldBias) : new Float64Array(outC);
      const bias = Array.from({ length: outC }, (_, i) => ob[i]! + (scalar ? cv[0]! : cv[i]!));
      const biasName = `${conv.name}_bias`;
      const inits = new Map(g.initializers);
      let name = biasName;
      for (let k = 1; inits.has(name); k++) name = `${biasName}_${k}`;
      inits.set(name, fromNumbers("float32", [outC], bias));
      const fused: Node = {
        ...conv,
        inputs: [conv.inputs[0]!, conv.inputs[1]!, name],
        outputs: [add.outputs[0]!],
      };
      g = {
        ...g,
        nodes: g.nodes.filter((n) => n !== add).map((n) => (n === conv ? fused : n)),
        initializers: inits,
      };
      changed = true;
      break;
    }
  }
  const read = new Set(g.nodes.flatMap((n) => n.inputs));
  const outputs = new Set(g.outputs.map((o) => o.name));
  const inits = new Map([...g.initializers].filter(([k]) => read.has(k) || outputs.has(k)));
  return { ...g, initializers: inits };
}
