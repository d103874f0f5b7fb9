import assert from "node:assert/strict";
import { ConfigError } from "@clipq/onnx/errors";
import { createRegistry, mergeRegistries } from "./registry.ts";
import { defaultRegistry } from "./default_registry.ts";

const q = { mark: () => undefined };

Deno.test("createRegistry() refuses an op type registered twice", () => {
  assert.throws(() => createRegistry({ Conv: q }, { Conv: q }), ConfigError);
});

Deno.test("mergeRegistries() adds a plugin's ops but not a second Conv", () => {
  const merged = mergeRegistries(defaultRegistry, createRegistry({ MyOp: q }));
  assert.ok(merged.has("MyOp") && merged.has("Conv"));
  assert.throws(() => mergeRegistries(defaultRegistry, createRegistry({ Conv: q })), /Conv/);
});

Deno.test("defaultRegistry covers the required op families", () => {
  for (
    const op of [
      "Conv",
      "ConvTranspose",
      "Gemm",
      "MatMul",
      "Add",
      "Mul",
      "Concat",
      "MaxPool",
      "AveragePool",
      "GlobalAveragePool",
      "Resize",
      "LeakyRelu",
      "Relu",
      "Clip",
      "Sigmoid",
      "HardSigmoid",
      "Reshape",
      "Transpose",
      "Flatten",
      "Squeeze",
      "Unsqueeze",
      "Split",
      "Slice",
      "Pad",
    ]
  ) assert.ok(defaultRegistry.has(op), op);
});
