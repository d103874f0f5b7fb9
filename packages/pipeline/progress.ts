/**
 * Progress bars for long steps that degrade to plain lines when the output is not a terminal, and a
 * logger that quiet mode silences.
 *
 * @module
 */
import type { Logger, Progress } from "./step.ts";

/** Options of {@linkcode createReporter}. */
export interface ReporterOptions {
  /** Drop info lines and progress. */
  quiet?: boolean;
  /** Draw a bar in place (a terminal); otherwise print a line every 10 %. */
  tty?: boolean;
  /** Where text goes (stderr by default, so stdout stays for data). */
  write?: (text: string) => void;
}

/** Default reporter options. */
export const defaults = { quiet: false, tty: false } satisfies ReporterOptions;

/** A logger plus progress factory. */
export interface Reporter {
  readonly log: Logger;
  progress(label: string, total: number): Progress;
}

const encoder = new TextEncoder();

/**
 * Creates a logger and progress factory.
 *
 * @param options Quiet, terminal and sink.
 * @returns The reporter.
 *
 * @example Plain lines when not a terminal
 * ```ts
 * import { createReporter } from "@clipq/pipeline/progress";
 * import assert from "node:assert/strict";
 * const lines: string[] = [];
 * const r = createReporter({ write: (t) => lines.push(t) });
 * const p = r.progress("calibrate", 2);
 * p.tick();
 * p.tick();
 * p.done();
 * assert.ok(lines.some((l) => l.includes("calibrate 2/2")));
 * ```
 */
export function createReporter(options: ReporterOptions = {}): Reporter {
  const o = { ...defaults, ...options };
  const write = o.write ?? ((t: string) => Deno.stderr.writeSync(encoder.encode(t)));
  const log: Logger = {
    info: (m) => {
      if (!o.quiet) write(`${m}\n`);
    },
    warn: (m) => write(`warning: ${m}\n`),
  };
  return {
    log,
    progress(label, total) {
      let n = 0;
      let lastDecile = -1;
      const start = performance.now();
      const draw = () => {
        if (o.quiet) return;
        const frac = total > 0 ? Math.min(1, n / total) : 1;
        if (o.tty) {
          const width = 30;
          const fill = Math.round(frac * width);
          const secs = ((performance.now() - start) / 1000).toFixed(1);
          write(
            `\r${label} [${"#".repeat(fill)}${"-".repeat(width - fill)}] ${n}/${total} ${secs}s`,
          );
        } else {
          const decile = Math.floor(frac * 10);
          if (decile !== lastDecile) {
            lastDecile = decile;
            write(`${label} ${n}/${total}\n`);
          }
        }
      };
      return {
        tick(k = 1) {
          n += k;
          draw();
        },
        done() {
          if (o.tty && !o.quiet) write("\n");
        },
      };
    },
  };
}
