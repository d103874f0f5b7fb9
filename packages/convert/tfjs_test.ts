import assert from "node:assert/strict";
import { DataError, encode, ModelError, UnsupportedOpError } from "@clipq/onnx";
import { preprocess, readImage } from "@clipq/data";
import * as ort from "onnxruntime-node";
import * as tf from "@tensorflow/tfjs-core";
import "@tensorflow/tfjs-backend-cpu";
import { loadGraphModel } from "@tensorflow/tfjs-converter";
import { dirname, join } from "node:path";
import { convertTfjs, fromTfjs } from "./tfjs.ts";
import { readTfjsModel } from "./tfjs_format.ts";
import {
  darknetPhotos,
  HANDTRACK,
  handtrackPreprocessing,
  humanModel,
  nanodetPreprocessing,
  pixelsNhwc,
  skimagePhoto,
} from "../../tools/assets.ts";

/** The tfjs graph model itself (one weight shard), run by tfjs's CPU backend. */
async function tfjsModel(path: string) {
  const json = JSON.parse(await Deno.readTextFile(path));
  const bin = await Deno.readFile(join(dirname(path), json.weightsManifest[0].paths[0]));
  await tf.setBackend("cpu");
  return await loadGraphModel(tf.io.fromMemory({
    modelTopology: json.modelTopology,
    // deno-lint-ignore no-explicit-any
    weightSpecs: json.weightsManifest.flatMap((g: any) => g.weights),
    weightData: bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength),
  }));
}

