/**
 * Reading the tfjs graph-model format: model.json (a TensorFlow GraphDef in JSON) and its weight
 * shards, with float16 and uint8/uint16-quantized weights dequantized to float32.
 *
 * @module
 */
import { DataError, float16ToNumber, ModelError, sizeOf, type Tensor } from "@clipq/onnx";
import { tensor } from "@clipq/onnx/tensor";
import { dirname, isAbsolute, join, relative } from "node:path";

/** One TensorFlow node of a tfjs graph model. */
export interface TfNode {
  name: string;
  op: string;
  input?: string[];
  attr?: Record<string, TfAttr>;
  device?: string;
}

/** A TensorFlow AttrValue in JSON form. */
export interface TfAttr {
  s?: string;
  i?: string | number;
  f?: number;
  b?: boolean;
  type?: string;
  shape?: { dim?: { size?: string | number }[]; unknownRank?: boolean };
  tensor?: { dtype?: string; tensorShape?: { dim?: { size?: string | number }[] } };
  list?: { i?: (string | number)[]; f?: number[]; s?: string[]; type?: string[] };
}

/** A weight entry of the manifest. */
export interface TfWeightSpec {
  name: string;
  shape: number[];
  dtype: "float32" | "int32" | "bool" | "string" | "complex64" | "float16";
  quantization?: { dtype: "uint8" | "uint16" | "float16"; scale?: number; min?: number };
}

/** The parsed model.json. */
export interface TfjsModelJson {
  format?: string;
  modelTopology: { node: TfNode[]; library?: unknown; versions?: unknown };
  weightsManifest: { paths: string[]; weights: TfWeightSpec[] }[];
  signature?: {
    inputs?: Record<string, { name: string }>;
    outputs?: Record<string, { name: string }>;
  };
}

