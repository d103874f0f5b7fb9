/**
 * The sampling calibration graph: the float model plus, for each tapped tensor, nodes that reduce
 * it inside onnxruntime to its exact min and max and a fixed, seeded sample of its values.
 * Shipping every tapped tensor out whole is what made calibration cost several times plain
 * inference: onnxruntime kept hundreds of large tensors alive to the end of the run (so nothing
 * stayed in cache), then JavaScript read every element. Tensors that are a monotone elementwise
 * function of another tapped tensor, directly or through untapped such steps, need no nodes at all
 * (see _derive.ts).
 *
 * Per tapped tensor t of shape [batch, …] (P values per item):
 *   flat = Flatten(t, axis 0)                        [1, batch·P]
 *   lo = ReduceMin(flat), hi = ReduceMax(flat)        [1, 1] each: exact, over every value
 *   sample = Slice(flat, start o, step k)             [1, batch·P/k] (or flat itself when P ≤ S)
 * and lo, hi and sample are graph outputs (packing them with one Concat cost more than the outputs
 * themselves: a copy of every sample and a slow many-input kernel). The step k is the
 * largest divisor of P that keeps at least S values per item, so every item is sampled at the same
 * positions o, o + k, … whatever the batch size or the item's place in it: shards merge exactly.
 * A strided Slice and whole-tensor reductions are the cheapest forms onnxruntime offers (a Gather
 * of scattered positions cost about three times as much per value, reductions along one axis twice
 * as much).
 *
 * Node order matters for speed: onnxruntime's default execution order is a depth-first walk back
 * from the graph's leaves that visits a node's inputs highest node index first. The groups are
 * therefore written in reverse order (the first tapped tensor's nodes get the highest indices), and
 * the model is pruned to what the tapped tensors need so that they are the only leaves (an
 * onnxruntime-inserted layout node feeding a graph output could otherwise come first): the walk
 * then computes each tensor's reductions right after the tensor, while it is still in cache, and
 * its buffer is reused as in plain inference.
 *
 * @module
 */
import { type Graph, type Node, node, opsetOf, tensor } from "@clipq/onnx";
import { inferShapes, type ShapeInfo } from "@clipq/onnx/shapes";
import { compose, type Derivation, derivation } from "./_derive.ts";
import { mulberry32 } from "@clipq/onnx/random";

/** One sampled tensor and the outputs that carry it. */
export interface SampledTensor {
  /** The tensor. */
  name: string;
  /** Output holding its min ([1, 1]). */
  min: string;
  /** Output holding its max ([1, 1]). */
  max: string;
  /** Output holding its sample ([1, items · sampled]). */
  sample: string;
  /** Values per item (the product of the non-batch dims). */
  population: number;
  /** Sampled values per item (all of them when `population` ≤ the sample size). */
  sampled: number;
}

/** The calibration graph and how to read it. */
export interface SamplingPlan {
  /** The graph to run. */
  graph: Graph;
  /** Sampled tensors. */
  tensors: SampledTensor[];
  /**
   * Tensors computed from a sampled (or derived) tensor by a monotone elementwise function: read
   * off it, in this order (each one's source comes earlier). Same positions, so same counts.
   */
  derived: (Derivation & { name: string; population: number; sampled: number })[];
  /** Tensors fetched whole as extra outputs (unknown shape, non-float32, no batch axis). */
  whole: string[];
}

/** Symbol standing for the batch dimension during shape inference. */
const BATCH = "clipq.calibration.batch";

/** 32-bit FNV-1a of a string: the sample positions of a tensor depend only on its name. */
function hash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/**
 * The sampling step: the largest divisor k of `population` with population / k ≥ `samples`
 * (1, i.e. every value, when there is none above 1).
 *
 * @param population Values per item.
 * @param samples Values wanted per item.
 * @returns The step.
 */
export function sampleStep(population: number, samples: number): number {
  for (let k = Math.floor(population / samples); k > 1; k--) {
    if (population % k === 0) return k;
  }
  return 1;
}

