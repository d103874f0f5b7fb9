/**
 * Numeric expressions in config fields (`"rank": "ceil(0.25 * min(rows, cols))"`), parsed with a
 * restricted mathjs instance, checked at load and compiled to plain functions, so steps receive
 * `(vars) => number` and never see mathjs.
 *
 * mathjs loads on demand ({@linkcode loadExpressions}; the config loader calls it when a config
 * holds an expression): importing it took 0.55–0.77 s, most of `deno task quantize`'s start-up and
 * of every import of @clipq/pipeline, for the one option (svd-fc's rank) that takes expressions.
 *
 * @module
 */
import { ConfigError } from "@clipq/onnx/errors";

/** A compiled expression: variables in, a finite number out. */
export type NumericFunction = (vars: Readonly<Record<string, number>>) => number;

/** Options of {@linkcode compileExpression}. */
export interface ExpressionOptions {
  /** Config key path the expression is at, for error messages. */
  key?: string;
  /** Variables the expression may use (e.g. rows, cols, channels). */
  variables?: readonly string[];
}

/** Default options of {@linkcode compileExpression}. */
export const defaults = { key: "", variables: [] } satisfies ExpressionOptions;

type Fn = (...args: number[]) => number;

/** Functions an expression may call, with their arity. */
export const ALLOWED_FUNCTIONS: Readonly<Record<string, { fn: Fn; min: number; max: number }>> = {
  min: { fn: Math.min, min: 1, max: Infinity },
  max: { fn: Math.max, min: 1, max: Infinity },
  ceil: { fn: Math.ceil, min: 1, max: 1 },
  floor: { fn: Math.floor, min: 1, max: 1 },
  // mathjs and ONNX round half to even; JavaScript's Math.round rounds half up.
  round: { fn: roundHalfEven, min: 1, max: 1 },
  sqrt: { fn: Math.sqrt, min: 1, max: 1 },
  log: {
    fn: (x: number, b?: number) => b === undefined ? Math.log(x) : Math.log(x) / Math.log(b),
    min: 1,
    max: 2,
  },
  log2: { fn: Math.log2, min: 1, max: 1 },
  log10: { fn: Math.log10, min: 1, max: 1 },
  exp: { fn: Math.exp, min: 1, max: 1 },
  abs: { fn: Math.abs, min: 1, max: 1 },
  pow: { fn: Math.pow, min: 2, max: 2 },
  sign: { fn: Math.sign, min: 1, max: 1 },
};

const CONSTANTS: Readonly<Record<string, number>> = { pi: Math.PI, e: Math.E };

const OPERATORS: Readonly<Record<string, Fn>> = {
  add: (a, b) => a + b,
  subtract: (a, b) => a - b,
  multiply: (a, b) => a * b,
  divide: (a, b) => a / b,
  pow: (a, b) => a ** b,
  mod: (a, b) => a - b * Math.floor(a / b),
  unaryMinus: (a) => -a,
  unaryPlus: (a) => a,
};

function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Thrown by {@linkcode compileExpression} before {@linkcode loadExpressions} has run. */
export class ExpressionsNotLoaded extends Error {
  /**
   * @param source The expression that could not be compiled yet.
   * @param key Its config key path.
   */
  constructor(source: string, key: string) {
    super(
      `${key ? `${key}: ` : ""}expression ${
        JSON.stringify(source)
      } needs the expression engine: await loadExpressions() from @clipq/pipeline first (loadConfig does)`,
    );
    this.name = "ExpressionsNotLoaded";
  }
}

let parse: ((source: string) => unknown) | undefined;

/**
 * Loads the expression engine (mathjs) once; {@linkcode compileExpression} needs it. The config
 * loader calls it when a config holds an expression; code that passes expression strings to a
 * step factory calls it first.
 *
 * @example
 * ```ts
 * import { compileExpression, loadExpressions } from "@clipq/pipeline/expression";
 * import assert from "node:assert/strict";
 * await loadExpressions();
 * assert.equal(compileExpression("2 ^ 3")({}), 8);
 * ```
 */
export async function loadExpressions(): Promise<void> {
  if (parse) return;
  const { all, create } = await import("mathjs");
  // The mathjs security guide's recipe: keep a private handle on parse, then disable the functions
  // that alter the instance or parse further input. Our own AST walk below is the main barrier
  // (only numbers, listed symbols, listed functions and arithmetic operators compile); this is the
  // second.
  const math = create(all!);
  const own = math.parse;
  const disabled = (name: string) => () => {
    throw new Error(`function ${name} is disabled`);
  };
  math.import(
    Object.fromEntries(
      [
        "import",
        "createUnit",
        "evaluate",
        "parse",
        "simplify",
        "derivative",
        "resolve",
        "reviver",
        "compile",
      ]
        .map((n) => [n, disabled(n)]),
    ),
    { override: true },
  );
  parse = (source) => own(source);
}

interface MathNode {
  type: string;
  value?: unknown;
  name?: string;
  fn?: MathNode | string;
  op?: string;
  args?: MathNode[];
  content?: MathNode;
}

type Compiled = (vars: Readonly<Record<string, number>>) => number;

