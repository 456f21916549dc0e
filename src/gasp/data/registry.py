"""open_scene: one entry point from a folder or a spec string to a SceneReader.

Specs:
  ``/path/to/folder``               format detected from the files (see FORMATS)
  ``FORMAT:/path/to/folder``        format forced (e.g. ``tum:/data/rgbd_dataset_freiburg1_xyz``)
  ``synthetic:SEED[,key=value...]`` a procedural room, e.g. ``synthetic:7,num_frames=48,height=112``
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from gasp.data.arkitscenes import ARKitScenes, is_arkitscenes
from gasp.data.colmap import Colmap, is_colmap
from gasp.data.dl3dv import DL3DV, is_dl3dv
from gasp.data.folder import FolderScene, is_folder_scene
from gasp.data.redwood import Redwood, is_redwood
from gasp.data.scannet import ScanNet, is_scannet
from gasp.data.scannetpp import ScanNetPP, is_scannetpp
from gasp.data.sevenscenes import SevenScenes, is_sevenscenes
from gasp.data.sfm import DEPTH_DIR, REPORT, SfMScene
from gasp.data.synthetic import SyntheticScene
from gasp.data.tum import TUM, is_tum
from gasp.data.views import BadFrame, SceneReader
from gasp.errors import BadInputError, ConfigError


class SceneFormat(NamedTuple):
    detect: Callable[[Path], bool]
    reader: Callable[[Path], SceneReader]
    signature: str  # what the folder holds, for error messages


def is_annotation(root: Path) -> bool:
    """Whether ``root`` is a folder ``gasp annotate --output`` wrote (depth for a scene kept elsewhere)."""
    return (root / DEPTH_DIR / REPORT).is_file()


def open_annotation(root: Path) -> SceneReader:
    """The scene an annotation folder was written for, reading its depth from that folder.

    Raises:
        BadFrame: unreadable report, or a scene that no longer exists / is not a DL3DV or COLMAP scene.
    """
    report = root / DEPTH_DIR / REPORT
    try:
        info = json.loads(report.read_text())
        scene, fmt = Path(info["scene"]), str(info["format"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BadFrame(f"annotation report must name 'scene' and 'format' ({e!r})", report) from e
    if fmt not in ("dl3dv", "colmap"):
        raise BadFrame(f"annotation report names format {fmt!r}; expected dl3dv or colmap", report)
    if not scene.is_dir():
        raise BadFrame(f"the annotated scene {scene} does not exist (moved?)", report)
    if fmt == "dl3dv":
        return DL3DV(scene, images=info.get("images"), depth_root=root / DEPTH_DIR)
    return Colmap(scene, depth_root=root / DEPTH_DIR)


# Detection order matters: a Redwood folder also has color/ and depth/, so the generic format comes
# after it; DL3DV scenes may hold a colmap/ model, so dl3dv comes before colmap.
FORMATS: dict[str, SceneFormat] = {
    "7scenes": SceneFormat(
        is_sevenscenes, SevenScenes, "frame-XXXXXX.{color.png|color.jpg,depth.png,pose.txt}"
    ),
    "tum": SceneFormat(is_tum, TUM, "rgb.txt, depth.txt, groundtruth.txt"),
    "scannet": SceneFormat(
        is_scannet, ScanNet, "SensReader export: color/, depth/, pose/, intrinsic/intrinsic_depth.txt"
    ),
    "arkitscenes": SceneFormat(
        is_arkitscenes, ARKitScenes, "raw video: lowres_wide/, lowres_depth/, *_intrinsics/, lowres_wide.traj"
    ),
    "scannetpp": SceneFormat(
        is_scannetpp, ScanNetPP, "iphone/: rgb.mkv or rgb/, depth.bin or depth/, pose_intrinsic_imu.json"
    ),
    "dl3dv": SceneFormat(
        is_dl3dv, DL3DV, "images_4/ (or images*), transforms.json, optional colmap/sparse/0 (+ gasp annotate)"
    ),
    "colmap": SceneFormat(is_colmap, Colmap, "images/, sparse/0/ (+ gasp annotate)"),
    "redwood": SceneFormat(is_redwood, Redwood, "color/, depth/, a Redwood .log trajectory"),
    "folder": SceneFormat(is_folder_scene, FolderScene, "color/, depth/, poses/, intrinsics.txt"),
    "annotation": SceneFormat(
        is_annotation,
        open_annotation,
        "gasp_depth/ written by `gasp annotate --output` for a scene elsewhere",
    ),
}
SYNTHETIC_PREFIX = "synthetic:"


def supported_formats() -> str:
    """One line per format: name and what its folder holds (for help texts and errors)."""
    lines = [f"  {name}: {fmt.signature}" for name, fmt in FORMATS.items()]
    lines.append("  synthetic:SEED[,key=value...]: a procedural room (no files)")
    return "\n".join(lines)


def open_scene(spec: str | Path) -> SceneReader:
    """Open a scene from a folder (format autodetected), ``FORMAT:folder`` or ``synthetic:SEED,...``.

    Raises:
        BadInputError: the folder does not exist or matches no supported format (the message lists them).
        ConfigError: a bad synthetic spec (non-integer seed, unknown key or bad value).
    """
    text = str(spec)
    if text.startswith(SYNTHETIC_PREFIX):
        return _open_synthetic(text[len(SYNTHETIC_PREFIX) :])
    name, sep, rest = text.partition(":")
    if sep and name in FORMATS:
        root = Path(rest)
        if not root.is_dir():
            raise BadInputError(f"{root}: scene folder does not exist")
        return FORMATS[name].reader(root)
    root = Path(text)
    if not root.is_dir():
        raise BadInputError(f"{root}: scene folder does not exist (or use synthetic:SEED)")
    for fmt in FORMATS.values():
        if fmt.detect(root):
            return fmt.reader(root)
    raise BadInputError(f"{root}: not a supported scene folder. Supported formats:\n{supported_formats()}")


def open_sfm_scene(spec: str | Path, depth_root: str | Path | None = None) -> SfMScene:
    """Open a scene without sensor depth (DL3DV, COLMAP) for ``gasp annotate``.

    Args:
        spec: a folder (format detected) or ``dl3dv:PATH`` / ``colmap:PATH``.
        depth_root: where depth is (to be) written, default ``<scene>/gasp_depth``.

    Raises:
        BadInputError: the folder does not exist, or is a format that has depth (its name is given).
    """
    text = str(spec)
    name, sep, rest = text.partition(":")
    forced = name if sep and name in FORMATS else None
    root = Path(rest if forced else text)
    if not root.is_dir():
        raise BadInputError(f"{root}: scene folder does not exist")
    fmt = forced or next((n for n, f in FORMATS.items() if f.detect(root)), None)
    if fmt == "dl3dv":
        return DL3DV(root, depth_root=depth_root)
    if fmt == "colmap":
        return Colmap(root, depth_root=depth_root)
    if fmt is None:
        raise BadInputError(
            f"{root}: not a supported scene folder. Supported formats:\n{supported_formats()}"
        )
    raise BadInputError(
        f"{root} is a {fmt} scene, which has depth already; gasp annotate is for scenes without depth "
        "(dl3dv, colmap)"
    )


def _open_synthetic(args: str) -> SyntheticScene:
    seed_text, *pairs = [a.strip() for a in args.split(",")]
    try:
        seed = int(seed_text)
    except ValueError:
        raise ConfigError(f"synthetic spec needs an integer seed first, got {seed_text!r}") from None
    params = inspect.signature(SyntheticScene).parameters
    valid = sorted(k for k in params if k != "seed")
    kwargs: dict[str, int | float] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or key not in valid:
            raise ConfigError(f"synthetic spec: {pair!r} is not key=value with key in {valid}")
        try:
            kwargs[key] = float(value) if params[key].annotation in ("float", float) else int(value)
        except ValueError:
            raise ConfigError(f"synthetic spec: {key}={value!r} is not a number") from None
    return SyntheticScene(seed, **kwargs)
