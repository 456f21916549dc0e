"""Turn posed RGB-D scenes into a prepared folder: every scene's frames stored once, plus a sequence index.

For every scene (a folder in any supported format, or ``synthetic:SEED``) ``--sequences-per-scene``
sequences are drawn as in the paper: an anchor frame t_a plus F-1 frames drawn uniformly, with
replacement, from [t_a - R, t_a + R], F uniform in [--min-frames, --max-frames]. A frame whose
overlap with the anchor is below ``--min-overlap`` (fraction of the anchor's ``--overlap-grid``
cells with a valid depth match, computed on depth at 16 px per cell) is redrawn up to
``--resample-tries`` times, else dropped; a frame that cannot be read is skipped with a warning naming
the file. A sequence left with fewer than 2 distinct frames is skipped, a scene without any usable
sequence too; every skip (and every frame a reader left out while indexing its scene) is counted in
the summary, each reason shown with one example file. The run fails only when nothing usable remains.

The frames some sequence uses are stored once per scene (colour JPEG or PNG at source resolution,
depth uint16 millimetres as row differences + zlib, K, pose, source frame index), with no model grid
or image size: one folder serves every model (format "gasp-prepared", docs/DATA_FORMATS.md). Scenes
are written atomically and recorded one by one in the manifest; an interrupted run resumes with the
unfinished scenes, a scene whose file fails its checksum is redone, and reruns give byte-identical files.

Examples:
  gasp prepare --synthetic 8 --seed 0 --output runs/synthetic
  gasp prepare --scenes /data/7scenes/redkitchen --output runs/kitchen --workers 4
  gasp prepare --verify runs/kitchen
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from gasp.cli_args import add_dataclass_arguments, apply_overrides
from gasp.data.prepare_scene import scene_sequences, write_scene
from gasp.data.prepare_summary import LOW_OVERLAP, PrepareSummary, reason_key, summarize
from gasp.data.store import MANIFEST, open_prepared
from gasp.data.store_check import scene_file_problem
from gasp.data.store_write import IMAGE_FORMATS, ManifestWriter, write_index
from gasp.errors import BadInputError, ConfigError
from gasp.locks import folder_lock
from gasp.procs import die_with_parent

__all__ = ["LOW_OVERLAP", "PrepareConfig", "PrepareSummary", "prepare", "reason_key"]

log = logging.getLogger(__name__)

# Flags of the old per-sequence format: a prepared folder no longer depends on the model.
REMOVED_FLAGS = {
    "grid": "--grid",
    "image_size": "--image-size",
    "cell_size": "--cell-size",
    "resize_mode": "--resize-mode",
    "track_grids": "--track-grids",
    "track_keep_fraction": "--track-keep-fraction",
    "sequences_per_shard": "--sequences-per-shard",
    "compress": "--compress",
}


@dataclass
class PrepareConfig:
    """Settings of `gasp prepare` (every field is a CLI flag: ``seed`` -> ``--seed``)."""

    output: str = field(
        default="prepared", metadata={"help": "output folder (manifest.json, scenes/, index/)"}
    )
    scenes: list[str] = field(
        default_factory=list,
        metadata={"help": "scene folders (any supported format) or synthetic:SEED"},
    )
    synthetic: int = field(
        default=0,
        metadata={"help": "also add N built-in synthetic scenes synthetic:SEED .. synthetic:SEED+N-1"},
    )
    seed: int = field(default=0, metadata={"help": "seed of frame sampling (and of --synthetic scenes)"})
    sequences_per_scene: int = field(default=8, metadata={"help": "sequences sampled from each scene"})
    min_frames: int = field(default=8, metadata={"help": "fewest frames F of a sequence (paper: 8)"})
    max_frames: int = field(default=24, metadata={"help": "most frames F of a sequence (paper: 24)"})
    radius: int = field(default=48, metadata={"help": "frames drawn from [anchor-R, anchor+R] (paper: 48)"})
    min_overlap: float = field(
        default=0.2,
        metadata={"help": "least fraction of the anchor's overlap-grid cells matched in a frame (0: off)"},
    )
    overlap_grid: tuple[int, int] = field(
        default=(8, 8), metadata={"help": "cells GH GW of the overlap check (on depth at 16 px per cell)"}
    )
    resample_tries: int = field(
        default=3, metadata={"help": "redraws of an unreadable or low-overlap frame before dropping it"}
    )
    rel_tol: float = field(
        default=0.05, metadata={"help": "visibility test |D_proj - D_map| < rel_tol * min(D_proj, D_map)"}
    )
    border: int = field(
        default=2, metadata={"help": "overlap check: points this many pixels from the border are invalid"}
    )
    image_format: str = field(default="jpeg", metadata={"help": "stored colour: jpeg or png (lossless)"})
    jpeg_quality: int = field(default=80, metadata={"help": "JPEG quality of stored colour (1-95)"})
    workers: int = field(default=1, metadata={"help": "worker processes (output does not depend on it)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def __post_init__(self) -> None:
        self.overlap_grid = tuple(self.overlap_grid)
        if not 2 <= self.min_frames <= self.max_frames:
            raise ConfigError(
                f"need 2 <= --min-frames <= --max-frames, got {self.min_frames} and {self.max_frames}"
            )
        checks = {
            "--sequences-per-scene": self.sequences_per_scene >= 1,
            "--workers": self.workers >= 1,
            "--radius": self.radius >= 1,
            "--resample-tries": self.resample_tries >= 0,
            "--synthetic": self.synthetic >= 0,
            "--border": self.border >= 0,
            "--min-overlap": 0.0 <= self.min_overlap <= 1.0,
            "--rel-tol": self.rel_tol > 0,
            "--overlap-grid": len(self.overlap_grid) == 2 and min(self.overlap_grid) >= 1,
            "--image-format": self.image_format in IMAGE_FORMATS,
            "--jpeg-quality": 1 <= self.jpeg_quality <= 95,
        }
        for flag, ok in checks.items():
            if not ok:
                raise ConfigError(f"{flag} has an invalid value; see `gasp prepare --help`")

    def scene_specs(self) -> list[str]:
        """Every scene to prepare: ``scenes`` then the ``synthetic`` built-in ones."""
        return [str(s) for s in self.scenes] + [f"synthetic:{self.seed + i}" for i in range(self.synthetic)]

    def content_dict(self) -> dict[str, Any]:
        """The fields that determine the folder's content (stored in, and checked against, the manifest)."""
        d = dataclasses.asdict(self)
        for key in ("output", "workers", "progress", "scenes", "synthetic"):
            d.pop(key)
        d["scenes"] = self.scene_specs()
        return d


