/**
 * A small description language for config values. One description gives both the validator
 * (unknown keys rejected, paths resolved, expressions compiled, every error a ConfigError naming the
 * key path and what was expected vs found) and the JSON Schema shipped for editors, so the two
 * cannot drift apart.
 *
 * @module
 */
import { isAbsolute, resolve } from "node:path";
import { ConfigError } from "@clipq/onnx/errors";
import { compileExpression } from "./expression.ts";

/** Description of one config value. */
export type Spec =
  | NumberSpec
  | StringSpec
  | { readonly type: "boolean"; readonly description?: string }
  | { readonly type: "const"; readonly value: string | boolean; readonly description?: string }
  | ArraySpec
  | ObjectSpec
  | MapSpec
  | AnyOfSpec
  /** Anything; checked elsewhere (e.g. step entries, which their factories check). */
  | { readonly type: "any"; readonly description?: string };

/** A number; with `expression` it may also be a mathjs expression of those variables. */
export interface NumberSpec {
  /** Kind tag. */
  readonly type: "number";
  /** Shown in the JSON Schema. */
  readonly description?: string;
  /** Whole numbers only. */
  readonly integer?: boolean;
  /** Smallest allowed value. */
  readonly minimum?: number;
  /** Largest allowed value. */
  readonly maximum?: number;
  /** When set, the value may be an expression string over these variables; it is compiled. */
  readonly expression?: readonly string[];
}

/** A string; `path` strings resolve against the config's folder. */
export interface StringSpec {
  /** Kind tag. */
  readonly type: "string";
  /** Shown in the JSON Schema. */
  readonly description?: string;
  /** Allowed values. */
  readonly enum?: readonly string[];
  /** Resolve against the config folder (absolute paths and `asset:` names are kept). */
  readonly path?: boolean;
  /** Must compile as a JavaScript regular expression. */
  readonly regex?: boolean;
}

/** An array of one item kind. */
export interface ArraySpec {
  /** Kind tag. */
  readonly type: "array";
  /** Description of each item. */
  readonly items: Spec;
  /** Fewest items. */
  readonly minItems?: number;
  /** Most items. */
  readonly maxItems?: number;
  /** Shown in the JSON Schema. */
  readonly description?: string;
}

/** An object with known keys; any other key is an error. */
export interface ObjectSpec {
  /** Kind tag. */
  readonly type: "object";
  /** Known keys and their descriptions. */
  readonly properties: Readonly<Record<string, Spec>>;
  /** Keys that must be present. */
  readonly required?: readonly string[];
  /** Shown in the JSON Schema. */
  readonly description?: string;
}

/** An object used as a map from free-form names to values of one kind. */
export interface MapSpec {
  /** Kind tag. */
  readonly type: "map";
  /** Description of each value. */
  readonly values: Spec;
  /** Shown in the JSON Schema. */
  readonly description?: string;
}

/** One of several kinds (tried in order). */
export interface AnyOfSpec {
  /** Kind tag. */
  readonly type: "anyOf";
  /** The alternatives. */
  readonly options: readonly Spec[];
  /** Shown in the JSON Schema. */
  readonly description?: string;
}

/** Options of {@linkcode validate}. */
export interface ValidateOptions {
  /** Key path of the value (prefix of error key paths). */
  path?: string;
  /** Folder that relative `path` strings resolve against; when absent they are kept as written. */
  baseDir?: string;
}

/** Default options of {@linkcode validate}. */
export const defaults = { path: "" } satisfies ValidateOptions;

/** Shows a found value briefly in an error message. */
export function found(value: unknown): string {
  if (value === null) return "null";
  if (value === undefined) return "nothing";
  if (Array.isArray(value)) return `an array of ${value.length}`;
  if (typeof value === "number") return Number.isNaN(value) ? "NaN" : String(value);
  if (typeof value === "string") {
    return JSON.stringify(value.length > 60 ? value.slice(0, 57) + "..." : value);
  }
  if (typeof value === "object") return "an object";
  return `${typeof value} ${String(value)}`;
}

/** "a", "a and b", "a, b and c". */
const listed = (xs: readonly string[]): string =>
  xs.length < 2 ? xs.join("") : `${xs.slice(0, -1).join(", ")} and ${xs[xs.length - 1]}`;

