"""Redwood / Open3D RGB-D reader.

A folder with ``color/*.jpg|png``, ``depth/*.png`` (uint16 millimetres, 0 = invalid), a trajectory in
the Redwood ``.log`` format (blocks of a metadata line ``i j k`` and a 4x4 camera-to-world matrix,
one block per frame in order) and optionally ``camera_primesense.json`` (Open3D
PinholeCameraIntrinsic: ``width``, ``height``, column-major ``intrinsic_matrix``) and ``rgbd.match``
(lines ``depth/NNNNN.png color/NNNNN.jpg`` pairing the images). Without a camera file the PrimeSense
default (fx = fy = 525, cx = 319.5, cy = 239.5, for 640x480) is used. A depth image of another size
than the camera file's (or 640x480) is rejected.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gasp.data.views import BadFrame, TrajectoryScene, intrinsics_matrix

PRIMESENSE_K = intrinsics_matrix(525.0, 525.0, 319.5, 239.5)
CAMERA_FILE = "camera_primesense.json"
DEPTH_SCALE = 1000.0
PREFERRED_LOG = "trajectory.log"
_IMAGE_EXT = (".jpg", ".jpeg", ".png")


def is_redwood(root: Path) -> bool:
    """Whether ``root`` looks like a Redwood/Open3D folder (color/, depth/ and a .log file)."""
    return (root / "color").is_dir() and (root / "depth").is_dir() and any(root.glob("*.log"))


def read_log(path: Path) -> list[np.ndarray]:
    """Parse a Redwood ``.log`` trajectory into a list of 4x4 float64 camera-to-world matrices.

    Raises:
        BadFrame: missing file, or a block that is not 3 metadata numbers + 16 matrix numbers.
    """
    if not path.is_file():
        raise BadFrame("trajectory .log file is missing", path)
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    if len(lines) % 5:
        raise BadFrame(f"a .log file is blocks of 5 lines (i j k, then 4x4); found {len(lines)} lines", path)
    poses = []
    for b in range(len(lines) // 5):
        meta, rows = lines[5 * b], lines[5 * b + 1 : 5 * b + 5]
        try:
            if len(meta) != 3 or any(len(r) != 4 for r in rows):
                raise ValueError("wrong number of values")
            poses.append(np.array(rows, dtype=np.float64))
        except ValueError as e:
            raise BadFrame(f"block {b} (line {5 * b + 1}) is not 'i j k' + a 4x4 matrix ({e})", path) from e
    return poses


def read_open3d_intrinsics(path: Path) -> tuple[np.ndarray, tuple[int, int] | None]:
    """Read an Open3D PinholeCameraIntrinsic json (column-major ``intrinsic_matrix``) as 3x3 K.

    Returns:
        K and the image size ``(height, width)`` the json states (None when it has none).

    Raises:
        BadFrame: unreadable json or a missing/ill-sized ``intrinsic_matrix``.
    """
    try:
        data = json.loads(path.read_text())
        K = np.array(data["intrinsic_matrix"], dtype=np.float64)
        hw = (int(data["height"]), int(data["width"])) if "height" in data and "width" in data else None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BadFrame(f"camera json must hold a 9-number 'intrinsic_matrix' ({e!r})", path) from e
    if K.size != 9:
        raise BadFrame(f"'intrinsic_matrix' must hold 9 numbers, found {K.size}", path)
    return K.reshape(3, 3).T, hw  # stored column-major


class Redwood(TrajectoryScene):
    """A Redwood / Open3D RGB-D folder.

    Args:
        root: the folder.
        trajectory: the .log file to use (name inside root or a path); default ``trajectory.log`` if
            present, else the only ``*.log`` in the folder.
        K: optional 3x3 depth intrinsics overriding the camera json / default.
    """

    def __init__(
        self, root: str | Path, trajectory: str | Path | None = None, K: np.ndarray | None = None
    ) -> None:
        self.root = Path(root)
        self.name = f"redwood/{self.root.name}"
        depth_dir = self.root / "depth"
        if not depth_dir.is_dir():
            raise BadFrame("Redwood folder has no depth/ subfolder", self.root)
        self.depth_files = sorted(depth_dir.glob("*.png"))
        if not self.depth_files:
            raise BadFrame("no depth frames (depth/*.png)", depth_dir)
        self.colour_files = self._pair_colour()
        self.log_path = self._choose_log(trajectory)
        self.poses = read_log(self.log_path)
        if len(self.poses) != len(self.depth_files):
            raise BadFrame(
                f"trajectory has {len(self.poses)} poses but depth/ has {len(self.depth_files)} frames",
                self.log_path,
            )
        self.frame_ids = [p.stem for p in self.depth_files]
        self.indices = list(range(len(self.depth_files)))
        self.pose_sources = [f"{self.log_path} block {i}" for i in self.indices]
        self.depth_scale = DEPTH_SCALE
        if K is not None:
            self.K = np.asarray(K, dtype=np.float64)
        elif (self.root / CAMERA_FILE).is_file():
            self.K, self.K_hw = read_open3d_intrinsics(self.root / CAMERA_FILE)
        else:
            self.K, self.K_hw = PRIMESENSE_K.copy(), (480, 640)

    def _pair_colour(self) -> list[Path]:
        match = self.root / "rgbd.match"
        if match.is_file():
            pairs = dict(ln.split()[:2] for ln in match.read_text().splitlines() if len(ln.split()) >= 2)
            out = []
            for d in self.depth_files:
                key = f"depth/{d.name}"
                if key not in pairs:
                    raise BadFrame(f"{key} has no colour image listed", match)
                out.append(self.root / pairs[key])
            return out
        colour = {
            p.stem: p for p in sorted((self.root / "color").iterdir()) if p.suffix.lower() in _IMAGE_EXT
        }
        return [colour.get(d.stem, self.root / "color" / f"{d.stem}.jpg") for d in self.depth_files]

    def _choose_log(self, trajectory: str | Path | None) -> Path:
        if trajectory is not None:
            p = Path(trajectory)
            return p if p.is_absolute() else self.root / p
        if (self.root / PREFERRED_LOG).is_file():
            return self.root / PREFERRED_LOG
        logs = sorted(self.root.glob("*.log"))
        if len(logs) != 1:
            names = ", ".join(p.name for p in logs) or "none"
            raise BadFrame(f"cannot choose a trajectory .log (found: {names}); pass trajectory=", self.root)
        return logs[0]
