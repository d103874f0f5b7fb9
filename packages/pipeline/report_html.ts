/**
 * The self-contained `report.html`: SVG charts rendered here (scales and ticks from d3-scale), no
 * scripts, no network. Every string that comes from the model or the config is escaped.
 *
 * @module
 */
// @ts-types="npm:@types/d3-scale@4.0.9"
import { scaleBand, scaleLinear } from "d3-scale";
import type { Report, ReportHistogram } from "./report.ts";
import { speedupCeiling } from "@clipq/runtime/profile";

/**
 * Escapes text for HTML content and attribute values.
 *
 * @param text Any string.
 * @returns The escaped string.
 *
 * @example Usage
 * ```ts
 * import { escapeHtml } from "@clipq/pipeline/report-html";
 * import assert from "node:assert/strict";
 * assert.equal(escapeHtml('<img src=x onerror="a">'), "&lt;img src=x onerror=&quot;a&quot;&gt;");
 * ```
 */
export function escapeHtml(text: string): string {
  return String(text).replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!,
  );
}

const e = escapeHtml;
const fmt = (x: number, digits = 3) =>
  Number.isFinite(x) ? Number(x.toPrecision(digits)).toString() : String(x);
const bytes = (n: number) => n >= 1e6 ? `${(n / 1e6).toFixed(2)} MB` : `${(n / 1e3).toFixed(1)} kB`;

const COLORS = { float: "#8a94a6", int8: "#2f7ed8", bad: "#d9534f", clip: "#e8a317" };

/** Horizontal bars of a few named values. */
function barsH(
  items: { label: string; value: number; color: string; text: string }[],
  unit: string,
): string {
  const width = 560, rowH = 34, left = 120, right = 110;
  const height = items.length * rowH + 30;
  const max = Math.max(...items.map((i) => i.value), 1e-12);
  const x = scaleLinear().domain([0, max]).nice().range([left, width - right]);
  const y = scaleBand<string>().domain(items.map((i) => i.label)).range([10, height - 20]).padding(
    0.25,
  );
  const ticks = x.ticks(4).map((t) =>
    `<g class="tick"><line x1="${x(t)}" x2="${x(t)}" y1="10" y2="${height - 20}" stroke="#eee"/>` +
    `<text x="${x(t)}" y="${height - 5}" text-anchor="middle">${e(fmt(t))}</text></g>`
  ).join("");
  const bars = items.map((i) =>
    `<g class="bar"><rect x="${left}" y="${y(i.label)}" width="${
      Math.max(1, x(i.value) - left)
    }" height="${y.bandwidth()}" fill="${i.color}"><title>${e(i.label)}: ${
      e(i.text)
    }</title></rect>` +
    `<text x="${left - 6}" y="${y(i.label)! + y.bandwidth() / 2 + 4}" text-anchor="end">${
      e(i.label)
    }</text>` +
    `<text x="${x(i.value) + 6}" y="${y(i.label)! + y.bandwidth() / 2 + 4}">${e(i.text)}</text></g>`
  ).join("");
  return `<svg class="chart" role="img" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" aria-label="${
    e(unit)
  }">${ticks}${bars}</svg>`;
}

/** Vertical SQNR bars, one per layer. */
function sqnrChart(layers: Report["sqnr"]["layers"]): string {
  const width = Math.max(520, Math.min(1400, layers.length * 12 + 80)),
    height = 260,
    left = 50,
    bottom = 30;
  const x = scaleBand<number>().domain(layers.map((_, i) => i)).range([left, width - 10]).padding(
    0.15,
  );
  const max = Math.max(40, ...layers.map((l) => l.sqnr));
  const y = scaleLinear().domain([Math.min(0, ...layers.map((l) => l.sqnr)), max]).nice().range([
    height - bottom,
    10,
  ]);
  const ticks = y.ticks(5).map((t) =>
    `<g class="tick"><line x1="${left}" x2="${width - 10}" y1="${y(t)}" y2="${
      y(t)
    }" stroke="#eee"/>` +
    `<text x="${left - 6}" y="${y(t) + 4}" text-anchor="end">${e(fmt(t))}</text></g>`
  ).join("");
  const bars = layers.map((l, i) => {
    const y0 = y(Math.max(0, l.sqnr)), y1 = y(Math.min(0, l.sqnr));
    const color = l.sqnr < 20 ? COLORS.bad : COLORS.int8;
    return `<rect class="bar" x="${x(i)}" y="${y0}" width="${x.bandwidth()}" height="${
      Math.max(1, y1 - y0)
    }" fill="${color}">` +
      `<title>${e(l.node)} (${e(l.op)}) → ${e(l.tensor)}: ${e(fmt(l.sqnr))} dB</title></rect>`;
  }).join("");
  return `<svg class="chart" role="img" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" aria-label="per-layer SQNR">` +
    `${ticks}${bars}<text x="${left}" y="${
      height - 8
    }">layer 1 … ${layers.length} (graph order); dB, higher is better; red &lt; 20 dB</text></svg>`;
}