def _worker_init(parent: int) -> None:
    die_with_parent(parent)
    torch.set_num_threads(1)


def _run_scene(args: tuple[int, str, PrepareConfig, str]) -> dict[str, Any]:
    scene_id, spec, cfg, root = args
    return write_scene(scene_id, spec, cfg, Path(root))


def _warn_about(entry: dict[str, Any]) -> None:
    stats = entry["stats"]
    if stats["scene_error"]:
        log.warning("skipping scene %s: %s", entry["spec"], stats["scene_error"])
    for _, reason, path in stats["bad_frames"]:
        log.warning("skipping frame %s: %s", path, reason)
    for path, reason in stats["dropped"]:
        log.warning("frame left out by the reader: %s: %s", path, reason)


def _pending(manifest: ManifestWriter, specs: list[str], root: Path) -> list[int]:
    """Scenes to (re)do: not recorded, recorded for another spec, or whose file fails verification."""
    pending = []
    for i, spec in enumerate(specs):
        entry = manifest.entries.get(i)
        if entry is None or entry.get("spec") != spec:
            pending.append(i)
            continue
        problem = scene_file_problem(root, entry, full=True)
        if problem:
            log.warning("redoing scene %s: %s %s", spec, root / entry["file"], problem)
            manifest.forget(i)
            pending.append(i)
    return pending


