import assert from "node:assert/strict";
import { ConfigError, DataError } from "@clipq/onnx/errors";
import { ModelBuilder } from "@clipq/onnx/builder";
import { float32 } from "@clipq/onnx/tensor";
import { createSession } from "./session.ts";
import { summarizeProfile, weightedShare } from "./profile.ts";

Deno.test("createSession() profile: endProfiling() sums onnxruntime's kernel times per op and node", async () => {
  const b = new ModelBuilder({ seed: 1 });
  const x = b.input("x", [1, 3, 16, 16]);
  b.output(b.sigmoid(b.conv(x, { outChannels: 8, kernel: 3, pad: 1, name: "c" })), "y");
  const s = await createSession(b.build(), { profile: true, optimizationLevel: "basic" });
  const feeds = { x: float32([1, 3, 16, 16], new Float32Array(768).fill(0.5)) };
  for (let i = 0; i < 3; i++) await s.run(feeds);
  const p = await s.endProfiling();
  await s.release();
  assert.equal(p.runs, 3);
  assert.deepEqual(p.ops.map((o) => o.op).sort(), ["Conv", "Sigmoid"]);
  assert.ok(p.ops.every((o) => o.ms > 0 && o.count === 1));
  assert.ok(Math.abs(p.totalMs - p.ops.reduce((t, o) => t + o.ms, 0)) < 1e-3);
  assert.equal(p.nodes.find((n) => n.op === "Conv")?.name, "c");
});

Deno.test("endProfiling() needs profile: true; summarizeProfile() refuses what is not a trace", async () => {
  const b = new ModelBuilder({ seed: 1 });
  b.output(b.relu(b.input("x", [2])), "y");
  const s = await createSession(b.build());
  await assert.rejects(() => s.endProfiling(), ConfigError);
  await s.release();
  assert.throws(() => summarizeProfile({ events: [] }), DataError);
});

Deno.test("summarizeProfile() takes each node's median run, so one slow run does not move it; a node inside a loop gets its mean", () => {
  const run = { cat: "Session", name: "model_run", dur: 1 };
  const k = (name: string, op: string, dur: number) => ({
    cat: "Node",
    name: `${name}_kernel_time`,
    dur,
    args: { op_name: op },
  });
  const p = summarizeProfile([
    // The first run allocates: its conv takes ten times as long.
    run,
    k("c", "Conv", 5000),
    k("body", "Add", 30),
    k("body", "Add", 30),
    k("body", "Add", 30),
    run,
    k("c", "Conv", 400),
    k("body", "Add", 30),
    run,
    k("c", "Conv", 600),
    k("body", "Add", 30),
    k("body", "Add", 30),
  ]);
  assert.equal(p.runs, 3);
  // The mean had made it 2 ms.
  assert.equal(p.nodes.find((n) => n.name === "c")!.ms, 0.6);
  // Six runs of the loop's body in three of the model: 60 µs a model run.
  assert.equal(p.nodes.find((n) => n.name === "body")!.ms, 0.06);
  assert.equal(p.totalMs, 0.66);
});

Deno.test("weightedShare() counts the conv ORT fused with its Relu at level all as a weighted layer", async () => {
  const b = new ModelBuilder({ seed: 1 });
  const x = b.input("x", [1, 8, 32, 32]);
  const h = b.relu(b.conv(x, { outChannels: 16, kernel: 3, pad: 1 }));
  b.output(b.sigmoid(b.conv(h, { outChannels: 16, kernel: 3, pad: 1 })), "y");
  const s = await createSession(b.build(), { profile: true, optimizationLevel: "all" });
  const feeds = { x: float32([1, 8, 32, 32], new Float32Array(8192).fill(0.5)) };
  for (let i = 0; i < 3; i++) await s.run(feeds);
  const p = await s.endProfiling();
  await s.release();
  const share = weightedShare(p);
  // The fused and NCHWc kernels report under other op names than the model's Conv and Relu.
  assert.ok(share.weightedMs > 0);
  assert.ok(!share.others.some((o) => /Conv|Relu/.test(o.op)), JSON.stringify(p.ops));
  assert.ok(Math.abs(share.weightedMs + share.otherMs - p.totalMs) < 1e-3);
});
