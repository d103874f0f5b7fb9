/**
 * darknet cfg + weights → ONNX Graph (opset 13). Convolutions keep their BatchNormalization nodes
 * (epsilon 1e-5, as darknet's GPU/cuDNN path uses; `normalize` folds them); the graph outputs are
 * the raw convolutions in front of each `[yolo]` layer, named `yolo_0`, `yolo_1`, … in cfg order,
 * and the head metadata (strides, masked anchors, classes, and `scale_x_y` where it is not 1) is
 * written for @clipq/detect. Keys that would change what a layer computes and that this importer
 * does not implement (stride_x/stride_y other than stride, a weighted shortcut, scaled-YOLOv4's
 * new_coords, …) are refused at their cfg line.
 *
 * Layer mapping: convolutional → Conv (+ BatchNormalization) + activation (leaky 0.1 → LeakyRelu,
 * relu, logistic → Sigmoid, mish → x·tanh(softplus x), swish → x·sigmoid x); shortcut → Add;
 * route → Concat (with channel Slices for `groups`/`group_id`); upsample → Resize nearest
 * (asymmetric, floor: exact pixel replication); maxpool → MaxPool with darknet's asymmetric
 * padding (stride 1 size 2 in yolov3-tiny pads one pixel at the bottom/right only);
 * avgpool → GlobalAveragePool; dropout → nothing.
 *
 * @module
 */
import { basename } from "node:path";
import type { Graph, Node, ValueInfo } from "@clipq/onnx/graph";
import { emptyGraph } from "@clipq/onnx/graph";
import { ModelError } from "@clipq/onnx/errors";
import { type HeadMetadata, METADATA_KEYS } from "@clipq/onnx/metadata";
import { float32, int64, type Tensor } from "@clipq/onnx/tensor";
import { type DarknetActivation, planDarknet } from "./darknet_plan.ts";
import { randomDarknetWeights, readDarknetWeights } from "./darknet_weights.ts";

/** Options of {@linkcode fromDarknet}. */
export interface DarknetOptions {
  /** The `.weights` file; when absent, seeded random weights (see `randomDarknetWeights`). */
  weights?: Uint8Array;
  /** Input `[height, width]`, overriding the cfg's `[net]` (YOLO is fully convolutional). */
  inputSize?: readonly [number, number];
  /** Seed of the random weights used when `weights` is absent. */
  seed?: number;
  /** Name of the cfg file in error messages. */
  cfgName?: string;
  /** Name of the weights file in error messages. */
  weightsName?: string;
  /** Graph input name. */
  inputName?: string;
}

/** Default options. */
export const darknetDefaults: DarknetOptions = {
  seed: 0,
  cfgName: "model.cfg",
  weightsName: "model.weights",
  inputName: "images",
} satisfies DarknetOptions;

/** BatchNormalization epsilon used for darknet's BN layers. */
export const DARKNET_BN_EPSILON = 1e-5;

/**
 * Imports a darknet network.
 *
 * @param cfgText The `.cfg` file's text.
 * @param options Weights, input size override, seed, file names.
 * @returns The graph: input `[1, channels, height, width]` float32, outputs the raw YOLO heads
 *   (or the last layer when the cfg has no `[yolo]`), head and input metadata set.
 * @throws {ModelError} Naming the cfg line of a bad value, or the weights file when it holds
 *   fewer or more floats than the cfg needs.
 * @throws {UnsupportedOpError} For section types the importer does not convert.
 *
 * @example A one-conv network with random weights
 * ```ts
 * import { fromDarknet } from "@clipq/convert/darknet";
 * import assert from "node:assert/strict";
 * const g = fromDarknet("[net]\nwidth=8\nheight=8\nchannels=3\n[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\npad=1\nactivation=leaky");
 * assert.deepEqual(g.nodes.map((n) => n.op), ["Conv", "BatchNormalization", "LeakyRelu"]);
 * assert.deepEqual(g.outputs[0]?.shape, [1, 4, 8, 8]);
 * ```
 */
