import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import {
  ConfigError,
  emptyGraph,
  encode,
  float32,
  int64,
  ModelError,
  node,
  numberToFloat16,
} from "@clipq/onnx";
import { ModelBuilder } from "@clipq/onnx/builder";
import { createSession, fromOrt, releaseOutputs, toOrt } from "./session.ts";

const addGraph = emptyGraph({
  name: "adder",
  nodes: [
    node({ name: "add", op: "Add", inputs: ["a", "b"], outputs: ["s"] }),
    node({ name: "shape", op: "Shape", inputs: ["s"], outputs: ["n"] }),
  ],
  inputs: [
    { name: "a", dtype: "float32", shape: [2, 3] },
    { name: "b", dtype: "float32", shape: [3] },
  ],
  outputs: [{ name: "s", dtype: "float32", shape: [2, 3] }, {
    name: "n",
    dtype: "int64",
    shape: [2],
  }],
});

Deno.test("createSession() runs a Graph and returns our tensors, int64 as bigint", async () => {
  const s = await createSession(addGraph);
  assert.deepEqual(s.inputNames, ["a", "b"]);
  assert.deepEqual(s.outputNames, ["s", "n"]);
  const out = await s.run({
    a: float32([2, 3], [1, 2, 3, 4, 5, 6]),
    b: float32([3], [10, 20, 30]),
  });
  assert.deepEqual([...out.s!.data], [11, 22, 33, 14, 25, 36]);
  assert.deepEqual(out.s!.dims, [2, 3]);
  assert.equal(out.n!.dtype, "int64");
  assert.deepEqual([...out.n!.data], [2n, 3n]);
  await s.release();
});

Deno.test("createSession() accepts encoded bytes and every optimization level", async () => {
  for (const level of ["disabled", "basic", "extended", "all"] as const) {
    const s = await createSession(encode(addGraph), { optimizationLevel: level, threads: 1 });
    const out = await s.run(
      { a: float32([2, 3], [0, 0, 0, 1, 1, 1]), b: float32([3], [1, 2, 3]) },
      {
        outputs: ["s"],
      },
    );
    assert.deepEqual(Object.keys(out), ["s"]);
    assert.deepEqual([...out.s!.data], [1, 2, 3, 2, 3, 4]);
    await s.release();
  }
});

