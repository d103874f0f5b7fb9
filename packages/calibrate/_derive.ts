/**
 * Tapped tensors that are a monotone elementwise function of another tapped tensor of the same
 * shape (x + c, x · c, x / c, Relu, Clip, LeakyRelu with constant c): sampled at the same
 * positions, their sample is the function of the other's sample and their min and max the function
 * of its min and max, exactly (float32 rounding is monotone too), so they need no reduction inside
 * onnxruntime. A LeakyRelu's input is read off its output the other way ({@linkcode
 * inverseDerivation}), to within float32 rounding. Steps compose through tensors that are not tapped: in PP-OCRv4 det the quantizer
 * asks for every hard-swish's Clip(x + 3) but not for x + 3, and the Clip follows from x.
 *
 * @module
 */
import { attrFloat, type Graph, type Node } from "@clipq/onnx";

/** A tensor computed from another tapped tensor by a monotone elementwise function. */
export interface Derivation {
  /** The tapped tensor it is computed from. */
  from: string;
  /** The function, in float32 arithmetic as onnxruntime computes it. */
  f: (x: number) => number;
  /**
   * The function over a sample, into `out` (one loop per kind, so each stays monomorphic: calling
   * `f` per value from one shared loop cost several times as much).
   */
  apply: (values: Float32Array, out: Float32Array) => void;
  /** Whether the function is non-increasing (min and max swap). */
  decreasing: boolean;
}

const f32 = Math.fround;

/** A derivation whose per-sample loop is its own copy of `f`'s body (see `apply`). */
function make(
  from: string,
  decreasing: boolean,
  f: (x: number) => number,
  apply: (values: Float32Array, out: Float32Array) => void,
): Derivation {
  return { from, decreasing, f, apply };
}

/**
 * `outer` after `inner`: a tapped tensor two or more monotone steps from a tapped one (the
 * hard-swish's Clip(x + 3) when x + 3 itself is not tapped). Each step rounds to float32 as
 * onnxruntime's intermediate tensor does, so the composition is as exact as its steps.
 *
 * @param inner The first step (its `from` is the composition's).
 * @param outer The step applied to `inner`'s result.
 * @returns The composed derivation.
 */
export function compose(inner: Derivation, outer: Derivation): Derivation {
  const f = inner.f, g = outer.f, a = inner.apply, b = outer.apply;
  // Each apply reads values[i] before writing out[i], so the second step may run in place.
  return make(inner.from, inner.decreasing !== outer.decreasing, (x) => g(f(x)), (v, o) => {
    a(v, o);
    b(o, o);
  });
}

/** The single value of a float32 constant, or undefined. */
function scalar(graph: Graph, name: string | undefined): number | undefined {
  if (!name) return undefined;
  const t = graph.initializers.get(name);
  if (!t || t.dtype !== "float32" || t.data.length !== 1) return undefined;
  return (t.data as Float32Array)[0];
}

/**
 * How a LeakyRelu's input follows from its output, when the activation is one-to-one (α > 0):
 * x = y / α below 0, y above. The quantizer asks for both tensors of every LeakyRelu (onnxruntime
 * runs it on the integers, apart from the conv), and tapping the conv's output beside the
 * activation's kept onnxruntime from fusing the two in the calibration graph: each tapped
 * pre-activation tensor cost a LeakyRelu pass and two layout reorders, beside its reductions
 * (NanoDet: 28 of 76 tapped tensors). Read off the output instead, a value below 0 is y / α
 * rounded to float32: the original or its float32 neighbour (α·x rounds), so min, max and counts
 * agree with the tapped tensor's but for a value that sits on a bin edge.
 *
 * @param node A node reading the tensor.
 * @returns The derivation from the node's output, or undefined when the node is not an invertible
 *   LeakyRelu.
 */
export function inverseDerivation(node: Node): Derivation | undefined {
  if (node.domain !== "" && node.domain !== "ai.onnx") return undefined;
  const y = node.outputs[0];
  if (node.op !== "LeakyRelu" || !y || node.outputs.length !== 1) return undefined;
  const alpha = f32(attrFloat(node, "alpha", 0.01));
  if (!(alpha > 0 && Number.isFinite(alpha))) return undefined;
  return make(
    y,
    false,
    (v) => (v < 0 ? f32(v / alpha) : v),
    (v, o) => divideBelowZero(v, o, alpha),
  );
}

/**
 * The factor 1 below zero and `factor` elsewhere, picked without a branch: `1 + [x < 0]·(factor −
 * 1)`, or undefined when that sum is not exactly `factor` (α − 1 then rounds; never for a float32
 * α ≥ 2⁻²⁹). A LeakyRelu's sample has its signs in no order a branch predictor can follow: the
 * branching loop took NanoDet's 28 derived samples 11.3 ms over 9 images, this one 4.6 ms.
 */
function branchFreeStep(factor: number): number | undefined {
  const step = factor - 1;
  return 1 + step === factor ? step : undefined;
}

