// Private helpers shared by the decoders: output lookup with errors that name the tensor.
import { ModelError } from "@clipq/onnx/errors";
import { type Tensor, toFloat32 } from "@clipq/onnx/tensor";

/** The named output, or a ModelError listing what is there. */
export function output(outputs: Record<string, Tensor>, name: string, what: string): Tensor {
  const t = outputs[name];
  if (!t) {
    throw new ModelError(
      `${what}: expected model output "${name}" but the outputs are ${
        Object.keys(outputs).join(", ") || "none"
      }`,
    );
  }
  return t;
}

/** Float values of a tensor (shared storage for float32). */
export function floats(t: Tensor, name: string): Float32Array {
  try {
    return toFloat32(t);
  } catch (e) {
    throw new ModelError(`output "${name}": expected a numeric tensor but found ${t.dtype}`, {
      cause: e,
    });
  }
}

/** Throws a ModelError unless `ok`. */
export function expectShape(
  ok: boolean,
  name: string,
  expected: string,
  dims: readonly number[],
): void {
  if (!ok) {
    throw new ModelError(
      `output "${name}": expected shape ${expected} but found [${dims.join(", ")}]`,
    );
  }
}

export function sigmoid(x: number): number {
  return 1 / (1 + Math.exp(-x));
}