def prepare(config: PrepareConfig) -> PrepareSummary:
    """Prepare ``config.output`` (resuming finished scenes; redoing any whose file is damaged).

    Holds the writer lock of ``config.output`` throughout (:func:`gasp.locks.folder_lock`).

    Raises:
        ConfigError: no scenes given, or the output folder was prepared with another configuration.
        BadInputError: no scene produced a usable sequence.
        FolderBusyError: another process is writing ``config.output``.
    """
    with folder_lock(config.output, "prepare"):
        return _prepare(config)


def _prepare(config: PrepareConfig) -> PrepareSummary:
    start = time.perf_counter()
    specs = config.scene_specs()
    if not specs:
        raise ConfigError("no scenes: give --scenes FOLDER|synthetic:SEED ... and/or --synthetic N")
    root = Path(config.output)
    manifest = ManifestWriter(root, config.content_dict(), specs)
    pending = _pending(manifest, specs, root)
    reused = len(specs) - len(pending)
    bar = tqdm(total=len(specs), initial=reused, unit="scene", desc="prepare", disable=not config.progress)
    jobs = [(i, specs[i], config, str(root)) for i in pending]
    if config.workers > 1 and len(jobs) > 1:
        ctx = mp.get_context("spawn")  # not fork: torch's thread pools do not survive a fork safely
        with ctx.Pool(min(config.workers, len(jobs)), _worker_init, (os.getpid(),)) as pool:
            for entry in pool.imap_unordered(_run_scene, jobs):
                manifest.record(entry)
                _warn_about(entry)
                bar.update()
    else:
        for job in jobs:
            entry = _run_scene(job)
            manifest.record(entry)
            _warn_about(entry)
            bar.update()
    bar.close()
    entries = [manifest.entries[i] for i in range(len(specs))]
    totals = summarize(entries)
    summary = PrepareSummary(
        output=str(root), scenes_reused=reused, seconds=time.perf_counter() - start, **totals
    )
    if summary.sequences == 0:
        raise BadInputError(
            f"no usable sequence in {len(specs)} scene(s); nothing to train on.\n{summary.format()}"
        )
    index = write_index(root, [scene_sequences(root, e) for e in entries])
    manifest.complete(index, summary.to_dict())
    return summary


def verify(folder: str) -> str:
    """`gasp prepare --verify`: check every file of a prepared folder in full; returns a report line."""
    data = open_prepared(folder, verify="full")
    total = sum(int(e.get("bytes", 0)) for e in data.manifest["scenes"])
    return (
        f"{Path(folder) / MANIFEST}: complete and intact: {len(data.scenes)} scenes, "
        f"{len(data.index)} sequences, {total / 1e6:.1f} MB of scene files checked"
    )


# ----------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `gasp prepare`: one per PrepareConfig field, ``--verify``, and removed flags (refused)."""
    add_dataclass_arguments(parser, PrepareConfig)
    parser.add_argument(
        "--verify",
        metavar="DIR",
        default=None,
        help="check every file of the prepared folder DIR in full (checksums), then exit",
    )
    for dest, flag in REMOVED_FLAGS.items():
        parser.add_argument(flag, dest=f"removed_{dest}", nargs="*", default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    """Entry point of `gasp prepare`."""
    for dest, flag in REMOVED_FLAGS.items():
        if getattr(args, f"removed_{dest}", None) is not None:
            raise ConfigError(
                f"{flag} is no longer a `gasp prepare` option: a prepared folder stores frames at their "
                "source resolution and serves every model; the model's grid, image size and targets are "
                "computed when training or probing. Drop the flag."
            )
    if args.verify is not None:
        print(verify(args.verify))
        return 0
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    summary = prepare(apply_overrides(PrepareConfig(), args))
    print(summary.format())
    return 0
