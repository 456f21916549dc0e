"""Cheap in-memory prepared data (the ``gasp.data.store`` interface) for loader tests (no tests here).

Each scene is a camera sliding sideways in front of a textured wall: views cost microseconds, so
thousands of sequences can be drawn through the real loader. The index is drawn with the paper's
sampling (gasp.data.store_standin.draw_index).
"""

from __future__ import annotations

import numpy as np

from gasp.data.store_standin import draw_index
from gasp.data.views import View


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
