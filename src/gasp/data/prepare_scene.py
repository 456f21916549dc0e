"""One scene of `gasp prepare`: draw its sequences (paper sampling + overlap filter), store its frames.

Two passes keep memory small: sampling reads frames and keeps only a low-resolution depth map per
frame for the overlap check; then the frames some sequence uses are read again in video order and
encoded into the scene file.
"""

from __future__ import annotations

import io
import zipfile
from collections import Counter, OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from gasp.data.prepare_summary import LOW_OVERLAP, new_stats
from gasp.data.registry import open_scene
from gasp.data.store import SCENES_DIR
from gasp.data.store_write import SceneFileWriter
from gasp.data.views import BadFrame, SceneReader, View
from gasp.errors import GaspError
from gasp.geometry.cameras import fit_intrinsics, resize_depth
from gasp.geometry.sampling import draw_num_frames, overlap_fraction, sample_sequence
from gasp.geometry.token_grid import token_targets

if TYPE_CHECKING:
    from gasp.data.prepare import PrepareConfig

OVERLAP_CELL_PX = 16  # the overlap check runs on depth resized to this many pixels per cell
VIEW_CACHE_BYTES = 256 * 2**20  # full views kept for the writing pass (small scenes: each frame read once)


class LowResFrames:
    """Depth, K and pose of frames at the overlap check's resolution, cached; remembers bad frames."""

    def __init__(self, scene: SceneReader, cfg: PrepareConfig):
        self.scene, self.cfg = scene, cfg
        self.hw = (cfg.overlap_grid[0] * OVERLAP_CELL_PX, cfg.overlap_grid[1] * OVERLAP_CELL_PX)
        self.bad: dict[int, tuple[str, str]] = {}
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._views: OrderedDict[int, View] = OrderedDict()
        self._view_bytes = 0

    def view(self, i: int) -> View:
        """The full view of a readable frame (from the small cache, else read again)."""
        if i in self._views:
            return self._views[i]
        return self.scene.view(i)

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        if i in self.bad:
            return None
        if i not in self._cache:
            try:
                view = self.scene.view(i)
            except BadFrame as exc:
                self.bad[i] = (exc.reason, exc.path)
                return None
            hw = tuple(view.depth.shape)
            K, _ = fit_intrinsics(torch.from_numpy(view.K), hw, self.hw, "resize")
            depth = resize_depth(view.depth, hw, self.hw, "resize")
            self._cache[i] = (np.asarray(depth), K.numpy(), view.cam_to_world)
            self._views[i] = view
            self._view_bytes += view.image.nbytes + view.depth.nbytes
            while self._view_bytes > VIEW_CACHE_BYTES:
                old = self._views.popitem(last=False)[1]
                self._view_bytes -= old.image.nbytes + old.depth.nbytes
        return self._cache[i]

    def overlap(self, a: int, b: int) -> float:
        """Fraction of anchor ``a``'s overlap-grid cells with a valid match in frame ``b``."""
        (da, Ka, Pa), (db, Kb, Pb) = self._cache[a], self._cache[b]
        targets = token_targets(
            np.stack([da, db]),
            np.stack([Ka, Kb]),
            np.stack([Pa, Pb]),
            tuple(self.cfg.overlap_grid),
            query_frame=0,
            rel_tol=self.cfg.rel_tol,
            border=self.cfg.border,
        )
        return float(overlap_fraction(targets)[1])


def select_frames(
    frames: LowResFrames, n: int, cfg: PrepareConfig, rng: np.random.Generator, stats: dict[str, Any]
) -> list[int]:
    """Paper sampling plus the overlap filter: reader positions, the anchor first, then the others in
    time order.

    An unreadable anchor is redrawn anywhere in the video; an unreadable or low-overlap frame is redrawn
    from the anchor's window ``resample_tries`` times, then dropped (counted as low overlap when the last
    try was readable but did not overlap enough).
    """
    num_frames = int(draw_num_frames(rng, cfg.min_frames, cfg.max_frames))
    anchor = int(rng.integers(n))
    for _ in range(cfg.resample_tries):
        if frames.get(anchor) is not None:
            break
        anchor = int(rng.integers(n))
    if frames.get(anchor) is None:
        return []
    indices = sample_sequence(n, anchor, num_frames, cfg.radius, rng=rng)
    lo, hi = max(0, anchor - cfg.radius), min(n - 1, anchor + cfg.radius)
    chosen: list[int] = []
    for index in indices[1:]:
        for attempt in range(cfg.resample_tries + 1):
            if attempt:
                index = int(rng.integers(lo, hi + 1))
            ok = frames.get(index) is not None
            low = ok and cfg.min_overlap > 0 and frames.overlap(anchor, index) < cfg.min_overlap
            if ok and not low:
                chosen.append(index)
                break
        else:
            if low:
                stats["low_overlap"] += 1
    return [anchor, *sorted(chosen)]


