import assert from "node:assert/strict";
import * as ort from "onnxruntime-node";
import { ModelError, UnsupportedOpError } from "@clipq/onnx/errors";
import { encode } from "@clipq/onnx/proto";
import { readHeadMetadata } from "@clipq/onnx/metadata";
import { seededRandom } from "@clipq/onnx/builder";
import { darknetCfg } from "../../tools/assets.ts";
import { fromDarknet, loadDarknet } from "./darknet.ts";
import { planDarknet } from "./darknet_plan.ts";
import { randomDarknetWeights, readDarknetWeights } from "./darknet_weights.ts";
import type { Graph } from "@clipq/onnx/graph";
import { validate } from "@clipq/onnx/validate";
import { normalize } from "@clipq/onnx/normalize";
import { ensureOnnxChecker } from "../../tools/assets.ts";

async function run(
  graph: Graph,
  input: Float32Array,
  level: "disabled" | "all" = "all",
): Promise<Record<string, ort.Tensor>> {
  // Graph optimization of the 62 M-parameter model costs seconds and is not what is tested.
  const session = await ort.InferenceSession.create(encode(graph), {
    graphOptimizationLevel: level,
  });
  try {
    const dims = graph.inputs[0]!.shape as number[];
    return await session.run({ [graph.inputs[0]!.name]: new ort.Tensor("float32", input, dims) });
  } finally {
    await session.release();
  }
}

const cfgText = async (name: string) => Deno.readTextFileSync(await darknetCfg(name));

Deno.test("planDarknet() needs exactly the floats of the published yolov3 and yolov3-tiny weights", async () => {
  // yolov3.weights is 248 007 048 bytes and yolov3-tiny.weights 35 434 956: a 20-byte header + floats.
  assert.equal(planDarknet(await cfgText("yolov3")).weightCount, (248007048 - 20) / 4);
  assert.equal(planDarknet(await cfgText("yolov3-tiny")).weightCount, (35434956 - 20) / 4);
});

Deno.test("planDarknet() takes the input size from the cfg unless overridden", async () => {
  const cfg = await cfgText("yolov3");
  const heads = (p: ReturnType<typeof planDarknet>) =>
    p.layers.filter((l) => l.type === "yolo").map((l) => l.shape.join("x"));
  assert.deepEqual(planDarknet(cfg).input, [3, 608, 608]);
  assert.deepEqual(heads(planDarknet(cfg)), ["255x19x19", "255x38x38", "255x76x76"]);
  assert.deepEqual(heads(planDarknet(cfg, { inputSize: [320, 416] })), [
    "255x10x13",
    "255x20x26",
    "255x40x52",
  ]);
});

Deno.test("fromDarknet() imports yolov3-tiny: ORT runs it, 13×13 and 26×26 heads, head metadata", async () => {
  const cfg = await cfgText("yolov3-tiny");
  const g = fromDarknet(cfg, {
    weights: randomDarknetWeights(cfg, { seed: 1 }),
    cfgName: "/some/folder/yolov3-tiny.cfg",
  });
  // The graph takes the file's name, not the folder it was read from.
  assert.equal(g.name, "yolov3-tiny");
  assert.deepEqual(g.outputs.map((o) => o.name), ["yolo_0", "yolo_1"]);
  const out = await run(g, seededRandom(2).uniforms(3 * 416 * 416, 0, 1));
  assert.deepEqual(out.yolo_0!.dims, [1, 255, 13, 13]);
  assert.deepEqual(out.yolo_1!.dims, [1, 255, 26, 26]);
  for (const t of Object.values(out)) {
    const d = t.data as Float32Array;
    assert.ok(d.every(Number.isFinite));
    const rms = Math.sqrt(d.reduce((s, v) => s + v * v, 0) / d.length);
    assert.ok(rms > 0.2 && rms < 5, `output rms ${rms}`);
  }
  const head = readHeadMetadata(g.metadata)!;
  assert.deepEqual(head, {
    type: "yolov3",
    outputs: ["yolo_0", "yolo_1"],
    strides: [32, 16],
    anchors: [[[81, 82], [135, 169], [344, 319]], [[10, 14], [23, 27], [37, 58]]],
    classes: 80,
  });
  // The stride-1 maxpool keeps 13×13 by padding only bottom/right.
  const pool = g.nodes.filter((n) => n.op === "MaxPool").at(-1)!;
  assert.deepEqual(pool.attributes.pads?.value, [0, 0, 1, 1]);
});

