"""Reference timings for tools/bench/svd.ts: numpy's full SVD (what Fast R-CNN's compression script
does) and a Halko-Martinsson-Tropp randomized SVD with the same rank, oversampling and power
iterations (QR re-orthonormalization between iterations), on float32 matrices written by the bench.

Usage: python3 svd_numpy.py MATRIX.f32 ROWS COLS RANK OVERSAMPLE POWER [--no-full]
Prints one JSON object: seconds, the optimal rank-k Frobenius error and the randomized one.
"""
import json
import sys
import time

import numpy as np


def randomized(a, k, p, q, rng):
    omega = rng.standard_normal((a.shape[1], k + p), dtype=np.float32)
    q_, _ = np.linalg.qr(a @ omega)
    for _ in range(q):
        z, _ = np.linalg.qr(a.T @ q_)
        q_, _ = np.linalg.qr(a @ z)
    b = q_.T @ a
    ub, s, vt = np.linalg.svd(b, full_matrices=False)
    return q_ @ ub[:, :k], s[:k], vt[:k]


def main():
    path, rows, cols, k, p, q = sys.argv[1], *map(int, sys.argv[2:7])
    a = np.fromfile(path, dtype=np.float32).reshape(rows, cols)
    fro = float(np.linalg.norm(a.astype(np.float64)))
    out = {"frobenius": fro}
    if "--no-full" not in sys.argv:
        t = time.perf_counter()
        s = np.linalg.svd(a, full_matrices=False, compute_uv=True)[1]
        out["fullSeconds"] = time.perf_counter() - t
        out["optimalError"] = float(np.sqrt(np.sum(s[k:].astype(np.float64) ** 2)))
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    u, s, vt = randomized(a, k, p, q, rng)
    out["randomizedSeconds"] = time.perf_counter() - t
    out["randomizedError"] = float(np.linalg.norm(a - (u * s) @ vt))
    print(json.dumps(out))


main()
