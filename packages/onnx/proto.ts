/**
 * ONNX protobuf ⇄ Graph IR, using npm:onnx-proto. Tensors come from `raw_data`, the typed fields
 * (`float_data`, `int32_data`, `int64_data`, …) or external data files; int64 is bigint at the API.
 *
 * @module
 */
import onnxProto from "onnx-proto";
import { Buffer } from "node:buffer";
import { ModelError } from "./errors.ts";
import type { Attribute, Dim, Graph, Node, OpsetImport, ValueInfo } from "./graph.ts";
import {
  allocate,
  BYTES_PER_ELEMENT,
  checkDims,
  type DType,
  dtypeFromCode,
  ONNX_DTYPE_CODES,
  sizeOf,
  type Tensor,
  type TensorData,
} from "./tensor.ts";

const { onnx } = onnxProto;

// deno-lint-ignore no-explicit-any
type Msg = any;

/** Options of {@linkcode decode}. */
export interface DecodeOptions {
  /**
   * Reads an external data file named by a tensor's `location` (relative to the model's folder).
   * Without it, a model with external data is a ModelError.
   */
  readExternal?: (location: string) => Uint8Array;
  /** Largest element count accepted for one tensor (rejects absurd dims before allocating). */
  maxElements?: number;
}

const utf8 = new TextDecoder();
const utf8Encoder = new TextEncoder();

function toBigInt(v: unknown): bigint {
  if (typeof v === "number") return BigInt(v);
  if (typeof v === "bigint") return v;
  if (typeof v === "string") return BigInt(v);
  if (v && typeof v === "object" && "low" in v && "high" in v) {
    const l = v as { low: number; high: number; unsigned?: boolean };
    const u = (BigInt(l.high >>> 0) << 32n) | BigInt(l.low >>> 0);
    return l.unsigned ? u : BigInt.asIntN(64, u);
  }
  return 0n;
}

function toNumber(v: unknown): number {
  if (typeof v === "number") return v;
  if (v === null || v === undefined) return 0;
  return Number(toBigInt(v));
}

function longOf(v: number | bigint): { low: number; high: number; unsigned: boolean } {
  let b: bigint;
  if (typeof v === "bigint") b = v;
  else if (!Number.isFinite(v)) b = v > 0 ? 2n ** 63n - 1n : -(2n ** 63n);
  else if (v >= 2 ** 63) b = 2n ** 63n - 1n;
  else if (v <= -(2 ** 63)) b = -(2n ** 63n);
  else b = BigInt(Math.trunc(v));
  const u = BigInt.asUintN(64, b);
  return { low: Number(u & 0xffffffffn) | 0, high: Number(u >> 32n) | 0, unsigned: false };
}

function copyBytes(src: Uint8Array): ArrayBuffer {
  const out = new ArrayBuffer(src.byteLength);
  new Uint8Array(out).set(src);
  return out;
}

function fromRaw(dtype: DType, raw: Uint8Array, n: number): TensorData {
  const buf = copyBytes(raw);
  switch (dtype) {
    case "float32":
    case "complex64":
      return new Float32Array(buf);
    case "float64":
    case "complex128":
      return new Float64Array(buf);
    case "int8":
      return new Int8Array(buf);
    case "uint8":
    case "bool":
      return new Uint8Array(buf);
    case "int16":
      return new Int16Array(buf);
    case "uint16":
    case "float16":
    case "bfloat16":
      return new Uint16Array(buf);
    case "int32":
      return new Int32Array(buf);
    case "uint32":
      return new Uint32Array(buf);
    case "int64":
      return new BigInt64Array(buf);
    case "uint64":
      return new BigUint64Array(buf);
    case "string":
      return allocate("string", n);
  }
}

function elementsPer(dtype: DType): number {
  return dtype === "complex64" || dtype === "complex128" ? 2 : 1;
}