Deno.test("fromDarknet() imports yolov3 (62 M parameters): ORT gives 13, 26 and 52 heads at 416", async () => {
  const cfg = await cfgText("yolov3");
  const g = fromDarknet(cfg, { seed: 5, inputSize: [416, 416], cfgName: "yolov3.cfg" });
  assert.equal(g.nodes.filter((n) => n.op === "Conv").length, 75);
  assert.equal(g.nodes.filter((n) => n.op === "BatchNormalization").length, 72);
  const out = await run(g, seededRandom(3).uniforms(3 * 416 * 416, 0, 1), "disabled");
  assert.deepEqual(out.yolo_0!.dims, [1, 255, 13, 13]);
  assert.deepEqual(out.yolo_1!.dims, [1, 255, 26, 26]);
  assert.deepEqual(out.yolo_2!.dims, [1, 255, 52, 52]);
  for (const t of Object.values(out)) {
    const d = t.data as Float32Array;
    const rms = Math.sqrt(d.reduce((s, v) => s + v * v, 0) / d.length);
    assert.ok(
      rms > 0.3 && rms < 5,
      `head rms ${rms}: random weights should keep activations bounded`,
    );
  }
  assert.deepEqual(readHeadMetadata(g.metadata)?.strides, [32, 16, 8]);
});

/** darknet's CPU conv + BN + leaky, written out directly from the weights file. */
function referenceConvBnLeaky(
  x: Float32Array,
  [c, h, w]: [number, number, number],
  floats: Float32Array,
  f: number,
  k: number,
  stride: number,
  pad: number,
): Float32Array {
  const bias = floats.subarray(0, f), scale = floats.subarray(f, 2 * f);
  const mean = floats.subarray(2 * f, 3 * f), vari = floats.subarray(3 * f, 4 * f);
  const wt = floats.subarray(4 * f);
  const oh = Math.floor((h + 2 * pad - k) / stride) + 1,
    ow = Math.floor((w + 2 * pad - k) / stride) + 1;
  const out = new Float32Array(f * oh * ow);
  for (let o = 0; o < f; o++) {
    for (let y = 0; y < oh; y++) {
      for (let xx = 0; xx < ow; xx++) {
        let s = 0;
        for (let ci = 0; ci < c; ci++) {
          for (let ky = 0; ky < k; ky++) {
            for (let kx = 0; kx < k; kx++) {
              const iy = y * stride + ky - pad, ix = xx * stride + kx - pad;
              if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
              s += wt[((o * c + ci) * k + ky) * k + kx]! * x[(ci * h + iy) * w + ix]!;
            }
          }
        }
        const v = (s - mean[o]!) / Math.sqrt(vari[o]! + 1e-5) * scale[o]! + bias[o]!;
        out[(o * oh + y) * ow + xx] = v > 0 ? v : 0.1 * v;
      }
    }
  }
  return out;
}

Deno.test("fromDarknet() computes a conv+BN+leaky block as darknet does", async () => {
  const cfg = `[net]\nwidth=9\nheight=7\nchannels=3
[convolutional]\nbatch_normalize=1\nfilters=5\nsize=3\nstride=2\npad=1\nactivation=leaky`;
  const bytes = randomDarknetWeights(cfg, { seed: 11 });
  const g = fromDarknet(cfg, { weights: bytes });
  const x = seededRandom(4).uniforms(3 * 7 * 9, -1, 1);
  const got = (await run(g, x))[g.outputs[0]!.name]!;
  assert.deepEqual(got.dims, [1, 5, 4, 5]);
  const floats = readDarknetWeights(bytes, planDarknet(cfg), "w").floats;
  const want = referenceConvBnLeaky(x, [3, 7, 9], floats, 5, 3, 2, 1);
  const d = got.data as Float32Array;
  want.forEach((v, i) => assert.ok(Math.abs(v - d[i]!) < 1e-4, `${i}: ${d[i]} vs ${v}`));
  assert.ok(want.some((v) => v < 0) && want.some((v) => v > 0), "both leaky branches exercised");
});