/** One activation histogram with the chosen clip marked. */
function histogramChart(h: ReportHistogram): string {
  const width = 300, height = 150, left = 8, bottom = 30;
  const hi = h.lo + h.width * h.counts.length;
  const lo = Math.min(h.lo, h.clip?.min ?? h.lo), top = Math.max(hi, h.clip?.max ?? hi);
  const x = scaleLinear().domain([lo, top]).range([left, width - 8]);
  // Log counts: activations are heavy-tailed; the tail is what the clip cuts.
  const y = scaleLinear().domain([0, Math.log1p(Math.max(1, ...h.counts))]).range([
    height - bottom,
    22,
  ]);
  const bars = h.counts.map((c, i) => {
    const x0 = x(h.lo + i * h.width), x1 = x(h.lo + (i + 1) * h.width);
    return `<rect x="${x0}" y="${y(Math.log1p(c))}" width="${
      Math.max(0.5, x1 - x0 - 0.5)
    }" height="${height - bottom - y(Math.log1p(c))}" fill="${COLORS.float}"/>`;
  }).join("");
  const clip = h.clip
    ? [h.clip.min, h.clip.max].map((v) =>
      `<line class="clip" x1="${x(v)}" x2="${x(v)}" y1="18" y2="${
        height - bottom
      }" stroke="${COLORS.clip}" stroke-width="2"/>`
    ).join("")
    : "";
  const axis = x.ticks(4).map((t) =>
    `<text x="${x(t)}" y="${height - 14}" text-anchor="middle">${e(fmt(t))}</text>`
  ).join("");
  const label = h.clip
    ? `clip [${fmt(h.clip.min)}, ${fmt(h.clip.max)}] (${h.clip.source})`
    : "no range";
  return `<figure class="hist"><svg class="chart" role="img" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" aria-label="histogram">` +
    `<text x="${left}" y="12" class="name">${
      e(h.tensor.length > 44 ? h.tensor.slice(0, 41) + "…" : h.tensor)
    }</text>${bars}${clip}${axis}` +
    `<text x="${left}" y="${height - 2}">${e(label)}</text><title>${
      e(h.tensor)
    }</title></svg></figure>`;
}

function table(head: string[], rows: string[][], limit = 400): string {
  const shown = rows.slice(0, limit);
  const more = rows.length > limit
    ? `<p>… and ${rows.length - limit} more (see report.json)</p>`
    : "";
  return `<table><thead><tr>${head.map((h) => `<th>${e(h)}</th>`).join("")}</tr></thead><tbody>` +
    shown.map((r) => `<tr>${r.map((c) => `<td>${e(c)}</td>`).join("")}</tr>`).join("") +
    `</tbody></table>${more}`;
}

/** Kernel time a run by op type, float beside int8, from onnxruntime's profiler. */
function kernelTable(k: NonNullable<NonNullable<Report["latency"]>["kernels"]>): string {
  const row = (what: string, f: number, q: number) => [what, fmt(f), fmt(q)];
  const ops = (t: typeof k.float) =>
    t.ops.map((o) => `${o.op} ×${o.count} ${fmt(o.ms)}`).join(", ");
  return `<h3>Kernel time a run (onnxruntime's profiler, ms)</h3>${
    table(["", "float", "int8"], [
      row("convolutions, matmuls, gemms", k.float.weightedMs, k.int8.weightedMs),
      row("other kernels", k.float.otherMs, k.int8.otherMs),
      row("all kernels", k.float.weightedMs + k.float.otherMs, k.int8.weightedMs + k.int8.otherMs),
    ])
  }${ceiling(k)}${
    table(["model", "slowest op types"], [["float", ops(k.float)], ["int8", ops(k.int8)]])
  }`;
}

