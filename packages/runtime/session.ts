/**
 * onnxruntime-node sessions over clipq Graphs: create from a Graph or bytes, run with our Tensor
 * type in and out, optionally tapping intermediate tensors.
 *
 * @module
 */
import * as ort from "onnxruntime-node";
import { encode, type Graph, ModelError, type Tensor, tensor, type TensorData } from "@clipq/onnx";
import type { DType } from "@clipq/onnx/tensor";
import { ConfigError } from "@clipq/onnx/errors";
import { addTaps } from "./taps.ts";
import { type ProfileSummary, summarizeProfile } from "./profile.ts";

/** Graph optimization levels onnxruntime knows. */
export type OptimizationLevel = "disabled" | "basic" | "extended" | "all";

/** Options of {@linkcode createSession}. */
export interface SessionOptions {
  /** Graph optimization level; QDQ fusion needs "extended" or "all". */
  optimizationLevel?: OptimizationLevel;
  /** Intra-op thread count; 0 lets onnxruntime choose. */
  threads?: number;
  /** Intermediate tensors to add as outputs (only when the model is a Graph). */
  taps?: readonly string[];
  /** Where onnxruntime writes the optimized model, if anywhere. */
  optimizedModelPath?: string;
  /** Name used in error messages (defaults to the graph name). */
  label?: string;
  /** Record onnxruntime's per-node profile; {@linkcode Session.endProfiling} returns it summed. */
  profile?: boolean;
  /**
   * Whether onnxruntime's worker threads spin after a run, waiting for work (onnxruntime's
   * default: true). Spinning buys a quicker start of the next parallel step with a busy core; turn
   * it off where sessions take turns on few cores: the idle one's spinning workers then take the
   * cores the running one needs (2 threads on 2 cores, NanoDet, float and int8 sessions taking
   * turns: 27 → 14 and 13–17 → 7 ms per image).
   */
  spinning?: boolean;
  /**
   * Whether onnxruntime plans one memory block per run from the first run's allocations (its
   * default, true). The plan takes effect in the second run, which allocates the block afresh, so
   * a session's first two runs both pay for fresh memory: about 4 ns a byte on these machines
   * (page faults). PP-OCRv4 det 640 ran 250, 240, then 60 ms a run with the plan, 260 then 61
   * without, and the same once warm. Off for a session that runs only a few images (calibration,
   * evaluation, the report's comparison); latency is measured with onnxruntime's default.
   */
  memoryPattern?: boolean;
}

/** Defaults of {@linkcode SessionOptions}. */
export const defaults = {
  optimizationLevel: "all",
  threads: 0,
  taps: [],
} satisfies SessionOptions;

/** Options of {@linkcode Session.run}. */
export interface RunOptions {
  /** Output names to fetch; all outputs when omitted. */
  outputs?: readonly string[];
}

/** A loaded model ready to run. */
export interface Session {
  /** Graph input names in order. */
  readonly inputNames: readonly string[];
  /** Graph output names in order (taps included). */
  readonly outputNames: readonly string[];
  /**
   * Runs the model.
   *
   * @param feeds Input tensors by name.
   * @param options Which outputs to fetch.
   * @returns Output tensors by name.
   */
  run(
    feeds: Readonly<Record<string, Tensor>>,
    options?: RunOptions,
  ): Promise<Record<string, Tensor>>;
  /**
   * Ends profiling (session option `profile`) and sums onnxruntime's profile of the runs so far.
   *
   * @returns Kernel time per run per op type and per node.
   * @throws {ConfigError} When the session was created without `profile`.
   */
  endProfiling(): Promise<ProfileSummary>;
  /** Frees the native session. */
  release(): Promise<void>;
}

const LEVELS: readonly OptimizationLevel[] = ["disabled", "basic", "extended", "all"];

const ORT_TYPES: ReadonlySet<string> = new Set([
  "float32",
  "uint8",
  "int8",
  "uint16",
  "int16",
  "int32",
  "int64",
  "string",
  "bool",
  "float16",
  "float64",
  "uint32",
  "uint64",
]);

