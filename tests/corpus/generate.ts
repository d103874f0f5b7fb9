/**
 * The malformed-input corpus: a seeded generator of broken models, darknet cfgs, tfjs folders and
 * calibration image folders, each with a small config that runs it through the clipq CLI and what
 * the CLI must say. Cases are generated into a folder at test time (they are small but binary, and
 * generating keeps them in step with the builder); run it alone to look at them:
 *
 *   deno run -A tests/corpus/generate.ts /tmp/corpus
 *
 * @module
 */
import { join } from "node:path";
import { deflateSync } from "node:zlib";
import onnxProto from "onnx-proto";
import jpeg from "jpeg-js";
import { encode, ModelBuilder, seededRandom } from "@clipq/onnx";
import { humanModel } from "../../tools/assets.ts";

const { onnx } = onnxProto;
// deno-lint-ignore no-explicit-any
type Msg = any;

/** One corpus case: files in its own folder, a config, and what the CLI must do with it. */
export interface CorpusCase {
  /** Folder name, also the case's name in test output. */
  name: string;
  /** The case's folder (config, inputs, `out/` for outputs). */
  dir: string;
  /** The config file to run. */
  config: string;
  /** The output model path the config names. */
  output: string;
  /**
   * `error`: exit 1 with a one-line error matching `names`; `ok`: exit 0 and a valid model;
   * `skip`: exit 0 with `warnings` skipped-image warnings; `either`: exit 0 or 1, never 2
   * (random damage that may leave a valid model).
   */
  expect: "error" | "ok" | "skip" | "either";
  /** What the error line must contain (the file, line, node or tensor at fault). */
  names?: RegExp;
  /** Number of skipped images the warnings must count. */
  warnings?: number;
}

// ─── small file writers ───────────────────────────────────────────────────────────────────────────

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function be32(n: number): Uint8Array {
  return new Uint8Array([n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255]);
}

function chunk(type: string, data: Uint8Array): Uint8Array {
  const td = concat([new TextEncoder().encode(type), data]);
  return concat([be32(data.length), td, be32(crc32(td))]);
}

/**
 * A PNG written by hand (filter 0 on every row), so the corpus controls bit depth and color type:
 * `colorType` 0 gray, 2 RGB, 6 RGBA; `samples` holds `width·height·channels` values < 2^depth.
 */
export function png(
  width: number,
  height: number,
  options: { colorType: 0 | 2 | 6; depth: 8 | 16; samples?: (i: number) => number },
): Uint8Array {
  const channels = { 0: 1, 2: 3, 6: 4 }[options.colorType];
  const bps = options.depth / 8;
  const row = 1 + width * channels * bps;
  const raw = new Uint8Array(row * height);
  let i = 0;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width * channels; x++, i++) {
      const v = options.samples ? options.samples(i) : (x * 37 + y * 11) % (1 << options.depth);
      const at = y * row + 1 + x * bps;
      if (bps === 2) {
        raw[at] = v >>> 8;
        raw[at + 1] = v & 255;
      } else raw[at] = v;
    }
  }
  const ihdr = concat([
    be32(width),
    be32(height),
    new Uint8Array([options.depth, options.colorType, 0, 0, 0]),
  ]);
  return concat([
    new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    chunk("IDAT", new Uint8Array(deflateSync(raw))),
    chunk("IEND", new Uint8Array()),
  ]);
}

/** An RGB JPEG through jpeg-js' encoder. */
function rgbJpeg(width: number, height: number, seed: number): Uint8Array {
  const r = seededRandom(seed);
  const data = new Uint8Array(width * height * 4);
  for (let i = 0; i < data.length; i++) data[i] = i % 4 === 3 ? 255 : Math.floor(r.next() * 256);
  return new Uint8Array(jpeg.encode({ data, width, height }, 90).data);
}

/**
 * A minimal baseline 8×8 CMYK JPEG (Adobe APP14, transform 0), hand-made because no encoder at hand
 * writes four components: one quantization table of ones, one-symbol Huffman tables (DC category 0,
 * AC end-of-block), so every block is the bits "0 0" and the scan is a single zero byte — a flat
 * image with every sample at the level-shift value 128.
 */
