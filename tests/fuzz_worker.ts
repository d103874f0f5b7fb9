/**
 * The fuzz loop of tests/fuzz_test.ts, in a worker so the test can stop it when one case hangs
 * (synchronous code cannot be interrupted from the same thread). It posts one message per case and
 * a summary at the end.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import onnxProto from "onnx-proto";
import {
  ClipqError,
  decode,
  type Graph,
  normalize,
  seededRandom,
  upgradeOpset,
  validate,
} from "@clipq/onnx";
import { planQuantization, quantize } from "@clipq/quantize";

const { onnx } = onnxProto;
// deno-lint-ignore no-explicit-any
type Msg = any;

/** What the test sends: fixture models and how many cases to run on each. */
export interface FuzzJob {
  fixtures: { name: string; bytes: Uint8Array; cases: number; quantizeEvery: number }[];
  seed: number;
}

/** One escaped error or slow case. */
export interface FuzzFinding {
  fixture: string;
  index: number;
  mutation: string;
  error: string;
  ms: number;
}

type Random = ReturnType<typeof seededRandom>;

const OPS = [
  "Conv",
  "Relu",
  "Clip",
  "Add",
  "Mul",
  "Concat",
  "MatMul",
  "Gemm",
  "Resize",
  "Reshape",
  "Transpose",
  "Sigmoid",
  "MaxPool",
  "BatchNormalization",
  "Softmax",
  "QuantizeLinear",
  "DequantizeLinear",
  "Constant",
  "Identity",
  "If",
  "Loop",
  "Frob",
];

function pick<T>(r: Random, xs: readonly T[]): T {
  return xs[Math.floor(r.next() * xs.length)]!;
}

function wild(r: Random): number {
  return pick(r, [0, -1, 1, 2, 3, 7, 2 ** 31 - 1, -(2 ** 31), 2 ** 40, 65536, 1e9, -7]);
}

/** Byte-level damage: set, flip, truncate, insert, duplicate a span. */
function mutateBytes(r: Random, bytes: Uint8Array): [Uint8Array, string] {
  const b = Uint8Array.from(bytes);
  const kind = Math.floor(r.next() * 5);
  const at = Math.floor(r.next() * b.length);
  switch (kind) {
    case 0: {
      const n = 1 + Math.floor(r.next() * 8);
      for (let i = 0; i < n; i++) b[Math.floor(r.next() * b.length)] = Math.floor(r.next() * 256);
      return [b, `set ${n} bytes`];
    }
    case 1: {
      const n = 1 + Math.floor(r.next() * 8);
      for (let i = 0; i < n; i++) b[Math.floor(r.next() * b.length)]! ^= 1 << (i % 8);
      return [b, `flip ${n} bits`];
    }
    case 2:
      return [b.subarray(0, at), `truncate at ${at}`];
    case 3: {
      const extra = new Uint8Array(1 + Math.floor(r.next() * 16)).map(() => r.next() * 256);
      const out = new Uint8Array(b.length + extra.length);
      out.set(b.subarray(0, at));
      out.set(extra, at);
      out.set(b.subarray(at), at + extra.length);
      return [out, `insert ${extra.length} bytes at ${at}`];
    }
    default: {
      const len = Math.min(b.length - at, 1 + Math.floor(r.next() * 64));
      const out = new Uint8Array(b.length + len);
      out.set(b.subarray(0, at + len));
      out.set(b.subarray(at, at + len), at + len);
      out.set(b.subarray(at + len), at + 2 * len);
      return [out, `duplicate ${len} bytes at ${at}`];
    }
  }
}