/**
 * Converts a clipq Tensor to an onnxruntime tensor (sharing storage where the types agree).
 *
 * @param t The tensor.
 * @param name Tensor name for error messages.
 * @returns The onnxruntime tensor.
 *
 * @example Usage
 * ```ts
 * import { toOrt } from "@clipq/runtime/session";
 * import { float32 } from "@clipq/onnx";
 * import assert from "node:assert/strict";
 * assert.deepEqual(toOrt(float32([2], [1, 2])).dims, [2]);
 * ```
 */
export function toOrt(t: Tensor, name = "tensor"): ort.Tensor {
  if (!ORT_TYPES.has(t.dtype)) {
    throw new ModelError(
      `${name}: expected a dtype onnxruntime accepts (${
        [...ORT_TYPES].join(", ")
      }) but found ${t.dtype}`,
    );
  }
  // deno-lint-ignore no-explicit-any
  const out = new ort.Tensor(t.dtype as any, t.data as any, [...t.dims]);
  if (t.dtype === "float16" && t.data instanceof Uint16Array) {
    // Where Float16Array exists (Deno 2) ort.Tensor wraps float16 data in one, and the native
    // binding then reads zero bytes from it; the raw 16-bit view it reads correctly.
    (out as unknown as { cpuData: Uint16Array }).cpuData = t.data;
  }
  return out;
}

/**
 * Converts an onnxruntime tensor to a clipq Tensor without copying numeric data. onnxruntime-node
 * hands each output over in an ArrayBuffer the JavaScript side owns (the buffer holds the native
 * value and frees it only when the buffer is collected; `dispose()` of a CPU tensor just drops the
 * reference), so a view of it outlives the run and the session. Copying every output, as this did,
 * cost a full extra pass over each tapped tensor during calibration.
 *
 * @param t The onnxruntime tensor.
 * @returns Our tensor.
 *
 * @example Usage
 * ```ts
 * import { fromOrt, toOrt } from "@clipq/runtime/session";
 * import { int64 } from "@clipq/onnx";
 * import assert from "node:assert/strict";
 * assert.deepEqual([...fromOrt(toOrt(int64([2], [3, 4]))).data], [3n, 4n]);
 * ```
 */
export function fromOrt(t: ort.Tensor): Tensor {
  const dtype = t.type as DType;
  const src = t.data as unknown as TensorData;
  let data: TensorData;
  if (Array.isArray(src)) data = [...src];
  else if (dtype === "bool" || dtype === "float16") {
    // bool arrives as a Uint8Array already; float16 may arrive as a Float16Array, whose raw 16-bit
    // view is what our float16 tensors hold. Either way a view, not a copy.
    const view = src as Uint8Array | Uint16Array;
    data = dtype === "bool"
      ? new Uint8Array(view.buffer, view.byteOffset, view.byteLength)
      : new Uint16Array(view.buffer, view.byteOffset, view.byteLength / 2);
  } else data = src;
  return tensor(dtype, t.dims.map(Number), data);
}

/**
 * The buffer sessions' model bytes are written into, kept from one session to the next: a model
 * of more than 32 MB always came in fresh memory from the system, and writing fresh memory cost
 * about 4 ns a byte here (a pipeline over YOLOv3-tiny encoded 35–44 MB four times: 0.43 s). Held
 * weakly, so that a process done with sessions gives it back at a collection; twice as large as
 * asked, since the next model is often larger (float and int8 side by side after a calibration
 * graph), and pages never written take no memory.
 */
let scratch: WeakRef<ArrayBuffer> | undefined;
let scratchInUse = false;

function sessionScratch(length: number): ArrayBuffer {
  let b = scratch?.deref();
  if (!b || b.byteLength < length) {
    b = new ArrayBuffer(2 * length);
    scratch = new WeakRef(b);
  }
  return b;
}

