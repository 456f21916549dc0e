"""COLMAP reconstructions: the generic case for any video a user reconstructs themselves.

```
scene/
  images/<name>                      the images the reconstruction was made from
  sparse/0/cameras.bin|txt           cameras (any COLMAP model; distortion is removed on reading)
  sparse/0/images.bin|txt            per image: name, camera, world-to-camera pose, 2D observations
  sparse/0/points3D.bin|txt          3D points (used to align annotated depth)
```
Binary and text models are read by pycolmap. Poses are COLMAP's world-to-camera (OpenCV axes),
inverted to camera-to-world; the unit is the reconstruction's (arbitrary scale). Frames are the
registered images in name order (numbers compared numerically). There is no depth: run
``gasp annotate`` first (see :mod:`gasp.data.sfm`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gasp.data.sfm import SfMScene, frame_id_of, require_pycolmap, sorted_by_name
from gasp.data.views import BadFrame

# Reconstruction points kept for depth alignment: mean reprojection error (pixels) and track length.
MAX_POINT_ERROR = 4.0
MIN_TRACK_LENGTH = 2


def sparse_dir(root: Path) -> Path | None:
    """The reconstruction folder of a scene: ``sparse/0`` (or ``sparse``) holding cameras.bin/.txt."""
    for d in (root / "sparse" / "0", root / "sparse"):
        if (d / "cameras.bin").is_file() or (d / "cameras.txt").is_file():
            return d
    return None


def is_colmap(root: Path) -> bool:
    """Whether ``root`` holds images/ and a COLMAP reconstruction in sparse/0/."""
    return (root / "images").is_dir() and sparse_dir(root) is not None


class Reconstruction:
    """What gasp uses of a COLMAP model: per image name its camera, camera-to-world pose and the
    world points it observes (filtered by error and track length)."""

    def __init__(self, path: Path) -> None:
        pycolmap = require_pycolmap()
        try:
            rec = pycolmap.Reconstruction(str(path))
        except Exception as e:  # pycolmap raises plain RuntimeError/ValueError for any bad file
            raise BadFrame(f"cannot read the COLMAP reconstruction ({e})", path) from e
        self.path = path
        self.cameras = dict(rec.cameras.items())
        good = {
            pid: p.xyz
            for pid, p in rec.points3D.items()
            if p.error <= MAX_POINT_ERROR and p.track.length() >= MIN_TRACK_LENGTH
        }
        self.images: dict[str, tuple[int, np.ndarray, np.ndarray]] = {}
        for image in rec.images.values():
            if not image.has_pose:
                continue
            w2c = np.eye(4)
            w2c[:3] = np.asarray(image.cam_from_world().matrix(), dtype=np.float64)
            ids = [p.point3D_id for p in image.points2D if p.has_point3D() and p.point3D_id in good]
            xyz = np.array([good[i] for i in ids], dtype=np.float64).reshape(-1, 3)
            self.images[image.name] = (image.camera_id, np.linalg.inv(w2c), xyz)
        if not self.images:
            raise BadFrame("the reconstruction has no registered image", path)


class Colmap(SfMScene):
    """A COLMAP scene: images/ + sparse/0/ (see module docstring).

    Args:
        root: the scene folder.
        depth_root: where ``gasp annotate`` wrote depth (default ``root/gasp_depth``).
    """

    format_name = "COLMAP"

    def __init__(self, root: str | Path, depth_root: str | Path | None = None) -> None:
        self.root = Path(root)
        self.name = f"colmap/{self.root.name}"
        model = sparse_dir(self.root)
        if model is None:
            raise BadFrame("no COLMAP reconstruction (sparse/0/cameras.bin or .txt)", self.root)
        rec = Reconstruction(model)
        names = sorted_by_name(list(rec.images))
        self.frame_ids = [frame_id_of(n) for n in names]
        self.image_files = [self.root / "images" / n for n in names]
        self.cameras = [rec.cameras[rec.images[n][0]] for n in names]
        self.poses = [rec.images[n][1] for n in names]
        self.world_points = [rec.images[n][2] for n in names]
        self._setup_depth(depth_root)
