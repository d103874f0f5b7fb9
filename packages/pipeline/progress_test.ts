import assert from "node:assert/strict";
import { createReporter } from "./progress.ts";

Deno.test("createReporter() draws a bar in place on a terminal and plain lines elsewhere", () => {
  const tty: string[] = [];
  const bar = createReporter({ tty: true, write: (t) => tty.push(t) }).progress("calibration", 4);
  for (let i = 0; i < 4; i++) bar.tick();
  bar.done();
  assert.equal(tty.length, 5);
  assert.ok(tty.slice(0, 4).every((t) => t.startsWith("\rcalibration [")));
  assert.match(tty[3]!, /\[#{30}\] 4\/4/);
  assert.equal(tty[4], "\n");

  const plain: string[] = [];
  const lines = createReporter({ write: (t) => plain.push(t) }).progress("calibration", 100);
  for (let i = 0; i < 100; i++) lines.tick();
  lines.done();
  assert.ok(plain.every((t) => !t.includes("\r") && t.endsWith("\n")));
  assert.equal(plain.length, 11, "a first line, then one per tenth");
  assert.equal(plain.at(-1), "calibration 100/100\n");

  const quiet: string[] = [];
  const r = createReporter({ quiet: true, tty: true, write: (t) => quiet.push(t) });
  r.progress("x", 2).tick();
  r.log.info("hidden");
  r.log.warn("shown");
  assert.deepEqual(quiet, ["warning: shown\n"]);
});
