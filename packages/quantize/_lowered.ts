/**
 * The graph every entry point marks: the opset raised to what the Q/DQ need, Div by a constant as
 * Mul, then the exact rewrites for onnxruntime's int8 kernels. `planQuantization`, `floatTwin` and
 * `quantize` all go through here, so the tensors a plan lists are the ones quantize reads (some
 * rewrites apply from opset 11 only: a plan of the unraised graph missed them).
 *
 * @module
 */
import type { Graph } from "@clipq/onnx/graph";
import { divToMul } from "./_rewrite.ts";
import { type Lowered, lowerForOrt } from "./ops/lower.ts";
import type { CheckedOptions } from "./options.ts";
import { raiseOpset } from "./opset.ts";
import { softmaxLastAxis } from "./_softmax_last_axis.ts";

/** Opset raised (13 for per-channel weights: QuantizeLinear's axis; else 10), Div → Mul, the DFL's Softmax on the last axis (head auto), lowered. */
export function lowerGraph(
  graph: Graph,
  o: Pick<CheckedOptions, "weights" | "exclude">,
): Lowered {
  const g = divToMul(raiseOpset(graph, o.weights === "per-channel" ? 13 : 10), o.exclude);
  // The DFL stays float under head "auto": its Softmax moves to the last axis, where ORT is fast.
  const dfl = o.exclude.head === "auto" ? softmaxLastAxis(g) : { graph: g, notes: [] };
  const lowered = lowerForOrt(dfl.graph, { exclude: o.exclude, head: o.exclude.head });
  return { ...lowered, notes: [...dfl.notes, ...lowered.notes] };
}
