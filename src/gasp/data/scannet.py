"""ScanNet reader: a scene exported from its ``.sens`` file by the official SensReader (python).

```
scene0000_00/
  color/<N>.jpg                    colour, 1296x968 (N = frame number in the .sens, from 0)
  depth/<N>.png                    uint16 depth in millimetres (depth shift 1000), 640x480, 0 = invalid
  pose/<N>.txt                     4x4 camera-to-world (OpenCV axes, metres); lost tracking: -inf rows
  intrinsic/intrinsic_depth.txt    4x4, K of the depth camera (top-left 3x3)
  intrinsic/intrinsic_color.txt    4x4, K of the colour camera
```
The exporter may skip frames (``frame_skip``: numbering keeps the .sens index) and resize the images
(``image_size``; the intrinsics files stay those of the .sens, 640x480 depth and 1296x968 colour): K is
scaled to the image sizes read. Colour is resampled into the depth camera (through both K; the two
sensors' small offset is ignored, as ScanNet's own tools do), so colour and depth cover the same view.
A frame whose pose is ``-inf`` (tracking lost) is rejected when loaded ("pose is not finite").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gasp.data.folder import _files_by_stem, _sort_key
from gasp.data.remap import resample_pinhole
from gasp.data.views import (
    ASPECT_RTOL,
    BadFrame,
    SceneReader,
    View,
    read_depth_png,
    read_image,
    read_matrix,
)
from gasp.geometry.cameras import fit_intrinsics

DEPTH_SCALE = 1000.0
DEPTH_HW = (480, 640)  # the .sens depth resolution of every ScanNet v2 scene
COLOUR_HW = (968, 1296)


def is_scannet(root: Path) -> bool:
    """Whether ``root`` looks like a SensReader export (pose/ and intrinsic/intrinsic_depth.txt)."""
    return (root / "pose").is_dir() and (root / "intrinsic" / "intrinsic_depth.txt").is_file()


def _scaled(K: np.ndarray, given_hw: tuple[int, int], hw: tuple[int, int]) -> np.ndarray:
    return K if tuple(hw) == given_hw else fit_intrinsics(K, given_hw, hw)[0].numpy().astype(np.float64)


class ScanNet(SceneReader):
    """A ScanNet scene exported by SensReader (see module docstring).

    Args:
        root: the scene folder (color/, depth/, pose/, intrinsic/).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.name = f"scannet/{self.root.name}"
        self.colour = _files_by_stem(self.root / "color", (".jpg", ".jpeg", ".png"))
        self.depth = _files_by_stem(self.root / "depth", (".png",))
        self.poses = _files_by_stem(self.root / "pose", (".txt",))
        ids = sorted(set(self.colour) | set(self.depth) | set(self.poses), key=_sort_key)
        if not ids:
            raise BadFrame("no ScanNet frames (color/<N>.jpg, depth/<N>.png, pose/<N>.txt)", self.root)
        bad = [i for i in ids if not i.isdigit()]
        if bad:
            raise BadFrame(f"frame names must be numbers (SensReader export), found {bad[0]!r}", self.root)
        self.frame_ids = ids
        self.K_depth = read_matrix(self.root / "intrinsic" / "intrinsic_depth.txt", (4, 4), "intrinsics")[
            :3, :3
        ]
        colour_k = self.root / "intrinsic" / "intrinsic_color.txt"
        self.K_colour = read_matrix(colour_k, (4, 4), "intrinsics")[:3, :3] if colour_k.is_file() else None

    def _load_view(self, i: int) -> View:
        fid = self.frame_ids[i]
        colour = self.colour.get(fid, self.root / "color" / f"{fid}.jpg")
        depth_path = self.depth.get(fid, self.root / "depth" / f"{fid}.png")
        pose_path = self.poses.get(fid, self.root / "pose" / f"{fid}.txt")
        depth = read_depth_png(depth_path, DEPTH_SCALE)
        image = read_image(colour)
        if self.K_colour is not None:
            hw = depth.shape
            K_d = _scaled(self.K_depth, DEPTH_HW, hw) if _same_aspect(hw, DEPTH_HW) else self.K_depth
            K_c = _scaled(self.K_colour, COLOUR_HW, image.shape[:2])
            image = resample_pinhole(image, K_c, K_d, hw)
        return View(
            image=image,
            depth=depth,
            K=self.K_depth.copy(),
            cam_to_world=read_matrix(pose_path, (4, 4), "pose"),
            frame_id=fid,
            index=int(fid),
            source=f"{depth_path} (+ {colour}, {pose_path})",
            intrinsics_hw=DEPTH_HW,
            scale_intrinsics=True,
        )


def _same_aspect(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return abs((a[1] / a[0]) / (b[1] / b[0]) - 1) <= ASPECT_RTOL
