"""DL3DV reader (any nerfstudio-format scene: ``transforms.json`` + image folders).

```
<scene>/
  images_4/frame_00001.png ...       (or images/, images_2/, images_8/: the first found of
                                      images_4, images, images_2, images_8, or ``images=``)
  transforms.json                    nerfstudio: w, h, fl_x, fl_y, cx, cy, distortion (k1 k2 p1 p2 ...),
                                      camera_model; frames: [{file_path, transform_matrix}, ...]
  colmap/sparse/0/                   optional COLMAP model (cameras, images, points3D; .bin or .txt)
```
- ``transform_matrix`` is camera-to-world in OpenGL axes (x right, y up, z backward); the reader
  flips the camera's y and z axes to OpenCV. Per-frame intrinsics (``fl_x`` ... inside a frame)
  override the global ones.
- The intrinsics are for ``w x h``; the files read (e.g. ``images_4``) are smaller: K is scaled to the
  image actually read, and distortion (``OPENCV``, ``OPENCV_FISHEYE``) is removed.
- ``file_path`` names an image under ``images/``; the same name is read from the chosen folder.
- Poses come from structure-from-motion: arbitrary scale, no depth (run ``gasp annotate``). With
  ``colmap/sparse/0`` the reconstruction's points are mapped into the transforms' world by the
  similarity that best aligns the COLMAP cameras (matched by image name) to the transforms.json
  cameras; the scene is refused when the two disagree.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gasp.data.colmap import Reconstruction, sparse_dir
from gasp.data.sfm import SfMScene, frame_id_of, require_pycolmap, sorted_by_name
from gasp.data.views import BadFrame

IMAGE_DIRS = ("images_4", "images", "images_2", "images_8")
# Largest misfit (relative to the cameras' spread) between colmap/ and transforms.json camera centres.
MAX_ALIGNMENT_ERROR = 0.02


def is_dl3dv(root: Path) -> bool:
    """Whether ``root`` holds transforms.json and an images* folder."""
    return (root / "transforms.json").is_file() and any((root / d).is_dir() for d in IMAGE_DIRS)


def _camera(meta: dict, frame: dict, path: Path):
    """The pycolmap camera (COLMAP pixel convention, like nerfstudio's) of one frame."""
    pycolmap = require_pycolmap()
    get = lambda k, default=None: frame.get(k, meta.get(k, default))  # noqa: E731
    try:
        w, h = int(get("w")), int(get("h"))
        fx, fy, cx, cy = (float(get(k)) for k in ("fl_x", "fl_y", "cx", "cy"))
        k = [float(get(n, 0.0)) for n in ("k1", "k2", "k3", "k4")]
        p = [float(get(n, 0.0)) for n in ("p1", "p2")]
    except (TypeError, ValueError) as e:
        raise BadFrame(f"transforms.json needs w, h, fl_x, fl_y, cx, cy as numbers ({e!r})", path) from e
    model = str(get("camera_model", "OPENCV")).upper()
    if model == "OPENCV_FISHEYE":
        name, params = "OPENCV_FISHEYE", [fx, fy, cx, cy, *k]
    elif model in ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE"):
        if not any(k) and not any(p):
            name, params = "PINHOLE", [fx, fy, cx, cy]
        elif k[2] or k[3]:
            name, params = "FULL_OPENCV", [fx, fy, cx, cy, k[0], k[1], *p, k[2], k[3], 0.0, 0.0]
        else:
            name, params = "OPENCV", [fx, fy, cx, cy, k[0], k[1], *p]
    else:
        raise BadFrame(f"camera_model {model!r} is not supported (OPENCV, OPENCV_FISHEYE, PINHOLE)", path)
    camera = pycolmap.Camera.create_from_model_name(0, name, fx, w, h)
    camera.params = params
    return camera


def _similarity(src: list[np.ndarray], dst: list[np.ndarray]) -> tuple[float, np.ndarray, np.ndarray, float]:
    """Similarity ``x -> s R x + t`` taking camera-to-world poses ``src`` onto ``dst`` (both OpenCV).

    Rotation from the cameras' orientations (chordal mean), scale and translation from their centres.
    Returns (s, R, t, misfit of the centres relative to their spread).
    """
    M = sum(b[:3, :3] @ a[:3, :3].T for a, b in zip(src, dst))
    U, _, Vt = np.linalg.svd(M)
    R = U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt
    ca = np.array([a[:3, 3] for a in src]) @ R.T
    cb = np.array([b[:3, 3] for b in dst])
    da, db = ca - ca.mean(0), cb - cb.mean(0)
    spread = float(np.sqrt((db**2).sum(1).mean()))
    denom = float((da**2).sum())
    s = float((da * db).sum() / denom) if denom > 0 else 1.0
    t = cb.mean(0) - s * ca.mean(0)
    misfit = float(np.sqrt(((s * ca + t - cb) ** 2).sum(1).mean())) / max(spread, 1e-12)
    return s, R, t, misfit


class DL3DV(SfMScene):
    """A DL3DV (nerfstudio) scene (see module docstring).

    Args:
        root: the scene folder.
        images: the image folder to read (default: the first of images_4, images, images_2, images_8).
        depth_root: where ``gasp annotate`` wrote depth (default ``root/gasp_depth``).
    """

    format_name = "DL3DV"

    def __init__(
        self, root: str | Path, images: str | None = None, depth_root: str | Path | None = None
    ) -> None:
        self.root = Path(root)
        self.name = f"dl3dv/{self.root.name}"
        self.images = images or next((d for d in IMAGE_DIRS if (self.root / d).is_dir()), IMAGE_DIRS[0])
        if not (self.root / self.images).is_dir():
            raise BadFrame(f"image folder {self.images}/ does not exist", self.root)
        path = self.root / "transforms.json"
        try:
            meta = json.loads(path.read_text())
            frames = list(meta["frames"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise BadFrame(f"cannot read nerfstudio transforms with a 'frames' list ({e!r})", path) from e
        by_name: dict[str, dict] = {}
        for n, frame in enumerate(frames):
            fp = str(frame.get("file_path", "")) if isinstance(frame, dict) else ""
            if not fp:
                raise BadFrame(f"frame {n} has no file_path", path)
            parts = Path(fp).parts
            by_name["/".join(parts[1:]) if len(parts) > 1 else parts[0]] = frame
        if not by_name:
            raise BadFrame("transforms.json lists no frames", path)
        names = sorted_by_name(list(by_name))
        self.frame_ids = [frame_id_of(n) for n in names]
        self.image_files = [self.root / self.images / n for n in names]
        self.cameras = [_camera(meta, by_name[n], path) for n in names]
        self.poses = []
        for n in names:
            try:
                c2w = np.array(by_name[n]["transform_matrix"], dtype=np.float64).reshape(4, 4)
            except (KeyError, TypeError, ValueError) as e:
                raise BadFrame(f"frame {n}: transform_matrix must be 4x4 ({e!r})", path) from e
            c2w[:, 1:3] *= -1  # OpenGL -> OpenCV camera axes (flip y and z)
            self.poses.append(c2w)
        self.image_names = names
        self.world_points = self._points_from_colmap()
        self._setup_depth(depth_root)

    def _points_from_colmap(self) -> list[np.ndarray] | None:
        model = sparse_dir(self.root / "colmap")
        if model is None:
            return None
        rec = Reconstruction(model)
        pairs = [
            (rec.images[n][1], pose)
            for n, pose in zip(self.image_names, self.poses)
            if n in rec.images and np.isfinite(pose).all()
        ]
        if len(pairs) < 2:
            raise BadFrame(
                f"colmap/ and transforms.json share {len(pairs)} image names: cannot relate their worlds",
                model,
            )
        s, R, t, misfit = _similarity([a for a, _ in pairs], [b for _, b in pairs])
        if misfit > MAX_ALIGNMENT_ERROR:
            raise BadFrame(
                f"colmap/ cameras do not match transforms.json (misfit {misfit:.3g} of the cameras' spread "
                f"after the best similarity): they are different reconstructions",
                model,
            )
        empty = np.zeros((0, 3))
        return [s * rec.images[n][2] @ R.T + t if n in rec.images else empty for n in self.image_names]
