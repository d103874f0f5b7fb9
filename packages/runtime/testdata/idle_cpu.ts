// Prints the CPU milliseconds this process uses in the 300 ms after a few runs of a 2-thread
// session created with spinning on or off (argument "true" / "false"). Its own process: a test
// process running other tests in parallel would count their CPU too.
import process from "node:process";
import { emptyGraph, float32, node } from "@clipq/onnx";
import { createSession } from "@clipq/runtime";

const n = 256;
const graph = emptyGraph({
  opsetImports: [{ domain: "", version: 13 }],
  nodes: [node({ name: "mm", op: "MatMul", inputs: ["x", "w"], outputs: ["y"] })],
  initializers: new Map([["w", float32([n, n], new Float32Array(n * n).fill(0.01))]]),
  inputs: [{ name: "x", dtype: "float32", shape: [n, n] }],
  outputs: [{ name: "y", dtype: "float32" }],
});
const x = float32([n, n], new Float32Array(n * n).fill(1));
const session = await createSession(graph, { threads: 2, spinning: Deno.args[0] === "true" });
for (let i = 0; i < 3; i++) await session.run({ x });
const before = process.cpuUsage();
await new Promise((resolve) => setTimeout(resolve, 300));
const used = process.cpuUsage(before);
await session.release();
console.log((used.user + used.system) / 1000);