/** Field-level damage on the decoded protobuf: names, ops, attributes, dims, types, opsets. */
function mutateFields(r: Random, bytes: Uint8Array): [Uint8Array, string] {
  const m: Msg = onnx.ModelProto.decode(bytes);
  const g = m.graph;
  const nodes: Msg[] = g.node;
  const inits: Msg[] = g.initializer;
  const tensors = [...new Set(nodes.flatMap((n) => [...n.input, ...n.output]))];
  const steps: string[] = [];
  const count = 1 + Math.floor(r.next() * 3);
  for (let s = 0; s < count; s++) {
    const n = nodes.length ? pick(r, nodes) : undefined;
    const t = inits.length ? pick(r, inits) : undefined;
    switch (Math.floor(r.next() * 12)) {
      case 0:
        if (n?.input.length) {
          const i = Math.floor(r.next() * n.input.length);
          n.input[i] = r.next() < 0.5 ? pick(r, tensors) : `ghost_${s}`;
          steps.push(`rewire ${n.name}.input[${i}]`);
        }
        break;
      case 1:
        if (n) {
          n.opType = pick(r, OPS);
          steps.push(`${n.name} becomes ${n.opType}`);
        }
        break;
      case 2:
        if (n?.attribute.length) {
          const a = pick(r, n.attribute as Msg[]);
          if (a.ints?.length) a.ints = a.ints.map(() => wild(r));
          else if (a.i !== undefined) a.i = wild(r);
          if (a.f !== undefined) a.f = pick(r, [NaN, Infinity, -1, 0, 1e30]);
          if (r.next() < 0.2) a.type = Math.floor(r.next() * 15);
          steps.push(`attribute ${n.name}.${a.name}`);
        }
        break;
      case 3:
        if (t) {
          t.dims = t.dims.map(() => wild(r));
          steps.push(`dims of ${t.name}`);
        }
        break;
      case 4:
        if (t) {
          t.dataType = Math.floor(r.next() * 18);
          steps.push(`dtype of ${t.name} = ${t.dataType}`);
        }
        break;
      case 5:
        if (t?.rawData?.length) {
          t.rawData = t.rawData.subarray(0, Math.floor(r.next() * t.rawData.length));
          steps.push(`raw data of ${t.name} cut`);
        }
        break;
      case 6:
        if (n) {
          nodes.splice(nodes.indexOf(n), 1);
          steps.push(`delete ${n.name}`);
        }
        break;
      case 7:
        if (n) {
          nodes.splice(Math.floor(r.next() * nodes.length), 0, { ...n, name: n.name + "_dup" });
          steps.push(`duplicate ${n.name}`);
        }
        break;
      case 8:
        m.opsetImport = [{ domain: "", version: Math.floor(r.next() * 22) }];
        steps.push(`opset ${m.opsetImport[0].version}`);
        break;
      case 9: {
        const v = g.input.length ? pick(r, g.input as Msg[]) : undefined;
        const dims = v?.type?.tensorType?.shape?.dim;
        if (dims?.length) {
          dims[Math.floor(r.next() * dims.length)] = { dimValue: wild(r) };
          steps.push(`input ${v.name} dim`);
        }
        break;
      }
      case 10:
        if (n && n.output.length) {
          n.output[0] = pick(r, tensors);
          steps.push(`${n.name} output renamed`);
        }
        break;
      default:
        if (t) {
          g.initializer.splice(g.initializer.indexOf(t), 1);
          steps.push(`drop initializer ${t.name}`);
        }
    }
  }
  return [Uint8Array.from(onnx.ModelProto.encode(m).finish()), steps.join("; ")];
}

function exercise(bytes: Uint8Array, withQuantize: boolean, variant: number): void {
  let g: Graph = decode(bytes);
  validate(g);
  g = normalize(g);
  validate(g);
  if (!withQuantize) return;
  const opset = g.opsetImports.find((o) => o.domain === "" || o.domain === "ai.onnx")?.version ??
    0;
  if (opset < 13) g = upgradeOpset(g, { target: 13 });
  const plan = planQuantization(g);
  const ranges = new Map(
    plan.activations.map((a, i) => [a, { min: -1 - (i % 3), max: 1 + i, source: "fuzz" }]),
  );
  // Every output form: QDQ u8/s8, per-channel/per-tensor, QOperator.
  validate(
    quantize(g, {
      ranges,
      // QOperator takes u8 activations only (s8 QLinearConv is slow in onnxruntime).
      format: variant % 3 === 2 ? "qoperator" : "qdq",
      activations: variant % 3 !== 2 && variant % 2 ? "s8" : "u8",
      weights: variant % 4 === 3 ? "per-tensor" : "per-channel",
    }).graph,
  );
}

self.onmessage = (e: MessageEvent<FuzzJob>) => {
  const job = e.data;
  const r = seededRandom(job.seed);
  const findings: FuzzFinding[] = [];
  const outcomes: Record<string, number> = {};
  let total = 0;
  // Reported, not judged: on a shared machine a case can be slow without being a hang (the test's
  // watchdog judges hangs).
  let slowest = { ms: 0, what: "" };
  for (const f of job.fixtures) {
    for (let i = 0; i < f.cases; i++) {
      const [bytes, mutation] = r.next() < 0.5 ? mutateBytes(r, f.bytes) : mutateFields(r, f.bytes);
      // Progress before the case, so a hang names the case that hung.
      self.postMessage({ type: "case", fixture: f.name, index: i, mutation });
      const t = performance.now();
      let outcome = "accepted";
      try {
        exercise(bytes, i % f.quantizeEvery === 0, Math.floor(i / f.quantizeEvery));
      } catch (err) {
        if (err instanceof ClipqError) outcome = err.constructor.name;
        else {
          outcome = "escaped";
          findings.push({
            fixture: f.name,
            index: i,
            mutation,
            error: `${(err as Error)?.constructor?.name}: ${(err as Error)?.message ?? err}`
              .slice(0, 300),
            ms: performance.now() - t,
          });
        }
      }
      const ms = performance.now() - t;
      if (ms > slowest.ms) slowest = { ms, what: `${f.name} #${i} (${mutation})` };
      outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
      total++;
    }
  }
  self.postMessage({ type: "done", total, outcomes, findings, slowest });
};
