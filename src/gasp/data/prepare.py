"""Turn posed RGB-D scenes into training sequences with correspondence targets, written as shards.

For every scene (a folder in any supported format, or ``synthetic:SEED``) ``--sequences-per-scene``
sequences are sampled as in the paper: an anchor frame t_a plus F-1 frames drawn uniformly, with
replacement, from [t_a - R, t_a + R], F uniform in [--min-frames, --max-frames]. Frames are resized /
centre-cropped to the VLM's input size (``--image-size``, or ``--grid`` times ``--cell-size``), K and
depth follow exactly, and each sequence gets its targets: 24x24 + 8x8 grid tracks (top 50% by
visibility), token-grid matches from the anchor to every frame, and per-token depth.

A frame whose overlap with the anchor is below ``--min-overlap`` is redrawn up to
``--resample-tries`` times, else dropped; a frame that cannot be read (corrupt file, non-finite pose,
...) is skipped with a warning naming the file. A sequence left with fewer than 2 frames is skipped,
and a scene without any usable sequence is skipped; every skip is counted in the summary. The run
fails only when nothing usable remains.

Output (``--output``): manifest.json + shard-XXXXX.tar (format "gasp-shards" v1, see
docs/DATA_FORMATS.md). Sequence k of scene s always lands in the same shard with the same content,
whatever ``--workers``; an interrupted run resumes where it stopped (finished shards are kept), and
running twice gives byte-identical shards.

Examples:
  gasp prepare --synthetic 8 --seed 0 --output runs/synthetic
  gasp prepare --scenes /data/7scenes/redkitchen --grid 12 16 --cell-size 28 --output runs/kitchen
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import multiprocessing as mp
import os
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from gasp import constants as C
from gasp.cli_args import add_dataclass_arguments, apply_overrides
from gasp.data.registry import open_scene
from gasp.data.shards import ShardFileWriter, ShardWriter, shard_name
from gasp.data.views import BadFrame, SceneReader, View
from gasp.errors import BadInputError, ConfigError, GaspError
from gasp.geometry.cameras import fit_intrinsics, resize_depth, resize_image
from gasp.geometry.sampling import draw_num_frames, overlap_fraction, sample_sequence
from gasp.geometry.token_grid import token_targets
from gasp.geometry.tracks import compute_tracks
from gasp.locks import folder_lock
from gasp.procs import die_with_parent

log = logging.getLogger(__name__)

DEFAULT_CELL_SIZE = 28  # pixels per visual token of Qwen2.5-VL (14 px patches merged 2x2)
LOW_OVERLAP = "low overlap with the anchor"
_VIEW_CACHE_SIZE = 96  # resized frames kept per shard job (sequences of one scene share frames)


@dataclass
class PrepareConfig:
    """Settings of `gasp prepare` (every field is a CLI flag: ``seed`` -> ``--seed``)."""

    output: str = field(default="prepared", metadata={"help": "output folder (manifest.json + shards)"})
    scenes: list[str] = field(
        default_factory=list,
        metadata={"help": "scene folders (7-Scenes, Redwood, TUM RGB-D, generic folder) or synthetic:SEED"},
    )
    synthetic: int = field(
        default=0,
        metadata={"help": "also add N built-in synthetic scenes synthetic:SEED .. synthetic:SEED+N-1"},
    )
    seed: int = field(default=0, metadata={"help": "seed of frame sampling (and of --synthetic scenes)"})
    grid: tuple[int, int] = field(default=(8, 8), metadata={"help": "token grid GH GW of every frame"})
    image_size: tuple[int, int] | None = field(
        default=None, metadata={"help": "frame size H W (default: grid times --cell-size)"}
    )
    cell_size: float | None = field(
        default=None,
        metadata={
            "help": f"pixels per token cell when --image-size is not given (default {DEFAULT_CELL_SIZE})"
        },
    )
    resize_mode: str = field(
        default="center_crop",
        metadata={"help": "center_crop (keep aspect ratio, crop the centre) or resize (stretch)"},
    )
    sequences_per_scene: int = field(default=8, metadata={"help": "sequences sampled from each scene"})
    min_frames: int = field(default=8, metadata={"help": "fewest frames F of a sequence (paper: 8)"})
    max_frames: int = field(default=24, metadata={"help": "most frames F of a sequence (paper: 24)"})
    radius: int = field(default=48, metadata={"help": "frames drawn from [anchor-R, anchor+R] (paper: 48)"})
    min_overlap: float = field(
        default=0.2,
        metadata={
            "help": "least fraction of the anchor's token cells with a valid match in a frame (0: no filter)"
        },
    )
    resample_tries: int = field(
        default=3, metadata={"help": "redraws of an unreadable or low-overlap frame before dropping it"}
    )
    track_grids: list[int] = field(
        default_factory=lambda: [24, 8], metadata={"help": "query grids N (NxN) of the tracks (paper: 24 8)"}
    )
    track_keep_fraction: float = field(
        default=0.5, metadata={"help": "fraction of tracks kept, most visible first (paper: 0.5)"}
    )
    rel_tol: float = field(
        default=0.05, metadata={"help": "visibility test |D_proj - D_map| < rel_tol * min(D_proj, D_map)"}
    )
    border: int = field(
        default=4, metadata={"help": "points within this many pixels of the border are invalid"}
    )
    sequences_per_shard: int = field(default=16, metadata={"help": "sequence slots per shard file"})
    compress: bool = field(default=True, metadata={"help": "deflate the arrays inside the shards"})
    workers: int = field(default=1, metadata={"help": "worker processes (output does not depend on it)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def __post_init__(self) -> None:
        self.grid = tuple(self.grid)
        if len(self.grid) != 2 or min(self.grid) < 1:
            raise ConfigError(f"--grid needs two positive integers GH GW, got {list(self.grid)}")
        if self.image_size is not None:
            self.image_size = tuple(self.image_size)
            if len(self.image_size) != 2 or min(self.image_size) < 1:
                raise ConfigError(
                    f"--image-size needs two positive integers H W, got {list(self.image_size)}"
                )
            if self.cell_size is not None:
                raise ConfigError("give --image-size or --cell-size, not both")
        if self.cell_size is not None and self.cell_size <= 0:
            raise ConfigError(f"--cell-size must be > 0, got {self.cell_size}")
        if self.resize_mode not in ("center_crop", "resize"):
            raise ConfigError(f"--resize-mode must be center_crop or resize, got {self.resize_mode!r}")
        if not 2 <= self.min_frames <= self.max_frames:
            raise ConfigError(
                f"need 2 <= --min-frames <= --max-frames, got {self.min_frames} and {self.max_frames}"
            )
        checks = {
            "--sequences-per-scene": self.sequences_per_scene >= 1,
            "--sequences-per-shard": self.sequences_per_shard >= 1,
            "--workers": self.workers >= 1,
            "--radius": self.radius >= 1,
            "--resample-tries": self.resample_tries >= 0,
            "--synthetic": self.synthetic >= 0,
            "--border": self.border >= 0,
            "--min-overlap": 0.0 <= self.min_overlap <= 1.0,
            "--track-keep-fraction": 0.0 < self.track_keep_fraction <= 1.0,
            "--rel-tol": self.rel_tol > 0,
            "--track-grids": len(self.track_grids) > 0 and min(self.track_grids) >= 1,
        }
        for flag, ok in checks.items():
            if not ok:
                raise ConfigError(f"{flag} has an invalid value; see `gasp prepare --help`")

    @property
    def image_hw(self) -> tuple[int, int]:
        """Frame size ``(H, W)``: ``image_size``, or the grid times the cell size."""
        if self.image_size is not None:
            return (int(self.image_size[0]), int(self.image_size[1]))
        cell = DEFAULT_CELL_SIZE if self.cell_size is None else self.cell_size
        return (round(self.grid[0] * cell), round(self.grid[1] * cell))

    def scene_specs(self) -> list[str]:
        """Every scene to prepare: ``scenes`` then the ``synthetic`` built-in ones."""
        return [str(s) for s in self.scenes] + [f"synthetic:{self.seed + i}" for i in range(self.synthetic)]

    def content_dict(self) -> dict[str, Any]:
        """The fields that determine the shards' content (stored in, and checked against, the manifest)."""
        d = dataclasses.asdict(self)
        for key in ("output", "workers", "progress", "scenes", "synthetic", "image_size", "cell_size"):
            d.pop(key)
        d["scenes"] = self.scene_specs()
        d["image_size"] = list(self.image_hw)
        return d