/** The most int8 could gain with its convolutions as they are (@clipq/runtime's speedupCeiling). */
function ceiling(k: NonNullable<NonNullable<Report["latency"]>["kernels"]>): string {
  const most = speedupCeiling(k.float, k.int8);
  if (most === undefined) return "";
  return `<p>With its other kernels taking no time, int8 would run at most ${
    most.toFixed(2)
  }× as fast as float: float's kernel time over int8's convolutions, matmuls and gemms alone.</p>`;
}

/**
 * Renders the report as one self-contained HTML page (inline CSS and SVG, no script, no network).
 *
 * @param report The report.
 * @returns HTML text.
 *
 * @example Node names are escaped
 * ```ts
 * import { renderHtml } from "@clipq/pipeline/report-html";
 * import assert from "node:assert/strict";
 * const html = renderHtml({
 *   clipq: "0", config: { file: "", hash: "" }, model: { input: "m", output: "o" }, methods: [],
 *   sizes: { float: 4, int8: 1, ratio: 0.25 }, timings: [], ranges: [], unbounded: [],
 *   excluded: [{ node: "<img src=x>", reason: "head" }],
 *   sqnr: { layers: [], outputs: [], images: 0 }, histograms: [], details: {}, notes: [],
 * });
 * assert.ok(html.includes("&lt;img src=x&gt;") && !html.includes("<img"));
 * ```
 */