/**
 * Frees the memory of tensors a {@linkcode Session.run} returned now, instead of whenever the
 * garbage collector gets to their buffers. Each output buffer holds onnxruntime's native value and
 * V8 counts it only as "external" memory, so a loop of runs piles up tens of MiB of dead outputs
 * between collections, and the allocator's heap grows with the pile (calibration's peak RSS grew
 * with the number of images this way). Detaching a buffer releases its native value at once.
 * Afterwards the tensors are empty (length 0), as is every other view of their buffers: call it
 * only on outputs nothing reads any more. Buffers that cannot be detached (shared memory, plain
 * arrays of strings) are left alone.
 *
 * @param outputs Tensors returned by a run, by name.
 *
 * @example Free a run's outputs
 * ```ts
 * import { createSession, releaseOutputs } from "@clipq/runtime/session";
 * import { emptyGraph, float32, node } from "@clipq/onnx";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({
 *   nodes: [node({ name: "r", op: "Relu", inputs: ["x"], outputs: ["y"] })],
 *   inputs: [{ name: "x", dtype: "float32", shape: [2] }],
 *   outputs: [{ name: "y", dtype: "float32", shape: [2] }],
 * });
 * const s = await createSession(g);
 * const out = await s.run({ x: float32([2], [-1, 2]) });
 * assert.equal(out.y!.data[1], 2);
 * releaseOutputs(out);
 * assert.equal(out.y!.data.length, 0);
 * await s.release();
 * ```
 */
export function releaseOutputs(outputs: Readonly<Record<string, Tensor>>): void {
  for (const t of Object.values(outputs)) {
    if (Array.isArray(t.data)) continue;
    const buffer = t.data.buffer;
    // transfer(0) detaches the buffer and drops its backing store (and so the native value) now.
    if (buffer instanceof ArrayBuffer && !buffer.detached) buffer.transfer(0);
  }
}

function checkOptions(
  options: SessionOptions,
): Required<Pick<SessionOptions, "optimizationLevel" | "threads" | "taps">> {
  const o = { ...defaults, ...options };
  if (!LEVELS.includes(o.optimizationLevel)) {
    throw new ConfigError(
      "optimizationLevel",
      `expected one of ${LEVELS.join(", ")} but found ${JSON.stringify(o.optimizationLevel)}`,
    );
  }
  if (!Number.isInteger(o.threads) || o.threads < 0) {
    throw new ConfigError("threads", `expected a non-negative integer but found ${o.threads}`);
  }
  return o;
}

/** Makes onnxruntime's messages name the model, and keeps the original as the cause. */
function wrap(error: unknown, what: string): ModelError {
  const msg = error instanceof Error ? error.message : String(error);
  return new ModelError(`${what}: ${plainOrtMessage(msg)}`, { cause: error });
}

/**
 * onnxruntime's message without the C++ location of the check that failed ("/onnxruntime_src/…
 * element_wise_ops.h:563 void onnxruntime::BroadcastIterator::Init(…) axis == 1 || … was false."),
 * which tells a user nothing; what it says after that stays.
 *
 * @example
 * ```ts
 * import { plainOrtMessage } from "@clipq/runtime/session";
 * import assert from "node:assert/strict";
 * assert.equal(
 *   plainOrtMessage("Add node. Status Message: /onnxruntime_src/onnxruntime/core/providers/cpu/math/element_wise_ops.h:563 void onnxruntime::BroadcastIterator::Init(ptrdiff_t, ptrdiff_t) axis == 1 || axis == largest was false. Attempting to broadcast an axis by a dimension other than 1. 21 by 22"),
 *   "Add node. Status Message: Attempting to broadcast an axis by a dimension other than 1. 21 by 22",
 * );
 * assert.equal(
 *   plainOrtMessage("void onnxruntime::model_load_utils::ValidateOpsetForDomain(const std::string&, int) Opset 99 is under development."),
 *   "Opset 99 is under development.",
 * );
 * // A failed condition with nothing after it is the message: it stays.
 * assert.equal(
 *   plainOrtMessage("/onnxruntime_src/x.cc:12 bool onnxruntime::Foo() x > 0 was false. "),
 *   "x > 0 was false.",
 * );
 * ```
 */
