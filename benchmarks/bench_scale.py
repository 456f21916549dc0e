"""Data at the paper's scale: the old per-sequence copies against frames stored once + a sequence index.

Paper configuration: 1.75 M sequences from about 10,000 videos (175 per video), F uniform in [8, 24],
radius 48, 672x672 model input (24x24 tokens of 28 px), real 7-Scenes 640x480 frames as the source
(``$GASP_SHARED_DATA/rgbd/7scenes-redkitchen``, or ``--scene``).

OLD design (the format before "gasp-prepared"): every sequence stored its own 672x672 copy of each
frame plus its targets (24x24 token matches, 24x24 + 8x8 tracks) as one deflated npz (zip, level 1).
The script reproduces that encoding on real sequences and measures bytes and seconds per sequence.

NEW design: each frame used by some sequence stored once per scene (JPEG colour + 16-bit PNG depth
at source resolution) plus the index (a few bytes per sequence). Bytes per stored frame and prepare
time come from running `gasp prepare` on the real scene; the projection draws the paper's sampling
on a video of ``--video-frames`` frames (7-Scenes sequences have 1,000) to count the distinct frames
that 175 sequences use.

Loader: sequences/s of one process (one data-loader worker) for F = 16 at 672x672: read the stored
frames, decode, resize/crop, token targets and tracks (``loader_sample``). Old: decoding the npz.

Storage libraries: random access to one frame by (scene, frame) in the scene zip against a Hugging
Face ``datasets`` Arrow table of the same encoded frames (when installed).

Prints one JSON object. Example:
    python benchmarks/bench_scale.py --sequences 4
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from gasp.data.fitted import FitConfig, fit_view, sequence_targets
from gasp.data.prepare import PrepareConfig, prepare
from gasp.data.registry import open_scene
from gasp.data.store import DEPTH_EXT, PreparedData, open_prepared
from gasp.data.targets import sample_from_views
from gasp.geometry.sampling import draw_num_frames, sample_sequence

PAPER = {"sequences": 1_750_000, "videos": 10_000, "min_frames": 8, "max_frames": 24, "radius": 48}
MODEL = FitConfig(grid=(24, 24), image_size=(672, 672))


def old_encode(sequence: dict) -> bytes:
    """The old per-sequence record: every array as .npy in a zip, deflate level 1."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for key, value in sequence.items():
            with zf.open(key + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(value), allow_pickle=False)
    return buf.getvalue()


def old_decode(data: bytes) -> dict:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def measure_old(scene_path: str, count: int, seed: int) -> dict:
    """Bytes, prepare seconds and loader (decode) seconds per sequence of F = 16 in the old design."""
    scene = open_scene(scene_path)
    rng = np.random.default_rng(seed)
    sizes, prep_s, load_s = [], [], []
    for _ in range(count):
        anchor = int(rng.integers(len(scene)))
        frames = sample_sequence(len(scene), anchor, 16, PAPER["radius"], rng=rng)
        start = time.perf_counter()
        views = [fit_view(scene.view(i), MODEL.image_hw, MODEL.resize_mode) for i in frames]
        blob = old_encode(sequence_targets(views, MODEL))
        prep_s.append(time.perf_counter() - start)
        sizes.append(len(blob))
        start = time.perf_counter()
        old_decode(blob)
        load_s.append(time.perf_counter() - start)
    return {
        "bytes_per_sequence_f16": float(np.mean(sizes)),
        "prepare_s_per_sequence_f16": float(np.median(prep_s)),
        "loader_sequences_per_s_f16": 1.0 / float(np.median(load_s)),
    }


def loader_sample(data: PreparedData, scene: int, frames: list[int], fit: FitConfig) -> dict:
    """What a data-loader worker does for one sequence (gasp.data.targets.sample_from_views): decode
    the stored frames, resize/crop to the model input, token-grid targets and the paper's track queries."""
    views = data.views(scene, frames)
    return sample_from_views(views, fit.grid, fit.image_hw, "tracks")


