// Element types of every tensor, propagated forward from inputs, initializers and value_info, so
// quantizers only touch float32 tensors (a Reshape of a shape tensor or a Concat of int64 dims must
// stay as it is). Private: the full shape inference lives in @clipq/onnx; this needs dtypes only.
import type { Graph } from "@clipq/onnx/graph";
import { type DType, dtypeFromCode } from "@clipq/onnx/tensor";

const INT64_OUT = new Set(["Shape", "Size", "NonZero", "ArgMax", "ArgMin", "NonMaxSuppression"]);
const BOOL_OUT = new Set([
  "Equal",
  "Less",
  "Greater",
  "LessOrEqual",
  "GreaterOrEqual",
  "Not",
  "And",
  "Or",
  "Xor",
  "IsNaN",
  "IsInf",
]);

export function inferDtypes(graph: Graph): Map<string, DType> {
  const types = new Map<string, DType>();
  for (const v of [...graph.inputs, ...graph.valueInfo, ...graph.outputs]) {
    if (v.dtype) types.set(v.name, v.dtype);
  }
  for (const [k, t] of graph.initializers) types.set(k, t.dtype);
  for (const n of graph.nodes) {
    const first = n.inputs.find((i) => i && types.has(i));
    const firstType = first ? types.get(first) : undefined;
    n.outputs.forEach((o, k) => {
      if (!o || types.has(o)) return;
      let t: DType | undefined = firstType;
      if (INT64_OUT.has(n.op) || (n.op === "TopK" && k === 1) || (n.op === "MaxPool" && k === 1)) {
        t = "int64";
      } else if (BOOL_OUT.has(n.op)) t = "bool";
      else if (n.op === "Cast") {
        const to = n.attributes["to"];
        t = to?.type === "int" ? dtypeFromCode(to.value) : undefined;
      } else if (n.op === "Constant") {
        const v = n.attributes["value"];
        t = v?.type === "tensor"
          ? v.value.dtype
          : n.attributes["value_float"] || n.attributes["value_floats"]
          ? "float32"
          : "int64";
      } else if (n.op === "ConstantOfShape") {
        const v = n.attributes["value"];
        t = v?.type === "tensor" ? v.value.dtype : "float32";
      } else if (n.op === "DequantizeLinear" || n.op.endsWith("ToFloat")) {
        // onnxruntime's MatMulIntegerToFloat & co. (in its optimized models): integers in, float out.
        t = "float32";
      } else if (n.op === "QuantizeLinear") {
        t = (n.inputs[2] ? types.get(n.inputs[2]) : undefined) ?? "uint8";
      } else if (n.op === "Where") t = n.inputs[1] ? types.get(n.inputs[1]) : undefined;
      if (t) types.set(o, t);
    });
  }
  return types;
}
