// Every kind of model clipq writes — QDQ u8, QDQ s8, QOperator, SVD-compressed, darknet and tfjs
// imports — passes Debian onnx 1.12's checker (full check, IR ≤ 8, opset ≤ 17) and runs in
// onnxruntime-node; an int8 model also runs in onnxruntime-web (wasm, as in a browser) and agrees
// with onnxruntime-node. Each config run twice gives byte-identical models.
import assert from "node:assert/strict";
import { join } from "node:path";
import * as ortWeb from "onnxruntime-web";
import { decode, encode, type Graph, ModelBuilder, type Tensor } from "@clipq/onnx";
import { createSession } from "@clipq/runtime";
import { float32 } from "@clipq/onnx/tensor";
import { writeNpy } from "@clipq/data";
import { smallDetector } from "../packages/pipeline/_fixtures_test.ts";
import { runCli as cli } from "./cli.ts";
import { png } from "./corpus/generate.ts";
import { assertChecked, checkModels } from "./checker.ts";

const WEB_DIST = new URL(
  "../node_modules/.deno/onnxruntime-web@1.30.0/node_modules/onnxruntime-web/dist/",
  import.meta.url,
);

function fcModel(): Graph {
  const b = new ModelBuilder({ seed: 3, name: "fc" });
  const h = b.relu(b.gemm(b.input("x", [1, 64]), { out: 96 }));
  b.output(b.matmul(h, { out: 32 }), "y");
  return b.build();
}

const DARKNET_CFG = `[net]
width=32
height=32
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[convolutional]
filters=21
size=1
stride=1
pad=1
activation=linear

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=2
num=3
`;

/** Deterministic pseudo-random input of a graph input's static shape. */
function feed(dims: readonly number[]): Tensor {
  const n = dims.reduce((a, b) => a * b, 1);
  return {
    dtype: "float32",
    dims: [...dims],
    data: Float32Array.from({ length: n }, (_, i) => 0.5 + 0.5 * Math.sin(i * 0.37)),
  };
}

