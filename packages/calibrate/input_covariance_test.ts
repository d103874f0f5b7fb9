import assert from "node:assert/strict";
import { emptyGraph, type Graph, node } from "@clipq/onnx/graph";
import { ModelError } from "@clipq/onnx/errors";
import { ConfigError } from "@clipq/onnx/errors";
import { float32, type Tensor } from "@clipq/onnx/tensor";
import { mulberry32 } from "@clipq/onnx/random";
import { measureInputCovariances } from "./input_covariance.ts";

function randomTensor(dims: number[], seed: number): Tensor {
  const random = mulberry32(seed);
  const n = dims.reduce((a, b) => a * b, 1);
  return float32(dims, Array.from({ length: n }, () => random() * 2 - 1));
}

/** A graph whose layer reads the output of a Relu, so the layer's input is an inner tensor. */
function convGraph(
  x: number[],
  w: number[],
  attributes: Record<string, { type: "int"; value: number } | { type: "ints"; value: number[] }>,
): Graph {
  return emptyGraph({
    nodes: [
      node({ name: "relu", op: "Relu", inputs: ["x"], outputs: ["h"] }),
      node({ name: "conv", op: "Conv", inputs: ["h", "w"], outputs: ["y"], attributes }),
    ],
    inputs: [{ name: "x", dtype: "float32", shape: x }],
    outputs: [{ name: "y", dtype: "float32" }],
    initializers: new Map([["w", randomTensor(w, 1)]]),
  });
}

/**
 * E[x·xᵀ] of every patch of a 2-D conv input, the plain way: per batch item, group and output
 * position, the patch (channel, ky, kx) with zeros outside.
 */
function bruteForce(
  x: Tensor,
  o: {
    k: [number, number];
    stride: [number, number];
    pads: number[];
    dil: [number, number];
    group: number;
  },
): Float64Array[] {
  const [n, c, h, w] = x.dims as number[];
  const cg = c! / o.group, d = cg * o.k[0] * o.k[1];
  const oh =
    Math.floor((h! + o.pads[0]! + o.pads[2]! - o.dil[0] * (o.k[0] - 1) - 1) / o.stride[0]) + 1;
  const ow =
    Math.floor((w! + o.pads[1]! + o.pads[3]! - o.dil[1] * (o.k[1] - 1) - 1) / o.stride[1]) + 1;
  const data = x.data as Float32Array;
  const out = Array.from({ length: o.group }, () => new Float64Array(d * d));
  const count = n! * oh * ow;
  for (let b = 0; b < n!; b++) {
    for (let g = 0; g < o.group; g++) {
      for (let oy = 0; oy < oh; oy++) {
        for (let ox = 0; ox < ow; ox++) {
          const p: number[] = [];
          for (let ci = 0; ci < cg; ci++) {
            for (let ky = 0; ky < o.k[0]; ky++) {
              for (let kx = 0; kx < o.k[1]; kx++) {
                const iy = oy * o.stride[0] - o.pads[0]! + ky * o.dil[0];
                const ix = ox * o.stride[1] - o.pads[1]! + kx * o.dil[1];
                const inside = iy >= 0 && iy < h! && ix >= 0 && ix < w!;
                p.push(
                  inside ? Math.max(0, data[((b * c! + g * cg + ci) * h! + iy) * w! + ix]!) : 0,
                );
              }
            }
          }
          for (let i = 0; i < d; i++) {
            for (let j = 0; j < d; j++) out[g]![i * d + j]! += p[i]! * p[j]! / count;
          }
        }
      }
    }
  }
  return out;
}

function assertClose(a: ArrayLike<number>, b: ArrayLike<number>, what: string) {
  assert.equal(a.length, b.length, what);
  for (let i = 0; i < a.length; i++) {
    assert.ok(
      Math.abs(a[i]! - b[i]!) <= 1e-5 * (1 + Math.abs(b[i]!)),
      `${what}[${i}]: ${a[i]} vs ${b[i]}`,
    );
  }
}

