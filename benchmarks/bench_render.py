"""Synthetic-scene render time per frame on the CPU (one thread), printed as JSON.

    python benchmarks/bench_render.py [--sizes 128 448] [--frames 8] [--seed 2]

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
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    scene = SyntheticScene(args.seed, num_frames=args.frames)
    build_ms = (time.perf_counter() - t0) * 1e3
    result: dict[str, object] = {"scene_build_ms": round(build_ms, 1), "frames": args.frames, "sizes": {}}
    for size in args.sizes:
        times = []
        for pose in scene.poses:
            t = time.perf_counter()
            scene.render(scene.K, pose, size, size)
            times.append((time.perf_counter() - t) * 1e3)
        result["sizes"][str(size)] = {
            "median_ms": round(statistics.median(times), 2),
            "best_ms": round(min(times), 2),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
