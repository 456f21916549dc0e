"""TUM RGB-D reader.

A sequence folder holds ``rgb.txt`` and ``depth.txt`` (lines ``timestamp filename``, ``#`` comments),
``groundtruth.txt`` (lines ``timestamp tx ty tz qx qy qz qw``: position and orientation of the
colour camera's optical centre in the world, i.e. camera-to-world) and the images. Depth PNGs are
uint16 with 5000 units per metre, 0 = invalid, already registered to colour.

Frames are the depth images that have a colour image and a ground-truth pose within ``max_dt``
seconds (nearest timestamp); others are dropped. Intrinsics: given ``K``, else the Freiburg
calibration chosen by ``camera`` ("fr1", "fr2", "fr3", "ros") or by the folder name
(``rgbd_dataset_freiburg2_xyz`` -> fr2), else the ROS default with a warning. The Freiburg
calibrations are for 640x480 images: a depth image of another size is rejected.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from gasp.data.views import BadFrame, TrajectoryScene, intrinsics_matrix
from gasp.errors import ConfigError

DEPTH_SCALE = 5000.0
DEFAULT_MAX_DT = 0.02
# Colour-camera calibrations published with the data set (depth is registered to colour).
FREIBURG_K = {
    "fr1": intrinsics_matrix(517.3, 516.5, 318.6, 255.3),
    "fr2": intrinsics_matrix(520.9, 521.0, 325.1, 249.7),
    "fr3": intrinsics_matrix(535.4, 539.2, 320.1, 247.6),
    "ros": intrinsics_matrix(525.0, 525.0, 319.5, 239.5),
}
FREIBURG_HW = (480, 640)
_FREIBURG_RE = re.compile(r"(?:freiburg|fr)([123])", re.IGNORECASE)


def is_tum(root: Path) -> bool:
    """Whether ``root`` looks like a TUM RGB-D sequence (rgb.txt, depth.txt, groundtruth.txt)."""
    return all((root / f).is_file() for f in ("rgb.txt", "depth.txt", "groundtruth.txt"))


def read_table(path: Path, columns: int) -> tuple[np.ndarray, list[list[str]]]:
    """Read a TUM list file: timestamps (float64) and the remaining columns of each line, as text.

    Raises:
        BadFrame: missing file, wrong number of columns, or a timestamp that is not a number.
    """
    if not path.is_file():
        raise BadFrame("TUM list file is missing", path)
    stamps, rest = [], []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) != columns:
            raise BadFrame(f"line {n} has {len(parts)} columns, expected {columns}", path)
        try:
            stamps.append(float(parts[0]))
        except ValueError as e:
            raise BadFrame(f"line {n}: timestamp {parts[0]!r} is not a number", path) from e
        rest.append(parts[1:])
    return np.asarray(stamps, dtype=np.float64), rest


def associate(query: np.ndarray, ref: np.ndarray, max_dt: float) -> np.ndarray:
    """For each query timestamp, the index of the nearest reference timestamp, or -1 beyond ``max_dt``."""
    if ref.size == 0:
        return np.full(query.shape, -1, dtype=np.int64)
    order = np.argsort(ref)
    sorted_ref = ref[order]
    pos = np.clip(np.searchsorted(sorted_ref, query), 1, max(1, sorted_ref.size - 1))
    lo, hi = np.maximum(pos - 1, 0), np.minimum(pos, sorted_ref.size - 1)
    pick = np.where(np.abs(sorted_ref[lo] - query) <= np.abs(sorted_ref[hi] - query), lo, hi)
    best = order[pick]
    return np.where(np.abs(ref[best] - query) <= max_dt, best, -1)


def quaternion_pose(t: np.ndarray, q_xyzw: np.ndarray) -> np.ndarray:
    """4x4 float64 pose from a translation (3,) and a quaternion (qx, qy, qz, qw), normalised first.

    A zero or non-finite quaternion gives a non-finite matrix (rejected by validation).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        x, y, z, w = q_xyzw / np.linalg.norm(q_xyzw)
    T = np.eye(4)
    T[:3, :3] = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    T[:3, 3] = t
    return T


