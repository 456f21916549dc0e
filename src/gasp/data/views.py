"""The View record, the SceneReader base class and the one place that validates frames.

Every reader returns plain :class:`View` records through :meth:`SceneReader.view`, which calls the
reader's ``_load_view(i)`` and then :func:`validate_view`. So every data source gets the same
guarantees: image ``(Hc, Wc, 3)`` uint8 RGB, depth ``(H, W)`` float32 metres with ``0`` = invalid,
``K`` the finite 3x3 intrinsics of the DEPTH image, ``cam_to_world`` a finite rigid 4x4 pose
(camera-to-world, OpenCV axes: x right, y down, z forward, metres).

Intrinsics always describe the depth image actually read. A reader states which image size its K
was given for (``View.intrinsics_hw``) and whether its format says that images of another size are
resized copies (``View.scale_intrinsics``); validation then scales K to the depth image or rejects
the frame, naming both sizes. Where the size is not stated, a principal point far from the depth
image's centre rejects the frame (K given for another resolution, e.g. 640x480 K on 320x240 depth).

The file helpers here (:func:`read_image`, :func:`read_depth_png`, :func:`read_matrix`) turn a
missing or corrupt file into :class:`BadFrame` naming the file and the reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gasp.errors import BadInputError
from gasp.geometry.cameras import is_rigid_pose

# Colour may have another resolution than depth when it covers the same field of view; aspect ratios
# must then agree within this relative tolerance (640x480 vs 1280x960 passes, 640x480 vs 1280x720 fails).
ASPECT_RTOL = 0.01
# A valid-depth median above this many "metres" almost surely means the depth is in millimetres.
MAX_MEDIAN_DEPTH_M = 100.0
# The principal point must lie within this fraction of the image size from the image centre. Real
# cameras are within a few percent; K given for twice (or half) the depth's resolution is 50% (25%) off.
MAX_PRINCIPAL_OFFSET = 0.2


class BadFrame(BadInputError):
    """One frame (or a scene's file) cannot be used.

    Attributes:
        path: the file (or files) at fault.
        reason: what is wrong with it, in words.
    """

    def __init__(self, reason: str, path: str | Path) -> None:
        self.reason = reason
        self.path = str(path)
        super().__init__(f"{self.path}: {reason}")


@dataclass
class View:
    """One RGB-D frame with its camera.

    Attributes:
        image: (Hc, Wc, 3) uint8 RGB. Colour is assumed registered to the depth image's field of view;
            it may have another resolution (same aspect ratio) and is resized later.
        depth: (H, W) float32 metres along the camera z axis; 0 = invalid.
        K: (3, 3) float64 intrinsics of the DEPTH image (what geometry uses).
        cam_to_world: (4, 4) float64 camera-to-world pose, OpenCV axes, metres.
        frame_id: the frame's name in its source, e.g. "frame-000012".
        index: position in the source video (used for frame distances).
        source: file path(s) of the frame, for messages.
        intrinsics_hw: ``(H, W)`` of the image ``K`` was given for, when the source states it (a
            size in the intrinsics file, the data set's documented resolution); None: not stated.
        scale_intrinsics: the source format says that images of another size (same aspect ratio) are
            resized copies, so ``K`` is scaled to the depth image; otherwise such a frame is rejected.
    """

    image: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    cam_to_world: np.ndarray
    frame_id: str
    index: int
    source: str
    intrinsics_hw: tuple[int, int] | None = None
    scale_intrinsics: bool = False


def validate_view(view: View) -> View:
    """Check a view's shapes, dtypes, finiteness and units; return it normalised.

    Depth is converted to float32 with non-finite values set to 0 (invalid); K and the pose are
    converted to float64. Everything else that is wrong raises.

    Args:
        view: the record a reader built.

    Returns:
        The same record with normalised arrays.

    Raises:
        BadFrame: naming ``view.source`` and the problem (wrong shape/dtype, all-invalid or negative
            depth, depth that looks like millimetres, bad intrinsics, non-finite or non-rigid pose,
            colour/depth aspect mismatch).
    """
    src = view.source
    image = np.asarray(view.image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise BadFrame(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}", src)

    depth = np.asarray(view.depth)
    if depth.ndim != 2 or not (
        np.issubdtype(depth.dtype, np.floating) or np.issubdtype(depth.dtype, np.integer)
    ):
        raise BadFrame(f"depth must be a 2-D array of metres, got {depth.shape} {depth.dtype}", src)
    depth = depth.astype(np.float32, copy=True)
    depth[~np.isfinite(depth)] = 0.0
    if (depth < 0).any():
        raise BadFrame(
            f"depth has negative values (min {depth.min():.3g}); expected metres along +z (OpenCV axes)", src
        )
    valid = depth > 0
    if not valid.any():
        raise BadFrame("depth has no valid pixel (all zero or non-finite)", src)
    median = float(np.median(depth[valid]))
    if median > MAX_MEDIAN_DEPTH_M:
        raise BadFrame(
            f"median depth is {median:.4g} m: looks like millimetres or a wrong depth scale (need metres)",
            src,
        )

    (h, w), (hc, wc) = depth.shape, image.shape[:2]
    if (h, w) != (hc, wc) and abs((wc / hc) / (w / h) - 1.0) > ASPECT_RTOL:
        raise BadFrame(
            f"colour {wc}x{hc} and depth {w}x{h} differ in aspect ratio (colour must cover depth's view)",
            src,
        )

    K = np.asarray(view.K, dtype=np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all():
        raise BadFrame(f"intrinsics K must be a finite 3x3 matrix, got {K.tolist()}", src)
    if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0.0, 0.0, 1.0]) or K[1, 0] != 0:
        raise BadFrame(
            f"intrinsics K must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0, got {K.tolist()}",
            src,
        )
    K = _intrinsics_for_depth(K, (h, w), view.intrinsics_hw, view.scale_intrinsics, src)

    pose = np.asarray(view.cam_to_world, dtype=np.float64)
    if pose.shape != (4, 4):
        raise BadFrame(f"pose must be 4x4 camera-to-world, got shape {pose.shape}", src)
    if not np.isfinite(pose).all():
        raise BadFrame("pose is not finite (inf/nan: tracking lost for this frame)", src)
    if not bool(is_rigid_pose(pose)):
        raise BadFrame(
            "pose is not rigid (rotation not orthonormal with det +1, or last row not 0 0 0 1)", src
        )
    view.image, view.depth, view.K, view.cam_to_world = image, depth, K, pose
    view.intrinsics_hw = (h, w)
    return view


def _intrinsics_for_depth(
    K: np.ndarray, depth_hw: tuple[int, int], given_hw: tuple[int, int] | None, scalable: bool, src: str
) -> np.ndarray:
    """K for the depth image: scaled from ``given_hw`` where the format allows, else checked."""
    (h, w) = depth_hw
    if given_hw is not None and tuple(given_hw) != (h, w):
        kh, kw = (int(x) for x in given_hw)
        same_aspect = abs((w / h) / (kw / kh) - 1.0) <= ASPECT_RTOL
        if not (scalable and same_aspect):
            why = (
                "another aspect ratio"
                if not same_aspect
                else "the format does not say how they scale to another size"
            )
            raise BadFrame(
                f"depth image is {w}x{h} but the intrinsics are for a {kw}x{kh} image ({why})", src
            )
        from gasp.geometry.cameras import fit_intrinsics

        K = fit_intrinsics(K, (kh, kw), (h, w), "resize")[0].numpy().astype(np.float64)
    cx, cy = K[0, 2], K[1, 2]
    if abs(cx - (w - 1) / 2) > MAX_PRINCIPAL_OFFSET * w or abs(cy - (h - 1) / 2) > MAX_PRINCIPAL_OFFSET * h:
        raise BadFrame(
            f"principal point ({cx:.4g}, {cy:.4g}) is far from the centre of the {w}x{h} depth image: "
            "the intrinsics are for an image of another size",
            src,
        )
    return K


class SceneReader:
    """Base class of scene readers: a sequence of posed RGB-D views.

    Subclasses set ``name`` and ``frame_ids`` (one string per frame, in video order) and implement
    ``_load_view(i)``; :meth:`view` adds the bounds check and validation. Frames a reader leaves out
    while indexing the scene (no pose within the time tolerance, ...) are listed in ``dropped`` as
    ``(file, reason)`` pairs so that callers can count them.
    """

    name: str = "scene"
    frame_ids: list[str]
    dropped: list[tuple[str, str]] = []  # noqa: RUF012 (readers assign their own list)

    def __len__(self) -> int:
        return len(self.frame_ids)

    def view(self, i: int) -> View:
        """Load and validate frame ``i`` (0 <= i < len(self)).

        Raises:
            IndexError: ``i`` out of range.
            BadFrame: the frame's files are missing, corrupt or invalid.
        """
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"{self.name}: frame {i} out of range (scene has {n} frames)")
        return validate_view(self._load_view(i % n))

    def views(self) -> Iterator[View]:
        """Every view in order (raises on the first bad frame)."""
        for i in range(len(self)):
            yield self.view(i)

    def _load_view(self, i: int) -> View:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, frames={len(self)})"


class TrajectoryScene(SceneReader):
    """Base of readers whose poses come from one trajectory file (Redwood .log, TUM groundtruth.txt).

    Subclasses fill, one entry per frame: ``depth_files``, ``colour_files``, ``poses`` (4x4 arrays),
    ``frame_ids``, ``indices`` (position in the source video), ``pose_sources`` (where each pose was
    read, for messages), and set ``K``, ``K_hw`` (the image size K is for, None when not stated) and
    ``depth_scale`` (PNG units per metre).
    """

    K_hw: tuple[int, int] | None = None

    depth_files: list[Path]
    colour_files: list[Path]
    poses: list[np.ndarray]
    indices: list[int]
    pose_sources: list[str]
    K: np.ndarray
    depth_scale: float

    def _load_view(self, i: int) -> View:
        depth_path, colour_path = self.depth_files[i], self.colour_files[i]
        return View(
            image=read_image(colour_path),
            depth=read_depth_png(depth_path, self.depth_scale),
            K=self.K.copy(),
            cam_to_world=self.poses[i].copy(),
            frame_id=self.frame_ids[i],
            index=self.indices[i],
            source=f"{depth_path} (+ {colour_path}, {self.pose_sources[i]})",
            intrinsics_hw=self.K_hw,
        )


@contextlib.contextmanager
def strict_decoding() -> Iterator[None]:
    """Decode images with PIL's truncated-image tolerance off, whatever the process set it to.

    ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` is process-wide, and some libraries switch it on when
    imported (lmms-eval does); a truncated frame must still be a bad frame here.
    """
    from PIL import ImageFile

    before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before


def read_image(path: Path) -> np.ndarray:
    """Read a colour image as (H, W, 3) uint8 RGB.

    Raises:
        BadFrame: the file is missing, truncated or not a decodable image.
    """
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise BadFrame("colour image file is missing", path)
    try:
        with strict_decoding(), Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise BadFrame(f"colour image is corrupt or truncated ({e})", path) from e


def read_depth_png(path: Path, depth_scale: float, invalid: tuple[int, ...] = (0,)) -> np.ndarray:
    """Read a 16-bit depth PNG as float32 metres.

    Args:
        path: the PNG (single channel, 16-bit).
        depth_scale: raw units per metre (1000 for millimetres, 5000 for TUM).
        invalid: raw values that mean "no measurement" (become 0).

    Raises:
        BadFrame: missing, truncated, or not a single-channel 16-bit image.
    """
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise BadFrame("depth image file is missing", path)
    try:
        with strict_decoding(), Image.open(path) as im:
            mode = im.mode
            raw = np.asarray(im)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise BadFrame(f"depth image is corrupt or truncated ({e})", path) from e
    if raw.ndim != 2 or mode not in ("I;16", "I;16B", "I;16L", "I"):
        raise BadFrame(f"depth PNG must be single-channel 16-bit, got mode {mode} shape {raw.shape}", path)
    bad = np.isin(raw, invalid)
    depth = raw.astype(np.float32) / np.float32(depth_scale)
    depth[bad] = 0.0
    return depth


def read_depth_npy(path: Path) -> np.ndarray:
    """Read a ``.npy`` depth map already in metres (float).

    Raises:
        BadFrame: missing or unreadable file.
    """
    if not path.is_file():
        raise BadFrame("depth file is missing", path)
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise BadFrame(f"depth .npy is corrupt or truncated ({e})", path) from e


def read_numbers(path: Path, what: str) -> np.ndarray:
    """Read a text file of whitespace-separated numbers as a flat float64 array.

    Non-finite entries (``inf``, ``-inf``, ``nan``) are read as they are; validation rejects them.

    Raises:
        BadFrame: missing file or text that is not numbers.
    """
    if not path.is_file():
        raise BadFrame(f"{what} file is missing", path)
    try:
        return np.array(path.read_text().split(), dtype=np.float64)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise BadFrame(f"{what} file is not a whitespace-separated list of numbers ({e})", path) from e


def read_matrix(path: Path, shape: tuple[int, int], what: str) -> np.ndarray:
    """Read a numeric matrix text file (e.g. a 4x4 pose or a 3x3 K) of exactly ``shape``.

    Raises:
        BadFrame: missing file, text that is not numbers, or the wrong number of values.
    """
    values = read_numbers(path, what)
    if values.size != shape[0] * shape[1]:
        raise BadFrame(f"{what} file must hold {shape[0]}x{shape[1]} numbers, found {values.size}", path)
    return values.reshape(shape)


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """The 3x3 pinhole K (float64) from focal lengths and principal point, in pixels."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)