@dataclass
class PrepareSummary:
    """What a `gasp prepare` run produced and skipped (also stored in the manifest's ``summary``).

    Attributes:
        output: the output folder.
        scenes: scenes given.
        scenes_used: scenes that gave at least one sequence.
        scenes_skipped: reason -> number of scenes without any sequence.
        sequences: sequences written.
        sequences_skipped: reason -> number of sampled sequences not written.
        frames: frames written (summed over sequences).
        frames_skipped: reason -> count. Unreadable frames are counted once per distinct frame (reasons
            grouped by wording, details removed); low-overlap drops once per drop.
        shards: shard files; shards_reused: of those, finished by an earlier run.
        seconds: wall time of this run.
    """

    output: str
    scenes: int
    scenes_used: int
    scenes_skipped: dict[str, int]
    sequences: int
    sequences_skipped: dict[str, int]
    frames: int
    frames_skipped: dict[str, int]
    shards: int
    shards_reused: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON form, without run-dependent fields (time, reuse), so manifests are reproducible."""
        d = dataclasses.asdict(self)
        for key in ("seconds", "shards_reused", "output"):
            d.pop(key)
        return d

    def format(self) -> str:
        """Human-readable multi-line report."""

        def reasons(counts: dict[str, int]) -> str:
            return "".join(f"\n    {n:6d}  {r}" for r, n in sorted(counts.items(), key=lambda kv: -kv[1]))

        rate = self.sequences / self.seconds if self.seconds > 0 else float("nan")
        return (
            f"prepared {self.output}: {self.sequences} sequences ({self.frames} frames) from "
            f"{self.scenes_used}/{self.scenes} scenes in {self.shards} shards "
            f"({self.shards_reused} reused), {self.seconds:.1f} s ({rate:.2f} sequences/s)"
            f"\n  scenes skipped: {sum(self.scenes_skipped.values())}{reasons(self.scenes_skipped)}"
            f"\n  sequences skipped: {sum(self.sequences_skipped.values())}{reasons(self.sequences_skipped)}"
            f"\n  frames skipped: {sum(self.frames_skipped.values())}{reasons(self.frames_skipped)}"
        )


# ----------------------------------------------------------------------------------------- frames
@dataclass
class FittedView:
    """A view resized to the target size: image ``(H, W, 3)`` uint8, depth ``(H, W)`` float32 metres,
    ``K`` ``(3, 3)`` float64 for the resized image, ``cam_to_world`` ``(4, 4)`` float64."""

    image: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    cam_to_world: np.ndarray
    index: int
    source: str


def fit_view(view: View, image_hw: tuple[int, int], mode: str) -> FittedView:
    """Resize/crop a validated view to ``image_hw``; K through ``fit_intrinsics`` (depth's K), depth with
    nearest sampling, colour from its own resolution with the same mode (same field of view)."""
    depth_hw = tuple(view.depth.shape)
    K, _ = fit_intrinsics(torch.from_numpy(view.K), depth_hw, image_hw, mode)
    depth = resize_depth(view.depth, depth_hw, image_hw, mode)
    image = resize_image(view.image, tuple(view.image.shape[:2]), image_hw, mode)
    return FittedView(
        image=np.asarray(image, dtype=np.uint8),
        depth=np.asarray(depth, dtype=np.float32),
        K=np.asarray(K, dtype=np.float64),
        cam_to_world=view.cam_to_world,
        index=view.index,
        source=view.source,
    )


def reason_key(reason: str) -> str:
    """Group BadFrame reasons for counting: drop parenthesised details, text after a colon and numbers."""
    text = re.sub(r"\s*\([^)]*\)", "", reason).split(":")[0]
    return re.sub(r"-?\d+(\.\d+)?(e[+-]?\d+)?", "N", text).strip() or reason


class _Frames:
    """Loads fitted frames of one scene with a small LRU cache; remembers unreadable frames."""

    def __init__(
        self, scene: SceneReader, image_hw: tuple[int, int], mode: str, bad: dict[int, tuple[str, str]]
    ):
        self.scene, self.image_hw, self.mode, self.bad = scene, image_hw, mode, bad
        self._cache: OrderedDict[int, FittedView] = OrderedDict()

    def get(self, i: int) -> FittedView | None:
        if i in self.bad:
            return None
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        try:
            view = fit_view(self.scene.view(i), self.image_hw, self.mode)
        except BadFrame as exc:
            self.bad[i] = (exc.reason, exc.path)
            return None
        self._cache[i] = view
        if len(self._cache) > _VIEW_CACHE_SIZE:
            self._cache.popitem(last=False)
        return view


def _overlap(anchor: FittedView, other: FittedView, cfg: PrepareConfig) -> float:
    """Fraction of the anchor's token cells with a valid match in ``other`` (sampling.overlap_fraction)."""
    targets = token_targets(
        np.stack([anchor.depth, other.depth]),
        np.stack([anchor.K, other.K]),
        np.stack([anchor.cam_to_world, other.cam_to_world]),
        tuple(cfg.grid),
        query_frame=0,
        rel_tol=cfg.rel_tol,
        border=cfg.border,
    )
    return float(overlap_fraction(targets)[1])


def select_frames(
    frames: _Frames, num_video_frames: int, cfg: PrepareConfig, rng: np.random.Generator, counts: Counter
) -> list[FittedView]:
    """Paper sampling plus the overlap filter; returns the anchor first, then the others by time.

    An unreadable anchor is redrawn anywhere in the video; an unreadable or low-overlap frame is redrawn
    from the anchor's window ``resample_tries`` times, then dropped (``counts[LOW_OVERLAP]`` += 1 when the
    last try was readable but did not overlap enough).
    """
    n = num_video_frames
    num_frames = int(draw_num_frames(rng, cfg.min_frames, cfg.max_frames))
    anchor_index = int(rng.integers(n))
    anchor = frames.get(anchor_index)
    for _ in range(cfg.resample_tries):
        if anchor is not None:
            break
        anchor_index = int(rng.integers(n))
        anchor = frames.get(anchor_index)
    if anchor is None:
        return []
    indices = [int(i) for i in sample_sequence(n, anchor_index, num_frames, cfg.radius, rng=rng)]
    lo, hi = max(0, anchor_index - cfg.radius), min(n - 1, anchor_index + cfg.radius)
    chosen: list[FittedView] = []
    for index in indices[1:]:
        for attempt in range(cfg.resample_tries + 1):
            if attempt:
                index = int(rng.integers(lo, hi + 1))
            view = frames.get(index)
            low = view is not None and cfg.min_overlap > 0 and _overlap(anchor, view, cfg) < cfg.min_overlap
            if view is not None and not low:
                chosen.append(view)
                break
        else:
            if low:
                counts[LOW_OVERLAP] += 1
    chosen.sort(key=lambda v: v.index)
    return [anchor, *chosen]


def sequence_targets(views: list[FittedView], cfg: PrepareConfig) -> dict[str, np.ndarray]:
    """Frames, cameras, tracks and token-grid targets of fitted views (anchor first), as shard arrays."""
    depths = np.stack([v.depth for v in views])
    Ks = np.stack([v.K for v in views])
    poses = np.stack([v.cam_to_world for v in views])
    tt = token_targets(
        depths, Ks, poses, tuple(cfg.grid), query_frame=C.ANCHOR, rel_tol=cfg.rel_tol, border=cfg.border
    )
    tracks = compute_tracks(
        depths,
        Ks,
        poses,
        query_frame=C.ANCHOR,
        grids=tuple((g, g) for g in cfg.track_grids),
        keep_fraction=cfg.track_keep_fraction,
        rel_tol=cfg.rel_tol,
        border=cfg.border,
    )

    def arr(x: Any, dtype: Any) -> np.ndarray:
        return np.ascontiguousarray(torch.as_tensor(x).cpu().numpy(), dtype=dtype)

    return {
        C.FRAMES: np.stack([v.image for v in views]),
        C.INTRINSICS: Ks.astype(np.float32),
        C.CAM_TO_WORLD: poses.astype(np.float32),
        C.FRAME_INDEX: np.array([v.index for v in views], dtype=np.int64),
        C.TOKEN_DEPTH: arr(tt.token_depth, np.float32),
        C.MATCH_INDEX: arr(tt.match_index, np.int64),
        C.MATCH_VALID: arr(tt.valid, bool),
        C.MATCH_DEPTH: arr(tt.match_depth, np.float32),
        C.MATCH_SUBCELL: arr(tt.match_subcell, np.float32),
        C.TRACK_QUERY_UV: arr(tracks.query_uv, np.float32),
        C.TRACK_UV: arr(tracks.uv, np.float32),
        C.TRACK_VISIBLE: arr(tracks.visible, bool),
    }


# ----------------------------------------------------------------------------------------- shard jobs
@dataclass(frozen=True)
class ShardJob:
    """Sequence slots ``[first, last)`` of the global order (scene-major) go to shard ``index``."""

    index: int
    first: int
    last: int
    specs: tuple[str, ...]
    config: PrepareConfig


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "scene"


def _scene_sequences(
    job: ShardJob, scene_index: int, seq_indices: range, stats: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    cfg = job.config
    spec = job.specs[scene_index]
    try:
        scene = open_scene(spec)
    except GaspError as exc:
        stats["scene_errors"][str(scene_index)] = str(exc)
        return
    if len(scene) < 2:
        stats["scene_errors"][str(scene_index)] = f"{spec}: fewer than 2 frames"
        return
    bad: dict[int, tuple[str, str]] = {}
    frames = _Frames(scene, cfg.image_hw, cfg.resize_mode, bad)
    for k in seq_indices:
        rng = np.random.default_rng([cfg.seed, scene_index, k])
        views = select_frames(frames, len(scene), cfg, rng, stats["frames_skipped"])
        if len({v.index for v in views}) < 2:  # the anchor repeated is no correspondence problem
            reason = "no readable anchor frame" if not views else "fewer than 2 usable frames"
            stats["sequences_skipped"][reason] += 1
            continue
        seq = sequence_targets(views, cfg)
        seq[C.SCENE] = scene.name
        seq[C.SEQUENCE_ID] = f"{_safe_name(scene.name)}-{scene_index:04d}-{k:04d}"
        stats["sequences_per_scene"][str(scene_index)] += 1
        stats["frames"] += len(views)
        yield seq
    stats["bad_frames"] += [[scene_index, i, reason, path] for i, (reason, path) in sorted(bad.items())]


def run_shard_job(job: ShardJob, root: str) -> dict[str, Any]:
    """Prepare and write one shard (any process); returns its manifest entry with per-shard stats."""
    cfg = job.config
    stats: dict[str, Any] = {
        "sequences_per_scene": Counter(),
        "sequences_skipped": Counter(),
        "frames_skipped": Counter(),
        "frames": 0,
        "bad_frames": [],
        "scene_errors": {},
    }
    with ShardFileWriter(Path(root) / shard_name(job.index), compress=cfg.compress) as writer:
        slot = job.first
        while slot < job.last:
            scene_index, k = divmod(slot, cfg.sequences_per_scene)
            end = min(job.last, (scene_index + 1) * cfg.sequences_per_scene)
            seq_range = range(k, k + end - slot)
            for seq in _scene_sequences(job, scene_index, seq_range, stats):
                writer.add(seq)
            slot = end
    assert writer.entry is not None
    for key in ("sequences_per_scene", "sequences_skipped", "frames_skipped"):
        stats[key] = dict(sorted(stats[key].items()))
    return {**writer.entry, "stats": stats}


def _worker_init(parent: int) -> None:
    die_with_parent(parent)
    torch.set_num_threads(1)


def _run_job_star(args: tuple[ShardJob, str]) -> dict[str, Any]:
    return run_shard_job(*args)


# ----------------------------------------------------------------------------------------- driver
def summarize(entries: list[dict[str, Any]], num_scenes: int) -> dict[str, Any]:
    """Aggregate per-shard stats of the manifest into the run summary (reproducible: no timings)."""
    per_scene: Counter = Counter()
    seq_skipped: Counter = Counter()
    frames_skipped: Counter = Counter()
    bad: dict[tuple[int, int], str] = {}
    scene_errors: dict[int, str] = {}
    frames = 0
    for entry in entries:
        stats = entry.get("stats", {})
        per_scene.update({int(k): v for k, v in stats.get("sequences_per_scene", {}).items()})
        seq_skipped.update(stats.get("sequences_skipped", {}))
        frames_skipped.update(stats.get("frames_skipped", {}))
        frames += stats.get("frames", 0)
        for scene_index, i, reason, _ in stats.get("bad_frames", []):
            bad[(scene_index, i)] = reason
        scene_errors.update({int(k): v for k, v in stats.get("scene_errors", {}).items()})
    frames_skipped.update(reason_key(r) for r in bad.values())
    scenes_skipped: Counter = Counter()
    for s in range(num_scenes):
        if per_scene[s] == 0:
            scenes_skipped["could not be opened" if s in scene_errors else "no usable sequence"] += 1
    return {
        "scenes": num_scenes,
        "scenes_used": sum(1 for s in range(num_scenes) if per_scene[s] > 0),
        "scenes_skipped": dict(scenes_skipped),
        "sequences": sum(per_scene.values()),
        "sequences_skipped": dict(seq_skipped),
        "frames": frames,
        "frames_skipped": dict(frames_skipped),
        "shards": len(entries),
    }


def _warn_about(entry: dict[str, Any], specs: list[str], seen: set) -> None:
    stats = entry.get("stats", {})
    for scene_index, message in stats.get("scene_errors", {}).items():
        if ("scene", scene_index) not in seen:
            seen.add(("scene", scene_index))
            log.warning("skipping scene %s: %s", specs[int(scene_index)], message)
    for scene_index, i, reason, path in stats.get("bad_frames", []):
        if (scene_index, i) not in seen:
            seen.add((scene_index, i))
            log.warning("skipping frame %s: %s", path, reason)


def plan_jobs(cfg: PrepareConfig) -> list[ShardJob]:
    """Split the ``scenes x sequences_per_scene`` slots into consecutive shards."""
    specs = tuple(cfg.scene_specs())
    total = len(specs) * cfg.sequences_per_scene
    step = cfg.sequences_per_shard
    return [
        ShardJob(i, first, min(first + step, total), specs, cfg)
        for i, first in enumerate(range(0, total, step))
    ]


def prepare(config: PrepareConfig) -> PrepareSummary:
    """Prepare shards from ``config`` (resuming any finished shards in ``config.output``).

    Holds the writer lock of ``config.output`` throughout (:func:`gasp.locks.folder_lock`).

    Returns:
        The run summary (also stored in the manifest).

    Raises:
        ConfigError: no scenes given, or the output folder holds shards of another configuration.
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
    jobs = plan_jobs(config)
    writer = ShardWriter(
        config.output,
        grid=config.grid,
        image_size=config.image_hw,
        config=config.content_dict(),
        num_shards=len(jobs),
    )
    pending = [job for job in jobs if not writer.is_finished(job.index)]
    reused = len(jobs) - len(pending)
    seen: set = set()
    bar = tqdm(total=len(jobs), initial=reused, unit="shard", desc="prepare", disable=not config.progress)
    root = str(writer.root)
    if config.workers > 1 and len(pending) > 1:
        # spawn, not fork: torch's thread pools do not survive a fork safely
        ctx = mp.get_context("spawn")
        with ctx.Pool(
            min(config.workers, len(pending)), initializer=_worker_init, initargs=(os.getpid(),)
        ) as pool:
            for entry in pool.imap_unordered(_run_job_star, [(job, root) for job in pending]):
                writer.record(entry)
                _warn_about(entry, specs, seen)
                bar.update()
    else:
        for job in pending:
            entry = run_shard_job(job, root)
            writer.record(entry)
            _warn_about(entry, specs, seen)
            bar.update()
    bar.close()
    entries = [writer.entry(job.index) for job in jobs]
    summary_dict = summarize([e for e in entries if e is not None], len(specs))
    writer.set_summary(summary_dict)
    summary = PrepareSummary(
        output=str(writer.root),
        shards_reused=reused,
        seconds=time.perf_counter() - start,
        **summary_dict,
    )
    if summary.sequences == 0:
        raise BadInputError(
            f"no usable sequence in {len(specs)} scene(s); nothing to train on.\n{summary.format()}"
        )
    return summary


# ----------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `gasp prepare`: one per PrepareConfig field."""
    add_dataclass_arguments(parser, PrepareConfig)


def run(args: argparse.Namespace) -> int:
    """Entry point of `gasp prepare`."""
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    summary = prepare(apply_overrides(PrepareConfig(), args))
    print(summary.format())
    return 0
