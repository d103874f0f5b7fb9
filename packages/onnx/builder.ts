/**
 * Builds ONNX graphs in code with seeded weights, for tests and benchmarks: each layer method takes
 * the name of its input tensor and returns the name of its output, tracking static shapes so that
 * weights get the right dims.
 *
 * @module
 */
import { ConfigError, ModelError } from "./errors.ts";
import type { Attribute, Dim, Graph, Node, ValueInfo } from "./graph.ts";
import { type DType, float32, int64, sizeOf, type Tensor } from "./tensor.ts";
import { mulberry32 } from "./random.ts";
import { irVersionFor } from "./upgrade.ts";

/** A seeded pseudo-random source (mulberry32 + Box–Muller): the same seed gives the same numbers. */
export interface Random {
  /** Uniform in [0, 1). */
  next(): number;
  /** Uniform in [low, high). */
  uniform(low: number, high: number): number;
  /** Normal with the given mean and standard deviation. */
  normal(mean?: number, std?: number): number;
  /** `n` normal samples as float32. */
  normals(n: number, std?: number, mean?: number): Float32Array;
  /** `n` uniform samples in [low, high) as float32. */
  uniforms(n: number, low: number, high: number): Float32Array;
}

/**
 * A seeded random source: mulberry32 for uniforms, Box–Muller for normals.
 *
 * @param seed Any integer.
 * @returns The source.
 *
 * @example Same seed, same numbers
 * ```ts
 * import { seededRandom } from "@clipq/onnx/builder";
 * import assert from "node:assert/strict";
 * assert.deepEqual(seededRandom(7).normals(3), seededRandom(7).normals(3));
 * assert.notDeepEqual(seededRandom(7).normals(3), seededRandom(8).normals(3));
 * ```
 */
export function seededRandom(seed: number): Random {
  const next = mulberry32((seed | 0) ^ 0x9e3779b9);
  let spare: number | undefined;
  const gauss = (): number => {
    if (spare !== undefined) {
      const s = spare;
      spare = undefined;
      return s;
    }
    // 1 - next() keeps the logarithm's argument in (0, 1].
    const r = Math.sqrt(-2 * Math.log(1 - next()));
    const phi = 2 * Math.PI * next();
    spare = r * Math.sin(phi);
    return r * Math.cos(phi);
  };
  return {
    next,
    uniform: (low, high) => low + (high - low) * next(),
    normal: (mean = 0, std = 1) => mean + std * gauss(),
    normals(n, std = 1, mean = 0) {
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = mean + std * gauss();
      return out;
    },
    uniforms(n, low, high) {
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = low + (high - low) * next();
      return out;
    },
  };
}

/** Options of {@linkcode ModelBuilder}. */
export interface BuilderOptions {
  /** ONNX opset of the model; ops are written in the form this opset defines. */
  opset?: number;
  /** Seed of the weights. */
  seed?: number;
  /** Weight init: "he" (std √(2/fan-in), realistic magnitudes) or a fixed standard deviation. */
  weightScale?: "he" | number;
  /** Graph name. */
  name?: string;
  /** IR version written in the model (default: the one the opset came with, 7 below 15). */
  irVersion?: number;
}

/** Defaults of {@linkcode BuilderOptions}. */
export const builderDefaults = {
  opset: 13,
  seed: 0,
  weightScale: "he",
  name: "built",
  irVersion: 7,
} satisfies Required<BuilderOptions>;

/** Options of {@linkcode ModelBuilder.conv} and {@linkcode ModelBuilder.convTranspose}. */
export interface ConvOptions {
  /** Output channels. */
  outChannels: number;
  /** Kernel size, square or [h, w]. */
  kernel: number | readonly [number, number];
  /** Stride (default 1). */
  stride?: number;
  /** Symmetric padding; default keeps "same" size at stride 1: dilation·(kernel−1)/2. */
  pad?: number;
  /** Groups (default 1); depthwise when it equals the input channels. */
  group?: number;
  /** Dilation (default 1). */
  dilation?: number;
  /** Add a bias input (default true). */
  bias?: boolean;
  /** ConvTranspose only: extra size on the bottom/right. */
  outputPadding?: number;
  /** Node name (also the output tensor name). */
  name?: string;
}

/** Options of pooling layers. */
export interface PoolOptions {
  /** Square kernel size. */
  kernel: number;
  /** Stride (default the kernel size). */
  stride?: number;
  /** Symmetric padding (default 0). */
  pad?: number;
  /** Node name. */
  name?: string;
}