export function cmykJpeg(): Uint8Array {
  const seg = (marker: number, body: number[]) =>
    new Uint8Array([0xff, marker, (body.length + 2) >> 8, (body.length + 2) & 255, ...body]);
  const huff = (tc: number) => [tc << 4, 1, ...new Array(15).fill(0), 0];
  return concat([
    new Uint8Array([0xff, 0xd8]),
    // "Adobe", version 100, flags0, flags1, transform 0 (CMYK, no color transform)
    seg(0xee, [0x41, 0x64, 0x6f, 0x62, 0x65, 0, 100, 0, 0, 0, 0, 0]),
    seg(0xdb, [0, ...new Array(64).fill(1)]),
    seg(0xc0, [8, 0, 8, 0, 8, 4, 1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0, 4, 0x11, 0]),
    seg(0xc4, [...huff(0), ...huff(1)]),
    seg(0xda, [4, 1, 0x00, 2, 0x00, 3, 0x00, 4, 0x00, 0, 63, 0]),
    new Uint8Array([0x00, 0xff, 0xd9]),
  ]);
}

// ─── the base model and its protobuf-level damage ─────────────────────────────────────────────────

/** The corpus' base model: a small conv net (16×16 input) with named nodes. */
function baseModel(): Uint8Array {
  const b = new ModelBuilder({ seed: 11, name: "corpus" });
  let x = b.input("images", [1, 3, 16, 16]);
  x = b.relu(b.conv(x, { outChannels: 4, kernel: 3, name: "stem" }));
  x = b.clip(b.conv(x, { outChannels: 4, kernel: 3, name: "body" }), 0, 6);
  b.output(b.conv(x, { outChannels: 2, kernel: 1, name: "head" }), "out");
  // A plain copy: protobufjs returns a node Buffer where one exists, whose slice() is a view.
  return Uint8Array.from(encode(b.build()));
}

function mutateProto(bytes: Uint8Array, f: (m: Msg) => void): Uint8Array {
  const m = onnx.ModelProto.decode(bytes);
  f(m);
  return Uint8Array.from(onnx.ModelProto.encode(m).finish());
}

const init = (m: Msg, name: string): Msg => m.graph.initializer.find((t: Msg) => t.name === name);
const nodeNamed = (m: Msg, name: string): Msg => m.graph.node.find((n: Msg) => n.name === name);

// ─── the corpus ───────────────────────────────────────────────────────────────────────────────────

interface Spec {
  name: string;
  expect: CorpusCase["expect"];
  names?: RegExp;
  warnings?: number;
  /** Writes the case's inputs into its folder and returns the config's `model` (and overrides). */
  make(dir: string): Promise<Record<string, unknown>> | Record<string, unknown>;
}

const TINY_CFG = `[net]
width=16
height=16
channels=3

[convolutional]
batch_normalize=1
filters=4
size=3
stride=1
pad=1
activation=leaky

[convolutional]
filters=6
size=1
stride=1
pad=1
activation=linear
`;

/**
 * Writes the corpus into `root` (one folder per case) and returns its cases.
 *
 * @param root An empty folder.
 * @param options Seed of the random damage.
 * @returns The cases, in a fixed order.
 */