export function plainOrtMessage(message: string): string {
  // (The failed condition goes only when a message follows it: alone, it is all there is.)
  return message.replace(/\/onnxruntime_src\/\S+:\d+ (?:[^\n]*? was false\. (?=\S))?/g, "")
    // A load check's C++ signature ("void onnxruntime::model_load_utils::ValidateOpsetForDomain(…)").
    .replace(/(?:^|\s)(?:void|bool|int|[\w:]*Status) onnxruntime::[\w:]+\([^()]*\) ?/g, " ")
    .trim();
}

/**
 * Creates an onnxruntime session from a Graph or encoded model bytes.
 *
 * @param model A Graph or ONNX bytes.
 * @param options Optimization level, threads, taps, optimized-model path.
 * @returns The session.
 * @throws {ModelError} When onnxruntime rejects the model (the message names the model).
 * @throws {ConfigError} When an option is out of range.
 *
 * @example Run a one-node model
 * ```ts
 * import { createSession } from "@clipq/runtime";
 * import { emptyGraph, float32, node } from "@clipq/onnx";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({
 *   nodes: [node({ name: "r", op: "Relu", inputs: ["x"], outputs: ["y"] })],
 *   inputs: [{ name: "x", dtype: "float32", shape: [2] }],
 *   outputs: [{ name: "y", dtype: "float32", shape: [2] }],
 * });
 * const s = await createSession(g);
 * const { y } = await s.run({ x: float32([2], [-1, 2]) });
 * assert.deepEqual([...y!.data], [0, 2]);
 * await s.release();
 * ```
 */
export async function createSession(
  model: Graph | Uint8Array,
  options: SessionOptions = {},
): Promise<Session> {
  const o = checkOptions(options);
  let bytes: Uint8Array;
  let label = options.label ?? "model";
  if (model instanceof Uint8Array) {
    if (o.taps.length > 0) {
      throw new ConfigError(
        "taps",
        "expected a Graph when tapping tensors but found encoded bytes",
      );
    }
    bytes = model;
  } else {
    label = options.label ?? `model "${model.name}"`;
    const g = o.taps.length > 0 ? addTaps(model, o.taps) : model;
    bytes = scratchInUse ? encode(g) : encode(g, { into: sessionScratch });
  }
  // Taken from here until onnxruntime has copied the bytes (create() has returned): a session
  // created meanwhile encodes into memory of its own.
  const holdsScratch = bytes.buffer === scratch?.deref();
  if (holdsScratch) scratchInUse = true;
  try {
    return await openSession(bytes, { label, o, options });
  } finally {
    if (holdsScratch) scratchInUse = false;
  }
}

