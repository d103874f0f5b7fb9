/**
 * Option descriptions of the built-in steps (shared by the factories, the config validator and the
 * JSON Schema).
 *
 * @module
 */
import type { ObjectSpec, Spec } from "../spec.ts";

const rangeOverrides: Spec = {
  type: "map",
  description: "Per-tensor range overrides {tensor: {min, max}}.",
  values: {
    type: "object",
    properties: {
      min: { type: "number", minimum: -1e9, maximum: 1e9 },
      max: { type: "number", minimum: -1e9, maximum: 1e9 },
    },
    required: ["min", "max"],
  },
};

/** Data calibration methods. */
export const DATA_METHODS = ["minmax", "percentile", "mse", "entropy", "aciq"] as const;

/** Options of the `normalize` step. */
export const NORMALIZE_OPTIONS: ObjectSpec = {
  type: "object",
  properties: {
    opset: {
      type: "number",
      integer: true,
      minimum: 13,
      maximum: 17,
      description: "Upgrade models below this opset (per-channel Q/DQ needs 13).",
    },
  },
};

/** Options of the `calibrate` step. */
export const CALIBRATE_OPTIONS: ObjectSpec = {
  type: "object",
  properties: {
    method: {
      type: "string",
      enum: [...DATA_METHODS, "clip-bounds"],
      description: "clip-bounds reads ranges from Clip/Relu6/HardSigmoid/… (no data).",
    },
    fallback: {
      type: "string",
      enum: [...DATA_METHODS, "float"],
      description:
        "For tensors clip-bounds leaves unbounded: a data method, or float (keep them float).",
    },
    percentile: { type: "number", minimum: 50, maximum: 100 },
    lossAware: {
      type: "anyOf",
      description:
        "Loss-aware clipping: minimize E(α)/E_min + lambda·(α/α_max)², the expected quantization error over the least reachable plus a penalty on wide clips, so a clip costs at most (1 + lambda)·E_min; false to disable.",
      options: [
        { type: "const", value: false },
        {
          type: "object",
          properties: { lambda: { type: "number", minimum: 0, maximum: 1000 } },
          required: ["lambda"],
        },
      ],
    },
    biasCorrection: {
      type: "boolean",
      description: "Fold measured per-channel output shifts into biases.",
    },
    refine: {
      type: "anyOf",
      description:
        "Refine each quantized tensor's range by its effect on the model's outputs: the float model run with that tensor alone on its int8 grid, at the calibrated range and scaled ones, on the first calibration images (needs calibration data); false to disable.",
      options: [
        { type: "boolean" },
        {
          type: "object",
          properties: {
            images: { type: "number", integer: true, minimum: 1, maximum: 64 },
            factors: {
              type: "array",
              items: { type: "number", minimum: 0.01, maximum: 100 },
              maxItems: 16,
            },
            minGain: { type: "number", minimum: 0, maximum: 0.99 },
            screen: { type: "number", minimum: 0, maximum: 0.99 },
          },
        },
      ],
    },
    samples: {
      type: "anyOf",
      description:
        'Values per tensor per image to histogram (min and max stay exact); "all" for every value (exact histograms, several times slower).',
      options: [
        { type: "number", integer: true, minimum: 1, maximum: 16777216 },
        { type: "const", value: "all" },
      ],
    },
    statistics: {
      type: "object",
      properties: {
        save: { type: "string", path: true, description: "Write the histograms (JSON) here." },
        load: {
          type: "string",
          path: true,
          description: "Reuse histograms instead of running the model.",
        },
      },
    },
    overrides: rangeOverrides,
    splitChannels: {
      type: "anyOf",
      description:
        "Split the channels of a conv → depthwise conv region into groups with their own int8 scales where a few channels stretch the depthwise input's range (exact in float); true for the defaults, false to disable.",
      options: [
        { type: "boolean" },
        {
          type: "object",
          properties: {
            groups: { type: "number", integer: true, minimum: 2, maximum: 8 },
            minGainDb: { type: "number", minimum: 0, maximum: 60 },
          },
        },
      ],
    },
  },
};