Deno.test("measureInputCovariances() equals the plain patch sum for convs with padding, stride, dilation, groups and a batch", async () => {
  const cases = [
    {
      x: [2, 3, 7, 6],
      w: [4, 3, 3, 3],
      k: [3, 3],
      stride: [1, 1],
      pads: [1, 1, 1, 1],
      dil: [1, 1],
      group: 1,
    },
    {
      x: [1, 4, 9, 8],
      w: [4, 2, 3, 2],
      k: [3, 2],
      stride: [2, 1],
      pads: [1, 0, 2, 1],
      dil: [1, 2],
      group: 2,
    },
    {
      x: [1, 6, 8, 8],
      w: [6, 1, 3, 3],
      k: [3, 3],
      stride: [2, 2],
      pads: [1, 1, 1, 1],
      dil: [1, 1],
      group: 6,
    },
  ] as const;
  for (const c of cases) {
    const g = convGraph([...c.x], [...c.w], {
      strides: { type: "ints", value: [...c.stride] },
      pads: { type: "ints", value: [...c.pads] },
      dilations: { type: "ints", value: [...c.dil] },
      group: { type: "int", value: c.group },
    });
    const x = randomTensor([...c.x], 2);
    // Two batches: the moment is over both.
    const x2 = randomTensor([...c.x], 3);
    const r = await measureInputCovariances(g, [{ x }, { x: x2 }], {
      layers: ["conv"],
      positions: 1000,
    });
    const got = r.covariances.get("conv")!;
    const o = {
      k: [...c.k] as [number, number],
      stride: [...c.stride] as [number, number],
      pads: [...c.pads],
      dil: [...c.dil] as [number, number],
      group: c.group,
    };
    const [a, b] = [bruteForce(x, o), bruteForce(x2, o)];
    assert.equal(got.groups, c.group);
    assert.deepEqual(got.blocks, [0, got.dim]);
    for (let gi = 0; gi < c.group; gi++) {
      assertClose(
        got.matrices[gi]!,
        a[gi]!.map((v, i) => (v + b[gi]![i]!) / 2),
        `${JSON.stringify(c.w)} group ${gi}`,
      );
    }
  }
});

Deno.test("measureInputCovariances() cuts long vectors into blocks of whole channels, each the matching part of the full moment", async () => {
  const g = convGraph([1, 5, 6, 6], [2, 5, 3, 3], { pads: { type: "ints", value: [1, 1, 1, 1] } });
  const x = randomTensor([1, 5, 6, 6], 4);
  const full = (await measureInputCovariances(g, [{ x }], { layers: ["conv"] })).covariances.get(
    "conv",
  )!;
  const cut = (await measureInputCovariances(g, [{ x }], { layers: ["conv"], maxBlock: 20 }))
    .covariances.get("conv")!;
  assert.deepEqual(cut.blocks, [0, 18, 36, 45]); // two channels (18 values) a block, then one
  for (let b = 0; b < 3; b++) {
    const [from, to] = [cut.blocks[b]!, cut.blocks[b + 1]!];
    const n = to - from;
    const part = Array.from(
      { length: n * n },
      (_, i) => full.matrices[0]![(from + Math.floor(i / n)) * 45 + from + (i % n)]!,
    );
    assertClose(cut.matrices[b]!, part, `block ${b}`);
  }
});

