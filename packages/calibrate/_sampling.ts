/**
 * The sampling calibration graph: the float model plus, for each tapped tensor, nodes that reduce
 * it inside onnxruntime to its exact min and max and a fixed, seeded sample of its values.
 * Shipping every tapped tensor out whole is what made calibration cost several times plain
 * inference: onnxruntime kept hundreds of large tensors alive to the end of the run (so nothing
 * stayed in cache), then JavaScript read every element. Tensors that are a monotone elementwise
 * function of another tapped tensor, directly or through untapped such steps, need no nodes at all
 * (see _derive.ts). So does a LeakyRelu's input, read off the activation's output, which is tapped
 * in its place when only the input was asked for: the quantizer asks for both (onnxruntime runs
 * the int8 LeakyRelu apart from the conv), and a tapped conv output kept onnxruntime from fusing
 * the conv with its LeakyRelu in the calibration graph, which then ran the activation and two
 * layout reorders per layer (runs over plain inference: YOLOv3-tiny 1.14 → 1.10×, NanoDet
 * 1.14 → 1.13×, same process, medians of 12).
 *
 * Per tapped tensor t of shape [batch, …] (P values per item, S wanted), when P ≥ 2S:
 *   flat = Flatten(t, axis 1)                        [batch, P] (rank 2: t itself)
 *   lo = ReduceMin(flat), hi = ReduceMax(flat)        [1, 1] each: exact, over every value
 *   sample = Slice(flat, axis 1, start o, step k)     [batch, ⌈(P − o)/k⌉]
 * and lo, hi and sample are graph outputs (packing them with one Concat cost more than the outputs
 * themselves: a copy of every sample and a slow many-input kernel; one Concat of the minima and one
 * of the maxima broke the execution order below). The step k is the largest that keeps at least S
 * values per item, and every item is sampled at the same positions o, o + k, … whatever the batch
 * size or the item's place in it: shards merge exactly. When P < 2S (k would be 1) the tensor
 * itself is the sample and its min and max are read off it in JavaScript (one ReduceMax node still
 * reads it, only to keep the order below). Whole-tensor reductions and a strided Slice are the
 * cheapest forms onnxruntime offers (a Gather of scattered positions cost about three times as
 * much per value, reductions along one axis twice as much). Session creation grows with the nodes
 * added, and a node reading a model tensor costs more than one reading an added node's output: on
 * PP-OCRv4 det, the reductions reading t instead of Flatten's output took 73 instead of 59 ms
 * (float: 37 ms; one thread), for the same run time. So each tensor gets as few nodes as it needs
 * and one reader.
 *
 * Measured and left: a Slice of whole rows (a step along every axis but the last) copies blocks
 * and cost a fifth as much per sampled value as the flat step (about 2 ns per value, a third of
 * the sampling's run time), but its samples are a few whole rows per channel: the 99.99th
 * percentile ranges of PP-OCRv4 det then missed text rows (page.png map IoU 0.957 → 0.872).
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
import { type Graph, ModelError, type Node, node, opsetOf, type Tensor, tensor } from "@clipq/onnx";
import type { Statistics } from "./statistics.ts";
import type { Histogram } from "./histogram.ts";
import { inferShapes, type ShapeInfo, valueShaped } from "@clipq/onnx/shapes";
import { compose, type Derivation, derivation, inverseDerivation } from "./_derive.ts";
import { mulberry32 } from "@clipq/onnx/random";

/** One sampled tensor and the outputs that carry it. */
export interface SampledTensor {
  /** The tensor. */
  name: string;
  /**
   * Output holding its min (one value), absent when the sample is the whole tensor (`sampled` =
   * `population`), or when the plan takes extremes from the sample (`extremes: "sample"`): min and
   * max are then the sample's own ({@linkcode extremes}), and the graph has no reductions for it.
   */
  min?: string;
  /** Output holding its max (one value), absent with `min`. */
  max?: string;
  /** Output holding its sample (items · sampled values). */
  sample: string;
  /** Values per item (the product of the non-batch dims). */
  population: number;
  /** Sampled values per item (all of them when `population` ≤ the sample size). */
  sampled: number;
  /**
   * Sampled only for the tensors derived from it, not asked for itself: it has no histogram (a
   * LeakyRelu's output tapped in place of its input, see {@linkcode samplingPlan}).
   */
  internal?: boolean;
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
  /**
   * Tensors fetched whole as extra outputs (unknown shape, non-float32, no batch axis, or a length
   * that follows values: {@linkcode valueShaped}).
   */
  whole: string[];
  /** The outputs to fetch each run: every sampled tensor's min, max and sample, then `whole`. */
  fetch: string[];
}