function decodeTensor(t: Msg, what: string, options: DecodeOptions): Tensor {
  const code = t.dataType ?? 0;
  let dtype: DType;
  try {
    dtype = dtypeFromCode(code);
  } catch {
    throw new ModelError(
      `${what}: expected an ONNX tensor data type code in 1..16 but found ${code}`,
    );
  }
  const dims = (t.dims ?? []).map(toNumber);
  checkDims(dims, what, options.maxElements);
  const n = sizeOf(dims);
  const count = n * elementsPer(dtype);
  let raw: Uint8Array | undefined = t.rawData && t.rawData.length ? t.rawData : undefined;
  if (t.dataLocation === 1) {
    const entries = new Map<string, string>(
      (t.externalData ?? []).map((e: Msg) => [e.key, e.value]),
    );
    const location = entries.get("location");
    if (!location) throw new ModelError(`${what}: external data without a "location" entry`);
    if (!options.readExternal) {
      throw new ModelError(
        `${what}: stored in external file "${location}" but no folder to read it from`,
      );
    }
    const file = options.readExternal(location);
    const offset = Number(entries.get("offset") ?? 0);
    const length = entries.has("length")
      ? Number(entries.get("length"))
      : count * BYTES_PER_ELEMENT[dtype] / elementsPer(dtype);
    if (!(offset >= 0 && length >= 0 && offset + length <= file.byteLength)) {
      throw new ModelError(
        `${what}: external data "${location}" expected bytes ${offset}..${
          offset + length
        } but the file has ${file.byteLength}`,
      );
    }
    raw = file.subarray(offset, offset + length);
  }
  if (dtype === "string") {
    const strings = (t.stringData ?? []).map((s: Uint8Array) => utf8.decode(s));
    if (strings.length !== n) {
      throw new ModelError(
        `${what}: expected ${n} strings for dims [${dims}] but found ${strings.length}`,
      );
    }
    return { dtype, dims, data: strings };
  }
  if (raw) {
    const bytes = n * BYTES_PER_ELEMENT[dtype];
    if (raw.byteLength !== bytes) {
      throw new ModelError(
        `${what}: expected ${bytes} bytes of raw data for ${dtype} [${
          dims.join(", ")
        }] but found ${raw.byteLength}`,
      );
    }
    return { dtype, dims, data: fromRaw(dtype, raw, n) };
  }
  const data = allocate(dtype, n);
  let src: ArrayLike<unknown> = [];
  switch (dtype) {
    case "float32":
    case "complex64":
      src = t.floatData ?? [];
      break;
    case "float64":
    case "complex128":
      src = t.doubleData ?? [];
      break;
    case "int64":
      src = t.int64Data ?? [];
      break;
    case "uint32":
    case "uint64":
      src = t.uint64Data ?? [];
      break;
    default:
      src = t.int32Data ?? [];
  }
  if (src.length !== count) {
    if (src.length === 0 && count === 0) return { dtype, dims, data };
    throw new ModelError(
      `${what}: expected ${count} elements for ${dtype} [${
        dims.join(", ")
      }] but found ${src.length}`,
    );
  }
  if (data instanceof BigInt64Array) { for (let i = 0; i < count; i++) data[i] = toBigInt(src[i]); }
  else if (data instanceof BigUint64Array) {
    for (let i = 0; i < count; i++) data[i] = BigInt.asUintN(64, toBigInt(src[i]));
  } else {
    const d = data as Float32Array;
    for (let i = 0; i < count; i++) d[i] = toNumber(src[i]);
  }
  return { dtype, dims, data };
}

function decodeValueInfo(v: Msg, what: string): ValueInfo {
  const info: { -readonly [K in keyof ValueInfo]: ValueInfo[K] } = { name: v.name ?? "" };
  if (v.docString) info.docString = v.docString;
  const type = v.type;
  if (type?.tensorType) {
    const code = type.tensorType.elemType ?? 0;
    if (code) {
      try {
        info.dtype = dtypeFromCode(code);
      } catch {
        throw new ModelError(`${what} "${info.name}": unknown element type code ${code}`);
      }
    }
    if (type.tensorType.shape) {
      info.shape = (type.tensorType.shape.dim ?? []).map((d: Msg): Dim => {
        if (d.dimParam) return d.dimParam as string;
        if (d.dimValue !== undefined && d.dimValue !== null) return toNumber(d.dimValue);
        return null;
      });
    }
  } else if (type) info.opaqueType = type;
  return info;
}

