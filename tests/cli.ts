/**
 * The clipq command's main() run in this process with what it prints captured: the command's own
 * code path, without a process start per case. Shared by the CLI's tests.
 *
 * @module
 */
import { main } from "../tools/quantize.ts";

/** What one command run printed and returned. */
export interface CliRun {
  /** main()'s exit code. */
  code: number;
  /** console.log lines, joined by newlines. */
  stdout: string;
  /** console.error and console.warn lines, joined by newlines. */
  stderr: string;
}

/**
 * Runs `clipq <args>` in this process.
 *
 * @param args Command-line arguments.
 * @returns Exit code and the captured output.
 */
export async function runCli(...args: string[]): Promise<CliRun> {
  const out: string[] = [], err: string[] = [];
  const { log, error, warn } = console;
  console.log = (...a: unknown[]) => out.push(a.join(" "));
  console.warn = console.error = (...a: unknown[]) => err.push(a.join(" "));
  try {
    return { code: await main(args), stdout: out.join("\n"), stderr: err.join("\n") };
  } finally {
    Object.assign(console, { log, error, warn });
  }
}
