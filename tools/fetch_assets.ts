/**
 * Fetches every asset the tests and benchmarks use (cached; a second run does nothing):
 * `deno run -A tools/fetch_assets.ts [--test]`. `--test` also installs the external tools the test
 * suite needs (Debian python3-onnx for onnx.checker, chromium for the report test).
 *
 * @module
 */
import { ensureAsset, ensureChromium, ensureOnnxChecker } from "./assets.ts";

const names = ["ocr-models", "human-models", "darknet", "skimage", "fonts"] as const;
for (const n of names) {
  const t = performance.now();
  const dir = await ensureAsset(n);
  console.log(`asset ${n}: ${dir} (${((performance.now() - t) / 1000).toFixed(1)} s)`);
}
if (Deno.args.includes("--test")) {
  console.log(`onnx.checker: ${(await ensureOnnxChecker()) ? "available" : "MISSING"}`);
  console.log(`chromium: ${await ensureChromium()}`);
}
