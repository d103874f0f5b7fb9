import assert from "node:assert/strict";
import { ConfigError, ModelError } from "./errors.ts";
import { type Attribute, emptyGraph, type Graph, node, opsetOf } from "./graph.ts";
import { upgradeOpset } from "./upgrade.ts";

function one(
  opset: number,
  op: string,
  attributes: Record<string, Attribute>,
  dims = [2, 3],
): Graph {
  return emptyGraph({
    name: "m",
    opsetImports: [{ domain: "", version: opset }, { domain: "com.microsoft", version: 1 }],
    irVersion: 4,
    nodes: [node({ name: "n", op, inputs: ["x"], outputs: ["y"], attributes })],
    inputs: [{ name: "x", dtype: "float32", shape: dims }],
    outputs: [{ name: "y", dtype: "float32" }],
  });
}

Deno.test("upgradeOpset() bumps only the default domain and raises the IR version", () => {
  const up = upgradeOpset(one(9, "Relu", {}), { target: 15 });
  assert.equal(opsetOf(up), 15);
  assert.equal(opsetOf(up, "com.microsoft"), 1);
  assert.equal(up.irVersion, 8);
  assert.equal(upgradeOpset(one(9, "Relu", {})).irVersion, 7);
});

Deno.test("upgradeOpset() writes Slice attributes as saturated int64 inputs", () => {
  const up = upgradeOpset(
    one(9, "Slice", {
      starts: { type: "ints", value: [0] },
      ends: { type: "ints", value: [9223372036854775807] },
    }),
  );
  const [x, s, e, ...rest] = up.nodes[0]!.inputs;
  assert.equal(x, "x");
  assert.deepEqual(rest, []);
  assert.deepEqual([...up.initializers.get(s!)!.data], [0n]);
  assert.deepEqual([...up.initializers.get(e!)!.data], [2n ** 63n - 1n]);
  assert.deepEqual(up.nodes[0]!.attributes, {});
});

Deno.test("upgradeOpset() makes a fresh name when the obvious one is taken", () => {
  const g = one(9, "Unsqueeze", { axes: { type: "ints", value: [0] } });
  const taken = {
    ...g,
    inputs: [...g.inputs, { name: "n_axes", dtype: "int64" as const, shape: [1] }],
  };
  const up = upgradeOpset(taken);
  assert.equal(up.nodes[0]!.inputs[1], "n_axes_1");
});

Deno.test("upgradeOpset() keeps nodes of other domains as they are", () => {
  const g = one(9, "Relu", {});
  const custom = node({
    name: "c",
    op: "FusedConv",
    domain: "com.microsoft",
    inputs: ["y"],
    outputs: ["z"],
  });
  const up = upgradeOpset({ ...g, nodes: [...g.nodes, custom] });
  assert.equal(up.nodes[1], custom);
});

Deno.test("upgradeOpset() checks the target and the source opset up front", () => {
  assert.throws(() => upgradeOpset(one(9, "Relu", {}), { target: 12.5 }), ConfigError);
  assert.throws(
    () => upgradeOpset(one(6, "Relu", {})),
    (e: unknown) => e instanceof ModelError && /found 6/.test(e.message),
  );
  assert.throws(
    () => upgradeOpset({ ...one(9, "Relu", {}), opsetImports: [] }),
    (e: unknown) => e instanceof ModelError && /"m"/.test(e.message),
  );
});