/** A constant operand: a number (scalar), numbers, or a tensor. */
export type Constant = number | readonly number[] | Float32Array | Tensor;

/** Options of {@linkcode ModelBuilder.op}. */
export interface OpOptions {
  /** Node attributes. */
  attributes?: Record<string, Attribute>;
  /** Output tensor names; default one output named after the node. */
  outputs?: readonly string[];
  /** Shape of the (first) output, when known. */
  shape?: readonly Dim[] | undefined;
  /** Element type of the (first) output (default float32). */
  dtype?: DType;
  /** Op domain (default "", ONNX). */
  domain?: string;
  /** Node name (also the output name unless `outputs` is given). */
  name?: string;
}

interface Info {
  dtype: DType;
  shape: Dim[] | undefined;
}

function pair(k: number | readonly [number, number]): [number, number] {
  return typeof k === "number" ? [k, k] : [k[0], k[1]];
}

function isTensor(c: Constant): c is Tensor {
  return typeof c === "object" && !(c instanceof Float32Array) && !Array.isArray(c) &&
    "dtype" in c;
}

function broadcast(a: Dim[] | undefined, b: Dim[] | undefined, where: string): Dim[] | undefined {
  if (!a || !b) return undefined;
  const n = Math.max(a.length, b.length);
  const out: Dim[] = [];
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1;
    const y = b[b.length - n + i] ?? 1;
    if (x === 1) out.push(y);
    else if (y === 1 || x === y) out.push(x);
    else if (typeof x === "number" && typeof y === "number") {
      throw new ModelError(`${where}: cannot broadcast [${a}] with [${b}]`);
    } else out.push(typeof x === "number" ? x : y);
  }
  return out;
}

/**
 * Builds a model layer by layer with seeded weights (He-initialized by default, BatchNormalization
 * with non-trivial running statistics). Every method returns the output tensor name.
 *
 * @example A Conv + BN + Relu model
 * ```ts
 * import { ModelBuilder } from "@clipq/onnx/builder";
 * import assert from "node:assert/strict";
 * const b = new ModelBuilder({ seed: 1 });
 * const x = b.input("x", [1, 3, 8, 8]);
 * const y = b.relu(b.batchNorm(b.conv(x, { outChannels: 4, kernel: 3 })));
 * b.output(y, "y");
 * const g = b.build();
 * assert.deepEqual(g.nodes.map((n) => n.op), ["Conv", "BatchNormalization", "Relu"]);
 * assert.deepEqual(g.outputs[0]?.shape, [1, 4, 8, 8]);
 * ```
 */
export class ModelBuilder {
  /** The opset ops are written for. */
  readonly opset: number;
  /** The seeded random source of the weights (use it for seeded inputs too). */
  readonly random: Random;
  readonly #options: Required<BuilderOptions>;
  readonly #nodes: Node[] = [];
  readonly #initializers = new Map<string, Tensor>();
  readonly #inputs: ValueInfo[] = [];
  readonly #outputs: string[] = [];
  readonly #info = new Map<string, Info>();
  readonly #counts = new Map<string, number>();
  readonly #names = new Set<string>();
  readonly #reserved = new Set<string>();

  /**
   * Creates a builder.
   *
   * @param options Opset, seed, weight scale.
   */
  constructor(options: BuilderOptions = {}) {
    const o = { ...builderDefaults, ...options } as Required<BuilderOptions>;
    // An opset-21 model declaring IR 7 is not a model onnx ever wrote.
    if (options.irVersion === undefined) o.irVersion = irVersionFor(o.opset);
    if (!Number.isInteger(o.opset) || o.opset < 7 || o.opset > 21) {
      throw new ConfigError("opset", `expected an integer in 7..21 but found ${o.opset}`);
    }
    if (o.weightScale !== "he" && !(typeof o.weightScale === "number" && o.weightScale > 0)) {
      throw new ConfigError("weightScale", `expected "he" or a positive number`);
    }
    this.#options = o;
    this.opset = o.opset;
    this.random = seededRandom(o.seed);
  }

  #fresh(base: string): string {
    let i = this.#counts.get(base) ?? 0;
    let name: string;
    do name = `${base}_${i++}`; while (this.#names.has(name));
    this.#counts.set(base, i);
    this.#names.add(name);
    return name;
  }

