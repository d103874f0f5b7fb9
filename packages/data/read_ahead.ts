/**
 * Reading one item ahead of the consumer. Decoding an image is JavaScript on the main thread, and
 * an async generator does no work between a `yield` and the consumer's next request: a loop that
 * decodes, then waits for onnxruntime, then decodes again leaves onnxruntime's threads idle while
 * it decodes (PP-OCRv4 det at 320 × 320: decoding the 9 benchmark photos took about twice as long
 * as running the model on them). Asking for the next item as soon as one is handed out lets the
 * decoding run while the consumer waits for the model.
 *
 * @module
 */

/**
 * Yields what `source` yields, in order, with the next item already requested while the consumer
 * works on the current one. Errors of the source surface at the item where they occurred; when the
 * consumer stops early, the request in flight is allowed to finish and the source is closed.
 *
 * @param source Items, async or not.
 * @returns The same items, read one ahead.
 *
 * @example The second item is read while the first is in use
 * ```ts
 * import { readAhead } from "@clipq/data/read-ahead";
 * import assert from "node:assert/strict";
 * const log: string[] = [];
 * async function* items() {
 *   for (const x of ["a", "b"]) {
 *     log.push(`read ${x}`);
 *     yield x;
 *   }
 * }
 * for await (const x of readAhead(items())) {
 *   await new Promise((resolve) => setTimeout(resolve, 1)); // the consumer's own work
 *   log.push(`used ${x}`);
 * }
 * assert.deepEqual(log, ["read a", "read b", "used a", "used b"]);
 * ```
 */
export async function* readAhead<T>(source: AsyncIterable<T> | Iterable<T>): AsyncGenerator<T> {
  const iterator = Symbol.asyncIterator in source
    ? (source as AsyncIterable<T>)[Symbol.asyncIterator]()
    : (source as Iterable<T>)[Symbol.iterator]();
  const request = (): Promise<IteratorResult<T>> => {
    let next: Promise<IteratorResult<T>>;
    try {
      next = Promise.resolve(iterator.next());
    } catch (e) {
      next = Promise.reject(e);
    }
    // Awaited in turn; this only keeps a failure from being reported as unhandled meanwhile.
    next.catch(() => {});
    return next;
  };
  let pending = request();
  let finished = false;
  try {
    while (true) {
      const result = await pending;
      if (result.done) {
        finished = true;
        return;
      }
      pending = request();
      yield result.value;
    }
  } catch (e) {
    finished = true;
    throw e;
  } finally {
    if (!finished) {
      // The consumer stopped early: let the read in flight end, then close the source (its own
      // cleanup, e.g. open files, runs once it is idle).
      await pending.catch(() => {});
      await iterator.return?.();
    }
  }
}
