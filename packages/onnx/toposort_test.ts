import assert from "node:assert/strict";
import { ModelError } from "./errors.ts";
import { emptyGraph, type Graph, node } from "./graph.ts";
import { implicitInputs, toposort } from "./toposort.ts";

const relu = (name: string, input: string, output: string) =>
  node({ name, op: "Relu", inputs: [input], outputs: [output] });

Deno.test("toposort() orders producers before consumers and keeps sorted graphs unchanged", () => {
  const g = emptyGraph({
    nodes: [
      node({ name: "add", op: "Add", inputs: ["a", "b"], outputs: ["y"] }),
      relu("rb", "t", "b"),
      relu("ra", "x", "a"),
      relu("rt", "x", "t"),
    ],
  });
  const sorted = toposort(g);
  assert.deepEqual(sorted.nodes.map((n) => n.name), ["ra", "rt", "rb", "add"]);
  assert.deepEqual(toposort(sorted).nodes, sorted.nodes);
  assert.equal(g.nodes[0]!.name, "add", "the input graph is not mutated");
});

Deno.test("toposort() is stable: independent nodes keep their original order", () => {
  const nodes = ["d", "c", "b", "a"].map((n) => relu(n, "x", `${n}_out`));
  assert.deepEqual(toposort(emptyGraph({ nodes })).nodes.map((n) => n.name), ["d", "c", "b", "a"]);
});

Deno.test("toposort() names the nodes of a cycle in its ModelError", () => {
  const g = emptyGraph({
    nodes: [
      relu("first", "x", "a"),
      node({ name: "p", op: "Add", inputs: ["a", "r_out"], outputs: ["p_out"] }),
      relu("q", "p_out", "q_out"),
      relu("r", "q_out", "r_out"),
    ],
  });
  assert.throws(() => toposort(g), (e) => {
    assert.ok(e instanceof ModelError);
    assert.match(e.message, /cycle/);
    for (const n of ['"p"', '"q"', '"r"']) assert.ok(e.message.includes(n), e.message);
    assert.ok(!e.message.includes('"first"'), e.message);
    return true;
  });
});

Deno.test("toposort() orders a node after producers of tensors its subgraphs read", () => {
  const body: Graph = emptyGraph({
    opsetImports: [],
    nodes: [relu("inner", "late", "z")],
    outputs: [{ name: "z" }],
  });
  const ifNode = node({
    name: "if",
    op: "If",
    inputs: ["cond"],
    outputs: ["y"],
    attributes: {
      then_branch: { type: "graph", value: body },
      else_branch: { type: "graph", value: body },
    },
  });
  assert.deepEqual(implicitInputs(ifNode), ["late"]);
  const g = emptyGraph({ nodes: [ifNode, relu("producer", "x", "late")] });
  assert.deepEqual(toposort(g).nodes.map((n) => n.name), ["producer", "if"]);
});
