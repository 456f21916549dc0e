"""Throughput of `gasp prepare` (sequences/s) on built-in synthetic scenes with the default settings
(frames stored once per scene, format "gasp-prepared").

Prints one JSON object. Example:
    python benchmarks/bench_prepare.py --scenes 2 --workers 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from gasp.data.prepare import PrepareConfig, prepare


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenes", type=int, default=2, help="synthetic scenes (default 2)")
    parser.add_argument("--sequences-per-scene", type=int, default=8, help="default 8 (prepare's default)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as out:
        cfg = PrepareConfig(
            output=out,
            synthetic=args.scenes,
            seed=args.seed,
            sequences_per_scene=args.sequences_per_scene,
            workers=args.workers,
            progress=False,
        )
        start = time.perf_counter()
        summary = prepare(cfg)
        seconds = time.perf_counter() - start
        size = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    print(
        json.dumps(
            {
                "benchmark": "gasp prepare",
                "scenes": summary.scenes,
                "sequences": summary.sequences,
                "frames": summary.frames,
                "seconds": round(seconds, 3),
                "sequences_per_s": round(summary.sequences / seconds, 3),
                "frames_per_s": round(summary.frames / seconds, 2),
                "mb_per_sequence": round(size / max(summary.sequences, 1) / 2**20, 3),
                "frames_stored": summary.frames_stored,
                "frames_per_sequence": [cfg.min_frames, cfg.max_frames],
                "workers": args.workers,
                "torch_threads": torch.get_num_threads(),
                "cpu_count": os.cpu_count(),
                "python": platform.python_version(),
            }
        )
    )


if __name__ == "__main__":
    main()
