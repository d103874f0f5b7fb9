// An SSD-MobileNetV2-shaped detector, written the way tf2onnx / torch export one at opset 13 with
// BatchNorm folded into the convs: every activation is ReLU6 = Clip(0, 6); the backbone is
// MobileNetV2's inverted residuals (1×1 expand conv + ReLU6 → 3×3 depthwise conv + ReLU6 → 1×1
// linear projection conv, a residual Add where shapes match); SSD takes six feature maps (the
// expansion output of block 13 at stride 16, the 1×1 conv after the last block at stride 32, and
// four extra 1×1 → 3×3 stride-2 layers), each with a 3×3 class conv and a 3×3 box conv; Transpose to
// NHWC, Reshape to [1, H·W·A, K] and Concat over the maps give "boxes" [1, P, 4] and, after a
// last-axis Softmax, "scores" [1, P, nc + 1] (background at 0). Priors follow TF's SSD anchor
// generator (3 boxes on the first map, 6 on the others), in the order the Reshape lays them out.
//
// No real weights can be downloaded, and seeded weights give activations of arbitrary scale. So
// `withRealisticScales` fits every conv, in graph order, on real photos: each output channel's
// pre-activation is affinely mapped to a seeded target mean and standard deviation (folded into
// the weights and bias, as BatchNorm folding would be): ReLU6 convs mean U(−0.5, 1.5), std U(1, 2)
// (a few per cent of values clip at 6, many at 0), projection convs mean 0, std U(0.5, 1.5), class
// convs std 1.5 with the background logit at mean +3 (most priors are background, as a trained SSD
// says), box convs std 0.5.
import { ModelBuilder, seededRandom } from "@clipq/onnx/builder";
import type { Graph } from "@clipq/onnx/graph";
import { float32, type Tensor } from "@clipq/onnx/tensor";
import { createSession } from "@clipq/runtime";

/** Options of {@linkcode ssdShapedModel}. */
export interface SsdShapedOptions {
  /** Input height and width (300 as SSD-MobileNetV2). */
  inputSize?: number;
  /** Classes without background (VOC 20, COCO 90). */
  classes?: number;
  /** MobileNetV2 width multiplier. */
  width?: number;
  /** Weight seed. */
  seed?: number;
}

/** A built model, its priors `[cx, cy, w, h]` (normalized) and the roles of its convs. */
export interface SsdShapedModel {
  /** The graph: input "images" [1, 3, S, S], outputs "boxes" and "scores". */
  graph: Graph;
  /** One prior per box, in output order. */
  priors: number[][];
  /** Conv node name → role. */
  roles: Map<string, ConvRole>;
}

/** What a conv is in the network (decides its target activation statistics). */
export type ConvRole = "relu6" | "depthwise" | "projection" | "class" | "box";

// MobileNetV2 inverted residual settings: expansion t, channels c, repeats n, stride s.
const BLOCKS: [number, number, number, number][] = [
  [1, 16, 1, 1],
  [6, 24, 2, 2],
  [6, 32, 3, 2],
  [6, 64, 4, 2],
  [6, 96, 3, 1],
  [6, 160, 3, 2],
  [6, 320, 1, 1],
];
// Extra SSD layers after the backbone: 1×1 channels, 3×3 stride-2 channels.
const EXTRAS: [number, number][] = [[256, 512], [128, 256], [128, 256], [64, 128]];

/** Channels rounded to a multiple of 8, at least 8 (MobileNetV2's make_divisible). */
function divisible(c: number): number {
  const r = Math.max(8, Math.floor(c / 8 + 0.5) * 8);
  return r < 0.9 * c ? r + 8 : r;
}

/**
 * TF's SSD anchors: scales 0.2…0.95 over six maps; the first map has (0.1, 1), (0.2, 2), (0.2, ½),
 * the others the ratios 1, 2, ½, 3, ⅓ at s_k and 1 at √(s_k · s_k+1).
 */