def distinct_frames(video_frames: int, per_video: int, seed: int) -> float:
    """Distinct frames that ``per_video`` paper-sampled sequences use in one video."""
    rng = np.random.default_rng(seed)
    used: set[int] = set()
    for _ in range(per_video):
        f = draw_num_frames(rng, PAPER["min_frames"], PAPER["max_frames"])
        used.update(
            sample_sequence(video_frames, int(rng.integers(video_frames)), f, PAPER["radius"], rng=rng)
        )
    return float(len(used))


def measure_new(scene_path: str, out: Path, seed: int, quality: int) -> dict:
    """Prepare the real scene twice (8 and 32 sequences) to split per-frame and per-sequence costs."""
    runs = {}
    for n in (8, 32):
        cfg = PrepareConfig(
            output=str(out / f"s{n}"),
            scenes=[scene_path],
            sequences_per_scene=n,
            seed=seed,
            jpeg_quality=quality,
        )
        cfg.progress = False
        start = time.perf_counter()
        summary = prepare(cfg)
        runs[n] = (time.perf_counter() - start, summary)
    (t8, s8), (t32, s32) = runs[8], runs[32]
    per_seq = max(0.0, (t32 - t8) / (s32.sequences - s8.sequences))
    per_frame = max(0.0, (t8 - per_seq * s8.sequences) / s8.frames_stored)
    data = open_prepared(out / "s32")
    index_bytes = sum(p.stat().st_size for p in (out / "s32" / "index").glob("*.npy"))
    return {
        "bytes_per_stored_frame": s32.bytes / s32.frames_stored,
        "index_bytes_per_sequence": index_bytes / s32.sequences,
        "prepare_s_per_stored_frame": per_frame,
        "prepare_s_per_sequence_overhead": per_seq,
        "data": data,
    }


def loader_rate(data: PreparedData, reps: int) -> dict:
    """Sequences/s of ``loader_sample`` on F = 16 sequences, and of decoding their frames alone."""
    rng = np.random.default_rng(1)
    full, decode = [], []
    for _ in range(reps):
        anchor = int(rng.integers(data.num_frames(0)))
        frames = sample_sequence(data.num_frames(0), anchor, 16, PAPER["radius"], rng=rng)
        data.close()
        start = time.perf_counter()
        data.views(0, frames)
        decode.append(time.perf_counter() - start)
        data.close()
        start = time.perf_counter()
        loader_sample(data, 0, frames, MODEL)
        full.append(time.perf_counter() - start)
    return {
        "sequences_per_s_per_worker_f16": 1.0 / float(np.median(full)),
        "decode_only_sequences_per_s_f16": 1.0 / float(np.median(decode)),
    }


