import assert from "node:assert/strict";
import { ConfigError, emptyGraph, float32, node } from "@clipq/onnx";
import { compareLatency, measureLatency, summarize } from "./latency.ts";
import { createSession, type Session } from "./session.ts";

const relu = emptyGraph({
  nodes: [node({ name: "r", op: "Relu", inputs: ["x"], outputs: ["y"] })],
  inputs: [{ name: "x", dtype: "float32", shape: [4] }],
  outputs: [{ name: "y", dtype: "float32", shape: [4] }],
});
const feeds = { x: float32([4], [1, -1, 2, -2]) };

/** Wraps a session and counts its runs, recording the order of calls across sessions. */
function counting(s: Session, tag: string, log: string[]): Session {
  return { ...s, run: (f, o) => (log.push(tag), s.run(f, o)) };
}

Deno.test("summarize() gives median, min and mean", () => {
  assert.deepEqual(summarize([5, 1, 3]), { median: 3, min: 1, mean: 3, samples: [5, 1, 3] });
});

Deno.test("measureLatency() runs warm-up plus timed runs", async () => {
  const s = await createSession(relu);
  const log: string[] = [];
  const t = await measureLatency(counting(s, "a", log), feeds, { warmup: 2, runs: 7 });
  assert.equal(log.length, 9);
  assert.equal(t.samples.length, 7);
  assert.ok(t.samples.every((v) => v >= 0));
  assert.equal(t.min, Math.min(...t.samples));
  await s.release();
});

Deno.test("compareLatency() takes turns: a warm-up run, then a block of timed runs each", async () => {
  const a = await createSession(relu);
  const b = await createSession(relu);
  const log: string[] = [];
  const c = await compareLatency(
    { a: counting(a, "a", log), b: counting(b, "b", log) },
    feeds,
    { warmup: 1, runs: 5, block: 2, pauseMs: 0 },
  );
  // Warm-up "ab"; rounds of turns (one untimed run + up to 2 timed), the order swapped each round.
  assert.equal(log.join(""), "ab" + "aaa" + "bbb" + "bbb" + "aaa" + "aa" + "bb");
  assert.equal(c.a.samples.length, 5);
  assert.equal(c.b.samples.length, 5);
  assert.equal(c.ratio, c.b.median / c.a.median);
  await a.release();
  await b.release();
});

Deno.test("compareLatency() pauses before each turn", async () => {
  const s = await createSession(relu);
  const t0 = performance.now();
  await compareLatency({ a: s, b: s }, feeds, { warmup: 0, runs: 2, block: 1, pauseMs: 30 });
  // Four turns (two rounds of two), each after a 30 ms pause.
  assert.ok(performance.now() - t0 >= 4 * 30 - 4);
  await s.release();
});

Deno.test("compareLatency() rejects a bad block or pause with ConfigError", async () => {
  const s = await createSession(relu);
  await assert.rejects(() => compareLatency({ a: s, b: s }, feeds, { block: 0 }), ConfigError);
  await assert.rejects(() => compareLatency({ a: s, b: s }, feeds, { pauseMs: -1 }), ConfigError);
  await s.release();
});

Deno.test("measureLatency() rejects zero runs with ConfigError", async () => {
  const s = await createSession(relu);
  await assert.rejects(() => measureLatency(s, feeds, { runs: 0 }), ConfigError);
  await s.release();
});
