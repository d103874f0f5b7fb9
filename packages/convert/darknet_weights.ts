/**
 * Darknet `.weights` files: a header (int32 major, minor, revision, then `seen` images as int64
 * when `major·10 + minor ≥ 2`, else int32), then float32 parameters layer by layer — for each
 * convolutional layer its biases, then BN scales, rolling means and rolling variances when
 * `batch_normalize=1`, then the weights in `[filters][channels/groups][size][size]` order.
 *
 * @module
 */
import { ModelError } from "@clipq/onnx/errors";
import { seededRandom } from "@clipq/onnx/builder";
import { type DarknetPlan, planDarknet, type PlanOptions } from "./darknet_plan.ts";

/** A parsed weights file. */
export interface DarknetWeights {
  readonly major: number;
  readonly minor: number;
  readonly revision: number;
  /** Images seen in training. */
  readonly seen: number;
  /** The parameters (a view of the file's bytes when they are 4-byte aligned). */
  readonly floats: Float32Array;
}

/**
 * Reads a weights file's header and checks it holds exactly the parameters a plan needs.
 *
 * @param bytes The `.weights` file.
 * @param plan The network plan (its `weightCount`).
 * @param name File name for error messages.
 * @returns Header fields and the floats.
 * @throws {ModelError} On a short header or a float count other than the plan's.
 *
 * @example Usage
 * ```ts
 * import { readDarknetWeights, randomDarknetWeights } from "@clipq/convert/darknet-weights";
 * import { planDarknet } from "@clipq/convert/darknet-plan";
 * import assert from "node:assert/strict";
 * const cfg = "[net]\nwidth=4\nheight=4\nchannels=1\n[convolutional]\nfilters=2\nsize=1\nactivation=linear";
 * const w = readDarknetWeights(randomDarknetWeights(cfg, { seed: 1 }), planDarknet(cfg), "a.weights");
 * assert.equal(w.floats.length, 2 + 2);
 * ```
 */
export function readDarknetWeights(
  bytes: Uint8Array,
  plan: DarknetPlan,
  name: string,
): DarknetWeights {
  if (bytes.length < 12) {
    throw new ModelError(
      `${name}: expected a darknet weights header of at least 12 bytes, found ${bytes.length}`,
    );
  }
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const major = v.getInt32(0, true), minor = v.getInt32(4, true), revision = v.getInt32(8, true);
  // darknet's parse rule: seen is a size_t (64-bit) from version 0.2 on.
  const wide = major * 10 + minor >= 2 && major < 1000 && minor < 1000;
  const start = wide ? 20 : 16;
  if (bytes.length < start) {
    throw new ModelError(
      `${name}: expected a ${start}-byte header for version ${major}.${minor}, found ${bytes.length} bytes`,
    );
  }
  const seen = wide ? Number(v.getBigUint64(12, true)) : v.getUint32(12, true);
  const found = (bytes.length - start) / 4;
  if (found !== plan.weightCount) {
    throw new ModelError(
      `${name}: expected darknet weights, ${plan.weightCount} floats after the ${start}-byte header (version ${major}.${minor}.${revision}), found ${
        Number.isInteger(found)
          ? found
          : `${Math.floor(found)} and ${(bytes.length - start) % 4} stray bytes`
      }${
        found < plan.weightCount
          ? " (file too short)"
          : " (file too long: does it belong to this cfg?)"
      }`,
    );
  }
  const off = bytes.byteOffset + start;
  const floats = off % 4 === 0
    ? new Float32Array(bytes.buffer, off, plan.weightCount)
    : new Float32Array(bytes.slice(start).buffer);
  return { major, minor, revision, seen, floats };
}

/** Fills `a` with uniforms in [−limit, limit) from a mulberry32 state; returns the next state. */
function fillUniform(a: Float32Array, state: number, limit: number): number {
  // Plain locals (not closure variables) keep this loop fast: YOLOv3 has 62 M weights.
  let s = state | 0;
  const k = (2 * limit) / 4294967296;
  for (let i = 0; i < a.length; i++) {
    s = (s + 0x6d2b79f5) | 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    a[i] = ((t ^ (t >>> 14)) >>> 0) * k - limit;
  }
  return s;
}

/** Options of {@linkcode randomDarknetWeights}. */
export interface RandomWeightsOptions extends PlanOptions {
  /** Seed: the same cfg and seed give the same bytes. */
  seed?: number;
}

