/**
 * A seeded, synthetic text-scene set for judging PP-OCR det fidelity on many words: 640 × 640 RGB
 * scenes whose backgrounds are crops of the real photos (Debian darknet and python3-skimage) or
 * plain/gradient paper, with 8–20 horizontal words of a fixed list in blocks of a few lines, like
 * signs and documents, rendered in Debian's DejaVu fonts by pureimage (pure-JS canvas, TrueType
 * through opentype.js). Nothing is downloaded from anywhere but the npm registry and Debian.
 *
 * It is an evaluation set only: the bench calibrates on the real photos, as before.
 *
 * @module
 */
import { readImage, type RgbImage } from "@clipq/data";
import { mulberry32 } from "@clipq/onnx/random";
import * as PImage from "pureimage";
import { darknetPhotos, dejavuFont, skimagePhoto } from "../assets.ts";

/** Options of {@link textScenes}. */
export interface TextSceneOptions {
  /** Number of scenes. */
  count: number;
  /** Seed of everything random: backgrounds, crops, words, fonts, sizes, places, colours. */
  seed: number;
  /** Side of the square scenes in pixels. */
  size: number;
  /** Fewest and most words per scene. */
  words: readonly [number, number];
  /** Smallest and largest font size in pixels (drawn log-uniformly). */
  fontSizes: readonly [number, number];
}

/** The defaults of {@link textScenes}: 20 scenes of 640 × 640, 8–20 words of 12–64 px. */
export const defaults = {
  count: 20,
  seed: 1,
  size: 640,
  words: [8, 20],
  fontSizes: [12, 64],
} satisfies TextSceneOptions;

/** One rendered word. */
export interface SceneWord {
  /** The word. */
  text: string;
  /** `[x1, y1, x2, y2]` in pixels: advance width × the font's ascent and descent. */
  box: [number, number, number, number];
  /** Font file name (DejaVu). */
  font: string;
  /** Font size in pixels. */
  fontSize: number;
  /** Ink darker (`dark`) or lighter (`light`) than what is under it. */
  ink: "dark" | "light";
}

/** One scene: the image, its words and where its background came from. */
export interface TextScene {
  /** The RGB image, as @clipq/data's readImage returns one. */
  image: RgbImage;
  /** The words drawn, in drawing order. */
  words: SceneWord[];
  /** `photo:<file>`, `paper` or `gradient`, and `dark` for light-on-dark paper. */
  background: string;
}

/**
 * Common words of signs, notices and documents (ASCII, all in DejaVu): the set measures whether
 * int8 finds the same text regions as float, not reading, so the words only need to look like text.
 */
export const WORDS: readonly string[] = [
  "OPEN",
  "EXIT",
  "STOP",
  "SALE",
  "Coffee",
  "Bakery",
  "Station",
  "Platform",
  "Hotel",
  "Parking",
  "North",
  "South",
  "Street",
  "Avenue",
  "Market",
  "Library",
  "Museum",
  "Garden",
  "Bridge",
  "River",
  "Monday",
  "Friday",
  "Sunday",
  "January",
  "October",
  "daily",
  "hours",
  "closed",
  "welcome",
  "please",
  "entrance",
  "private",
  "office",
  "floor",
  "room",
  "ticket",
  "price",
  "total",
  "amount",
  "invoice",
  "receipt",
  "order",
  "number",
  "date",
  "page",
  "chapter",
  "section",
  "table",
  "figure",
  "the",
  "and",
  "of",
  "to",
  "in",
  "for",
  "with",
  "from",
  "this",
  "that",
  "report",
  "summary",
  "results",
  "method",
  "model",
  "image",
  "value",
  "system",
  "quality",
  "service",
  "delivery",
  "fresh",
  "bread",
  "milk",
  "apples",
  "cheese",
  "wine",
  "menu",
  "lunch",
  "dinner",
  "breakfast",
  "$4.99",
  "12.50",
  "2026",
  "No. 17",
  "10:45",
  "50%",
  "A-12",
  "ID 3048",
  "km 42",
  "+44 20",
  "Warning",
  "Danger",
  "Caution",
  "Notice",
  "Info",
  "Help",
  "Call",
  "Emergency",
  "Fire",
  "Police",
];

