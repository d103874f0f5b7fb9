import assert from "node:assert/strict";
import { activationParams, dequantizeLinear, quantizeLinear, roundHalfEven } from "./linear.ts";

Deno.test("quantizeLinear() matches the ONNX golden case, saturation and half-to-even included", () => {
  const q = quantizeLinear([0, 2, 3, 1000, -254, -1000], {
    scale: 2,
    zeroPoint: 128,
    dtype: "uint8",
  });
  assert.ok(q instanceof Uint8Array);
  assert.deepEqual([...q], [128, 129, 130, 255, 1, 0]);
});

Deno.test("quantizeLinear() rounds ties to even and saturates int8", () => {
  const q = quantizeLinear([1, 3, 5, -1, -3, 1000, -1000], {
    scale: 2,
    zeroPoint: 0,
    dtype: "int8",
  });
  assert.deepEqual([...q], [0, 2, 2, 0, -2, 127, -128]);
});

Deno.test("roundHalfEven() agrees with Math.round away from ties", () => {
  for (const x of [0.2, 0.7, -0.2, -0.7, 3.49, -3.51, 10]) {
    assert.equal(roundHalfEven(x) + 0, Math.round(x) + 0);
  }
  assert.equal(roundHalfEven(-2.5), -2);
  assert.equal(roundHalfEven(3.5), 4);
});

Deno.test("roundHalfEven() gives what floor-and-compare rounding gives, ties, signs, zeros and all", () => {
  const halfEven = (x: number) => {
    const f = Math.floor(x), d = x - f;
    return d > 0.5 ? f + 1 : d < 0.5 ? f : f % 2 === 0 ? f : f + 1;
  };
  const xs = [
    -0,
    0,
    -0.5,
    0.5,
    -0.2,
    -1.5,
    1.5,
    2.5,
    -2.5,
    126.5,
    -127.5,
    2 ** 31 + 0.5,
    -(2 ** 40) - 0.5,
  ];
  for (let k = -600; k <= 600; k++) xs.push(k / 4, k / 3, k * 0.1, Math.fround(k / 7) * 127);
  xs.push(Infinity, -Infinity, NaN, 2 ** 53, -(2 ** 60));
  for (const x of xs) {
    assert.ok(
      Object.is(roundHalfEven(x), halfEven(x)),
      `${x}: ${roundHalfEven(x)} vs ${halfEven(x)}`,
    );
  }
});

Deno.test("activationParams() widens u8 ranges to include zero, which stays exact", () => {
  const p = activationParams({ min: 2, max: 10 }, "u8");
  assert.equal(p.zeroPoint, 0);
  assert.equal(p.scale, Math.fround(10 / 255));
  const n = activationParams({ min: -10, max: -2 }, "u8");
  assert.equal(n.zeroPoint, 255);
  const m = activationParams({ min: -0.7, max: 3.1 }, "u8");
  assert.equal(dequantizeLinear(quantizeLinear([0], m), m)[0], 0);
});

Deno.test("activationParams() gives s8 a symmetric scale and zero point 0", () => {
  const p = activationParams({ min: -3, max: 6 }, "s8");
  assert.deepEqual(p, { scale: Math.fround(6 / 127), zeroPoint: 0, dtype: "int8" });
});

Deno.test("activationParams() gives a constant-zero tensor scale 1 and refuses bad ranges", () => {
  assert.deepEqual(activationParams({ min: 0, max: 0 }, "u8"), {
    scale: 1,
    zeroPoint: 0,
    dtype: "uint8",
  });
  assert.throws(() => activationParams({ min: 1, max: 0 }, "u8", "conv1"), /conv1.*min ≤ max/);
  assert.throws(() => activationParams({ min: 0, max: NaN }, "u8"), /finite/);
});