def _entry(scene_id: int, spec: str, name: str, stats: dict[str, Any]) -> dict[str, Any]:
    stats["sequences_skipped"] = dict(sorted(stats["sequences_skipped"].items()))
    return {
        "id": scene_id,
        "spec": spec,
        "name": name,
        "file": None,
        "bytes": 0,
        "crc32": 0,
        "num_frames": 0,
        "num_sequences": 0,
        "stats": stats,
    }


def write_scene(scene_id: int, spec: str, cfg: PrepareConfig, root: Path) -> dict[str, Any]:
    """Draw scene ``scene_id``'s sequences and write its file; returns its manifest entry."""
    stats = new_stats()
    try:
        scene = open_scene(spec)
    except GaspError as exc:
        stats["scene_error"] = str(exc)
        return _entry(scene_id, spec, spec, stats)
    stats["dropped"] = [[str(path), str(reason)] for path, reason in scene.dropped]
    if len(scene) < 2:
        stats["scene_error"] = f"{spec}: fewer than 2 frames"
        return _entry(scene_id, spec, scene.name, stats)
    frames = LowResFrames(scene, cfg)
    sequences: list[tuple[int, list[int]]] = []
    skipped: Counter = stats["sequences_skipped"]
    for k in range(cfg.sequences_per_scene):
        rng = np.random.default_rng([cfg.seed, scene_id, k])
        picked = select_frames(frames, len(scene), cfg, rng, stats)
        if len(set(picked)) < 2:  # the anchor repeated is no correspondence problem
            skipped["no readable anchor frame" if not picked else "fewer than 2 usable frames"] += 1
            continue
        sequences.append((k, picked))
        stats["frames"] += len(picked)
    stats["bad_frames"] = [[i, reason, path] for i, (reason, path) in sorted(frames.bad.items())]
    entry = _entry(scene_id, spec, scene.name, stats)
    if not sequences:
        return entry
    used = sorted({i for _, picked in sequences for i in picked})
    stored = {i: pos for pos, i in enumerate(used)}
    writer = SceneFileWriter(root / SCENES_DIR / f"{scene_id:05d}.zip", cfg.image_format, cfg.jpeg_quality)
    with writer:
        for i in used:
            writer.add_frame(frames.view(i))
        writer.finish(
            [np.array([stored[i] for i in picked], dtype=np.int32) for _, picked in sequences],
            [k for k, _ in sequences],
        )
    entry.update(writer.entry(), num_sequences=len(sequences))
    return entry


def scene_sequences(root: Path, entry: dict[str, Any]) -> dict[str, np.ndarray]:
    """The index arrays of one recorded scene, read from its file (empty for a scene without one)."""
    if not entry.get("file"):
        empty = np.zeros(0, dtype=np.int32)
        return {"scene": empty, "number": empty, "num_frames": empty, "frames": empty}
    with zipfile.ZipFile(root / entry["file"]) as zf:
        flat, lengths, numbers = (
            np.load(io.BytesIO(zf.read(f"sequence_{name}.npy")), allow_pickle=False)
            for name in ("frames", "lengths", "numbers")
        )
    return {
        "scene": np.full(len(lengths), int(entry["id"]), dtype=np.int32),
        "number": numbers,
        "num_frames": lengths,
        "frames": flat,
    }


__all__ = ["LOW_OVERLAP", "LowResFrames", "scene_sequences", "select_frames", "write_scene"]