/** `out[i] = values[i] · α` below zero, `values[i]` elsewhere (LeakyRelu), without a branch. */
function multiplyBelowZero(values: Float32Array, out: Float32Array, alpha: number): void {
  const step = branchFreeStep(alpha);
  if (step === undefined) {
    for (let i = 0; i < values.length; i++) {
      out[i] = values[i]! < 0 ? alpha * values[i]! : values[i]!;
    }
    return;
  }
  for (let i = 0; i < values.length; i++) {
    const x = values[i]!;
    out[i] = x * (1 + +(x < 0) * step);
  }
}

/** `out[i] = values[i] / α` below zero, `values[i]` elsewhere (LeakyRelu's inverse), without a branch. */
function divideBelowZero(values: Float32Array, out: Float32Array, alpha: number): void {
  const step = branchFreeStep(alpha);
  if (step === undefined) {
    for (let i = 0; i < values.length; i++) {
      out[i] = values[i]! < 0 ? values[i]! / alpha : values[i]!;
    }
    return;
  }
  for (let i = 0; i < values.length; i++) {
    const x = values[i]!;
    out[i] = x / (1 + +(x < 0) * step);
  }
}

/**
 * How `node`'s output follows from its one non-constant input, if it is a monotone elementwise
 * function with constant parameters; the caller checks that the shapes agree.
 *
 * @param graph The graph (for constants).
 * @param node The producer of a tapped tensor.
 * @param opset The default-domain opset (Clip's bounds are attributes before 11).
 * @returns The derivation, or undefined.
 */
export function derivation(graph: Graph, node: Node, opset: number): Derivation | undefined {
  if (node.domain !== "" && node.domain !== "ai.onnx") return undefined;
  const [a, b] = node.inputs;
  if (!a) return undefined;
  switch (node.op) {
    case "Add":
    case "Mul": {
      const ca = scalar(graph, a), cb = scalar(graph, b);
      const c = cb ?? ca;
      const from = cb !== undefined ? a : ca !== undefined ? b : undefined;
      if (c === undefined || !from || !Number.isFinite(c)) return undefined;
      // Float32Array stores round to float32, as f32() does.
      return node.op === "Add"
        ? make(from, false, (x) => f32(x + c), (v, o) => {
          for (let i = 0; i < v.length; i++) o[i] = v[i]! + c;
        })
        : make(from, c < 0, (x) => f32(x * c), (v, o) => {
          for (let i = 0; i < v.length; i++) o[i] = v[i]! * c;
        });
    }
    case "Sub": {
      const ca = scalar(graph, a), cb = scalar(graph, b);
      if (cb !== undefined && ca === undefined && Number.isFinite(cb)) {
        return make(a, false, (x) => f32(x - cb), (v, o) => {
          for (let i = 0; i < v.length; i++) o[i] = v[i]! - cb;
        });
      }
      if (ca !== undefined && cb === undefined && b && Number.isFinite(ca)) {
        return make(b, true, (x) => f32(ca - x), (v, o) => {
          for (let i = 0; i < v.length; i++) o[i] = ca - v[i]!;
        });
      }
      return undefined;
    }
    case "Div": {
      const c = scalar(graph, b);
      if (c === undefined || c === 0 || !Number.isFinite(c) || scalar(graph, a) !== undefined) {
        return undefined;
      }
      return make(a, c < 0, (x) => f32(x / c), (v, o) => {
        for (let i = 0; i < v.length; i++) o[i] = v[i]! / c;
      });
    }
    case "Relu":
      return make(a, false, (x) => (x < 0 ? 0 : x), (v, o) => {
        // One store per branch: `o[i] = x < 0 ? 0 : x` joins an integer and a float, and V8 then
        // boxes every value in a fresh heap number (megabytes of garbage per batch).
        for (let i = 0; i < v.length; i++) {
          const x = v[i]!;
          if (x < 0) o[i] = 0;
          else o[i] = x;
        }
      });
    case "LeakyRelu": {
      const alpha = f32(attrFloat(node, "alpha", 0.01));
      if (!(alpha >= 0)) return undefined;
      return make(
        a,
        false,
        (x) => (x < 0 ? f32(alpha * x) : x),
        (v, o) => multiplyBelowZero(v, o, alpha),
      );
    }
    case "Clip": {
      let lo: number | undefined, hi: number | undefined;
      if (opset < 11) {
        lo = f32(attrFloat(node, "min", -3.4028234663852886e38));
        hi = f32(attrFloat(node, "max", 3.4028234663852886e38));
      } else {
        lo = node.inputs[1] ? scalar(graph, node.inputs[1]) : -Infinity;
        hi = node.inputs[2] ? scalar(graph, node.inputs[2]) : Infinity;
      }
      if (lo === undefined || hi === undefined || !(lo <= hi)) return undefined;
      const l = lo, h = hi;
      return make(a, false, (x) => (x < l ? l : x > h ? h : x), (v, o) => {
        // One store per branch, as for Relu: no heap number per value.
        for (let i = 0; i < v.length; i++) {
          const x = v[i]!;
          if (x < l) o[i] = l;
          else if (x > h) o[i] = h;
          else o[i] = x;
        }
      });
    }
  }
  return undefined;
}
