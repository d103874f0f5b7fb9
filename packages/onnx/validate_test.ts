import assert from "node:assert/strict";
import { ModelBuilder } from "./builder.ts";
import { ModelError } from "./errors.ts";
import { emptyGraph, type Graph, node } from "./graph.ts";
import { float32, type Tensor } from "./tensor.ts";
import { validate } from "./validate.ts";

function small(): Graph {
  const b = new ModelBuilder({ seed: 1 });
  const x = b.input("x", [1, 2, 4, 4]);
  b.output(b.relu(b.conv(x, { outChannels: 3, kernel: 3 })), "y");
  return b.build();
}

function rejects(g: Graph, ...names: RegExp[]): void {
  assert.throws(() => validate(g), (e) => {
    assert.ok(e instanceof ModelError, `expected ModelError, got ${e}`);
    for (const n of names) assert.match(e.message, n);
    return true;
  });
}

Deno.test("validate() accepts a builder model and returns it", () => {
  const g = small();
  assert.equal(validate(g), g);
});

Deno.test("validate() accepts repeated node names and unsorted nodes", () => {
  const g = emptyGraph({
    inputs: [{ name: "x", dtype: "float32", shape: [1] }],
    nodes: [
      node({ name: "same", op: "Relu", inputs: ["t"], outputs: ["y"] }),
      node({ name: "same", op: "Relu", inputs: ["x"], outputs: ["t"] }),
    ],
    outputs: [{ name: "y" }],
  });
  assert.equal(validate(g), g);
});

Deno.test("validate() rejects a cycle, naming its nodes", () => {
  const g = small();
  const conv = g.nodes[0]!;
  const looped = {
    ...g,
    nodes: [{ ...conv, inputs: ["y", ...conv.inputs.slice(1)] }, g.nodes[1]!],
  };
  rejects(looped, /cycle/, /"conv_0" \(Conv\)/, /"relu_0" \(Relu\)/);
});

Deno.test("validate() rejects a dangling input, naming node and tensor", () => {
  const g = small();
  const relu = g.nodes[1]!;
  rejects(
    { ...g, nodes: [g.nodes[0]!, { ...relu, inputs: ["ghost"] }] },
    /node "relu_0" \(Relu\)/,
    /input "ghost" has no producer/,
  );
});

Deno.test("validate() rejects two producers of one tensor", () => {
  const g = small();
  const twice = { ...g, nodes: [...g.nodes, { ...g.nodes[1]!, name: "relu_dup" }] };
  rejects(
    twice,
    /tensor "y" has two producers: node "relu_0" \(Relu\) and node "relu_dup" \(Relu\)/,
  );
  const shadow = { ...g, nodes: [g.nodes[0]!, { ...g.nodes[1]!, outputs: ["conv_0.weight"] }] };
  rejects(
    shadow,
    /tensor "conv_0.weight" has two producers: initializer "conv_0.weight" and node "relu_0"/,
  );
});

Deno.test("validate() rejects an unknown element type", () => {
  const g = small();
  const bad = { dtype: "float8", dims: [3], data: new Uint8Array(3) } as unknown as Tensor;
  const initializers = new Map(g.initializers).set("conv_0.bias", bad);
  rejects({ ...g, initializers }, /initializer "conv_0.bias"/, /"float8"/);
  rejects(
    { ...g, inputs: [{ name: "x", dtype: "double" as "float64" }] },
    /graph input "x": unknown element type "double"/,
  );
});

Deno.test("validate() rejects initializer data that does not match dtype and dims", () => {
  const g = small();
  const short = new Map(g.initializers).set("conv_0.bias", {
    dtype: "float32",
    dims: [3],
    data: new Float32Array(2),
  });
  rejects(
    { ...g, initializers: short },
    /initializer "conv_0.bias": expected 12 bytes for float32 \[3\] but found 8/,
  );
  const kind = new Map(g.initializers).set("conv_0.bias", {
    dtype: "int64",
    dims: [3],
    data: new Float32Array(3),
  });
  rejects(
    { ...g, initializers: kind },
    /initializer "conv_0.bias": expected int64 data in a BigInt64Array but found Float32Array/,
  );
  const dims = new Map(g.initializers).set("conv_0.bias", {
    dtype: "float32",
    dims: [-3],
    data: new Float32Array(3),
  });
  rejects(
    { ...g, initializers: dims },
    /initializer "conv_0.bias": expected non-negative integer dims/,
  );
});

Deno.test("validate() rejects a graph output nothing produces", () => {
  const g = small();
  rejects(
    { ...g, outputs: [...g.outputs, { name: "missing" }] },
    /graph output "missing" has no producer/,
  );
});

Deno.test("validate() checks subgraphs with the outer scope visible", () => {
  const body = (input: string): Graph =>
    emptyGraph({
      name: "body",
      opsetImports: [],
      irVersion: 0,
      nodes: [node({ name: "inner", op: "Relu", inputs: [input], outputs: ["z"] })],
      outputs: [{ name: "z" }],
    });
  const outer = (input: string): Graph =>
    emptyGraph({
      inputs: [{ name: "x", dtype: "float32", shape: [1] }, {
        name: "c",
        dtype: "bool",
        shape: [],
      }],
      initializers: new Map([["w", float32([1], [2])]]),
      nodes: [
        node({ name: "scale", op: "Mul", inputs: ["x", "w"], outputs: ["xs"] }),
        node({
          name: "branch",
          op: "If",
          inputs: ["c"],
          outputs: ["y"],
          attributes: {
            then_branch: { type: "graph", value: body(input) },
            else_branch: { type: "graph", value: body("x") },
          },
        }),
      ],
      outputs: [{ name: "y" }],
    });
  validate(outer("xs"));
  validate(outer("w"));
  rejects(
    outer("nowhere"),
    /node "inner" \(Relu\) in node "branch" \(If\) attribute "then_branch": input "nowhere"/,
  );
});

Deno.test("validate() refuses a window op's stride, dilation, kernel or group below 1 and a negative pad", () => {
  const ints = (value: number[]) => ({ type: "ints" as const, value });
  for (
    const [attributes, error] of [
      [
        { strides: ints([0, 0]) },
        /node "c" \(Conv\): expected strides of at least 1 but found \[0, 0\]/,
      ],
      [{ dilations: ints([1, -1]) }, /expected dilations of at least 1/],
      [{ pads: ints([0, -2, 0, 0]) }, /expected pads of at least 0 but found \[0, -2, 0, 0\]/],
      [{ group: { type: "int" as const, value: 0 } }, /expected group of at least 1 but found 0/],
    ] as const
  ) {
    const g = emptyGraph({
      nodes: [node({ name: "c", op: "Conv", inputs: ["x", "w"], outputs: ["y"], attributes })],
      inputs: [{ name: "x", dtype: "float32", shape: [1, 1, 4, 4] }],
      initializers: new Map([["w", float32([1, 1, 1, 1], [1])]]),
      outputs: [{ name: "y" }],
    });
    assert.throws(
      () => validate(g),
      (e: Error) => e instanceof ModelError && error.test(e.message),
    );
  }
});