function decodeAttribute(a: Msg, where: string, options: DecodeOptions): Attribute {
  const what = `${where} attribute "${a.name}"`;
  switch (a.type ?? 0) {
    case 1:
      return { type: "float", value: a.f ?? 0 };
    case 2:
      return { type: "int", value: toNumber(a.i) };
    case 3:
      return { type: "string", value: utf8.decode(a.s ?? new Uint8Array()) };
    case 4:
      return { type: "tensor", value: decodeTensor(a.t ?? {}, what, options) };
    case 5:
      return { type: "graph", value: decodeGraph(a.g ?? {}, options) };
    case 6:
      return { type: "floats", value: [...(a.floats ?? [])] };
    case 7:
      return { type: "ints", value: (a.ints ?? []).map(toNumber) };
    case 8:
      return { type: "strings", value: (a.strings ?? []).map((s: Uint8Array) => utf8.decode(s)) };
    case 9:
      return {
        type: "tensors",
        value: (a.tensors ?? []).map((t: Msg) => decodeTensor(t, what, options)),
      };
    case 10:
      return { type: "graphs", value: (a.graphs ?? []).map((g: Msg) => decodeGraph(g, options)) };
    default:
      return { type: "opaque", value: a };
  }
}

function decodeNode(n: Msg, index: number, options: DecodeOptions): Node {
  const name = n.name ?? "";
  const where = `node "${name || `#${index}`}" (${n.opType ?? "?"})`;
  const attributes: Record<string, Attribute> = {};
  for (const a of n.attribute ?? []) attributes[a.name] = decodeAttribute(a, where, options);
  const out: { -readonly [K in keyof Node]: Node[K] } = {
    name,
    op: n.opType ?? "",
    domain: n.domain ?? "",
    inputs: [...(n.input ?? [])],
    outputs: [...(n.output ?? [])],
    attributes,
  };
  if (n.docString) out.docString = n.docString;
  return out;
}

function decodeGraph(g: Msg, options: DecodeOptions, model?: Msg): Graph {
  const initializers = new Map<string, Tensor>();
  for (const t of g.initializer ?? []) {
    initializers.set(t.name ?? "", decodeTensor(t, `initializer "${t.name ?? ""}"`, options));
  }
  const opaqueGraph: Record<string, unknown> = {};
  if (g.sparseInitializer?.length) opaqueGraph.sparseInitializer = g.sparseInitializer;
  if (g.quantizationAnnotation?.length) {
    opaqueGraph.quantizationAnnotation = g.quantizationAnnotation;
  }
  const graph: { -readonly [K in keyof Graph]: Graph[K] } = {
    name: g.name ?? "",
    nodes: (g.node ?? []).map((n: Msg, i: number) => decodeNode(n, i, options)),
    initializers,
    inputs: (g.input ?? []).map((v: Msg) => decodeValueInfo(v, "graph input")),
    outputs: (g.output ?? []).map((v: Msg) => decodeValueInfo(v, "graph output")),
    valueInfo: (g.valueInfo ?? []).map((v: Msg) => decodeValueInfo(v, "value_info")),
    opsetImports: [],
    irVersion: 0,
    metadata: new Map(),
  };
  if (g.docString) graph.docString = g.docString;
  if (Object.keys(opaqueGraph).length) graph.opaqueGraph = opaqueGraph;
  if (model) {
    graph.opsetImports = (model.opsetImport ?? []).map((o: Msg): OpsetImport => ({
      domain: o.domain ?? "",
      version: toNumber(o.version),
    }));
    graph.irVersion = toNumber(model.irVersion);
    graph.metadata = new Map(
      (model.metadataProps ?? []).map((p: Msg) => [p.key ?? "", p.value ?? ""]),
    );
    if (model.producerName) graph.producerName = model.producerName;
    if (model.producerVersion) graph.producerVersion = model.producerVersion;
    if (model.domain) graph.modelDomain = model.domain;
    if (model.modelVersion) graph.modelVersion = toNumber(model.modelVersion);
    if (model.docString) graph.modelDocString = model.docString;
    const opaque: Record<string, unknown> = {};
    if (model.functions?.length) opaque.functions = model.functions;
    if (model.trainingInfo?.length) opaque.trainingInfo = model.trainingInfo;
    if (Object.keys(opaque).length) graph.opaque = opaque;
  }
  return graph;
}