/** The DejaVu faces drawn from. */
const FONTS = [
  "DejaVuSans.ttf",
  "DejaVuSans-Bold.ttf",
  "DejaVuSerif.ttf",
  "DejaVuSerif-Bold.ttf",
  "DejaVuSansMono.ttf",
] as const;

/** Photos the backgrounds are cropped from (no text in them: page.png and text.png are left out). */
const SKIMAGE_PHOTOS = [
  "astronaut.png",
  "coffee.png",
  "chelsea.png",
  "motorcycle_left.png",
  "rocket.jpg",
];

type Rng = () => number;
type Box = [number, number, number, number];

const fontsLoaded = new Map<string, Promise<void>>();

/** Registers a DejaVu face with pureimage under its file name, once per process. */
function loadFont(file: string): Promise<void> {
  let p = fontsLoaded.get(file);
  if (!p) {
    p = dejavuFont(file).then((path) => PImage.registerFont(path, family(file)).load());
    fontsLoaded.set(file, p);
  }
  return p;
}

/** pureimage takes the family as the rest of the CSS font string: no spaces, no quotes. */
function family(file: string): string {
  return file.replace(/\.ttf$/, "").replace(/[^A-Za-z0-9]/g, "");
}

const photoCache = new Map<string, Promise<RgbImage>>();

function photo(path: string): Promise<RgbImage> {
  let p = photoCache.get(path);
  if (!p) {
    p = readImage(path);
    photoCache.set(path, p);
  }
  return p;
}

function pick<T>(rng: Rng, xs: readonly T[]): T {
  return xs[Math.floor(rng() * xs.length)]!;
}

function between(rng: Rng, lo: number, hi: number): number {
  return lo + (hi - lo) * rng();
}

/** A random square crop of a photo, resampled bilinearly to `size` × `size` RGBA. */
function cropInto(dst: Uint8Array, size: number, src: RgbImage, rng: Rng): void {
  const side = Math.min(src.width, src.height) * between(rng, 0.45, 1);
  const x0 = between(rng, 0, src.width - side), y0 = between(rng, 0, src.height - side);
  const step = side / size;
  for (let y = 0; y < size; y++) {
    const sy = Math.min(src.height - 1.001, y0 + (y + 0.5) * step - 0.5);
    const iy = Math.max(0, Math.floor(sy)), fy = Math.max(0, sy - iy);
    for (let x = 0; x < size; x++) {
      const sx = Math.min(src.width - 1.001, x0 + (x + 0.5) * step - 0.5);
      const ix = Math.max(0, Math.floor(sx)), fx = Math.max(0, sx - ix);
      const a = (iy * src.width + ix) * 3, b = a + 3;
      const c = a + src.width * 3, d = c + 3;
      for (let ch = 0; ch < 3; ch++) {
        const top = src.data[a + ch]! * (1 - fx) + src.data[b + ch]! * fx;
        const bottom = src.data[c + ch]! * (1 - fx) + src.data[d + ch]! * fx;
        dst[(y * size + x) * 4 + ch] = Math.round(top * (1 - fy) + bottom * fy);
      }
      dst[(y * size + x) * 4 + 3] = 255;
    }
  }
}

/** Paper: a base colour, or a linear gradient between two of the same polarity, with grain. */
function paperInto(dst: Uint8Array, size: number, rng: Rng, dark: boolean, gradient: boolean) {
  const base = () => {
    const l = dark ? between(rng, 15, 70) : between(rng, 190, 250);
    // A slight tint, as paper, card and painted boards have.
    return [0, 1, 2].map(() => l + between(rng, -12, 12));
  };
  const from = base(), to = gradient ? base() : from;
  const angle = between(rng, 0, 2 * Math.PI);
  const ux = Math.cos(angle), uy = Math.sin(angle);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      // Position along the gradient direction, 0..1 across the scene.
      const t = ((x - size / 2) * ux + (y - size / 2) * uy) / (size * Math.SQRT2) + 0.5;
      const grain = between(rng, -6, 6);
      for (let ch = 0; ch < 3; ch++) {
        const v = from[ch]! * (1 - t) + to[ch]! * t + grain;
        dst[(y * size + x) * 4 + ch] = Math.max(0, Math.min(255, Math.round(v)));
      }
      dst[(y * size + x) * 4 + 3] = 255;
    }
  }
}

