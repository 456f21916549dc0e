"""Microsoft 7-Scenes reader.

One sequence folder holds ``frame-XXXXXX.color.png`` (or ``.color.jpg``), ``frame-XXXXXX.depth.png``
(uint16 millimetres; 0 and 65535 mean invalid) and ``frame-XXXXXX.pose.txt`` (4x4 camera-to-world,
metres). Intrinsics come from ``camera-intrinsics.txt`` (3x3) when present, else the data set's
default fx = fy = 585, cx = 320, cy = 240, which is for its 640x480 depth: a depth image of another
size is rejected (the data set has only 640x480 images, so it does not say how K would scale).

Colour and depth cameras of 7-Scenes are not registered to each other; the View treats colour as
covering depth's field of view (as the data set's users usually do). Check geometry depth-to-depth.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from gasp.data.views import (
    BadFrame,
    SceneReader,
    View,
    intrinsics_matrix,
    read_depth_png,
    read_image,
    read_matrix,
)

DEFAULT_K = intrinsics_matrix(585.0, 585.0, 320.0, 240.0)
DEFAULT_K_HW = (480, 640)
INTRINSICS_FILE = "camera-intrinsics.txt"
DEPTH_SCALE = 1000.0  # millimetres
INVALID_DEPTH = (0, 65535)
_FRAME_RE = re.compile(r"^(frame-(\d+))\.(?:color\.(?:png|jpg)|depth\.png|pose\.txt)$")


def is_sevenscenes(root: Path) -> bool:
    """Whether ``root`` looks like a 7-Scenes sequence folder."""
    return root.is_dir() and any(root.glob("frame-*.pose.txt"))


class SevenScenes(SceneReader):
    """A 7-Scenes sequence folder (e.g. ``redkitchen/seq-01``).

    Frames are every ``frame-XXXXXX`` that has any of its three files (a frame missing one of them
    raises BadFrame when loaded); ``View.index`` is the number XXXXXX.

    Args:
        root: the sequence folder.
        K: optional 3x3 depth intrinsics overriding the folder's file and the default.
    """

    def __init__(self, root: str | Path, K: np.ndarray | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise BadFrame("7-Scenes folder does not exist", self.root)
        ids = sorted({m.group(1) for p in self.root.iterdir() if (m := _FRAME_RE.match(p.name))})
        if not ids:
            raise BadFrame(
                "no 7-Scenes frames (frame-XXXXXX.{color.png|color.jpg,depth.png,pose.txt})", self.root
            )
        self.frame_ids = ids
        self.name = f"7scenes/{self.root.name}"
        self.K_hw: tuple[int, int] | None = None
        if K is not None:
            self.K = np.asarray(K, dtype=np.float64)
        elif (self.root / INTRINSICS_FILE).is_file():
            self.K = read_matrix(self.root / INTRINSICS_FILE, (3, 3), "intrinsics")
        else:
            self.K, self.K_hw = DEFAULT_K.copy(), DEFAULT_K_HW

    def _load_view(self, i: int) -> View:
        fid = self.frame_ids[i]
        colour = self.root / f"{fid}.color.png"
        if not colour.is_file():
            colour = self.root / f"{fid}.color.jpg"
        depth_path = self.root / f"{fid}.depth.png"
        pose_path = self.root / f"{fid}.pose.txt"
        return View(
            image=read_image(colour),
            depth=read_depth_png(depth_path, DEPTH_SCALE, INVALID_DEPTH),
            K=self.K.copy(),
            cam_to_world=read_matrix(pose_path, (4, 4), "pose"),
            frame_id=fid,
            index=int(fid.split("-")[1]),
            source=f"{depth_path} (+ {colour}, {pose_path})",
            intrinsics_hw=self.K_hw,
        )
