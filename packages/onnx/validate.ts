/**
 * Structural checks of a Graph: what a model must satisfy before clipq rewrites or runs it. Every
 * problem is reported as a {@linkcode ModelError} naming the node and tensor.
 *
 * @module
 */
import { ModelError } from "./errors.ts";
import type { Graph, Node } from "./graph.ts";
import { BYTES_PER_ELEMENT, type DType, ONNX_DTYPE_CODES, sizeOf, type Tensor } from "./tensor.ts";
import { toposort } from "./toposort.ts";

/** Options of {@linkcode validate}. */
export interface ValidateOptions {
  /** Names visible from an enclosing graph (for subgraphs). */
  outerScope?: Iterable<string>;
  /** How many problems to list in the error message at most. */
  maxProblems?: number;
}

/** Defaults of {@linkcode ValidateOptions}. */
export const validateDefaults = {
  outerScope: [] as Iterable<string>,
  maxProblems: 10,
} satisfies Required<ValidateOptions>;

const TYPED_ARRAY_OF: Record<Exclude<DType, "string">, string> = {
  float32: "Float32Array",
  uint8: "Uint8Array",
  int8: "Int8Array",
  uint16: "Uint16Array",
  int16: "Int16Array",
  int32: "Int32Array",
  int64: "BigInt64Array",
  bool: "Uint8Array",
  float16: "Uint16Array",
  float64: "Float64Array",
  uint32: "Uint32Array",
  uint64: "BigUint64Array",
  complex64: "Float32Array",
  complex128: "Float64Array",
  bfloat16: "Uint16Array",
};

function label(n: Node, i: number): string {
  return `node "${n.name || `#${i}`}" (${n.op || "?"})`;
}

/**
 * Problems of one tensor: unknown dtype, bad dims, storage of the wrong kind or size.
 *
 * @param t The tensor.
 * @param what How to name it in the message.
 * @returns The problems (empty when fine).
 */
function tensorProblems(t: Tensor, what: string): string[] {
  if (!Object.hasOwn(ONNX_DTYPE_CODES, t.dtype)) {
    return [`${what}: expected an ONNX element type but found "${String(t.dtype)}"`];
  }
  if (!t.dims.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    return [`${what}: expected non-negative integer dims but found [${t.dims.join(", ")}]`];
  }
  const n = sizeOf(t.dims);
  if (t.dtype === "string") {
    if (!Array.isArray(t.data) || t.data.length !== n) {
      return [
        `${what}: expected ${n} strings for dims [${t.dims.join(", ")}] but found ${
          Array.isArray(t.data) ? t.data.length : t.data?.constructor?.name
        }`,
      ];
    }
    return [];
  }
  const kind = TYPED_ARRAY_OF[t.dtype];
  const actual = (t.data as { constructor?: { name?: string } } | undefined)?.constructor?.name;
  if (actual !== kind) {
    return [`${what}: expected ${t.dtype} data in a ${kind} but found ${actual ?? "nothing"}`];
  }
  const bytes = n * BYTES_PER_ELEMENT[t.dtype];
  const found = (t.data as Exclude<Tensor["data"], string[]>).byteLength;
  if (found !== bytes) {
    return [
      `${what}: expected ${bytes} bytes for ${t.dtype} [${
        t.dims.join(", ")
      }] but found ${found} (${t.data.length} elements)`,
    ];
  }
  return [];
}

/** Ops with a sliding window: its strides, dilations, kernel, pads and group must make sense. */
const WINDOWED = new Set([
  "Conv",
  "ConvTranspose",
  "ConvInteger",
  "QLinearConv",
  "MaxPool",
  "AveragePool",
  "LpPool",
]);

/**
 * A stride, dilation, kernel size or group below 1, or a negative pad: shape inference divided by
 * it (strides [0, 0] ended in "Infinity cannot be converted to a BigInt" and a stack trace).
 */
function windowProblems(n: Node, where: string): string[] {
  const problems: string[] = [];
  for (
    const [key, least] of [["strides", 1], ["dilations", 1], ["kernel_shape", 1], [
      "pads",
      0,
    ]] as const
  ) {
    const a = n.attributes[key];
    if (a?.type !== "ints") continue;
    const bad = a.value.find((v) => !(Number(v) >= least));
    if (bad !== undefined) {
      problems.push(
        `${where}: expected ${key} of at least ${least} but found [${a.value.join(", ")}]`,
      );
    }
  }
  const group = n.attributes.group;
  if (group?.type === "int" && !(Number(group.value) >= 1)) {
    problems.push(`${where}: expected group of at least 1 but found ${group.value}`);
  }
  return problems;
}

