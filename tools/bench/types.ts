/**
 * The shape every benchmark module returns: `export async function run(options: BenchOptions):
 * Promise<BenchResult[]>`. tools/bench.ts collects them into bench/results.json and
 * docs/BENCHMARKS.md. Figures are ratios measured in one run (machines are noisy), never timed tests.
 *
 * @module
 */

/** Options every benchmark module accepts. */
export interface BenchOptions {
  /** Smoke run for CI: small models, few repetitions. */
  quick: boolean;
}

/** One benchmark's figures. */
export interface BenchResult {
  /** What was measured, e.g. "yolov3-416 int8 vs float". */
  name: string;
  /** Figures by name; ratios are dimensionless, times in ms, sizes in bytes unless named otherwise. */
  metrics: Record<string, number | string>;
  /** Where a goal is missed and why, or how it was measured. */
  notes?: string;
}
