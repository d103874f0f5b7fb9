import assert from "node:assert/strict";
import { float32, type Graph, type Tensor } from "@clipq/onnx";
import { ModelBuilder } from "@clipq/onnx/builder";
import { createSession } from "@clipq/runtime";
import { collectStatistics } from "./collect.ts";
import { measureBiasShifts } from "./bias_shifts.ts";
import { Histogram } from "./histogram.ts";
import { clipBounds } from "./clip_bounds.ts";

function model(): { graph: Graph; tensors: string[]; batches: Record<string, Tensor>[] } {
  const b = new ModelBuilder({ seed: 7 });
  const x = b.input("x", [2, 3, 8, 8]);
  const c1 = b.conv(x, { outChannels: 4, kernel: 3 });
  const r = b.clip(c1, 0, 6);
  const c2 = b.conv(r, { outChannels: 4, kernel: 1 });
  const h = b.hardSigmoid(c2);
  const m = b.mul(c2, h);
  b.output(b.conv(m, { outChannels: 2, kernel: 1 }), "y");
  const batches = [0, 1, 2].map(() => ({
    x: float32([2, 3, 8, 8], b.random.normals(2 * 3 * 64, 1.5)),
  }));
  return { graph: b.build(), tensors: ["x", c1, r, c2, h, m, "y"], batches };
}

Deno.test("collectStatistics() equals histograms of the taps computed directly", async () => {
  const { graph, tensors, batches } = model();
  const progress: number[] = [];
  const stats = await collectStatistics(graph, batches, {
    tensors,
    onProgress: (p) => progress.push(p.items),
  });
  assert.deepEqual(progress, [2, 4, 6]);
  const direct = new Map(tensors.map((t) => [t, new Histogram()]));
  const s = await createSession(graph, { taps: tensors.filter((t) => t !== "x") });
  for (const feeds of batches) {
    const out: Record<string, Tensor> = { ...await s.run(feeds), x: feeds.x! };
    for (const t of tensors) direct.get(t)!.add(out[t]!.data as Float32Array);
  }
  await s.release();
  for (const t of tensors) {
    assert.deepEqual(stats.get(t)!.toJSON(), direct.get(t)!.toJSON(), t);
    assert.equal(stats.get(t)!.count, batches.length * (t === "x" ? 384 : t === "y" ? 256 : 512));
  }
  // Clip and HardSigmoid outputs stay within their clip bounds, which clipBounds() states.
  const { ranges } = clipBounds(graph);
  for (const t of [tensors[2]!, tensors[4]!]) {
    const r = ranges.get(t)!;
    assert.ok(stats.get(t)!.min >= r.min && stats.get(t)!.max <= r.max, t);
  }
});

Deno.test("collectStatistics() accepts an async iterable and continues given statistics", async () => {
  const { graph, tensors, batches } = model();
  async function* gen() {
    for (const b of batches.slice(0, 2)) yield b;
  }
  const first = await collectStatistics(graph, gen(), { tensors });
  const both = await collectStatistics(graph, batches.slice(2), { tensors, into: first });
  const once = await collectStatistics(graph, batches, { tensors });
  for (const t of tensors) {
    assert.deepEqual(both.get(t)!.toJSON().counts, once.get(t)!.toJSON().counts);
  }
});

Deno.test("collectStatistics() names a tensor the model does not have", async () => {
  const { graph, batches } = model();
  await assert.rejects(
    collectStatistics(graph, batches, { tensors: ["nope"] }),
    /nope/,
  );
});

Deno.test("measureBiasShifts() recovers a known per-channel output shift", async () => {
  const b = new ModelBuilder({ seed: 3 });
  const x = b.input("x", [1, 3, 6, 6]);
  const c = b.conv(x, { outChannels: 3, kernel: 3, name: "conv" });
  b.output(b.relu(c), "y");
  const graph = b.build();
  const conv = graph.nodes.find((n) => n.op === "Conv")!;
  const biasName = conv.inputs[2]!;
  const bias = graph.initializers.get(biasName)!.data as Float32Array;
  const delta = [0.25, -0.5, 0.125];
  const shifted = Float32Array.from(bias, (v, i) => v + delta[i]!);
  const quant: Graph = {
    ...graph,
    initializers: new Map([...graph.initializers, [biasName, float32([3], shifted)]]),
  };
  const batches = [1, 2].map(() => ({ x: float32([1, 3, 6, 6], b.random.normals(108)) }));
  const shifts = await measureBiasShifts(graph, quant, batches, {
    layers: [{ node: conv.name, output: conv.outputs[0]!, channelAxis: 1 }],
  });
  const got = [...shifts.get(conv.name)!];
  got.forEach((v, i) => assert.ok(Math.abs(v - delta[i]!) < 1e-5, `${v} vs ${delta[i]}`));
  await assert.rejects(
    measureBiasShifts(graph, quant, batches, {
      layers: [{ node: conv.name, output: conv.outputs[0]!, channelAxis: 4 }],
    }),
    /channelAxis/,
  );
});

Deno.test("measureBiasShifts() charges each layer only its own shift by default", async () => {
  const b = new ModelBuilder({ seed: 4 });
  const x = b.input("x", [1, 2, 5, 5]);
  const c1 = b.conv(x, { outChannels: 2, kernel: 1, name: "c1" });
  b.output(b.conv(c1, { outChannels: 2, kernel: 1, name: "c2" }), "y");
  const graph = b.build();
  const [n1, n2] = graph.nodes;
  const bias = n1!.inputs[2]!;
  const quant: Graph = {
    ...graph,
    initializers: new Map([
      ...graph.initializers,
      [bias, float32([2], (graph.initializers.get(bias)!.data as Float32Array).map((v) => v + 1))],
    ]),
  };
  const batches = [{ x: float32([1, 2, 5, 5], b.random.normals(50)) }];
  const layers = [n1!, n2!].map((n) => ({ node: n.name, output: n.outputs[0]!, channelAxis: 1 }));
  const own = await measureBiasShifts(graph, quant, batches, { layers });
  assert.ok([...own.get(n1!.name)!].every((v) => Math.abs(v - 1) < 1e-5));
  assert.ok([...own.get(n2!.name)!].every((v) => Math.abs(v) < 1e-5));
  const total = await measureBiasShifts(graph, quant, batches, { layers, reference: "model" });
  assert.ok([...total.get(n2!.name)!].some((v) => Math.abs(v) > 1e-3));
});

Deno.test("collectStatistics() reports a bad batch while the next one is in flight", async () => {
  const { graph, tensors, batches } = model();
  const bad = [batches[0]!, { y: batches[1]!.x! }, batches[2]!];
  await assert.rejects(collectStatistics(graph, bad, { tensors }), /feed for input "x"/);
  async function* failing() {
    yield batches[0]!;
    throw new Error("unreadable image calib/3.jpg");
  }
  await assert.rejects(collectStatistics(graph, failing(), { tensors }), /calib\/3\.jpg/);
});