function graphProblems(graph: Graph, outer: ReadonlySet<string>, where: string): string[] {
  const problems: string[] = [];
  const inGraph = where ? ` in ${where}` : "";
  const defined = new Map<string, string>();
  const define = (name: string, by: string): void => {
    const before = defined.get(name);
    if (before) {
      problems.push(`tensor "${name}"${inGraph} has two producers: ${before} and ${by}`);
    } else defined.set(name, by);
  };
  for (const v of graph.inputs) {
    if (v.dtype !== undefined && !Object.hasOwn(ONNX_DTYPE_CODES, v.dtype)) {
      problems.push(`graph input "${v.name}"${inGraph}: unknown element type "${v.dtype}"`);
    }
    define(v.name, `graph input "${v.name}"`);
  }
  for (const [name, t] of graph.initializers) {
    problems.push(...tensorProblems(t, `initializer "${name}"${inGraph}`));
    // An initializer may also be listed as a graph input (a default value that can be overridden).
    if (!graph.inputs.some((v) => v.name === name)) define(name, `initializer "${name}"`);
  }
  graph.nodes.forEach((n, i) => {
    if (!n.op) problems.push(`${label(n, i)}${inGraph}: expected an op type but found ""`);
    for (const o of n.outputs) if (o) define(o, label(n, i));
  });
  const visible = (name: string): boolean => defined.has(name) || outer.has(name);
  graph.nodes.forEach((n, i) => {
    for (const input of n.inputs) {
      if (input && !visible(input)) {
        problems.push(
          `${label(n, i)}${inGraph}: input "${input}" has no producer, initializer or graph input`,
        );
      }
    }
    if (WINDOWED.has(n.op)) problems.push(...windowProblems(n, `${label(n, i)}${inGraph}`));
    for (const [key, a] of Object.entries(n.attributes)) {
      const what = `${label(n, i)}${inGraph} attribute "${key}"`;
      if (a.type === "tensor") problems.push(...tensorProblems(a.value, what));
      if (a.type === "tensors") {
        a.value.forEach((t, k) => problems.push(...tensorProblems(t, `${what}[${k}]`)));
      }
      const subgraphs = a.type === "graph" ? [a.value] : a.type === "graphs" ? a.value : [];
      if (subgraphs.length === 0) continue;
      // Built only for a subgraph: for every attribute it was most of validation's time (PP-OCRv4
      // det: 78 of 100 ms, twice per run).
      const scope = new Set([...outer, ...defined.keys()]);
      subgraphs.forEach((g, k) => {
        const sub = `${label(n, i)} attribute "${key}"${a.type === "graphs" ? `[${k}]` : ""}`;
        problems.push(...graphProblems(g, scope, sub));
      });
    }
  });
  for (const v of graph.outputs) {
    if (!visible(v.name)) {
      problems.push(`graph output "${v.name}"${inGraph} has no producer`);
    }
    if (v.dtype !== undefined && !Object.hasOwn(ONNX_DTYPE_CODES, v.dtype)) {
      problems.push(`graph output "${v.name}"${inGraph}: unknown element type "${v.dtype}"`);
    }
  }
  for (const v of graph.valueInfo) {
    if (v.dtype !== undefined && !Object.hasOwn(ONNX_DTYPE_CODES, v.dtype)) {
      problems.push(`value_info "${v.name}"${inGraph}: unknown element type "${v.dtype}"`);
    }
  }
  try {
    toposort(graph);
  } catch (e) {
    if (!(e instanceof ModelError)) throw e;
    problems.push(where ? `${e.message} (in ${where})` : e.message);
  }
  return problems;
}

/**
 * Checks a graph: no cycles; every node input produced by a node, an initializer, a graph input or
 * an enclosing graph; no tensor with two producers; known element types; initializer storage that
 * matches dtype and dims; graph outputs that something produces; subgraphs likewise, with the
 * outer scope's names visible. Node names may repeat; node order does not matter (normalize sorts).
 *
 * @param graph The graph.
 * @param options Outer scope names, how many problems to list.
 * @returns The graph, unchanged, for chaining.
 * @throws {ModelError} Listing the problems found, each naming its node and tensor.
 *
 * @example A dangling input
 * ```ts
 * import { validate } from "@clipq/onnx/validate";
 * import { emptyGraph, node } from "@clipq/onnx/graph";
 * import { ModelError } from "@clipq/onnx/errors";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({
 *   nodes: [node({ name: "r", op: "Relu", inputs: ["x"], outputs: ["y"] })],
 *   outputs: [{ name: "y" }],
 * });
 * assert.throws(() => validate(g), (e) => e instanceof ModelError && /node "r".*"x"/.test(e.message));
 * ```
 */
export function validate(graph: Graph, options: ValidateOptions = {}): Graph {
  const o = { ...validateDefaults, ...options };
  const problems = graphProblems(graph, new Set(o.outerScope), "");
  if (problems.length) {
    const shown = problems.slice(0, o.maxProblems);
    const more = problems.length > shown.length
      ? `\n… and ${problems.length - shown.length} more`
      : "";
    throw new ModelError(
      problems.length === 1
        ? `Invalid model "${graph.name}": ${shown[0]}`
        // The first problem on the first line: CLIs print only that line.
        : `Invalid model "${graph.name}" (${problems.length} problems): ${shown.join("\n")}${more}`,
    );
  }
  return graph;
}
