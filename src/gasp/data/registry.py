"""open_scene: one entry point from a folder or a spec string to a SceneReader.

Specs:
  ``/path/to/folder``               format detected from the files (see FORMATS)
  ``FORMAT:/path/to/folder``        format forced (e.g. ``tum:/data/rgbd_dataset_freiburg1_xyz``)
  ``synthetic:SEED[,key=value...]`` a procedural room, e.g. ``synthetic:7,num_frames=48,height=112``
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from gasp.data.folder import FolderScene, is_folder_scene
from gasp.data.redwood import Redwood, is_redwood
from gasp.data.sevenscenes import SevenScenes, is_sevenscenes
from gasp.data.synthetic import SyntheticScene
from gasp.data.tum import TUM, is_tum
from gasp.data.views import SceneReader
from gasp.errors import BadInputError, ConfigError


class SceneFormat(NamedTuple):
    detect: Callable[[Path], bool]
    reader: Callable[[Path], SceneReader]
    signature: str  # what the folder holds, for error messages


# Detection order matters: a Redwood folder also has color/ and depth/, so the generic format is last.
FORMATS: dict[str, SceneFormat] = {
    "7scenes": SceneFormat(
        is_sevenscenes, SevenScenes, "frame-XXXXXX.{color.png|color.jpg,depth.png,pose.txt}"
    ),
    "tum": SceneFormat(is_tum, TUM, "rgb.txt, depth.txt, groundtruth.txt"),
    "redwood": SceneFormat(is_redwood, Redwood, "color/, depth/, a Redwood .log trajectory"),
    "folder": SceneFormat(is_folder_scene, FolderScene, "color/, depth/, poses/, intrinsics.txt"),
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
