"""Cheap in-memory prepared data (the ``gasp.data.store`` interface) for loader tests (no tests here).

Each scene is a camera sliding sideways in front of a textured wall: views cost microseconds, so
thousands of sequences can be drawn through the real loader. The index is drawn with the paper's
sampling (:func:`draw_index`: the same draws as `gasp prepare` with --min-overlap 0).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from gasp.data.views import View
from gasp.errors import BadInputError
from gasp.geometry.sampling import draw_num_frames, sample_sequence


class SequenceIndex:
    """The sequences as flat numpy arrays (no per-sequence objects).

    Attributes:
        scene: ``(S,)`` int32 scene id of each sequence.
        num_frames: ``(S,)`` int16 F of each sequence, anchor included.
    """

    def __init__(self, scene: np.ndarray, offsets: np.ndarray, flat: np.ndarray, names: Sequence[str]):
        self.scene = np.asarray(scene, dtype=np.int32)
        self._offsets = np.asarray(offsets, dtype=np.int64)
        self._flat = np.asarray(flat, dtype=np.int32)
        self.num_frames = np.diff(self._offsets).astype(np.int16)
        self._names = list(names)
        self._first = np.searchsorted(self.scene, np.arange(len(self._names)), side="left")

    def __len__(self) -> int:
        return int(self.scene.shape[0])

    def frames(self, i: int) -> np.ndarray:
        """``(F,)`` int32 stored-frame positions of sequence ``i``, anchor first."""
        return self._flat[self._offsets[i] : self._offsets[i + 1]]

    def sequence_id(self, i: int) -> str:
        s = int(self.scene[i])
        return f"{_safe_name(self._names[s])}-{s:04d}-{int(i - self._first[s]):04d}"


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "scene"


def draw_index(lengths: list[int], names: list[str], cfg: dict[str, Any]) -> SequenceIndex:
    """The paper's sequences of scenes with ``lengths`` frames (see the module docstring)."""
    seed, per_scene = int(cfg["seed"]), int(cfg["sequences_per_scene"])
    lo, hi, radius = int(cfg["min_frames"]), int(cfg["max_frames"]), int(cfg["radius"])
    scene, offsets, flat = [], [0], []
    for s, n in enumerate(lengths):
        if n < 2:
            continue
        for k in range(per_scene):
            rng = np.random.default_rng([seed, s, k])
            f = draw_num_frames(rng, lo, hi)
            anchor = int(rng.integers(n))
            flat += sample_sequence(n, anchor, f, radius, rng=rng)
            scene.append(s)
            offsets.append(len(flat))
    if not scene:
        raise BadInputError("no scene has 2 or more frames: nothing to sample")
    return SequenceIndex(np.array(scene), np.array(offsets), np.array(flat), names)


class WallScenes:
    """``num_scenes`` scenes of ``frames_per_scene`` frames, ``sequences_per_scene`` sequences each."""

    def __init__(
        self,
        num_scenes: int = 3,
        frames_per_scene: int = 60,
        sequences_per_scene: int = 10,
        min_frames: int = 8,
        max_frames: int = 24,
        radius: int = 48,
        seed: int = 0,
        hw: tuple[int, int] = (16, 16),
    ) -> None:
        self.root = None
        self.hw = hw
        self.frames_per_scene = frames_per_scene
        self.scenes = [f"wall-{s}" for s in range(num_scenes)]
        self.config = dict(
            seed=seed,
            sequences_per_scene=sequences_per_scene,
            min_frames=min_frames,
            max_frames=max_frames,
            radius=radius,
        )
        self.index = draw_index([frames_per_scene] * num_scenes, self.scenes, self.config)
        self.decoded: list[tuple[int, int]] = []  # (scene, frame) of every view() call

    def view(self, scene: int, frame: int) -> View:
        self.decoded.append((int(scene), int(frame)))
        h, w = self.hw
        f = 0.8 * w
        K = np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]])
        pose = np.eye(4)
        pose[0, 3] = 0.02 * frame  # metres sideways per frame
        rng = np.random.default_rng([scene, frame])
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        depth = np.full((h, w), 2.0 + 0.5 * scene, dtype=np.float32)
        return View(image, depth, K, pose, f"frame-{frame:06d}", int(frame), f"wall {scene} frame {frame}")

    def views(self, scene: int, frames) -> list[View]:
        return [self.view(scene, f) for f in frames]
