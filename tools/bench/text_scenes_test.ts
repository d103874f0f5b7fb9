import assert from "node:assert/strict";
import { loadModel } from "@clipq/onnx/io";
import { preprocess } from "@clipq/data";
import { createSession } from "@clipq/runtime";
import { ppocrDetPreprocessing, ppocrModel } from "../assets.ts";
import { defaults, type TextScene, textScenes } from "./text_scenes.ts";

function luma(s: TextScene, x: number, y: number): number {
  const i = (y * s.image.width + x) * 3;
  const d = s.image.data;
  return 0.299 * d[i]! + 0.587 * d[i + 1]! + 0.114 * d[i + 2]!;
}

Deno.test("textScenes() renders the same scenes for the same seed, and scene i whatever the count", async () => {
  const a = await textScenes({ count: 2, seed: 5 });
  const b = await textScenes({ count: 2, seed: 5 });
  const one = await textScenes({ count: 1, seed: 5 });
  const other = await textScenes({ count: 1, seed: 6 });
  assert.deepEqual(a.map((s) => s.words), b.map((s) => s.words));
  assert.deepEqual(a[0]!.image.data, b[0]!.image.data);
  assert.deepEqual(a[1]!.image.data, b[1]!.image.data);
  assert.deepEqual(one[0]!.image.data, a[0]!.image.data);
  assert.notDeepEqual(other[0]!.image.data, a[0]!.image.data);
  assert.notDeepEqual(a[1]!.words, a[0]!.words);
});

Deno.test("textScenes() places 8–20 readable words per scene inside the image, none overlapping", async () => {
  const scenes = await textScenes({ count: 6, seed: 1 });
  const kinds = new Set(scenes.map((s) => s.background.split(/[: ]/)[0]));
  assert.ok(kinds.has("photo") && (kinds.has("paper") || kinds.has("gradient")), [...kinds].join());
  for (const s of scenes) {
    assert.equal(s.image.width, 640);
    assert.equal(s.image.height, 640);
    assert.equal(s.image.data.length, 640 * 640 * 3);
    assert.ok(s.words.length >= 8 && s.words.length <= 20, `${s.words.length} words`);
    for (const [i, w] of s.words.entries()) {
      const [x1, y1, x2, y2] = w.box;
      assert.ok(x1 >= 0 && y1 >= 0 && x2 <= 640 && y2 <= 640, `${w.text} at ${w.box}`);
      assert.ok(x2 - x1 > 0.5 * w.fontSize && y2 - y1 > 0.8 * w.fontSize, `${w.text} at ${w.box}`);
      assert.ok(w.fontSize >= 12 && w.fontSize <= 64, `${w.fontSize} px`);
      for (const v of s.words.slice(i + 1)) {
        const apart = v.box[0] >= x2 || x1 >= v.box[2] || v.box[1] >= y2 || y1 >= v.box[3];
        assert.ok(apart, `${w.text} ${w.box} overlaps ${v.text} ${v.box}`);
      }
      // The ink stands out: the box holds pixels ≥ 100 levels apart, the darker ones inside the
      // glyphs for dark ink.
      let lo = 255, hi = 0;
      for (let y = Math.ceil(y1); y < Math.floor(y2); y++) {
        for (let x = Math.ceil(x1); x < Math.floor(x2); x++) {
          const l = luma(s, x, y);
          lo = Math.min(lo, l);
          hi = Math.max(hi, l);
        }
      }
      assert.ok(hi - lo >= 100, `${w.text} (${w.fontSize} px, ${s.background}): ${lo}–${hi}`);
    }
  }
});

Deno.test("textScenes() words are text to the float PP-OCRv4 det model", async () => {
  const [s] = await textScenes({ count: 1, seed: 3 });
  const graph = await loadModel(await ppocrModel("det"));
  const session = await createSession(graph, { optimizationLevel: "all" });
  try {
    const { tensor } = preprocess(s!.image, ppocrDetPreprocessing([640, 640]));
    const out = await session.run({ [graph.inputs[0]!.name]: tensor });
    const map = out[graph.outputs[0]!.name]!;
    assert.deepEqual(map.dims, [1, 1, 640, 640]);
    const p = map.data as Float32Array;
    // A word counts as found when a quarter of its box is text (probability > 0.3): DB shrinks
    // its regions, so a whole box is never covered.
    const found = s!.words.filter((w) => {
      let hit = 0, n = 0;
      for (let y = Math.ceil(w.box[1]); y < Math.floor(w.box[3]); y++) {
        for (let x = Math.ceil(w.box[0]); x < Math.floor(w.box[2]); x++, n++) {
          if (p[y * 640 + x]! > 0.3) hit++;
        }
      }
      return hit >= 0.25 * n;
    });
    assert.ok(found.length >= 0.8 * s!.words.length, `${found.length} of ${s!.words.length}`);
    // And the background between the words is not text.
    let text = 0;
    for (const v of p) if (v > 0.3) text++;
    const wordArea = s!.words.reduce(
      (a, w) => a + (w.box[2] - w.box[0]) * (w.box[3] - w.box[1]),
      0,
    );
    assert.ok(text < 1.5 * wordArea, `${text} text pixels, words cover ${wordArea}`);
  } finally {
    await session.release();
  }
});

Deno.test("textScenes() refuses options it cannot honour, naming them", async () => {
  await assert.rejects(() => textScenes({ count: -1 }), /count to be an integer ≥ 0 but found -1/);
  await assert.rejects(
    () => textScenes({ words: [5, 2] }),
    /words \[min ≥ 1, max ≥ min\].*\[5, 2\]/,
  );
  await assert.rejects(() => textScenes({ fontSizes: [2, 10] }), /fontSizes.*\[2, 10\]/);
  await assert.rejects(() => textScenes({ size: 10 }), /size ≥ 64 pixels but found 10/);
  assert.equal(defaults.count, 20);
});
