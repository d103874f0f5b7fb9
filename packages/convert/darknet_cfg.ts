/**
 * Darknet `.cfg` files: `[section]` headers followed by `key=value` lines. Like darknet, all
 * whitespace inside a line is ignored and `#`/`;` start comment lines; unlike darknet, a malformed
 * line or number is an error that names the file and line instead of a silent default.
 *
 * @module
 */
import { ModelError } from "@clipq/onnx/errors";

/** One `key=value` option and the line it is on. */
export interface CfgOption {
  readonly value: string;
  readonly line: number;
}

/** One `[section]` of a cfg file. */
export interface CfgSection {
  /** Section type without brackets, lower case (`net`, `convolutional`, …). */
  readonly type: string;
  /** Line of the `[section]` header (1-based). */
  readonly line: number;
  readonly options: ReadonlyMap<string, CfgOption>;
}

/**
 * Splits a cfg file into sections.
 *
 * @param text The cfg text.
 * @param name The file name for error messages.
 * @returns The sections in order.
 * @throws {ModelError} On a line outside any section, without `=`, or a key repeated outside
 *   `[net]` (where darknet reads the first).
 *
 * @example Usage
 * ```ts
 * import { parseCfg } from "@clipq/convert/darknet-cfg";
 * import assert from "node:assert/strict";
 * const s = parseCfg("[net]\nwidth = 416\n# comment\n[maxpool]\nsize=2", "a.cfg");
 * assert.deepEqual(s.map((x) => x.type), ["net", "maxpool"]);
 * assert.deepEqual(s[0]?.options.get("width"), { value: "416", line: 2 });
 * ```
 */
export function parseCfg(text: string, name: string): CfgSection[] {
  const sections: { type: string; line: number; options: Map<string, CfgOption> }[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = i + 1;
    const s = raw.replace(/\s+/g, "");
    if (s === "" || s[0] === "#" || s[0] === ";") return;
    if (s[0] === "[") {
      if (!s.endsWith("]") || s.length < 3) {
        throw new ModelError(
          `${name}:${line}: expected a section header like [net], found "${raw.trim()}"`,
        );
      }
      sections.push({ type: s.slice(1, -1).toLowerCase(), line, options: new Map() });
      return;
    }
    const current = sections[sections.length - 1];
    if (!current) {
      throw new ModelError(
        `${name}:${line}: expected a darknet cfg [section] header first, found "${raw.trim()}"`,
      );
    }
    const eq = s.indexOf("=");
    if (eq <= 0) {
      throw new ModelError(`${name}:${line}: expected key=value, found "${raw.trim()}"`);
    }
    const key = s.slice(0, eq);
    const prev = current.options.get(key);
    // darknet reads the first of a repeated key; its own yolov3-openimages.cfg and yolo9000.cfg
    // repeat batch and subdivisions in [net] (training settings), which is not an error there.
    if (prev && (current.type === "net" || current.type === "network")) return;
    if (prev) {
      throw new ModelError(
        `${name}:${line}: expected each key once per section, found "${key}" again (first on line ${prev.line})`,
      );
    }
    current.options.set(key, { value: s.slice(eq + 1), line });
  });
  return sections;
}

/**
 * Typed access to one section's options, with errors naming the file and line.
 *
 * @example Usage
 * ```ts
 * import { CfgReader, parseCfg } from "@clipq/convert/darknet-cfg";
 * import assert from "node:assert/strict";
 * const r = new CfgReader(parseCfg("[net]\nwidth=416\nsteps=1,2", "a.cfg")[0]!, "a.cfg");
 * assert.equal(r.int("width"), 416);
 * assert.deepEqual(r.ints("steps"), [1, 2]);
 * assert.throws(() => r.int("height"), /a\.cfg:1: expected height= in \[net\], found none/);
 * ```
 */
export class CfgReader {
  readonly #section: CfgSection;
  readonly #name: string;

  /** Wraps a section of the named file. */
  constructor(section: CfgSection, name: string) {
    this.#section = section;
    this.#name = name;
  }

  /** `file:line` of a key (or of the section header when the key is absent). */
  where(key?: string): string {
    const line = (key && this.#section.options.get(key)?.line) ?? this.#section.line;
    return `${this.#name}:${line}`;
  }

  /** Throws a ModelError at a key's line. */
  fail(key: string | undefined, detail: string): never {
    throw new ModelError(`${this.where(key)}: ${detail}`);
  }

  /** Whether the key is present. */
  has(key: string): boolean {
    return this.#section.options.has(key);
  }

  /** An integer option, or the fallback when absent (required when no fallback). */
  int(key: string, fallback?: number, min = -Infinity): number {
    const o = this.#section.options.get(key);
    if (!o) {
      if (fallback === undefined) {
        this.fail(key, `expected ${key}= in [${this.#section.type}], found none`);
      }
      return fallback!;
    }
    const n = Number(o.value);
    if (!/^[+-]?\d+$/.test(o.value) || !Number.isSafeInteger(n)) {
      this.fail(key, `expected ${key} to be an integer, found "${o.value}"`);
    }
    if (n < min) this.fail(key, `expected ${key} ≥ ${min}, found ${n}`);
    return n;
  }

  /** A float option, or the fallback. */
  float(key: string, fallback: number): number {
    const o = this.#section.options.get(key);
    if (!o) return fallback;
    const n = Number(o.value);
    if (o.value === "" || !Number.isFinite(n)) {
      this.fail(key, `expected ${key} to be a number, found "${o.value}"`);
    }
    return n;
  }

  /** A comma-separated integer list, or the fallback. */
  ints(key: string, fallback?: number[]): number[] {
    const o = this.#section.options.get(key);
    if (!o) {
      if (fallback === undefined) {
        this.fail(key, `expected ${key}= in [${this.#section.type}], found none`);
      }
      return fallback!;
    }
    const parts = o.value.split(",").filter((p) => p !== "");
    if (parts.length === 0 || !parts.every((p) => /^[+-]?\d+$/.test(p))) {
      this.fail(
        key,
        `expected ${key} to be a comma-separated list of integers, found "${o.value}"`,
      );
    }
    return parts.map(Number);
  }

  /** A string option, or the fallback. */
  str(key: string, fallback: string): string {
    return this.#section.options.get(key)?.value ?? fallback;
  }
}
