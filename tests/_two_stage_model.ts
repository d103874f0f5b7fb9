// A two-stage detector shaped like torchvision's Faster R-CNN export (opset 17), seeded weights:
// a Conv+Relu+MaxPool backbone to a stride-16 feature map, the RPN (3×3 conv, 1×1 objectness and
// deltas) with its decode against constant anchors in the graph (Transpose/Reshape/Slice/Exp/Mul/
// Add/Concat/Clip as torchvision writes BoxCoder.decode), Sigmoid scores, TopK (pre-NMS top N),
// NonMaxSuppression and a Gather of the kept boxes — so the RoI count is data-dependent — then
// RoiAlign (7×7, scale 1/16, batch indices from ConstantOfShape(Shape(proposals)[:1])) and the two-FC box
// head (fc6, fc7, cls + Softmax, bbox). The final per-class decode and NMS stay outside the graph,
// as a user would run them on "class_scores" and "box_deltas". No real weights may be downloaded.
import { ModelBuilder } from "@clipq/onnx/builder";
import type { Graph } from "@clipq/onnx/graph";
import { float32, int64 } from "@clipq/onnx/tensor";

/** Options of {@linkcode twoStageModel}. */
export interface TwoStageOptions {
  /** Input height and width (a multiple of 16). */
  inputSize?: number;
  /** Object classes (the head adds background). */
  classes?: number;
  /** Feature channels of the stride-16 map (RoiAlign's input). */
  channels?: number;
  /** Proposals kept by TopK before NMS. */
  preNms?: number;
  /** NonMaxSuppression's max_output_boxes_per_class. */
  postNms?: number;
  /** NonMaxSuppression's IoU threshold. */
  nmsIou?: number;
  /** Weight seed. */
  seed?: number;
}

/** Anchor sizes per cell (square anchors, torchvision's ((32,), (64,), (128,)) on one level). */
export const ANCHOR_SIZES = [32, 64, 128] as const;

/** The outputs: proposals [K, 4] (x1 y1 x2 y2, input pixels), class_scores [K, nc+1], box_deltas [K, 4(nc+1)]. */
export const OUTPUTS = ["proposals", "class_scores", "box_deltas"] as const;

/** The head's weighted layers (after RoiAlign) and the RPN's. */
export const FC_LAYERS = ["fc6", "fc7", "cls_score", "bbox_pred"] as const;

/**
 * Builds the model.
 *
 * @param options Input size, classes, channels, proposal counts, seed.
 * @returns The graph (input "images" [1, 3, size, size]; outputs {@linkcode OUTPUTS}).
 */