Deno.test("fromDarknet() pools like darknet for size 2 stride 1 and slices route groups", async () => {
  // darknet maxpool: out[y][x] = max over window starting at (y − pad/2, x − pad/2) of in-bounds pixels.
  const cfg = `[net]\nwidth=5\nheight=4\nchannels=4
[maxpool]\nsize=2\nstride=1
[route]\nlayers=-1\ngroups=2\ngroup_id=1
[upsample]\nstride=2`;
  const g = fromDarknet(cfg);
  const x = seededRandom(9).uniforms(4 * 4 * 5, -1, 1);
  const got = (await run(g, x))[g.outputs[0]!.name]!;
  assert.deepEqual(got.dims, [1, 2, 8, 10]);
  const d = got.data as Float32Array;
  for (let c = 0; c < 2; c++) {
    for (let y = 0; y < 8; y++) {
      for (let xx = 0; xx < 10; xx++) {
        const py = y >> 1, px = xx >> 1, ci = c + 2;
        let m = -Infinity;
        for (let dy = 0; dy < 2; dy++) {
          for (let dx = 0; dx < 2; dx++) {
            const iy = py + dy, ix = px + dx;
            if (iy < 4 && ix < 5) m = Math.max(m, x[(ci * 4 + iy) * 5 + ix]!);
          }
        }
        assert.equal(d[(c * 8 + y) * 10 + xx], m);
      }
    }
  }
});

Deno.test("fromDarknet() adds shortcuts and applies mish, logistic and relu", async () => {
  const cfg = `[net]\nwidth=3\nheight=3\nchannels=2
[convolutional]\nfilters=2\nsize=1\nactivation=mish
[convolutional]\nfilters=2\nsize=1\nactivation=relu
[shortcut]\nfrom=-2\nactivation=logistic`;
  const bytes = randomDarknetWeights(cfg, { seed: 2 });
  const g = fromDarknet(cfg, { weights: bytes });
  const x = seededRandom(1).uniforms(2 * 9, -2, 2);
  const d = (await run(g, x))[g.outputs[0]!.name]!.data as Float32Array;
  const fl = readDarknetWeights(bytes, planDarknet(cfg), "w").floats;
  // Layout: conv0 bias[2] weights[2·2], conv1 bias[2] weights[2·2].
  const conv = (inp: Float32Array, off: number) => {
    const out = new Float32Array(18);
    for (let o = 0; o < 2; o++) {
      for (let p = 0; p < 9; p++) {
        out[o * 9 + p] = fl[off + o]! + fl[off + 2 + o * 2]! * inp[p]! +
          fl[off + 2 + o * 2 + 1]! * inp[9 + p]!;
      }
    }
    return out;
  };
  const a = conv(x, 0).map((v) => v * Math.tanh(Math.log1p(Math.exp(v))));
  const b = conv(a, 6).map((v) => Math.max(0, v));
  a.forEach((v, i) => assert.ok(Math.abs(d[i]! - 1 / (1 + Math.exp(-(v + b[i]!)))) < 1e-5));
});

