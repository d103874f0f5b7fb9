/**
 * Metadata keys (ONNX `metadata_props`) shared between clipq packages, defined in one place, and the
 * shared shapes of what they hold.
 *
 * @module
 */

/** Keys clipq reads and writes in a model's metadata_props. */
export const METADATA_KEYS = {
  /** JSON {@linkcode HeadMetadata}: the detector head an importer found (darknet yolo layers, …). */
  head: "clipq.head",
  /** JSON: clipq version, config hash, methods used — written on every output model. */
  provenance: "clipq.provenance",
  /** JSON: the input preprocessing an importer knows (size, layout, scale …). */
  input: "clipq.input",
} as const;

/** A detector head description as importers write it and @clipq/detect reads it. */
export interface HeadMetadata {
  /** Head type, e.g. "yolov3". */
  type: string;
  /** Graph outputs that carry the head's raw predictions, in order. */
  outputs: string[];
  /** Per-output stride in input pixels. */
  strides?: number[];
  /** Per-output anchors as [width, height] pairs in input pixels. */
  anchors?: number[][][];
  /** Number of classes. */
  classes?: number;
  /** Other head-specific fields. */
  [key: string]: unknown;
}

/** A calibrated activation range and how it was found (`clip-bound`, `percentile`, `override` …). */
export interface TensorRange {
  readonly min: number;
  readonly max: number;
  readonly source: string;
}

/** Ranges of activation tensors by tensor name — the contract between calibrate and quantize. */
export type Ranges = ReadonlyMap<string, TensorRange>;

/**
 * The bounds a Relu (`max` absent) or Clip folded into a tensor's producer puts on every value it
 * can take: any range for the tensor is clamped to them.
 */
export interface ActivationBounds {
  readonly min: number;
  readonly max?: number;
}

/**
 * The second moment E[x·xᵀ] of the vectors a weighted layer's rows read (a Conv's input patches, a
 * MatMul's or Gemm's input rows), measured over calibration data — what error-compensating weight
 * rounding (GPTQ) weighs each rounding error with. Calibrate measures it; quantize reads it.
 *
 * A row's input vector has `dim` values, in the order of the weight's row (Conv: input channel of
 * the group, then kernel positions; Gemm/MatMul: K). Large vectors are cut into diagonal blocks at
 * `blocks` (boundaries from 0 to `dim`, whole input channels each), and only the second moment
 * inside each block is kept.
 */
export interface InputCovariance {
  /** The layer's groups (a Conv's `group`, else 1); group g's rows read their own vectors. */
  readonly groups: number;
  /** Values in one row's input vector. */
  readonly dim: number;
  /** Block boundaries: [0, …, dim]. */
  readonly blocks: readonly number[];
  /** Group g, block b at index g·(blocks.length − 1) + b: a row-major n_b×n_b matrix. */
  readonly matrices: readonly Float64Array[];
  /** Vectors averaged. */
  readonly samples: number;
}

/** Input second moments by layer (node) name — from calibrate to quantize, as ranges are. */
export type InputCovariances = ReadonlyMap<string, InputCovariance>;

/**
 * Reads the head metadata of a model, if any.
 *
 * @param metadata The graph's metadata map.
 * @returns The parsed head description, or undefined.
 *
 * @example Usage
 * ```ts
 * import { METADATA_KEYS, readHeadMetadata } from "@clipq/onnx/metadata";
 * import assert from "node:assert/strict";
 * const m = new Map([[METADATA_KEYS.head, '{"type":"yolov3","outputs":["a"]}']]);
 * assert.equal(readHeadMetadata(m)?.type, "yolov3");
 * ```
 */
export function readHeadMetadata(metadata: ReadonlyMap<string, string>): HeadMetadata | undefined {
  const text = metadata.get(METADATA_KEYS.head);
  if (!text) return undefined;
  try {
    const v = JSON.parse(text);
    return v && typeof v === "object" && typeof v.type === "string" && Array.isArray(v.outputs)
      ? v as HeadMetadata
      : undefined;
  } catch {
    return undefined;
  }
}