/**
 * The min and max of values as onnxruntime's ReduceMin and ReduceMax give them: NaN when any value
 * is NaN, infinities included.
 *
 * @param values The values.
 * @returns Their min and max (NaN for none).
 */
export function extremes(values: Float32Array): { min: number; max: number } {
  let min = Infinity, max = -Infinity;
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (v < min) min = v;
    if (v > max) max = v;
    if (v !== v) return { min: NaN, max: NaN };
  }
  return values.length > 0 ? { min, max } : { min: NaN, max: NaN };
}

/** Symbol standing for the batch dimension during shape inference. */
const BATCH = "clipq.calibration.batch";

/** 32-bit FNV-1a of a string (sample offsets hash the tensor's size: equal sizes share one). */
function hash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/**
 * The sampling step: the largest k with population / k ≥ `samples` (1, i.e. every value, when
 * population < 2 · samples). Each item is sampled on its own row, so k need not divide the
 * population: a divisor, as the step once had to be, took NanoDet's 13²-multiple tensors at up
 * to 10 816 values instead of 8192, a third more histogramming for nothing.
 *
 * @param population Values per item.
 * @param samples Values wanted per item.
 * @returns The step.
 */
export function sampleStep(population: number, samples: number): number {
  return Math.max(1, Math.floor(population / samples));
}

/**
 * Values sampled per item: positions offset, offset + step, … below `population`.
 *
 * @param population Values per item.
 * @param step The sampling step ({@linkcode sampleStep}).
 * @param offset The first position ({@linkcode sampleOffset}).
 * @returns How many positions that is.
 */
export function sampleCount(population: number, step: number, offset: number): number {
  return Math.ceil((population - offset) / step);
}

/**
 * Where a tensor's sample starts: a seeded offset in [0, step) that depends on the tensor's size
 * per item, not its name, so tensors derived from one another (same size) are read at the same
 * positions, and graph inputs sampled in JavaScript at the same positions as inside onnxruntime.
 *
 * @param population Values per item.
 * @param step The sampling step ({@linkcode sampleStep}).
 * @param seed The calibration's seed.
 * @returns The offset of the first sampled value of each item.
 */
export function sampleOffset(population: number, step: number, seed: number): number {
  return Math.floor(mulberry32(hash(String(population)) ^ seed)() * step);
}

/**
 * Every `step`-th value of each item from `offset`, as the calibration graph's strided Slice takes
 * them from a tensor flattened to [batch, P]: the same positions in every item.
 *
 * @param values The values, items of `population` values one after the other.
 * @param options The item size, step and offset; `into`, a buffer of the right length to reuse.
 * @returns The sample, items one after the other.
 */
