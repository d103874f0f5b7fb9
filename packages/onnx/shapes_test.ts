import assert from "node:assert/strict";
import { ConfigError, ModelError } from "./errors.ts";
import { type Attribute, type Dim, emptyGraph, type Graph, node } from "./graph.ts";
import { inferShapes, withValueInfo } from "./shapes.ts";
import { float32, int64, type Tensor } from "./tensor.ts";

/** One-node graph: input x of the given shape, extra constant inputs, output y. */
function one(
  op: string,
  shape: readonly Dim[] | undefined,
  attributes: Record<string, Attribute> = {},
  consts: [string, Tensor][] = [],
  outputs = ["y"],
): Graph {
  return emptyGraph({
    nodes: [node({ name: "n", op, inputs: ["x", ...consts.map(([k]) => k)], outputs, attributes })],
    initializers: new Map(consts.filter(([k]) => k !== "")),
    inputs: [{ name: "x", dtype: "float32", ...(shape ? { shape } : {}) }],
    outputs: outputs.map((name) => ({ name })),
  });
}
const ints = (value: number[]): Attribute => ({ type: "ints", value });
const int = (value: number): Attribute => ({ type: "int", value });
const shapeOf = (g: Graph, name = "y") => inferShapes(g).get(name)?.shape;

Deno.test("inferShapes() broadcasts, keeping unknown dims unknown and symbols named", () => {
  const g = emptyGraph({
    nodes: [node({ name: "a", op: "Add", inputs: ["x", "b"], outputs: ["y"] })],
    inputs: [
      { name: "x", dtype: "float32", shape: ["n", 1, null, 5] },
      { name: "b", dtype: "float32", shape: [4, 1, 5] },
    ],
  });
  assert.deepEqual(inferShapes(g).get("y"), { dtype: "float32", shape: ["n", 4, null, 5] });
});

Deno.test("inferShapes() follows Conv, ConvTranspose and pools (ceil mode, auto_pad)", () => {
  const w = float32([8, 3, 3, 3], new Float32Array(216));
  assert.deepEqual(
    shapeOf(
      one("Conv", [1, 3, 17, 16], { strides: ints([2, 2]), pads: ints([1, 1, 1, 1]) }, [["w", w]]),
    ),
    [1, 8, 9, 8],
  );
  assert.deepEqual(
    shapeOf(
      one("Conv", [1, 3, 17, 16], {
        strides: ints([2, 2]),
        auto_pad: { type: "string", value: "SAME_UPPER" },
      }, [["w", w]]),
    ),
    [1, 8, 9, 8],
  );
  const wt = float32([3, 4, 2, 2], new Float32Array(48));
  assert.deepEqual(
    shapeOf(one("ConvTranspose", [1, 3, 5, 7], { strides: ints([2, 2]) }, [["w", wt]])),
    [1, 4, 10, 14],
  );
  assert.deepEqual(
    shapeOf(
      one("MaxPool", [1, 3, 6, 7], {
        kernel_shape: ints([2, 2]),
        strides: ints([2, 2]),
        ceil_mode: int(1),
      }),
    ),
    [1, 3, 3, 4],
  );
  assert.deepEqual(shapeOf(one("GlobalAveragePool", ["b", 3, null, 7])), ["b", 3, 1, 1]);
});

Deno.test("inferShapes() handles Gemm transB and MatMul with 1-D and batched operands", () => {
  assert.deepEqual(
    shapeOf(
      one("Gemm", [2, 5], { transB: int(1) }, [["w", float32([7, 5], new Float32Array(35))]]),
    ),
    [2, 7],
  );
  assert.deepEqual(
    shapeOf(one("MatMul", ["b", 4, 3, 5], {}, [["w", float32([5, 6], new Float32Array(30))]])),
    ["b", 4, 3, 6],
  );
  assert.deepEqual(
    shapeOf(one("MatMul", [5], {}, [["w", float32([5, 6], new Float32Array(30))]])),
    [6],
  );
});

