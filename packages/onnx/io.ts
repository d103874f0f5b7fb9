/**
 * Reading and writing model files: external data beside the model, and atomic writes (a temporary
 * file in the target folder renamed into place), so a failed or interrupted save never leaves a
 * partial model behind.
 *
 * @module
 */
import {
  basename,
  dirname,
  isAbsolute,
  join,
  normalize as normalizePath,
  relative,
} from "node:path";
import { ConfigError, ModelError } from "./errors.ts";
import type { Graph } from "./graph.ts";
import { decode, encode, encodeWithExternalData, initializerBytes } from "./proto.ts";

/** Protobuf messages cannot exceed 2 GiB; stay this far below it to leave room for the graph itself. */
const PROTOBUF_LIMIT = 2 ** 31 - 1;
const MARGIN = 64 * 2 ** 20;

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * Loads an ONNX model file, reading tensors stored in external data files (their `location` is
 * relative to the model's folder and may not leave it).
 *
 * @param path Model file.
 * @returns The decoded graph.
 * @throws {ModelError} Naming the file: missing, a directory, empty, not an ONNX model, truncated,
 * or external data that is missing or too short.
 *
 * @example Save, then load
 * ```ts
 * import { loadModel, saveModel } from "@clipq/onnx/io";
 * import { ModelBuilder } from "@clipq/onnx/builder";
 * import { join } from "node:path";
 * import assert from "node:assert/strict";
 * const b = new ModelBuilder();
 * b.output(b.relu(b.input("x", [1, 2])), "y");
 * const dir = await Deno.makeTempDir();
 * await saveModel(join(dir, "m.onnx"), b.build());
 * assert.equal((await loadModel(join(dir, "m.onnx"))).outputs[0]?.name, "y");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function loadModel(path: string): Promise<Graph> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (e) {
    throw new ModelError(
      `${path}: expected an ONNX model file but cannot read it: ${describe(e)}`,
      { cause: e },
    );
  }
  if (!info.isFile) {
    throw new ModelError(
      `${path}: expected an ONNX model file but found a ${
        info.isDirectory ? "directory" : "non-file"
      }`,
    );
  }
  const bytes = await Deno.readFile(path);
  if (bytes.byteLength === 0) {
    throw new ModelError(`${path}: expected an ONNX model but the file is empty`);
  }
  const folder = dirname(path);
  const files = new Map<string, Uint8Array>();
  const readExternal = (location: string): Uint8Array => {
    const target = normalizePath(join(folder, location));
    const rel = relative(folder, target);
    if (isAbsolute(location) || rel.startsWith("..") || isAbsolute(rel)) {
      throw new ModelError(
        `${path}: expected external data inside the model's folder but location "${location}" leaves it`,
      );
    }
    let data = files.get(target);
    if (!data) {
      try {
        data = Deno.readFileSync(target);
      } catch (e) {
        throw new ModelError(`${path}: cannot read external data file ${target}: ${describe(e)}`, {
          cause: e,
        });
      }
      files.set(target, data);
    }
    return data;
  };
  try {
    const graph = decode(bytes, { readExternal });
    if (graph.opsetImports.length === 0 && graph.irVersion >= 3) {
      // Field order puts opset_import after the graph: a file cut right after it still parses.
      throw new ModelError(
        `${path}: expected opset imports in an IR ${graph.irVersion} model but found none (is the file truncated?)`,
      );
    }
    return graph;
  } catch (e) {
    if (e instanceof ModelError && !e.message.startsWith(path)) {
      throw new ModelError(`${path}: ${e.message}`, { cause: e });
    }
    throw e;
  }
}

/** Options of {@linkcode saveModel}. */
export interface SaveOptions {
  /**
   * Write tensors to an external data file when the model's tensor data would exceed this many bytes
   * (default: just under protobuf's 2 GiB limit).
   */
  externalDataThreshold?: number;
  /** With external data, tensors of at least this many bytes go to the file; smaller stay inline. */
  externalDataMinTensorBytes?: number;
  /** File name of the external data, beside the model (default `<model file name>.data`). */
  externalDataLocation?: string;
  /**
   * Called with each file's path as soon as it is renamed into place, in the same synchronous
   * stretch as the rename: an interrupt handler (which runs only between awaits) never sees a file
   * in place that this has not reported.
   */
  onPlaced?: ((path: string) => void) | undefined;
}

/** Defaults of {@linkcode SaveOptions}. */
export const saveDefaults = {
  externalDataThreshold: PROTOBUF_LIMIT - MARGIN,
  externalDataMinTensorBytes: 1024,
  externalDataLocation: "",
  onPlaced: undefined,
} satisfies Required<SaveOptions>;

/** What {@linkcode saveModel} wrote. */
export interface SavedModel {
  /** The model file. */
  path: string;
  /** Bytes of the model file. */
  bytes: number;
  /** The external data file, when one was written. */
  external?: { path: string; bytes: number };
}

