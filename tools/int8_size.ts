/**
 * `deno run -A tools/int8_size.ts [--models yolov3,nanodet,ppocr-det] [--format qdq|qoperator]
 * [--method minmax|mse|…]`: where an int8 file's bytes go, for the benchmark's real models.
 * Each model is normalized, calibrated (default minmax, on two or three real images) and quantized
 * through the pipeline's steps as the bench does; the line per model gives the int8 file's size as
 * a share of the float file's, then data by kind (int8 weights, int32 biases, per-channel float
 * vectors, the rest), structure (names, nodes, attributes) against the float file's own, the bytes
 * of the nodes the quantizer adds (unnamed) and of scalar initializers, and onnxruntime's optimized
 * op census (what fuses). The bench reports the ratio; this says what it is made of.
 *
 * @module
 */
import { decode, encode, type Graph, loadModel, type Tensor } from "@clipq/onnx";
import { createSession } from "@clipq/runtime";
import { preprocess, readImage } from "@clipq/data";
import { fromDarknet, fromTfjs } from "@clipq/convert";
import {
  calibrateStep,
  createContext,
  createReporter,
  normalizeStep,
  quantizeStep,
} from "@clipq/pipeline";
import type { CalibrateStepOptions } from "@clipq/pipeline/steps/calibrate";
import type { InputConfig } from "@clipq/pipeline/step";
import {
  darknetCfg,
  darknetPhotos,
  humanModel,
  nanodetPreprocessing,
  ppocrDetPreprocessing,
  ppocrModel,
  skimagePhoto,
} from "./assets.ts";

interface Case {
  graph: Graph;
  input: InputConfig & { name: string; size: [number, number] };
  files: string[];
}

function flag(name: string, fallback: string): string {
  const i = Deno.args.findIndex((a) => a === `--${name}` || a.startsWith(`--${name}=`));
  if (i < 0) return fallback;
  const a = Deno.args[i]!;
  return a.includes("=") ? a.slice(a.indexOf("=") + 1) : Deno.args[i + 1] ?? fallback;
}

async function load(key: string): Promise<Case> {
  const photos = await darknetPhotos();
  if (key === "yolov3") {
    const cfg = await Deno.readTextFile(await darknetCfg("yolov3"));
    const graph = fromDarknet(cfg, { inputSize: [416, 416], seed: 1, cfgName: "yolov3.cfg" });
    return {
      graph,
      input: { name: graph.inputs[0]!.name, size: [416, 416] },
      files: photos.slice(0, 2),
    };
  }
  if (key === "nanodet") {
    const graph = await fromTfjs(await humanModel("nanodet"));
    return {
      graph,
      input: { name: graph.inputs[0]!.name, ...nanodetPreprocessing([416, 416]) },
      files: [...photos.slice(0, 2), await skimagePhoto("astronaut.png")],
    };
  }
  if (key === "ppocr-det") {
    const graph = await loadModel(await ppocrModel("det"));
    const { size: _, ...spec } = ppocrDetPreprocessing([640, 640]);
    return {
      graph,
      input: { name: graph.inputs[0]!.name, size: [640, 640], ...spec },
      files: [await skimagePhoto("page.png"), await skimagePhoto("text.png"), photos[0]!],
    };
  }
  throw new Error(`--models: expected yolov3, nanodet or ppocr-det but found "${key}"`);
}

/** Raw bytes of the initializers the predicate picks. */
function dataBytes(g: Graph, pick: (t: Tensor) => boolean): number {
  let n = 0;
  for (const t of g.initializers.values()) {
    if (pick(t) && ArrayBuffer.isView(t.data)) n += t.data.byteLength;
  }
  return n;
}

async function optimizedOps(g: Graph, c: Case): Promise<Record<string, number>> {
  const dir = await Deno.makeTempDir({ prefix: "clipq_int8_size_" });
  try {
    const path = `${dir}/opt.onnx`;
    const s = await createSession(g, { optimizationLevel: "all", optimizedModelPath: path });
    // @clipq/data's defaults (NCHW RGB in [0, 1]) but stretched, under the case's own input spec.
    const spec = { resize: "stretch", ...c.input } as const;
    const x = preprocess(await readImage(c.files[0]!), spec).tensor;
    await s.run({ [c.input.name]: x });
    await s.release();
    const ops: Record<string, number> = {};
    for (const n of decode(await Deno.readFile(path)).nodes) {
      const k = n.domain ? `${n.domain}.${n.op}` : n.op;
      ops[k] = (ops[k] ?? 0) + 1;
    }
    return ops;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const quiet = createReporter({ quiet: true });
const format = flag("format", "qdq") as "qdq" | "qoperator";
const method = flag("method", "minmax") as NonNullable<CalibrateStepOptions["method"]>;
for (const key of flag("models", "yolov3,nanodet,ppocr-det").split(",")) {
  const c = await load(key);
  const context = (g: Graph) =>
    createContext(g, { input: c.input, data: { calibration: { images: c.files } } }, quiet);
  const float = await normalizeStep({ opset: 13 }).run(c.graph, context(c.graph));
  const ctx = context(float);
  const calibrated = await calibrateStep({ method }).run(float, ctx);
  const q = await quantizeStep({ format }).run(calibrated, ctx);
  const fb = encode(float).length, qb = encode(q).length;
  const pct = (b: number) => `${b} B = ${(100 * b / fb).toFixed(3)} %`;
  const int8 = dataBytes(q, (t) => t.dtype === "int8" && t.dims.length > 1);
  const int32 = dataBytes(q, (t) => t.dtype === "int32");
  const vectors = dataBytes(
    q,
    (t) => t.dtype === "float32" && t.dims.length === 1 && t.dims[0]! > 1,
  );
  const all = dataBytes(q, () => true);
  const floatData = dataBytes(float, () => true);
  const bare = encode({ ...q, nodes: [], initializers: new Map() }).length;
  const added = encode({ ...q, initializers: new Map(), nodes: q.nodes.filter((n) => !n.name) })
    .length - bare;
  const scalars = encode({
    ...q,
    nodes: [],
    initializers: new Map([...q.initializers].filter(([, t]) => t.dims.every((d) => d === 1))),
  }).length - bare;
  console.log(
    `${key} ${format} (${method}): int8 ${qb} B of float ${fb} B = ${(100 * qb / fb).toFixed(3)} %`,
  );
  console.log(
    `  data: int8 weights ${pct(int8)}, int32 biases ${pct(int32)}, per-channel float vectors ${
      pct(vectors)
    }, other ${pct(all - int8 - int32 - vectors)}`,
  );
  console.log(
    `  structure ${pct(qb - all)} (the float file's own: ${pct(fb - floatData)}); the quantizer's ${
      q.nodes.filter((n) => !n.name).length
    } unnamed nodes ${pct(added)}, scalar initializers ${pct(scalars)}`,
  );
  console.log(`  onnxruntime optimized: ${JSON.stringify(await optimizedOps(q, c))}`);
}