function expectedOf(spec: Spec): string {
  switch (spec.type) {
    case "number": {
      const kind = spec.integer ? "an integer" : "a number";
      return spec.expression ? `${kind} or an expression` : kind;
    }
    case "string":
      return spec.enum ? `one of ${spec.enum.join(", ")}` : "a string";
    case "boolean":
      return "true or false";
    case "const":
      return JSON.stringify(spec.value);
    case "array":
      return "an array";
    case "object":
      // Alternatives of objects tell apart by their required keys ("an object or an object" did
      // not say which ones the model key takes).
      return spec.required?.length ? `an object with ${listed(spec.required)}` : "an object";
    case "map":
      return "an object";
    case "anyOf":
      return [...new Set(spec.options.map(expectedOf))].join(" or ");
    case "any":
      return "a value";
  }
}

const at = (path: string, key: string | number) =>
  typeof key === "number" ? `${path}[${key}]` : path ? `${path}.${key}` : key;

/** Resolves a config path against the config folder; `asset:` names and absolute paths are kept. */
export function resolvePath(value: string, baseDir: string | undefined): string {
  if (baseDir === undefined || value.startsWith("asset:") || isAbsolute(value)) return value;
  return resolve(baseDir, value);
}

function jsonType(value: unknown): string {
  return value === null ? "null" : Array.isArray(value) ? "array" : typeof value;
}

function accepts(spec: Spec, value: unknown): boolean {
  const t = jsonType(value);
  switch (spec.type) {
    case "number":
      return t === "number" || (spec.expression !== undefined && t === "string");
    case "const":
      return value === spec.value;
    case "map":
    case "object":
      return t === "object";
    case "anyOf":
      return spec.options.some((o) => accepts(o, value));
    case "any":
      return true;
    default:
      return t === spec.type;
  }
}

/**
 * Validates a value against a description and returns it normalized: paths resolved, expressions
 * compiled to functions, arrays and objects copied.
 *
 * @param spec The description.
 * @param value The value (parsed JSON or an options object from code).
 * @param options Key path and config folder.
 * @returns The normalized value.
 *
 * @example Reject an unknown key
 * ```ts
 * import { validate } from "@clipq/pipeline/spec";
 * import assert from "node:assert/strict";
 * const spec = { type: "object", properties: { limit: { type: "number", minimum: 1 } } } as const;
 * assert.deepEqual(validate(spec, { limit: 3 }), { limit: 3 });
 * assert.throws(() => validate(spec, { limt: 3 }, { path: "data" }), /data\.limt: unknown key; expected one of limit/);
 * ```
 */
export function validate(spec: Spec, value: unknown, options: ValidateOptions = {}): unknown {
  const { path, baseDir } = { ...defaults, ...options };
  const fail = (detail: string): never => {
    throw new ConfigError(path, detail);
  };
  const mismatch = () => fail(`expected ${expectedOf(spec)}; found ${found(value)}`);
  switch (spec.type) {
    case "any":
      return value;
    case "number": {
      // Already compiled (options validated once by the config loader, or built in code).
      if (typeof value === "function" && spec.expression) return value;
      if (typeof value === "string" && spec.expression) {
        const f = compileExpression(value, { key: path, variables: spec.expression });
        return f;
      }
      if (typeof value !== "number") return mismatch();
      if (!Number.isFinite(value)) return fail(`expected a finite number; found ${found(value)}`);
      if (spec.integer && !Number.isInteger(value)) {
        return fail(`expected an integer; found ${value}`);
      }
      if (spec.minimum !== undefined && value < spec.minimum) {
        return fail(`expected a number ≥ ${spec.minimum}; found ${value}`);
      }
      if (spec.maximum !== undefined && value > spec.maximum) {
        return fail(`expected a number ≤ ${spec.maximum}; found ${value}`);
      }
      return value;
    }
    case "string": {
      if (typeof value !== "string") return mismatch();
      if (spec.enum && !spec.enum.includes(value)) return mismatch();
      if (value.length > 4096) {
        return fail(`expected at most 4096 characters; found ${value.length}`);
      }
      if (spec.regex) {
        try {
          new RegExp(value);
        } catch (e) {
          return fail(
            `expected a regular expression; found ${found(value)} (${(e as Error).message})`,
          );
        }
      }
      if (spec.path) {
        if (value === "") return fail("expected a path; found an empty string");
        return resolvePath(value, baseDir);
      }
      return value;
    }
    case "boolean":
      return typeof value === "boolean" ? value : mismatch();
    case "const":
      return value === spec.value ? value : mismatch();
    case "array": {
      if (!Array.isArray(value)) return mismatch();
      if (spec.minItems !== undefined && value.length < spec.minItems) {
        return fail(`expected at least ${spec.minItems} item(s); found ${value.length}`);
      }
      if (spec.maxItems !== undefined && value.length > spec.maxItems) {
        return fail(`expected at most ${spec.maxItems} item(s); found ${value.length}`);
      }
      return value.map((v, i) =>
        validate(spec.items, v, {
          path: at(path, i),
          ...(baseDir !== undefined ? { baseDir } : {}),
        })
      );
    }
    case "object": {
      if (jsonType(value) !== "object") return mismatch();
      const obj = value as Record<string, unknown>;
      const out: Record<string, unknown> = {};
      for (const key of Object.keys(obj)) {
        const sub = Object.hasOwn(spec.properties, key) ? spec.properties[key] : undefined;
        if (!sub) {
          throw new ConfigError(
            at(path, key),
            `unknown key; expected one of ${Object.keys(spec.properties).join(", ")}`,
          );
        }
        if (obj[key] === undefined) continue;
        out[key] = validate(sub, obj[key], {
          path: at(path, key),
          ...(baseDir !== undefined ? { baseDir } : {}),
        });
      }
      for (const key of spec.required ?? []) {
        if (obj[key] === undefined) {
          throw new ConfigError(
            at(path, key),
            `expected ${expectedOf(spec.properties[key]!)}; found nothing (required)`,
          );
        }
      }
      return out;
    }
    case "map": {
      if (jsonType(value) !== "object") return mismatch();
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        out[k] = validate(spec.values, v, {
          path: at(path, k),
          ...(baseDir !== undefined ? { baseDir } : {}),
        });
      }
      return out;
    }
    case "anyOf": {
      // Report the error of the first option whose JSON type fits, so nested mistakes keep their
      // own key path instead of a vague "expected A or B".
      const fitting = spec.options.filter((o) =>
        accepts(o, value) || (o.type === "object" && jsonType(value) === "object")
      );
      if (fitting.length === 0) return mismatch();
      let first: unknown;
      for (const o of fitting) {
        try {
          return validate(o, value, options);
        } catch (e) {
          first ??= e;
        }
      }
      throw first;
    }
  }
}