export function ssdPriors(maps: readonly number[]): number[][] {
  const m = maps.length;
  const scale = (k: number) => k >= m ? 1 : 0.2 + (0.95 - 0.2) * k / (m - 1);
  const priors: number[][] = [];
  maps.forEach((f, k) => {
    const shapes: [number, number][] = k === 0 ? [[0.1, 1], [scale(0), 2], [scale(0), 0.5]] : [
      ...[1, 2, 0.5, 3, 1 / 3].map((r) => [scale(k), r] as [number, number]),
      [Math.sqrt(scale(k) * scale(k + 1)), 1],
    ];
    for (let y = 0; y < f; y++) {
      for (let x = 0; x < f; x++) {
        for (const [s, r] of shapes) {
          priors.push([(x + 0.5) / f, (y + 0.5) / f, s * Math.sqrt(r), s / Math.sqrt(r)]);
        }
      }
    }
  });
  return priors;
}

/** Anchors per location of each map (as {@linkcode ssdPriors} generates them). */
export const ANCHORS = [3, 6, 6, 6, 6, 6] as const;

/**
 * Builds the model with seeded (not yet rescaled) weights.
 *
 * @param options Input size, classes, width, seed.
 * @returns The graph, priors and conv roles.
 */
export function ssdShapedModel(options: SsdShapedOptions = {}): SsdShapedModel {
  const size = options.inputSize ?? 300;
  const nc = options.classes ?? 20;
  const width = options.width ?? 0.35;
  const b = new ModelBuilder({ seed: options.seed ?? 52, opset: 13, name: "ssd_mobilenet_v2" });
  const roles = new Map<string, ConvRole>();
  const conv = (
    x: string,
    role: ConvRole,
    o: { outChannels: number; kernel: number; stride?: number; group?: number },
  ) => {
    const y = b.conv(x, o);
    roles.set(y, role);
    return role === "relu6" || role === "depthwise" ? b.relu6(y) : y;
  };
  let c = divisible(32 * width);
  let x = conv(b.input("images", [1, 3, size, size]), "relu6", {
    outChannels: c,
    kernel: 3,
    stride: 2,
  });
  const features: string[] = [];
  BLOCKS.forEach(([t, cOut, n, s], blockIndex) => {
    const out = divisible(cOut * width);
    for (let i = 0; i < n; i++) {
      const stride = i === 0 ? s : 1;
      const hidden = c * t;
      let h = x;
      if (t !== 1) h = conv(h, "relu6", { outChannels: hidden, kernel: 1 });
      // SSD's first map is the expansion output of the first stride-2 block to 160 channels.
      if (blockIndex === 5 && i === 0) features.push(h);
      h = conv(h, "depthwise", { outChannels: hidden, kernel: 3, stride, group: hidden });
      h = conv(h, "projection", { outChannels: out, kernel: 1 });
      x = stride === 1 && c === out ? b.add(x, h) : h;
      c = out;
    }
  });
  x = conv(x, "relu6", { outChannels: divisible(1280 * width), kernel: 1 });
  features.push(x);
  for (const [c1, c3] of EXTRAS) {
    const h = conv(x, "relu6", { outChannels: divisible(c1 * width), kernel: 1 });
    x = conv(h, "relu6", { outChannels: divisible(c3 * width), kernel: 3, stride: 2 });
    features.push(x);
  }
  const maps: number[] = [];
  let f = Math.ceil(Math.ceil(size / 2) / 8); // stride 16
  for (let k = 0; k < features.length; k++) {
    maps.push(f);
    f = Math.ceil(f / 2);
  }
  const locs: string[] = [], confs: string[] = [];
  features.forEach((feat, k) => {
    const a = ANCHORS[k]!;
    const cls = b.conv(feat, { outChannels: a * (nc + 1), kernel: 3 });
    const box = b.conv(feat, { outChannels: a * 4, kernel: 3 });
    roles.set(cls, "class");
    roles.set(box, "box");
    confs.push(b.reshape(b.transpose(cls, [0, 2, 3, 1]), [1, -1, nc + 1]));
    locs.push(b.reshape(b.transpose(box, [0, 2, 3, 1]), [1, -1, 4]));
  });
  b.output(b.concat(locs, 1), "boxes");
  b.output(b.softmax(b.concat(confs, 1), -1), "scores");
  return { graph: lowPass(b.build()), priors: ssdPriors(maps), roles };
}

/**
 * Gives every 3×3 kernel slice (one output, one input channel) one sign: w ← sign(Σw) · |w|.
 * Seeded zero-mean kernels are high-pass filters: fitted to unit output on a smooth photo, they
 * amplify white noise (int8 rounding) many times per layer, and after 50 layers the float model's
 * own outputs decorrelated from a 1e-3 perturbation of the input. Trained filters are mostly
 * smooth; same-signed slices keep that property (measured: output SQNR of the int8 model 1–8 dB
 * with the raw seeded kernels).
 */