  #claim(name: string): string {
    if (this.#names.has(name)) throw new ModelError(`name "${name}" is already used in the model`);
    this.#names.add(name);
    return name;
  }

  /** Claims a layer's node name before its weights (named after it) are added. */
  #reserve(name: string | undefined, base: string): string {
    const n = name ? this.#claim(name) : this.#fresh(base);
    this.#reserved.add(n);
    return n;
  }

  #shape(x: string): Dim[] | undefined {
    const info = this.#info.get(x);
    if (!info) throw new ModelError(`tensor "${x}" is not defined in the builder`);
    return info.shape;
  }

  #channels(x: string, axis: number, where: string): number {
    const s = this.#shape(x);
    const c = s?.[axis];
    if (typeof c !== "number") {
      throw new ModelError(
        `${where}: expected a static dimension ${axis} of "${x}" but found shape ${
          s ? `[${s}]` : "unknown"
        }`,
      );
    }
    return c;
  }

  #std(fanIn: number): number {
    const w = this.#options.weightScale;
    return w === "he" ? Math.sqrt(2 / fanIn) : w;
  }

  /** `[x, weight, bias?]` of a weighted layer: seeded weights scaled by fan-in, a small seeded bias. */
  #weightedInputs(
    x: string,
    name: string,
    weight: { dims: number[]; fanIn: number },
    biasSize: number | undefined,
  ): string[] {
    const count = weight.dims.reduce((a, b) => a * b, 1);
    const w = this.random.normals(count, this.#std(weight.fanIn));
    const inputs = [x, this.initializer(float32(weight.dims, w), `${name}.weight`)];
    if (biasSize !== undefined) {
      const b = this.random.normals(biasSize, 0.05);
      inputs.push(this.initializer(float32([biasSize], b), `${name}.bias`));
    }
    return inputs;
  }

  /**
   * Adds an initializer.
   *
   * @param value The tensor (or float32 values, shaped [n] / a scalar for a number).
   * @param name Name; fresh when omitted.
   * @returns The initializer name.
   */
  initializer(value: Constant, name?: string): string {
    const n = name ? this.#claim(name) : this.#fresh("const");
    let t: Tensor;
    if (isTensor(value)) t = value;
    else if (typeof value === "number") t = float32([], [value]);
    else t = float32([value.length], value as readonly number[]);
    this.#initializers.set(n, t);
    this.#info.set(n, { dtype: t.dtype, shape: [...t.dims] });
    return n;
  }

  /**
   * Declares a graph input.
   *
   * @param name Input name.
   * @param dims Shape (numbers, or strings for symbolic dims).
   * @param dtype Element type (default float32).
   * @returns The input name.
   */
  input(name: string, dims: readonly Dim[], dtype: DType = "float32"): string {
    this.#claim(name);
    this.#inputs.push({ name, dtype, shape: [...dims] });
    this.#info.set(name, { dtype, shape: [...dims] });
    return name;
  }

  /**
   * Adds any node. Shapes are not inferred: pass `shape` when later layers need it.
   *
   * @param op Op type.
   * @param inputs Input tensor names ("" for an omitted optional input).
   * @param options Attributes, outputs, output shape and dtype, domain, name.
   * @returns The first output name.
   */
  op(op: string, inputs: readonly string[], options: OpOptions = {}): string {
    const name = options.name && this.#reserved.delete(options.name)
      ? options.name
      : options.name
      ? this.#claim(options.name)
      : this.#fresh(op.toLowerCase());
    const outputs = options.outputs ? [...options.outputs] : [name];
    for (const o of options.outputs ?? []) if (o !== name && o) this.#claim(o);
    for (const i of inputs) if (i) this.#shape(i);
    const node: Node = {
      name,
      op,
      domain: options.domain ?? "",
      inputs: [...inputs],
      outputs,
      attributes: options.attributes ?? {},
    };
    this.#nodes.push(node);
    const first = inputs[0] ? this.#info.get(inputs[0]) : undefined;
    outputs.forEach((o, k) => {
      if (!o) return;
      this.#info.set(o, {
        dtype: k === 0 ? options.dtype ?? first?.dtype ?? "float32" : "float32",
        shape: k === 0 && options.shape ? [...options.shape] : undefined,
      });
    });
    return outputs[0]!;
  }

  /**
   * Conv with seeded weights `[out, in/group, kh, kw]` and bias.
   *
   * @param x Input [N, C, H, W].
   * @param options Channels, kernel, stride, pad, group, dilation, bias.
   * @returns Output name.
   */
  conv(x: string, options: ConvOptions): string {
    const cin = this.#channels(x, 1, "conv");
    const group = options.group ?? 1;
    const [kh, kw] = pair(options.kernel);
    const dilation = options.dilation ?? 1;
    const stride = options.stride ?? 1;
    const pad = options.pad ?? Math.floor(dilation * (kh - 1) / 2);
    const cout = options.outChannels;
    if (cin % group || cout % group) {
      throw new ModelError(
        `conv on "${x}": expected channels ${cin} → ${cout} divisible by group ${group}`,
      );
    }
    const name = this.#reserve(options.name, "conv");
    const inputs = this.#weightedInputs(
      x,
      name,
      { dims: [cout, cin / group, kh, kw], fanIn: (cin / group) * kh * kw },
      options.bias ?? true ? cout : undefined,
    );
    const s = this.#shape(x)!;
    const out = (d: Dim, k: number): Dim =>
      typeof d === "number"
        ? Math.floor((d + 2 * pad - dilation * (k - 1) - 1) / stride) + 1
        : null;
    return this.op("Conv", inputs, {
      name,
      attributes: {
        kernel_shape: { type: "ints", value: [kh, kw] },
        strides: { type: "ints", value: [stride, stride] },
        pads: { type: "ints", value: [pad, pad, pad, pad] },
        dilations: { type: "ints", value: [dilation, dilation] },
        group: { type: "int", value: group },
      },
      shape: [s[0] ?? null, cout, out(s[2] ?? null, kh), out(s[3] ?? null, kw)],
    });
  }

  /**
   * ConvTranspose with seeded weights `[in, out/group, kh, kw]` and bias.
   *
   * @param x Input [N, C, H, W].
   * @param options Channels, kernel, stride, pad, group, dilation, output padding, bias.
   * @returns Output name.
   */
  convTranspose(x: string, options: ConvOptions): string {
    const cin = this.#channels(x, 1, "convTranspose");
    const group = options.group ?? 1;
    const [kh, kw] = pair(options.kernel);
    const dilation = options.dilation ?? 1;
    const stride = options.stride ?? 1;
    const pad = options.pad ?? 0;
    const outPad = options.outputPadding ?? 0;
    const cout = options.outChannels;
    if (cin % group || cout % group) {
      throw new ModelError(
        `convTranspose on "${x}": expected channels ${cin} → ${cout} divisible by group ${group}`,
      );
    }
    const name = this.#reserve(options.name, "convtranspose");
    const inputs = this.#weightedInputs(
      x,
      name,
      { dims: [cin, cout / group, kh, kw], fanIn: (cin / group) * kh * kw },
      options.bias ?? true ? cout : undefined,
    );
    const s = this.#shape(x)!;
    const out = (d: Dim, k: number): Dim =>
      typeof d === "number" ? (d - 1) * stride - 2 * pad + dilation * (k - 1) + 1 + outPad : null;
    const attributes: Record<string, Attribute> = {
      kernel_shape: { type: "ints", value: [kh, kw] },
      strides: { type: "ints", value: [stride, stride] },
      pads: { type: "ints", value: [pad, pad, pad, pad] },
      dilations: { type: "ints", value: [dilation, dilation] },
      group: { type: "int", value: group },
    };
    if (outPad) attributes.output_padding = { type: "ints", value: [outPad, outPad] };
    return this.op("ConvTranspose", inputs, {
      name,
      attributes,
      shape: [s[0] ?? null, cout, out(s[2] ?? null, kh), out(s[3] ?? null, kw)],
    });
  }

  /**
   * BatchNormalization over axis 1 with seeded scale, bias, running mean and variance.
   *
   * @param x Input [N, C, …].
   * @param options Epsilon, name.
   * @returns Output name.
   */
  batchNorm(x: string, options: { epsilon?: number; name?: string } = {}): string {
    const c = this.#channels(x, 1, "batchNorm");
    const name = this.#reserve(options.name, "batchnorm");
    const r = this.random;
    const scale = this.initializer(float32([c], r.uniforms(c, 0.5, 1.5)), `${name}.scale`);
    const bias = this.initializer(float32([c], r.normals(c, 0.1)), `${name}.bias`);
    const mean = this.initializer(float32([c], r.normals(c, 0.2)), `${name}.mean`);
    const variance = this.initializer(float32([c], r.uniforms(c, 0.5, 2)), `${name}.var`);
    return this.op("BatchNormalization", [x, scale, bias, mean, variance], {
      name,
      attributes: { epsilon: { type: "float", value: options.epsilon ?? 1e-5 } },
      shape: this.#shape(x),
    });
  }

  #unary(op: string, x: string, attributes: Record<string, Attribute> = {}): string {
    return this.op(op, [x], { attributes, shape: this.#shape(x) });
  }

  /** Relu. @param x Input. @returns Output name. */
  relu(x: string): string {
    return this.#unary("Relu", x);
  }

  /** Relu6 as Clip(0, 6). @param x Input. @returns Output name. */
  relu6(x: string): string {
    return this.clip(x, 0, 6);
  }

  /** LeakyRelu. @param x Input. @param alpha Negative slope. @returns Output name. */
  leakyRelu(x: string, alpha = 0.1): string {
    return this.#unary("LeakyRelu", x, { alpha: { type: "float", value: alpha } });
  }

  /**
   * Clip: min/max as inputs from opset 11, as attributes before.
   *
   * @param x Input.
   * @param min Lower bound.
   * @param max Upper bound.
   * @returns Output name.
   */
  clip(x: string, min: number, max: number): string {
    if (this.opset >= 11) {
      const lo = this.initializer(float32([], [min]));
      const hi = this.initializer(float32([], [max]));
      return this.op("Clip", [x, lo, hi], { shape: this.#shape(x) });
    }
    return this.#unary("Clip", x, {
      min: { type: "float", value: min },
      max: { type: "float", value: max },
    });
  }

  /** HardSigmoid max(0, min(1, αx + β)). @param x Input. @param alpha α. @param beta β. @returns Output name. */
  hardSigmoid(x: string, alpha = 0.2, beta = 0.5): string {
    return this.#unary("HardSigmoid", x, {
      alpha: { type: "float", value: alpha },
      beta: { type: "float", value: beta },
    });
  }

  /** HardSwish (opset ≥ 14), else x · HardSigmoid(x, 1/6, 0.5). @param x Input. @returns Output name. */
  hardSwish(x: string): string {
    if (this.opset >= 14) return this.#unary("HardSwish", x);
    return this.mul(x, this.hardSigmoid(x, 1 / 6, 0.5));
  }

  /** Sigmoid. @param x Input. @returns Output name. */
  sigmoid(x: string): string {
    return this.#unary("Sigmoid", x);
  }

  /** Tanh. @param x Input. @returns Output name. */
  tanh(x: string): string {
    return this.#unary("Tanh", x);
  }

  /**
   * SiLU x · Sigmoid(x), written as Sigmoid + Mul the way PyTorch exports `nn.SiLU` (ONNX has no
   * SiLU op before opset 24).
   *
   * @param x Input.
   * @returns Output name.
   */
  silu(x: string): string {
    return this.mul(x, this.sigmoid(x));
  }

  /**
   * Split along `axis` into parts of the given sizes (the sizes as an int64 input from opset 13 on,
   * the `split` attribute before); every output keeps its static shape.
   *
   * @param x Input.
   * @param sizes Size of each part along the axis.
   * @param axis Axis (default 1).
   * @returns The output names, one per part.
   */
  split(x: string, sizes: readonly number[], axis = 1): string[] {
    const s = this.#shape(x);
    const ax = axis < 0 && s ? axis + s.length : axis;
    const name = this.#reserve(undefined, "split");
    const outputs = sizes.map((_, k) => k === 0 ? name : `${name}_${k}`);
    const inputs = this.opset >= 13
      ? [x, this.initializer(int64([sizes.length], [...sizes]))]
      : [x];
    const attributes: Record<string, Attribute> = { axis: { type: "int", value: axis } };
    if (this.opset < 13) attributes.split = { type: "ints", value: [...sizes] };
    this.op("Split", inputs, { name, outputs, attributes });
    outputs.forEach((o, k) => {
      const shape = s?.map((d, i) => (i === ax ? sizes[k]! : d));
      this.#info.set(o, { dtype: "float32", shape });
    });
    return outputs;
  }

  #binary(op: string, a: string, b: string | Constant): string {
    const bn = typeof b === "string" ? b : this.initializer(b);
    return this.op(op, [a, bn], {
      shape: broadcast(this.#shape(a), this.#shape(bn), `${op} of "${a}" and "${bn}"`),
    });
  }

  /** Add (broadcasting). @param a Tensor. @param b Tensor name or constant. @returns Output name. */
  add(a: string, b: string | Constant): string {
    return this.#binary("Add", a, b);
  }

  /** Mul (broadcasting). @param a Tensor. @param b Tensor name or constant. @returns Output name. */
  mul(a: string, b: string | Constant): string {
    return this.#binary("Mul", a, b);
  }

  /** Concat. @param xs Inputs. @param axis Axis (default 1). @returns Output name. */
  concat(xs: readonly string[], axis = 1): string {
    const shapes = xs.map((x) => this.#shape(x));
    let shape: Dim[] | undefined;
    if (shapes.every((s) => s)) {
      const first = shapes[0]!;
      const ax = axis < 0 ? axis + first.length : axis;
      shape = [...first];
      let total: Dim = 0;
      for (const s of shapes) {
        const d = s![ax] ?? null;
        total = typeof total === "number" && typeof d === "number" ? total + d : null;
      }
      shape[ax] = total;
    }
    return this.op("Concat", [...xs], {
      attributes: { axis: { type: "int", value: axis } },
      shape,
    });
  }

  /**
   * Nearest-neighbour upsampling of H and W by `scale`, as Resize (opset ≥ 10) or Upsample.
   *
   * @param x Input [N, C, H, W].
   * @param scale Integer scale.
   * @returns Output name.
   */
  resize(x: string, scale = 2): string {
    const s = this.#shape(x);
    const up = (d: Dim | undefined): Dim => typeof d === "number" ? d * scale : null;
    const shape = s ? [s[0] ?? null, s[1] ?? null, up(s[2]), up(s[3])] : undefined;
    const scales = this.initializer(float32([4], [1, 1, scale, scale]));
    if (this.opset >= 11) {
      // opset 11/12 require a roi input; an empty tensor is accepted there, "" from 13 on.
      const roi = this.opset >= 13 ? "" : this.initializer(float32([0], []));
      return this.op("Resize", [x, roi, scales], {
        attributes: {
          mode: { type: "string", value: "nearest" },
          coordinate_transformation_mode: { type: "string", value: "asymmetric" },
          nearest_mode: { type: "string", value: "floor" },
        },
        shape,
      });
    }
    if (this.opset === 10) {
      return this.op("Resize", [x, scales], {
        attributes: { mode: { type: "string", value: "nearest" } },
        shape,
      });
    }
    return this.op("Upsample", [x, scales], {
      attributes: { mode: { type: "string", value: "nearest" } },
      shape,
    });
  }

  #pool(op: string, x: string, options: PoolOptions): string {
    const k = options.kernel;
    const stride = options.stride ?? k;
    const pad = options.pad ?? 0;
    const s = this.#shape(x);
    const out = (d: Dim | undefined): Dim =>
      typeof d === "number" ? Math.floor((d + 2 * pad - k) / stride) + 1 : null;
    return this.op(op, [x], {
      ...(options.name ? { name: options.name } : {}),
      attributes: {
        kernel_shape: { type: "ints", value: [k, k] },
        strides: { type: "ints", value: [stride, stride] },
        pads: { type: "ints", value: [pad, pad, pad, pad] },
      },
      shape: s ? [s[0] ?? null, s[1] ?? null, out(s[2]), out(s[3])] : undefined,
    });
  }

  /** MaxPool. @param x Input. @param options Kernel, stride (default kernel), pad. @returns Output name. */
  maxPool(x: string, options: PoolOptions): string {
    return this.#pool("MaxPool", x, options);
  }

  /** AveragePool. @param x Input. @param options Kernel, stride (default kernel), pad. @returns Output name. */
  averagePool(x: string, options: PoolOptions): string {
    return this.#pool("AveragePool", x, options);
  }

  /** GlobalAveragePool. @param x Input [N, C, H, W]. @returns Output name ([N, C, 1, 1]). */
  globalAveragePool(x: string): string {
    const s = this.#shape(x);
    return this.op("GlobalAveragePool", [x], {
      shape: s ? [s[0] ?? null, s[1] ?? null, 1, 1] : undefined,
    });
  }

  /**
   * Gemm y = x·Bᵀ + c (transB, default) or x·B + c with seeded B and c.
   *
   * @param x Input [N, K].
   * @param options Output features, transB, bias, name.
   * @returns Output name.
   */
  gemm(
    x: string,
    options: { out: number; transB?: boolean; bias?: boolean; name?: string },
  ): string {
    const k = this.#channels(x, 1, "gemm");
    const transB = options.transB ?? true;
    const name = this.#reserve(options.name, "gemm");
    const n = options.out;
    const inputs = this.#weightedInputs(
      x,
      name,
      { dims: transB ? [n, k] : [k, n], fanIn: k },
      options.bias ?? true ? n : undefined,
    );
    return this.op("Gemm", inputs, {
      name,
      attributes: transB ? { transB: { type: "int", value: 1 } } : {},
      shape: [this.#shape(x)![0] ?? null, n],
    });
  }

  /**
   * MatMul by a seeded constant weight [in, out] (the last axis of x is `in`).
   *
   * @param x Input [..., K].
   * @param options Output features, name.
   * @returns Output name.
   */
  matmul(x: string, options: { out: number; name?: string }): string {
    const s = this.#shape(x);
    const k = this.#channels(x, (s?.length ?? 1) - 1, "matmul");
    const name = this.#reserve(options.name, "matmul");
    const w = this.initializer(
      float32([k, options.out], this.random.normals(k * options.out, this.#std(k))),
      `${name}.weight`,
    );
    return this.op("MatMul", [x, w], { name, shape: [...s!.slice(0, -1), options.out] });
  }

  /** Flatten to 2-D at `axis`. @param x Input. @param axis Axis (default 1). @returns Output name. */
  flatten(x: string, axis = 1): string {
    const s = this.#shape(x);
    let shape: Dim[] | undefined;
    if (s) {
      const prod = (ds: Dim[]): Dim =>
        ds.every((d) => typeof d === "number") ? sizeOf(ds as number[]) : null;
      shape = [prod(s.slice(0, axis)), prod(s.slice(axis))];
    }
    return this.op("Flatten", [x], { attributes: { axis: { type: "int", value: axis } }, shape });
  }

  /** Reshape to a constant shape (0 copies, −1 infers). @param x Input. @param shape Target. @returns Output name. */
  reshape(x: string, shape: readonly number[]): string {
    const s = this.#shape(x);
    let out: Dim[] | undefined = shape.map((d, i) => d === 0 ? s?.[i] ?? null : d);
    if (out.includes(-1)) {
      const known = out.filter((d) => d !== -1);
      if (s && s.every((d) => typeof d === "number") && known.every((d) => typeof d === "number")) {
        const missing = sizeOf(s as number[]) / sizeOf(known as number[]);
        out = out.map((d) => d === -1 ? missing : d);
      } else out = out.map((d) => d === -1 ? null : d);
    }
    const target = this.initializer(int64([shape.length], [...shape]));
    return this.op("Reshape", [x, target], { shape: out });
  }

  /** Transpose. @param x Input. @param perm Permutation. @returns Output name. */
  transpose(x: string, perm: readonly number[]): string {
    const s = this.#shape(x);
    return this.op("Transpose", [x], {
      attributes: { perm: { type: "ints", value: [...perm] } },
      shape: s ? perm.map((p) => s[p] ?? null) : undefined,
    });
  }

  /** Softmax along `axis` (default the last). @param x Input. @param axis Axis. @returns Output name. */
  softmax(x: string, axis = -1): string {
    return this.#unary("Softmax", x, { axis: { type: "int", value: axis } });
  }

  /**
   * Marks a tensor as a graph output, renaming it to `name` when given.
   *
   * @param x Tensor name.
   * @param name Output name (default x).
   * @returns The output name.
   */
  output(x: string, name?: string): string {
    const info = this.#info.get(x);
    if (!info) throw new ModelError(`output: tensor "${x}" is not defined in the builder`);
    if (name && name !== x) {
      if (this.#initializers.has(x) || this.#inputs.some((v) => v.name === x)) {
        throw new ModelError(
          `output: cannot rename graph input or initializer "${x}" to "${name}"`,
        );
      }
      this.#claim(name);
      const rename = (t: string): string => (t === x ? name : t);
      for (let i = 0; i < this.#nodes.length; i++) {
        const n = this.#nodes[i]!;
        this.#nodes[i] = { ...n, inputs: n.inputs.map(rename), outputs: n.outputs.map(rename) };
      }
      for (let i = 0; i < this.#outputs.length; i++) this.#outputs[i] = rename(this.#outputs[i]!);
      this.#info.set(name, info);
      this.#info.delete(x);
      x = name;
    }
    this.#outputs.push(x);
    return x;
  }

  /**
   * The model built so far (no value_info; outputs typed and shaped where known).
   *
   * @returns A new Graph.
   */
  build(): Graph {
    if (this.#outputs.length === 0) throw new ModelError("build: the model has no outputs");
    return {
      name: this.#options.name,
      nodes: [...this.#nodes],
      initializers: new Map(this.#initializers),
      inputs: this.#inputs.map((v) => ({ ...v })),
      outputs: this.#outputs.map((name) => {
        const info = this.#info.get(name)!;
        return info.shape
          ? { name, dtype: info.dtype, shape: info.shape }
          : { name, dtype: info.dtype };
      }),
      valueInfo: [],
      opsetImports: [{ domain: "", version: this.opset }],
      irVersion: this.#options.irVersion,
      metadata: new Map(),
      producerName: "clipq.builder",
    };
  }
}

/** Options of {@linkcode yoloLikeModel}. */
export interface YoloLikeOptions {
  /** Channel multiplier (1 = YOLOv3's 32…1024 channels, ~62 M parameters). */
  width?: number;
  /** Residual-block multiplier of the darknet-53 stages [1, 2, 8, 8, 4] (min 1 block each). */
  depth?: number;
  /** Input height and width (a multiple of 32). */
  inputSize?: number;
  /** Classes per anchor (YOLOv3: 80); each head has 3 · (5 + classes) channels. */
  classes?: number;
  /** Weight seed. */
  seed?: number;
  /** Opset of the model (default 13). */
  opset?: number;
}

/**
 * A YOLOv3-shaped model: a darknet-53-like backbone of Conv+BN+LeakyRelu with residual Adds, and
 * three detection heads with upsample + concat routes. At width 1, depth 1 it has YOLOv3's 75 convs
 * and ~62 M parameters; small widths/depths keep tests fast.
 *
 * @param options Width, depth, input size, classes, seed, opset.
 * @returns The graph, with input "images" and outputs "out32", "out16", "out8".
 *
 * @example A tiny one
 * ```ts
 * import { yoloLikeModel } from "@clipq/onnx/builder";
 * import assert from "node:assert/strict";
 * const g = yoloLikeModel({ width: 0.0625, depth: 0.1, inputSize: 64, classes: 2 });
 * assert.deepEqual(g.outputs.map((o) => o.shape), [[1, 21, 2, 2], [1, 21, 4, 4], [1, 21, 8, 8]]);
 * ```
 */
export function yoloLikeModel(options: YoloLikeOptions = {}): Graph {
  const width = options.width ?? 1;
  const depth = options.depth ?? 1;
  const size = options.inputSize ?? 416;
  const classes = options.classes ?? 80;
  if (size % 32) throw new ConfigError("inputSize", `expected a multiple of 32 but found ${size}`);
  const b = new ModelBuilder({
    seed: options.seed ?? 0,
    opset: options.opset ?? 13,
    name: "yolo_like",
  });
  const ch = (c: number): number => Math.max(4, Math.round(c * width / 2) * 2);
  const cbl = (x: string, out: number, k: number, stride = 1): string =>
    b.leakyRelu(
      b.batchNorm(b.conv(x, { outChannels: ch(out), kernel: k, stride, bias: false })),
      0.1,
    );
  let x = cbl(b.input("images", [1, 3, size, size]), 32, 3);
  const routes: string[] = [];
  [[64, 1], [128, 2], [256, 8], [512, 8], [1024, 4]].forEach(([c, n]) => {
    x = cbl(x, c!, 3, 2);
    for (let i = 0; i < Math.max(1, Math.round(n! * depth)); i++) {
      x = b.add(x, cbl(cbl(x, c! / 2, 1), c!, 3));
    }
    routes.push(x);
  });
  const outs = 3 * (5 + classes);
  const head = (x: string, c: number): [string, string] => {
    for (let i = 0; i < 2; i++) x = cbl(cbl(x, c, 1), c * 2, 3);
    const branch = cbl(x, c, 1);
    const y = b.conv(cbl(branch, c * 2, 3), { outChannels: outs, kernel: 1 });
    return [branch, y];
  };
  const [b32, y32] = head(routes[4]!, 512);
  const [b16, y16] = head(b.concat([b.resize(cbl(b32, 256, 1), 2), routes[3]!]), 256);
  const [, y8] = head(b.concat([b.resize(cbl(b16, 128, 1), 2), routes[2]!]), 128);
  b.output(y32, "out32");
  b.output(y16, "out16");
  b.output(y8, "out8");
  return b.build();
}
