// Shared helpers of the pipeline tests (not a test file itself; the _test suffix keeps it out of
// the published package).
import { join } from "node:path";
import { encode, type Graph, ModelBuilder, type Tensor } from "@clipq/onnx";
import { writeNpy } from "@clipq/data/npy";
import pngjs from "pngjs";

/** A small conv net with Clip/Relu activations and a float head (seeded weights). */
export function smallDetector(name = "tiny"): Graph {
  const b = new ModelBuilder({ seed: 7, name });
  let x = b.input("images", [1, 3, 32, 32]);
  x = b.clip(b.conv(x, { outChannels: 8, kernel: 3, pad: 1 }), 0, 6);
  x = b.maxPool(x, { kernel: 2, stride: 2 });
  x = b.relu(b.conv(x, { outChannels: 16, kernel: 3, pad: 1 }));
  const y = b.leakyRelu(b.conv(x, { outChannels: 16, kernel: 3, pad: 1 }), 0.1);
  const head = b.conv(b.add(x, y), { outChannels: 6, kernel: 1 });
  b.output(head, "out");
  return b.build();
}

/** A temp folder with model.onnx written, a writer for configs and one for `.npy` inputs. */
export function workspace(graph: Graph = smallDetector()): {
  dir: string;
  model: string;
  write(config: unknown, file?: string): string;
  /** Writes each tensor as `<folder>/<k>.npy` (k from 0), creating the folder; returns its name. */
  npy(tensors: readonly Tensor[], folder?: string): string;
  cleanup(): void;
} {
  const dir = Deno.makeTempDirSync({ prefix: "clipq-pipeline-" });
  const model = join(dir, "model.onnx");
  Deno.writeFileSync(model, encode(graph));
  return {
    dir,
    model,
    write(config, file = "clipq.json") {
      const p = join(dir, file);
      Deno.writeTextFileSync(p, JSON.stringify(config, null, 2));
      return p;
    },
    npy(tensors, folder = "npy") {
      Deno.mkdirSync(join(dir, folder));
      tensors.forEach((t, k) => Deno.writeFileSync(join(dir, folder, `${k}.npy`), writeNpy(t)));
      return folder;
    },
    cleanup() {
      Deno.removeSync(dir, { recursive: true });
    },
  };
}

/** A 128×96 RGB PNG of a seeded pattern (real pixels for the image reader, nothing to detect). */
export function writePng(path: string, seed: number): void {
  const png = new pngjs.PNG({ width: 128, height: 96 });
  for (let i = 0; i < png.data.length; i++) {
    png.data[i] = i % 4 === 3 ? 255 : (i * 7 + seed * 31) % 256;
  }
  Deno.writeFileSync(path, pngjs.PNG.sync.write(png));
}
