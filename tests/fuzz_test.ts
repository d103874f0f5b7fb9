// Bounded fuzzing of the model path: seeded byte and protobuf-field mutations of a builder model and
// the real PP-OCR cls model go through decode → validate → normalize (and, for a subset, opset
// upgrade → planQuantization → quantize). Only clipq's typed errors may escape; no case may hang
// (a watchdog stops the worker) or take the process' memory far up.
import assert from "node:assert/strict";
import { encode, ModelBuilder } from "@clipq/onnx";
import { ppocrModel } from "../tools/assets.ts";
import type { FuzzFinding, FuzzJob } from "./fuzz_worker.ts";

const CASES = { builder: 1400, cls: 600 };
const HANG_MS = 60_000;
const STARTUP_MS = 300_000;
const RSS_LIMIT = 4 * 2 ** 30;

function builderFixture(): Uint8Array {
  const b = new ModelBuilder({ seed: 5, name: "fuzz" });
  let x = b.input("images", [1, 3, 16, 16]);
  x = b.relu(b.batchNorm(b.conv(x, { outChannels: 8, kernel: 3, bias: false })));
  const p = b.maxPool(x, { kernel: 2, stride: 2 });
  const y = b.leakyRelu(b.conv(p, { outChannels: 8, kernel: 3 }), 0.1);
  const z = b.clip(b.conv(p, { outChannels: 8, kernel: 1, group: 8 }), 0, 6);
  const c = b.concat([b.add(y, z), b.mul(y, b.sigmoid(z))], 1);
  const u = b.resize(b.conv(c, { outChannels: 4, kernel: 1 }), 2);
  b.output(b.conv(u, { outChannels: 6, kernel: 1 }), "out");
  return encode(b.build());
}

Deno.test("fuzzed models raise only clipq's typed errors, never hang, and stay in bounded memory", async () => {
  const job: FuzzJob = {
    seed: 9,
    fixtures: [
      { name: "builder", bytes: builderFixture(), cases: CASES.builder, quantizeEvery: 4 },
      {
        name: "ppocr-cls",
        bytes: await Deno.readFile(await ppocrModel("cls")),
        cases: CASES.cls,
        quantizeEvery: 10,
      },
    ],
  };
  const worker = new Worker(new URL("./fuzz_worker.ts", import.meta.url), { type: "module" });
  let last = "(none)";
  let peakRss = Deno.memoryUsage().rss;
  const t0 = performance.now();
  const result = await new Promise<
    {
      total: number;
      outcomes: Record<string, number>;
      findings: FuzzFinding[];
      slowest: { ms: number; what: string };
    }
  >((resolve, reject) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const arm = (ms = HANG_MS) => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        worker.terminate();
        reject(new Error(`fuzz case hung for over ${ms / 1000} s: ${last}`));
      }, ms);
    };
    worker.onmessage = (e) => {
      const m = e.data;
      peakRss = Math.max(peakRss, Deno.memoryUsage().rss);
      if (m.type === "case") {
        last = `${m.fixture} #${m.index} (${m.mutation})`;
        arm();
      } else {
        clearTimeout(timer);
        resolve(m);
      }
    };
    worker.onerror = (e) => {
      clearTimeout(timer);
      e.preventDefault();
      reject(new Error(`fuzz worker died after ${last}: ${e.message}`));
    };
    // Loading (and type-checking) the worker's modules on a busy machine is not a hang.
    arm(STARTUP_MS);
    worker.postMessage(job);
  });
  worker.terminate();
  const seconds = (performance.now() - t0) / 1000;
  console.log(
    `fuzz: ${result.total} iterations in ${seconds.toFixed(1)} s, outcomes ${
      JSON.stringify(result.outcomes)
    }, slowest case ${result.slowest.ms.toFixed(0)} ms (${result.slowest.what}), peak RSS ${
      (peakRss / 2 ** 20).toFixed(0)
    } MiB`,
  );
  assert.equal(result.total, CASES.builder + CASES.cls);
  assert.deepEqual(
    result.findings,
    [],
    result.findings.map((f) => `${f.fixture} #${f.index} [${f.mutation}]: ${f.error}`).join("\n"),
  );
  // Mutations must reach past the decoder, or the fuzzing tests little.
  assert.ok((result.outcomes.accepted ?? 0) > 100, JSON.stringify(result.outcomes));
  assert.ok(peakRss < RSS_LIMIT, `peak RSS ${peakRss}`);
});