export function fromDarknet(cfgText: string, options: DarknetOptions = {}): Graph {
  const opts = { ...darknetDefaults, ...options };
  const cfgName = opts.cfgName ?? "model.cfg";
  const planOpts = { cfgName, ...(opts.inputSize ? { inputSize: opts.inputSize } : {}) };
  const plan = planDarknet(cfgText, planOpts);
  const bytes = opts.weights ??
    randomDarknetWeights(cfgText, { ...planOpts, seed: opts.seed ?? 0 });
  const weightsName = opts.weights ? opts.weightsName ?? "model.weights" : "(random weights)";
  const { floats } = readDarknetWeights(bytes, plan, weightsName);
  let at = 0;
  const take = (n: number): Float32Array => {
    const a = floats.subarray(at, at + n);
    at += n;
    return a;
  };

  const inputName = opts.inputName ?? "images";
  const [C, H, W] = plan.input;
  const nodes: Node[] = [];
  const initializers = new Map<string, Tensor>();
  const names: string[] = []; // output tensor of each layer
  const yolos = plan.layers.filter((l) => l.type === "yolo");
  // The tensor in front of each [yolo] layer is a graph output: give it the head's name directly.
  const finalName = new Map<number, string>();
  yolos.forEach((l, k) => finalName.set(l.index - 1, `yolo_${k}`));
  const tensorOf = (i: number) => i < 0 ? inputName : names[i]!;
  const add = (n: Omit<Node, "domain" | "attributes"> & Partial<Node>) =>
    nodes.push({ domain: "", attributes: {}, ...n });
  const activate = (x: string, act: DarknetActivation, base: string, out: string): void => {
    switch (act) {
      case "linear": // callers name the linear output `out` directly; kept for completeness
        add({ name: `${base}_identity`, op: "Identity", inputs: [x], outputs: [out] });
        return;
      case "leaky":
        add({
          name: `${base}_leaky`,
          op: "LeakyRelu",
          inputs: [x],
          outputs: [out],
          attributes: { alpha: { type: "float", value: 0.1 } },
        });
        return;
      case "relu":
        add({ name: `${base}_relu`, op: "Relu", inputs: [x], outputs: [out] });
        return;
      case "logistic":
        add({ name: `${base}_logistic`, op: "Sigmoid", inputs: [x], outputs: [out] });
        return;
      case "swish":
        add({ name: `${base}_sigmoid`, op: "Sigmoid", inputs: [x], outputs: [`${base}_sig`] });
        add({ name: `${base}_swish`, op: "Mul", inputs: [x, `${base}_sig`], outputs: [out] });
        return;
      case "mish":
        // Mish is opset 18; opset 13 spells it out.
        add({ name: `${base}_softplus`, op: "Softplus", inputs: [x], outputs: [`${base}_sp`] });
        add({ name: `${base}_tanh`, op: "Tanh", inputs: [`${base}_sp`], outputs: [`${base}_th`] });
        add({ name: `${base}_mish`, op: "Mul", inputs: [x, `${base}_th`], outputs: [out] });
        return;
    }
  };

  for (const l of plan.layers) {
    const base = `layer${l.index}`;
    const out = finalName.get(l.index) ?? `${base}_${l.type}`;
    switch (l.type) {
      case "convolutional": {
        const f = l.filters;
        const bias = take(f);
        const bn = l.batchNormalize ? { scale: take(f), mean: take(f), var: take(f) } : undefined;
        const weight = take(f * (l.inChannels / l.groups) * l.size * l.size);
        const wName = `${base}.weight`;
        initializers.set(wName, float32([f, l.inChannels / l.groups, l.size, l.size], weight));
        const convOut = bn || l.activation !== "linear" ? `${base}_conv` : out;
        const inputs = [tensorOf(l.input), wName];
        if (!bn) {
          initializers.set(`${base}.bias`, float32([f], bias));
          inputs.push(`${base}.bias`);
        }
        const p = l.padding;
        add({
          name: `${base}_conv`,
          op: "Conv",
          inputs,
          outputs: [convOut],
          attributes: {
            kernel_shape: { type: "ints", value: [l.size, l.size] },
            strides: { type: "ints", value: [l.stride, l.stride] },
            pads: { type: "ints", value: [p, p, p, p] },
            group: { type: "int", value: l.groups },
            dilations: { type: "ints", value: [1, 1] },
          },
        });
        let x = convOut;
        if (bn) {
          for (
            const [k, v] of [["scale", bn.scale], ["bias", bias], ["mean", bn.mean], [
              "var",
              bn.var,
            ]] as const
          ) {
            initializers.set(`${base}.bn.${k}`, float32([f], v));
          }
          x = l.activation === "linear" ? out : `${base}_bn`;
          add({
            name: `${base}_bn`,
            op: "BatchNormalization",
            inputs: [convOut, ...["scale", "bias", "mean", "var"].map((k) => `${base}.bn.${k}`)],
            outputs: [x],
            attributes: { epsilon: { type: "float", value: DARKNET_BN_EPSILON } },
          });
        }
        if (l.activation !== "linear") activate(x, l.activation, base, out);
        names.push(out);
        break;
      }
      case "shortcut": {
        const sum = l.activation === "linear" ? out : `${base}_sum`;
        add({ name: `${base}_add`, op: "Add", inputs: l.inputs.map(tensorOf), outputs: [sum] });
        if (l.activation !== "linear") activate(sum, l.activation, base, out);
        names.push(out);
        break;
      }
      case "route": {
        let parts = l.inputs.map(tensorOf);
        if (l.groups > 1) {
          parts = l.inputs.map((i, k) => {
            const c = (i < 0 ? C : plan.layers[i]!.shape[0]) / l.groups;
            const s = `${base}_part${k}`;
            initializers.set(`${s}.starts`, int64([1], [c * l.groupId]));
            initializers.set(`${s}.ends`, int64([1], [c * (l.groupId + 1)]));
            initializers.set(`${s}.axes`, int64([1], [1]));
            add({
              name: `${s}_slice`,
              op: "Slice",
              inputs: [tensorOf(i), `${s}.starts`, `${s}.ends`, `${s}.axes`],
              outputs: [s],
            });
            return s;
          });
        }
        if (parts.length === 1 && !finalName.has(l.index)) {
          names.push(parts[0]!); // a route to one (part of a) layer is that tensor
        } else if (parts.length === 1) {
          add({ name: `${base}_route`, op: "Identity", inputs: parts, outputs: [out] });
          names.push(out);
        } else {
          add({
            name: `${base}_route`,
            op: "Concat",
            inputs: parts,
            outputs: [out],
            attributes: { axis: { type: "int", value: 1 } },
          });
          names.push(out);
        }
        break;
      }
      case "upsample": {
        const scales = `${base}.scales`;
        initializers.set(scales, float32([4], [1, 1, l.stride, l.stride]));
        add({
          name: `${base}_upsample`,
          op: "Resize",
          inputs: [tensorOf(l.input), "", scales],
          outputs: [out],
          attributes: {
            mode: { type: "string", value: "nearest" },
            coordinate_transformation_mode: { type: "string", value: "asymmetric" },
            nearest_mode: { type: "string", value: "floor" },
          },
        });
        names.push(out);
        break;
      }
      case "maxpool":
        add({
          name: `${base}_maxpool`,
          op: "MaxPool",
          inputs: [tensorOf(l.input)],
          outputs: [out],
          attributes: {
            kernel_shape: { type: "ints", value: [l.size, l.size] },
            strides: { type: "ints", value: [l.stride, l.stride] },
            pads: { type: "ints", value: l.pads },
          },
        });
        names.push(out);
        break;
      case "avgpool":
        add({
          name: `${base}_avgpool`,
          op: "GlobalAveragePool",
          inputs: [tensorOf(l.input)],
          outputs: [out],
        });
        names.push(out);
        break;
      case "dropout":
        // The identity at inference; in front of a [yolo] layer it must still produce that
        // layer's output name (the graph had declared yolo_0 with nothing producing it).
        if (finalName.has(l.index)) {
          add({
            name: `${base}_dropout`,
            op: "Identity",
            inputs: [tensorOf(l.input)],
            outputs: [out],
          });
          names.push(out);
        } else names.push(tensorOf(l.input));
        break;
      case "yolo":
        // A [yolo] layer's raw input is the graph output.
        names.push(tensorOf(l.input));
        break;
    }
  }

  const info = (name: string, s: readonly number[]): ValueInfo => ({
    name,
    dtype: "float32",
    shape: [1, ...s],
  });
  const last = plan.layers[plan.layers.length - 1]!;
  const outputs = yolos.length
    ? yolos.map((l, k) => info(`yolo_${k}`, plan.layers[l.index - 1]!.shape))
    : [info(names[names.length - 1]!, last.shape)];
  const metadata = new Map<string, string>();
  if (yolos.length) {
    const head: HeadMetadata = {
      type: "yolov3",
      outputs: outputs.map((o) => o.name),
      strides: yolos.map((l) => H / l.shape[1]),
      anchors: yolos.map((l) => (l.type === "yolo" ? l.anchors.map((a) => [...a]) : [])),
      classes: yolos[0]!.type === "yolo" ? yolos[0]!.classes : 0,
    };
    // YOLOv4's grid sensitivity, one value or one per output (its cfg gives each [yolo] its
    // own); it had been dropped, and the head decoded with 1.
    const scales = yolos.map((l) => (l.type === "yolo" ? l.scaleXY : 1));
    if (scales.some((v) => v !== 1)) {
      head.scaleXY = scales.every((v) => v === scales[0]) ? scales[0] : scales;
    }
    metadata.set(METADATA_KEYS.head, JSON.stringify(head));
  }
  // darknet's own detector letterboxes RGB in [0, 1], padding with 0.5 gray.
  metadata.set(
    METADATA_KEYS.input,
    JSON.stringify({
      name: inputName,
      size: [H, W],
      resize: "letterbox",
      layout: "NCHW",
      color: "RGB",
      scale: 1 / 255,
      mean: [0, 0, 0],
      std: [1, 1, 1],
      padValue: 127.5,
    }),
  );
  return emptyGraph({
    // The file's name, not its path: the path (kept for errors) made the int8 file depend on the
    // folder the cfg was read from.
    name: basename(cfgName).replace(/\.cfg$/, ""),
    nodes,
    initializers,
    inputs: [info(inputName, [C, H, W])],
    outputs,
    opsetImports: [{ domain: "", version: 13 }],
    irVersion: 7,
    metadata,
    producerName: "clipq.convert.darknet",
  });
}