/**
 * Parses, checks and compiles a numeric expression. Only numbers, the allowed variables, the
 * constants `pi` and `e`, the functions in {@linkcode ALLOWED_FUNCTIONS} and `+ - * / ^ mod` are
 * accepted; assignments, function definitions, property access, strings, matrices and any other
 * function (`import`, `createUnit`, `evaluate`, …) are a ConfigError naming the key.
 *
 * @param source The expression text.
 * @param options Key path and allowed variables.
 * @returns A function of the variables that returns a finite number (throws ConfigError otherwise).
 * @throws {ExpressionsNotLoaded} Before {@linkcode loadExpressions} has run.
 *
 * @example Compile a rank rule
 * ```ts
 * import { compileExpression, loadExpressions } from "@clipq/pipeline/expression";
 * import assert from "node:assert/strict";
 * await loadExpressions();
 * const rank = compileExpression("ceil(0.25 * min(rows, cols))", { variables: ["rows", "cols"] });
 * assert.equal(rank({ rows: 4096, cols: 25088 }), 1024);
 * ```
 */
export function compileExpression(
  source: string,
  options: ExpressionOptions = {},
): NumericFunction {
  const opts = { ...defaults, ...options };
  const key = opts.key;
  const allowedVars = new Set(opts.variables);
  const fail = (detail: string): never => {
    throw new ConfigError(key, `${detail} in expression ${JSON.stringify(source)}`);
  };
  if (typeof source !== "string" || source.length > 1000) {
    fail(`expected an expression string of at most 1000 characters`);
  }
  if (!parse) throw new ExpressionsNotLoaded(source, key);
  let root: MathNode;
  try {
    root = parse(source) as unknown as MathNode;
  } catch (e) {
    return fail(`expected a valid expression; found a syntax error (${(e as Error).message})`);
  }
  let usesVariables = false;
  const walk = (n: MathNode): Compiled => {
    switch (n.type) {
      case "ConstantNode": {
        const v = n.value;
        if (typeof v !== "number" || !Number.isFinite(v)) {
          return fail(`expected numbers only; found ${JSON.stringify(String(v))}`);
        }
        return () => v;
      }
      case "SymbolNode": {
        const name = n.name ?? "";
        if (allowedVars.has(name)) {
          usesVariables = true;
          return (vars) => {
            const v = vars[name];
            if (typeof v !== "number") {
              throw new ConfigError(key, `variable ${name} has no value`);
            }
            return v;
          };
        }
        const c = Object.hasOwn(CONSTANTS, name) ? CONSTANTS[name] : undefined;
        if (c !== undefined) return () => c;
        return fail(
          `unknown variable "${name}"; allowed: ${
            [...allowedVars, ...Object.keys(CONSTANTS)].join(", ") || "none"
          }`,
        );
      }
      case "ParenthesisNode":
        return walk(n.content!);
      case "OperatorNode": {
        const op = typeof n.fn === "string" ? n.fn : "";
        const f = Object.hasOwn(OPERATORS, op) ? OPERATORS[op] : undefined;
        if (!f) return fail(`operator "${n.op}" is not allowed; allowed: + - * / ^ mod`);
        const args = (n.args ?? []).map(walk);
        if (args.length === 1) return (v) => f(args[0]!(v));
        return (v) => f(args[0]!(v), args[1]!(v));
      }
      case "FunctionNode": {
        const callee = n.fn as MathNode;
        const name = callee.type === "SymbolNode" ? callee.name ?? "" : "";
        const entry = Object.hasOwn(ALLOWED_FUNCTIONS, name) ? ALLOWED_FUNCTIONS[name] : undefined;
        if (!entry) {
          return fail(
            `function ${name || "(computed)"} is not allowed; allowed: ${
              Object.keys(ALLOWED_FUNCTIONS).join(", ")
            }`,
          );
        }
        const args = (n.args ?? []).map(walk);
        if (args.length < entry.min || args.length > entry.max) {
          return fail(
            `${name} expects ${entry.min}${
              entry.max === entry.min ? "" : "+"
            } argument(s); found ${args.length}`,
          );
        }
        return (v) => entry.fn(...args.map((a) => a(v)));
      }
      default:
        return fail(`${describe(n.type)} is not allowed`);
    }
  };
  const compiled = walk(root);
  const checked: NumericFunction = (vars) => {
    const value = compiled(vars);
    if (!Number.isFinite(value)) {
      throw new ConfigError(
        key,
        // A constant expression is evaluated at load with no variables: "for {}" said nothing.
        `expected ${JSON.stringify(source)} to give a finite number; found ${value}${
          Object.keys(vars).length ? ` for ${JSON.stringify(vars)}` : ""
        }`,
      );
    }
    return value;
  };
  // A constant expression ("10 ^ 400") is checked now, at load, not when a step first uses it
  // (which may be never, e.g. a rank rule on a model without FC layers).
  if (!usesVariables) checked({});
  return checked;
}

function describe(type: string): string {
  return ({
    AssignmentNode: "assignment",
    FunctionAssignmentNode: "function definition",
    AccessorNode: "property or index access",
    IndexNode: "indexing",
    ObjectNode: "object literal",
    ArrayNode: "matrix literal",
    BlockNode: "multiple statements",
    RangeNode: "range",
    ConditionalNode: "conditional",
    RelationalNode: "comparison",
  } as Record<string, string>)[type] ?? type;
}
