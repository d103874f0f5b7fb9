/**
 * Typed errors shared by every clipq package. Messages say what was expected and what was found,
 * and name the file, config key, node or tensor involved.
 *
 * @module
 */

/** Base class of every error clipq throws on purpose; anything else is an internal error. */
export class ClipqError extends Error {
  /** Creates a ClipqError. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/**
 * A configuration problem. The message starts with the key path (`steps[2].method: …`).
 *
 * @example Usage
 * ```ts
 * import { ConfigError } from "@clipq/onnx/errors";
 * import assert from "node:assert/strict";
 * const e = new ConfigError("steps[2].method", 'expected one of minmax, percentile; found "x"');
 * assert.equal(e.message, 'steps[2].method: expected one of minmax, percentile; found "x"');
 * assert.equal(e.keyPath, "steps[2].method");
 * ```
 */
export class ConfigError extends ClipqError {
  /** The config key path the problem is at. */
  readonly keyPath: string;
  /** Creates a ConfigError for a key path. */
  constructor(keyPath: string, detail: string, options?: ErrorOptions) {
    super(keyPath ? `${keyPath}: ${detail}` : detail, options);
    this.keyPath = keyPath;
  }
}

/**
 * A model that is malformed or that clipq cannot process; names the node and tensor.
 *
 * @example Usage
 * ```ts
 * import { ModelError } from "@clipq/onnx/errors";
 * import assert from "node:assert/strict";
 * assert.match(new ModelError('node "conv1": input "x" has no producer').message, /conv1/);
 * ```
 */
export class ModelError extends ClipqError {}

/**
 * An operator clipq has no implementation for; names op, domain, opset and what is supported.
 *
 * @example Usage
 * ```ts
 * import { UnsupportedOpError } from "@clipq/onnx/errors";
 * import assert from "node:assert/strict";
 * const e = new UnsupportedOpError("Foo", { domain: "", opset: 13, supported: ["Conv", "Relu"] });
 * assert.match(e.message, /Foo/);
 * assert.match(e.message, /Conv, Relu/);
 * ```
 */
export class UnsupportedOpError extends ClipqError {
  /** The op type that is not supported. */
  readonly op: string;
  /** Creates an UnsupportedOpError. */
  constructor(
    op: string,
    info: { domain?: string; opset?: number; supported?: readonly string[]; where?: string } = {},
    options?: ErrorOptions,
  ) {
    const domain = info.domain ? `${info.domain}::` : "";
    const opset = info.opset !== undefined ? ` (opset ${info.opset})` : "";
    const where = info.where ? `${info.where}: ` : "";
    const supported = info.supported ? `; supported: ${[...info.supported].sort().join(", ")}` : "";
    super(`${where}unsupported op ${domain}${op}${opset}${supported}`, options);
    this.op = op;
  }
}

/**
 * Input data (an image, a .npy file, annotations) that cannot be read; names the file.
 *
 * @example Usage
 * ```ts
 * import { DataError } from "@clipq/onnx/errors";
 * import assert from "node:assert/strict";
 * assert.match(new DataError("calib/a.jpg: expected a JPEG or PNG image, found 12 bytes of text").message, /a\.jpg/);
 * ```
 */
export class DataError extends ClipqError {}
