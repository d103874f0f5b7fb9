/**
 * The Graph IR. A Graph is a plain, immutable-by-convention record: rewrites build a new Graph
 * (sharing what they do not change) instead of mutating. It keeps everything clipq does not
 * understand (doc strings, metadata, value_info, functions, unknown attribute kinds) so that a
 * decode → encode round trip loses nothing.
 *
 * @module
 */
import type { DType, Tensor } from "./tensor.ts";

/** A node attribute, tagged by kind. Integers are JavaScript numbers (int64 beyond 2^53 saturate). */
export type Attribute =
  | { readonly type: "float"; readonly value: number }
  | { readonly type: "int"; readonly value: number }
  | { readonly type: "string"; readonly value: string }
  | { readonly type: "tensor"; readonly value: Tensor }
  | { readonly type: "graph"; readonly value: Graph }
  | { readonly type: "floats"; readonly value: readonly number[] }
  | { readonly type: "ints"; readonly value: readonly number[] }
  | { readonly type: "strings"; readonly value: readonly string[] }
  | { readonly type: "tensors"; readonly value: readonly Tensor[] }
  | { readonly type: "graphs"; readonly value: readonly Graph[] }
  /** Kinds clipq does not interpret (sparse tensors, type protos), kept as decoded protobuf objects. */
  | { readonly type: "opaque"; readonly value: unknown };

/** A graph node. `inputs` may contain "" for an omitted optional input. */
export interface Node {
  readonly name: string;
  readonly op: string;
  /** Operator domain; "" is the default ONNX domain. */
  readonly domain: string;
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
  readonly attributes: Readonly<Record<string, Attribute>>;
  readonly docString?: string;
}

/** One dimension: a number, a symbolic name (dim_param), or null when unknown. */
export type Dim = number | string | null;

/** Name, element type and shape of a value (graph input/output or value_info). */
export interface ValueInfo {
  readonly name: string;
  /** Element type, when the value is a tensor of known type. */
  readonly dtype?: DType;
  /** Shape; undefined when the rank is unknown. */
  readonly shape?: readonly Dim[];
  readonly docString?: string;
  /** The decoded TypeProto when it is not a plain tensor type (sequence, map, optional). */
  readonly opaqueType?: unknown;
}

/** An opset import. */
export interface OpsetImport {
  readonly domain: string;
  readonly version: number;
}

/** A graph; the top-level graph also carries the model fields (opsets, metadata, producer). */
export interface Graph {
  readonly name: string;
  readonly nodes: readonly Node[];
  readonly initializers: ReadonlyMap<string, Tensor>;
  readonly inputs: readonly ValueInfo[];
  readonly outputs: readonly ValueInfo[];
  readonly valueInfo: readonly ValueInfo[];
  readonly docString?: string;
  /** Model-level: opset imports (empty in subgraphs). */
  readonly opsetImports: readonly OpsetImport[];
  /** Model-level: IR version (0 in subgraphs). */
  readonly irVersion: number;
  /** Model-level: metadata_props in order. */
  readonly metadata: ReadonlyMap<string, string>;
  readonly producerName?: string;
  readonly producerVersion?: string;
  readonly modelDomain?: string;
  readonly modelVersion?: number;
  readonly modelDocString?: string;
  /** Model-level fields clipq does not interpret (functions, training info), kept for encoding. */
  readonly opaque?: Readonly<Record<string, unknown>>;
  /** Graph-level fields clipq does not interpret (sparse initializers, quantization annotations). */
  readonly opaqueGraph?: Readonly<Record<string, unknown>>;
}

/**
 * An empty top-level graph (opset 13, IR 7) to build on.
 *
 * @param options Fields to set.
 * @returns A graph.
 *
 * @example Usage
 * ```ts
 * import { emptyGraph } from "@clipq/onnx/graph";
 * import assert from "node:assert/strict";
 * assert.equal(emptyGraph().opsetImports[0]?.version, 13);
 * ```
 */
export function emptyGraph(options: Partial<Graph> = {}): Graph {
  return {
    name: "graph",
    nodes: [],
    initializers: new Map(),
    inputs: [],
    outputs: [],
    valueInfo: [],
    opsetImports: [{ domain: "", version: 13 }],
    irVersion: 7,
    metadata: new Map(),
    ...options,
  };
}

/**
 * The opset version of a domain ("" for ONNX) imported by the graph, or undefined.
 *
 * @param graph A top-level graph.
 * @param domain The domain; "" and "ai.onnx" both mean ONNX.
 * @returns The version.
 *
 * @example Usage
 * ```ts
 * import { emptyGraph, opsetOf } from "@clipq/onnx/graph";
 * import assert from "node:assert/strict";
 * assert.equal(opsetOf(emptyGraph()), 13);
 * ```
 */
export function opsetOf(graph: Graph, domain = ""): number | undefined {
  const want = domain === "ai.onnx" ? "" : domain;
  return graph.opsetImports.find((o) => (o.domain === "ai.onnx" ? "" : o.domain) === want)
    ?.version;
}

