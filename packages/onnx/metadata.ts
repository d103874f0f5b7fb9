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