export function strided(
  values: Float32Array,
  options: { population: number; step: number; offset: number; into?: Float32Array | undefined },
): Float32Array {
  const { population, step, offset } = options;
  const items = values.length / population;
  const perItem = sampleCount(population, step, offset);
  const n = items * perItem;
  const out = options.into?.length === n ? options.into : new Float32Array(n);
  let i = 0;
  for (let item = 0; item < items; item++) {
    const end = (item + 1) * population;
    for (let j = item * population + offset; j < end; j += step) out[i++] = values[j]!;
  }
  return out;
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
    /**
     * `"exact"` (default): each sampled tensor's min and max over every value, by ReduceMin and
     * ReduceMax; `"sample"`: the sample's, for methods that read only the histogram's counts (the
     * two passes over every value cost PP-OCRv4 det 640 10 ms a run, 16 % of plain inference).
     */
    extremes?: "exact" | "sample";
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
  const packed: {
    name: string;
    rank: number;
    population: number;
    step: number;
    offset: number;
    internal?: boolean;
  }[] = [];
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
  // A tapped tensor read by an invertible LeakyRelu is read off the activation's output (see
  // inverseDerivation), which is tapped in its place when it was not asked for: left untapped,
  // the conv before the activation stays fused with it.
  const wanted = new Set(tapped);
  const inverses = new Map<string, Derivation>();
  for (const n of graph.nodes) {
    const x = n.inputs[0], d = inverseDerivation(n);
    if (d && x && wanted.has(x) && !inverses.has(x) && sameShape(x, d.from)) inverses.set(x, d);
  }
  const varying = valueShaped(graph);
  const deferred: { t: string; population: number; rank: number; step: number }[] = [];
  const pack = (t: string, rank: number, population: number, step: number, internal = false) => {
    const offset = step === 1 ? 0 : sampleOffset(population, step, options.seed);
    packed.push({ name: t, rank, population, step, offset, ...(internal ? { internal } : {}) });
    readable.set(t, sampleCount(population, step, offset));
  };
  const take = (t: string, rank: number, population: number, step: number, d?: Derivation) => {
    if (!d) return pack(t, rank, population, step);
    derived.push({ ...d, name: t, population, sampled: readable.get(d.from)! });
    readable.set(t, readable.get(d.from)!);
  };
  for (const t of tapped) {
    const s = shapes.get(t);
    const dims = s?.shape;
    const ok = s?.dtype === "float32" && dims && dims.length >= 2 && dims[0] === batch &&
      dims.slice(1).every((d) => typeof d === "number" && d > 0) && !varying.has(t);
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
    const inverse = d ? undefined : inverses.get(t);
    if (inverse && !wanted.has(inverse.from)) {
      pack(inverse.from, dims.length, population, step, true);
      take(t, dims.length, population, step, inverse);
    } else if (inverse) {
      // The activation's output comes later in graph order: decided once that one is.
      deferred.push({ t, population, rank: dims.length, step });
    } else take(t, dims.length, population, step, d);
  }
  for (const { t, rank, population, step } of deferred) {
    const d = inverses.get(t)!;
    take(t, rank, population, step, readable.has(d.from) ? d : undefined);
  }
  const kept = needed(graph, [...packed.map((p) => p.name), ...whole]);
  const live = new Set(kept?.flatMap((n) => [...n.inputs, ...n.outputs]));
  // Initializers only the pruned nodes read go too (onnxruntime warned of each one it removed).
  for (const v of graph.inputs) live.add(v.name);
  const base: Graph = kept
    ? {
      ...graph,
      nodes: kept,
      valueInfo: graph.valueInfo.filter((v) => live.has(v.name)),
      initializers: new Map([...graph.initializers].filter(([name]) => live.has(name))),
    }
    : graph;
  if (packed.length === 0) {
    return {
      graph: { ...base, outputs: whole.map((name) => ({ name })) },
      tensors: [],
      derived: [],
      whole,
      fetch: whole,
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
  const initializers = new Map(base.initializers);
  // Slice parameters are shared by value.
  const shared = new Map<string, string>();
  const ints = (what: string, values: readonly number[]): string => {
    const key = `${what}:${values.join(",")}`;
    let n = shared.get(key);
    if (!n) {
      n = fresh(`clipq.calibration.${what}.${values.join("_")}`);
      initializers.set(n, tensor("int64", [values.length], values.map(BigInt)));
      shared.set(key, n);
    }
    return n;
  };
  // Whole-tensor reductions: no axes, so the batch is reduced too and the result has one value.
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
  const anchors: string[] = [];
  for (const p of packed) {
    if (p.step === 1) {
      // The tensor itself is the sample, and its min and max are read off it in JavaScript (small
      // tensors, mostly: each node added costs about 0.1 ms of session creation in PP-OCRv4 det).
      // One node still reads it, only to anchor the execution order: a tensor that onnxruntime
      // computes in its NCHWc layout gets a ReorderOutput for its graph-output use, and that node,
      // if nothing read it, would be a leaf of the newest index, which the walk visits first:
      // the whole model up to this tensor would run before any reduction (twice the run time).
      const anchor = fresh(`${p.name}.calibration.anchor`);
      groups.push([reduce("ReduceMax", p.name, anchor)]);
      anchors.push(anchor);
      sampled.push({
        name: p.name,
        sample: p.name,
        population: p.population,
        sampled: p.population,
        ...(p.internal ? { internal: true } : {}),
      });
      continue;
    }
    const exact = options.extremes !== "sample";
    const lo = exact ? fresh(`${p.name}.calibration.min`) : undefined;
    const hi = exact ? fresh(`${p.name}.calibration.max`) : undefined;
    // [batch, P] is read as it is, higher ranks flattened to it (the same positions per item),
    // and only the Flatten reads the model's tensor (see the module doc).
    let x = p.name;
    const group: Node[] = [];
    if (p.rank > 2) {
      x = fresh(`${p.name}.calibration.flat`);
      group.push(node({
        name: x,
        op: "Flatten",
        inputs: [p.name],
        outputs: [x],
        attributes: { axis: { type: "int", value: 1 } },
      }));
    }
    if (lo && hi) group.push(reduce("ReduceMin", x, lo), reduce("ReduceMax", x, hi));
    const sample = fresh(`${p.name}.calibration.sample`);
    group.push(node({
      name: sample,
      op: "Slice",
      inputs: [
        x,
        ints("start", [p.offset]),
        ints("end", [Number.MAX_SAFE_INTEGER]),
        ints("axis", [1]),
        ints("step", [p.step]),
      ],
      outputs: [sample],
    }));
    groups.push(group);
    sampled.push({
      name: p.name,
      ...(lo && hi ? { min: lo, max: hi } : {}),
      sample,
      population: p.population,
      sampled: sampleCount(p.population, p.step, p.offset),
      ...(p.internal ? { internal: true } : {}),
    });
  }
  const outputs = sampled.flatMap((t) => t.min && t.max ? [t.min, t.max, t.sample] : [t.sample]);
  return {
    graph: {
      ...base,
      nodes: [...base.nodes, ...groups.reverse().flat()],
      initializers,
      outputs: [
        ...[...outputs, ...anchors].map((name) => ({ name, dtype: "float32" as const })),
        ...whole.map((name) => ({ name })),
      ],
    },
    tensors: sampled,
    derived,
    whole,
    fetch: [...outputs, ...whole],
  };
}

/**
 * Histograms what one run of the plan's graph gave: each sampled tensor's sample on its exact
 * range (its reductions', or the sample's own when it was taken whole), then each derived tensor
 * computed from its source's sample, min and max.
 *
 * @param plan The plan the run followed.
 * @param values The run's outputs (at least `plan.fetch` but `whole`).
 * @param o Histograms by tensor name (every sampled and derived tensor has one), buffers kept
 *   across runs for the derived samples, and the model's name for errors.
 * @throws {ModelError} When an output does not hold the min, max and sample the plan expects.
 */
export function histogramSamples(
  plan: SamplingPlan,
  values: Readonly<Record<string, Tensor>>,
  o: { stats: Statistics; scratch: Map<string, Float32Array>; model: string },
): void {
  // What each sampled or derived tensor gave, for the tensors derived from it.
  const read = new Map<string, SampleRead>();
  for (const t of plan.tensors) {
    // Taken whole, a tensor has no reductions in the graph: its min and max are the sample's
    // (every value's, or with `extremes: "sample"` a sample's).
    const reduced = t.min !== undefined && t.max !== undefined;
    const sample = values[t.sample];
    const lo = reduced ? values[t.min!] : sample, hi = reduced ? values[t.max!] : sample;
    const items = sample ? sample.data.length / t.sampled : NaN;
    if (
      lo?.dtype !== "float32" || hi?.dtype !== "float32" || sample?.dtype !== "float32" ||
      (reduced && (lo.data.length !== 1 || hi.data.length !== 1)) ||
      !(Number.isInteger(items) && items >= 1)
    ) {
      // Only a wrong static shape inference gets here: the exact path does not depend on it.
      throw new ModelError(
        `model "${o.model}": expected tensor "${t.name}" to reduce to a min, a max and items·${t.sampled} sampled float32 values but found ${sample?.dtype} [${
          sample?.dims.join(", ")
        }]; calibrate with samples: "all" to avoid inferred shapes`,
      );
    }
    const exact = reduced || t.sampled === t.population;
    const data = sample.data as Float32Array;
    const got = reduced
      ? { sample: data, min: lo.data[0] as number, max: hi.data[0] as number, exact }
      : { sample: data, exact };
    read.set(t.name, got);
    if (t.internal) continue;
    addSampleTo(o.stats.get(t.name)!, got, items * t.population);
  }
  for (const d of plan.derived) {
    const src = read.get(d.from)!;
    let sample = o.scratch.get(d.name);
    if (sample?.length !== src.sample.length) {
      o.scratch.set(d.name, sample = new Float32Array(src.sample.length));
    }
    d.apply(src.sample, sample);
    let got: SampleRead = { sample, exact: src.exact };
    if (src.min !== undefined && src.max !== undefined) {
      const a = d.f(src.min), b = d.f(src.max);
      got = { ...got, min: d.decreasing ? b : a, max: d.decreasing ? a : b };
    }
    read.set(d.name, got);
    addSampleTo(o.stats.get(d.name)!, got, (sample.length / d.sampled) * d.population);
  }
}

/** A sample of one tensor, with the min and max of every value when they were reduced apart. */
export interface SampleRead {
  sample: Float32Array;
  min?: number;
  max?: number;
  exact: boolean;
}

/**
 * A sample into its histogram (a tapped tensor's here, a graph input's in collect.ts). Without
 * reduced extremes the sample's own are tracked while it is binned ({@linkcode Histogram.add}):
 * one pass instead of a pass for min and max before binning (NanoDet: 4.6 M values a 9-image
 * calibration, about 5 ms).
 *
 * @param h The histogram.
 * @param got The sample, its extremes if known, and whether they are every value's.
 * @param population How many values the sample stands for.
 */
export function addSampleTo(h: Histogram, got: SampleRead, population: number): void {
  if (got.min !== undefined && got.max !== undefined) {
    h.addSample(got.sample, { min: got.min, max: got.max, population });
  } else {
    h.add(got.sample);
    h.population += population - got.sample.length;
  }
  if (!got.exact) h.extremesExact = false;
}
