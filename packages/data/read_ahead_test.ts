import assert from "node:assert/strict";
import { readAhead } from "./read_ahead.ts";

Deno.test("readAhead() yields every item in order, from sync and async sources", async () => {
  const got: number[] = [];
  for await (const x of readAhead([1, 2, 3])) got.push(x);
  async function* gen() {
    yield* [4, 5];
  }
  for await (const x of readAhead(gen())) got.push(x);
  assert.deepEqual(got, [1, 2, 3, 4, 5]);
});

Deno.test("readAhead() surfaces a source error at the item where it occurred", async () => {
  async function* failing() {
    yield 1;
    throw new Error("unreadable image calib/2.jpg");
  }
  const got: number[] = [];
  await assert.rejects(async () => {
    for await (const x of readAhead(failing())) got.push(x);
  }, /calib\/2\.jpg/);
  assert.deepEqual(got, [1]);
});

Deno.test("readAhead() closes the source when the consumer stops early", async () => {
  let closed = false, produced = 0;
  async function* source() {
    try {
      for (let i = 0; i < 10; i++) {
        produced++;
        yield i;
      }
    } finally {
      closed = true;
    }
  }
  for await (const x of readAhead(source())) if (x === 1) break;
  assert.equal(closed, true);
  // One item beyond the last one used was read ahead, no more.
  assert.equal(produced, 3);
});