/** Mean and standard deviation of luminance over a box of an RGBA buffer. */
function luminance(data: Uint8Array, size: number, box: Box): { mean: number; std: number } {
  let s = 0, s2 = 0, n = 0;
  const [x1, y1, x2, y2] = box.map((v) => Math.max(0, Math.min(size, Math.round(v))));
  for (let y = y1!; y < y2!; y++) {
    for (let x = x1!; x < x2!; x++) {
      const i = (y * size + x) * 4;
      const l = 0.299 * data[i]! + 0.587 * data[i + 1]! + 0.114 * data[i + 2]!;
      s += l;
      s2 += l * l;
      n++;
    }
  }
  const mean = n ? s / n : 0;
  return { mean, std: n ? Math.sqrt(Math.max(0, s2 / n - mean * mean)) : 0 };
}

function fillBox(data: Uint8Array, size: number, box: Box, rgb: number[]): void {
  const [x1, y1, x2, y2] = box.map((v) => Math.max(0, Math.min(size, Math.round(v))));
  for (let y = y1!; y < y2!; y++) {
    for (let x = x1!; x < x2!; x++) {
      const i = (y * size + x) * 4;
      data[i] = rgb[0]!;
      data[i + 1] = rgb[1]!;
      data[i + 2] = rgb[2]!;
    }
  }
}

function overlaps(a: Box, b: Box): boolean {
  return a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3];
}

function grey(rng: Rng, lo: number, hi: number): number[] {
  const l = between(rng, lo, hi);
  return [0, 1, 2].map(() => Math.max(0, Math.min(255, Math.round(l + between(rng, -10, 10)))));
}

function hex(rgb: number[]): string {
  return "#" + rgb.map((v) => v.toString(16).padStart(2, "0")).join("");
}

/** One scene: background, then blocks of lines placed where nothing else is. */
async function scene(
  rng: Rng,
  o: TextSceneOptions,
  backgrounds: readonly string[],
): Promise<TextScene> {
  const size = o.size;
  const bitmap = PImage.make(size, size);
  const data = bitmap.data as Uint8Array;
  const kind = rng();
  let background: string;
  const isPhoto = kind < 0.5;
  if (isPhoto) {
    const path = pick(rng, backgrounds);
    cropInto(data, size, await photo(path), rng);
    background = `photo:${path.split("/").pop()}`;
  } else {
    const dark = rng() < 0.3, gradient = kind >= 0.75;
    paperInto(data, size, rng, dark, gradient);
    background = (gradient ? "gradient" : "paper") + (dark ? " dark" : "");
  }
  const ctx = bitmap.getContext("2d");
  const target = o.words[0] + Math.floor(rng() * (o.words[1] - o.words[0] + 1));
  const words: SceneWord[] = [];
  const taken: Box[] = [];
  const [fMin, fMax] = o.fontSizes;
  for (let attempt = 0; attempt < 200 && words.length < target; attempt++) {
    const font = pick(rng, FONTS);
    const fontSize = Math.min(
      fMax,
      Math.floor(Math.exp(between(rng, Math.log(fMin), Math.log(fMax + 1)))),
    );
    await loadFont(font);
    ctx.font = `${fontSize}px ${family(font)}`;
    // Small text comes as paragraphs, large as one or two sign lines.
    const maxLines = fontSize < 24 ? 4 : fontSize < 40 ? 2 : 1;
    const lineCount = 1 + Math.floor(rng() * maxLines);
    const left = target - words.length;
    const lines: string[][] = [];
    let count = 0;
    for (let l = 0; l < lineCount && count < left; l++) {
      const n = Math.min(left - count, 1 + Math.floor(rng() * 4));
      const line: string[] = [];
      for (let k = 0; k < n; k++) line.push(pick(rng, WORDS));
      // Drop words until the line fits in the scene with a margin.
      while (line.length > 1 && ctx.measureText(line.join(" ")).width > size - 24) line.pop();
      if (ctx.measureText(line.join(" ")).width > size - 24) continue;
      lines.push(line);
      count += line.length;
    }
    if (lines.length === 0) continue;
    const m = ctx.measureText("Hg");
    const ascent = m.emHeightAscent, descent = -m.emHeightDescent;
    const lineHeight = Math.ceil((ascent + descent) * 1.35);
    const width = Math.max(...lines.map((l) => ctx.measureText(l.join(" ")).width));
    const height = lineHeight * (lines.length - 1) + ascent + descent;
    const pad = Math.max(4, fontSize * 0.35);
    const x = between(rng, pad + 2, size - width - pad - 2);
    const y = between(rng, pad + 2, size - height - pad - 2);
    const block: Box = [x - pad, y - pad, x + width + pad, y + height + pad];
    if (block[0] < 0 || block[1] < 0 || block[2] > size || block[3] > size) continue;
    if (taken.some((t) => overlaps(t, block))) continue;
    // Ink against what lies under the block; a plate (sign, label) where the photo is too busy
    // or too mid-grey for either ink to stand out by 100 levels.
    const under = luminance(data, size, block);
    let ink: "dark" | "light" = under.mean > 128 ? "dark" : "light";
    let colour = ink === "dark" ? grey(rng, 0, 50) : grey(rng, 215, 255);
    const inkL = 0.299 * colour[0]! + 0.587 * colour[1]! + 0.114 * colour[2]!;
    const plate = isPhoto &&
      (under.std > 35 || Math.abs(inkL - under.mean) < 110 || rng() < 0.3);
    if (plate) {
      ink = rng() < 0.7 ? "dark" : "light";
      fillBox(data, size, block, ink === "dark" ? grey(rng, 215, 250) : grey(rng, 15, 50));
      colour = ink === "dark" ? grey(rng, 0, 50) : grey(rng, 215, 255);
    }
    ctx.fillStyle = hex(colour);
    lines.forEach((line, li) => {
      const baseline = y + ascent + li * lineHeight;
      ctx.fillText(line.join(" "), x, baseline);
      let cursor = x;
      for (const [wi, text] of line.entries()) {
        const w = ctx.measureText(text).width;
        words.push({
          text,
          box: [cursor, baseline - ascent, cursor + w, baseline + descent],
          font,
          fontSize,
          ink,
        });
        if (wi < line.length - 1) cursor += ctx.measureText(text + " ").width;
      }
    });
    taken.push(block);
  }
  const rgb = new Uint8Array(size * size * 3);
  for (let i = 0, j = 0; i < rgb.length; i += 3, j += 4) {
    rgb[i] = data[j]!;
    rgb[i + 1] = data[j + 1]!;
    rgb[i + 2] = data[j + 2]!;
  }
  return { image: { width: size, height: size, data: rgb }, words, background };
}

