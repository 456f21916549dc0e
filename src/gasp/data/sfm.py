"""Scenes whose poses come from structure-from-motion (DL3DV, COLMAP): posed colour frames without
sensor depth, distortion removed, and the depth maps ``gasp annotate`` writes.

Such a scene is read in two ways:

- :meth:`SfMScene.posed_image` (what ``gasp annotate`` needs): the undistorted colour frame, its
  pinhole K, camera-to-world pose (OpenCV axes, the reconstruction's unit) and, where the scene has a
  reconstruction, :meth:`SfMScene.points` (the 3D points seen in the frame, in the poses' world);
- :meth:`SfMScene.view` (what every other command uses): the same frame with the depth map annotate
  wrote, a validated ``View``. Depth is in the poses' unit, which is metres only up to the
  reconstruction's scale.

Camera models (COLMAP's, and nerfstudio's ``OPENCV`` / ``OPENCV_FISHEYE``) are handled by pycolmap:
each frame is resampled to the pinhole camera with the model's focal lengths and principal point.
COLMAP and nerfstudio put pixel centres at half-integers (the image's corner is (0, 0)); gasp puts them
at integers, so the principal point moves by -0.5 pixel on reading.

Annotated depth (``<depth root>/depth/<frame_id>.png``): 16-bit PNG, depth = value x unit, where unit
(the poses' unit per count) is the PNG text field ``gasp-depth-unit``; 0 = no depth. The depth root is
``<scene>/gasp_depth`` unless given (``gasp annotate --output``); frames annotate left without depth
are listed in its ``frames.jsonl`` with the reason, which loading such a frame reports.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gasp.data.remap import pixel_grid, remap_bilinear
from gasp.data.views import ASPECT_RTOL, BadFrame, SceneReader, View, read_image
from gasp.errors import BadInputError

DEPTH_DIR = "gasp_depth"
UNIT_KEY = "gasp-depth-unit"
FRAMES_LOG = "frames.jsonl"
REPORT = "report.json"
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".JPG", ".JPEG", ".PNG")


@dataclass
class PosedImage:
    """A colour frame with its camera, before depth exists.

    Attributes:
        image: (H, W, 3) uint8 RGB, distortion removed.
        K: (3, 3) float64 pinhole intrinsics of ``image`` (pixel centres at integers).
        cam_to_world: (4, 4) float64, OpenCV axes, the reconstruction's unit.
        frame_id, index, source: as in ``View``.
    """

    image: np.ndarray
    K: np.ndarray
    cam_to_world: np.ndarray
    frame_id: str
    index: int
    source: str


def frame_id_of(name: str) -> str:
    """Frame id of an image path relative to the image folder: no extension, '/' -> '__'."""
    stem = name.rsplit(".", 1)[0] if "." in Path(name).name else name
    return stem.replace("/", "__")


def read_depth_annotation(path: Path) -> np.ndarray:
    """Read an annotated depth PNG as float32 in the poses' unit (0 = none).

    Raises:
        BadFrame: missing, corrupt, not 16-bit, or without a valid ``gasp-depth-unit``.
    """
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise BadFrame("annotated depth file is missing", path)
    try:
        with Image.open(path) as im:
            raw, mode, text = np.asarray(im), im.mode, dict(getattr(im, "text", {}))
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise BadFrame(f"annotated depth is corrupt or truncated ({e})", path) from e
    try:
        unit = float(text[UNIT_KEY])
        if not np.isfinite(unit) or unit <= 0:
            raise ValueError(unit)
    except (KeyError, ValueError) as e:
        raise BadFrame(f"annotated depth PNG has no valid '{UNIT_KEY}' text field ({e!r})", path) from e
    if raw.ndim != 2 or mode not in ("I;16", "I;16B", "I;16L", "I"):
        raise BadFrame(f"annotated depth must be single-channel 16-bit, got mode {mode}", path)
    return raw.astype(np.float32) * np.float32(unit)


def encode_depth_png(depth: np.ndarray) -> tuple[np.ndarray, float]:
    """uint16 counts and the unit per count for a depth map (unit = max depth / 65535; 0 stays 0)."""
    d = np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(np.float64)
    top = float(d.max()) if d.size else 0.0
    unit = top / 65535.0 if top > 0 else 1.0
    counts = np.clip(np.round(d / unit), 0, 65535).astype(np.uint16)
    counts[(d > 0) & (counts == 0)] = 1
    return counts, unit


class Undistorter:
    """Maps a camera (pycolmap.Camera, COLMAP pixel convention) to its undistorted pinhole view.

    The output has the camera's size and the pinhole K built from the model's focal lengths and
    principal point; the resampling grid is computed once per camera and image size.
    """

    def __init__(self) -> None:
        self._maps: dict[tuple, np.ndarray] = {}

    @staticmethod
    def pinhole_K(camera) -> np.ndarray:
        """Pinhole K (pixel centres at integers) of a pycolmap camera."""
        K = np.array(camera.calibration_matrix(), dtype=np.float64)
        K[0, 2] -= 0.5
        K[1, 2] -= 0.5
        return K

    def __call__(self, image: np.ndarray, camera, key: tuple) -> tuple[np.ndarray, np.ndarray]:
        K = self.pinhole_K(camera)
        if camera.model.name in ("PINHOLE", "SIMPLE_PINHOLE"):
            return image, K
        hw = image.shape[:2]
        grid = self._maps.get(key)
        if grid is None:
            rays = (pixel_grid(hw) @ np.linalg.inv(K).T).reshape(-1, 3)
            src = np.asarray(camera.img_from_cam(rays), dtype=np.float64) - 0.5
            grid = self._maps[key] = src.reshape(*hw, 2)
        return remap_bilinear(image, grid), K


def camera_for_image(camera, hw: tuple[int, int], path: Path):
    """A copy of a pycolmap camera rescaled to an image of size ``hw`` (same aspect ratio), so the
    intrinsics describe the file actually read (e.g. DL3DV's images_4 are a quarter of w x h)."""
    import pycolmap

    h, w = hw
    if (camera.height, camera.width) == (h, w):
        return camera
    if abs((w / h) / (camera.width / camera.height) - 1) > ASPECT_RTOL:
        raise BadFrame(
            f"image is {w}x{h} but its camera is {camera.width}x{camera.height} (another aspect ratio)", path
        )
    scaled = pycolmap.Camera(camera.todict())
    scaled.rescale(w, h)
    return scaled


class SfMScene(SceneReader):
    """Base of readers with poses from structure-from-motion and depth from ``gasp annotate``.

    Subclasses fill ``frame_ids``, ``image_files`` (paths), ``poses`` (4x4 OpenCV camera-to-world),
    ``cameras`` (pycolmap cameras at their stated size) and ``world_points`` (per frame an (N, 3) array
    of the reconstruction points seen in it, in the poses' world, or None), and call
    :meth:`_setup_depth`.
    """

    format_name = "sfm"
    image_files: list[Path]
    poses: list[np.ndarray]
    cameras: list
    world_points: list[np.ndarray] | None = None

    def _setup_depth(self, depth_root: str | Path | None) -> None:
        self.depth_root = Path(depth_root) if depth_root is not None else self.root / DEPTH_DIR
        self._undistort = Undistorter()
        self._dropped_by_annotate: dict[str, str] | None = None

    def has_points(self) -> bool:
        """Whether the scene has a reconstruction's 3D points (used to align annotated depth)."""
        return self.world_points is not None

    def points(self, i: int) -> np.ndarray | None:
        """(N, 3) reconstruction points seen in frame ``i`` (poses' world), or None without them."""
        return None if self.world_points is None else self.world_points[i]

    def posed_image(self, i: int) -> PosedImage:
        """Frame ``i`` without depth: undistorted colour, pinhole K, pose.

        Raises:
            BadFrame: unreadable image, image size that does not fit its camera, non-finite pose.
        """
        path = self.image_files[i]
        image = read_image(path)
        camera = camera_for_image(self.cameras[i], image.shape[:2], path)
        key = (id(self.cameras[i]), image.shape[:2])
        image, K = self._undistort(image, camera, key)
        pose = np.asarray(self.poses[i], dtype=np.float64)
        if not np.isfinite(pose).all():
            raise BadFrame("pose is not finite", path)
        return PosedImage(image, K, pose, self.frame_ids[i], i, str(path))

    def depth_path(self, i: int) -> Path:
        return self.depth_root / "depth" / f"{self.frame_ids[i]}.png"

    def _annotate_reason(self, fid: str) -> str | None:
        if self._dropped_by_annotate is None:
            self._dropped_by_annotate = {}
            for record in read_frames_log(self.depth_root / FRAMES_LOG):
                if record.get("status") == "dropped":
                    self._dropped_by_annotate[str(record.get("frame"))] = str(record.get("reason"))
        return self._dropped_by_annotate.get(fid)

    def _load_view(self, i: int) -> View:
        fid = self.frame_ids[i]
        depth_path = self.depth_path(i)
        if not depth_path.is_file():
            reason = self._annotate_reason(fid)
            if reason is not None:
                raise BadFrame(f"gasp annotate left this frame without depth: {reason}", depth_path)
            raise BadFrame(
                f"no depth for this frame ({self.format_name} scenes have none): run `gasp annotate "
                f"{self.root}` (or pass the folder annotate wrote)",
                depth_path,
            )
        depth = read_depth_annotation(depth_path)
        posed = self.posed_image(i)
        return View(
            image=posed.image,
            depth=depth,
            K=posed.K,
            cam_to_world=posed.cam_to_world,
            frame_id=fid,
            index=i,
            source=f"{depth_path} (+ {posed.source})",
            intrinsics_hw=posed.image.shape[:2],
            scale_intrinsics=True,  # annotate may store depth at a lower resolution than the colour
        )


def read_frames_log(path: Path) -> list[dict]:
    """Records of an annotate ``frames.jsonl`` (a cut-off last line from a killed run is ignored)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records


def sorted_by_name(names: list[str]) -> list[str]:
    from gasp.data.folder import _sort_key

    return sorted(names, key=_sort_key)


def require_pycolmap():
    """Import pycolmap with an error that says how to install it."""
    try:
        import pycolmap
    except ImportError as e:  # pragma: no cover - a dependency of gasp
        raise BadInputError("reading COLMAP reconstructions needs pycolmap: pip install pycolmap") from e
    return pycolmap
