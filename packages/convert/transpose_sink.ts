/**
 * Transpose sinking and cancellation. Importing an NHWC graph wraps every layout-specific op
 * (Conv, pooling, Resize) in NHWC→NCHW and NCHW→NHWC transposes; this pass pushes transposes down
 * through layout-agnostic ops (elementwise, Pad, Concat, Split, reductions with kept dims), merges
 * consecutive transposes and drops identities, so the pairs around each conv cancel and transposes
 * stay only at the graph's boundaries.
 *
 * @module
 */
import { consumers, freshName, type Graph, type Node, producers } from "@clipq/onnx/graph";
import { type Tensor, toFloat64 } from "@clipq/onnx/tensor";
import { fromNumbers, permute } from "./const_fold.ts";

const UNARY = new Set([
  "Relu",
  "LeakyRelu",
  "Sigmoid",
  "Tanh",
  "Clip",
  "Elu",
  "Exp",
  "Log",
  "Sqrt",
  "Reciprocal",
  "Neg",
  "Abs",
  "Cast",
  "HardSigmoid",
  "HardSwish",
  "Softplus",
  "Identity",
  "Erf",
  "PRelu",
]);
const BROADCAST = new Set(["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum"]);

function permOf(n: Node): number[] {
  const a = n.attributes.perm;
  return a?.type === "ints" ? [...a.value] : [];
}

function isIdentity(p: readonly number[]): boolean {
  return p.every((v, i) => v === i);
}

function inverse(p: readonly number[]): number[] {
  const inv = new Array<number>(p.length);
  p.forEach((v, i) => (inv[v] = i));
  return inv;
}

/** Options of {@linkcode sinkTransposes}. */
export interface SinkOptions {
  /** Upper bound on rewrites (guards against pathological graphs). */
  maxRewrites?: number;
}

/**
 * Pushes Transpose nodes through layout-agnostic ops and cancels inverse pairs.
 *
 * @param graph The graph (semantics are preserved exactly).
 * @param options Limits.
 * @returns A graph with fewer transposes.
 *
 * @example Two inverse transposes cancel
 * ```ts
 * import { sinkTransposes } from "@clipq/convert/transpose-sink";
 * import { emptyGraph, node } from "@clipq/onnx/graph";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({
 *   inputs: [{ name: "x", dtype: "float32", shape: [1, 2, 3, 4] }],
 *   outputs: [{ name: "z", dtype: "float32" }],
 *   nodes: [
 *     node({ name: "t1", op: "Transpose", inputs: ["x"], outputs: ["y"], attributes: { perm: { type: "ints", value: [0, 2, 3, 1] } } }),
 *     node({ name: "r", op: "Relu", inputs: ["y"], outputs: ["r"] }),
 *     node({ name: "t2", op: "Transpose", inputs: ["r"], outputs: ["z"], attributes: { perm: { type: "ints", value: [0, 3, 1, 2] } } }),
 *   ],
 * });
 * const out = sinkTransposes(g);
 * assert.equal(out.nodes.filter((n) => n.op === "Transpose").length, 0);
 * ```
 */