Deno.test("fromDarknet() errors name the cfg line", () => {
  const base = "[net]\nwidth=8\nheight=8\nchannels=3\n[convolutional]\nfilters=4\nsize=3\npad=1\n";
  const cases: [string, RegExp, typeof ModelError | typeof UnsupportedOpError][] = [
    [
      base + "activation=foo",
      /yolov3\.cfg:9: expected activation one of leaky, linear, relu, mish, logistic, swish, found "foo"/,
      ModelError,
    ],
    [
      base.replace("filters=4", "filters=four"),
      /yolov3\.cfg:6: expected filters to be an integer, found "four"/,
      ModelError,
    ],
    [base + "[region]\nclasses=2", /yolov3\.cfg:9: unsupported op \[region\]/, UnsupportedOpError],
    [
      base + "[route]\nlayers=3",
      /yolov3\.cfg:10: expected layers to refer to an earlier layer \(0\.\.0\), found 3/,
      ModelError,
    ],
    [
      base + "[yolo]\nmask=0\nanchors=1,2\nnum=1\nclasses=1",
      /yolov3\.cfg:9: expected the layer before \[yolo\] to have 1·\(1\+5\) = 6 channels, found 4/,
      ModelError,
    ],
    [
      base + "[shortcut]\nfrom=-1\n[maxpool]\nsize=2\nstride=2\n[shortcut]\nfrom=-2",
      /yolov3\.cfg:15: expected layer 1 to have the shape of layer 2, \[4, 4, 4\], found \[4, 8, 8\]/,
      ModelError,
    ],
    [
      "width=3\n[net]",
      /yolov3\.cfg:1: expected a darknet cfg \[section\] header first/,
      ModelError,
    ],
    [
      base + "size=5",
      /yolov3\.cfg:9: expected each key once per section, found "size" again \(first on line 7\)/,
      ModelError,
    ],
    [
      base.replace("filters=4", "filters=99999999"),
      /yolov3\.cfg:6: expected at most 1073741824 parameters in the network, found 2799999972 by this layer/,
      ModelError,
    ],
    [
      "[net]\nwidth=100000\nheight=100000\n[maxpool]\nsize=1",
      /yolov3\.cfg:4: expected at most 2147483648 elements per layer output, found 3×100000×100000/,
      ModelError,
    ],
    [
      "[net]\nchannels=3\n[maxpool]",
      /yolov3\.cfg:1: expected height= in \[net\], found none/,
      ModelError,
    ],
  ];
  for (const [cfg, re, type] of cases) {
    assert.throws(
      () => fromDarknet(cfg, { cfgName: "yolov3.cfg" }),
      (e) => e instanceof type && re.test(e.message),
      String(re),
    );
  }
});

