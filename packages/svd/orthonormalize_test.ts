import assert from "node:assert/strict";
import { matmulSync } from "./matmul.ts";
import { orthonormalize } from "./orthonormalize.ts";
import { gaussianArray } from "./random.ts";
import { orthonormalityError } from "./_test_util.ts";

Deno.test("orthonormalize() returns an orthonormal basis of an ill-conditioned span", async () => {
  const rows = 500, cols = 40;
  // Y = G·diag(10^(−j/4))·H: mixed columns, condition number ~1e10 ≫ 1/eps of float32.
  const g = gaussianArray(rows * cols, 4);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) g[i * cols + j]! *= 10 ** (-j / 4);
  const y = Float32Array.from(matmulSync(g, gaussianArray(cols * cols, 5), rows, cols, cols));
  const q = await orthonormalize(y, [rows, cols]);
  assert.ok(orthonormalityError(q, rows, cols) < 1e-5, `o ${orthonormalityError(q, rows, cols)}`);
  // The dominant direction is kept: Q·Qᵀ·g₀ = g₀.
  const y0 = Float32Array.from({ length: rows }, (_, i) => g[i * cols]!);
  const qt = new Float32Array(cols * rows);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) qt[j * rows + i] = q[i * cols + j]!;
  const proj = matmulSync(q, matmulSync(qt, y0, cols, rows, 1), rows, cols, 1);
  let d = 0, n = 0;
  for (let i = 0; i < rows; i++) {
    d += (proj[i]! - y0[i]!) ** 2;
    n += y0[i]! ** 2;
  }
  assert.ok(Math.sqrt(d / n) < 1e-5, `${Math.sqrt(d / n)}`);
});

Deno.test("orthonormalize() completes a rank-deficient input to full orthonormal columns", async () => {
  const rows = 100, cols = 10;
  const y = new Float32Array(rows * cols);
  const g = gaussianArray(rows, 2);
  // Rank 1 plus zero columns.
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j += 2) y[i * cols + j] = g[i]! * (j + 1);
  }
  const q = await orthonormalize(y, [rows, cols]);
  assert.ok(orthonormalityError(q, rows, cols) < 1e-5, `o ${orthonormalityError(q, rows, cols)}`);
});
