import assert from "node:assert/strict";
import { median } from "./_median.ts";

Deno.test("median() takes the middle value, the mean of the two middle ones, NaN of none", () => {
  const values = [5, 1, 3];
  assert.equal(median(values), 3);
  assert.deepEqual(values, [5, 1, 3], "not sorted in place");
  assert.equal(median([4, 1, 2, 10]), 3);
  assert.ok(Number.isNaN(median([])));
});
