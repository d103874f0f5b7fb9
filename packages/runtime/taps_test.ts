import assert from "node:assert/strict";
import { decode, emptyGraph, float32, type Graph, ModelError, node, producers } from "@clipq/onnx";
import { ppocrModel } from "../../tools/assets.ts";
import { addTaps } from "./taps.ts";
import { createSession } from "./session.ts";

/** Deterministic uniform values in [-1, 1) (LCG), so failures reproduce. */
function seeded(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

/** The graph cut at `name`: its only output is that tensor, and unneeded nodes are dropped. */
function cutAt(graph: Graph, name: string): Graph {
  const made = producers(graph);
  const keep = new Set<string>();
  const stack = [name];
  while (stack.length) {
    const t = stack.pop()!;
    const n = made.get(t);
    if (!n || keep.has(n.name)) continue;
    keep.add(n.name);
    stack.push(...n.inputs.filter((i) => i));
  }
  return { ...graph, nodes: graph.nodes.filter((n) => keep.has(n.name)), outputs: [{ name }] };
}

Deno.test("addTaps() tensors equal the same tensors of a model cut there (PP-OCR cls)", async () => {
  const graph = decode(Deno.readFileSync(await ppocrModel("cls")));
  const x = float32([1, 3, 48, 192], seeded(3 * 48 * 192, 7));
  // A Conv deep inside, an activation in a squeeze-excite block, and the flattened FC input.
  const convs = graph.nodes.filter((n) => n.op === "Conv");
  const targets = [
    convs[5]!.outputs[0]!,
    graph.nodes.filter((n) => n.op === "HardSigmoid")[3]!.outputs[0]!,
    graph.nodes.find((n) => n.op === "Reshape")!.outputs[0]!,
  ];
  const tapped = await createSession(graph, { taps: targets, optimizationLevel: "all" });
  assert.deepEqual(tapped.outputNames, [graph.outputs[0]!.name, ...targets]);
  const all = await tapped.run({ x });
  await tapped.release();
  for (const t of targets) {
    const cut = await createSession(cutAt(graph, t), { optimizationLevel: "all" });
    const ref = (await cut.run({ x }))[t]!;
    await cut.release();
    const got = all[t]!;
    assert.deepEqual(got.dims, ref.dims, t);
    let worst = 0;
    for (let i = 0; i < ref.data.length; i++) {
      worst = Math.max(worst, Math.abs((got.data[i] as number) - (ref.data[i] as number)));
    }
    assert.ok(worst <= 1e-5, `${t}: max abs difference ${worst}`);
    assert.ok(ref.data.some((v) => v !== 0), `${t} is not all zero`);
  }
});

Deno.test("addTaps() types taps from value_info and keeps existing outputs once", () => {
  const g = emptyGraph({
    nodes: [
      node({ name: "r", op: "Relu", inputs: ["x"], outputs: ["h"] }),
      node({ name: "s", op: "Sigmoid", inputs: ["h"], outputs: ["y"] }),
    ],
    inputs: [{ name: "x", dtype: "float32", shape: [1, 4] }],
    outputs: [{ name: "y", dtype: "float32", shape: [1, 4] }],
    valueInfo: [{ name: "h", dtype: "float32", shape: [1, "n"] }],
  });
  const t = addTaps(g, ["y", "h", "h", "x"]);
  assert.deepEqual(t.outputs, [
    { name: "y", dtype: "float32", shape: [1, 4] },
    { name: "h", dtype: "float32", shape: [1, "n"] },
    { name: "x", dtype: "float32", shape: [1, 4] },
  ]);
  assert.equal(addTaps(g, ["y"]), g);
});

Deno.test("addTaps() rejects a tensor nothing produces, naming it", () => {
  const g = emptyGraph({ name: "m", inputs: [{ name: "x", dtype: "float32", shape: [1] }] });
  assert.throws(
    () => addTaps(g, ["ghost"]),
    (e: unknown) => e instanceof ModelError && /"ghost"/.test(e.message) && /"m"/.test(e.message),
  );
});