Deno.test("measureInputCovariances() reads MatMul rows over leading dims, Gemm's A with transA, and a 1-D conv", async () => {
  const x3 = randomTensor([2, 3, 4], 5);
  const mm = emptyGraph({
    nodes: [node({ name: "mm", op: "MatMul", inputs: ["x", "w"], outputs: ["y"] })],
    inputs: [{ name: "x", dtype: "float32", shape: [2, 3, 4] }],
    outputs: [{ name: "y", dtype: "float32" }],
    initializers: new Map([["w", randomTensor([4, 2], 6)]]),
  });
  const rows = Array.from(
    { length: 6 },
    (_, r) => [...(x3.data as Float32Array).slice(r * 4, r * 4 + 4)],
  );
  const expected = Array.from(
    { length: 16 },
    (_, i) => rows.reduce((s, row) => s + row[Math.floor(i / 4)]! * row[i % 4]!, 0) / 6,
  );
  const got = (await measureInputCovariances(mm, [{ x: x3 }], { layers: ["mm"] })).covariances.get(
    "mm",
  )!;
  assertClose(got.matrices[0]!, expected, "MatMul");
  assert.equal(got.samples, 6);

  const a = randomTensor([4, 6], 7); // transA: [K, M], vectors are columns
  const gemm = emptyGraph({
    nodes: [
      node({
        name: "fc",
        op: "Gemm",
        inputs: ["a", "w"],
        outputs: ["y"],
        attributes: { transA: { type: "int", value: 1 }, transB: { type: "int", value: 1 } },
      }),
    ],
    inputs: [{ name: "a", dtype: "float32", shape: [4, 6] }],
    outputs: [{ name: "y", dtype: "float32" }],
    initializers: new Map([["w", randomTensor([3, 4], 8)]]),
  });
  const ad = a.data as Float32Array;
  const col = (m: number) => Array.from({ length: 4 }, (_, k) => ad[k * 6 + m]!);
  const eGemm = Array.from({ length: 16 }, (_, i) => {
    let s = 0;
    for (let m = 0; m < 6; m++) s += col(m)[Math.floor(i / 4)]! * col(m)[i % 4]!;
    return s / 6;
  });
  const gotGemm = (await measureInputCovariances(gemm, [{ a }], { layers: ["fc"] })).covariances
    .get("fc")!;
  assertClose(gotGemm.matrices[0]!, eGemm, "Gemm transA");

  // 1-D conv, pads [1, 1]: the same as a 2-D conv over a height of 1 with the kernel along width.
  const x1 = randomTensor([1, 2, 7], 9);
  const conv1 = emptyGraph({
    nodes: [
      node({
        name: "c1",
        op: "Conv",
        inputs: ["x", "w"],
        outputs: ["y"],
        attributes: { pads: { type: "ints", value: [1, 1] } },
      }),
    ],
    inputs: [{ name: "x", dtype: "float32", shape: [1, 2, 7] }],
    outputs: [{ name: "y", dtype: "float32" }],
    initializers: new Map([["w", randomTensor([2, 2, 3], 10)]]),
  });
  const got1 = (await measureInputCovariances(conv1, [{ x: x1 }], { layers: ["c1"] })).covariances
    .get("c1")!;
  const asRow = float32([1, 2, 1, 7], x1.data as Float32Array);
  const pos = (t: Tensor) =>
    float32(t.dims as number[], Float32Array.from(t.data as Float32Array, Math.abs));
  // bruteForce applies a Relu to its input; feed it |x| and compare with the 1-D conv on |x|.
  const ref = bruteForce(pos(asRow), {
    k: [1, 3],
    stride: [1, 1],
    pads: [0, 1, 0, 1],
    dil: [1, 1],
    group: 1,
  });
  const got1Abs = (await measureInputCovariances(conv1, [{ x: pos(x1) }], { layers: ["c1"] }))
    .covariances.get("c1")!;
  assertClose(got1Abs.matrices[0]!, ref[0]!, "1-D conv");
  assert.equal(got1.dim, 6);
});

Deno.test("measureInputCovariances() samples positions with its seed, skips what it cannot read and names unknown layers", async () => {
  const g = convGraph([1, 2, 16, 16], [3, 2, 3, 3], {
    pads: { type: "ints", value: [1, 1, 1, 1] },
  });
  const feeds = [{ x: randomTensor([1, 2, 16, 16], 11) }, { x: randomTensor([1, 2, 16, 16], 12) }];
  const run = (seed: number) =>
    measureInputCovariances(g, feeds, { layers: ["conv"], positions: 50, seed }).then((r) =>
      r.covariances.get("conv")!
    );
  const [a, b, c] = [await run(1), await run(1), await run(2)];
  assert.equal(a.samples, 100); // 50 of 256 positions, two images
  assert.deepEqual([...a.matrices[0]!], [...b.matrices[0]!]);
  assert.notDeepEqual([...a.matrices[0]!], [...c.matrices[0]!]);

  const withTranspose = emptyGraph({
    nodes: [node({ name: "up", op: "ConvTranspose", inputs: ["x", "w"], outputs: ["y"] })],
    inputs: [{ name: "x", dtype: "float32", shape: [1, 2, 4, 4] }],
    outputs: [{ name: "y", dtype: "float32" }],
    initializers: new Map([["w", randomTensor([2, 2, 2, 2], 13)]]),
  });
  const r = await measureInputCovariances(withTranspose, [{ x: randomTensor([1, 2, 4, 4], 14) }], {
    layers: ["up"],
  });
  assert.equal(r.covariances.size, 0);
  assert.match(r.skipped[0]!.reason, /ConvTranspose/);
  await assert.rejects(
    () => measureInputCovariances(g, feeds, { layers: ["nope"] }),
    (e) => e instanceof ModelError && /"nope"/.test(e.message),
  );
  await assert.rejects(
    () => measureInputCovariances(g, feeds, { layers: ["conv"], positions: 0 }),
    ConfigError,
  );
});