export async function generateCorpus(
  root: string,
  options: { seed?: number } = {},
): Promise<CorpusCase[]> {
  const rand = seededRandom(options.seed ?? 20261128);
  const base = baseModel();
  const weightOf = (m: Msg) => init(m, nodeNamed(m, "body").input[1]);
  /** Moves the weight's bytes out to `location` (read from offset 0, its own length when given). */
  const externalWeight = (m: Msg, location: string, withLength: boolean) => {
    const w = weightOf(m);
    w.externalData = [
      { key: "location", value: location },
      ...(withLength
        ? [{ key: "offset", value: "0" }, { key: "length", value: String(w.rawData.length) }]
        : []),
    ];
    w.dataLocation = 1;
    w.rawData = new Uint8Array();
  };
  const onnxCase = (
    name: string,
    names: RegExp,
    bytes: () => Uint8Array,
    expect: CorpusCase["expect"] = "error",
  ): Spec => ({
    name,
    expect,
    names,
    make: (dir) => {
      Deno.writeFileSync(join(dir, "model.onnx"), bytes());
      return {};
    },
  });
  const flips = (count: number) => () => {
    const b = Uint8Array.from(base);
    for (let i = 0; i < count; i++) {
      const at = Math.floor(rand.next() * b.length);
      b[at]! ^= 1 << Math.floor(rand.next() * 8);
    }
    return b;
  };
  const specs: Spec[] = [
    // Not a model at all.
    onnxCase("onnx-empty", /model\.onnx/, () => new Uint8Array()),
    onnxCase("onnx-truncated-half", /model\.onnx/, () => base.slice(0, base.length >> 1)),
    onnxCase("onnx-truncated-7-bytes", /model\.onnx/, () => base.slice(0, 7)),
    onnxCase("onnx-is-jpeg", /model\.onnx/, () => rgbJpeg(8, 8, 1)),
    onnxCase("onnx-is-json", /model\.onnx/, () => new TextEncoder().encode('{"graph": {}}\n')),
    onnxCase("onnx-random-bytes", /model\.onnx/, () => {
      const b = new Uint8Array(4096);
      for (let i = 0; i < b.length; i++) b[i] = Math.floor(rand.next() * 256);
      return b;
    }),
    {
      name: "onnx-is-a-directory",
      expect: "error",
      names: /model\.onnx/,
      make: (dir) => {
        Deno.mkdirSync(join(dir, "model.onnx"));
        return {};
      },
    },
    // Random damage: may still decode to a valid model; must never be an internal error.
    ...[1, 4, 16, 64].map((n) => onnxCase(`onnx-bitflips-${n}`, /./, flips(n), "either")),
    // Tensors whose bytes do not match what they claim.
    onnxCase("tensor-short-raw-data", /body\.weight|weight/, () =>
      mutateProto(base, (m) => {
        const w = weightOf(m);
        w.rawData = w.rawData.slice(0, w.rawData.length - 3);
      })),
    onnxCase("tensor-unknown-dtype", /weight/, () =>
      mutateProto(base, (m) => {
        weightOf(m).dataType = 99;
      })),
    onnxCase("tensor-int64-claimed-for-float-bytes", /weight/, () =>
      mutateProto(base, (m) => {
        const w = weightOf(m);
        w.dataType = 7;
        w.rawData = w.rawData.slice(0, w.rawData.length - 4);
      })),
    onnxCase("tensor-int32-weight-on-conv", /body|weight/, () =>
      mutateProto(base, (m) => {
        weightOf(m).dataType = 6; // same byte length, wrong type for Conv
      })),
    onnxCase("tensor-terabyte-dims", /weight/, () =>
      mutateProto(base, (m) => {
        const w = weightOf(m);
        w.dims = [65536, 65536, 65536, 16];
        w.rawData = new Uint8Array();
      })),
    onnxCase("tensor-dims-overflow-int64", /weight/, () =>
      mutateProto(base, (m) => {
        const w = weightOf(m);
        w.dims = [2 ** 52, 2 ** 52, 4, 4];
      })),
    onnxCase("tensor-negative-dim", /weight/, () =>
      mutateProto(base, (m) => {
        weightOf(m).dims = [-4, 4, 3, 3];
      })),
    onnxCase("tensor-external-data-missing", /weights\.bin|weight/, () =>
      mutateProto(base, (m) => externalWeight(m, "weights.bin", true))),
    onnxCase("tensor-external-data-escapes-folder", /\.\.\/|weight/, () =>
      mutateProto(base, (m) => externalWeight(m, "../../../etc/passwd", false))),
    {
      name: "tensor-external-data-short",
      expect: "error",
      names: /weights\.bin|weight/,
      make: (dir) => {
        Deno.writeFileSync(join(dir, "weights.bin"), new Uint8Array(10));
        Deno.writeFileSync(
          join(dir, "model.onnx"),
          mutateProto(base, (m) => externalWeight(m, "weights.bin", true)),
        );
        return {};
      },
    },
    // Graph structure.
    onnxCase("graph-shape-mismatch", /body|weight/, () =>
      mutateProto(base, (m) => {
        const w = weightOf(m);
        const [o, i, kh, kw] = w.dims.map(Number);
        w.dims = [o * i, 1, kh, kw]; // same element count, wrong input channels
      })),
    onnxCase("graph-cycle", /stem|body|head|cycle/i, () =>
      mutateProto(base, (m) => {
        nodeNamed(m, "stem").input[0] = nodeNamed(m, "head").output[0];
      })),
    onnxCase("graph-dangling-input", /nowhere/, () =>
      mutateProto(base, (m) => {
        nodeNamed(m, "body").input[0] = "nowhere";
      })),
    onnxCase("graph-output-not-produced", /ghost/, () =>
      mutateProto(base, (m) => {
        m.graph.output[0].name = "ghost";
      })),
    onnxCase("graph-duplicate-producer", /stem|body|produce/, () =>
      mutateProto(base, (m) => {
        nodeNamed(m, "body").output[0] = nodeNamed(m, "stem").output[0];
      })),
    onnxCase("graph-empty-op-type", /stem|op/, () =>
      mutateProto(base, (m) => {
        nodeNamed(m, "stem").opType = "";
      })),
    onnxCase("graph-unknown-domain", /com\.example|Frobnicate/, () =>
      mutateProto(base, (m) => {
        const n = nodeNamed(m, "body");
        n.opType = "Frobnicate";
        n.domain = "com.example";
        n.attribute = [];
        m.opsetImport.push({ domain: "com.example", version: 1 });
      })),
    onnxCase("graph-unknown-domain-no-import", /com\.example|Frobnicate/, () =>
      mutateProto(base, (m) => {
        const n = nodeNamed(m, "body");
        n.opType = "Frobnicate";
        n.domain = "com.example";
      })),
    onnxCase("graph-opset-from-the-future", /opset|999/, () =>
      mutateProto(base, (m) => {
        m.opsetImport = [{ domain: "", version: 999 }];
      })),
    onnxCase("graph-attribute-wrong-type", /body|kernel_shape|attribute/, () =>
      mutateProto(base, (m) => {
        const a = nodeNamed(m, "body").attribute.find((x: Msg) => x.name === "kernel_shape");
        a.type = 1; // FLOAT
        a.f = 3;
        a.ints = [];
      })),
    {
      // No input.size in the config: the model's claimed input size would be used as is.
      name: "graph-input-terapixel",
      expect: "error",
      names: /images|size|input/,
      make: (dir) => {
        Deno.writeFileSync(
          join(dir, "model.onnx"),
          mutateProto(base, (m) => {
            const dims = m.graph.input[0].type.tensorType.shape.dim;
            dims[2] = { dimValue: 1_000_000 };
            dims[3] = { dimValue: 1_000_000 };
          }),
        );
        return { input: {} };
      },
    },
    onnxCase("graph-input-int64-images", /images|int64/, () =>
      mutateProto(base, (m) => {
        m.graph.input[0].type.tensorType.elemType = 7;
      })),
    onnxCase("graph-input-rank-2", /images|stem/, () =>
      mutateProto(base, (m) => {
        m.graph.input[0].type.tensorType.shape.dim = [{ dimValue: 1 }, { dimValue: 768 }];
      })),
    {
      // The config's size disagrees with the model's fixed input size.
      name: "config-size-not-the-models",
      expect: "error",
      names: /input\.size.*\[16, 16\].*\[32, 32\]/,
      make: (dir) => {
        Deno.writeFileSync(join(dir, "model.onnx"), base);
        return { input: { size: [32, 32] } };
      },
    },
    // Darknet.
    ...darknetSpecs(),
    // tfjs.
    ...tfjsSpecs(),
    // Calibration images.
    ...imageSpecs(base),
  ];

  const cases: CorpusCase[] = [];
  for (const s of specs) {
    const dir = join(root, s.name);
    Deno.mkdirSync(dir, { recursive: true });
    const over = await s.make(dir);
    const config = {
      model: "model.onnx",
      output: "out/model.int8.onnx",
      input: { size: [16, 16] },
      data: { calibration: { images: "images" } },
      steps: [
        { use: "normalize" },
        { use: "calibrate", method: "minmax" },
        { use: "quantize", format: "qdq", activations: "u8" },
      ],
      ...over,
    };
    if (!("data" in over)) {
      Deno.mkdirSync(join(dir, "images"), { recursive: true });
      Deno.writeFileSync(join(dir, "images", "a.png"), png(16, 16, { colorType: 2, depth: 8 }));
    }
    const path = join(dir, "clipq.json");
    Deno.writeTextFileSync(path, JSON.stringify(config, null, 2) + "\n");
    cases.push({
      name: s.name,
      dir,
      config: path,
      output: join(dir, config.output as string),
      expect: s.expect,
      ...(s.names ? { names: s.names } : {}),
      ...(s.warnings !== undefined ? { warnings: s.warnings } : {}),
    });
  }
  return cases;
}

