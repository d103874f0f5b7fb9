/**
 * Reads a darknet cfg into a checked layer plan: every layer's parameters resolved, its output
 * shape computed as darknet computes it, and the number of weights each layer reads from the
 * `.weights` file. The ONNX builder and the random-weights writer both work from this plan.
 *
 * @module
 */
import { UnsupportedOpError } from "@clipq/onnx/errors";
import { CfgReader, parseCfg } from "./darknet_cfg.ts";

/** Activations darknet layers may name. */
export const DARKNET_ACTIVATIONS = [
  "leaky",
  "linear",
  "relu",
  "mish",
  "logistic",
  "swish",
] as const;
/** One darknet activation. */
export type DarknetActivation = typeof DARKNET_ACTIVATIONS[number];

/** Section types the importer supports (besides `[net]`). */
export const DARKNET_SECTIONS = [
  "convolutional",
  "shortcut",
  "route",
  "upsample",
  "maxpool",
  "yolo",
  "avgpool",
  "dropout",
] as const;

/** Most parameters a network may have (4 GiB of float32; YOLOv3 has 6.2·10⁷). */
export const MAX_DARKNET_WEIGHTS = 2 ** 30;
/** Most elements one layer's output may have (larger would not fit a tensor). */
export const MAX_LAYER_ELEMENTS = 2 ** 31;

/** A planned layer; `index` is darknet's layer index (0 = first section after `[net]`). */
export type PlannedLayer =
  & {
    readonly index: number;
    readonly where: string;
    readonly shape: readonly [number, number, number];
  }
  & (
    | {
      readonly type: "convolutional";
      readonly input: number;
      readonly filters: number;
      readonly size: number;
      readonly stride: number;
      readonly padding: number;
      readonly groups: number;
      readonly batchNormalize: boolean;
      readonly activation: DarknetActivation;
      readonly inChannels: number;
    }
    | {
      readonly type: "shortcut";
      readonly inputs: readonly [number, number];
      readonly activation: DarknetActivation;
    }
    | {
      readonly type: "route";
      readonly inputs: readonly number[];
      readonly groups: number;
      readonly groupId: number;
    }
    | { readonly type: "upsample"; readonly input: number; readonly stride: number }
    | {
      readonly type: "maxpool";
      readonly input: number;
      readonly size: number;
      readonly stride: number;
      /** ONNX pads `[top, left, bottom, right]` reproducing darknet's asymmetric padding. */
      readonly pads: readonly [number, number, number, number];
    }
    | {
      readonly type: "yolo";
      readonly input: number;
      readonly mask: readonly number[];
      readonly anchors: readonly (readonly [number, number])[];
      readonly classes: number;
      /** `scale_x_y` (YOLOv4's grid sensitivity), 1 by default. */
      readonly scaleXY: number;
    }
    | { readonly type: "avgpool"; readonly input: number }
    | { readonly type: "dropout"; readonly input: number }
  );

/** A planned network. */
export interface DarknetPlan {
  /** Input `[channels, height, width]`. */
  readonly input: readonly [number, number, number];
  readonly layers: readonly PlannedLayer[];
  /** Floats the `.weights` file holds after its header. */
  readonly weightCount: number;
}

/** Options of {@linkcode planDarknet}. */
export interface PlanOptions {
  /** Overrides the cfg's `[net] height, width`. */
  inputSize?: readonly [number, number];
  /** File name used in error messages. */
  cfgName?: string;
}

/**
 * Floats a convolutional layer reads from a weights file: biases, BN scale/mean/var, weights.
 *
 * @param l The layer's filters, input channels, groups, kernel size and BN flag.
 * @returns The count.
 *
 * @example Usage
 * ```ts
 * import { convWeightCount } from "@clipq/convert/darknet-plan";
 * import assert from "node:assert/strict";
 * const l = { filters: 2, inChannels: 3, groups: 1, size: 3, batchNormalize: true };
 * assert.equal(convWeightCount(l), 2 * 4 + 2 * 3 * 9);
 * ```
 */
export function convWeightCount(
  l: { filters: number; inChannels: number; groups: number; size: number; batchNormalize: boolean },
): number {
  return l.filters * (1 + (l.batchNormalize ? 3 : 0)) +
    l.filters * (l.inChannels / l.groups) * l.size * l.size;
}