/**
 * Map from tensor name to the node that produces it.
 *
 * @param graph The graph.
 * @returns name → node.
 *
 * @example Usage
 * ```ts
 * import { emptyGraph, producers } from "@clipq/onnx/graph";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({ nodes: [{ name: "r", op: "Relu", domain: "", inputs: ["x"], outputs: ["y"], attributes: {} }] });
 * assert.equal(producers(g).get("y")?.name, "r");
 * ```
 */
export function producers(graph: Graph): Map<string, Node> {
  const m = new Map<string, Node>();
  for (const n of graph.nodes) for (const o of n.outputs) if (o) m.set(o, n);
  return m;
}

/**
 * Map from tensor name to the nodes that read it (in node order).
 *
 * @param graph The graph.
 * @returns name → nodes.
 *
 * @example Usage
 * ```ts
 * import { consumers, emptyGraph } from "@clipq/onnx/graph";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({ nodes: [{ name: "r", op: "Relu", domain: "", inputs: ["x"], outputs: ["y"], attributes: {} }] });
 * assert.equal(consumers(g).get("x")?.[0]?.name, "r");
 * ```
 */
export function consumers(graph: Graph): Map<string, Node[]> {
  const m = new Map<string, Node[]>();
  for (const n of graph.nodes) {
    for (const i of n.inputs) {
      if (!i) continue;
      let list = m.get(i);
      if (!list) m.set(i, list = []);
      if (!list.includes(n)) list.push(n);
    }
  }
  return m;
}

/** Reads an int attribute, or the fallback. */
export function attrInt(node: Node, name: string, fallback: number): number;
/** Reads an int attribute, or undefined. */
export function attrInt(node: Node, name: string): number | undefined;
export function attrInt(node: Node, name: string, fallback?: number): number | undefined {
  const a = node.attributes[name];
  return a?.type === "int" ? a.value : fallback;
}

/** Reads a float attribute, or the fallback. */
export function attrFloat(node: Node, name: string, fallback: number): number;
/** Reads a float attribute, or undefined. */
export function attrFloat(node: Node, name: string): number | undefined;
export function attrFloat(node: Node, name: string, fallback?: number): number | undefined {
  const a = node.attributes[name];
  if (a?.type === "float" || a?.type === "int") return a.value;
  return fallback;
}

/** Reads an ints attribute, or undefined. */
export function attrInts(node: Node, name: string): readonly number[] | undefined {
  const a = node.attributes[name];
  return a?.type === "ints" ? a.value : undefined;
}

/** Reads a floats attribute, or undefined. */
export function attrFloats(node: Node, name: string): readonly number[] | undefined {
  const a = node.attributes[name];
  return a?.type === "floats" ? a.value : undefined;
}

/** Reads a string attribute, or the fallback. */
export function attrString(node: Node, name: string, fallback: string): string;
/** Reads a string attribute, or undefined. */
export function attrString(node: Node, name: string): string | undefined;
export function attrString(node: Node, name: string, fallback?: string): string | undefined {
  const a = node.attributes[name];
  return a?.type === "string" ? a.value : fallback;
}

/**
 * Builds a Node with defaults (domain "", no attributes).
 *
 * @param fields Node fields.
 * @returns The node.
 *
 * @example Usage
 * ```ts
 * import { node } from "@clipq/onnx/graph";
 * import assert from "node:assert/strict";
 * assert.equal(node({ name: "n", op: "Relu", inputs: ["x"], outputs: ["y"] }).domain, "");
 * ```
 */
export function node(
  fields: Pick<Node, "name" | "op" | "inputs" | "outputs"> & Partial<Node>,
): Node {
  return { domain: "", attributes: {}, ...fields };
}

const seeded = new WeakSet<Set<string>>();

/**
 * A name not yet used by any tensor or node in the graph, derived from `base`. Pass the same
 * `taken` set to successive calls to get distinct names without rescanning the graph.
 *
 * @param graph The graph.
 * @param base Preferred name.
 * @param taken Extra names to avoid (updated with the result).
 * @returns A fresh name.
 *
 * @example Usage
 * ```ts
 * import { emptyGraph, freshName } from "@clipq/onnx/graph";
 * import assert from "node:assert/strict";
 * assert.equal(freshName(emptyGraph(), "x"), "x");
 * ```
 */
export function freshName(graph: Graph, base: string, taken?: Set<string>): string {
  const used = taken ?? new Set<string>();
  // A caller's set is seeded with the graph's names once, whatever it already holds.
  if (!taken || !seeded.has(taken)) {
    if (taken) seeded.add(taken);
    for (const n of graph.nodes) {
      used.add(n.name);
      for (const o of n.outputs) used.add(o);
      for (const i of n.inputs) used.add(i);
    }
    for (const k of graph.initializers.keys()) used.add(k);
    for (const v of graph.inputs) used.add(v.name);
  }
  let name = base;
  for (let i = 1; used.has(name); i++) name = `${base}_${i}`;
  used.add(name);
  return name;
}