Deno.test("models of every format clipq writes pass onnx.checker (full) and run in onnxruntime-node and -web", async () => {
  const dir = await Deno.makeTempDir({ prefix: "clipq-external-" });
  try {
    await Deno.mkdir(join(dir, "images"));
    for (let i = 0; i < 3; i++) {
      await Deno.writeFile(
        join(dir, "images", `${i}.png`),
        png(40, 32, { colorType: 2, depth: 8, samples: (k) => (k * (7 + i) + i * 31) % 256 }),
      );
    }
    await Deno.writeFile(join(dir, "det.onnx"), encode(smallDetector("det")));
    await Deno.writeFile(join(dir, "fc.onnx"), encode(fcModel()));
    await Deno.mkdir(join(dir, "npy"));
    for (let i = 0; i < 2; i++) {
      await Deno.writeFile(
        join(dir, "npy", `${i}.npy`),
        writeNpy(float32([1, 64], Float32Array.from({ length: 64 }, (_, k) => Math.sin(k + i)))),
      );
    }
    await Deno.writeTextFile(join(dir, "net.cfg"), DARKNET_CFG);
    const images = { data: { calibration: { images: "images" } } };
    const calibrate = { use: "calibrate", method: "percentile", percentile: 99.9 };
    const configs: Record<string, unknown> = {
      "qdq-u8": {
        model: "det.onnx",
        input: { size: [32, 32] },
        ...images,
        steps: [{ use: "normalize" }, calibrate, { use: "quantize", activations: "u8" }],
      },
      "qdq-s8": {
        model: "det.onnx",
        input: { size: [32, 32] },
        ...images,
        steps: [calibrate, { use: "quantize", activations: "s8", weights: "per-tensor" }],
      },
      "qoperator": {
        model: "det.onnx",
        input: { size: [32, 32] },
        ...images,
        steps: [calibrate, { use: "quantize", format: "qoperator" }],
      },
      "svd": {
        model: "fc.onnx",
        data: { calibration: { npy: "npy" } },
        steps: [
          { use: "svd-fc", rank: "ceil(0.25 * min(rows, cols))", backend: "js" },
          { use: "calibrate", method: "minmax" },
          { use: "quantize" },
        ],
      },
      "darknet": {
        model: { darknet: { cfg: "net.cfg" } },
        input: { size: [32, 32] },
        ...images,
        steps: [{ use: "normalize" }, calibrate, { use: "quantize" }],
      },
      "tfjs": {
        model: { tfjs: "asset:blazeface" },
        input: { size: [256, 256], layout: "NHWC" },
        ...images,
        steps: [{ use: "normalize" }, calibrate, { use: "quantize" }],
      },
    };
    const outputs: Record<string, string> = {};
    for (const [name, config] of Object.entries(configs)) {
      const path = join(dir, `${name}.json`);
      const output = `out/${name}.onnx`;
      await Deno.writeTextFile(path, JSON.stringify({ ...config as object, output }));
      const r = await cli(path, "--quiet", "--no-analysis");
      assert.equal(r.code, 0, `${name}: ${r.stderr}`);
      outputs[name] = join(dir, output);
    }
    // Determinism: the same config again gives the same bytes, in every format.
    for (const [name, path] of Object.entries(outputs)) {
      const first = await Deno.readFile(path);
      await Deno.remove(path);
      const r = await cli(join(dir, `${name}.json`), "--quiet", "--no-analysis");
      assert.equal(r.code, 0, `${name} (second run): ${r.stderr}`);
      assert.deepEqual(await Deno.readFile(path), first, `${name}: the second run differs`);
    }
    const results = await checkModels(Object.values(outputs));
    for (const r of results) assertChecked(r);

    const nodeOutputs = new Map<string, Record<string, Tensor>>();
    for (const [name, path] of Object.entries(outputs)) {
      const g = decode(await Deno.readFile(path));
      const ops = new Set(g.nodes.map((n) => n.op));
      if (name === "qoperator") assert.ok(ops.has("QLinearConv"), `${name}: ${[...ops]}`);
      else {assert.ok(
          ops.has("QuantizeLinear") && ops.has("DequantizeLinear"),
          `${name}: ${[...ops]}`,
        );}
      const session = await createSession(g, { optimizationLevel: "all" });
      const feeds: Record<string, Tensor> = {};
      for (const i of g.inputs.filter((i) => !g.initializers.has(i.name))) {
        feeds[i.name] = feed(i.shape!.map((d) => (typeof d === "number" ? d : 1)));
      }
      const y = await session.run(feeds);
      session.release();
      for (const [k, t] of Object.entries(y)) {
        const data = t.data as Float32Array;
        assert.ok(data.length > 0 && data.every(Number.isFinite), `${name}.${k} is finite`);
      }
      nodeOutputs.set(name, y);
      if (name === "qdq-u8") nodeOutputs.set("feeds", feeds);
    }

    // The browser runtime: onnxruntime-web's wasm backend, single-threaded as without COOP/COEP.
    ortWeb.env.wasm.numThreads = 1;
    ortWeb.env.wasm.wasmPaths = WEB_DIST.href;
    const web = await ortWeb.InferenceSession.create(await Deno.readFile(outputs["qdq-u8"]!), {
      executionProviders: ["wasm"],
    });
    const feeds = nodeOutputs.get("feeds")!;
    const webOut = await web.run(
      Object.fromEntries(
        Object.entries(feeds).map((
          [k, t],
        ) => [k, new ortWeb.Tensor("float32", t.data as Float32Array, [...t.dims])]),
      ),
    );
    await web.release();
    let worst = 0;
    for (const [k, t] of Object.entries(nodeOutputs.get("qdq-u8")!)) {
      const a = t.data as Float32Array;
      const b = webOut[k]!.data as Float32Array;
      assert.deepEqual([...webOut[k]!.dims], [...t.dims]);
      const scale = Math.max(...a.map(Math.abs));
      assert.ok(scale > 0, "the output is not all zero");
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!) / scale);
    }
    // Both run the same int8 arithmetic; kernels may round once differently.
    assert.ok(worst <= 0.02, `onnxruntime-web differs from -node by ${worst} of the output range`);
    console.log(
      `external validation: ${results.length} models, each byte-identical when run twice (${
        Object.keys(outputs).join(", ")
      }) pass onnx.checker full_check (IR ${[...new Set(results.map((r) => r.ir))]}, opsets ${[
        ...new Set(results.map((r) => r.opsets?.["ai.onnx"])),
      ]}) and run in onnxruntime-node; onnxruntime-web agrees on qdq-u8 within ${
        worst.toExponential(1)
      } of the output range`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
