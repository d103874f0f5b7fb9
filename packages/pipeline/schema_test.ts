import assert from "node:assert/strict";
import { configSchema, parseConfig, SCHEMA_FILE } from "./config.ts";
import { builtinSteps } from "./builtins.ts";
import type { JsonSchema } from "./spec.ts";
import { workspace } from "./_fixtures_test.ts";

// Regenerate with: CLIPQ_UPDATE_SCHEMA=1 deno test -A packages/pipeline/schema_test.ts
const generated = configSchema(builtinSteps());
if (Deno.env.get("CLIPQ_UPDATE_SCHEMA") === "1") {
  Deno.writeTextFileSync(SCHEMA_FILE, JSON.stringify(generated, null, 2) + "\n");
}

/** A JSON Schema subset evaluator (what config.schema.json uses), to run sample configs through. */
function accepts(schema: JsonSchema, value: unknown): boolean {
  const s = schema as Record<string, unknown>;
  if (s.anyOf) return (s.anyOf as JsonSchema[]).some((x) => accepts(x, value));
  if ("const" in s) return value === s.const;
  if (s.not && accepts(s.not as JsonSchema, value)) return false;
  const t = value === null ? "null" : Array.isArray(value) ? "array" : typeof value;
  switch (s.type) {
    case "integer":
      if (!Number.isInteger(value)) return false;
      break;
    case "number":
    case "string":
    case "boolean":
    case "array":
    case "object":
      if (t !== s.type) return false;
  }
  if (typeof value === "number") {
    if (s.minimum !== undefined && value < (s.minimum as number)) return false;
    if (s.maximum !== undefined && value > (s.maximum as number)) return false;
  }
  if (typeof value === "string") {
    if (s.enum && !(s.enum as string[]).includes(value)) return false;
    if (s.minLength !== undefined && value.length < (s.minLength as number)) return false;
    if (s.pattern && !new RegExp(s.pattern as string).test(value)) return false;
  }
  if (Array.isArray(value)) {
    if (s.minItems !== undefined && value.length < (s.minItems as number)) return false;
    if (s.maxItems !== undefined && value.length > (s.maxItems as number)) return false;
    if (s.items && !value.every((v) => accepts(s.items as JsonSchema, v))) return false;
  }
  if (t === "object" && s.type === "object") {
    const obj = value as Record<string, unknown>;
    const props = (s.properties ?? {}) as Record<string, JsonSchema>;
    for (const r of (s.required ?? []) as string[]) if (!(r in obj)) return false;
    for (const [k, v] of Object.entries(obj)) {
      if (k in props) {
        if (!accepts(props[k]!, v)) return false;
      } else if (s.additionalProperties === false) return false;
      else if (
        typeof s.additionalProperties === "object" &&
        !accepts(s.additionalProperties as JsonSchema, v)
      ) {
        return false;
      }
    }
  }
  return true;
}

Deno.test("config.schema.json is the schema the validator's descriptions generate", () => {
  const shipped = JSON.parse(Deno.readTextFileSync(SCHEMA_FILE));
  assert.deepEqual(
    shipped,
    generated,
    "run CLIPQ_UPDATE_SCHEMA=1 deno test -A packages/pipeline/schema_test.ts",
  );
});

Deno.test("config.schema.json and the validator agree on sample configs", async () => {
  const ws = workspace();
  const base = { model: "model.onnx", output: "o.onnx" };
  const samples: unknown[] = [
    { ...base, steps: [] },
    {
      $schema: "../packages/pipeline/config.schema.json",
      ...base,
      report: "r.json",
      input: {
        name: "images",
        size: [32, 32],
        resize: "letterbox",
        layout: "NCHW",
        color: "BGR",
        scale: 0.5,
        mean: [1, 2, 3],
        std: [1, 1, 1],
        extra: { s: [1, 2] },
      },
      data: { calibration: { images: ".", limit: 4, batchSize: 2, onBadImage: "skip" } },
      head: {
        type: "yolov3",
        outputs: ["out"],
        strides: [32],
        anchors: [[[1, 2]]],
        classes: 80,
        nms: { iou: 0.45, score: 0.01, maxDetections: 100 },
      },
      steps: [
        { use: "normalize", opset: 13 },
        {
          use: "calibrate",
          method: "clip-bounds",
          fallback: "percentile",
          percentile: 99.9,
          lossAware: { lambda: 0.1 },
          biasCorrection: false,
          overrides: { t: { min: 0, max: 1 } },
        },
        {
          use: "quantize",
          format: "qoperator",
          activations: "s8",
          weights: "per-tensor",
          weightClip: "mse",
          reduceRange: true,
          exclude: { names: ["a"], ops: ["Sigmoid"], pattern: "^head", head: false },
        },
      ],
    },
    { ...base, steps: [{ use: "calibrate", method: "percentil" }] },
    { ...base, steps: [{ use: "quantize", formt: "qdq" }] },
    { ...base, steps: [{ use: "calibrate", lossAware: true }] },
    { ...base, input: { size: [32] }, steps: [] },
    { ...base, input: { size: [32, 32.5] }, steps: [] },
    { ...base, input: { scale: 0 }, steps: [] },
    { ...base, data: { calibration: { limit: 0 } }, steps: [] },
    { ...base, head: { type: "yolov3", outputs: [] }, steps: [] },
    { ...base, steps: [{ use: "normalize", opset: 12 }] },
    { ...base, extra: 1, steps: [] },
    { model: "model.onnx", steps: [] },
    { ...base, model: { darknet: { weights: "x" } }, steps: [] },
  ];
  try {
    for (const raw of samples) {
      const bySchema = accepts(generated, raw);
      let byValidator = true;
      try {
        await parseConfig(raw, { registry: builtinSteps(), baseDir: ws.dir });
      } catch {
        byValidator = false;
      }
      assert.equal(bySchema, byValidator, JSON.stringify(raw));
    }
  } finally {
    ws.cleanup();
  }
});