/**
 * Writes each file to a temporary name in its folder, and renames them into place only once all
 * are written: a failed write (disk full, no permission) leaves every old file as it was.
 */
async function writeAtomic(
  files: readonly { path: string; bytes: Uint8Array }[],
  onPlaced?: (path: string) => void,
): Promise<void> {
  const temps: string[] = [];
  let at = "";
  try {
    for (const f of files) {
      at = f.path;
      const tmp = join(
        dirname(f.path),
        `.${basename(f.path)}.${Deno.pid}.${crypto.randomUUID().slice(0, 8)}.tmp`,
      );
      temps.push(tmp);
      await Deno.writeFile(tmp, f.bytes);
    }
    // The model goes last, so it never points at external data that is not in place yet; each
    // rename is reported before anything else can run (see SaveOptions.onPlaced).
    for (let i = 0; i < files.length; i++) {
      at = files[i]!.path;
      Deno.renameSync(temps[i]!, at);
      temps[i] = "";
      onPlaced?.(at);
    }
  } catch (e) {
    await Promise.all(temps.filter(Boolean).map((t) => Deno.remove(t).catch(() => {})));
    throw new ModelError(`${at}: cannot write the file: ${describe(e)}`, { cause: e });
  }
}

/**
 * Writes a model atomically (temporary file in the target folder, then rename). When its tensor
 * data would pass the threshold, large tensors go to an external data file beside it (written
 * the same way, before the model that points at it).
 *
 * @param path Model file to write.
 * @param graph The model.
 * @param options External data threshold, minimum tensor size and file name.
 * @returns The files written and their sizes.
 * @throws {ConfigError} On a bad option. {@linkcode ModelError} When the folder cannot be written.
 *
 * @example External data with a tiny threshold
 * ```ts
 * import { loadModel, saveModel } from "@clipq/onnx/io";
 * import { ModelBuilder } from "@clipq/onnx/builder";
 * import { join } from "node:path";
 * import assert from "node:assert/strict";
 * const b = new ModelBuilder();
 * b.output(b.conv(b.input("x", [1, 8, 4, 4]), { outChannels: 8, kernel: 3 }), "y");
 * const dir = await Deno.makeTempDir();
 * const saved = await saveModel(join(dir, "m.onnx"), b.build(), { externalDataThreshold: 100 });
 * assert.equal(saved.external?.path, join(dir, "m.onnx.data"));
 * assert.equal((await loadModel(join(dir, "m.onnx"))).initializers.get("conv_0.weight")?.data.length, 576);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function saveModel(
  path: string,
  graph: Graph,
  options: SaveOptions = {},
): Promise<SavedModel> {
  const o = { ...saveDefaults, ...options };
  for (const key of ["externalDataThreshold", "externalDataMinTensorBytes"] as const) {
    if (!(Number.isFinite(o[key]) && o[key] >= 0)) {
      throw new ConfigError(key, `expected a non-negative number of bytes but found ${o[key]}`);
    }
  }
  const location = o.externalDataLocation || `${basename(path)}.data`;
  if (isAbsolute(location) || location.includes("/") || location.includes("\\")) {
    throw new ConfigError(
      "externalDataLocation",
      `expected a file name beside the model but found "${location}"`,
    );
  }
  if (initializerBytes(graph) <= o.externalDataThreshold) {
    const bytes = modelBytes(graph);
    await writeAtomic([{ path, bytes }], o.onPlaced);
    return { path, bytes: bytes.byteLength };
  }
  const encoded = encodeWithExternalData(graph, {
    location,
    minTensorBytes: o.externalDataMinTensorBytes,
  });
  const saved: SavedModel = { path, bytes: encoded.model.byteLength };
  const files = [{ path, bytes: encoded.model }];
  if (encoded.external) {
    const externalPath = join(dirname(path), location);
    files.unshift({ path: externalPath, bytes: encoded.external.bytes });
    saved.external = { path: externalPath, bytes: encoded.external.bytes.byteLength };
  }
  await writeAtomic(files, o.onPlaced);
  return saved;
}

/**
 * Serializes a model with all tensor data inline, e.g. to hand it to onnxruntime.
 *
 * @param graph The model.
 * @returns The ONNX bytes.
 * @throws {ModelError} When the tensor data passes protobuf's 2 GiB limit (save it with external data).
 *
 * @example Usage
 * ```ts
 * import { modelBytes } from "@clipq/onnx/io";
 * import { decode } from "@clipq/onnx/proto";
 * import { emptyGraph } from "@clipq/onnx/graph";
 * import assert from "node:assert/strict";
 * assert.equal(decode(modelBytes(emptyGraph({ name: "g" }))).name, "g");
 * ```
 */
export function modelBytes(graph: Graph): Uint8Array {
  const data = initializerBytes(graph);
  if (data > PROTOBUF_LIMIT - MARGIN) {
    throw new ModelError(
      `Expected a model under protobuf's 2 GiB limit but "${graph.name}" holds ${data} bytes of tensors; save it with external data`,
    );
  }
  return encode(graph);
}