/**
 * Decodes ONNX model bytes into a Graph.
 *
 * @param bytes The serialized ModelProto.
 * @param options How to read external data; limits.
 * @returns The top-level graph with the model fields.
 * @throws {ModelError} When the bytes are not a valid ONNX model.
 *
 * @example Round trip
 * ```ts
 * import { decode, encode } from "@clipq/onnx/proto";
 * import { emptyGraph } from "@clipq/onnx/graph";
 * import assert from "node:assert/strict";
 * const g = decode(encode(emptyGraph({ name: "g" })));
 * assert.equal(g.name, "g");
 * assert.equal(g.opsetImports[0]?.version, 13);
 * ```
 */
export function decode(bytes: Uint8Array, options: DecodeOptions = {}): Graph {
  let model: Msg;
  try {
    model = onnx.ModelProto.decode(bytes);
  } catch (e) {
    throw new ModelError(
      `Expected a serialized ONNX ModelProto but decoding failed after reading part of ${bytes.byteLength} bytes: ${
        (e as Error).message
      }`,
    );
  }
  if (!model.graph) {
    throw new ModelError(
      `Expected an ONNX model with a graph but found none (${bytes.byteLength} bytes)`,
    );
  }
  return decodeGraph(model.graph, options, model);
}

function rawBytes(t: Tensor): Uint8Array {
  const d = t.data as Exclude<TensorData, string[]>;
  return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
}

interface EncodeState {
  external?: { threshold: number; location: string; chunks: Uint8Array[]; offset: number };
}

function encodeTensor(name: string, t: Tensor, state: EncodeState): Msg {
  const msg: Msg = {
    name,
    dims: t.dims.map((d) => longOf(d)),
    dataType: ONNX_DTYPE_CODES[t.dtype],
  };
  if (t.dtype === "string") {
    msg.stringData = (t.data as string[]).map((s) => utf8Encoder.encode(s));
    return msg;
  }
  const bytes = rawBytes(t);
  const ext = state.external;
  if (ext && bytes.byteLength >= ext.threshold) {
    const pad = (16 - (ext.offset % 16)) % 16; // keep each tensor aligned, as onnx does (page-aligned is optional)
    if (pad) {
      ext.chunks.push(new Uint8Array(pad));
      ext.offset += pad;
    }
    msg.dataLocation = 1;
    msg.externalData = [
      { key: "location", value: ext.location },
      { key: "offset", value: String(ext.offset) },
      { key: "length", value: String(bytes.byteLength) },
    ];
    ext.chunks.push(bytes);
    ext.offset += bytes.byteLength;
    return msg;
  }
  msg.rawData = bytes;
  return msg;
}

function encodeValueInfo(v: ValueInfo): Msg {
  const msg: Msg = { name: v.name };
  if (v.docString) msg.docString = v.docString;
  if (v.opaqueType) msg.type = v.opaqueType;
  else if (v.dtype || v.shape) {
    const tensorType: Msg = { elemType: v.dtype ? ONNX_DTYPE_CODES[v.dtype] : 0 };
    if (v.shape) {
      tensorType.shape = {
        dim: v.shape.map((d) =>
          typeof d === "number"
            ? { dimValue: longOf(d) }
            : typeof d === "string"
            ? { dimParam: d }
            : {}
        ),
      };
    }
    msg.type = { tensorType };
  }
  return msg;
}