/** Options of {@linkcode loadDarknet}. */
export interface LoadDarknetOptions
  extends Omit<DarknetOptions, "weights" | "cfgName" | "weightsName"> {
  /** Path of the `.weights` file; seeded random weights when absent. */
  weights?: string;
}

/**
 * Reads a darknet cfg (and weights) from disk and imports it; errors name the files.
 *
 * @param cfgPath Path of the `.cfg` file.
 * @param options Weights path, input size override, seed.
 * @returns The graph (see {@linkcode fromDarknet}).
 * @throws {ModelError} When a file cannot be read, or as {@linkcode fromDarknet} does.
 *
 * @example Usage
 * ```ts
 * import { loadDarknet } from "@clipq/convert/darknet";
 * import assert from "node:assert/strict";
 * const cfg = Deno.makeTempFileSync({ suffix: ".cfg" });
 * Deno.writeTextFileSync(cfg, "[net]\nwidth=4\nheight=4\nchannels=1\n[convolutional]\nfilters=2\nsize=1\nactivation=relu");
 * assert.equal((await loadDarknet(cfg)).nodes.length, 2);
 * await assert.rejects(loadDarknet(cfg, { weights: "/nonexistent.weights" }), /\/nonexistent\.weights/);
 * Deno.removeSync(cfg);
 * ```
 */
export async function loadDarknet(
  cfgPath: string,
  options: LoadDarknetOptions = {},
): Promise<Graph> {
  const read = async (path: string, what: string): Promise<Uint8Array> => {
    try {
      return await Deno.readFile(path);
    } catch (e) {
      throw new ModelError(
        `${path}: expected a readable darknet ${what} file, found: ${(e as Error).message}`,
        {
          cause: e,
        },
      );
    }
  };
  const cfgBytes = await read(cfgPath, ".cfg");
  // A binary file (a photo, the .weights) put its bytes, NULs and all, into the parse error.
  if (cfgBytes.includes(0)) {
    const head = [...cfgBytes.subarray(0, 4)].map((b) => b.toString(16).padStart(2, "0"));
    throw new ModelError(
      `${cfgPath}: expected a darknet .cfg text file; found binary data starting ${head.join(" ")}`,
    );
  }
  const cfgText = new TextDecoder().decode(cfgBytes);
  const { weights: weightsPath, ...rest } = options;
  return fromDarknet(cfgText, {
    ...rest,
    cfgName: cfgPath,
    ...(weightsPath
      ? { weights: await read(weightsPath, ".weights"), weightsName: weightsPath }
      : {}),
  });
}
