"""Dense reprojection speed: gasp.geometry.reproject (torch, float32) vs a plain float64 numpy version.

Both implement the same contract (valid depth, in front of b, ``border <= u <= W-1-border``, nearest
pixel depth agreement ``|z - d_b| < rel_tol * min(z, d_b)``) on the same 640x480 pairs in one run.
Prints one JSON object: pairs per second for each, their ratio, and how much the outputs disagree.

    python benchmarks/bench_reproject.py [--pairs 20] [--threads 1] [--seed 0]
"""

from __future__ import annotations

import os

# Single-threaded BLAS for the numpy baseline, matching torch's single intra-op thread.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from gasp.geometry.reproject import reproject  # noqa: E402


def numpy_reproject(depth_a, K_a, c2w_a, depth_b, K_b, c2w_b, rel_tol=0.05, border=4):
    """Straightforward float64 numpy implementation of the dense reprojection contract."""
    H, W = depth_a.shape
    Hb, Wb = depth_b.shape
    d = depth_a.astype(np.float64)
    v, u = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
    x = (u - K_a[0, 2]) / K_a[0, 0] * d
    y = (v - K_a[1, 2]) / K_a[1, 1] * d
    pts = np.stack([x, y, d], axis=-1).reshape(-1, 3)
    T = np.linalg.inv(c2w_b) @ c2w_a
    pts_b = pts @ T[:3, :3].T + T[:3, 3]
    z = pts_b[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        ub = K_b[0, 0] * pts_b[:, 0] / z + K_b[0, 2]
        vb = K_b[1, 1] * pts_b[:, 1] / z + K_b[1, 2]
    d_flat = d.reshape(-1)
    front = np.isfinite(d_flat) & (d_flat > 0) & (z > 0)
    inside = front & (ub >= border) & (ub <= Wb - 1 - border) & (vb >= border) & (vb <= Hb - 1 - border)
    cols = np.where(inside, np.floor(ub + 0.5), 0).astype(np.int64)
    rows = np.where(inside, np.floor(vb + 0.5), 0).astype(np.int64)
    db = depth_b.astype(np.float64)[rows, cols]
    db_ok = np.isfinite(db) & (db > 0)
    with np.errstate(invalid="ignore"):
        valid = inside & db_ok & (np.abs(z - db) < rel_tol * np.minimum(z, db))
    uv = np.stack([ub, vb], axis=-1)
    uv[~front] = np.nan
    return uv.reshape(H, W, 2), valid.reshape(H, W)


def _rotation(rng: np.random.Generator, max_angle: float) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    a = rng.uniform(-max_angle, max_angle)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(a) * k + (1 - math.cos(a)) * k @ k


def make_pairs(n: int, seed: int) -> list[tuple]:
    """Random smooth depth maps with holes and small random relative motions (640x480, float32)."""
    rng = np.random.default_rng(seed)
    H, W = 480, 640
    K = np.array([[585.0, 0.0, 320.0], [0.0, 585.0, 240.0], [0.0, 0.0, 1.0]])
    v, u = np.mgrid[0:H, 0:W]
    pairs = []
    for _ in range(n):
        depths = []
        for _ in range(2):
            d = 2.0 + 0.5 * np.sin(u / rng.uniform(40, 90)) + 0.3 * np.cos(v / rng.uniform(30, 70))
            d[rng.random((H, W)) < 0.05] = 0.0
            depths.append(d.astype(np.float32))
        c2w_a, c2w_b = np.eye(4), np.eye(4)
        c2w_b[:3, :3] = _rotation(rng, 0.1)
        c2w_b[:3, 3] = rng.uniform(-0.1, 0.1, size=3)
        pairs.append((depths[0], K, c2w_a, depths[1], K, c2w_b))
    return pairs


def _pass_seconds(fn, pairs) -> float:
    """CPU seconds of one pass (process time: less sensitive than wall time to other jobs' load)."""
    t0 = time.process_time()
    for p in pairs:
        fn(*p)
    return time.process_time() - t0


def _best_rates(pairs, torch_pairs, rounds: int) -> tuple[float, float]:
    """Best-of-``rounds`` pairs/s for numpy and torch, passes interleaved so load noise hits both."""
    numpy_reproject(*pairs[0])
    reproject(*torch_pairs[0])
    best_np = best_t = math.inf
    for _ in range(rounds):
        best_np = min(best_np, _pass_seconds(numpy_reproject, pairs))
        best_t = min(best_t, _pass_seconds(reproject, torch_pairs))
    return len(pairs) / best_np, len(pairs) / best_t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=20, help="number of 640x480 pairs per timed pass")
    ap.add_argument("--rounds", type=int, default=5, help="timed passes per implementation (best kept)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pairs = make_pairs(args.pairs, args.seed)
    torch_pairs = [tuple(torch.from_numpy(x) for x in p) for p in pairs]

    max_uv_diff, mask_mismatch = 0.0, 0
    for p, tp in zip(pairs, torch_pairs):
        uv_np, valid_np = numpy_reproject(*p)
        uv_t, valid_t = reproject(*tp)
        both = valid_np & valid_t.numpy()
        if both.any():
            max_uv_diff = max(max_uv_diff, float(np.abs(uv_np[both] - uv_t.numpy()[both]).max()))
        mask_mismatch += int((valid_np != valid_t.numpy()).sum())

    rate_np, rate_torch = _best_rates(pairs, torch_pairs, args.rounds)
    print(
        json.dumps(
            {
                "benchmark": "reproject_dense_640x480_cpu",
                "threads": args.threads,
                "pairs": args.pairs,
                "rounds": args.rounds,
                "torch_float32_pairs_per_s": round(rate_torch, 2),
                "numpy_float64_pairs_per_s": round(rate_np, 2),
                "speedup": round(rate_torch / rate_np, 2),
                "max_abs_uv_diff_px": max_uv_diff,
                "valid_mask_mismatch_pixels": mask_mismatch,
                "valid_mask_mismatch_fraction": mask_mismatch / (args.pairs * 480 * 640),
            }
        )
    )


if __name__ == "__main__":
    main()