function encodeAttribute(name: string, a: Attribute, state: EncodeState): Msg {
  switch (a.type) {
    case "float":
      return { name, type: 1, f: a.value };
    case "int":
      return { name, type: 2, i: longOf(a.value) };
    case "string":
      return { name, type: 3, s: utf8Encoder.encode(a.value) };
    case "tensor":
      return { name, type: 4, t: encodeTensor("", a.value, {}) };
    case "graph":
      return { name, type: 5, g: encodeGraph(a.value, state) };
    case "floats":
      return { name, type: 6, floats: [...a.value] };
    case "ints":
      return { name, type: 7, ints: a.value.map((v) => longOf(v)) };
    case "strings":
      return { name, type: 8, strings: a.value.map((s) => utf8Encoder.encode(s)) };
    case "tensors":
      return { name, type: 9, tensors: a.value.map((t) => encodeTensor("", t, {})) };
    case "graphs":
      return { name, type: 10, graphs: a.value.map((g) => encodeGraph(g, state)) };
    case "opaque":
      return a.value as Msg;
  }
}

function encodeGraph(g: Graph, state: EncodeState): Msg {
  const msg: Msg = {
    name: g.name,
    node: g.nodes.map((n) => {
      // An unnamed node writes no name field (absent reads as ""): an empty one costs 2 bytes.
      const m: Msg = {
        opType: n.op,
        input: [...n.inputs],
        output: [...n.outputs],
        attribute: Object.entries(n.attributes).map(([k, a]) => encodeAttribute(k, a, state)),
      };
      if (n.name) m.name = n.name;
      if (n.domain) m.domain = n.domain;
      if (n.docString) m.docString = n.docString;
      return m;
    }),
    initializer: [...g.initializers].map(([k, t]) => encodeTensor(k, t, state)),
    input: g.inputs.map(encodeValueInfo),
    output: g.outputs.map(encodeValueInfo),
    valueInfo: g.valueInfo.map(encodeValueInfo),
  };
  if (g.docString) msg.docString = g.docString;
  if (g.opaqueGraph) Object.assign(msg, g.opaqueGraph);
  return msg;
}

function encodeModelMessage(graph: Graph, state: EncodeState): Msg {
  const model: Msg = {
    irVersion: longOf(graph.irVersion || 7),
    opsetImport: graph.opsetImports.map((o) => ({ domain: o.domain, version: longOf(o.version) })),
    graph: encodeGraph(graph, state),
    metadataProps: [...graph.metadata].map(([key, value]) => ({ key, value })),
  };
  if (graph.producerName) model.producerName = graph.producerName;
  if (graph.producerVersion) model.producerVersion = graph.producerVersion;
  if (graph.modelDomain) model.domain = graph.modelDomain;
  if (graph.modelVersion) model.modelVersion = longOf(graph.modelVersion);
  if (graph.modelDocString) model.docString = graph.modelDocString;
  if (graph.opaque) Object.assign(model, graph.opaque);
  return model;
}

/**
 * Encodes a Graph as ONNX model bytes (all tensor data inline as raw_data).
 *
 * @param graph A top-level graph.
 * @param options Memory to reuse.
 * @returns The serialized ModelProto.
 *
 * @example Usage
 * ```ts
 * import { encode } from "@clipq/onnx/proto";
 * import { emptyGraph } from "@clipq/onnx/graph";
 * import assert from "node:assert/strict";
 * assert.ok(encode(emptyGraph()).byteLength > 0);
 * ```
 */
export function encode(graph: Graph, options: EncodeOptions = {}): Uint8Array {
  const writer = onnx.ModelProto.encode(encodeModelMessage(graph, {}));
  const into = typeof options.into === "function" ? options.into(writer.len) : options.into;
  if (!into || into.byteLength < writer.len) return writer.finish();
  // The writer's own last step, into the given memory (a Node Buffer view: string ops call its
  // utf8Write).
  const bytes = Buffer.from(into, 0, writer.len);
  const w = writer as unknown as { head: WriterOp };
  let pos = 0;
  for (let op = w.head.next; op; op = op.next) {
    op.fn(op.val, bytes, pos);
    pos += op.len;
  }
  return new Uint8Array(into, 0, writer.len);
}