export function twoStageModel(options: TwoStageOptions = {}): Graph {
  const size = options.inputSize ?? 320;
  const nc = options.classes ?? 20;
  const c = options.channels ?? 128;
  const pre = options.preNms ?? 300;
  const post = options.postNms ?? 1000;
  const b = new ModelBuilder({ seed: options.seed ?? 51, opset: 17, name: "two_stage" });
  const stage = (x: string, out: number) =>
    b.maxPool(b.relu(b.conv(x, { outChannels: out, kernel: 3 })), { kernel: 2 });
  let x = b.input("images", [1, 3, size, size]);
  for (const out of [16, 32, 64, c]) x = stage(x, out);
  const feature = x; // [1, c, size/16, size/16]
  const grid = size / 16;
  const a = ANCHOR_SIZES.length;
  const n = grid * grid * a;

  // RPN head.
  const t = b.relu(b.conv(feature, { outChannels: c, kernel: 3, name: "rpn.conv" }));
  const logits = b.conv(t, { outChannels: a, kernel: 1, name: "rpn.cls_logits" });
  const deltas = b.conv(t, { outChannels: 4 * a, kernel: 1, name: "rpn.bbox_pred" });
  // torchvision's permute_and_flatten: [1, A, H, W] → [1, H·W·A]; [1, 4A, H, W] → [1, H·W·A, 4].
  const objectness = b.reshape(b.transpose(logits, [0, 2, 3, 1]), [1, n]);
  const rel = b.reshape(
    b.transpose(b.reshape(deltas, [1, a, 4, grid, grid]), [0, 3, 4, 1, 2]),
    [1, n, 4],
  );

  // Anchors in (y, x, a) order, as centres and sizes: BoxCoder.decode with weights (1, 1, 1, 1).
  const ctr = new Float32Array(2 * n), wh = new Float32Array(2 * n);
  let k = 0;
  for (let yy = 0; yy < grid; yy++) {
    for (let xx = 0; xx < grid; xx++) {
      for (const s of ANCHOR_SIZES) {
        ctr[2 * k] = xx * 16 + 8;
        ctr[2 * k + 1] = yy * 16 + 8;
        wh[2 * k] = wh[2 * k + 1] = s;
        k++;
      }
    }
  }
  const anchorCtr = b.initializer(float32([1, n, 2], ctr), "anchors.ctr");
  const anchorWh = b.initializer(float32([1, n, 2], wh), "anchors.wh");
  const slice = (x: string, from: number, to: number) =>
    b.op("Slice", [
      x,
      b.initializer(int64([1], [from])),
      b.initializer(int64([1], [to])),
      b.initializer(int64([1], [2])),
    ], { shape: [1, n, to - from] });
  const dxy = slice(rel, 0, 2);
  // dw, dh clamped at log(1000 / 16) before Exp (torchvision's bbox_xform_clip).
  const dwh = b.op("Min", [slice(rel, 2, 4), b.initializer(Math.log(1000 / 16))], {
    shape: [1, n, 2],
  });
  const centre = b.add(b.mul(dxy, anchorWh), anchorCtr);
  const half = b.mul(b.mul(b.op("Exp", [dwh], { shape: [1, n, 2] }), anchorWh), 0.5);
  const x1y1 = b.op("Sub", [centre, half], { shape: [1, n, 2] });
  const x2y2 = b.add(centre, half);
  // clip_boxes_to_image (square input: one Clip).
  const boxes = b.reshape(b.clip(b.concat([x1y1, x2y2], 2), 0, size), [n, 4]);
  const scores = b.sigmoid(objectness);

  // Pre-NMS top N, NMS, and the kept boxes: K varies per image.
  const [top, topIdx] = ["rpn.topk.values", "rpn.topk.indices"];
  b.op("TopK", [scores, b.initializer(int64([1], [pre]))], {
    name: "rpn.topk",
    outputs: [top, topIdx],
    attributes: { axis: { type: "int", value: -1 } },
    shape: [1, pre],
  });
  const topBoxes = b.op("Gather", [boxes, b.reshape(topIdx, [pre])], {
    name: "rpn.gather_top",
    shape: [pre, 4],
  });
  const selected = b.op("NonMaxSuppression", [
    b.reshape(topBoxes, [1, pre, 4]),
    b.reshape(top, [1, 1, pre]),
    b.initializer(int64([1], [post])),
    b.initializer(float32([1], [options.nmsIou ?? 0.7])),
  ], { name: "rpn.nms", dtype: "int64", shape: [null, 3] });
  const keep = b.op("Gather", [selected, b.initializer(int64([], [2]))], {
    name: "rpn.keep",
    attributes: { axis: { type: "int", value: 1 } },
    dtype: "int64",
    shape: [null],
  });
  const proposals = b.op("Gather", [topBoxes, keep], { name: "rpn.proposals", shape: [null, 4] });

  // RoiAlign on batch 0 for every proposal (torchvision's MultiScaleRoIAlign on one level).
  const count = b.op("Shape", [proposals], {
    attributes: { end: { type: "int", value: 1 } },
    dtype: "int64",
    shape: [1],
  });
  const batchIndices = b.op("ConstantOfShape", [count], {
    attributes: { value: { type: "tensor", value: int64([1], [0]) } },
    dtype: "int64",
    shape: [null],
  });
  const pooled = b.op("RoiAlign", [feature, proposals, batchIndices], {
    name: "roi_align",
    attributes: {
      mode: { type: "string", value: "avg" },
      output_height: { type: "int", value: 7 },
      output_width: { type: "int", value: 7 },
      sampling_ratio: { type: "int", value: 2 },
      spatial_scale: { type: "float", value: 1 / 16 },
      coordinate_transformation_mode: { type: "string", value: "output_half_pixel" },
    },
    shape: [null, c, 7, 7],
  });

  // TwoMLPHead + FastRCNNPredictor.
  const fc6 = b.relu(b.gemm(b.flatten(pooled), { out: 256, name: "fc6" }));
  const fc7 = b.relu(b.gemm(fc6, { out: 256, name: "fc7" }));
  const cls = b.softmax(b.gemm(fc7, { out: nc + 1, name: "cls_score" }), -1);
  const box = b.gemm(fc7, { out: 4 * (nc + 1), name: "bbox_pred" });
  b.output(proposals, "proposals");
  b.output(cls, "class_scores");
  b.output(box, "box_deltas");
  const g = b.build();
  // A trained RPN predicts small deltas (|d| mostly < 0.5); He-scaled random ones (std ≈ 1, up to
  // ±3) shift boxes by up to three anchor sizes and collapse many onto the image border.
  const initializers = new Map(g.initializers);
  for (const name of ["rpn.bbox_pred.weight", "rpn.bbox_pred.bias"]) {
    const t = initializers.get(name)!;
    initializers.set(name, float32(t.dims, (t.data as Float32Array).map((v) => v * DELTA_SCALE)));
  }
  return { ...g, initializers };
}

/** Scale of the RPN deltas layer's random weights (see {@linkcode twoStageModel}). */
const DELTA_SCALE = 0.15;

/**
 * The box head alone: "proposals" becomes a graph input (the RPN is pruned), so two models' heads
 * can be compared on the same RoIs.
 *
 * @param graph A {@linkcode twoStageModel}, float or quantized.
 * @returns The graph with inputs "images" and "proposals" and outputs "class_scores", "box_deltas".
 */
export function boxHeadOnly(graph: Graph): Graph {
  const outputs = graph.outputs.filter((v) => v.name !== "proposals");
  const needed = new Set(outputs.map((v) => v.name));
  const nodes = [];
  for (const n of [...graph.nodes].reverse()) {
    if (n.outputs.includes("proposals") || !n.outputs.some((o) => needed.has(o))) continue;
    nodes.unshift(n);
    for (const i of n.inputs) if (i) needed.add(i);
  }
  return {
    ...graph,
    nodes,
    initializers: new Map([...graph.initializers].filter(([k]) => needed.has(k))),
    inputs: [...graph.inputs, { name: "proposals", dtype: "float32", shape: ["rois", 4] }],
    outputs,
    valueInfo: graph.valueInfo.filter((v) => needed.has(v.name)),
  };
}
