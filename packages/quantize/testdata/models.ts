// Small builder models the tests share.
import { ModelBuilder } from "@clipq/onnx/builder";
import type { Graph } from "@clipq/onnx/graph";

/** A conv net touching most quantizers: Conv+Relu, Conv+LeakyRelu, Add, MaxPool, Conv+Clip,
 * Resize, Concat, GlobalAveragePool, Flatten, Gemm. Output "logits". */
export function smallNet(seed = 7): Graph {
  const b = new ModelBuilder({ seed });
  const x = b.input("x", [1, 3, 16, 16]);
  const c1 = b.relu(b.conv(x, { outChannels: 8, kernel: 3, name: "conv1" }));
  const c2 = b.leakyRelu(b.conv(c1, { outChannels: 8, kernel: 3, name: "conv2" }), 0.1);
  const s = b.add(c1, c2);
  const p = b.maxPool(s, { kernel: 2, stride: 2 });
  const c3 = b.clip(b.conv(p, { outChannels: 16, kernel: 3, name: "conv3" }), 0, 6);
  const u = b.resize(c3, 2);
  const cat = b.concat([u, s], 1);
  const c4 = b.conv(cat, { outChannels: 8, kernel: 1, name: "conv4" });
  const f = b.flatten(b.globalAveragePool(c4));
  b.output(b.gemm(f, { out: 10, name: "fc" }), "logits");
  return b.build();
}

/** A YOLO-like detector: strided conv backbone, two 1×1 conv heads, and a decode
 * (Reshape/Transpose/Sigmoid/Mul/Concat) to one "detections" output. */
export function yoloLike(seed = 3): Graph {
  const b = new ModelBuilder({ seed });
  const x = b.input("images", [1, 3, 32, 32]);
  let y = b.leakyRelu(b.conv(x, { outChannels: 8, kernel: 3, stride: 2 }), 0.1);
  y = b.leakyRelu(b.conv(y, { outChannels: 16, kernel: 3, stride: 2 }), 0.1);
  const h8 = b.conv(y, { outChannels: 21, kernel: 1, name: "head8" });
  const y2 = b.leakyRelu(b.conv(y, { outChannels: 16, kernel: 3, stride: 2 }), 0.1);
  const h4 = b.conv(y2, { outChannels: 21, kernel: 1, name: "head4" });
  const decode = (h: string, n: number): string => {
    const t = b.transpose(b.reshape(h, [1, 3, 7, n]), [0, 1, 3, 2]);
    return b.reshape(b.mul(b.sigmoid(t), 2), [1, 3 * n, 7]);
  };
  b.output(b.concat([decode(h8, 64), decode(h4, 16)], 1), "detections");
  return b.build();
}

/** Conv-heavy: three 3×3 convs of 256 channels with Relu (weights dominate the file). */
export function convHeavy(seed = 5): Graph {
  const b = new ModelBuilder({ seed });
  let y = b.input("x", [1, 256, 8, 8]);
  for (let i = 0; i < 3; i++) y = b.relu(b.conv(y, { outChannels: 256, kernel: 3 }));
  b.output(y, "y");
  return b.build();
}