/** JSON Schema (draft 2020-12) fragment of a value description. */
export type JsonSchema = Record<string, unknown>;

/**
 * The JSON Schema of a value description (what editors use to complete and check configs).
 *
 * @param spec The description.
 * @returns A JSON Schema object.
 *
 * @example Usage
 * ```ts
 * import { toJsonSchema } from "@clipq/pipeline/spec";
 * import assert from "node:assert/strict";
 * const s = toJsonSchema({ type: "string", enum: ["u8", "s8"] });
 * assert.deepEqual(s, { type: "string", enum: ["u8", "s8"] });
 * ```
 */
export function toJsonSchema(spec: Spec): JsonSchema {
  const d = spec.description ? { description: spec.description } : {};
  switch (spec.type) {
    case "number": {
      const num: JsonSchema = {
        type: spec.integer ? "integer" : "number",
        ...(spec.minimum !== undefined ? { minimum: spec.minimum } : {}),
        ...(spec.maximum !== undefined ? { maximum: spec.maximum } : {}),
      };
      if (!spec.expression) return { ...d, ...num };
      return {
        ...d,
        anyOf: [num, {
          type: "string",
          description: `mathjs expression over: ${spec.expression.join(", ") || "(no variables)"}`,
        }],
      };
    }
    case "string":
      return {
        ...d,
        type: "string",
        ...(spec.enum ? { enum: [...spec.enum] } : {}),
        ...(spec.path ? { minLength: 1 } : {}),
        ...(spec.regex ? { format: "regex" } : {}),
      };
    case "boolean":
      return { ...d, type: "boolean" };
    case "const":
      return { ...d, const: spec.value };
    case "array":
      return {
        ...d,
        type: "array",
        items: toJsonSchema(spec.items),
        ...(spec.minItems !== undefined ? { minItems: spec.minItems } : {}),
        ...(spec.maxItems !== undefined ? { maxItems: spec.maxItems } : {}),
      };
    case "object":
      return {
        ...d,
        type: "object",
        properties: Object.fromEntries(
          Object.entries(spec.properties).map(([k, v]) => [k, toJsonSchema(v)]),
        ),
        ...(spec.required?.length ? { required: [...spec.required] } : {}),
        additionalProperties: false,
      };
    case "map":
      return { ...d, type: "object", additionalProperties: toJsonSchema(spec.values) };
    case "anyOf":
      return { ...d, anyOf: spec.options.map(toJsonSchema) };
    case "any":
      return { ...d };
  }
}