/** The ancestors of `wanted` (nodes in graph order); undefined when a node has subgraphs. */
function needed(graph: Graph, wanted: readonly string[]): Node[] | undefined {
  const producer = new Map<string, number>();
  graph.nodes.forEach((n, i) => {
    for (const o of n.outputs) if (o) producer.set(o, i);
  });
  // A subgraph may read outer tensors its node does not list as inputs: keep such models whole.
  if (
    graph.nodes.some((n) =>
      Object.values(n.attributes).some((a) => a.type === "graph" || a.type === "graphs")
    )
  ) return undefined;
  const keep = new Set<number>();
  const stack = [...wanted];
  while (stack.length > 0) {
    const i = producer.get(stack.pop()!);
    if (i === undefined || keep.has(i)) continue;
    keep.add(i);
    for (const x of graph.nodes[i]!.inputs) if (x) stack.push(x);
  }
  return graph.nodes.filter((_, i) => keep.has(i));
}

/**
 * Builds the sampling calibration graph for inputs of the given dims.
 *
 * @param graph The float model.
 * @param options Tensors to tap (not graph inputs), values per item to sample, seed, and the dims
 *   of the feeds (the first dim of each is the batch).
 * @returns The graph and which outputs carry each tensor.
 */
export function samplingPlan(
  graph: Graph,
  options: {
    tensors: readonly string[];
    samples: number;
    seed: number;
    inputDims: Readonly<Record<string, readonly number[]>>;
  },
): SamplingPlan {
  const inputShapes: Record<string, (number | string)[]> = {};
  for (const v of graph.inputs) {
    const dims = options.inputDims[v.name];
    if (!dims) continue;
    // A declared fixed batch stays a number; otherwise the batch is symbolic so that tensors whose
    // first dim follows it are told apart from those that merely have the same size.
    const fixed = typeof v.shape?.[0] === "number";
    inputShapes[v.name] = dims.map((d, i) => (i === 0 && !fixed && dims.length > 1 ? BATCH : d));
  }
  let shapes: ReadonlyMap<string, ShapeInfo>;
  try {
    shapes = inferShapes(graph, { inputShapes });
  } catch {
    shapes = new Map();
  }
  const first = graph.inputs.find((i) => inputShapes[i.name]);
  const batch = first ? inputShapes[first.name]![0] : undefined;
  const opset = opsetOf(graph) ?? 13;
  const packed: { name: string; population: number; sampled: number; step: number }[] = [];
  const derived: SamplingPlan["derived"] = [];
  const whole: string[] = [];
  // In graph order, so that a derivation's source is classified before it.
  const order = new Map<string, number>();
  graph.nodes.forEach((n, i) => n.outputs.forEach((o) => o && order.set(o, i)));
  const made = new Map(graph.nodes.flatMap((n) => n.outputs.map((o) => [o, n] as const)));
  const tapped = [...options.tensors].sort((x, y) => (order.get(x) ?? -1) - (order.get(y) ?? -1));
  const readable = new Map<string, number>();
  const sameShape = (x: string, y: string) =>
    JSON.stringify(shapes.get(x)?.shape) === JSON.stringify(shapes.get(y)?.shape);
  // How t follows from a readable tensor of its shape, through untapped monotone steps if need be.
  const derive = (t: string, depth = 0): Derivation | undefined => {
    const producer = made.get(t);
    const d = producer && depth < 8 ? derivation(graph, producer, opset) : undefined;
    if (!d || !sameShape(d.from, t)) return undefined;
    if (readable.has(d.from)) return d;
    const inner = derive(d.from, depth + 1);
    return inner && compose(inner, d);
  };
  for (const t of tapped) {
    const s = shapes.get(t);
    const dims = s?.shape;
    const ok = s?.dtype === "float32" && dims && dims.length >= 2 && dims[0] === batch &&
      dims.slice(1).every((d) => typeof d === "number" && d > 0);
    if (!ok) {
      whole.push(t);
      continue;
    }
    const population = (dims.slice(1) as number[]).reduce((a, b) => a * b, 1);
    const step = sampleStep(population, options.samples);
    // Slice takes a step only from opset 10: older models get their larger tensors whole.
    if (step > 1 && opset < 10) {
      whole.push(t);
      continue;
    }
    const d = derive(t);
    if (d) {
      derived.push({ ...d, name: t, population, sampled: readable.get(d.from)! });
      readable.set(t, readable.get(d.from)!);
      continue;
    }
    packed.push({ name: t, population, sampled: population / step, step });
    readable.set(t, population / step);
  }
  const kept = needed(graph, [...packed.map((p) => p.name), ...whole]);
  const live = new Set(kept?.flatMap((n) => [...n.inputs, ...n.outputs]));
  const base: Graph = kept
    ? { ...graph, nodes: kept, valueInfo: graph.valueInfo.filter((v) => live.has(v.name)) }
    : graph;
  if (packed.length === 0) {
    return {
      graph: { ...base, outputs: whole.map((name) => ({ name })) },
      tensors: [],
      derived: [],
      whole,
    };
  }
  const taken = new Set<string>();
  for (const n of graph.nodes) {
    taken.add(n.name);
    for (const x of [...n.inputs, ...n.outputs]) taken.add(x);
  }
  for (const k of graph.initializers.keys()) taken.add(k);
  for (const v of graph.inputs) taken.add(v.name);
  const fresh = (b: string): string => {
    let name = b;
    for (let i = 1; taken.has(name); i++) name = `${b}_${i}`;
    taken.add(name);
    return name;
  };
  const initializers = new Map(graph.initializers);
  const constant = (name: string, value: number | bigint): string => {
    const n = fresh(name);
    initializers.set(n, tensor("int64", [1], [BigInt(value)]));
    return n;
  };
  const axis1 = constant("clipq.calibration.axis1", 1);
  const end = constant("clipq.calibration.end", Number.MAX_SAFE_INTEGER);
  const reduce = (op: string, x: string, y: string): Node =>
    node({
      name: y,
      op,
      inputs: [x],
      outputs: [y],
      attributes: { keepdims: { type: "int", value: 1 } },
    });
  const groups: Node[][] = [];
  const sampled: SampledTensor[] = [];
  for (const p of packed) {
    const flat = fresh(`${p.name}.calibration.flat`);
    const lo = fresh(`${p.name}.calibration.min`);
    const hi = fresh(`${p.name}.calibration.max`);
    const group = [
      node({
        name: flat,
        op: "Flatten",
        inputs: [p.name],
        outputs: [flat],
        attributes: { axis: { type: "int", value: 0 } },
      }),
      reduce("ReduceMin", flat, lo),
      reduce("ReduceMax", flat, hi),
    ];
    let sample = flat;
    if (p.step > 1) {
      sample = fresh(`${p.name}.calibration.sample`);
      // The offset depends on the size, not the name: tensors derived from this one (same size)
      // are read at the same positions.
      const start = Math.floor(mulberry32(hash(String(p.population)) ^ options.seed)() * p.step);
      group.push(node({
        name: sample,
        op: "Slice",
        inputs: [
          flat,
          constant(`${p.name}.calibration.start`, start),
          end,
          axis1,
          constant(`${p.name}.calibration.step`, p.step),
        ],
        outputs: [sample],
      }));
    }
    groups.push(group);
    sampled.push({
      name: p.name,
      min: lo,
      max: hi,
      sample,
      population: p.population,
      sampled: p.sampled,
    });
  }
  const outputs = sampled.flatMap((t) => [t.min, t.max, t.sample]);
  return {
    graph: {
      ...base,
      nodes: [...base.nodes, ...groups.reverse().flat()],
      initializers,
      outputs: [
        ...outputs.map((name) => ({ name, dtype: "float32" as const })),
        ...whole.map((name) => ({ name })),
      ],
    },
    tensors: sampled,
    derived,
    whole,
  };
}
