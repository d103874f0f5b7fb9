import assert from "node:assert/strict";
import { ConfigError } from "@clipq/onnx/errors";
import { compileExpression, loadExpressions } from "./expression.ts";

// Each test file runs in its own isolate; the engine loads once here for the tests below.
await loadExpressions();

const vars = ["rows", "cols", "channels"];

Deno.test("compileExpression() evaluates arithmetic and allowed functions", () => {
  const f = compileExpression("ceil(0.25 * min(rows, cols)) + max(1, 2) ^ 2 - 7 mod 4", {
    variables: vars,
  });
  assert.equal(f({ rows: 10, cols: 100 }), 3 + 4 - 3);
  assert.equal(
    compileExpression("round(2.5) + round(3.5) + sqrt(16) + log(8, 2)")({}),
    2 + 4 + 4 + 3,
  );
  assert.equal(compileExpression("-pi + pi")({}), 0);
});

Deno.test("compileExpression() rejects what could reach outside the sandbox", () => {
  const bad: [string, RegExp][] = [
    ['import({"a": 1})', /function import is not allowed/],
    ['createUnit("foo")', /function createUnit is not allowed/],
    ['evaluate("1+1")', /function evaluate is not allowed/],
    ['parse("1")', /function parse is not allowed/],
    ["f(x) = x", /function definition is not allowed/],
    ["rows = 3", /assignment is not allowed/],
    ["rows.constructor", /property or index access is not allowed/],
    ['"abc"', /numbers only/],
    ["[1, 2]", /matrix literal is not allowed/],
    ["rows > 1 ? 1 : 2", /conditional is not allowed/],
    ["secret + 1", /unknown variable "secret"/],
    ["ceil(", /syntax error/],
    ["cos(1)", /function cos is not allowed/],
  ];
  for (const [src, re] of bad) {
    assert.throws(
      () => compileExpression(src, { key: "steps[1].rank", variables: vars }),
      (e: unknown) =>
        e instanceof ConfigError && e.keyPath === "steps[1].rank" && re.test(e.message),
      src,
    );
  }
});

Deno.test("compileExpression() functions reject non-finite results at evaluation, constant ones at compilation", () => {
  const f = compileExpression("rows / cols", { key: "k", variables: vars });
  assert.throws(
    () => f({ rows: 1, cols: 0 }),
    /k: expected "rows \/ cols" to give a finite number; found Infinity for \{"rows":1,"cols":0\}$/,
  );
  // A constant expression has no variables to show (it used to end "for {}").
  assert.throws(
    () => compileExpression("0 / 0", { key: "k", variables: vars }),
    /k: expected "0 \/ 0" to give a finite number; found NaN$/,
  );
});

Deno.test("compileExpression() before loadExpressions() says how to load the engine; loading is what the config loader does", async () => {
  // A fresh process: this file's isolate has the engine loaded already.
  const module = new URL("./expression.ts", import.meta.url).href;
  const { stdout } = await new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `import { compileExpression } from ${JSON.stringify(module)};
       try { compileExpression("1 + 1", { key: "steps[2].rank" }); console.log("compiled"); }
       catch (e) { console.log(e.name + ": " + e.message); }`,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  assert.match(
    new TextDecoder().decode(stdout),
    /^ExpressionsNotLoaded: steps\[2\]\.rank: expression "1 \+ 1" needs the expression engine: await loadExpressions\(\)/,
  );
});
