import assert from "node:assert/strict";
import * as ort from "onnxruntime-node";
import { emptyGraph, float32, type Graph, node } from "@clipq/onnx";
import { encode } from "@clipq/onnx/proto";
import { clipBounds, withClipBounds } from "./clip_bounds.ts";
import { readerBounds } from "./_saturation.ts";

const scalar = (v: number) => float32([], [v]);

/** x → Conv → c, then hard-swish c·Clip(c + 3, 0, 6) / 6 and HardSigmoid(h) as PP-LCNet writes them. */
function hardSwishGraph(extraReader = false): Graph {
  return emptyGraph({
    inputs: [{ name: "x", dtype: "float32", shape: [1, 1, 4, 4] }],
    outputs: [{ name: "y", dtype: "float32" }, ...(extraReader ? [{ name: "c" }] : [])],
    initializers: new Map([
      ["w", float32([1, 1, 1, 1], [20])],
      ["w2", float32([1, 1, 1, 1], [30])],
      ["three", scalar(3)],
      ["zero", scalar(0)],
      ["six", scalar(6)],
    ]),
    nodes: [
      node({ name: "conv", op: "Conv", inputs: ["x", "w"], outputs: ["c"] }),
      node({ name: "add", op: "Add", inputs: ["c", "three"], outputs: ["t"] }),
      node({ name: "clip", op: "Clip", inputs: ["t", "zero", "six"], outputs: ["g"] }),
      node({ name: "mul", op: "Mul", inputs: ["c", "g"], outputs: ["p"] }),
      node({ name: "div", op: "Div", inputs: ["p", "six"], outputs: ["h"] }),
      node({ name: "conv2", op: "Conv", inputs: ["h", "w2"], outputs: ["s"] }),
      node({
        name: "hsig",
        op: "HardSigmoid",
        inputs: ["s"],
        outputs: ["y"],
        attributes: { alpha: { type: "float", value: 1 / 6 }, beta: { type: "float", value: 0.5 } },
      }),
    ],
  });
}

Deno.test("clipBounds() bounds a hard-swish input below at −3 and a HardSigmoid input to [−3, 3]", () => {
  const b = clipBounds(hardSwishGraph());
  assert.deepEqual(b.partial.get("c"), { min: -3, max: Infinity });
  assert.ok(b.unbounded.includes("c"), "the upper side still needs data");
  assert.deepEqual(b.partial.get("s"), { min: -3, max: 3 });
  // Calibration saw [−50, 40]: below −3 every value gives the same outputs, so the range stops.
  const ranges = withClipBounds(
    b,
    new Map([
      ["c", { min: -50, max: 40, source: "percentile" }],
      ["s", { min: -70, max: 60, source: "percentile" }],
    ]),
  );
  assert.deepEqual(ranges.get("c"), { min: -3, max: 40, source: "percentile" });
  assert.deepEqual(ranges.get("s"), { min: -3, max: 3, source: "percentile" });
});

Deno.test("readerBounds() leaves a tensor alone when any reader sees all of it", () => {
  const b = readerBounds(hardSwishGraph(true));
  assert.equal(b.get("c"), undefined, "a graph output is read in full");
  assert.deepEqual(b.get("s"), { lo: -3, hi: 3 });
  const g = hardSwishGraph();
  // A second reader that is not a gate (Mul by another tensor) needs the whole range.
  const g2: Graph = {
    ...g,
    nodes: [...g.nodes, node({ name: "m2", op: "Mul", inputs: ["c", "x"], outputs: ["z"] })],
    outputs: [...g.outputs, { name: "z", dtype: "float32" }],
  };
  assert.equal(readerBounds(g2).get("c"), undefined);
});

Deno.test("clamping to the reader bounds leaves the outputs exactly as they were (onnxruntime)", async () => {
  const g = hardSwishGraph();
  const b = readerBounds(g);
  const clamped: Graph = {
    ...g,
    initializers: new Map([
      ...g.initializers,
      ["c_lo", scalar(b.get("c")!.lo)],
      ["s_lo", scalar(b.get("s")!.lo)],
      ["s_hi", scalar(b.get("s")!.hi)],
    ]),
    nodes: g.nodes.flatMap((n) => {
      const r = (t: string) => (t === "c" ? "c_clamped" : t === "s" ? "s_clamped" : t);
      const m = { ...n, inputs: n.inputs.map(r) };
      if (n.name === "conv") {
        return [n, node({ name: "cc", op: "Clip", inputs: ["c", "c_lo"], outputs: ["c_clamped"] })];
      }
      if (n.name === "conv2") {
        return [
          m,
          node({ name: "cs", op: "Clip", inputs: ["s", "s_lo", "s_hi"], outputs: ["s_clamped"] }),
        ];
      }
      return [m];
    }),
  };
  const x = new Float32Array(16).map((_, i) => (i - 8) / 10); // c = 20x ∈ [−16, 14]
  const run = async (graph: Graph) => {
    const s = await ort.InferenceSession.create(encode(graph));
    const out = await s.run({ x: new ort.Tensor("float32", x, [1, 1, 4, 4]) });
    await s.release();
    return Array.from(out.y!.data as Float32Array);
  };
  const [a, c] = [await run(g), await run(clamped)];
  assert.deepEqual(c, a);
  assert.ok(a.some((v) => v > 0 && v < 1), "the test exercises the unsaturated part");
});
