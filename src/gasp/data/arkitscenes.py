"""ARKitScenes reader: one video of the ``raw`` release.

```
<video_id>/
  lowres_wide/<video_id>_<timestamp>.png             RGB, 256x192 (60 fps)
  lowres_depth/<video_id>_<timestamp>.png            uint16 depth in millimetres, 256x192, 0 = invalid
  lowres_wide_intrinsics/<video_id>_<timestamp>.pincam   one line "w h fx fy cx cy"
  lowres_wide.traj                                   lines "timestamp ax ay az tx ty tz"
```
``lowres_wide.traj`` holds, per line, an angle-axis rotation (radians) and a translation of the
world-to-camera transform (as the data set's own loader reads it); the reader inverts it to
camera-to-world (OpenCV axes, metres). Poses have their own timestamps: each depth frame takes the pose
nearest in time, and a frame without a pose within ``max_dt`` seconds (default 5 ms, the data set
loader's tolerance) is left out and listed in ``dropped`` with the time to the nearest pose. A
``.pincam`` may be stamped 1 ms apart from its image (the loader looks 1 ms either side; so does this
reader). Frames are the depth images; ``View.index`` is a frame's position among them in time.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from gasp.data.tum import associate
from gasp.data.views import (
    BadFrame,
    SceneReader,
    View,
    intrinsics_matrix,
    read_depth_png,
    read_image,
    read_numbers,
)

DEPTH_SCALE = 1000.0
DEFAULT_MAX_DT = 0.005
TRAJECTORY = "lowres_wide.traj"
_NAME_RE = re.compile(r"^(?P<video>.+)_(?P<ts>\d+(?:\.\d+)?)$")


def is_arkitscenes(root: Path) -> bool:
    """Whether ``root`` looks like an ARKitScenes raw video (lowres_wide.traj and lowres_depth/)."""
    return (root / TRAJECTORY).is_file() and (root / "lowres_depth").is_dir()


def angle_axis_matrix(r: np.ndarray) -> np.ndarray:
    """3x3 rotation of an angle-axis vector (Rodrigues' formula); identity for a zero vector."""
    theta = float(np.linalg.norm(r))
    if theta < 1e-12:
        return np.eye(3)
    k = r / theta
    Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * Kx + (1 - np.cos(theta)) * Kx @ Kx


def read_traj(path: Path) -> tuple[np.ndarray, list[np.ndarray]]:
    """Timestamps (N,) and camera-to-world poses (4x4 each) of a ``.traj`` file.

    Raises:
        BadFrame: missing file, or a line that is not 7 numbers (the line number is named).
    """
    if not path.is_file():
        raise BadFrame("trajectory file is missing", path)
    stamps, poses = [], []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            values = np.array(parts, dtype=np.float64)
            if values.size != 7:
                raise ValueError(f"{values.size} values")
        except ValueError as e:
            raise BadFrame(f"line {n} must be 'timestamp ax ay az tx ty tz' ({e})", path) from e
        world_to_cam = np.eye(4)
        world_to_cam[:3, :3] = angle_axis_matrix(values[1:4])
        world_to_cam[:3, 3] = values[4:7]
        stamps.append(values[0])
        poses.append(np.linalg.inv(world_to_cam))
    return np.asarray(stamps), poses


def read_pincam(path: Path) -> tuple[np.ndarray, tuple[int, int]]:
    """K and the image size ``(H, W)`` of a ``.pincam`` file ("w h fx fy cx cy").

    Raises:
        BadFrame: missing file or not six numbers.
    """
    v = read_numbers(path, "intrinsics")
    if v.size != 6:
        raise BadFrame(f".pincam must hold 6 numbers 'w h fx fy cx cy', found {v.size}", path)
    return intrinsics_matrix(*v[2:]), (int(v[1]), int(v[0]))


class ARKitScenes(SceneReader):
    """One ARKitScenes raw video (see module docstring).

    Args:
        root: the video folder.
        max_dt: largest time (seconds) between a frame and its pose.
    """

    def __init__(self, root: str | Path, max_dt: float = DEFAULT_MAX_DT) -> None:
        self.root = Path(root)
        self.name = f"arkitscenes/{self.root.name}"
        frames = []
        for p in (self.root / "lowres_depth").glob("*.png"):
            m = _NAME_RE.match(p.stem)
            if m:
                frames.append((float(m["ts"]), m["ts"], m["video"], p))
        if not frames:
            raise BadFrame(
                "no depth frames (lowres_depth/<video>_<timestamp>.png)", self.root / "lowres_depth"
            )
        frames.sort()
        traj_t, traj_poses = read_traj(self.root / TRAJECTORY)
        stamps = np.array([f[0] for f in frames])
        nearest = associate(stamps, traj_t, np.inf)
        self.frame_ids, self.indices, self.depth_files, self.poses, self.pose_sources = [], [], [], [], []
        self.dropped = []
        for pos, ((t, ts, video, path), k) in enumerate(zip(frames, nearest)):
            gap = abs(traj_t[k] - t) if k >= 0 else np.inf
            if gap > max_dt:
                self.dropped.append((str(path), f"no pose within {max_dt} s (nearest is {gap:.3g} s away)"))
                continue
            self.frame_ids.append(f"{video}_{ts}")
            self.indices.append(pos)
            self.depth_files.append(path)
            self.poses.append(traj_poses[k])
            self.pose_sources.append(f"{self.root / TRAJECTORY} @ {float(traj_t[k])!r}")
        if not self.frame_ids:
            raise BadFrame(
                f"no depth frame has a pose within {max_dt} s ({len(frames)} frames, {traj_t.size} poses)",
                self.root / TRAJECTORY,
            )

    def _intrinsics_file(self, fid: str) -> Path:
        folder = self.root / "lowres_wide_intrinsics"
        path = folder / f"{fid}.pincam"
        if path.is_file():
            return path
        video, ts = fid.rsplit("_", 1)
        for delta in (-0.001, 0.001):
            alt = folder / f"{video}_{float(ts) + delta:.3f}.pincam"
            if alt.is_file():
                return alt
        return path

    def _load_view(self, i: int) -> View:
        fid, depth_path = self.frame_ids[i], self.depth_files[i]
        colour = self.root / "lowres_wide" / f"{fid}.png"
        pincam = self._intrinsics_file(fid)
        K, K_hw = read_pincam(pincam)
        return View(
            image=read_image(colour),
            depth=read_depth_png(depth_path, DEPTH_SCALE),
            K=K,
            cam_to_world=self.poses[i].copy(),
            frame_id=fid,
            index=self.indices[i],
            source=f"{depth_path} (+ {colour}, {pincam}, {self.pose_sources[i]})",
            intrinsics_hw=K_hw,
            scale_intrinsics=True,
        )
