/**
 * The middle of some values, the mean of the two middle ones for an even count (NaN for none): the
 * latency summaries' median and the profile's per-node run time share it.
 *
 * @module
 */

/**
 * The median.
 *
 * @param values The values (not modified).
 * @returns The middle value, the mean of the two middle ones for an even count, NaN when empty.
 */
export function median(values: readonly number[]): number {
  const v = [...values].sort((a, b) => a - b);
  const n = v.length;
  if (n === 0) return NaN;
  return n % 2 === 1 ? v[(n - 1) / 2]! : (v[n / 2 - 1]! + v[n / 2]!) / 2;
}
