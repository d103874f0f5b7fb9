/**
 * The project's one test command (`deno task test`; not named test.ts, which `deno test` would
 * pick up as a test module and run recursively): fetches test assets when missing, then runs
 * fmt --check, lint, type check, all tests (unit, tests/, --doc examples), a publish dry run and
 * the benchmark suite's quick smoke run (`deno task bench --quick`).
 * Prints a final `N passed, N failed` line and exits non-zero when anything failed.
 *
 * Flags: --quick skips fmt/lint/publish; any other arguments are passed to `deno test` as paths.
 *
 * @module
 */
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const args = Deno.args.filter((a) => a !== "--quick");
const quick = Deno.args.includes("--quick");
const deno = Deno.execPath();

async function step(
  name: string,
  cmd: string[],
  capture = false,
): Promise<{ ok: boolean; out: string }> {
  console.log(`\n── ${name}: deno ${cmd.join(" ")}`);
  const child = new Deno.Command(deno, {
    args: cmd,
    cwd: root,
    stdout: capture ? "piped" : "inherit",
    stderr: capture ? "piped" : "inherit",
  }).spawn();
  if (!capture) {
    const status = await child.status;
    return { ok: status.success, out: "" };
  }
  // Stream the test output while keeping it to read deno's summary line.
  const decoder = new TextDecoder();
  let out = "";
  const pump = async (stream: ReadableStream<Uint8Array>, sink: typeof Deno.stdout) => {
    for await (const chunk of stream) {
      out += decoder.decode(chunk, { stream: true });
      await sink.write(chunk);
    }
  };
  await Promise.all([pump(child.stdout, Deno.stdout), pump(child.stderr, Deno.stderr)]);
  const status = await child.status;
  return { ok: status.success, out };
}

let failedSteps = 0;
let passed = 0;
let failed = 0;

const assets = await step("assets", ["run", "-A", "tools/fetch_assets.ts", "--test"]);
if (!assets.ok) failedSteps++;
if (!quick) {
  if (!(await step("fmt", ["fmt", "--check"])).ok) failedSteps++;
  if (!(await step("lint", ["lint"])).ok) failedSteps++;
}
const tests = await step(
  "test",
  ["test", "-A", "--doc", "--parallel", ...(args.length ? args : [])],
  true,
);
// deno prints e.g. "ok | 120 passed (14 steps) | 0 failed (3s)" or "FAILED | 118 passed | 2 failed".
// deno-lint-ignore no-control-regex
const plain = tests.out.replace(/\x1b\[[0-9;]*m/g, "");
const summary = [...plain.matchAll(/(\d+) passed(?: \((\d+) steps?\))? \| (\d+) failed/g)].at(-1);
if (summary) {
  passed = Number(summary[1]);
  failed = Number(summary[3]);
} else if (!tests.ok) failed = 1;
if (!tests.ok && failed === 0) failed = 1;
if (!quick) {
  if (!(await step("publish dry run", ["publish", "--dry-run", "--allow-dirty"])).ok) failedSteps++;
  // The benchmark suite's smoke run: every bench module still runs end to end on small inputs.
  if (!(await step("bench smoke run", ["run", "-A", "tools/bench.ts", "--quick"])).ok) {
    failedSteps++;
  }
}
console.log(`\n${failedSteps} check step(s) failed besides tests`);
console.log(`${passed} passed, ${failed + failedSteps} failed`);
Deno.exit(failed + failedSteps > 0 || !tests.ok ? 1 : 0);