def freiburg_intrinsics(root: Path, camera: str | None) -> np.ndarray:
    """The K for ``camera`` (fr1/fr2/fr3/ros) or guessed from the folder name; ROS default with a warning."""
    if camera is not None:
        key = camera.lower()
        if key not in FREIBURG_K:
            raise ConfigError(f"TUM camera {camera!r} unknown; choose one of {sorted(FREIBURG_K)}")
        return FREIBURG_K[key].copy()
    m = _FREIBURG_RE.search(root.resolve().name)
    if m:
        return FREIBURG_K[f"fr{m.group(1)}"].copy()
    warnings.warn(
        f"{root}: cannot tell fr1/fr2/fr3 from the folder name; using the ROS default intrinsics "
        "(fx=fy=525, cx=319.5, cy=239.5). Pass camera= or K= to choose.",
        stacklevel=3,
    )
    return FREIBURG_K["ros"].copy()


class TUM(TrajectoryScene):
    """A TUM RGB-D sequence folder.

    Args:
        root: the folder with rgb.txt, depth.txt, groundtruth.txt.
        max_dt: largest timestamp difference (seconds) for associating colour and pose to depth.
        camera: "fr1" | "fr2" | "fr3" | "ros"; default: guessed from the folder name.
        K: 3x3 depth intrinsics overriding ``camera``.
    """

    def __init__(
        self,
        root: str | Path,
        max_dt: float = DEFAULT_MAX_DT,
        camera: str | None = None,
        K: np.ndarray | None = None,
    ) -> None:
        self.root = Path(root)
        self.name = f"tum/{self.root.name}"
        depth_t, depth_f = read_table(self.root / "depth.txt", 2)
        rgb_t, rgb_f = read_table(self.root / "rgb.txt", 2)
        gt_t, gt_v = read_table(self.root / "groundtruth.txt", 8)
        try:
            gt = np.array(gt_v, dtype=np.float64).reshape(-1, 7)
        except ValueError as e:
            raise BadFrame(f"pose values are not numbers ({e})", self.root / "groundtruth.txt") from e
        rgb_idx = associate(depth_t, rgb_t, max_dt)
        gt_idx = associate(depth_t, gt_t, max_dt)
        keep = np.flatnonzero((rgb_idx >= 0) & (gt_idx >= 0))
        self.dropped = [
            (
                str(self.root / depth_f[k][0]),
                f"no {'colour image' if rgb_idx[k] < 0 else 'ground-truth pose'} within {max_dt} s",
            )
            for k in np.flatnonzero((rgb_idx < 0) | (gt_idx < 0))
        ]
        if keep.size == 0:
            raise BadFrame(
                f"no depth frame has a colour image and a pose within {max_dt} s "
                f"({depth_t.size} depth, {rgb_t.size} colour, {gt_t.size} poses)",
                self.root / "depth.txt",
            )
        self.depth_files = [self.root / depth_f[k][0] for k in keep]
        self.colour_files = [self.root / rgb_f[rgb_idx[k]][0] for k in keep]
        self.poses = [quaternion_pose(gt[gt_idx[k], :3], gt[gt_idx[k], 3:]) for k in keep]
        self.indices = keep.tolist()
        self.frame_ids = [f"{depth_t[k]:.6f}" for k in keep]
        self.pose_sources = [f"{self.root / 'groundtruth.txt'} @ {t}" for t in self.frame_ids]
        self.depth_scale = DEPTH_SCALE
        if K is not None:
            self.K = np.asarray(K, dtype=np.float64)
        else:
            self.K, self.K_hw = freiburg_intrinsics(self.root, camera), FREIBURG_HW
