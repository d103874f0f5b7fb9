import assert from "node:assert/strict";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { ensureOnnxChecker, ppocrModel } from "../../tools/assets.ts";
import { ModelBuilder, seededRandom } from "./builder.ts";
import { ConfigError, ModelError } from "./errors.ts";
import type { Graph } from "./graph.ts";
import { loadModel, modelBytes, saveModel } from "./io.ts";
import { normalizeWithReport } from "./normalize.ts";
import { encode } from "./proto.ts";
import { validate } from "./validate.ts";

async function withDir(f: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "clipq_io_" });
  try {
    await f(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function runOrt(
  model: string | Uint8Array,
  dims: readonly number[],
  seed = 1,
): Promise<Float32Array[]> {
  const session = typeof model === "string"
    ? await ort.InferenceSession.create(model, { graphOptimizationLevel: "disabled" })
    : await ort.InferenceSession.create(model, { graphOptimizationLevel: "disabled" });
  const n = dims.reduce((a, b) => a * b, 1);
  const x = new ort.Tensor("float32", seededRandom(seed).uniforms(n, -1, 1), [...dims]);
  const out = await session.run({ [session.inputNames[0]!]: x });
  const result = session.outputNames.map((k) => out[k]!.data as Float32Array);
  await session.release();
  return result;
}

function maxAbsDiff(a: Float32Array[], b: Float32Array[]): number {
  assert.equal(a.length, b.length);
  let worst = 0;
  a.forEach((x, k) => {
    const y = b[k]!;
    assert.equal(y.length, x.length);
    for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i]! - y[i]!));
  });
  return worst;
}

function rejects(p: Promise<unknown>, ...patterns: RegExp[]): Promise<void> {
  return assert.rejects(p, (e) => {
    assert.ok(e instanceof ModelError, `expected ModelError, got ${e}`);
    for (const re of patterns) assert.match(e.message, re);
    return true;
  });
}

const PPOCR = [
  { which: "det", dims: [1, 3, 640, 640] },
  { which: "rec", dims: [1, 3, 48, 320] },
  { which: "cls", dims: [1, 3, 48, 192] },
] as const;

for (const { which, dims } of PPOCR) {
  Deno.test(`PP-OCR ${which}: load → save is exact, load → normalize → save is within 1e-5`, async () => {
    await withDir(async (dir) => {
      const source = await ppocrModel(which);
      const original = await loadModel(source);
      assert.ok(original.nodes.some((n) => n.op === "Constant"));
      const expected = await runOrt(source, dims);

      await saveModel(join(dir, "copy.onnx"), original);
      assert.equal(maxAbsDiff(expected, await runOrt(join(dir, "copy.onnx"), dims)), 0);

      const { graph, report } = normalizeWithReport(original);
      validate(graph);
      assert.equal(graph.nodes.filter((n) => n.op === "Constant").length, 0);
      assert.ok(report.constantsToInitializers > 200, `${report.constantsToInitializers}`);
      await saveModel(join(dir, "norm.onnx"), graph);
      const reloaded = await loadModel(join(dir, "norm.onnx"));
      assert.equal(reloaded.nodes.filter((n) => n.op === "Constant").length, 0);
      assert.equal(reloaded.nodes.length, graph.nodes.length);
      const diff = maxAbsDiff(expected, await runOrt(join(dir, "norm.onnx"), dims));
      assert.ok(diff <= 1e-5, `max abs diff ${diff}`);
      if (which === "cls") assert.ok(report.bnFolded > 20, `folded ${report.bnFolded}`);
    });
  });
}

function smallModel(): Graph {
  const b = new ModelBuilder({ seed: 4 });
  const x = b.input("x", [1, 8, 6, 6]);
  const y = b.relu(b.conv(x, { outChannels: 16, kernel: 3 }));
  b.output(b.conv(y, { outChannels: 4, kernel: 1 }), "y");
  return b.build();
}

