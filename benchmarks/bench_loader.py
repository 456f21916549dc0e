"""Loader throughput per worker: one model-specific sample (decode, resize, targets, queries) per
sequence, on one CPU thread, printed as JSON.

    python benchmarks/bench_loader.py [--scene DIR] [--frames 16] [--size 672] [--grid 24] [--sequences 8]

The scene defaults to the real 7-Scenes frames under ``$GASP_SHARED_DATA/rgbd/7scenes-redkitchen``
(640x480 colour and depth). Sequences are drawn with the paper's sampling (radius 48) at a fixed
``--frames``; every frame is decoded afresh (no cache across sequences, as in a shuffled epoch).
Times are process CPU seconds, so load from other jobs on a shared machine does not count.
``baseline_*`` are the previous implementations timed in the same process on the same frames: the
float32 image resize and the gather-table cell median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from gasp.data.loader import build_sample
from gasp.data.prepare import PrepareConfig, prepare
from gasp.data.store import open_prepared
from gasp.data.targets import fit_views, track_query_mask
from gasp.geometry.cameras import resize_image
from gasp.geometry.token_grid import _median_by_table, cell_median_depth, token_targets


def _cpu(fn, *args, **kw):
    t = time.process_time()
    out = fn(*args, **kw)
    return out, time.process_time() - t


def _resize_all(images: list[np.ndarray], hw: tuple[int, int]) -> list[torch.Tensor]:
    return [resize_image(im, im.shape[:2], hw, "center_crop") for im in images]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default = Path(os.environ.get("GASP_SHARED_DATA", "../shared/data")) / "rgbd" / "7scenes-redkitchen"
    parser.add_argument("--scene", default=str(default))
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=672)
    parser.add_argument("--grid", type=int, default=24)
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--queries", default="tracks")
    parser.add_argument("--output", default="/tmp/gasp-bench-loader")
    args = parser.parse_args()
    torch.set_num_threads(1)
    prepare(
        PrepareConfig(
            output=args.output,
            scenes=[args.scene],
            sequences_per_scene=args.sequences + 1,
            min_frames=args.frames,
            max_frames=args.frames,
            radius=48,
            progress=False,
        )
    )
    data = open_prepared(args.output)
    hw, grid = (args.size, args.size), (args.grid, args.grid)
    build_sample(data, 0, grid, hw, args.queries)  # warm-up
    stages: dict[str, list[float]] = {k: [] for k in ("decode", "resize", "targets", "tracks", "total")}
    base: dict[str, list[float]] = {"resize": [], "median": [], "new_median": []}
    distinct = []
    for i in range(1, args.sequences + 1):
        frames = [int(f) for f in data.index.frames(i)]
        distinct.append(len(set(frames)))
        _, total = _cpu(build_sample, data, i, grid, hw, args.queries)
        stages["total"].append(total)
        views, t = _cpu(data.views, 0, frames)
        stages["decode"].append(t)
        (images, depths, Ks, poses), t = _cpu(fit_views, views, hw)
        stages["resize"].append(t)
        stages["targets"].append(_cpu(token_targets, depths, Ks, poses, grid)[1])
        stages["tracks"].append(_cpu(track_query_mask, depths, Ks, poses, grid)[1])
        as_float = [v.image.astype(np.float32) for v in views]
        base["resize"].append(_cpu(_resize_all, as_float, hw)[1])
        base["median"].append(_cpu(_median_by_table, depths, grid)[1])
        base["new_median"].append(_cpu(cell_median_depth, depths, grid)[1])
    med = {k: statistics.median(v) for k, v in stages.items()}
    result = {
        "scene": args.scene,
        "frames": args.frames,
        "distinct_frames_mean": round(float(np.mean(distinct)), 1),
        "image_hw": list(hw),
        "grid": list(grid),
        "queries": args.queries,
        "sequences_per_s_per_worker": round(1.0 / med["total"], 2),
        "median_ms": {k: round(1e3 * v, 1) for k, v in med.items()},
        "baseline_float32_resize_ms": round(1e3 * statistics.median(base["resize"]), 1),
        "baseline_table_median_ms": round(1e3 * statistics.median(base["median"]), 1),
        "whole_cell_median_ms": round(1e3 * statistics.median(base["new_median"]), 1),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