/**
 * Writes a seeded random weights file for a cfg, in darknet's format (version 0.2.0, 64-bit
 * `seen`). Conv weights are He-uniform (variance 2/fan-in), biases ~N(0, 0.05), BN scales in
 * [0.8, 1.2); BN running means and variances follow the conv output's expected mean and second
 * moment, tracked layer by layer (through residual sums, routes and pools), so every BN output is
 * about unit scale as in a trained network: on uniform input YOLOv3's conv outputs have RMS ≈ 1
 * and its heads ≈ 1.2 (with untracked BN statistics the residual sums would grow them past 10⁵).
 *
 * @param cfgText The cfg text.
 * @param options Seed, input size and file name for messages.
 * @returns The `.weights` bytes.
 *
 * @example Usage
 * ```ts
 * import { randomDarknetWeights } from "@clipq/convert/darknet-weights";
 * import assert from "node:assert/strict";
 * const cfg = "[net]\nwidth=4\nheight=4\nchannels=1\n[convolutional]\nbatch_normalize=1\nfilters=2\nsize=1";
 * const bytes = randomDarknetWeights(cfg, { seed: 3 });
 * assert.equal(bytes.length, 20 + 4 * (2 * 4 + 2 * 1));
 * assert.deepEqual(bytes, randomDarknetWeights(cfg, { seed: 3 }));
 * ```
 */
export function randomDarknetWeights(
  cfgText: string,
  options: RandomWeightsOptions = {},
): Uint8Array {
  const plan = planDarknet(cfgText, options);
  const bytes = new Uint8Array(20 + 4 * plan.weightCount);
  const v = new DataView(bytes.buffer);
  v.setInt32(0, 0, true);
  v.setInt32(4, 2, true);
  v.setInt32(8, 0, true);
  v.setBigUint64(12, 0n, true);
  const out = new Float32Array(bytes.buffer, 20, plan.weightCount);
  const rnd = seededRandom(options.seed ?? 0);
  // A second mulberry32 stream for the bulk weights.
  let state = ((options.seed ?? 0) ^ 0x5bd1e995) | 0;
  let at = 0;
  const put = (a: Float32Array) => {
    out.set(a, at);
    at += a.length;
  };
  // Expected [mean, second moment] of each layer's output, tracked so that the BN running variance
  // matches what the conv will really produce (input pixels uniform in [0, 1]: 1/2, 1/3). Means
  // matter for residual sums: leaky outputs are mostly positive, so
  // E[(a + b)²] = E[a²] + E[b²] + 2·E[a]·E[b], not just the first two terms.
  const stats: [number, number][] = [];
  const at_ = (i: number): [number, number] => (i < 0 ? [0.5, 1 / 3] : stats[i]!);
  // Activation of a zero-mean value with second moment v: [mean, second moment] (Gaussian).
  const act = (a: string, v: number): [number, number] => {
    const sd = Math.sqrt(v);
    switch (a) {
      case "linear":
        return [0, v];
      case "logistic":
        return [0.5, 0.25 + 0.04 * v];
      case "leaky":
        return [0.9 * sd / Math.sqrt(2 * Math.PI), 0.505 * v];
      default: // relu, mish, swish: about relu's
        return [sd / Math.sqrt(2 * Math.PI), 0.5 * v];
    }
  };
  for (const l of plan.layers) {
    switch (l.type) {
      case "convolutional": {
        const f = l.filters;
        const fanIn = (l.inChannels / l.groups) * l.size * l.size;
        // He-uniform: variance 2/fan-in, so the conv output has second moment 2·E[x²].
        const limit = Math.sqrt(6 / fanIn);
        const convMoment = 2 * at_(l.input)[1];
        const bias = rnd.normals(f, 0.05);
        put(bias);
        if (l.batchNormalize) {
          put(rnd.uniforms(f, 0.8, 1.2));
          put(rnd.normals(f, 0.1 * Math.sqrt(convMoment)));
          put(rnd.uniforms(f, 0.8 * convMoment, 1.25 * convMoment));
        }
        const n = f * fanIn;
        state = fillUniform(out.subarray(at, at + n), state, limit);
        at += n;
        stats.push(act(l.activation, l.batchNormalize ? 1 : convMoment));
        break;
      }
      case "shortcut": {
        const [a, b] = [at_(l.inputs[0]), at_(l.inputs[1])];
        const sum: [number, number] = [a[0] + b[0], a[1] + b[1] + 2 * a[0] * b[0]];
        stats.push(l.activation === "linear" ? sum : act(l.activation, sum[1]));
        break;
      }
      case "route": {
        let mean = 0, moment = 0, c = 0;
        for (const i of l.inputs) {
          const ch = i < 0 ? plan.input[0] : plan.layers[i]!.shape[0];
          mean += at_(i)[0] * ch;
          moment += at_(i)[1] * ch;
          c += ch;
        }
        stats.push([mean / c, moment / c]);
        break;
      }
      case "maxpool": {
        // The max of a few neighbors sits about a standard deviation above their mean.
        const [mean, moment] = at_(l.input);
        const sd = Math.sqrt(Math.max(0, moment - mean * mean));
        const k = l.size * l.size > 1 ? 0.8 : 0;
        stats.push([mean + k * sd, (mean + k * sd) ** 2 + 0.5 * sd * sd]);
        break;
      }
      default:
        stats.push(at_(l.input));
    }
  }
  return bytes;
}