/** Options of {@linkcode encode}. */
export interface EncodeOptions {
  /**
   * Memory to write the bytes into when it is large enough (the result is then a view of it), or
   * a function that gives it for the length needed: a caller encoding model after model
   * (onnxruntime sessions) reuses one buffer instead of writing fresh memory each time, which cost
   * about 4 ns a byte here (page faults; 0.14 s for a 35 MB model, since allocations that large
   * always come fresh from the system).
   */
  into?: ArrayBuffer | ((length: number) => ArrayBuffer | undefined);
}

/** One step of a protobufjs writer's list (what its finish() runs). */
interface WriterOp {
  fn: (val: unknown, buf: Uint8Array, pos: number) => void;
  val: unknown;
  len: number;
  next: WriterOp | undefined;
}

/**
 * The byte length {@linkcode encode} would give, without writing the bytes: the writer sums the
 * lengths as it goes and only its last step copies every tensor into one buffer (measuring the
 * float size of an imported YOLOv3-tiny that way wrote 35 MB of fresh memory, 0.16 s here).
 *
 * @param graph A top-level graph.
 * @returns The serialized ModelProto's length in bytes.
 *
 * @example The same length as the bytes
 * ```ts
 * import { encode, encodedSize } from "@clipq/onnx/proto";
 * import { ModelBuilder } from "@clipq/onnx/builder";
 * import assert from "node:assert/strict";
 * const b = new ModelBuilder();
 * b.output(b.conv(b.input("x", [1, 3, 8, 8]), { outChannels: 4, kernel: 3 }), "y");
 * const g = b.build();
 * assert.equal(encodedSize(g), encode(g).byteLength);
 * ```
 */
export function encodedSize(graph: Graph): number {
  return onnx.ModelProto.encode(encodeModelMessage(graph, {})).len;
}

/** Options of {@linkcode encodeWithExternalData}. */
export interface ExternalDataOptions {
  /** File name of the external data, relative to the model (e.g. "model.onnx.data"). */
  location: string;
  /** Tensors of at least this many bytes go to the external file (default 1024). */
  minTensorBytes?: number;
}

/** A model and, when used, its external data file. */
export interface EncodedModel {
  model: Uint8Array;
  external?: { location: string; bytes: Uint8Array };
}

/**
 * Encodes a Graph with initializers of at least `minTensorBytes` bytes in one external data file, as
 * ONNX does for models past the 2 GiB protobuf limit.
 *
 * @param graph A top-level graph.
 * @param options Where the external data goes.
 * @returns Model bytes and external data bytes.
 *
 * @example Usage
 * ```ts
 * import { decode, encodeWithExternalData } from "@clipq/onnx/proto";
 * import { emptyGraph } from "@clipq/onnx/graph";
 * import { float32 } from "@clipq/onnx/tensor";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({ initializers: new Map([["w", float32([300], new Float32Array(300).fill(2))]]) });
 * const { model, external } = encodeWithExternalData(g, { location: "m.data" });
 * assert.equal(external?.bytes.byteLength, 1200);
 * const back = decode(model, { readExternal: () => external!.bytes });
 * assert.equal((back.initializers.get("w")?.data as Float32Array)[299], 2);
 * ```
 */
export function encodeWithExternalData(graph: Graph, options: ExternalDataOptions): EncodedModel {
  const state: EncodeState = {
    external: {
      threshold: options.minTensorBytes ?? 1024,
      location: options.location,
      chunks: [],
      offset: 0,
    },
  };
  const model = onnx.ModelProto.encode(encodeModelMessage(graph, state)).finish();
  const ext = state.external!;
  if (ext.offset === 0) return { model };
  const bytes = new Uint8Array(ext.offset);
  let at = 0;
  for (const c of ext.chunks) {
    bytes.set(c, at);
    at += c.byteLength;
  }
  return { model, external: { location: options.location, bytes } };
}

/** Total bytes of initializer data in the graph (to decide whether external data is needed). */
export function initializerBytes(graph: Graph): number {
  let n = 0;
  for (const t of graph.initializers.values()) {
    n += t.dtype === "string" ? 0 : (t.data as Exclude<TensorData, string[]>).byteLength;
  }
  return n;
}