async function tfjsReference(
  path: string,
  input: Float32Array,
  shape: number[],
  outputs: string[],
) {
  const model = await tfjsModel(path);
  const result = model.execute(tf.tensor(input, shape), outputs) as tf.Tensor[];
  return result.map((t) => t.dataSync() as Float32Array);
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

Deno.test("fromTfjs() converts NanoDet and its ORT outputs equal tfjs's on a real photo", async () => {
  const path = await humanModel("nanodet");
  const graph = await fromTfjs(path);
  // NanoDet's tfjs graph holds 83 Transpose ops (it went through onnx-tf); after sinking only the
  // six head reshapes' transposes ([1, C, HW] → [1, HW, C]) remain.
  assert.equal(graph.nodes.filter((n) => n.op === "Transpose").length, 6);
  assert.equal(graph.nodes.filter((n) => n.op === "Conv").length, 34);
  // Bias Adds and explicit Pads are folded into the convs, so int8 Conv+LeakyRelu can fuse, and
  // the −∞ Pad of SAME max pooling into the MaxPool (it ran in float in the int8 model).
  assert.equal(graph.nodes.filter((n) => n.op === "Pad").length, 0);
  assert.deepEqual(graph.nodes.find((n) => n.op === "MaxPool")!.attributes.pads?.value, [
    1,
    1,
    1,
    1,
  ]);
  const image = await readImage((await darknetPhotos())[0]!);
  const { tensor } = preprocess(image, nanodetPreprocessing([416, 416]));
  const input = tensor.data as Float32Array;
  const session = await ort.InferenceSession.create(encode(graph));
  const outs = await session.run({
    input_1: new ort.Tensor("float32", input, [1, 3, 416, 416]),
  });
  const names = graph.outputs.map((o) => o.name);
  const ref = await tfjsReference(path, input, [1, 3, 416, 416], names);
  names.forEach((name, i) => {
    const diff = maxAbsDiff(outs[name]!.data as Float32Array, ref[i]!);
    assert.ok(diff <= 1e-3, `${name}: max abs difference ${diff} > 1e-3`);
  });
});

Deno.test("fromTfjs() converts BlazeFace (NHWC, fused and depthwise convs) with transposes only at the boundaries", async () => {
  const path = await humanModel("blazeface");
  const graph = await fromTfjs(path);
  // One transpose for the NHWC input, one before each of the four output reshapes.
  assert.equal(graph.nodes.filter((n) => n.op === "Transpose").length, 5);
  const shape = graph.inputs[0]!.shape as number[];
  const size = shape.reduce((a, b) => a * b, 1);
  const input = Float32Array.from({ length: size }, (_, i) => Math.sin(i * 0.37));
  const session = await ort.InferenceSession.create(encode(graph));
  const outs = await session.run({
    [graph.inputs[0]!.name]: new ort.Tensor("float32", input, shape),
  });
  const names = graph.outputs.map((o) => o.name);
  const ref = await tfjsReference(path, input, shape, names);
  names.forEach((name, i) => {
    const diff = maxAbsDiff(outs[name]!.data as Float32Array, ref[i]!);
    assert.ok(diff <= 1e-3, `${name}: max abs difference ${diff} > 1e-3`);
  });
});

Deno.test("fromTfjs() converts CenterNet with its in-graph decode (TopK, FloorDiv, FloorMod, Gather) and ORT matches tfjs on a real photo", async () => {
  const path = await humanModel("centernet");
  const graph = await fromTfjs(path);
  assert.deepEqual(graph.outputs.map((o) => o.name), [
    "tower_0/wh",
    "tower_0/keypoints",
    "tower_0/detections",
  ]);
  // Its ReLU6s are Clips, which clip-bounds reads as ranges.
  assert.equal(graph.nodes.filter((n) => n.op === "Clip").length, 28);
  const image = await readImage((await darknetPhotos())[0]!);
  // RGB in [0, 255], NHWC, as @vladmandic/human feeds it.
  const { tensor } = preprocess(image, pixelsNhwc([512, 512]));
  const input = tensor.data as Float32Array;
  const session = await ort.InferenceSession.create(encode(graph));
  const outs = await session.run({
    "tower_0/images": new ort.Tensor("float32", input, [1, 512, 512, 3]),
  });
  const names = graph.outputs.map((o) => o.name);
  const [wh, heat, dets] = await tfjsReference(path, input, [1, 512, 512, 3], names);
  assert.ok(maxAbsDiff(outs["tower_0/wh"]!.data as Float32Array, wh!) <= 1e-2);
  assert.ok(maxAbsDiff(outs["tower_0/keypoints"]!.data as Float32Array, heat!) <= 1e-4);
  // Rows [x1, y1, x2, y2, score, class] in input pixels, best first: the confident ones agree
  // (near-ties further down may swap places between the two runtimes).
  const got = outs["tower_0/detections"]!.data as Float32Array;
  let confident = 0;
  for (let r = 0; r < 100 && dets![r * 6 + 4]! > 0.2; r++, confident++) {
    for (let c = 0; c < 6; c++) {
      assert.ok(
        Math.abs(got[r * 6 + c]! - dets![r * 6 + c]!) <= (c < 4 ? 0.05 : 1e-4),
        `row ${r} column ${c}: ${got[r * 6 + c]} vs ${dets![r * 6 + c]}`,
      );
    }
  }
  // dog.jpg: a car (COCO index 2), a bicycle (1) and the dog (16) lead.
  assert.ok(confident >= 3);
  assert.deepEqual([got[5], got[11], got[17]], [2, 1, 16]);
});

Deno.test("fromTfjs() starts and ends a TF Object Detection API SSD (handtrack) around its while loops, and ORT matches tfjs", async () => {
  const path = await humanModel("handtrack");
  // The export resizes each image of the batch in a while loop before the feature extractor and
  // maps NMS over the batch in another: start after the first, end at the raw box encodings
  // and class logits.
  const start = HANDTRACK.input;
  const ends = ["StatefulPartitionedCall/concat", "StatefulPartitionedCall/concat_1"];
  await assert.rejects(
    () => fromTfjs(path, { outputs: ends }),
    (e: unknown) => e instanceof UnsupportedOpError && /a while loop/.test(e.message),
  );
  const graph = await fromTfjs(path, { outputs: ends, inputs: { [start]: [1, 320, 320, 3] } });
  assert.deepEqual(graph.inputs.map((v) => [v.name, v.shape]), [[start, [1, 320, 320, 3]]]);
  assert.deepEqual(graph.outputs.map((v) => v.shape), [[1, 12804, 4], [1, 12804, 8]]);
  assert.equal(graph.nodes.filter((n) => n.op === "Clip").length, 59, "its ReLU6s");
  // The preprocessed image, as the loop leaves it: RGB scaled to [−1, 1].
  const image = await readImage((await darknetPhotos())[5]!);
  const { tensor } = preprocess(image, handtrackPreprocessing([320, 320]));
  const input = tensor.data as Float32Array;
  const session = await ort.InferenceSession.create(encode(graph));
  const outs = await session.run({ [start]: new ort.Tensor("float32", input, [1, 320, 320, 3]) });
  const model = await tfjsModel(path);
  const ref = model.execute({ [start]: tf.tensor(input, [1, 320, 320, 3]) }, ends) as tf.Tensor[];
  ends.forEach((name, i) => {
    const diff = maxAbsDiff(outs[name]!.data as Float32Array, ref[i]!.dataSync() as Float32Array);
    assert.ok(diff <= 1e-3, `${name}: max abs difference ${diff} > 1e-3`);
  });
  await assert.rejects(
    () => fromTfjs(path, { outputs: ends, inputs: { "preprocessed": [1, 320, 320, 3] } }),
    (e: unknown) => e instanceof ModelError && /input "preprocessed" names no node/.test(e.message),
  );
});

Deno.test("convertTfjs() takes unknown image height and width from inputSize, and names an input it cannot size", () => {
  const dims = (...d: number[]) => ({ shape: { dim: d.map((size) => ({ size: String(size) })) } });
  const json = (shape: ReturnType<typeof dims>) => ({
    modelTopology: {
      node: [
        { name: "x", op: "Placeholder", attr: { dtype: { type: "DT_FLOAT" }, shape } },
        { name: "y", op: "Relu6", input: ["x"] },
      ],
    },
    weightsManifest: [],
  });
  const convert = (shape: ReturnType<typeof dims>, options = {}) =>
    convertTfjs({ json: json(shape), weights: new Map(), source: "m.json" }, {
      outputs: ["y"],
      ...options,
    });
  assert.deepEqual(convert(dims(-1, -1, -1, 3), { inputSize: [240, 320] }).inputs[0]?.shape, [
    1,
    240,
    320,
    3,
  ]);
  assert.deepEqual(convert(dims(1, 3, -1, -1), { inputSize: [240, 320] }).inputs[0]?.shape, [
    1,
    3,
    240,
    320,
  ]);
  assert.deepEqual(convert(dims(-1, 10)).inputs[0]?.shape, [1, 10], "an unknown batch is 1");
  assert.throws(
    () => convert(dims(1, -1, -1, 3)),
    (e: unknown) =>
      e instanceof ModelError && /input "x" is declared \[1, -1, -1, 3\]/.test(e.message) &&
      /input\.size/.test(e.message),
  );
  assert.throws(
    () => convert(dims(1, -1)),
    (e: unknown) => e instanceof ModelError && /options\.inputShapes/.test(e.message),
  );
});

Deno.test("convertTfjs() reports a while loop as unsupported control flow, naming where it starts", () => {
  const json = {
    modelTopology: {
      node: [
        { name: "x", op: "Placeholder", attr: { shape: { shape: { dim: [{ size: "4" }] } } } },
        { name: "loop/Enter", op: "Enter", input: ["x"] },
        { name: "loop/Merge", op: "Merge", input: ["loop/Enter", "loop/NextIteration"] },
        { name: "loop/Switch", op: "Switch", input: ["loop/Merge", "loop/Merge"] },
        { name: "loop/body", op: "Relu", input: ["loop/Switch:1"] },
        { name: "loop/NextIteration", op: "NextIteration", input: ["loop/body"] },
        { name: "loop/Exit", op: "Exit", input: ["loop/Switch"] },
      ],
    },
    weightsManifest: [],
  };
  assert.throws(
    () => convertTfjs({ json, weights: new Map(), source: "m.json" }, { outputs: ["loop/Exit"] }),
    (e: unknown) =>
      e instanceof UnsupportedOpError && /m\.json: a while loop/.test(e.message) &&
      /cycle through node "loop\/Merge"/.test(e.message) &&
      /Merge/.test(e.message) && /NextIteration/.test(e.message),
  );
});

Deno.test("convertTfjs() cuts the graph at named outputs", async () => {
  const model = await readTfjsModel(await humanModel("nanodet"));
  const graph = convertTfjs(model, { outputs: ["PartitionedCall/onnx_tf_prefix_LeakyRelu_1"] });
  assert.equal(graph.outputs.length, 1);
  assert.equal(graph.nodes.filter((n) => n.op === "Conv").length, 1);
});

Deno.test("convertTfjs() lists every unsupported op in one UnsupportedOpError", () => {
  const json = {
    modelTopology: {
      node: [
        { name: "x", op: "Placeholder", attr: { shape: { shape: { dim: [{ size: "4" }] } } } },
        { name: "a", op: "Erfinv", input: ["x"] },
        { name: "b", op: "Cumsum", input: ["a"] },
      ],
    },
    weightsManifest: [],
  };
  assert.throws(
    () => convertTfjs({ json, weights: new Map(), source: "m.json" }, { outputs: ["b"] }),
    (e: unknown) =>
      e instanceof UnsupportedOpError && /Erfinv/.test(e.message) && /Cumsum/.test(e.message),
  );
});

Deno.test("readTfjsModel() names a missing shard and rejects a short one or one the manifest does not fill", async () => {
  const dir = await Deno.makeTempDir();
  const json = {
    format: "graph-model",
    modelTopology: { node: [] },
    weightsManifest: [{ paths: ["w.bin"], weights: [{ name: "w", shape: [4], dtype: "float32" }] }],
  };
  await Deno.writeTextFile(join(dir, "model.json"), JSON.stringify(json));
  await assert.rejects(
    readTfjsModel(join(dir, "model.json")),
    (e: unknown) => e instanceof DataError && /w\.bin/.test(e.message),
  );
  await Deno.writeFile(join(dir, "w.bin"), new Uint8Array(8));
  await assert.rejects(
    readTfjsModel(join(dir, "model.json")),
    (e: unknown) => e instanceof ModelError && /needs bytes 0\.\.16/.test(e.message),
  );
  // A manifest dtype that does not match the shard (float16 over float32 bytes) used to be read
  // silently, shifting every later weight.
  await Deno.writeFile(join(dir, "w.bin"), new Uint8Array(16));
  const half = { ...json.weightsManifest[0]!.weights[0]!, dtype: "float16" };
  await Deno.writeTextFile(
    join(dir, "model.json"),
    JSON.stringify({ ...json, weightsManifest: [{ paths: ["w.bin"], weights: [half] }] }),
  );
  await assert.rejects(
    readTfjsModel(join(dir, "model.json")),
    (e: unknown) =>
      e instanceof ModelError &&
      /the manifest describes 8 bytes of group 0 \(w\.bin\) but the shards hold 16: a weight's dtype or shape/
        .test(e.message),
  );
  await Deno.writeTextFile(join(dir, "model.json"), "{ not json");
  await assert.rejects(readTfjsModel(join(dir, "model.json")), ModelError);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("fromTfjs() converts MoveNet MultiPose and Lightning (int32 pixels in, ArgMax/GatherNd/Select decode in the graph) and ORT matches tfjs", async () => {
  for (const [name, size] of [["movenet-multipose", 256], ["movenet-lightning", 192]] as const) {
    const path = await humanModel(name);
    // MultiPose declares [1, -1, -1, 3]: its decode's grids fold to constants at this size.
    const graph = await fromTfjs(path, { inputSize: [size, size] });
    const input = graph.inputs[0]!;
    assert.deepEqual([input.dtype, input.shape], ["int32", [1, size, size, 3]]);
    const n = size * size * 3;
    const pixels = Int32Array.from(
      { length: n },
      (_, i) => Math.floor(128 + 127 * Math.sin(i * 0.37)),
    );
    const session = await ort.InferenceSession.create(encode(graph));
    const outs = await session.run({ input: new ort.Tensor("int32", pixels, [1, size, size, 3]) });
    const model = await tfjsModel(path);
    const ref =
      (model.execute(tf.tensor(pixels, [1, size, size, 3], "int32"), ["Identity"]) as tf.Tensor)
        .dataSync() as Float32Array;
    const got = outs.Identity!.data as Float32Array;
    const largest = ref.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    const diff = maxAbsDiff(got, ref);
    assert.ok(diff <= 2e-6 * largest, `${name}: max abs difference ${diff} (largest ${largest})`);
  }
});

Deno.test("fromTfjs() converts MediaPipe's attention face mesh (BatchMatMulV2, Atan2, Sin, Cos, ZerosLike, Min, Prod, an ellipsis slice) and ORT matches tfjs on a real photo", async () => {
  const astronaut = await readImage(await skimagePhoto("astronaut.png"));
  const { tensor } = preprocess(astronaut, { size: [192, 192], resize: "stretch", layout: "NHWC" });
  const x = tensor.data as Float32Array;
  for (const name of ["facemesh-attention", "facemesh-attention-pinto"] as const) {
    const path = await humanModel(name);
    const graph = await fromTfjs(path);
    const input = graph.inputs[0]!;
    assert.deepEqual(input.shape, [1, 192, 192, 3]);
    const outputs = graph.outputs.map((o) => o.name);
    // 478 landmarks (x, y, z) in seven outputs (mesh, lips, eyes, irises) and a face flag.
    assert.equal(outputs.length, 7);
    const session = await ort.InferenceSession.create(encode(graph));
    const got = await session.run({ [input.name]: new ort.Tensor("float32", x, tensor.dims) });
    const ref = await tfjsReference(path, x, [...tensor.dims], outputs);
    outputs.forEach((o, i) => {
      const largest = ref[i]!.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      const diff = maxAbsDiff(got[o]!.data as Float32Array, ref[i]!);
      // Measured: below 1·10⁻⁶ of the largest value of each landmark output.
      assert.ok(diff <= 2e-6 * Math.max(largest, 1), `${name} ${o}: ${diff} (largest ${largest})`);
    });
  }
});

Deno.test("convertTfjs() checks opset and input options up front, by name", () => {
  const json = {
    modelTopology: {
      node: [
        {
          name: "x",
          op: "Placeholder",
          attr: {
            dtype: { type: "DT_FLOAT" },
            shape: { shape: { dim: [{ size: "1" }, { size: "4" }] } },
          },
        },
        { name: "y", op: "Relu6", input: ["x"] },
      ],
    },
    weightsManifest: [],
  };
  const model = { json, weights: new Map(), source: "m.json" } as Parameters<typeof convertTfjs>[0];
  // An opset outside 13..17 had been stamped into a model onnxruntime refused; a typo in
  // inputShapes was ignored; a shape of another rank failed at some node inside.
  for (
    const [options, error] of [
      [{ opset: 18 }, /opset: expected an integer in 13\.\.17 but found 18/],
      [{ inputSize: [0, 256] }, /inputSize: expected \[height, width\] of positive integers/],
      [
        { inputShapes: { input: [1, 4] } },
        /m\.json: inputShapes names "input", which is no placeholder of the graph \(placeholders: x\)/,
      ],
      [
        { inputShapes: { x: [1, 4, 1] } },
        /m\.json: inputShapes "x": expected a shape that fits its declared \[1, 4\] but found \[1, 4, 1\]/,
      ],
    ] as const
  ) {
    assert.throws(
      () => convertTfjs(model, { outputs: ["y"], ...options } as Parameters<typeof convertTfjs>[1]),
      error,
    );
  }
  assert.equal(convertTfjs(model, { outputs: ["y"], opset: 17 }).opsetImports[0]?.version, 17);
});