def library_comparison(data: PreparedData, out: Path, reps: int = 200) -> dict:
    """Random access to one frame's bytes: scene zip vs a Hugging Face datasets Arrow table."""
    scene = data._scene(0)
    names = [n for n in scene.zip().namelist() if n.startswith(("color/", "depth/"))]
    rng = np.random.default_rng(0)
    picks = rng.integers(data.num_frames(0), size=reps)
    start = time.perf_counter()
    for f in picks:
        scene.read(f"color/{f:06d}.jpg")
        scene.read(f"depth/{f:06d}.{DEPTH_EXT}")
    result = {"zip_random_frame_ms": (time.perf_counter() - start) / reps * 1e3}
    try:
        import datasets
    except ImportError:
        return {**result, "hf_datasets": "not installed"}
    rows = {"frame": [], "color": [], "depth": []}
    for f in range(data.num_frames(0)):
        rows["frame"].append(f)
        rows["color"].append(scene.read(f"color/{f:06d}.jpg"))
        rows["depth"].append(scene.read(f"depth/{f:06d}.{DEPTH_EXT}"))
    datasets.Dataset.from_dict(rows).save_to_disk(str(out / "hf"))
    table = datasets.load_from_disk(str(out / "hf"))
    start = time.perf_counter()
    for f in picks:
        row = table[int(f)]
        row["color"], row["depth"]
    result["hf_datasets_random_frame_ms"] = (time.perf_counter() - start) / reps * 1e3
    result["hf_datasets_bytes"] = sum(p.stat().st_size for p in (out / "hf").rglob("*") if p.is_file())
    result["zip_bytes"] = (data.root / data.manifest["scenes"][0]["file"]).stat().st_size
    result["zip_members"] = len(names)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_scene = Path(os.environ.get("GASP_SHARED_DATA", "../shared/data")) / "rgbd" / "7scenes-redkitchen"
    parser.add_argument("--scene", default=str(default_scene), help="real 640x480 scene (7-Scenes)")
    parser.add_argument("--sequences", type=int, default=4, help="old-design sequences measured (default 4)")
    parser.add_argument("--loader-reps", type=int, default=8, help="loader sequences timed (default 8)")
    parser.add_argument("--video-frames", type=int, nargs="+", default=[1000, 3000])
    parser.add_argument(
        "--jpeg-quality", type=int, default=80, help="stored colour quality (prepare's default 80)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    per_video = PAPER["sequences"] // PAPER["videos"]
    mean_f = (PAPER["min_frames"] + PAPER["max_frames"]) / 2
    old = measure_old(args.scene, args.sequences, args.seed)
    old_per_seq = old["bytes_per_sequence_f16"] * mean_f / 16  # frames dominate: scale to the mean F
    with tempfile.TemporaryDirectory() as tmp:
        new = measure_new(args.scene, Path(tmp), args.seed, args.jpeg_quality)
        data = new.pop("data")
        loader = loader_rate(data, args.loader_reps)
        libs = library_comparison(data, Path(tmp))
        source_bytes = sum(p.stat().st_size for p in Path(args.scene).iterdir() if p.is_file())
        cfg64 = PrepareConfig(
            output=str(Path(tmp) / "s64"),
            scenes=[args.scene],
            sequences_per_scene=64,
            jpeg_quality=args.jpeg_quality,
        )
        cfg64.progress = False
        s64 = prepare(cfg64)
        folder64 = sum(p.stat().st_size for p in Path(cfg64.output).rglob("*") if p.is_file())
    projections = {}
    for length in args.video_frames:
        distinct = distinct_frames(length, per_video, args.seed)
        per_seq = distinct * new["bytes_per_stored_frame"] / per_video + new["index_bytes_per_sequence"]
        prep_s = (distinct * new["prepare_s_per_stored_frame"]) / per_video + new[
            "prepare_s_per_sequence_overhead"
        ]
        projections[f"video_{length}_frames"] = {
            "distinct_frames_per_video": distinct,
            "new_bytes_per_sequence": per_seq,
            "new_total_tb": per_seq * PAPER["sequences"] / 1e12,
            "storage_ratio_new_over_old": per_seq / old_per_seq,
            "new_prepare_s_per_sequence": prep_s,
        }
    print(
        json.dumps(
            {
                "benchmark": "data at the paper's scale (old per-sequence copies vs frames stored once)",
                "paper": PAPER,
                "model_input": list(MODEL.image_hw),
                "old_bytes_per_sequence": old_per_seq,
                "old_total_tb": old_per_seq * PAPER["sequences"] / 1e12,
                "old_prepare_s_per_sequence_f16": old["prepare_s_per_sequence_f16"],
                "old_loader_sequences_per_s_f16_decode_only": old["loader_sequences_per_s_f16"],
                "new": new,
                "projections": projections,
                "new_loader": loader,
                "jpeg_quality": args.jpeg_quality,
                "sequences_per_scene_64": {
                    "source_folder_bytes": source_bytes,
                    "prepared_folder_bytes": folder64,
                    "ratio": folder64 / source_bytes,
                    "sequences": s64.sequences,
                },
                "libraries": libs,
                "torch_threads": torch.get_num_threads(),
                "cpu_count": os.cpu_count(),
            },
            indent=1,
            default=float,
        )
    )


if __name__ == "__main__":
    main()