Deno.test("saveModel() writes external data past the threshold, and loadModel() and ORT read it", async () => {
  await withDir(async (dir) => {
    const g = smallModel();
    const path = join(dir, "m.onnx");
    const saved = await saveModel(path, g, {
      externalDataThreshold: 1000,
      externalDataMinTensorBytes: 256,
    });
    assert.equal(saved.external?.path, join(dir, "m.onnx.data"));
    // conv_0.weight (4608 B) and conv_1.weight (256 B) go out; the biases (64 B, 16 B) stay inline.
    assert.equal(saved.external?.bytes, 4608 + 256);
    assert.equal((await Deno.stat(saved.external!.path)).size, saved.external!.bytes);
    assert.ok(saved.bytes < 1000);
    const back = await loadModel(path);
    for (const [k, t] of g.initializers) {
      assert.deepEqual(back.initializers.get(k)!.data, t.data, k);
    }
    const dims = [1, 8, 6, 6];
    assert.equal(maxAbsDiff(await runOrt(encode(g), dims), await runOrt(path, dims)), 0);
    assert.deepEqual((await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort(), [
      "m.onnx",
      "m.onnx.data",
    ]);
  });
});

Deno.test("saveModel() keeps data inline under the threshold and refuses bad options", async () => {
  await withDir(async (dir) => {
    const saved = await saveModel(join(dir, "m.onnx"), smallModel());
    assert.equal(saved.external, undefined);
    assert.equal(saved.bytes, (await Deno.stat(join(dir, "m.onnx"))).size);
    await assert.rejects(
      saveModel(join(dir, "b.onnx"), smallModel(), { externalDataThreshold: -1 }),
      ConfigError,
    );
    await assert.rejects(
      saveModel(join(dir, "b.onnx"), smallModel(), { externalDataLocation: "../x.data" }),
      ConfigError,
    );
  });
});

Deno.test("saveModel() leaves no partial output when the write fails", async () => {
  await withDir(async (dir) => {
    const target = join(dir, "taken");
    await Deno.mkdir(join(target, "inside"), { recursive: true });
    await rejects(saveModel(target, smallModel()), /taken: cannot write/);
    assert.deepEqual((await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name), ["taken"]);
    await rejects(
      saveModel(target, smallModel(), { externalDataThreshold: 0, externalDataLocation: "w.bin" }),
      /taken: cannot write/,
    );
    const left = (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
    assert.deepEqual(left.filter((n) => n.endsWith(".tmp")), [], "no temporary file is left");
    await rejects(saveModel(join(dir, "missing", "m.onnx"), smallModel()), /missing/);
  });
});

Deno.test("saveModel() replaces an existing model in one step", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "m.onnx");
    await Deno.writeTextFile(path, "old");
    await saveModel(path, smallModel());
    assert.equal((await loadModel(path)).outputs[0]!.name, "y");
  });
});

Deno.test("loadModel() names the file when it is missing, a directory, empty or not ONNX", async () => {
  await withDir(async (dir) => {
    await rejects(loadModel(join(dir, "none.onnx")), /none\.onnx/, /cannot read/);
    await rejects(loadModel(dir), /found a directory/);
    await Deno.writeFile(join(dir, "empty.onnx"), new Uint8Array());
    await rejects(loadModel(join(dir, "empty.onnx")), /empty\.onnx/, /empty/);
    await Deno.writeTextFile(join(dir, "text.onnx"), "this is not a protobuf at all, just text\n");
    await rejects(loadModel(join(dir, "text.onnx")), /text\.onnx/);
  });
});