Deno.test("createSession() writes the optimized model where asked", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/opt.onnx`;
  const s = await createSession(addGraph, { optimizedModelPath: path });
  await s.release();
  assert.ok(Deno.statSync(path).size > 0);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("createSession() rejects bad options with ConfigError naming the key", async () => {
  await assert.rejects(
    // deliberately wrong level
    () => createSession(addGraph, { optimizationLevel: "max" as "all" }),
    (e: unknown) => e instanceof ConfigError && /optimizationLevel/.test(e.message),
  );
  await assert.rejects(
    () => createSession(addGraph, { threads: -1 }),
    (e: unknown) => e instanceof ConfigError && e.keyPath === "threads",
  );
});

Deno.test("createSession() wraps onnxruntime load errors in ModelError naming the model", async () => {
  const bad = {
    ...addGraph,
    outputs: addGraph.outputs.slice(0, 1),
    nodes: [node({ name: "x", op: "NoSuchOp", inputs: ["a"], outputs: ["s"] })],
  };
  await assert.rejects(
    () => createSession(bad),
    (e: unknown) =>
      e instanceof ModelError && /adder/.test(e.message) && /NoSuchOp/.test(e.message),
  );
});

Deno.test("Session.run() names a missing feed and an unknown output", async () => {
  const s = await createSession(addGraph);
  await assert.rejects(
    () => s.run({ a: float32([2, 3], [1, 2, 3, 4, 5, 6]) }),
    (e: unknown) => e instanceof ModelError && /"b"/.test(e.message),
  );
  await assert.rejects(
    () => s.run({ a: float32([3], [1, 2, 3]), b: float32([3], [1, 2, 3]) }, { outputs: ["zz"] }),
    (e: unknown) => e instanceof ModelError && /"zz"/.test(e.message),
  );
  await assert.rejects(
    () => s.run({ a: float32([2, 2], [1, 2, 3, 4]), b: float32([3], [1, 2, 3]) }),
    (e: unknown) => e instanceof ModelError && /adder/.test(e.message),
  );
  await s.release();
});

Deno.test("toOrt() and fromOrt() round-trip int64, uint8 and bool tensors", () => {
  const i = fromOrt(toOrt(int64([3], [-1, 0, 2 ** 40])));
  assert.deepEqual([...i.data], [-1n, 0n, 2n ** 40n]);
  const u = fromOrt(toOrt({ dtype: "uint8", dims: [2], data: new Uint8Array([0, 255]) }));
  assert.deepEqual([u.dtype, [...u.data]], ["uint8", [0, 255]]);
  const b = fromOrt(toOrt({ dtype: "bool", dims: [2], data: new Uint8Array([1, 0]) }));
  assert.deepEqual([b.dtype, [...b.data]], ["bool", [1, 0]]);
});

Deno.test("Session.run() carries float16 and bool tensors both ways", async () => {
  const cast = (name: string, to: number, x: string, y: string) =>
    node({
      name,
      op: "Cast",
      inputs: [x],
      outputs: [y],
      attributes: { to: { type: "int", value: to } },
    });
  const g = emptyGraph({
    nodes: [
      cast("to16", 10, "x", "h"),
      cast("from16", 1, "h16", "f"),
      node({ name: "not", op: "Not", inputs: ["b"], outputs: ["nb"] }),
    ],
    inputs: [
      { name: "x", dtype: "float32", shape: [3] },
      { name: "h16", dtype: "float16", shape: [3] },
      { name: "b", dtype: "bool", shape: [2] },
    ],
    outputs: [
      { name: "h", dtype: "float16", shape: [3] },
      { name: "f", dtype: "float32", shape: [3] },
      { name: "nb", dtype: "bool", shape: [2] },
    ],
  });
  const s = await createSession(g);
  const halves = Uint16Array.from([1, 0.5, -2], numberToFloat16);
  const out = await s.run({
    x: float32([3], [1, 0.5, -2]),
    h16: { dtype: "float16", dims: [3], data: halves },
    b: { dtype: "bool", dims: [2], data: Uint8Array.of(1, 0) },
  });
  assert.equal(out.h!.dtype, "float16");
  assert.ok(out.h!.data instanceof Uint16Array);
  assert.deepEqual([...out.h!.data], [...halves]);
  assert.deepEqual([...out.f!.data], [1, 0.5, -2]);
  assert.deepEqual([out.nb!.dtype, [...out.nb!.data]], ["bool", [0, 1]]);
  await s.release();
});

Deno.test("Session.run() outputs stay intact after later runs and after release()", async () => {
  const s = await createSession(addGraph);
  const feeds = (v: number) => ({
    a: float32([2, 3], new Float32Array(6).fill(v)),
    b: float32([3], [1, 2, 3]),
  });
  const first = await s.run(feeds(10));
  const firstValues = [...first[s.outputNames[0]!]!.data];
  // Later runs reuse onnxruntime's arena; an output aliasing freed native memory would change.
  for (let i = 0; i < 50; i++) await s.run(feeds(-i));
  await s.release();
  // Allocate and drop a lot so a collection, if it frees anything, frees something.
  for (let i = 0; i < 20; i++) new Float32Array(1 << 20).fill(i);
  assert.deepEqual([...first[s.outputNames[0]!]!.data], firstValues);
  assert.deepEqual(firstValues, [11, 12, 13, 11, 12, 13]);
});

Deno.test("releaseOutputs() frees each run's outputs at once and leaves the session usable", async () => {
  const n = 1 << 20; // 4 MiB per output
  const g = emptyGraph({
    nodes: [node({ name: "r", op: "Relu", inputs: ["x"], outputs: ["y"] })],
    inputs: [{ name: "x", dtype: "float32", shape: [n] }],
    outputs: [{ name: "y", dtype: "float32", shape: [n] }],
  });
  const s = await createSession(g, { threads: 1 });
  const x = float32([n], new Float32Array(n).fill(-1));
  const before = Deno.memoryUsage().external;
  let most = 0;
  for (let i = 0; i < 40; i++) {
    const out = await s.run({ x });
    assert.equal(out.y!.data.length, n);
    assert.equal(out.y!.data[n - 1], 0);
    releaseOutputs(out);
    assert.equal(out.y!.data.length, 0);
    most = Math.max(most, Deno.memoryUsage().external - before);
  }
  // 160 MiB of outputs went through; released, at most about one is alive at any time (left to
  // the garbage collector they pile up to tens of MiB between collections).
  assert.ok(most < 2 * 4 * n, `external memory grew by ${most} bytes`);
  // A second release of the same tensors is a no-op.
  const out = await s.run({ x });
  releaseOutputs(out);
  releaseOutputs(out);
  assert.equal(out.y!.data.length, 0);
  await s.release();
});

Deno.test("createSession() with spinning: false leaves no worker spinning after a run", async () => {
  // onnxruntime's workers spin for a bounded number of iterations after a run (~30 ms of CPU on
  // this machine); with spinning off they sleep at once. CPU time of a child process of its own,
  // not wall time: what else the machine runs does not count.
  const idleCpuMs = async (spinning: boolean) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        fileURLToPath(import.meta.resolve("./testdata/idle_cpu.ts")),
        `${spinning}`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    return Number(new TextDecoder().decode(out.stdout).trim());
  };
  const spinning = await idleCpuMs(true), sleeping = await idleCpuMs(false);
  // One clock tick of slack for a worker caught finishing its part of the run.
  assert.ok(sleeping <= 10, `expected no CPU while idle without spinning but found ${sleeping} ms`);
  assert.ok(
    spinning >= 50,
    `expected spinning workers to use CPU while idle but found ${spinning} ms`,
  );
});

Deno.test("sessions created at once, and one after another, each run their own model", async () => {
  const scaled = (k: number) =>
    emptyGraph({
      nodes: [node({ name: "m", op: "Mul", inputs: ["x", "k"], outputs: ["y"] })],
      initializers: new Map([["k", float32([1], [k])]]),
      inputs: [{ name: "x", dtype: "float32", shape: [1] }],
      outputs: [{ name: "y", dtype: "float32", shape: [1] }],
    });
  // At once: one session's bytes must not be written over by the other's (a shared buffer).
  // The first profiles, which awaits a folder between encoding its bytes and loading them.
  const together = await Promise.all(
    [2, 3, 5].map((k) => createSession(scaled(k), { profile: k === 2 })),
  );
  const after = [];
  for (const k of [7, 11]) after.push(await createSession(scaled(k)));
  const got = [];
  for (const s of [...together, ...after]) {
    got.push((await s.run({ x: float32([1], [1]) })).y!.data[0]);
    await s.release();
  }
  assert.deepEqual(got, [2, 3, 5, 7, 11]);
});

Deno.test("createSession() without onnxruntime's memory plan runs the same model to the same outputs", async () => {
  const b = new ModelBuilder({ seed: 4 });
  b.output(b.relu(b.conv(b.input("x", [1, 3, 16, 16]), { outChannels: 8, kernel: 3 })), "y");
  const g = b.build();
  const x = float32([1, 3, 16, 16], Float32Array.from({ length: 768 }, (_, i) => Math.sin(i)));
  const outputs = [];
  for (const memoryPattern of [true, false]) {
    const s = await createSession(g, { memoryPattern });
    // Several runs: the plan, when on, takes effect from the second.
    for (let i = 0; i < 3; i++) outputs.push((await s.run({ x })).y!.data);
    await s.release();
  }
  for (const o of outputs.slice(1)) assert.deepEqual(o, outputs[0]);
});
