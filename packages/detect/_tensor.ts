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

/**
 * How a head reads the four values of a box from its columns (`x1, y1, x2, y2` or `cx, cy, w, h`,
 * in any order): their indices, whether they are centre and size, and the scale of normalized
 * boxes (input width and height; a ModelError naming the output when the size is missing).
 */
export function boxColumns(
  columns: readonly string[],
  o: {
    normalized: boolean;
    size: readonly [number, number] | undefined;
    what: string;
    name: string;
  },
): { index: [number, number, number, number]; centre: boolean; sx: number; sy: number } {
  const col = (c: string) => columns.indexOf(c);
  const centre = col("cx") >= 0;
  const index: [number, number, number, number] = centre
    ? [col("cx"), col("cy"), col("w"), col("h")]
    : [col("x1"), col("y1"), col("x2"), col("y2")];
  if (!o.normalized) return { index, centre, sx: 1, sy: 1 };
  if (!o.size) {
    throw new ModelError(
      `${o.what}: expected the model input size to scale normalized boxes of output "${o.name}", but none was given`,
    );
  }
  return { index, centre, sx: o.size[1], sy: o.size[0] };
}