Deno.test("inferShapes() reads Squeeze/Unsqueeze axes from attributes and inputs", () => {
  assert.deepEqual(shapeOf(one("Squeeze", [1, 3, 1, 2], { axes: ints([0, -2]) })), [3, 2]);
  assert.deepEqual(shapeOf(one("Squeeze", [1, 3, 1, 2], {}, [["a", int64([1], [2])]])), [1, 3, 2]);
  assert.deepEqual(shapeOf(one("Squeeze", [1, 3, 1, 2])), [3, 2]);
  assert.deepEqual(shapeOf(one("Unsqueeze", [3, 2], { axes: ints([0, 3]) })), [1, 3, 2, 1]);
  assert.deepEqual(shapeOf(one("Unsqueeze", [3, 2], {}, [["a", int64([1], [-1])]])), [3, 2, 1]);
});

Deno.test("inferShapes() slices with negative indices, steps and clamping in both forms", () => {
  assert.deepEqual(
    shapeOf(
      one("Slice", [10, 8], { starts: ints([1, -3]), ends: ints([1000, -1]), axes: ints([0, 1]) }),
    ),
    [9, 2],
  );
  assert.deepEqual(
    shapeOf(one("Slice", [10, 8], {}, [
      ["s", int64([1], [-1])],
      ["e", int64([1], [-1000])],
      ["a", int64([1], [0])],
      ["t", int64([1], [-3])],
    ])),
    [4, 8],
  );
});

Deno.test("inferShapes() splits evenly or by sizes, and pads", () => {
  const even = inferShapes(one("Split", [6, 4], { axis: int(0) }, [], ["a", "b", "c"]));
  assert.deepEqual(["a", "b", "c"].map((n) => even.get(n)?.shape), [[2, 4], [2, 4], [2, 4]]);
  const sized = inferShapes(
    one("Split", [6, 4], { axis: int(1) }, [["s", int64([2], [1, 3])]], ["a", "b"]),
  );
  assert.deepEqual(["a", "b"].map((n) => sized.get(n)?.shape), [[6, 1], [6, 3]]);
  assert.deepEqual(shapeOf(one("Pad", [1, 3, 4, 4], { pads: ints([0, 0, 1, 2, 0, 0, 3, 4]) })), [
    1,
    3,
    8,
    10,
  ]);
  assert.deepEqual(
    shapeOf(one("Pad", [1, 3, 4, 4], {}, [["p", int64([8], [0, 0, 1, 1, 0, 0, 1, 1])]])),
    [1, 3, 6, 6],
  );
});

Deno.test("inferShapes() resizes by scales or sizes, and Upsample by scales", () => {
  const scales = float32([4], [1, 1, 2, 2]);
  const empty = float32([0], []);
  assert.deepEqual(shapeOf(one("Resize", ["n", 3, 5, 6], {}, [["r", empty], ["s", scales]])), [
    "n",
    3,
    10,
    12,
  ]);
  assert.deepEqual(
    shapeOf(
      one("Resize", [1, 3, 5, 6], {}, [["r", empty], ["s", empty], [
        "z",
        int64([4], [1, 3, 7, 9]),
      ]]),
    ),
    [1, 3, 7, 9],
  );
  assert.deepEqual(shapeOf(one("Upsample", [1, 3, 5, 6], {}, [["s", scales]])), [1, 3, 10, 12]);
});

Deno.test("inferShapes() folds Shape→Gather→Unsqueeze→Concat into a Reshape target", () => {
  const g = emptyGraph({
    nodes: [
      node({ name: "s", op: "Shape", inputs: ["x"], outputs: ["s"] }),
      node({ name: "g", op: "Gather", inputs: ["s", "i0"], outputs: ["b"] }),
      node({
        name: "u",
        op: "Unsqueeze",
        inputs: ["b"],
        outputs: ["b1"],
        attributes: { axes: ints([0]) },
      }),
      node({
        name: "c",
        op: "Concat",
        inputs: ["b1", "m"],
        outputs: ["t"],
        attributes: { axis: int(0) },
      }),
      node({ name: "r", op: "Reshape", inputs: ["x", "t"], outputs: ["y"] }),
      node({ name: "f", op: "Flatten", inputs: ["x"], outputs: ["f"] }),
      node({ name: "k", op: "Cast", inputs: ["s"], outputs: ["k"], attributes: { to: int(6) } }),
    ],
    initializers: new Map([["i0", int64([], [0])], ["m", int64([2], [0, -1])]]),
    inputs: [{ name: "x", dtype: "float32", shape: ["batch", 2, 3, 4] }],
  });
  const s = inferShapes(g);
  assert.deepEqual(s.get("t"), { dtype: "int64", shape: [3] });
  assert.deepEqual(s.get("y")?.shape, ["batch", 2, 12]);
  assert.deepEqual(s.get("f")?.shape, ["batch", 24]);
  assert.deepEqual(s.get("k"), { dtype: "int32", shape: [4] });
  assert.deepEqual(inferShapes(g, { inputShapes: { x: [5, 2, 3, 4] } }).get("y")?.shape, [
    5,
    2,
    12,
  ]);
});

