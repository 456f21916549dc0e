"""Draw the ground-truth correspondences of two frames as a PNG, to check the geometry by eye.

Top row: frame I (the anchor) and frame J side by side, with a line per sampled correspondence
(track query points visible in J; colour = position in frame I). Bottom row: the token-grid matches
from I to J, coloured by the displacement of each anchor cell to its match (hue = direction,
saturation = length, see the wheel; grey = no valid match), over frame I and on their own.

From a scene, the targets of frames I and J are computed at the given grid and image size. From a
prepared folder (``--data DIR --index K``) the frames of sequence K are read and its targets
computed the same way, from the anchor: frame I must then be 0.

Examples:
  gasp show-matches --scene synthetic:0 --frames 0 6 --output matches.png
  gasp show-matches --scene /data/7scenes/redkitchen --frames 0 30 --grid 12 16 --output kitchen.png
  gasp show-matches --data runs/synthetic --index 3 --frames 0 5 --output seq3.png
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gasp import constants as C
from gasp import viz
from gasp.cli_args import add_dataclass_arguments, apply_overrides
from gasp.data.fitted import FitConfig, fit_view, sequence_targets
from gasp.data.registry import open_scene
from gasp.data.store import open_prepared
from gasp.errors import ConfigError

GAP = 8  # white pixels between panels


@dataclass
class ShowMatchesConfig:
    """Settings of `gasp show-matches` (every field is a CLI flag)."""

    output: str = field(default="matches.png", metadata={"help": "PNG to write"})
    scene: str | None = field(default=None, metadata={"help": "scene folder or synthetic:SEED"})
    data: str | None = field(default=None, metadata={"help": "prepared folder (instead of --scene)"})
    index: int = field(default=0, metadata={"help": "with --data: sequence number in the index"})
    frames: tuple[int, int] = field(
        default=(0, 1),
        metadata={"help": "frames I J: positions 0..N-1 in the scene (--scene) or in the sequence (--data)"},
    )
    grid: tuple[int, int] = field(default=(8, 8), metadata={"help": "token grid GH GW"})
    image_size: tuple[int, int] | None = field(
        default=None, metadata={"help": "frame size H W (default grid x 28 px)"}
    )
    resize_mode: str = field(default="center_crop", metadata={"help": "center_crop or resize"})
    max_lines: int = field(default=80, metadata={"help": "most correspondence lines drawn"})
    scale: int = field(default=2, metadata={"help": "integer enlargement of the frames in the figure"})

    def __post_init__(self) -> None:
        self.frames = tuple(self.frames)
        if len(self.frames) != 2:
            raise ConfigError(f"--frames needs two values I J, got {list(self.frames)}")
        if self.scale < 1 or self.max_lines < 0:
            raise ConfigError("--scale must be >= 1 and --max-lines >= 0")


def match_figure(sequence: dict[str, Any], j: int, max_lines: int = 80, scale: int = 2) -> np.ndarray:
    """The show-matches picture of positions 0 (anchor) and ``j`` of a prepared sequence.

    Args:
        sequence: a dict with the sequence keys (``gasp.constants``) of one sequence.
        j: position of the second frame (1 <= j < F).
        max_lines: most correspondence lines (evenly spread over the visible tracks).
        scale: integer enlargement of the frames.

    Returns:
        ``(2 * (TITLE + H*scale) + GAP, 2 * W*scale + GAP, 3)`` uint8 RGB.
    """
    frames = sequence[C.FRAMES]
    num_frames, h, w = frames.shape[:3]
    if not 0 < j < num_frames:
        raise ConfigError(f"frame position {j} out of range: sequence has {num_frames} frames (anchor = 0)")
    grid = tuple(sequence[C.TOKEN_DEPTH].shape[1:])
    idx = sequence[C.FRAME_INDEX]

    visible = np.asarray(sequence[C.TRACK_VISIBLE][:, j], dtype=bool)
    shown = np.flatnonzero(visible)
    if len(shown) > max_lines:
        shown = shown[np.round(np.linspace(0, len(shown) - 1, max_lines)).astype(int)]
    keep = np.zeros_like(visible)
    keep[shown] = True
    lines = viz.draw_matches(
        frames[0],
        frames[j],
        sequence[C.TRACK_QUERY_UV],
        sequence[C.TRACK_UV][:, j],
        keep,
        scale=scale,
        gap=GAP,
    )
    top = viz.titled(
        lines,
        f"frame {idx[0]} (anchor) -> frame {idx[j]}: {len(shown)} of {visible.sum()} visible tracks "
        f"({len(visible)} kept)",
    )

    disp, valid = viz.token_displacement(
        sequence[C.MATCH_INDEX][j], sequence[C.MATCH_VALID][j], grid, (h, w), sequence[C.MATCH_SUBCELL][j]
    )
    cells = viz.flow_to_rgb(disp, valid)
    flow = viz.resize_nearest(viz.upsample_cells(cells, (h, w)), scale)
    overlay = viz.blend(viz.resize_nearest(frames[0], scale), flow, 0.55)
    wheel_size = max(8, min(64, flow.shape[0] // 3, flow.shape[1] // 3))
    flow[-wheel_size:, -wheel_size:] = viz.flow_wheel(wheel_size)
    bottom = viz.titled(
        viz.stack([overlay, flow], axis=1, gap=GAP),
        f"token matches {grid[0]}x{grid[1]}: {int(valid.sum())}/{valid.size} valid, colour = displacement "
        f"(max {np.hypot(disp[..., 0], disp[..., 1])[valid].max(initial=0):.0f} px), grey = none",
    )
    return viz.stack([top, bottom], axis=0, gap=GAP)


def scene_pair(cfg: ShowMatchesConfig) -> dict[str, Any]:
    """Frames I and J of ``cfg.scene`` fitted and with targets computed as `gasp prepare` does."""
    prep = FitConfig(grid=tuple(cfg.grid), image_size=cfg.image_size, resize_mode=cfg.resize_mode)
    scene = open_scene(cfg.scene)
    n = len(scene)
    for i in cfg.frames:
        if not 0 <= i < n:
            raise ConfigError(f"--frames {i} is out of range: {cfg.scene} has {n} frames (0..{n - 1})")
    views = [fit_view(scene.view(i), prep.image_hw, prep.resize_mode) for i in cfg.frames]
    sequence = sequence_targets(views, prep)
    sequence[C.FRAME_INDEX] = np.asarray(cfg.frames, dtype=np.int64)
    return sequence


def prepared_sequence(cfg: ShowMatchesConfig) -> dict[str, Any]:
    """Sequence ``cfg.index`` of the prepared folder ``cfg.data``, fitted, with its targets."""
    if cfg.frames[0] != 0:
        raise ConfigError(f"--frames {cfg.frames[0]} {cfg.frames[1]}: with --data, I must be 0 (the anchor)")
    data = open_prepared(cfg.data)
    if not 0 <= cfg.index < len(data.index):
        raise ConfigError(
            f"--index {cfg.index} is out of range: {cfg.data} holds {len(data.index)} sequences"
        )
    prep = FitConfig(grid=tuple(cfg.grid), image_size=cfg.image_size, resize_mode=cfg.resize_mode)
    views = data.views(int(data.index.scene[cfg.index]), data.index.frames(cfg.index))
    return sequence_targets([fit_view(v, prep.image_hw, prep.resize_mode) for v in views], prep)


def show_matches(cfg: ShowMatchesConfig) -> Path:
    """Write the picture described in the module docstring; returns the PNG path."""
    if (cfg.scene is None) == (cfg.data is None):
        raise ConfigError("give exactly one of --scene SPEC or --data DIR")
    if cfg.scene is not None:
        sequence, j = scene_pair(cfg), 1
    else:
        sequence, j = prepared_sequence(cfg), cfg.frames[1]
    return viz.save_png(cfg.output, match_figure(sequence, j, cfg.max_lines, cfg.scale))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `gasp show-matches`: one per ShowMatchesConfig field."""
    add_dataclass_arguments(parser, ShowMatchesConfig)


def run(args: argparse.Namespace) -> int:
    """Entry point of `gasp show-matches`."""
    torch.set_num_threads(1)
    path = show_matches(apply_overrides(ShowMatchesConfig(), args))
    print(f"wrote {path}")
    return 0