export function sinkTransposes(graph: Graph, options: SinkOptions = {}): Graph {
  let nodes = [...graph.nodes];
  const inits = new Map(graph.initializers);
  const graphOutputs = new Set(graph.outputs.map((o) => o.name));
  const taken = new Set<string>();
  const fresh = (base: string) => freshName({ ...graph, nodes }, base, taken);
  const limit = options.maxRewrites ?? 100_000;
  let rewrites = 0;

  const rename = (from: string, to: string) => {
    nodes = nodes.map((n) =>
      n.inputs.includes(from) ? { ...n, inputs: n.inputs.map((i) => (i === from ? to : i)) } : n
    );
  };

  const step = (): boolean => {
    const prod = producers({ ...graph, nodes });
    const cons = consumers({ ...graph, nodes });
    const used = (name: string) => (cons.get(name)?.length ?? 0) > 0 || graphOutputs.has(name);
    for (const t of nodes) {
      if (t.op !== "Transpose" || t.domain) continue;
      const perm = permOf(t);
      const x = t.inputs[0]!;
      const y = t.outputs[0]!;
      // Dead transposes go.
      if (!used(y)) {
        nodes = nodes.filter((n) => n !== t);
        return true;
      }
      // Constant inputs fold.
      const c = inits.get(x);
      if (c && perm.length === c.dims.length) {
        const name = fresh(`${y}_const`);
        inits.set(name, permute(c, perm));
        nodes = nodes.filter((n) => n !== t);
        if (graphOutputs.has(y)) {
          nodes.push({
            name: t.name,
            op: "Identity",
            domain: "",
            inputs: [name],
            outputs: [y],
            attributes: {},
          });
        } else rename(y, name);
        return true;
      }
      // Identity perms vanish; one that names a graph output hands the name to its producer.
      if (isIdentity(perm)) {
        if (!graphOutputs.has(y)) {
          nodes = nodes.filter((n) => n !== t);
          rename(y, x);
          return true;
        }
        const p = prod.get(x);
        if (p && !graphOutputs.has(x) && (cons.get(x)?.length ?? 0) === 1) {
          nodes = nodes.filter((n) => n !== t).map((n) =>
            n === p ? { ...n, outputs: n.outputs.map((o) => (o === x ? y : o)) } : n
          );
          return true;
        }
      }
      // Transpose of a transpose composes.
      const up = prod.get(x);
      if (up && up.op === "Transpose" && !up.domain) {
        const p = permOf(up);
        const composed = perm.map((q) => p[q]!);
        const i = nodes.indexOf(t);
        nodes[i] = {
          ...t,
          inputs: [up.inputs[0]!],
          attributes: { perm: { type: "ints", value: composed } },
        };
        return true;
      }
      // Push into every consumer when all of them can take it.
      const readers = cons.get(y) ?? [];
      if (graphOutputs.has(y) || readers.length === 0) continue;
      const plans = readers.map((r) => planPush(r, perm, prod, inits));
      if (plans.some((p) => p === undefined)) continue;
      readers.forEach((r, k) => applyPush(r, plans[k]!, perm));
      return true;
    }
    return false;
  };

  type Plan = { inputs: string[]; attributes: Node["attributes"]; newInits: [string, Tensor][] };

  function planPush(
    r: Node,
    perm: readonly number[],
    prod: Map<string, Node>,
    consts: Map<string, Tensor>,
  ): Plan | undefined {
    if (r.domain) return undefined;
    const rank = perm.length;
    const inv = inverse(perm);
    const fromSamePerm = (name: string): string | undefined => {
      const p = prod.get(name);
      if (p && p.op === "Transpose" && !p.domain) {
        const q = permOf(p);
        if (q.length === rank && q.every((v, i) => v === perm[i])) return p.inputs[0]!;
      }
      return undefined;
    };
    const newInits: [string, Tensor][] = [];
    if (UNARY.has(r.op)) {
      const x = fromSamePerm(r.inputs[0]!);
      if (!x) return undefined;
      if (r.op === "PRelu") {
        const slope = r.inputs[1] ? consts.get(r.inputs[1]) : undefined;
        if (!slope) return undefined;
        const moved = moveConst(slope, rank, inv);
        const name = fresh(`${r.inputs[1]}_t`);
        newInits.push([name, moved]);
        return { inputs: [x, name], attributes: r.attributes, newInits };
      }
      return { inputs: [x, ...r.inputs.slice(1)], attributes: r.attributes, newInits };
    }
    if (BROADCAST.has(r.op)) {
      const inputs: string[] = [];
      for (const i of r.inputs) {
        const x = fromSamePerm(i);
        if (x) {
          inputs.push(x);
          continue;
        }
        const c = consts.get(i);
        if (!c || c.dims.length > rank) return undefined;
        if (c.dims.every((d) => d === 1)) {
          inputs.push(i);
          continue;
        }
        const name = fresh(`${i}_t`);
        newInits.push([name, moveConst(c, rank, inv)]);
        inputs.push(name);
      }
      return { inputs, attributes: r.attributes, newInits };
    }
    if (r.op === "Concat") {
      const inputs: string[] = [];
      for (const i of r.inputs) {
        const x = fromSamePerm(i);
        if (x) inputs.push(x);
        else {
          const c = consts.get(i);
          if (!c || c.dims.length !== rank) return undefined;
          const name = fresh(`${i}_t`);
          newInits.push([name, permute(c, inv)]);
          inputs.push(name);
        }
      }
      const axis = norm(r.attributes.axis, rank);
      if (axis === undefined) return undefined;
      return {
        inputs,
        attributes: { ...r.attributes, axis: { type: "int", value: perm[axis]! } },
        newInits,
      };
    }
    if (r.op === "Split" || r.op === "Softmax" || r.op === "LogSoftmax") {
      const x = fromSamePerm(r.inputs[0]!);
      if (!x) return undefined;
      const axis = norm(
        r.attributes.axis ?? { type: "int", value: r.op === "Split" ? 0 : -1 },
        rank,
      );
      if (axis === undefined) return undefined;
      return {
        inputs: [x, ...r.inputs.slice(1)],
        attributes: { ...r.attributes, axis: { type: "int", value: perm[axis]! } },
        newInits,
      };
    }
    if (r.op === "Pad") {
      const x = fromSamePerm(r.inputs[0]!);
      const pads = r.inputs[1] ? consts.get(r.inputs[1]) : undefined;
      if (!x || !pads || pads.dims[0] !== 2 * rank || r.inputs[3]) return undefined;
      const p = toFloat64(pads);
      const moved = new Array<number>(2 * rank);
      for (let i = 0; i < rank; i++) {
        moved[perm[i]!] = p[i]!;
        moved[rank + perm[i]!] = p[rank + i]!;
      }
      const name = fresh(`${r.inputs[1]}_t`);
      newInits.push([name, fromNumbers("int64", [2 * rank], moved)]);
      return { inputs: [x, name, ...r.inputs.slice(2)], attributes: r.attributes, newInits };
    }
    if (r.op === "ReduceMean" || r.op === "ReduceMax" || r.op === "ReduceMin") {
      const x = fromSamePerm(r.inputs[0]!);
      const keep = r.attributes.keepdims;
      const axes = r.attributes.axes;
      if (
        !x || (keep?.type === "int" && keep.value === 0) || axes?.type !== "ints" || r.inputs[1]
      ) {
        return undefined;
      }
      return {
        inputs: [x],
        attributes: {
          ...r.attributes,
          axes: { type: "ints", value: axes.value.map((a) => perm[a < 0 ? a + rank : a]!) },
        },
        newInits,
      };
    }
    return undefined;
  }

  function applyPush(r: Node, plan: Plan, perm: readonly number[]): void {
    for (const [k, v] of plan.newInits) inits.set(k, v);
    const outs = r.outputs.map((o) => (o ? fresh(`${o}_nt`) : o));
    const moved: Node = { ...r, inputs: plan.inputs, outputs: outs, attributes: plan.attributes };
    const after: Node[] = r.outputs.flatMap((o, k) =>
      o
        ? [
          {
            name: fresh(`${o}_transpose`),
            op: "Transpose",
            domain: "",
            inputs: [outs[k]!],
            outputs: [o],
            attributes: { perm: { type: "ints", value: [...perm] } },
          } satisfies Node,
        ]
        : []
    );
    const i = nodes.indexOf(r);
    nodes.splice(i, 1, moved, ...after);
    rewrites++;
  }

  while (rewrites < limit && step()) rewrites++;
  // Drop initializers nothing reads any more (folded constants replaced by their transposes).
  const read = new Set(nodes.flatMap((n) => n.inputs));
  for (const k of [...inits.keys()]) if (!read.has(k) && !graphOutputs.has(k)) inits.delete(k);
  return { ...graph, nodes, initializers: inits };
}

function norm(a: Node["attributes"][string] | undefined, rank: number): number | undefined {
  if (a?.type !== "int") return undefined;
  return a.value < 0 ? a.value + rank : a.value;
}

/** Rewrites a constant c broadcast against T_p(x) into c' with T_p(c') = c (expanded to full rank). */
function moveConst(c: Tensor, rank: number, inv: readonly number[]): Tensor {
  const dims = [...new Array(rank - c.dims.length).fill(1), ...c.dims];
  return permute({ ...c, dims }, inv);
}
