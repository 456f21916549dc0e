"""Synthetic-scene render time per frame on the CPU (one thread), printed as JSON.

    python benchmarks/bench_render.py [--sizes 128 448] [--antialias 1 3] [--frames 8] [--seed 2]

Reports the median and best milliseconds per frame at each square size, and scene build time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from gasp.data.synthetic import SyntheticScene


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 448])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument(
        "--antialias", type=int, nargs="+", default=[1, 3], help="rays per pixel and axis (views use 3)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    scene = SyntheticScene(args.seed, num_frames=args.frames)
    build_ms = (time.perf_counter() - t0) * 1e3
    result: dict[str, object] = {"scene_build_ms": round(build_ms, 1), "frames": args.frames, "sizes": {}}
    for size in args.sizes:
        per_size: dict[str, object] = {}
        for aa in args.antialias:
            times = []
            for pose in scene.poses:
                t = time.perf_counter()
                scene.render(scene.K, pose, size, size, antialias=aa)
                times.append((time.perf_counter() - t) * 1e3)
            per_size[f"antialias_{aa}"] = {
                "median_ms": round(statistics.median(times), 2),
                "best_ms": round(min(times), 2),
            }
        result["sizes"][str(size)] = per_size
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
