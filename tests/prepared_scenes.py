"""Tiny scenes and settings shared by the prepare, store and damaged-folder tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from gasp.data.prepare import PrepareConfig
from gasp.data.synthetic import SyntheticScene

HW = (32, 32)


def write_folder_scene(root: Path, seed: int, num_frames: int = 8) -> Path:
    """A tiny scene in gasp's generic folder format, rendered by the synthetic renderer."""
    scene = SyntheticScene(seed, num_frames=num_frames, height=HW[0], width=HW[1], path_length=0.6)
    for sub in ("color", "depth", "poses"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    np.savetxt(root / "intrinsics.txt", scene.K)
    for i in range(num_frames):
        view = scene.view(i)
        Image.fromarray(view.image).save(root / "color" / f"{i:06d}.png")
        np.save(root / "depth" / f"{i:06d}.npy", view.depth)
        np.savetxt(root / "poses" / f"{i:06d}.txt", view.cam_to_world)
    return root


def tiny_config(output: Path, scenes: list[Path | str], **kw) -> PrepareConfig:
    base = {
        "output": str(output),
        "scenes": [str(s) for s in scenes],
        "sequences_per_scene": 3,
        "min_frames": 3,
        "max_frames": 5,
        "radius": 4,
        "min_overlap": 0.3,
        "overlap_grid": (4, 4),
        "border": 1,
        "progress": False,
    }
    base.update(kw)
    return PrepareConfig(**base)


def folder_files(root: Path) -> dict[str, bytes]:
    """Every file of a prepared folder (but the lock), by relative path."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".gasp-lock"
    }
