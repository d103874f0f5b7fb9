import assert from "node:assert/strict";
import { ModelBuilder } from "@clipq/onnx/builder";
import { decode } from "@clipq/onnx/proto";
import { quantize } from "../quantize.ts";
import { countOps, minmaxRanges, randomFeeds, runGraph, sqnr } from "../testdata/ort.ts";

Deno.test("quantize() leaves hard-swish's /6 no QLinearMul in onnxruntime and keeps its outputs", async () => {
  // conv → x·clip(x + 3, 0, 6) / 6 → conv, as PP-LCNet writes hard-swish.
  const b = new ModelBuilder({ seed: 11 });
  const x = b.conv(b.input("x", [1, 4, 8, 8]), { outChannels: 8, kernel: 3, pad: 1 });
  const hs = b.op("Div", [b.mul(x, b.clip(b.add(x, 3), 0, 6)), b.initializer(6)], {
    shape: [1, 8, 8, 8],
  });
  b.output(b.conv(hs, { outChannels: 4, kernel: 1 }), "y");
  const g = b.build();
  const feeds = [randomFeeds(g, 1, -4, 4), randomFeeds(g, 2, -4, 4)];
  const ranges = await minmaxRanges(g, feeds);
  const { graph } = quantize(g, { ranges });
  const dir = await Deno.makeTempDir();
  try {
    await runGraph(graph, feeds[0]!, { optimizedPath: `${dir}/o.onnx` });
    const ops = countOps(decode(await Deno.readFile(`${dir}/o.onnx`)));
    assert.equal(ops["QLinearMul"], 1, JSON.stringify(ops)); // x·clip only
    assert.equal(ops["QLinearAdd"], 1, JSON.stringify(ops));
    assert.equal(ops["QLinearConv"], 1, JSON.stringify(ops)); // the last conv is the raw head
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  const ref = (await runGraph(g, feeds[1]!)).y!;
  const out = (await runGraph(graph, feeds[1]!)).y!;
  assert.ok(sqnr(ref, out) > 25, `SQNR ${sqnr(ref, out)}`);
});
