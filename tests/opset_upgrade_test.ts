/**
 * Opset upgrade (@clipq/onnx/upgrade) checked through onnxruntime: the upgraded model must give the
 * outputs of the original, on the real PP-OCR models and on small hand-built cases per rewritten op.
 */
import assert from "node:assert/strict";
import {
  type Attribute,
  decode,
  emptyGraph,
  float32,
  type Graph,
  int64,
  node,
  opsetOf,
  type Tensor,
  UnsupportedOpError,
} from "@clipq/onnx";
import { upgradeOpset } from "@clipq/onnx/upgrade";
import { withValueInfo } from "@clipq/onnx/shapes";
import { encode } from "@clipq/onnx";
import { createSession } from "@clipq/runtime";
import { ppocrModel } from "../tools/assets.ts";
import { assertChecked, checkModels } from "./checker.ts";

function seeded(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

async function outputs(g: Graph, feeds: Record<string, Tensor>): Promise<Record<string, Tensor>> {
  const s = await createSession(g, { optimizationLevel: "disabled" });
  try {
    return await s.run(feeds);
  } finally {
    await s.release();
  }
}

/** Runs original and upgraded graph; returns the max abs difference over all outputs. */
async function compare(
  g: Graph,
  feeds: Record<string, Tensor>,
  target: number,
): Promise<{ diff: number; upgraded: Graph }> {
  const upgraded = upgradeOpset(g, { target });
  assert.equal(opsetOf(upgraded), target);
  const a = await outputs(g, feeds);
  const b = await outputs(upgraded, feeds);
  let diff = 0;
  for (const [name, t] of Object.entries(a)) {
    const u = b[name];
    assert.ok(u, `upgraded model has output ${name}`);
    assert.deepEqual(u.dims, t.dims, name);
    for (let i = 0; i < t.data.length; i++) {
      diff = Math.max(diff, Math.abs(Number(u.data[i]) - Number(t.data[i])));
    }
  }
  return { diff, upgraded };
}

for (
  const [which, dims] of [
    ["det", [1, 3, 320, 320]],
    ["rec", [1, 3, 48, 320]],
    ["cls", [1, 3, 48, 192]],
  ] as const
) {
  Deno.test(`upgradeOpset() keeps PP-OCR ${which} outputs at opset 13 and 17`, async () => {
    const g = decode(Deno.readFileSync(await ppocrModel(which)));
    const x = float32([...dims], seeded(dims.reduce((a: number, b: number) => a * b, 1), 3));
    for (const target of [13, 17]) {
      const { diff, upgraded } = await compare(g, { x }, target);
      assert.ok(diff <= 1e-5, `${which} at ${target}: max abs difference ${diff}`);
      assert.equal(upgraded.irVersion >= (target >= 15 ? 8 : 7), true);
    }
  });
}

/** A one-node graph at an old opset with input x of the given dims. */
function one(
  opset: number,
  op: string,
  dims: number[],
  attributes: Record<string, Attribute>,
  extra: [string, Tensor][] = [],
  outputs = ["y"],
): Graph {
  return emptyGraph({
    opsetImports: [{ domain: "", version: opset }],
    nodes: [node({ name: "n", op, inputs: ["x", ...extra.map(([k]) => k)], outputs, attributes })],
    initializers: new Map(extra),
    inputs: [{ name: "x", dtype: "float32", shape: dims }],
    outputs: outputs.map((name) => ({ name, dtype: "float32" as const })),
  });
}
const ints = (value: number[]): Attribute => ({ type: "ints", value });
const int = (value: number): Attribute => ({ type: "int", value });
const flt = (value: number): Attribute => ({ type: "float", value });
const str = (value: string): Attribute => ({ type: "string", value });

async function sameAfterUpgrade(g: Graph, target = 13) {
  const dims = g.inputs[0]!.shape as number[];
  const x = float32(dims, seeded(dims.reduce((a, b) => a * b, 1), 5).map((v) => 4 * v));
  const { diff, upgraded } = await compare(g, { x }, target);
  assert.equal(diff, 0, `${g.nodes[0]!.op}: max abs difference ${diff}`);
  return upgraded;
}

Deno.test("upgradeOpset() moves Clip min/max into inputs, also one-sided", async () => {
  const up = await sameAfterUpgrade(one(9, "Clip", [2, 8], { min: flt(-0.5), max: flt(1.5) }));
  assert.equal(up.nodes[0]!.inputs.length, 3);
  assert.deepEqual(up.nodes[0]!.attributes, {});
  const low = await sameAfterUpgrade(one(9, "Clip", [2, 8], { min: flt(0) }));
  assert.deepEqual(low.nodes[0]!.inputs.length, 2);
});

Deno.test("upgradeOpset() moves Slice starts/ends/axes into inputs, with INT64_MAX ends", async () => {
  await sameAfterUpgrade(
    one(9, "Slice", [4, 6, 5], {
      starts: ints([1, -4]),
      ends: ints([9223372036854775807, -1]),
      axes: ints([0, 2]),
    }),
  );
  await sameAfterUpgrade(one(9, "Slice", [4, 6], { starts: ints([1, 2]), ends: ints([3, 5]) }), 17);
});

Deno.test("upgradeOpset() moves Squeeze/Unsqueeze axes into inputs", async () => {
  const sq = await sameAfterUpgrade(one(11, "Squeeze", [1, 3, 1, 2], { axes: ints([0, -2]) }));
  assert.equal(sq.nodes[0]!.inputs.length, 2);
  await sameAfterUpgrade(one(9, "Unsqueeze", [3, 2], { axes: ints([0, 3]) }));
});

Deno.test("upgradeOpset() moves Split sizes into an input", async () => {
  const up = await sameAfterUpgrade(
    one(11, "Split", [6, 4], { axis: int(1), split: ints([1, 3]) }, [], ["a", "b"]),
  );
  assert.equal(up.nodes[0]!.inputs.length, 2);
  await sameAfterUpgrade(one(9, "Split", [6, 4], { axis: int(0) }, [], ["a", "b", "c"]));
});

Deno.test("upgradeOpset() moves Pad pads and value into inputs", async () => {
  await sameAfterUpgrade(
    one(9, "Pad", [1, 2, 3, 3], { pads: ints([0, 0, 1, 2, 0, 0, 2, 1]), value: flt(1.25) }),
  );
  await sameAfterUpgrade(
    one(9, "Pad", [1, 2, 3, 3], { pads: ints([0, 0, 1, 2, 0, 0, 2, 1]), mode: str("reflect") }),
  );
});

Deno.test("upgradeOpset() turns Upsample into an asymmetric Resize (nearest and linear)", async () => {
  const scales = float32([4], [1, 1, 2, 3]);
  const near = await sameAfterUpgrade(
    one(9, "Upsample", [1, 2, 3, 4], { mode: str("nearest") }, [["s", scales]]),
  );
  assert.equal(near.nodes[0]!.op, "Resize");
  await sameAfterUpgrade(
    one(9, "Upsample", [1, 2, 3, 4], { mode: str("linear") }, [["s", scales]]),
    17,
  );
  await sameAfterUpgrade(
    one(7, "Upsample", [1, 2, 3, 4], {
      mode: str("nearest"),
      scales: { type: "floats", value: [1, 1, 2, 2] },
    }),
  );
});

Deno.test("upgradeOpset() moves Upsample-7 scales into an input when staying below opset 10", async () => {
  const up = await sameAfterUpgrade(
    one(7, "Upsample", [1, 2, 3, 4], {
      mode: str("nearest"),
      scales: { type: "floats", value: [1, 1, 2, 3] },
    }),
    9,
  );
  assert.deepEqual([up.nodes[0]!.op, up.nodes[0]!.inputs.length], ["Upsample", 2]);
});

Deno.test("upgradeOpset() gives Resize-10 the opset-11 input layout", async () => {
  await sameAfterUpgrade(
    one(10, "Resize", [1, 2, 3, 4], { mode: str("nearest") }, [[
      "s",
      float32([4], [1, 1, 2, 2.5]),
    ]]),
  );
  await sameAfterUpgrade(
    one(10, "Resize", [1, 2, 8, 8], { mode: str("nearest") }, [[
      "s",
      float32([4], [1, 1, 0.5, 0.75]),
    ]]),
  );
  await sameAfterUpgrade(
    one(10, "Resize", [1, 2, 3, 4], { mode: str("linear") }, [["s", float32([4], [1, 1, 2, 2])]]),
  );
});

Deno.test("upgradeOpset() keeps old Softmax semantics when the axis is not last", async () => {
  for (const op of ["Softmax", "LogSoftmax", "Hardmax"]) {
    const up = await sameAfterUpgrade(one(11, op, [2, 3, 4], { axis: int(1) }));
    assert.deepEqual(up.nodes.map((n) => n.op), ["Flatten", op, "Shape", "Reshape"]);
  }
  // Default axis (1) of a 2-D input is the last one: the node stays single.
  const last = await sameAfterUpgrade(one(9, "Softmax", [3, 5], {}));
  assert.deepEqual(last.nodes.map((n) => n.op), ["Softmax"]);
});

Deno.test("upgradeOpset() moves ReduceSum axes and TopK k into inputs", async () => {
  await sameAfterUpgrade(one(11, "ReduceSum", [2, 3, 4], { axes: ints([1]), keepdims: int(0) }));
  const g = one(9, "TopK", [2, 6], { k: int(3) }, [], ["v", "i"]);
  const withTypes = {
    ...g,
    outputs: [{ name: "v", dtype: "float32" as const }, { name: "i", dtype: "int64" as const }],
  };
  await sameAfterUpgrade(withTypes);
});

Deno.test("upgradeOpset() drops BatchNormalization spatial and is_test", async () => {
  const c = (v: number[]) => float32([2], v);
  const g = one(8, "BatchNormalization", [1, 2, 3, 3], { spatial: int(1), epsilon: flt(1e-5) }, [
    ["s", c([1, 2])],
    ["b", c([0.5, -1])],
    ["m", c([0.1, 0.2])],
    ["v", c([1, 4])],
  ]);
  const up = await sameAfterUpgrade(g, 15);
  assert.equal(up.nodes[0]!.attributes.spatial, undefined);
});

Deno.test("upgradeOpset() refuses ops it cannot carry across, naming op and opset", () => {
  const g = one(9, "Scatter", [2, 2], {});
  assert.throws(
    () => upgradeOpset(g),
    (e: unknown) =>
      e instanceof UnsupportedOpError && /Scatter/.test(e.message) && /opset 9/.test(e.message),
  );
  const mixed = one(10, "Resize", [1, 1, 4, 4], { mode: str("nearest") }, [[
    "s",
    float32([4], [1, 1, 2, 0.5]),
  ]]);
  assert.throws(() => upgradeOpset(mixed), UnsupportedOpError);
  // An op that is no ONNX op: one short line (it used to list all 146 ops it knows, ~1 KB).
  assert.throws(
    () => upgradeOpset(one(11, "FrobnicateX", [1], {})),
    (e: unknown) =>
      e instanceof UnsupportedOpError && e.message.length < 200 &&
      /cannot upgrade to opset 13: unsupported op FrobnicateX \(opset 11\); supported: the \d+ standard ONNX ops$/
        .test(e.message),
  );
  assert.throws(() => upgradeOpset(one(9, "Relu", [1], {}), { target: 22 }), /7\.\.21/);
  assert.throws(() => upgradeOpset(one(13, "Relu", [1], {}), { target: 11 }), /downgrades/);
});

Deno.test("upgradeOpset() returns a graph already at the target unchanged", () => {
  const g = one(13, "Relu", [1], {});
  assert.equal(upgradeOpset(g), g);
  assert.deepEqual([...int64([1], [1]).data], [1n]);
});

Deno.test("upgraded PP-OCR models with refreshed value_info pass Debian's onnx checker (full check)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const paths: string[] = [];
    for (const which of ["det", "rec", "cls"] as const) {
      const g = decode(Deno.readFileSync(await ppocrModel(which)));
      for (const target of [13, 17]) {
        const path = `${dir}/${which}_${target}.onnx`;
        Deno.writeFileSync(path, encode(withValueInfo(upgradeOpset(g, { target }))));
        paths.push(path);
      }
    }
    const results = await checkModels(paths);
    results.forEach(assertChecked);
    assert.equal(results.length, 6);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
