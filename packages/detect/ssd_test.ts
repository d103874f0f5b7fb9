import assert from "node:assert/strict";
import { float32 } from "@clipq/onnx/tensor";
import { decodeSsd } from "./ssd.ts";
import { resolveHead, type SsdHead } from "./head.ts";

const priors = [[0.5, 0.5, 0.5, 0.25], [0.25, 0.25, 0.2, 0.2]];
const loc = float32([1, 2, 4], new Float32Array(8));

Deno.test("decodeSsd() with activation none reads graph-softmaxed scores as they are, background at 0", () => {
  const head = resolveHead({
    type: "ssd",
    outputs: ["loc", "conf"],
    priors,
    activation: "none",
    classes: 2,
    nms: { score: 0.35 },
  }) as SsdHead;
  // Prior 0: class 2 at 0.6; prior 1: background 0.9 (never a detection), class 1 at 0.05.
  const conf = float32([1, 2, 3], [0.1, 0.3, 0.6, 0.9, 0.05, 0.05]);
  const c = decodeSsd(head, { loc, conf }, { size: [100, 200] });
  assert.equal(c.count, 1);
  assert.equal(c.labels[0], 2);
  assert.ok(Math.abs(c.scores[0]! - 0.6) < 1e-6);
  assert.deepEqual([...c.boxes.subarray(0, 4)], [50, 37.5, 150, 62.5]);
  // Softmax over the same probabilities again flattens them: class 2 drops from 0.6 to 0.43.
  const twice = decodeSsd({ ...head, activation: "softmax" }, { loc, conf }, { size: [100, 200] });
  assert.equal(twice.count, 1);
  assert.ok(Math.abs(twice.scores[0]! - 0.426) < 1e-3, `${twice.scores[0]}`);
});

Deno.test("resolveHead() accepts ssd activation none and still rejects unknown ones", () => {
  assert.equal(
    (resolveHead({ type: "ssd", outputs: ["l", "c"], priors, activation: "none" }) as SsdHead)
      .activation,
    "none",
  );
  assert.throws(
    () => resolveHead({ type: "ssd", outputs: ["l", "c"], priors, activation: "relu" }),
    /activation/,
  );
});
