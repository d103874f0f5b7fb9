// Prints the CPU milliseconds that the threads a 2-thread session started use while idle: ten
// times a run, then 50 ms of waiting, summed over the waits, with spinning on or off (argument
// "true" / "false"). Only those threads count (from /proc, in 10 ms clock ticks): the process as a
// whole also pays for V8's background compilation and garbage collection, and a test process for
// the tests running beside it. Ten waits, not one: a busy machine can leave one spin short of a
// clock tick.
import { emptyGraph, float32, node } from "@clipq/onnx";
import { createSession } from "@clipq/runtime";

const threads = () => [...Deno.readDirSync("/proc/self/task")].map((e) => e.name);
const cpuMs = (tid: string) => {
  // Fields after the command name: state is the first, utime and stime the 12th and 13th.
  const fields = Deno.readTextFileSync(`/proc/self/task/${tid}/stat`).split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
};

const n = 256;
const graph = emptyGraph({
  opsetImports: [{ domain: "", version: 13 }],
  nodes: [node({ name: "mm", op: "MatMul", inputs: ["x", "w"], outputs: ["y"] })],
  initializers: new Map([["w", float32([n, n], new Float32Array(n * n).fill(0.01))]]),
  inputs: [{ name: "x", dtype: "float32", shape: [n, n] }],
  outputs: [{ name: "y", dtype: "float32" }],
});
const x = float32([n, n], new Float32Array(n * n).fill(1));
const before = new Set(threads());
const session = await createSession(graph, { threads: 2, spinning: Deno.args[0] === "true" });
await session.run({ x });
const started = threads().filter((t) => !before.has(t));
let used = 0;
for (let i = 0; i < 10; i++) {
  await session.run({ x });
  const at = started.map(cpuMs);
  await new Promise((resolve) => setTimeout(resolve, 50));
  used += started.reduce((sum, t, k) => sum + cpuMs(t) - at[k]!, 0);
}
await session.release();
console.log(used);