function darknetSpecs(): Spec[] {
  const cfgCase = (name: string, cfg: string, names: RegExp, weights?: Uint8Array): Spec => ({
    name,
    expect: "error",
    names,
    make: (dir) => {
      Deno.writeTextFileSync(join(dir, "net.cfg"), cfg);
      if (weights) Deno.writeFileSync(join(dir, "net.weights"), weights);
      return {
        model: { darknet: { cfg: "net.cfg", ...(weights ? { weights: "net.weights" } : {}) } },
      };
    },
  });
  return [
    cfgCase("darknet-empty-cfg", "", /net\.cfg/),
    cfgCase("darknet-bad-number", TINY_CFG.replace("filters=4", "filters=four"), /net\.cfg.*:?8/),
    cfgCase("darknet-line-without-equals", TINY_CFG.replace("size=3", "size 3"), /net\.cfg.*9/),
    cfgCase("darknet-unknown-section", TINY_CFG + "\n[frobnicate]\nx=1\n", /net\.cfg.*frobnicate/),
    cfgCase("darknet-no-net-section", TINY_CFG.replace("[net]", "[convolutional]"), /net\.cfg/),
    cfgCase(
      "darknet-route-out-of-range",
      TINY_CFG + "\n[route]\nlayers=-9\n",
      /net\.cfg.*(22|23|route)/,
    ),
    cfgCase(
      "darknet-billion-filters",
      TINY_CFG.replace("filters=6", "filters=1000000000"),
      /net\.cfg/,
    ),
    cfgCase(
      "darknet-short-weights",
      TINY_CFG,
      /net\.weights/,
      new Uint8Array([0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3]),
    ),
  ];
}

