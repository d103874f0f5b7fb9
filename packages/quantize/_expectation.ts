// Distribution-focal-loss heads (YOLOv8/v11, NanoDet-Plus, PP-YOLOE, GFL) end in a weighted layer
// that is not learned: a 1×1 Conv (Ultralytics' "DFL conv", weights 0..15) or a MatMul by a
// projection vector that takes the expectation of a Softmax over the distance bins. It decodes
// boxes: under head "auto" it stays float with the rest of the decode, and the learned convs before
// the Softmax are the head's last weighted layers. Quantizing it moves boxes: the u8 Softmax output
// has a step of 1/255 of the largest bin probability, times up to 15 bins, times the stride.
import type { Node } from "@clipq/onnx/graph";
import type { Tensor } from "@clipq/onnx/tensor";

/** Ops that only move or view values: a Softmax output read through them is still a distribution. */
const LAYOUT_OPS = new Set(["Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten"]);

/** Whether a weighted layer's constant weight has one output (the expectation is one number). */
function oneOutput(n: Node, w: Tensor | undefined): boolean {
  if (!w || w.dtype !== "float32") return false;
  if (n.op === "Conv") {
    return w.dims.length >= 3 && w.dims[0] === 1 && w.dims.slice(2).every((d) => d === 1);
  }
  if (n.op === "MatMul") return w.dims.length === 1 || (w.dims.length === 2 && w.dims[1] === 1);
  return false;
}

/**
 * The Conv/MatMul nodes with a constant single-output weight whose data input is a Softmax output,
 * directly or through layout ops: expectations over a distribution, not learned layers.
 */
export function softmaxExpectations(
  nodes: readonly Node[],
  initializers: ReadonlyMap<string, Tensor>,
): Set<Node> {
  const producer = new Map<string, Node>();
  for (const n of nodes) for (const t of n.outputs) if (t) producer.set(t, n);
  const found = new Set<Node>();
  for (const n of nodes) {
    if ((n.op !== "Conv" && n.op !== "MatMul") || (n.domain !== "" && n.domain !== "ai.onnx")) {
      continue;
    }
    if (!oneOutput(n, initializers.get(n.inputs[1] ?? ""))) continue;
    let p = producer.get(n.inputs[0] ?? "");
    for (let hops = 0; p && LAYOUT_OPS.has(p.op) && hops < 8; hops++) {
      p = producer.get(p.inputs[0] ?? "");
    }
    if (p?.op === "Softmax") found.add(n);
  }
  return found;
}
