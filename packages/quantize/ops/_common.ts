// Helpers the op families share.
import type { Node } from "@clipq/onnx/graph";
import type { MarkContext } from "../registry.ts";

/** Marks an input as an activation, or as a constant operand when it is a float initializer. */
export function operand(ctx: MarkContext, name: string): string | undefined {
  const init = ctx.initializer(name);
  if (init) {
    if (init.dtype !== "float32") return `constant input "${name}" is ${init.dtype}, not float32`;
    ctx.constant(name);
    return undefined;
  }
  if (!ctx.isFloat(name)) return `input "${name}" is not a float32 tensor`;
  ctx.activation(name);
  return undefined;
}

/** Marks input 0 and output 0 as activations with their own ranges. */
export function unary(node: Node, ctx: MarkContext): string | undefined {
  const x = node.inputs[0];
  const y = node.outputs[0];
  if (!x || !y) return "expected one input and one output";
  if (node.outputs.filter(Boolean).length > 1) return "extra outputs are not quantized";
  if (!ctx.isFloat(x)) return `input "${x}" is not a float32 tensor`;
  ctx.activation(x);
  ctx.activation(y);
  return undefined;
}