export function renderHtml(report: Report): string {
  const s = report.sizes;
  const sections: string[] = [];
  sections.push(`<section><h2>Model size (MB)</h2>${
    barsH([
      { label: "float", value: s.float / 1e6, color: COLORS.float, text: bytes(s.float) },
      {
        label: "int8",
        value: s.int8 / 1e6,
        color: COLORS.int8,
        text: `${bytes(s.int8)} (${(100 * s.ratio).toFixed(1)} %)`,
      },
    ], "model size, MB")
  }</section>`);
  if (report.latency) {
    const l = report.latency;
    sections.push(`<section><h2>Latency (onnxruntime, median of runs)</h2>${
      barsH([
        {
          label: "float",
          value: l.float.median,
          color: COLORS.float,
          text: `${fmt(l.float.median)} ms`,
        },
        {
          label: "int8",
          value: l.int8.median,
          color: COLORS.int8,
          text: `${fmt(l.int8.median)} ms (${fmt(l.speedup)}×)`,
        },
      ], "latency")
    }${l.kernels ? kernelTable(l.kernels) : ""}</section>`);
  }
  if (report.sqnr.layers.length) {
    sections.push(
      `<section><h2>Per-layer SQNR, float vs int8 (${report.sqnr.images} ${
        e(report.sqnr.dataSet ?? "")
      } images)</h2>${sqnrChart(report.sqnr.layers)}${
        table(["output", "SQNR dB"], report.sqnr.outputs.map((o) => [o.tensor, fmt(o.sqnr)]))
      }</section>`,
    );
  }
  if (report.histograms.length) {
    sections.push(
      `<section><h2>Activation histograms (log counts) and chosen clips</h2><div class="grid">${
        report.histograms.map(histogramChart).join("")
      }</div></section>`,
    );
  }
  const svd = report.details["svd-fc"] as
    | {
      layers?: {
        node: string;
        rows: number;
        cols: number;
        rank: number;
        relativeError: number;
        skipped?: string;
      }[];
    }
    | undefined;
  if (svd?.layers?.length) {
    sections.push(`<section><h2>SVD of fully connected layers</h2>${
      table(
        ["layer", "rows × cols", "rank", "relative error", "note"],
        svd.layers.map((l) => [
          l.node,
          `${l.rows} × ${l.cols}`,
          String(l.rank),
          fmt(l.relativeError),
          l.skipped ?? "",
        ]),
      )
    }</section>`);
  }
  if (report.accuracy !== undefined) {
    const acc = report.accuracy as {
      fidelity?: { ap50?: number; map?: number };
      float?: { map?: number };
      int8?: { map?: number };
    };
    const bars: { label: string; value: number; color: string; text: string }[] = [];
    if (acc.float?.map !== undefined && acc.int8?.map !== undefined) {
      bars.push(
        {
          label: "float mAP",
          value: acc.float.map,
          color: COLORS.float,
          text: fmt(acc.float.map, 4),
        },
        { label: "int8 mAP", value: acc.int8.map, color: COLORS.int8, text: fmt(acc.int8.map, 4) },
      );
    }
    for (const k of ["ap50", "map"] as const) {
      const v = acc.fidelity?.[k];
      if (v !== undefined && v >= 0) {
        bars.push({ label: `agreement ${k}`, value: v, color: COLORS.clip, text: fmt(v, 4) });
      }
    }
    sections.push(
      `<section><h2>Accuracy (evaluate)</h2>${bars.length ? barsH(bars, "accuracy") : ""}<pre>${
        e(JSON.stringify(report.accuracy, null, 2))
      }</pre></section>`,
    );
  }
  sections.push(
    `<section><h2>Steps</h2>${
      table(["step", "seconds"], report.timings.map((t) => [t.name, (t.ms / 1000).toFixed(2)]))
    }</section>`,
  );
  sections.push(
    `<section><h2>Excluded nodes (kept float)</h2>${
      report.excluded.length
        ? table(
          ["node", "op", "reason"],
          report.excluded.map((x) => [x.node, x.op ?? "", x.reason]),
        )
        : "<p>none</p>"
    }</section>`,
  );
  const rewrites = (report.details.quantize as { rewrites?: string[] } | undefined)?.rewrites;
  if (rewrites?.length) {
    sections.push(
      `<section><h2>Exact rewrites for onnxruntime's int8 kernels</h2><ul>${
        rewrites.map((r) => `<li>${e(r)}</li>`).join("")
      }</ul></section>`,
    );
  }
  const refinement = report.details.rangeRefinement as
    | {
      images: number;
      tensors: number;
      seconds: number;
      changes: { tensor: string; from: number[]; to: number[]; gainDb: number }[];
    }
    | undefined;
  if (refinement) {
    sections.push(
      `<section><h2>Ranges refined by output error (${refinement.changes.length} of ${refinement.tensors} tensors, ${refinement.images} image(s), ${refinement.seconds} s)</h2>${
        table(
          ["tensor", "from", "to", "gain (dB, tensor alone)"],
          refinement.changes.map((c) => [
            c.tensor,
            `[${fmt(c.from[0]!, 4)}, ${fmt(c.from[1]!, 4)}]`,
            `[${fmt(c.to[0]!, 4)}, ${fmt(c.to[1]!, 4)}]`,
            c.gainDb.toFixed(2),
          ]),
        )
      }</section>`,
    );
  }
  sections.push(
    `<section><h2>Ranges (${report.ranges.length} tensors)</h2>${
      table(
        ["tensor", "min", "max", "source"],
        report.ranges.map((r) => [r.tensor, fmt(r.min, 5), fmt(r.max, 5), r.source]),
      )
    }${
      report.unbounded.length
        ? `<p>Unbounded by clip-bounds: ${e(report.unbounded.join(", "))}</p>`
        : ""
    }</section>`,
  );
  if (report.notes.length) {
    sections.push(
      `<section><h2>Notes</h2><ul>${
        report.notes.map((n) => `<li>${e(n)}</li>`).join("")
      }</ul></section>`,
    );
  }
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>clipq report — ${e(report.model.input)}</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
svg.chart text{font-size:11px;fill:#333}svg .name{font-weight:600}
table{border-collapse:collapse;font-size:12px}td,th{border-bottom:1px solid #ddd;padding:2px 8px;text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0}code{background:#f4f4f4;padding:1px 4px}
</style></head><body>
<h1>clipq ${e(report.clipq)} report</h1>
<p>Model <code>${e(report.model.input)}</code> → <code>${e(report.model.output)}</code>; methods: ${
    e(report.methods.join(", ") || "none")
  }; config sha256 <code>${e(report.config.hash.slice(0, 16))}</code></p>
${sections.join("\n")}
</body></html>
`;
}
