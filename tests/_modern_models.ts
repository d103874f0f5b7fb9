// Small models in the form today's exporters write at opsets 17–21 (torch.onnx.export: 17, the
// dynamo exporter: 18; tf2onnx/Ultralytics: 17–19): squeeze-excite ReduceMean with axes as an
// input from 18, Split with num_outputs from 18, Pad with an axes input from 18, Resize with
// scales and with sizes, LayerNormalization (17) before an FC head. Not a test file itself.
import { float32, type Graph, int64, ModelBuilder } from "@clipq/onnx";

/** Opsets of the default domain today's exporters write and onnxruntime 1.30 runs. */
export const MODERN_OPSETS = [17, 18, 19, 20, 21] as const;

/**
 * A conv net with squeeze-excite, Pad, Split, Resize and a LayerNorm + FC head at `opset`; its
 * trunk activations are Relu, or Clip(0, 6) (ReLU6, as MobileNet-style exports) for `relu6`.
 */
export function modernNet(opset: number, options: { seed?: number; relu6?: boolean } = {}): Graph {
  const b = new ModelBuilder({ opset, seed: options.seed ?? 5, name: `modern${opset}` });
  const act = (t: string) => options.relu6 ? b.clip(t, 0, 6) : b.relu(t);
  const x = b.input("images", [1, 3, 32, 32]);
  const a = act(b.conv(x, { outChannels: 8, kernel: 3 }));
  // Squeeze-excite: the mean over H, W (axes an input from 18, an attribute before).
  const axes = [2, 3];
  const keep = { keepdims: { type: "int", value: 1 } } as const;
  const pooled = opset >= 18
    ? b.op("ReduceMean", [a, b.initializer(int64([2], axes))], {
      attributes: keep,
      shape: [1, 8, 1, 1],
    })
    : b.op("ReduceMean", [a], {
      attributes: { ...keep, axes: { type: "ints", value: axes } },
      shape: [1, 8, 1, 1],
    });
  const gate = b.sigmoid(
    b.conv(act(b.conv(pooled, { outChannels: 4, kernel: 1 })), { outChannels: 8, kernel: 1 }),
  );
  const se = b.mul(a, gate);
  // Pad H and W by one (axes input from 18; all axes before).
  const padded = opset >= 18
    ? b.op("Pad", [
      se,
      b.initializer(int64([4], [1, 1, 1, 1])),
      "",
      b.initializer(int64([2], axes)),
    ], {
      shape: [1, 8, 34, 34],
    })
    : b.op("Pad", [se, b.initializer(int64([8], [0, 0, 1, 1, 0, 0, 1, 1]))], {
      shape: [1, 8, 34, 34],
    });
  const c = act(b.conv(padded, { outChannels: 16, kernel: 3, pad: 0 }));
  // Two equal halves of the channels (num_outputs from 18; the split sizes before).
  const halves = ["half0", "half1"];
  if (opset >= 18) {
    b.op("Split", [c], {
      attributes: { axis: { type: "int", value: 1 }, num_outputs: { type: "int", value: 2 } },
      outputs: halves,
      shape: [1, 8, 32, 32],
    });
  } else {
    b.op("Split", [c, b.initializer(int64([2], [8, 8]))], {
      attributes: { axis: { type: "int", value: 1 } },
      outputs: halves,
      shape: [1, 8, 32, 32],
    });
  }
  // The builder records the first output's shape only.
  b.op("Identity", [halves[1]!], { outputs: ["half1_"], shape: [1, 8, 32, 32] });
  const p = b.maxPool(act(b.conv(halves[0]!, { outChannels: 8, kernel: 3 })), {
    kernel: 2,
    stride: 2,
  });
  // Linear upsampling by scales over all four axes, as torch exports F.interpolate.
  const up = b.op("Resize", [p, "", b.initializer(float32([4], [1, 1, 2, 2]))], {
    attributes: {
      mode: { type: "string", value: "linear" },
      coordinate_transformation_mode: { type: "string", value: "half_pixel" },
    },
    shape: [1, 8, 32, 32],
  });
  const merged = b.concat([up, "half1_"], 1);
  const m = act(b.conv(merged, { outChannels: 8, kernel: 3, stride: 2 }));
  // Nearest upsampling by sizes (16 → 32).
  const near = b.op("Resize", [m, "", "", b.initializer(int64([4], [1, 8, 32, 32]))], {
    attributes: {
      mode: { type: "string", value: "nearest" },
      coordinate_transformation_mode: { type: "string", value: "asymmetric" },
      nearest_mode: { type: "string", value: "floor" },
    },
    shape: [1, 8, 32, 32],
  });
  b.output(b.conv(b.add(near, "half1_"), { outChannels: 6, kernel: 1 }), "out");
  // Classifier: pool → LayerNorm → Gemm → Relu → MatMul.
  const f = b.flatten(b.globalAveragePool(m));
  const ln = b.op("LayerNormalization", [
    f,
    b.initializer(float32([8], b.random.uniforms(8, 0.5, 1.5))),
    b.initializer(float32([8], b.random.uniforms(8, -0.2, 0.2))),
  ], { attributes: { axis: { type: "int", value: -1 } }, shape: [1, 8] });
  const h = b.relu(b.gemm(ln, { out: 64 }));
  b.output(b.matmul(h, { out: 10 }), "logits");
  return b.build();
}
