/**
 * Benchmark of @clipq/onnx file IO: loadModel + saveModel of a YOLOv3-sized builder model (~62 M
 * parameters, 75 convs) against reading and writing the same bytes raw, in the same run. The goal
 * is a ratio ≤ 5×: decoding and encoding should cost little beyond the disk.
 *
 * @module
 */
import { join } from "node:path";
import { loadModel, modelBytes, saveModel } from "../../packages/onnx/io.ts";
import { decode } from "../../packages/onnx/proto.ts";
import { yoloLikeModel } from "../../packages/onnx/builder.ts";
import type { BenchOptions, BenchResult } from "./types.ts";

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

async function time(f: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await f();
  return performance.now() - t;
}

/**
 * Times load + save against raw read + write of the same bytes.
 *
 * @param options `quick` uses a small model and fewer repetitions.
 * @returns One result with the times (ms, medians) and the ratio.
 */
export async function run(options: BenchOptions): Promise<BenchResult[]> {
  const graph = options.quick
    ? yoloLikeModel({ width: 0.25, depth: 0.5, inputSize: 128, seed: 1 })
    : yoloLikeModel({ width: 1, depth: 1, inputSize: 416, seed: 1 });
  let parameters = 0;
  for (const t of graph.initializers.values()) parameters += t.data.length;
  const reps = 3;
  const dir = await Deno.makeTempDir({ prefix: "clipq_bench_io_" });
  try {
    const model = join(dir, "model.onnx");
    const raw = join(dir, "raw.bin");
    await saveModel(model, graph); // warm-up: page cache, JIT
    const bytes = await Deno.readFile(model);
    const t = {
      load: [] as number[],
      save: [] as number[],
      read: [] as number[],
      write: [] as number[],
      encode: [] as number[],
      decode: [] as number[],
    };
    for (let i = 0; i < reps; i++) {
      t.write.push(await time(() => Deno.writeFile(raw, bytes)));
      t.save.push(await time(() => saveModel(model, graph)));
      t.read.push(await time(() => Deno.readFile(raw)));
      t.load.push(await time(() => loadModel(model)));
      // In memory too: the disk on shared machines is noisy, encode/decode alone is what we own.
      t.encode.push(await time(() => Promise.resolve(modelBytes(graph))));
      t.decode.push(await time(() => Promise.resolve(decode(bytes))));
    }
    const [load, save, read, write] = [
      median(t.load),
      median(t.save),
      median(t.read),
      median(t.write),
    ];
    const ratio = (load + save) / (read + write);
    return [{
      name: `onnx io: load + save of a ${
        (parameters / 1e6).toFixed(1)
      } M-parameter model vs raw IO`,
      metrics: {
        parameters,
        bytes: bytes.byteLength,
        loadMs: Math.round(load),
        saveMs: Math.round(save),
        rawReadMs: Math.round(read),
        rawWriteMs: Math.round(write),
        encodeMs: Math.round(median(t.encode)),
        decodeMs: Math.round(median(t.decode)),
        ratio: Number(ratio.toFixed(2)),
        goal: "≤ 5",
      },
      notes:
        `median of ${reps} runs (write, save, read, load interleaved), files in ${Deno.build.os} temp folder (page cache warm); ` +
        (ratio <= 5 ? "goal met" : "goal missed: decode/encode dominate the raw IO"),
    }];
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) {
  const quick = Deno.args.includes("--quick");
  console.log(JSON.stringify(await run({ quick }), null, 2));
}