/** createSession once the bytes are ready. */
async function openSession(
  bytes: Uint8Array,
  { label, o, options }: {
    label: string;
    o: ReturnType<typeof checkOptions>;
    options: SessionOptions;
  },
): Promise<Session> {
  const sessionOptions: ort.InferenceSession.SessionOptions = {
    graphOptimizationLevel: o.optimizationLevel,
    executionProviders: ["cpu"],
    // Errors reach the caller as ModelError; ORT's own log lines (a failed run's error too, in
    // colour, before the exception) would only clutter the CLI's one-line error output.
    logSeverityLevel: 4,
    ...(o.threads > 0 ? { intraOpNumThreads: o.threads } : {}),
    // onnxruntime-node flattens `extra` into session config entries.
    ...(options.spinning === false
      ? { extra: { session: { intra_op: { allow_spinning: "0" } } } }
      : {}),
    ...(options.optimizedModelPath ? { optimizedModelFilePath: options.optimizedModelPath } : {}),
    ...(options.memoryPattern === false ? { enableMemPattern: false } : {}),
  };
  // onnxruntime writes the profile as <prefix>_<date>.json; a fresh folder makes it findable.
  const profileDir = options.profile ? await Deno.makeTempDir({ prefix: "clipq_profile_" }) : "";
  if (profileDir) {
    sessionOptions.enableProfiling = true;
    sessionOptions.profileFilePrefix = `${profileDir}/ort`;
  }
  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(bytes, sessionOptions);
  } catch (e) {
    throw wrap(e, `onnxruntime could not load ${label}`);
  }
  const inputNames = [...session.inputNames];
  const outputNames = [...session.outputNames];
  // Checked on every run: a calibration graph has hundreds of outputs, all of them fetched.
  const isOutput = new Set(outputNames);
  return {
    inputNames,
    outputNames,
    async run(feeds, runOptions = {}) {
      const ortFeeds: Record<string, ort.Tensor> = {};
      for (const name of inputNames) {
        const t = feeds[name];
        if (!t) {
          throw new ModelError(
            `${label}: expected a feed for input "${name}" but found only [${
              Object.keys(feeds).join(", ")
            }]`,
          );
        }
        ortFeeds[name] = toOrt(t, `${label} input "${name}"`);
      }
      const wanted = runOptions.outputs ?? outputNames;
      for (const w of wanted) {
        if (!isOutput.has(w)) {
          throw new ModelError(
            `${label}: expected an output name in [${outputNames.join(", ")}] but found "${w}"`,
          );
        }
      }
      let result: ort.InferenceSession.ReturnType;
      try {
        result = await session.run(ortFeeds, [...wanted]);
      } catch (e) {
        throw wrap(e, `onnxruntime failed to run ${label}`);
      }
      const out: Record<string, Tensor> = {};
      for (const w of wanted) {
        const t = result[w];
        if (t) {
          out[w] = fromOrt(t);
          t.dispose();
        }
      }
      return out;
    },
    async endProfiling() {
      if (!profileDir) {
        throw new ConfigError(
          "profile",
          `expected a session created with profile: true (${label})`,
        );
      }
      session.endProfiling();
      try {
        for (const e of Deno.readDirSync(profileDir)) {
          if (e.name.endsWith(".json")) {
            return summarizeProfile(JSON.parse(await Deno.readTextFile(`${profileDir}/${e.name}`)));
          }
        }
        throw new ModelError(`${label}: onnxruntime wrote no profile under ${profileDir}`);
      } finally {
        await Deno.remove(profileDir, { recursive: true }).catch(() => {});
      }
    },
    async release() {
      await session.release();
      if (profileDir) await Deno.remove(profileDir, { recursive: true }).catch(() => {});
    },
  };
}

/**
 * onnxruntime's profile of a model over some runs, in a session of its own at optimization level
 * "all" (profiling slows the runs, so timing belongs elsewhere): kernel ms a run, by op type and
 * by node. The report's kernel times and the bench's both come from here.
 *
 * @param model A Graph or ONNX bytes.
 * @param feeds Input tensors by name.
 * @param options Runs to profile (the first included) and the model's name for errors.
 * @returns The profile summed per run.
 *
 * @example Profile a one-node model
 * ```ts
 * import { profileRuns } from "@clipq/runtime";
 * import { emptyGraph, float32, node } from "@clipq/onnx";
 * import assert from "node:assert/strict";
 * const g = emptyGraph({
 *   nodes: [node({ name: "r", op: "Relu", inputs: ["x"], outputs: ["y"] })],
 *   inputs: [{ name: "x", dtype: "float32", shape: [2] }],
 *   outputs: [{ name: "y", dtype: "float32", shape: [2] }],
 * });
 * const p = await profileRuns(g, { x: float32([2], [-1, 2]) }, { runs: 3 });
 * assert.equal(p.runs, 3);
 * assert.deepEqual(p.ops.map((o) => o.op), ["Relu"]);
 * ```
 */
export async function profileRuns(
  model: Graph | Uint8Array,
  feeds: Readonly<Record<string, Tensor>>,
  options: { runs: number; label?: string },
): Promise<ProfileSummary> {
  const s = await createSession(model, {
    optimizationLevel: "all",
    profile: true,
    ...(options.label ? { label: options.label } : {}),
  });
  try {
    for (let i = 0; i < options.runs; i++) await s.run(feeds);
    return await s.endProfiling();
  } finally {
    await s.release();
  }
}
