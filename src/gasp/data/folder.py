"""gasp's generic RGB-D folder format (documented in docs/DATA_FORMATS.md).

```
scene/
  intrinsics.txt          3x3 K of the depth images, or one line "fx fy cx cy"; either may be followed
                          by "width height" of the image K is for (depth of another size with the
                          same aspect ratio is then a resized copy: K is scaled to it)
  intrinsics/<id>.txt     optional per-frame K (same syntax), overrides intrinsics.txt
  color/<id>.png|.jpg     RGB colour, covering depth's field of view (any resolution, same aspect)
  depth/<id>.png          uint16, depth_scale units per metre (default 1000 = millimetres), 0 = invalid
  depth/<id>.npy          or float depth in metres (0 / non-finite = invalid)
  poses/<id>.txt          4x4 camera-to-world, OpenCV axes (x right, y down, z forward), metres
  depth_scale.txt         optional: one number, PNG units per metre
```
Frames are the union of ``<id>`` stems over color/, depth/ and poses/, sorted (numbers numerically);
a frame missing one of its files raises BadFrame when loaded. ``View.index`` is ``int(<id>)`` when
every id is a number, else the frame's position.
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
    read_depth_npy,
    read_depth_png,
    read_image,
    read_matrix,
    read_numbers,
)

DEFAULT_DEPTH_SCALE = 1000.0
COLOUR_EXT = (".png", ".jpg", ".jpeg")
DEPTH_EXT = (".png", ".npy")


def is_folder_scene(root: Path) -> bool:
    """Whether ``root`` looks like the generic format (depth/ and poses/ subfolders)."""
    return (root / "depth").is_dir() and (root / "poses").is_dir()


def read_intrinsics(path: Path) -> tuple[np.ndarray, tuple[int, int] | None]:
    """Read K from a text file: 9 numbers (3x3) or 4 (fx fy cx cy), optionally followed by the
    ``width height`` of the image K is for.

    Returns:
        K (3, 3) and the image size ``(H, W)`` it is for, or None when the file does not say.

    Raises:
        BadFrame: missing file, non-numbers, another count of numbers, or a size that is not two
            positive integers.
    """
    v = read_numbers(path, "intrinsics")
    if v.size not in (4, 6, 9, 11):
        raise BadFrame(
            "intrinsics file must hold 9 numbers (3x3) or 4 (fx fy cx cy), optionally followed by "
            f"'width height'; found {v.size} numbers",
            path,
        )
    K = v[:9].reshape(3, 3) if v.size >= 9 else intrinsics_matrix(*v[:4])
    if v.size in (4, 9):
        return K, None
    w, h = v[-2:]
    if not (w == int(w) > 0 and h == int(h) > 0):
        raise BadFrame(f"image size after the intrinsics must be positive integers, got {w:g} {h:g}", path)
    return K, (int(h), int(w))


def _sort_key(stem: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", stem))


def _files_by_stem(folder: Path, exts: tuple[str, ...]) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in exts:
            out.setdefault(p.stem, p)
    return out


class FolderScene(SceneReader):
    """A scene in gasp's generic folder format (see module docstring).

    Args:
        root: the scene folder.
        depth_scale: PNG units per metre; default ``depth_scale.txt`` if present, else 1000.
    """

    def __init__(self, root: str | Path, depth_scale: float | None = None) -> None:
        self.root = Path(root)
        self.name = self.root.name
        self.colour = _files_by_stem(self.root / "color", COLOUR_EXT)
        self.depth = _files_by_stem(self.root / "depth", DEPTH_EXT)
        self.poses = _files_by_stem(self.root / "poses", (".txt",))
        ids = sorted(set(self.colour) | set(self.depth) | set(self.poses), key=_sort_key)
        if not ids:
            raise BadFrame(
                "no frames found (expected color/, depth/ and poses/ files; see DATA_FORMATS.md)", self.root
            )
        self.frame_ids = ids
        self._numeric = all(s.isdigit() for s in ids)
        if depth_scale is None:
            scale_file = self.root / "depth_scale.txt"
            depth_scale = read_scalar(scale_file) if scale_file.is_file() else DEFAULT_DEPTH_SCALE
        self.depth_scale = depth_scale
        shared_k = self.root / "intrinsics.txt"
        self.K, self.K_hw = read_intrinsics(shared_k) if shared_k.is_file() else (None, None)

    def _path(self, table: dict[str, Path], sub: str, fid: str, ext: str) -> Path:
        return table.get(fid, self.root / sub / f"{fid}{ext}")

    def _load_view(self, i: int) -> View:
        fid = self.frame_ids[i]
        colour = self._path(self.colour, "color", fid, ".png")
        depth_path = self._path(self.depth, "depth", fid, ".png")
        pose_path = self._path(self.poses, "poses", fid, ".txt")
        per_frame_k = self.root / "intrinsics" / f"{fid}.txt"
        if per_frame_k.is_file():
            K, K_hw = read_intrinsics(per_frame_k)
        elif self.K is not None:
            K, K_hw = self.K.copy(), self.K_hw
        else:
            raise BadFrame(
                "no intrinsics: add intrinsics.txt or intrinsics/<id>.txt", self.root / "intrinsics.txt"
            )
        if depth_path.suffix == ".npy":
            depth = read_depth_npy(depth_path)
        else:
            depth = read_depth_png(depth_path, self.depth_scale)
        return View(
            image=read_image(colour),
            depth=depth,
            K=K,
            cam_to_world=read_matrix(pose_path, (4, 4), "pose"),
            frame_id=fid,
            index=int(fid) if self._numeric else i,
            source=f"{depth_path} (+ {colour}, {pose_path})",
            intrinsics_hw=K_hw,
            scale_intrinsics=True,
        )


def read_scalar(path: Path) -> float:
    """Read a text file holding one positive number (e.g. depth_scale.txt).

    Raises:
        BadFrame: not exactly one positive finite number.
    """
    v = read_numbers(path, "depth scale")
    if v.size != 1 or not np.isfinite(v[0]) or v[0] <= 0:
        raise BadFrame(f"must hold one positive number, found {v.tolist()}", path)
    return float(v[0])