function lowPass(g: Graph): Graph {
  const initializers = new Map(g.initializers);
  for (const n of g.nodes) {
    const w = n.op === "Conv" ? g.initializers.get(n.inputs[1]!) : undefined;
    if (!w || w.dims[2] !== 3 || w.dims[3] !== 3) continue;
    const d = Float32Array.from(w.data as Float32Array);
    for (let o = 0; o < d.length; o += 9) {
      let sum = 0;
      for (let i = o; i < o + 9; i++) sum += d[i]!;
      for (let i = o; i < o + 9; i++) d[i] = (sum < 0 ? -1 : 1) * Math.abs(d[i]!);
    }
    initializers.set(n.inputs[1]!, float32([...w.dims], d));
  }
  return { ...g, initializers };
}

/**
 * Rescales every conv, in graph order, so that its output channels have realistic statistics on
 * the given inputs (see the module comment): y'_c = (y_c − m_c) · σ_c / s_c + μ_c, folded into the
 * conv's weight and bias. One onnxruntime session per conv, since each fit changes what follows.
 *
 * @param model The model from {@linkcode ssdShapedModel}.
 * @param feeds Input batches (real photos, preprocessed).
 * @param seed Seed of the target statistics.
 * @returns The graph with rescaled weights.
 */
export async function withRealisticScales(
  model: SsdShapedModel,
  feeds: readonly Record<string, Tensor>[],
  seed = 6,
): Promise<Graph> {
  const rnd = seededRandom(seed);
  let graph = model.graph;
  const classes = graph.outputs.find((o) => o.name === "scores")!.shape![2] as number;
  for (const n of graph.nodes) {
    if (n.op !== "Conv") continue;
    const role = model.roles.get(n.outputs[0]!)!;
    const y = n.outputs[0]!;
    const session = await createSession(graph, { taps: [y], optimizationLevel: "basic" });
    let sum: Float64Array | undefined, sq: Float64Array | undefined, count = 0;
    try {
      for (const feed of feeds) {
        const t = (await session.run(feed, { outputs: [y] }))[y]!;
        const [, C, H, W] = t.dims as number[];
        const d = t.data as Float32Array;
        sum ??= new Float64Array(C!);
        sq ??= new Float64Array(C!);
        for (let ch = 0; ch < C!; ch++) {
          let s = 0, q = 0;
          for (let i = ch * H! * W!; i < (ch + 1) * H! * W!; i++) {
            s += d[i]!;
            q += d[i]! * d[i]!;
          }
          sum[ch]! += s;
          sq[ch]! += q;
        }
        count += H! * W!;
      }
    } finally {
      await session.release();
    }
    const C = sum!.length;
    const w = graph.initializers.get(n.inputs[1]!)!;
    const bias = graph.initializers.get(n.inputs[2]!)!;
    const wd = Float32Array.from(w.data as Float32Array);
    const bd = Float32Array.from(bias.data as Float32Array);
    const per = wd.length / C;
    for (let ch = 0; ch < C; ch++) {
      const m = sum![ch]! / count;
      const s = Math.sqrt(Math.max(sq![ch]! / count - m * m, 1e-12));
      let mu: number, sigma: number;
      if (role === "relu6" || role === "depthwise") {
        mu = rnd.uniform(-0.5, 1.5);
        sigma = rnd.uniform(1, 2);
      } else if (role === "projection") {
        mu = 0;
        sigma = rnd.uniform(0.5, 1.5);
      } else if (role === "class") {
        mu = ch % classes === 0 ? 3 : 0;
        sigma = 1.5;
      } else {
        mu = 0;
        sigma = 0.5;
      }
      const k = sigma / s;
      for (let i = ch * per; i < (ch + 1) * per; i++) wd[i] = wd[i]! * k;
      bd[ch] = (bd[ch]! - m) * k + mu;
    }
    const initializers = new Map(graph.initializers);
    initializers.set(n.inputs[1]!, float32([...w.dims], wd));
    initializers.set(n.inputs[2]!, float32([...bias.dims], bd));
    graph = { ...graph, initializers };
  }
  return graph;
}