Deno.test("fromDarknet() says how many floats a wrong-sized weights file has", () => {
  const cfg =
    "[net]\nwidth=4\nheight=4\nchannels=2\n[convolutional]\nbatch_normalize=1\nfilters=3\nsize=3\npad=1\nactivation=leaky";
  const need = 3 * 4 + 3 * 2 * 9;
  const bytes = randomDarknetWeights(cfg, { seed: 1 });
  assert.throws(
    () =>
      fromDarknet(cfg, { weights: bytes.subarray(0, bytes.length - 8), weightsName: "a.weights" }),
    (e) =>
      e instanceof ModelError &&
      e.message ===
        `a.weights: expected darknet weights, ${need} floats after the 20-byte header (version 0.2.0), found ${
          need - 2
        } (file too short)`,
  );
  const longer = new Uint8Array(bytes.length + 4);
  longer.set(bytes);
  assert.throws(() => fromDarknet(cfg, { weights: longer }), /found 67 \(file too long/);
  assert.throws(
    () => fromDarknet(cfg, { weights: bytes.subarray(0, 10) }),
    /expected a darknet weights header of at least 12 bytes, found 10/,
  );
  // Version 0.1 files store `seen` in 32 bits: the same floats after a 16-byte header read the same.
  const old = new Uint8Array(bytes.length - 4);
  old.set(bytes.subarray(0, 12));
  new DataView(old.buffer).setInt32(4, 1, true);
  old.set(bytes.subarray(20), 16);
  const w = readDarknetWeights(old, planDarknet(cfg), "old.weights");
  assert.equal(w.minor, 1);
  assert.deepEqual(w.floats, readDarknetWeights(bytes, planDarknet(cfg), "new.weights").floats);
});

/** A small cfg with every supported layer kind, for checks that need no real-sized model. */
const MINI_CFG = `[net]
width=64
height=48
channels=3
[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky
[convolutional]
batch_normalize=1
filters=8
size=3
pad=1
groups=2
activation=mish
[shortcut]
from=-2
activation=linear
[maxpool]
size=2
stride=2
[convolutional]
batch_normalize=1
filters=16
size=3
pad=1
activation=swish
[maxpool]
size=2
stride=1
[convolutional]
size=1
filters=21
activation=linear
[yolo]
mask=2,3,4
anchors=5,6, 7,8, 9,10, 11,12, 13,14
num=5
classes=2
[route]
layers=-4
groups=2
group_id=1
[upsample]
stride=2
[route]
layers=-1,2
[convolutional]
batch_normalize=1
filters=8
size=1
activation=relu
[dropout]
probability=0.5
[convolutional]
size=1
filters=14
activation=logistic
[yolo]
mask=0,1
anchors=5,6, 7,8, 9,10, 11,12, 13,14
num=5
classes=2`;

Deno.test("fromDarknet() graphs validate, pass onnx.checker and keep their outputs when BN is folded", async () => {
  const g = validate(fromDarknet(MINI_CFG, { seed: 4, cfgName: "mini.cfg" }));
  assert.deepEqual(g.outputs.map((o) => [o.name, o.shape]), [
    ["yolo_0", [1, 21, 12, 16]],
    ["yolo_1", [1, 14, 24, 32]],
  ]);
  assert.deepEqual(readHeadMetadata(g.metadata), {
    type: "yolov3",
    outputs: ["yolo_0", "yolo_1"],
    strides: [4, 2],
    anchors: [[[9, 10], [11, 12], [13, 14]], [[5, 6], [7, 8]]],
    classes: 2,
  });
  const path = Deno.makeTempFileSync({ suffix: ".onnx" });
  try {
    Deno.writeFileSync(path, encode(g));
    assert.ok(await ensureOnnxChecker(), "python3-onnx is needed for the checker");
    const check = await new Deno.Command("/usr/bin/python3", {
      args: [
        "-c",
        "import onnx,sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)",
        path,
      ],
      stderr: "piped",
    }).output();
    assert.ok(check.success, new TextDecoder().decode(check.stderr));
  } finally {
    Deno.removeSync(path);
  }
  const folded = normalize(g);
  assert.equal(g.nodes.filter((n) => n.op === "BatchNormalization").length, 4);
  assert.equal(folded.nodes.filter((n) => n.op === "BatchNormalization").length, 0);
  const x = seededRandom(8).uniforms(3 * 48 * 64, 0, 1);
  const [a, b] = [await run(g, x), await run(folded, x)];
  for (const k of ["yolo_0", "yolo_1"]) {
    const da = a[k]!.data as Float32Array, db = b[k]!.data as Float32Array;
    const scale = Math.max(...da.map(Math.abs));
    assert.ok(scale > 0.01);
    da.forEach((v, i) =>
      assert.ok(Math.abs(v - db[i]!) <= 1e-4 * scale, `${k}[${i}]: ${v} vs ${db[i]}`)
    );
  }
});

Deno.test("planDarknet() throws only clipq errors on 500 mutated cfgs", async () => {
  const cfg = new TextEncoder().encode(await cfgText("yolov3-tiny"));
  const r = seededRandom(12);
  let rejected = 0;
  for (let i = 0; i < 500; i++) {
    const c = cfg.slice();
    for (let k = 1 + Math.floor(r.next() * 3); k > 0; k--) {
      c[Math.floor(r.next() * c.length)] = "0123456789-,=[]#x \n"
        .charCodeAt(Math.floor(r.next() * 19));
    }
    try {
      planDarknet(new TextDecoder().decode(c), { cfgName: "m.cfg" });
    } catch (e) {
      assert.ok(e instanceof ModelError || e instanceof UnsupportedOpError, String(e));
      assert.match((e as Error).message, /^m\.cfg:\d+: /);
      rejected++;
    }
  }
  console.log(`500 mutated cfgs: ${rejected} rejected naming the line, none otherwise`);
  assert.ok(rejected > 50);
});

Deno.test("loadDarknet() reads cfg and weights from disk and names them in errors", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    const cfg = `${dir}/mini.cfg`, weights = `${dir}/mini.weights`;
    Deno.writeTextFileSync(cfg, MINI_CFG);
    const bytes = randomDarknetWeights(MINI_CFG, { seed: 3 });
    Deno.writeFileSync(weights, bytes);
    const g = await loadDarknet(cfg, { weights });
    assert.deepEqual(
      g.initializers.get("layer0.weight")?.data.slice(0, 3),
      readDarknetWeights(bytes, planDarknet(MINI_CFG), "w").floats.slice(4 * 8, 4 * 8 + 3),
    );
    Deno.writeFileSync(weights, bytes.subarray(0, 100));
    await assert.rejects(
      loadDarknet(cfg, { weights }),
      (e) => e instanceof ModelError && e.message.startsWith(`${weights}: expected`),
    );
    Deno.writeTextFileSync(cfg, MINI_CFG.replace("activation=swish", "activation=gelu"));
    await assert.rejects(
      loadDarknet(cfg),
      (e) => e instanceof ModelError && e.message.startsWith(`${cfg}:30: expected activation`),
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("fromDarknet(): a [yolo] after a [dropout], YOLOv4's scale_x_y, and keys it cannot honour", () => {
  const net = "[net]\nwidth=32\nheight=32\nchannels=3\nbatch=64\nbatch=1\n";
  const head = (extra: string) =>
    `[convolutional]\nfilters=18\nsize=1\nstride=1\nactivation=linear\n${extra}[yolo]\nmask=0,1,2\nanchors=10,13,16,30,33,23\nclasses=1\nnum=3\n`;
  // A repeated key in [net] is read as darknet reads it (its own yolo9000.cfg repeats batch),
  // and keys at the one value this importer computes alike pass.
  fromDarknet(
    "[network]\nwidth=32\nheight=32\nbatch=64\nbatch=1\n[convolutional]\nfilters=8\nsize=3\npad=1\nstride=2\nstride_x=2\nstride_y=2\ndilation=1\nantialiasing=0\nactivation=leaky\n[maxpool]\nsize=2\nstride=2\nmaxpool_depth=0\n",
    { seed: 1 },
  );
  const dropout = fromDarknet(`${net}${head("[dropout]\nprobability=0.5\n")}`, { seed: 1 });
  // The graph had declared yolo_0 with nothing producing it.
  assert.ok(dropout.nodes.some((n) => n.outputs.includes("yolo_0")));
  validate(dropout);
  const scaled = fromDarknet(`${net}${head("")}scale_x_y=1.2\n`, { seed: 1 });
  assert.equal(readHeadMetadata(scaled.metadata)?.scaleXY, 1.2);
  const two = fromDarknet(
    `${net}${head("")}scale_x_y=1.2\n[route]\nlayers=-2\n${head("")}scale_x_y=1.05\n`,
    { seed: 1 },
  );
  assert.deepEqual(readHeadMetadata(two.metadata)?.scaleXY, [1.2, 1.05]);
  for (
    const [cfg, error] of [
      [`${head("")}new_coords=1\n`, /a\.cfg:\d+: expected new_coords=0/],
      [
        "[convolutional]\nfilters=8\nsize=3\nstride_x=2\nstride_y=1\nactivation=leaky\n",
        /a\.cfg:\d+: expected stride_x=1 \(other values are not supported\), found 2/,
      ],
      [
        "[maxpool]\nsize=2\nstride=1\npadding=6\n",
        /a\.cfg:\d+: expected a padding whose sides stay below size 2, found 6/,
      ],
    ] as const
  ) {
    assert.throws(
      () => fromDarknet(`${net}${cfg}`, { seed: 1, cfgName: "a.cfg" }),
      (e: Error) => e instanceof ModelError && error.test(e.message),
      cfg,
    );
  }
});
