/**
 * Topological sort of a graph's nodes (Kahn's algorithm, stable: among nodes that are ready, the one
 * that came first keeps coming first, so an already sorted graph is unchanged).
 *
 * @module
 */
import { ModelError } from "./errors.ts";
import type { Graph, Node } from "./graph.ts";

/**
 * Names a node reads from its enclosing scope through subgraph attributes (If/Loop/Scan bodies):
 * tensors a subgraph uses that it neither produces nor declares. A node depends on them as on its
 * inputs.
 *
 * @param node The node.
 * @returns Outer-scope tensor names, in first-use order.
 *
 * @example Usage
 * ```ts
 * import { implicitInputs } from "@clipq/onnx/toposort";
 * import { emptyGraph, node } from "@clipq/onnx/graph";
 * import assert from "node:assert/strict";
 * const body = emptyGraph({
 *   nodes: [node({ name: "a", op: "Relu", inputs: ["outer"], outputs: ["y"] })],
 *   outputs: [{ name: "y" }],
 * });
 * const n = node({ name: "if", op: "If", inputs: ["c"], outputs: ["z"], attributes: {
 *   then_branch: { type: "graph", value: body }, else_branch: { type: "graph", value: body } } });
 * assert.deepEqual(implicitInputs(n), ["outer"]);
 * ```
 */
export function implicitInputs(node: Node): string[] {
  const found = new Set<string>();
  const visit = (g: Graph): void => {
    const local = new Set<string>([...g.initializers.keys(), ...g.inputs.map((v) => v.name)]);
    for (const n of g.nodes) for (const o of n.outputs) if (o) local.add(o);
    const use = (name: string): void => {
      if (name && !local.has(name)) found.add(name);
    };
    for (const n of g.nodes) {
      for (const i of n.inputs) use(i);
      for (const i of implicitInputs(n)) use(i);
    }
    for (const o of g.outputs) use(o.name);
  };
  for (const a of Object.values(node.attributes)) {
    if (a.type === "graph") visit(a.value);
    else if (a.type === "graphs") a.value.forEach(visit);
  }
  return [...found];
}

/** Min-heap of node indices, so the ready node that came first is taken first. */
class IndexHeap {
  readonly #items: number[] = [];
  get size(): number {
    return this.#items.length;
  }
  push(v: number): void {
    const a = this.#items;
    a.push(v);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (a[p]! <= v) break;
      a[i] = a[p]!;
      i = p;
    }
    a[i] = v;
  }
  pop(): number {
    const a = this.#items;
    const top = a[0]!;
    const last = a.pop()!;
    if (a.length) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= a.length) break;
        const r = l + 1;
        const c = r < a.length && a[r]! < a[l]! ? r : l;
        if (a[c]! >= last) break;
        a[i] = a[c]!;
        i = c;
      }
      a[i] = last;
    }
    return top;
  }
}

function describeCycle(
  nodes: readonly Node[],
  left: Set<number>,
  producer: Map<string, number>,
): string {
  // Walk predecessors inside the leftover set until a node repeats: that loop is a cycle.
  const deps = (i: number): number[] => {
    const n = nodes[i]!;
    return [...n.inputs, ...implicitInputs(n)]
      .map((t) => producer.get(t))
      .filter((p): p is number => p !== undefined && left.has(p));
  };
  const start = Math.min(...left);
  const seen = new Map<number, number>();
  const path: number[] = [];
  let at = start;
  while (!seen.has(at)) {
    seen.set(at, path.length);
    path.push(at);
    const next = deps(at)[0];
    if (next === undefined) break;
    at = next;
  }
  const cycle = seen.has(at) ? path.slice(seen.get(at)!) : path;
  const label = (i: number): string => `"${nodes[i]!.name || `#${i}`}" (${nodes[i]!.op})`;
  return cycle.reverse().map(label).join(" → ");
}

/**
 * Orders the nodes so every node comes after the producers of its inputs (and of the outer-scope
 * tensors its subgraphs read). Stable: an already sorted graph keeps its order.
 *
 * @param graph The graph.
 * @returns A new graph with sorted nodes (subgraphs are not reordered).
 * @throws {ModelError} When the graph has a cycle, naming the nodes on it.
 *
 * @example Sorting two swapped nodes
 * ```ts
 * import { toposort } from "@clipq/onnx/toposort";
 * import { emptyGraph, node } from "@clipq/onnx/graph";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({ nodes: [
 *   node({ name: "b", op: "Relu", inputs: ["t"], outputs: ["y"] }),
 *   node({ name: "a", op: "Relu", inputs: ["x"], outputs: ["t"] }),
 * ] });
 * assert.deepEqual(toposort(g).nodes.map((n) => n.name), ["a", "b"]);
 * ```
 */
export function toposort(graph: Graph): Graph {
  const nodes = graph.nodes;
  const producer = new Map<string, number>();
  nodes.forEach((n, i) => {
    for (const o of n.outputs) if (o && !producer.has(o)) producer.set(o, i);
  });
  const waiting = new Array<number>(nodes.length).fill(0);
  const dependents: number[][] = nodes.map(() => []);
  nodes.forEach((n, i) => {
    const preds = new Set<number>();
    for (const t of [...n.inputs, ...implicitInputs(n)]) {
      const p = producer.get(t);
      if (p !== undefined) preds.add(p);
    }
    waiting[i] = preds.size;
    for (const p of preds) dependents[p]!.push(i);
  });
  const ready = new IndexHeap();
  waiting.forEach((w, i) => {
    if (w === 0) ready.push(i);
  });
  const order: Node[] = [];
  const done = new Set<number>();
  while (ready.size) {
    const i = ready.pop();
    order.push(nodes[i]!);
    done.add(i);
    for (const d of dependents[i]!) if (--waiting[d]! === 0) ready.push(d);
  }
  if (order.length !== nodes.length) {
    const left = new Set<number>();
    nodes.forEach((_, i) => {
      if (!done.has(i)) left.add(i);
    });
    throw new ModelError(
      `Expected an acyclic graph but graph "${graph.name}" has a cycle through nodes ${
        describeCycle(nodes, left, producer)
      } (${left.size} nodes cannot be ordered)`,
    );
  }
  return { ...graph, nodes: order };
}