/** A tfjs graph model with its weights decoded. */
export interface TfjsModel {
  json: TfjsModelJson;
  /** Weights by name, float32 dequantized; int32 stays int32. */
  weights: Map<string, Tensor>;
  /** Where the model came from, for error messages. */
  source: string;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Validates the structure of a parsed model.json.
 *
 * @param value Parsed JSON.
 * @param source File name for messages.
 * @returns The typed model JSON.
 * @throws {ModelError} When it is not a tfjs graph model.
 *
 * @example Usage
 * ```ts
 * import { parseModelJson } from "@clipq/convert/tfjs-format";
 * import assert from "node:assert/strict";
 * const m = parseModelJson({ format: "graph-model", modelTopology: { node: [] }, weightsManifest: [] }, "m.json");
 * assert.equal(m.modelTopology.node.length, 0);
 * ```
 */
export function parseModelJson(value: unknown, source: string): TfjsModelJson {
  if (!isObject(value)) throw new ModelError(`${source}: expected a JSON object (tfjs model.json)`);
  const topo = value.modelTopology;
  if (!isObject(topo) || !Array.isArray(topo.node)) {
    throw new ModelError(
      `${source}: expected a tfjs graph model with modelTopology.node[] but found ${
        isObject(topo) ? "a layers model or other topology" : "no modelTopology"
      }`,
    );
  }
  if (!Array.isArray(value.weightsManifest)) {
    throw new ModelError(
      `${source}: expected weightsManifest[] but found ${typeof value.weightsManifest}`,
    );
  }
  for (const [i, n] of (topo.node as unknown[]).entries()) {
    if (!isObject(n) || typeof n.name !== "string" || typeof n.op !== "string") {
      throw new ModelError(`${source}: modelTopology.node[${i}]: expected {name, op}`);
    }
  }
  for (const [gi, g] of (value.weightsManifest as unknown[]).entries()) {
    if (!isObject(g) || !Array.isArray(g.paths) || !Array.isArray(g.weights)) {
      throw new ModelError(`${source}: weightsManifest[${gi}]: expected {paths[], weights[]}`);
    }
    for (const [wi, w] of (g.weights as unknown[]).entries()) {
      if (!isObject(w) || typeof w.name !== "string" || !Array.isArray(w.shape)) {
        throw new ModelError(
          `${source}: weightsManifest[${gi}].weights[${wi}]: expected {name, shape, dtype}`,
        );
      }
    }
  }
  return value as unknown as TfjsModelJson;
}

function bytesOf(spec: TfWeightSpec, source: string): number {
  const n = sizeOf(spec.shape);
  const q = spec.quantization?.dtype;
  if (q === "uint8") return n;
  if (q === "uint16" || q === "float16") return 2 * n;
  switch (spec.dtype) {
    case "float32":
    case "int32":
      return 4 * n;
    case "float16":
      return 2 * n;
    case "bool":
      return n;
    case "complex64":
      return 8 * n;
    default:
      throw new ModelError(
        `${source}: weight "${spec.name}": expected a tfjs weight dtype (float32, int32, float16, bool, complex64); found ${spec.dtype}`,
      );
  }
}

/**
 * Decodes the weights of a model from the concatenated shard bytes.
 *
 * @param json The model JSON.
 * @param shards The bytes of each manifest group's shards, concatenated in manifest order.
 * @param source File name for messages.
 * @returns The model with decoded weights.
 * @throws {ModelError} When the shards are shorter than the manifest says.
 *
 * @example A float16-quantized weight
 * ```ts
 * import { decodeWeights } from "@clipq/convert/tfjs-format";
 * import assert from "node:assert/strict";
 * const json = { modelTopology: { node: [] }, weightsManifest: [{ paths: ["a.bin"], weights: [
 *   { name: "w", shape: [1], dtype: "float32" as const, quantization: { dtype: "float16" as const } }] }] };
 * const m = decodeWeights(json, [new Uint8Array([0x00, 0x3c])], "m.json");
 * assert.equal((m.weights.get("w")!.data as Float32Array)[0], 1);
 * ```
 */
export function decodeWeights(
  json: TfjsModelJson,
  shards: readonly Uint8Array[],
  source: string,
): TfjsModel {
  const weights = new Map<string, Tensor>();
  json.weightsManifest.forEach((group, gi) => {
    const bytes = shards[gi] ?? new Uint8Array();
    let at = 0;
    for (const spec of group.weights) {
      for (const d of spec.shape) {
        if (!Number.isSafeInteger(d) || d < 0 || d > 2 ** 31) {
          throw new ModelError(`${source}: weight "${spec.name}": invalid shape [${spec.shape}]`);
        }
      }
      const size = bytesOf(spec, source);
      if (at + size > bytes.byteLength) {
        throw new ModelError(
          `${source}: weight "${spec.name}" needs bytes ${at}..${at + size} of group ${gi} (${
            group.paths.join(", ")
          }) but the shards hold ${bytes.byteLength}`,
        );
      }
      const view = bytes.slice(at, at + size);
      at += size;
      const n = sizeOf(spec.shape);
      const q = spec.quantization;
      if (q) {
        const out = new Float32Array(n);
        if (q.dtype === "float16") {
          const h = new Uint16Array(view.buffer);
          for (let i = 0; i < n; i++) out[i] = float16ToNumber(h[i]!);
        } else {
          const src = q.dtype === "uint8" ? view : new Uint16Array(view.buffer);
          const scale = q.scale ?? 1;
          const min = q.min ?? 0;
          for (let i = 0; i < n; i++) out[i] = src[i]! * scale + min;
        }
        weights.set(
          spec.name,
          spec.dtype === "int32"
            ? tensor("int32", spec.shape, Int32Array.from(out, Math.round))
            : tensor("float32", spec.shape, out),
        );
        continue;
      }
      switch (spec.dtype) {
        case "float32":
          weights.set(spec.name, tensor("float32", spec.shape, new Float32Array(view.buffer)));
          break;
        case "float16": {
          const h = new Uint16Array(view.buffer);
          weights.set(
            spec.name,
            tensor("float32", spec.shape, Float32Array.from(h, float16ToNumber)),
          );
          break;
        }
        case "int32":
          weights.set(spec.name, tensor("int32", spec.shape, new Int32Array(view.buffer)));
          break;
        case "bool":
          weights.set(spec.name, tensor("bool", spec.shape, view));
          break;
        default:
          throw new ModelError(`${source}: weight "${spec.name}": unsupported dtype ${spec.dtype}`);
      }
    }
    // tfjs writes a group's weights back to back over its shards: bytes left over mean a weight's
    // dtype or shape in the manifest does not match the shard, and every later weight was misread.
    if (at !== bytes.byteLength) {
      throw new ModelError(
        `${source}: the manifest describes ${at} bytes of group ${gi} (${
          group.paths.join(", ")
        }) but the shards hold ${bytes.byteLength}: a weight's dtype or shape does not match them`,
      );
    }
  });
  return { json, weights, source };
}

/**
 * Reads a tfjs graph model (model.json and the shard files it names, relative to its folder).
 *
 * @param path Path of model.json.
 * @returns The model with decoded weights.
 * @throws {ModelError} When the JSON or shards are malformed; {@linkcode DataError} when files are missing.
 */
export async function readTfjsModel(path: string): Promise<TfjsModel> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new DataError(`${path}: cannot read tfjs model.json (${(e as Error).message})`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    // An .onnx or .bin given as model.json: the parser's message quoted its bytes.
    const found = text.includes("\0") ? "binary data" : `a syntax error (${(e as Error).message})`;
    throw new ModelError(`${path}: expected a tfjs model.json (JSON text); found ${found}`);
  }
  const json = parseModelJson(parsed, path);
  const shards: Uint8Array[] = [];
  for (const group of json.weightsManifest) {
    const parts: Uint8Array[] = [];
    for (const p of group.paths) {
      const file = join(dirname(path), p);
      // A manifest from anywhere must not make us read files outside its folder.
      const rel = relative(dirname(path), file);
      if (isAbsolute(p) || rel.startsWith("..") || isAbsolute(rel)) {
        throw new ModelError(
          `${path}: expected weight shards inside the model's folder but path "${p}" leaves it`,
        );
      }
      try {
        parts.push(await Deno.readFile(file));
      } catch (e) {
        throw new DataError(
          `${path}: weight shard "${p}" cannot be read (${(e as Error).message})`,
        );
      }
    }
    const total = parts.reduce((s, p) => s + p.byteLength, 0);
    const all = new Uint8Array(total);
    let at = 0;
    for (const p of parts) {
      all.set(p, at);
      at += p.byteLength;
    }
    shards.push(all);
  }
  return decodeWeights(json, shards, path);
}
