/**
 * The one external validator of the models tests write: Debian's python3-onnx 1.12
 * `onnx.checker.check_model(model, full_check=True)` under /usr/bin/python3 (installed through
 * tools/assets.ts when missing). Outside opinion matters here: our own validate() could share our
 * own misreadings of the spec.
 *
 * @module
 */
import { join } from "node:path";
import { ensureOnnxChecker } from "../tools/assets.ts";

const PYTHON = "/usr/bin/python3";

// One process checks many files (importing onnx costs ~0.5 s); each result is one JSON line so a
// message with newlines in it cannot be confused with the next file's result.
const SCRIPT = `
import json, sys
import onnx, onnx.checker
for p in sys.argv[1:]:
    try:
        m = onnx.load(p)
        onnx.checker.check_model(m, full_check=True)
        print(json.dumps({"path": p, "ok": True, "ir": m.ir_version,
            "opsets": {o.domain or "ai.onnx": o.version for o in m.opset_import}}))
    except Exception as e:
        print(json.dumps({"path": p, "ok": False, "error": type(e).__name__ + ": " + str(e)}))
    sys.stdout.flush()
`;

/** What the checker said about one model. */
export interface CheckResult {
  path: string;
  ok: boolean;
  /** The model's IR version (when it loaded). */
  ir?: number;
  /** Opset per domain ("ai.onnx" for the default one). */
  opsets?: Record<string, number>;
  /** The checker's exception, one line per the checker's own text. */
  error?: string;
}

let available: Promise<boolean> | undefined;

/**
 * Runs onnx.checker (full check) over model files in one Python process.
 *
 * @param paths Model files (external data beside them is read by onnx.load).
 * @returns One result per path, in order.
 */
export async function checkModels(paths: readonly string[]): Promise<CheckResult[]> {
  if (paths.length === 0) return [];
  available ??= ensureOnnxChecker();
  if (!(await available)) {
    throw new Error("Debian's python3-onnx (onnx.checker under /usr/bin/python3) is not available");
  }
  const out = await new Deno.Command(PYTHON, {
    args: ["-c", SCRIPT, ...paths],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  const lines = dec.decode(out.stdout).split("\n").filter((l) => l.startsWith("{"));
  if (lines.length !== paths.length) {
    throw new Error(
      `onnx.checker answered for ${lines.length} of ${paths.length} models: ${
        dec.decode(out.stderr).trim().split("\n").slice(-3).join(" | ")
      }`,
    );
  }
  return lines.map((l) => JSON.parse(l) as CheckResult);
}

/**
 * Checks one model (a file, or bytes written to a temporary file) and throws the checker's message
 * when it rejects it, or when it is beyond what Debian's onnx 1.12 accepts (IR > 8, opset > 17).
 *
 * @param model Model file path or ONNX bytes.
 * @returns The checker's result (IR version and opsets).
 */
export async function checkModel(model: string | Uint8Array): Promise<CheckResult> {
  let path = typeof model === "string" ? model : "";
  let dir = "";
  if (typeof model !== "string") {
    dir = await Deno.makeTempDir({ prefix: "clipq-check-" });
    path = join(dir, "model.onnx");
    await Deno.writeFile(path, model);
  }
  try {
    const [r] = await checkModels([path]);
    assertChecked(r!);
    return r!;
  } finally {
    if (dir) await Deno.remove(dir, { recursive: true });
  }
}

/**
 * Throws unless the result is a pass within IR ≤ 8 and default-domain opset ≤ 17.
 *
 * @param r A result of {@linkcode checkModels}.
 */
export function assertChecked(r: CheckResult): void {
  if (!r.ok) throw new Error(`onnx.checker rejects ${r.path}: ${r.error}`);
  if ((r.ir ?? 0) > 8) throw new Error(`${r.path}: IR ${r.ir} is beyond Debian's onnx 1.12 (≤ 8)`);
  const opset = r.opsets?.["ai.onnx"] ?? 0;
  if (opset > 17) throw new Error(`${r.path}: opset ${opset} is beyond Debian's onnx 1.12 (≤ 17)`);
}
