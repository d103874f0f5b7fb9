/**
 * The op quantizer registry: op type → quantizer. A quantizer only *marks* what a node needs
 * (activations with their own range, outputs that share an input's scale, per-channel weights,
 * int32 biases, constant operands); one central pass then writes the Q/DQ nodes. Registries merge
 * and a duplicate op type is an error, so a plugin cannot silently replace a built-in quantizer.
 *
 * @module
 */
import { ConfigError } from "@clipq/onnx/errors";
import type { Graph, Node } from "@clipq/onnx/graph";
import type { Tensor } from "@clipq/onnx/tensor";

/** What a quantizer can mark while it looks at one node. */
export interface MarkContext {
  /** The graph being quantized. */
  readonly graph: Graph;
  /** Whether a tensor is float32 (from inputs, initializers, value_info and propagation). */
  isFloat(name: string): boolean;
  /** The initializer of that name, or undefined when the tensor is computed. */
  initializer(name: string): Tensor | undefined;
  /** Quantize an activation with its own calibrated range. */
  activation(name: string): void;
  /** Quantize `output` with the scale and zero point of `input` (ops that only move values). */
  share(output: string, input: string): void;
  /** Quantize a constant weight symmetric int8, per channel along `axis` (per tensor when undefined). */
  weight(name: string, axis: number | undefined): void;
  /** Quantize a constant bias int32 with scale s_input · s_weight. */
  bias(name: string, input: string, weight: string): void;
  /** Quantize a constant operand (of Add, Mul, Concat) like an activation over its own min/max. */
  constant(name: string): void;
}

/** Quantizer of one op type. */
export interface OpQuantizer {
  /**
   * Marks the tensors of a node through `ctx`.
   *
   * @returns Why the node must stay float, or undefined when it was marked.
   */
  mark(node: Node, ctx: MarkContext): string | undefined;
  /** Weighted layers: the constant weight and its output-channel axis, or undefined if not constant. */
  weight?(node: Node, graph: Graph): { name: string; axis: number | undefined } | undefined;
  /** A following Relu/Clip folds into this op (one Q/DQ after the activation, none before it). */
  fusesActivation?: boolean;
}

/** Op type → quantizer. */
export type Registry = ReadonlyMap<string, OpQuantizer>;

/**
 * Builds a registry from op families (one object per family file), refusing duplicates.
 *
 * @param families Objects mapping op types to quantizers.
 * @returns The merged registry.
 * @throws {ConfigError} When two families register the same op type.
 *
 * @example Duplicates are an error
 * ```ts
 * import { createRegistry } from "@clipq/quantize/registry";
 * import assert from "node:assert/strict";
 * const q = { mark: () => undefined };
 * assert.equal(createRegistry({ Foo: q }, { Bar: q }).size, 2);
 * assert.throws(() => createRegistry({ Foo: q }, { Foo: q }), /Foo/);
 * ```
 */
export function createRegistry(
  ...families: readonly Readonly<Record<string, OpQuantizer>>[]
): Registry {
  const out = new Map<string, OpQuantizer>();
  for (const f of families) {
    for (const [op, q] of Object.entries(f)) {
      if (out.has(op)) {
        throw new ConfigError(
          "registry",
          `expected each op type registered once but found a second quantizer for "${op}"`,
        );
      }
      out.set(op, q);
    }
  }
  return out;
}

/**
 * Merges registries (e.g. the built-in one and a plugin's), refusing duplicates.
 *
 * @param a A registry.
 * @param b Another registry.
 * @returns The union.
 * @throws {ConfigError} When both register the same op type.
 *
 * @example Usage
 * ```ts
 * import { createRegistry, mergeRegistries } from "@clipq/quantize/registry";
 * import assert from "node:assert/strict";
 * const q = { mark: () => undefined };
 * assert.equal(mergeRegistries(createRegistry({ A: q }), createRegistry({ B: q })).size, 2);
 * ```
 */
export function mergeRegistries(a: Registry, b: Registry): Registry {
  return createRegistry(Object.fromEntries(a), Object.fromEntries(b));
}