/**
 * Renders the seeded synthetic text scenes: the same options give the same images, byte for byte.
 * The first call fetches Debian's fonts-dejavu-core (and the photo packages) into the asset cache.
 *
 * @param options Count, seed, scene size, words per scene and font sizes (see {@link defaults}).
 * @returns The scenes, each an RGB image with the boxes of its words.
 */
export async function textScenes(options: Partial<TextSceneOptions> = {}): Promise<TextScene[]> {
  const o: TextSceneOptions = { ...defaults, ...options };
  if (!Number.isInteger(o.count) || o.count < 0) {
    throw new RangeError(`textScenes: expected count to be an integer ≥ 0 but found ${o.count}`);
  }
  if (!(o.size >= 64)) {
    throw new RangeError(`textScenes: expected size ≥ 64 pixels but found ${o.size}`);
  }
  if (!(o.words[0] >= 1 && o.words[1] >= o.words[0])) {
    throw new RangeError(
      `textScenes: expected words [min ≥ 1, max ≥ min] but found [${o.words.join(", ")}]`,
    );
  }
  if (!(o.fontSizes[0] >= 6 && o.fontSizes[1] >= o.fontSizes[0])) {
    throw new RangeError(
      `textScenes: expected fontSizes [min ≥ 6, max ≥ min] but found [${o.fontSizes.join(", ")}]`,
    );
  }
  const backgrounds = [
    ...await darknetPhotos(),
    ...await Promise.all(SKIMAGE_PHOTOS.map(skimagePhoto)),
  ];
  const scenes: TextScene[] = [];
  // One generator per scene, seeded from the set's seed and the index: scene i is the same
  // whatever the count.
  for (let i = 0; i < o.count; i++) {
    scenes.push(await scene(mulberry32(o.seed * 7919 + i * 104729), o, backgrounds));
  }
  return scenes;
}