Deno.test("inferShapes() types quantization ops by their zero points", () => {
  const g = emptyGraph({
    nodes: [
      node({ name: "q", op: "QuantizeLinear", inputs: ["x", "s", "z"], outputs: ["q"] }),
      node({ name: "d", op: "DequantizeLinear", inputs: ["q", "s", "z"], outputs: ["y"] }),
    ],
    initializers: new Map<string, Tensor>([
      ["s", float32([], [0.1])],
      ["z", { dtype: "int8", dims: [], data: Int8Array.of(0) }],
    ]),
    inputs: [{ name: "x", dtype: "float32", shape: [2, 3] }],
  });
  const s = inferShapes(g);
  assert.deepEqual(s.get("q"), { dtype: "int8", shape: [2, 3] });
  assert.deepEqual(s.get("y"), { dtype: "float32", shape: [2, 3] });
});

Deno.test("inferShapes() leaves unknown ops unknown unless value_info says otherwise", () => {
  const g = one("MyCustomOp", [2]);
  assert.deepEqual(inferShapes(g).get("y"), { dtype: null, shape: null });
  const known = { ...g, valueInfo: [{ name: "y", dtype: "int32" as const, shape: [7] }] };
  assert.deepEqual(inferShapes(known).get("y"), { dtype: "int32", shape: [7] });
});

Deno.test("inferShapes() names the node of an out-of-range axis and rejects unknown inputShapes", () => {
  assert.throws(
    () => inferShapes(one("Concat", [2, 3], { axis: int(5) })),
    (e: unknown) => e instanceof ModelError && /"n"/.test(e.message) && /found 5/.test(e.message),
  );
  assert.throws(() => inferShapes(one("Relu", [2]), { inputShapes: { nope: [1] } }), ConfigError);
});

Deno.test("withValueInfo() replaces stale entries and drops those of removed tensors", () => {
  const g = {
    ...one("Relu", [2, 3]),
    valueInfo: [
      { name: "y", dtype: "int8" as const, shape: [9] },
      { name: "gone", dtype: "float32" as const, shape: [1] },
    ],
    outputs: [],
  };
  assert.deepEqual(withValueInfo(g).valueInfo, [{ name: "y", dtype: "float32", shape: [2, 3] }]);
});

Deno.test("inferShapes() gives NonMaxSuppression an unknown row count and RoiAlign one map per RoI", () => {
  const g = emptyGraph({
    nodes: [
      node({
        name: "nms",
        op: "NonMaxSuppression",
        inputs: ["boxes", "scores"],
        outputs: ["keep"],
      }),
      node({
        name: "roi",
        op: "RoiAlign",
        inputs: ["x", "rois", "idx"],
        outputs: ["y"],
        attributes: { output_height: int(7), output_width: int(5) },
      }),
      node({
        name: "pool",
        op: "MaxRoiPool",
        inputs: ["x", "rois"],
        outputs: ["p"],
        attributes: { pooled_shape: ints([2, 3]) },
      }),
    ],
    inputs: [
      { name: "x", dtype: "float32", shape: [1, 16, 20, 20] },
      { name: "boxes", dtype: "float32", shape: [1, 100, 4] },
      { name: "scores", dtype: "float32", shape: [1, 1, 100] },
      { name: "rois", dtype: "float32", shape: ["k", 4] },
      { name: "idx", dtype: "int64", shape: ["k"] },
    ],
    outputs: [{ name: "y" }, { name: "p" }, { name: "keep" }],
  });
  const shapes = inferShapes(g);
  assert.deepEqual(shapes.get("keep"), { dtype: "int64", shape: [null, 3] });
  assert.deepEqual(shapes.get("y"), { dtype: "float32", shape: ["k", 16, 7, 5] });
  assert.deepEqual(shapes.get("p"), { dtype: "float32", shape: ["k", 16, 2, 3] });
});