/**
 * Plans a darknet network from its cfg text.
 *
 * @param cfgText The `.cfg` file's text.
 * @param options Input size override and the file name for messages.
 * @returns The layer plan.
 * @throws {ModelError} Naming the cfg line of a bad value or an inconsistent shape.
 * @throws {UnsupportedOpError} For section types the importer does not convert.
 *
 * @example A conv and a maxpool
 * ```ts
 * import { planDarknet } from "@clipq/convert/darknet-plan";
 * import assert from "node:assert/strict";
 * const plan = planDarknet(`[net]\nwidth=8\nheight=8\nchannels=3
 * [convolutional]\nfilters=4\nsize=3\npad=1\nactivation=leaky
 * [maxpool]\nsize=2\nstride=2`);
 * assert.deepEqual(plan.layers.map((l) => l.shape), [[4, 8, 8], [4, 4, 4]]);
 * assert.equal(plan.weightCount, 4 + 4 * 3 * 9);
 * ```
 */
export function planDarknet(cfgText: string, options: PlanOptions = {}): DarknetPlan {
  const name = options.cfgName ?? "model.cfg";
  const sections = parseCfg(cfgText, name);
  const net = sections[0];
  if (!net || (net.type !== "net" && net.type !== "network")) {
    throw new UnsupportedOpError(net ? `[${net.type}]` : "(empty cfg)", {
      where: `${name}:${net?.line ?? 1}`,
      supported: ["[net] as the first section"],
    });
  }
  const n = new CfgReader(net, name);
  const channels = n.int("channels", 3, 1);
  let height: number, width: number;
  if (options.inputSize) {
    [height, width] = options.inputSize;
    if (!(Number.isInteger(height) && height > 0 && Number.isInteger(width) && width > 0)) {
      throw new RangeError(
        `Expected inputSize [height, width] of positive integers but found [${options.inputSize}]`,
      );
    }
  } else {
    height = n.int("height", undefined, 1);
    width = n.int("width", undefined, 1);
  }
  const layers: PlannedLayer[] = [];
  let shape: [number, number, number] = [channels, height, width];
  let weightCount = 0;

  sections.slice(1).forEach((section, index) => {
    const r = new CfgReader(section, name);
    const where = r.where();
    const prev = index - 1;
    // Layer −1 is the network input.
    const prevShape = (): [number, number, number] => shape;
    const ref = (key: string, v: number): number => {
      const abs = v < 0 ? index + v : v;
      if (abs < 0 || abs >= index) {
        r.fail(
          key,
          `expected ${key} to refer to an earlier layer (0..${
            index - 1
          }), found ${v} (layer ${abs})`,
        );
      }
      return abs;
    };
    const activation = (fallback: DarknetActivation): DarknetActivation => {
      const a = r.str("activation", fallback);
      if (!(DARKNET_ACTIVATIONS as readonly string[]).includes(a)) {
        r.fail(
          "activation",
          `expected activation one of ${DARKNET_ACTIVATIONS.join(", ")}, found "${a}"`,
        );
      }
      return a as DarknetActivation;
    };
    let layer: PlannedLayer;
    switch (section.type) {
      case "convolutional":
      case "conv": {
        const [c, h, w] = prevShape();
        const filters = r.int("filters", 1, 1);
        const size = r.int("size", 1, 1);
        const stride = r.int("stride", 1, 1);
        refuseUnsupported(r, {
          stride_x: String(stride),
          stride_y: String(stride),
          antialiasing: "0",
          dilation: 1,
          binary: 0,
          xnor: 0,
          flipped: 0,
        });
        const padding = r.int("pad", 0, 0) ? Math.floor(size / 2) : r.int("padding", 0, 0);
        const groups = r.int("groups", 1, 1);
        if (c % groups || filters % groups) {
          r.fail(
            "groups",
            `expected groups to divide ${c} input channels and ${filters} filters, found ${groups}`,
          );
        }
        const oh = Math.floor((h + 2 * padding - size) / stride) + 1;
        const ow = Math.floor((w + 2 * padding - size) / stride) + 1;
        if (oh < 1 || ow < 1) {
          r.fail(
            "size",
            `expected a ${size}×${size} kernel to fit the ${h}×${w} input, found an empty output`,
          );
        }
        const l = {
          type: "convolutional" as const,
          index,
          where,
          input: prev,
          filters,
          size,
          stride,
          padding,
          groups,
          batchNormalize: r.int("batch_normalize", 0, 0) !== 0,
          activation: activation("logistic"),
          inChannels: c,
          shape: [filters, oh, ow] as const,
        };
        weightCount += convWeightCount(l);
        if (weightCount > MAX_DARKNET_WEIGHTS) {
          r.fail(
            "filters",
            `expected at most ${MAX_DARKNET_WEIGHTS} parameters in the network, found ${weightCount} by this layer`,
          );
        }
        layer = l;
        break;
      }
      case "shortcut": {
        refuseUnsupported(r, { weights_type: "none", weights_normalization: "none" });
        const a = prevShape();
        const from = ref("from", r.int("from"));
        const b = layers[from]!.shape;
        if (a.join() !== b.join()) {
          r.fail(
            "from",
            `expected layer ${from} to have the shape of layer ${prev}, [${a.join(", ")}], found [${
              b.join(", ")
            }]`,
          );
        }
        for (const k of ["alpha", "beta"]) {
          if (r.float(k, 1) !== 1) {
            r.fail(
              k,
              `expected ${k}=1 (weighted shortcuts are not supported), found ${r.float(k, 1)}`,
            );
          }
        }
        layer = {
          type: "shortcut",
          index,
          where,
          inputs: [prev, from],
          activation: activation("linear"),
          shape: a,
        };
        break;
      }
      case "route": {
        const inputs = r.ints("layers").map((v) => ref("layers", v));
        const groups = r.int("groups", 1, 1);
        const groupId = r.int("group_id", 0, 0);
        if (groupId >= groups) {
          r.fail("group_id", `expected group_id < groups (${groups}), found ${groupId}`);
        }
        const [, h, w] = layers[inputs[0]!]!.shape;
        let c = 0;
        for (const i of inputs) {
          const s = layers[i]!.shape;
          if (s[1] !== h || s[2] !== w) {
            r.fail(
              "layers",
              `expected layers of one spatial size, found layer ${
                inputs[0]
              } ${h}×${w} and layer ${i} ${s[1]}×${s[2]}`,
            );
          }
          if (s[0] % groups) {
            r.fail(
              "groups",
              `expected groups to divide layer ${i}'s ${s[0]} channels, found ${groups}`,
            );
          }
          c += s[0] / groups;
        }
        layer = { type: "route", index, where, inputs, groups, groupId, shape: [c, h, w] };
        break;
      }
      case "upsample": {
        const [c, h, w] = prevShape();
        const stride = r.int("stride", 2, 1);
        if (r.float("scale", 1) !== 1) {
          r.fail(
            "scale",
            `expected scale=1 (scaled upsampling is not supported), found ${r.float("scale", 1)}`,
          );
        }
        layer = {
          type: "upsample",
          index,
          where,
          input: prev,
          stride,
          shape: [c, h * stride, w * stride],
        };
        break;
      }
      case "maxpool": {
        const [c, h, w] = prevShape();
        const stride = r.int("stride", 1, 1);
        refuseUnsupported(r, {
          stride_x: String(stride),
          stride_y: String(stride),
          maxpool_depth: "0",
          antialiasing: "0",
        });
        const size = r.int("size", stride, 1);
        const padding = r.int("padding", size - 1, 0);
        // darknet: out = (in + padding − size)/stride + 1, windows start at −padding/2.
        const oh = Math.floor((h + padding - size) / stride) + 1;
        const ow = Math.floor((w + padding - size) / stride) + 1;
        if (oh < 1 || ow < 1) {
          r.fail(
            "size",
            `expected the pool window to fit the ${h}×${w} input, found an empty output`,
          );
        }
        const begin = Math.floor(padding / 2);
        const endH = Math.max(0, (oh - 1) * stride + size - h - begin);
        const endW = Math.max(0, (ow - 1) * stride + size - w - begin);
        // onnxruntime refuses a pad as large as the window ("Pad should be smaller than kernel"),
        // which named no cfg line.
        if (Math.max(begin, endH, endW) >= size) {
          r.fail(
            "padding",
            `expected a padding whose sides stay below size ${size}, found ${padding}`,
          );
        }
        layer = {
          type: "maxpool",
          index,
          where,
          input: prev,
          size,
          stride,
          pads: [begin, begin, endH, endW],
          shape: [c, oh, ow],
        };
        break;
      }
      case "yolo": {
        if (index === 0) {
          r.fail(undefined, "expected a convolutional layer before [yolo], found the input");
        }
        const s = prevShape();
        const num = r.int("num", 1, 1);
        const anchorsFlat = r.ints("anchors", []);
        if (anchorsFlat.length !== 2 * num) {
          r.fail(
            "anchors",
            `expected ${2 * num} numbers (num=${num} anchor pairs), found ${anchorsFlat.length}`,
          );
        }
        const mask = r.ints("mask", [...Array(num).keys()]);
        for (const m of mask) {
          if (m < 0 || m >= num) {
            r.fail("mask", `expected mask entries in 0..${num - 1}, found ${m}`);
          }
        }
        const classes = r.int("classes", 20, 1);
        const want = mask.length * (classes + 5);
        if (s[0] !== want) {
          r.fail(
            undefined,
            `expected the layer before [yolo] to have ${mask.length}·(${classes}+5) = ${want} channels, found ${
              s[0]
            }`,
          );
        }
        const anchors = mask.map((m) => [anchorsFlat[2 * m]!, anchorsFlat[2 * m + 1]!] as const);
        // YOLOv4's grid sensitivity: the head decodes it (head.scaleXY); it had been dropped.
        const scaleXY = r.float("scale_x_y", 1);
        if (!(scaleXY >= 1 && scaleXY <= 4)) {
          r.fail("scale_x_y", `expected scale_x_y in [1, 4], found ${scaleXY}`);
        }
        // Scaled-YOLOv4's decoding (no exp, squared sizes) is another formula than the head's.
        if (r.int("new_coords", 0, 0) !== 0) {
          r.fail(
            "new_coords",
            "expected new_coords=0: scaled-YOLOv4's box decoding is not supported",
          );
        }
        layer = {
          type: "yolo",
          index,
          where,
          input: prev,
          mask,
          anchors,
          classes,
          scaleXY,
          shape: s,
        };
        break;
      }
      case "avgpool": {
        const [c] = prevShape();
        layer = { type: "avgpool", index, where, input: prev, shape: [c, 1, 1] };
        break;
      }
      case "dropout":
        layer = { type: "dropout", index, where, input: prev, shape: prevShape() };
        break;
      default:
        throw new UnsupportedOpError(`[${section.type}]`, {
          where,
          supported: DARKNET_SECTIONS.map((s) => `[${s}]`),
        });
    }
    const elements = layer.shape[0] * layer.shape[1] * layer.shape[2];
    if (elements > MAX_LAYER_ELEMENTS) {
      r.fail(
        undefined,
        `expected at most ${MAX_LAYER_ELEMENTS} elements per layer output, found ${
          layer.shape.join("×")
        }`,
      );
    }
    layers.push(layer);
    shape = [...layer.shape];
  });
  if (layers.length === 0) {
    throw new UnsupportedOpError("(no layers)", {
      where: `${name}:${net.line}`,
      supported: DARKNET_SECTIONS.map((s) => `[${s}]`),
    });
  }
  return { input: [channels, height, width], layers, weightCount };
}

/**
 * Keys darknet reads that change what a layer computes and that this importer does not implement,
 * each with the one value it computes the same with (a stride_x equal to stride, a depth of 0):
 * ignored, they gave a model of another shape or other values without a word (`stride_x=2,
 * stride_y=1` came out 16×16 where darknet gives 8×16). A number is read as an integer (a value
 * that is none is refused as such), a string as written.
 */
function refuseUnsupported(r: CfgReader, same: Readonly<Record<string, string | number>>): void {
  for (const [k, value] of Object.entries(same)) {
    if (!r.has(k)) continue;
    const found = typeof value === "number" ? r.int(k) : r.str(k, value);
    if (found !== value) {
      r.fail(k, `expected ${k}=${value} (other values are not supported), found ${found}`);
    }
  }
}