function tfjsSpecs(): Spec[] {
  const copy = async (dir: string) => {
    const json = await humanModel("blazeface");
    const bin = json.replace(/\.json$/, ".bin");
    Deno.copyFileSync(json, join(dir, "model.json"));
    Deno.copyFileSync(bin, join(dir, "blazeface.bin"));
    return JSON.parse(Deno.readTextFileSync(join(dir, "model.json")));
  };
  const tf = (
    name: string,
    names: RegExp,
    damage: (dir: string, manifest: Msg) => void,
  ): Spec => ({
    name,
    expect: "error",
    names,
    make: async (dir) => {
      damage(dir, await copy(dir));
      return { model: { tfjs: "model.json" }, input: { size: [128, 128] } };
    },
  });
  return [
    tf("tfjs-shard-missing", /blazeface\.bin/, (dir) => Deno.removeSync(join(dir, "blazeface.bin"))),
    tf("tfjs-shard-short", /blazeface\.bin/, (dir) => {
      const p = join(dir, "blazeface.bin");
      Deno.writeFileSync(p, Deno.readFileSync(p).slice(0, 1000));
    }),
    tf("tfjs-shard-outside-folder", /\.\.\/|model\.json/, (dir, m) => {
      m.weightsManifest[0].paths = ["../../../etc/hostname"];
      Deno.writeTextFileSync(join(dir, "model.json"), JSON.stringify(m));
    }),
    tf("tfjs-manifest-truncated", /model\.json/, (dir) => {
      const p = join(dir, "model.json");
      Deno.writeTextFileSync(p, Deno.readTextFileSync(p).slice(0, 5000));
    }),
    tf("tfjs-manifest-no-topology", /model\.json|modelTopology/, (dir, m) => {
      delete m.modelTopology;
      Deno.writeTextFileSync(join(dir, "model.json"), JSON.stringify(m));
    }),
    tf("tfjs-weight-unknown-dtype", /model\.json|complex|dtype/, (dir, m) => {
      m.weightsManifest[0].weights[0].dtype = "complex64";
      Deno.writeTextFileSync(join(dir, "model.json"), JSON.stringify(m));
    }),
  ];
}