/** Options of the `quantize` step. */
export const QUANTIZE_OPTIONS: ObjectSpec = {
  type: "object",
  properties: {
    format: { type: "string", enum: ["qdq", "qoperator"] },
    activations: { type: "string", enum: ["u8", "s8"] },
    weights: { type: "string", enum: ["per-channel", "per-tensor"] },
    weightClip: { type: "string", enum: ["max", "mse"] },
    weightRounding: {
      type: "anyOf",
      description:
        "nearest, or gptq: each rounding error compensated on the layer's other inputs, weighed by their second moment over the calibration images (needs calibration data); {method: gptq, positions, maxBlock} sets the measurement.",
      options: [
        { type: "string", enum: ["nearest", "gptq"] },
        {
          type: "object",
          required: ["method"],
          properties: {
            method: { type: "const", value: "gptq" },
            positions: { type: "number", integer: true, minimum: 1, maximum: 1_000_000 },
            maxBlock: { type: "number", integer: true, minimum: 1, maximum: 16384 },
          },
        },
      ],
    },
    reduceRange: { type: "boolean", description: "7-bit weights for CPUs without VNNI." },
    exclude: {
      type: "object",
      properties: {
        names: { type: "array", items: { type: "string" }, maxItems: 100000 },
        ops: { type: "array", items: { type: "string" }, maxItems: 1000 },
        pattern: { type: "string", regex: true, description: "Regular expression on node names." },
        head: {
          type: "anyOf",
          options: [{ type: "const", value: "auto" }, { type: "const", value: false }],
        },
      },
    },
    overrides: rangeOverrides,
    maxDrop: {
      type: "number",
      minimum: 0,
      maximum: 1,
      description:
        "Accuracy-aware fallback: revert the most sensitive layers to float until agreement with the float model drops by at most this.",
    },
    fallbackRank: {
      type: "string",
      enum: ["isolated", "noise"],
      description:
        "How the fallback ranks layers: the score with each layer quantized alone (isolated), or the noise each adds in one run (noise).",
    },
  },
};

/** Variables of `svd-fc` rank expressions. */
export const SVD_VARIABLES = ["rows", "cols", "params"] as const;

/** Options of the `svd-fc` step. */
export const SVD_OPTIONS: ObjectSpec = {
  type: "object",
  properties: {
    rank: {
      type: "number",
      minimum: 1,
      maximum: 1e6,
      expression: SVD_VARIABLES,
      description: "Kept rank: a number or an expression of rows, cols, params.",
    },
    energy: {
      type: "number",
      minimum: 1e-6,
      maximum: 1,
      description: "Keep this fraction of Σσ².",
    },
    ratio: {
      type: "number",
      minimum: 1e-6,
      maximum: 0.999999,
      description: "Keep at most this fraction of each layer's parameters.",
    },
    minParams: { type: "number", integer: true, minimum: 0, maximum: 1e12 },
    overrides: {
      type: "array",
      maxItems: 10000,
      description: "Per-layer rules; the first matching wins.",
      items: {
        type: "object",
        properties: {
          name: { type: "string", description: "Exact node name." },
          pattern: {
            type: "string",
            regex: true,
            description: "Regular expression on node names.",
          },
          rank: { type: "number", integer: true, minimum: 1, maximum: 1e6 },
          energy: { type: "number", minimum: 1e-6, maximum: 1 },
          skip: { type: "boolean" },
        },
      },
    },
    seed: { type: "number", integer: true, minimum: 0, maximum: 2 ** 31 },
    backend: {
      type: "string",
      enum: ["ort", "js"],
      description: "Matrix products through onnxruntime (fast) or pure TypeScript.",
    },
  },
};
