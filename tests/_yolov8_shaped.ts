// A YOLOv8-shaped detector written the way Ultralytics exports one (opset 17, BN folded into the
// convs): SiLU as Sigmoid + Mul, C2f blocks (Split + bottlenecks + Concat), SPPF (three 5×5
// MaxPools), a PAN neck, and the decoupled anchor-free head with its decode in the graph — per
// level box (4·16 DFL logits) and class branches concatenated, flattened and concatenated over the
// levels, Split, DFL (Reshape → Transpose → Softmax over 16 bins → 1×1 Conv with the fixed weights
// 0..15), dist2bbox against constant anchor points, × stride, and Sigmoid on the classes; output
// "output0" [1, 4 + nc, anchors]. Weights are seeded (no real weights may be downloaded).
import { ModelBuilder } from "@clipq/onnx/builder";
import type { Graph } from "@clipq/onnx/graph";
import { float32 } from "@clipq/onnx/tensor";

/** Options of {@linkcode yolov8ShapedModel}. */
export interface Yolov8ShapedOptions {
  /** Input height and width (a multiple of 32). */
  inputSize?: number;
  /** Classes. */
  classes?: number;
  /** Channel multiplier of YOLOv8's 64…1024 (0.25 = YOLOv8n: 16…256). */
  width?: number;
  /** Weight seed. */
  seed?: number;
}

/** The strides of YOLOv8's three levels. */
export const STRIDES = [8, 16, 32] as const;

/** DFL bins per box side (Ultralytics reg_max). */
export const REG_MAX = 16;

/**
 * Builds the model.
 *
 * @param options Input size, classes, width, seed.
 * @returns The graph (input "images", output "output0").
 */
export function yolov8ShapedModel(options: Yolov8ShapedOptions = {}): Graph {
  const size = options.inputSize ?? 320;
  const nc = options.classes ?? 80;
  const width = options.width ?? 0.25;
  const b = new ModelBuilder({ seed: options.seed ?? 8, opset: 17, name: "yolov8_shaped" });
  const ch = (c: number) => Math.max(8, Math.round(c * width));
  // Ultralytics "Conv": Conv2d + BN (folded at export) + SiLU.
  const conv = (x: string, c: number, k: number, s = 1) =>
    b.silu(b.conv(x, { outChannels: c, kernel: k, stride: s }));
  const c2f = (x: string, c: number, n: number, shortcut: boolean) => {
    const h = c / 2;
    const parts = b.split(conv(x, c, 1), [h, h]);
    let y = parts[1]!;
    for (let i = 0; i < n; i++) {
      const z = conv(conv(y, h, 3), h, 3);
      y = shortcut ? b.add(y, z) : z;
      parts.push(y);
    }
    return conv(b.concat(parts), c, 1);
  };
  const sppf = (x: string, c: number) => {
    const y0 = conv(x, c / 2, 1);
    const y1 = b.maxPool(y0, { kernel: 5, stride: 1, pad: 2 });
    const y2 = b.maxPool(y1, { kernel: 5, stride: 1, pad: 2 });
    const y3 = b.maxPool(y2, { kernel: 5, stride: 1, pad: 2 });
    return conv(b.concat([y0, y1, y2, y3]), c, 1);
  };

  let x = conv(b.input("images", [1, 3, size, size]), ch(64), 3, 2);
  x = c2f(conv(x, ch(128), 3, 2), ch(128), 1, true);
  const p3 = c2f(conv(x, ch(256), 3, 2), ch(256), 2, true);
  const p4 = c2f(conv(p3, ch(512), 3, 2), ch(512), 2, true);
  const p5 = sppf(c2f(conv(p4, ch(1024), 3, 2), ch(1024), 1, true), ch(1024));
  const h4 = c2f(b.concat([b.resize(p5, 2), p4]), ch(512), 1, false);
  const n3 = c2f(b.concat([b.resize(h4, 2), p3]), ch(256), 1, false);
  const n4 = c2f(b.concat([conv(n3, ch(256), 3, 2), h4]), ch(512), 1, false);
  const n5 = c2f(b.concat([conv(n4, ch(512), 3, 2), p5]), ch(1024), 1, false);

  // Detect: per level box branch (→ 4·16) and class branch (→ nc), concatenated and flattened.
  const c2 = Math.max(16, Math.floor(ch(256) / 4), 4 * REG_MAX);
  const c3 = Math.max(ch(256), Math.min(nc, 100));
  const levels = [n3, n4, n5].map((f) => {
    const box = b.conv(conv(conv(f, c2, 3), c2, 3), { outChannels: 4 * REG_MAX, kernel: 1 });
    const cls = b.conv(conv(conv(f, c3, 3), c3, 3), { outChannels: nc, kernel: 1 });
    return b.reshape(b.concat([box, cls]), [1, 4 * REG_MAX + nc, -1]);
  });
  const all = b.concat(levels, 2);
  const anchors = STRIDES.reduce((n, s) => n + (size / s) ** 2, 0);
  const [dist, logits] = b.split(all, [4 * REG_MAX, nc]);
  // DFL: the expectation of a softmax over 16 bins, as a 1×1 Conv whose weights are 0..15.
  const bins = b.softmax(
    b.transpose(b.reshape(dist!, [1, 4, REG_MAX, anchors]), [0, 2, 1, 3]),
    1,
  );
  const project = b.initializer(
    float32([1, REG_MAX, 1, 1], Array.from({ length: REG_MAX }, (_, i) => i)),
    "dfl.conv.weight",
  );
  const expectation = b.op("Conv", [bins, project], {
    name: "dfl.conv",
    attributes: { kernel_shape: { type: "ints", value: [1, 1] } },
    shape: [1, 1, 4, anchors],
  });
  const ltrb = b.reshape(expectation, [1, 4, anchors]);
  // dist2bbox (xywh) against the anchor points (cell centres), then × stride.
  const points = new Float32Array(2 * anchors);
  const strides = new Float32Array(anchors);
  let k = 0;
  for (const s of STRIDES) {
    const g = size / s;
    for (let y = 0; y < g; y++) {
      for (let xx = 0; xx < g; xx++, k++) {
        points[k] = xx + 0.5;
        points[anchors + k] = y + 0.5;
        strides[k] = s;
      }
    }
  }
  const anchorPoints = b.initializer(float32([1, 2, anchors], points), "anchor_points");
  const [lt, rb] = b.split(ltrb, [2, 2]);
  const x1y1 = b.op("Sub", [anchorPoints, lt!], { shape: [1, 2, anchors] });
  const x2y2 = b.add(anchorPoints, rb!);
  const cxy = b.op("Div", [b.add(x1y1, x2y2), b.initializer(2)], { shape: [1, 2, anchors] });
  const wh = b.op("Sub", [x2y2, x1y1], { shape: [1, 2, anchors] });
  const dbox = b.mul(b.concat([cxy, wh]), float32([1, anchors], strides));
  b.output(b.concat([dbox, b.sigmoid(logits!)]), "output0");
  return b.build();
}