Deno.test("loadModel() gives a ModelError, not a crash, for a model truncated anywhere", async () => {
  await withDir(async (dir) => {
    const bytes = modelBytes(smallModel());
    const path = join(dir, "cut.onnx");
    const cuts = [1, 2, 3, 7, bytes.byteLength - 2, bytes.byteLength - 1];
    for (let c = 11; c < bytes.byteLength; c += 97) cuts.push(c);
    for (const cut of cuts) {
      await Deno.writeFile(path, bytes.subarray(0, cut));
      await rejects(loadModel(path), /cut\.onnx/);
    }
    // Protobuf writes fields by number: a cut right after the graph (field 7) drops the opsets (8).
    const prefix = encode({ ...smallModel(), opsetImports: [] });
    assert.deepEqual(bytes.subarray(0, prefix.byteLength), prefix);
    await Deno.writeFile(path, prefix);
    await rejects(loadModel(path), /cut\.onnx: expected opset imports/, /truncated/);
  });
});

Deno.test("loadModel() names a missing, short or escaping external data file", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "m.onnx");
    await saveModel(path, smallModel(), {
      externalDataThreshold: 0,
      externalDataLocation: "w.bin",
    });
    const data = await Deno.readFile(join(dir, "w.bin"));
    await Deno.writeFile(join(dir, "w.bin"), data.subarray(0, 100));
    await rejects(loadModel(path), /m\.onnx/, /"w\.bin" expected bytes/);
    await Deno.remove(join(dir, "w.bin"));
    await rejects(loadModel(path), /w\.bin/, /cannot read external data/);
    // Same length, so the protobuf framing stays valid: only the location changes.
    const bytes = await Deno.readFile(path);
    const [from, to] = [new TextEncoder().encode("w.bin"), new TextEncoder().encode("../xx")];
    for (let i = 0; i + from.length <= bytes.length; i++) {
      if (from.every((b, k) => bytes[i + k] === b)) bytes.set(to, i);
    }
    await Deno.writeFile(path, bytes);
    await rejects(loadModel(path), /"\.\.\/xx" leaves it/);
  });
});

Deno.test("saved models pass the onnx checker: normalized PP-OCR cls, a builder model, external data", async () => {
  assert.ok(await ensureOnnxChecker(), "Debian's python3-onnx is available");
  await withDir(async (dir) => {
    const cls = normalizeWithReport(await loadModel(await ppocrModel("cls"))).graph;
    const paths = [join(dir, "cls.onnx"), join(dir, "small.onnx"), join(dir, "ext.onnx")];
    await saveModel(paths[0]!, cls);
    await saveModel(paths[1]!, normalizeWithReport(smallModel()).graph);
    await saveModel(paths[2]!, smallModel(), { externalDataThreshold: 0 });
    const script =
      "import onnx, sys\nfor p in sys.argv[1:]:\n    onnx.checker.check_model(p, full_check=True)\n    print('ok')";
    const out = await new Deno.Command("/usr/bin/python3", { args: ["-c", script, ...paths] })
      .output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    assert.ok(out.success, text);
    assert.equal(text.trim().split("\n").length, 3, text);
  });
});

Deno.test("encode() into given memory writes the bytes it returns otherwise, long names and all, and falls back when the memory is short", () => {
  const b = new ModelBuilder({ seed: 3 });
  const x = b.input("an input whose name is longer than forty characters, as utf-8: é", [
    1,
    3,
    8,
    8,
  ]);
  b.output(b.conv(x, { outChannels: 4, kernel: 3 }), "y");
  const g = b.build();
  // Plain views: encode() returns a Node Buffer, which deepEqual tells from a Uint8Array.
  const view = (u: Uint8Array) => new Uint8Array(u.buffer, u.byteOffset, u.byteLength);
  const plain = view(encode(g));
  const memory = new ArrayBuffer(plain.byteLength + 100);
  new Uint8Array(memory).fill(7);
  const into = encode(g, { into: memory });
  assert.equal(into.buffer, memory);
  assert.deepEqual(view(into), plain);
  let asked = 0;
  const given = encode(g, { into: (n) => (asked = n, new ArrayBuffer(n)) });
  assert.equal(asked, plain.byteLength);
  assert.deepEqual(view(given), plain);
  const short = encode(g, { into: new ArrayBuffer(10) });
  assert.notEqual(short.buffer.byteLength, 10);
  assert.deepEqual(view(short), plain);
});
