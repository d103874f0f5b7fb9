/**
 * Structural check of a graph between pipeline steps: every node input is produced by a node, an
 * initializer or a graph input; every tensor has one producer; graph outputs exist.
 *
 * @module
 */
import type { Graph } from "@clipq/onnx";
import { ModelError } from "@clipq/onnx/errors";

/**
 * Throws a ModelError naming the node and tensor when the graph is not well formed.
 *
 * @param graph The graph.
 * @param what What the graph is, for messages.
 */
export function checkGraph(graph: Graph, what: string): void {
  const known = new Set<string>([...graph.initializers.keys(), ...graph.inputs.map((i) => i.name)]);
  for (const n of graph.nodes) {
    for (const out of n.outputs) {
      if (out === "") continue;
      if (known.has(out) && !graph.inputs.some((i) => i.name === out)) {
        throw new ModelError(
          `${what}: node "${n.name}" (${n.op}) writes tensor "${out}" that has another producer`,
        );
      }
      known.add(out);
    }
  }
  for (const n of graph.nodes) {
    for (const inp of n.inputs) {
      if (inp !== "" && !known.has(inp)) {
        throw new ModelError(
          `${what}: node "${n.name}" (${n.op}) reads tensor "${inp}" that nothing produces`,
        );
      }
    }
  }
  for (const o of graph.outputs) {
    if (!known.has(o.name)) {
      throw new ModelError(`${what}: graph output "${o.name}" is not produced`);
    }
  }
}