function imageSpecs(base: Uint8Array): Spec[] {
  const good = () => png(16, 16, { colorType: 2, depth: 8 });
  const valid = rgbJpeg(16, 16, 3);
  const sos = valid.findIndex((b, i) => b === 0xff && valid[i + 1] === 0xda);
  const folder = (files: Record<string, Uint8Array>, onBadImage?: "skip" | "fail") => (dir: string) => {
    const images = join(dir, "images");
    Deno.mkdirSync(images, { recursive: true });
    for (const [name, bytes] of Object.entries(files)) Deno.writeFileSync(join(images, name), bytes);
    Deno.writeFileSync(join(dir, "model.onnx"), base);
    return {
      data: { calibration: { images: "images", ...(onBadImage ? { onBadImage } : {}) } },
    };
  };
  const truncatedPng = good().slice(0, 60);
  const corruptJpeg = concat([valid.slice(0, sos + 20), new Uint8Array([0xff, 0xc4, 0, 3, 0xff])]);
  const truncatedJpeg = valid.slice(0, Math.floor((sos + valid.length) / 2));
  // A PNG header that claims 100 000 × 100 000 pixels (must be refused before decoding).
  const hugePng = concat([
    good().slice(0, 16),
    be32(100_000),
    be32(100_000),
    new Uint8Array([8, 2, 0, 0, 0]),
  ]);
  return [
    {
      name: "images-unusual-but-valid",
      expect: "ok",
      make: folder({
        "gray8.png": png(16, 16, { colorType: 0, depth: 8 }),
        "rgb16.png": png(16, 16, { colorType: 2, depth: 16, samples: (i) => (i * 977) % 65536 }),
        "rgba.png": png(16, 16, { colorType: 6, depth: 8 }),
        "cmyk.jpg": cmykJpeg(),
        "rgb.jpg": valid,
      }),
    },
    {
      name: "images-corrupt-jpeg-fail",
      expect: "error",
      names: /corrupt\.jpg/,
      make: folder({ "a.png": good(), "corrupt.jpg": corruptJpeg }, "fail"),
    },
    {
      name: "images-truncated-jpeg-fail",
      expect: "error",
      names: /truncated\.jpg/,
      make: folder({ "a.png": good(), "truncated.jpg": truncatedJpeg }),
    },
    {
      name: "images-truncated-png-fail",
      expect: "error",
      names: /truncated\.png/,
      make: folder({ "a.png": good(), "truncated.png": truncatedPng }, "fail"),
    },
    {
      name: "images-huge-header-fail",
      expect: "error",
      names: /huge\.png/,
      make: folder({ "a.png": good(), "huge.png": hugePng }, "fail"),
    },
    {
      name: "images-bad-ones-skipped",
      expect: "skip",
      warnings: 5,
      make: folder({
        "a.png": good(),
        "b.jpg": valid,
        "corrupt.jpg": corruptJpeg,
        "truncated.jpg": truncatedJpeg,
        "truncated.png": truncatedPng,
        "empty.jpg": new Uint8Array(),
        "huge.png": hugePng,
      }, "skip"),
    },
    {
      name: "images-all-bad-skipped",
      expect: "error",
      names: /images/,
      make: folder({ "corrupt.jpg": corruptJpeg, "empty.png": new Uint8Array() }, "skip"),
    },
    {
      name: "images-zero-images",
      expect: "error",
      names: /images/,
      make: folder({ "readme.txt": new TextEncoder().encode("no images here\n") }),
    },
  ];
}

if (import.meta.main) {
  const root = Deno.args[0];
  if (!root) {
    console.error("usage: deno run -A tests/corpus/generate.ts OUTPUT_FOLDER");
    Deno.exit(1);
  }
  Deno.mkdirSync(root, { recursive: true });
  const cases = await generateCorpus(root);
  for (const c of cases) console.log(`${c.expect.padEnd(6)} ${c.name}`);
  console.log(`${cases.length} cases in ${root}`);
}
