"""Frames fitted to a model's input size and the per-sequence targets computed on them.

Used by `gasp show-matches --scene` (targets of two frames, computed on the fly) and by
``benchmarks/bench_scale.py`` (the old per-sequence design it measures against). Prepared folders
store no fitted frames or targets: readers compute them from :meth:`gasp.data.store.PreparedData.view`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from gasp import constants as C
from gasp.data.views import View
from gasp.geometry.cameras import fit_intrinsics, resize_depth, resize_image
from gasp.geometry.token_grid import token_targets
from gasp.geometry.tracks import compute_tracks

DEFAULT_CELL_SIZE = 28  # pixels per visual token of Qwen2.5-VL (14 px patches merged 2x2)


@dataclass
class FitConfig:
    """Model input and target settings: token grid, frame size (default grid x 28 px), resize mode,
    track grids and kept fraction, visibility tolerance and border (as in the paper)."""

    grid: tuple[int, int] = (8, 8)
    image_size: tuple[int, int] | None = None
    resize_mode: str = "center_crop"
    track_grids: list[int] = field(default_factory=lambda: [24, 8])
    track_keep_fraction: float = 0.5
    rel_tol: float = 0.05
    border: int = 4

    @property
    def image_hw(self) -> tuple[int, int]:
        """Frame size ``(H, W)``: ``image_size``, or the grid times 28 px."""
        if self.image_size is not None:
            return (int(self.image_size[0]), int(self.image_size[1]))
        return (self.grid[0] * DEFAULT_CELL_SIZE, self.grid[1] * DEFAULT_CELL_SIZE)


@dataclass
class FittedView:
    """A view resized to the target size: image ``(H, W, 3)`` uint8, depth ``(H, W)`` float32 metres,
    ``K`` ``(3, 3)`` float64 for the resized image, ``cam_to_world`` ``(4, 4)`` float64."""

    image: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    cam_to_world: np.ndarray
    index: int
    source: str


def fit_view(view: View, image_hw: tuple[int, int], mode: str) -> FittedView:
    """Resize/crop a validated view to ``image_hw``; K through ``fit_intrinsics`` (depth's K), depth with
    nearest sampling, colour from its own resolution with the same mode (same field of view)."""
    depth_hw = tuple(view.depth.shape)
    K, _ = fit_intrinsics(torch.from_numpy(view.K), depth_hw, image_hw, mode)
    depth = resize_depth(view.depth, depth_hw, image_hw, mode)
    image = resize_image(view.image, tuple(view.image.shape[:2]), image_hw, mode)
    return FittedView(
        image=np.asarray(image, dtype=np.uint8),
        depth=np.asarray(depth, dtype=np.float32),
        K=np.asarray(K, dtype=np.float64),
        cam_to_world=view.cam_to_world,
        index=view.index,
        source=view.source,
    )


def sequence_targets(views: list[FittedView], cfg: FitConfig) -> dict[str, np.ndarray]:
    """Frames, cameras, tracks and token-grid targets of fitted views (anchor first)."""
    depths = np.stack([v.depth for v in views])
    Ks = np.stack([v.K for v in views])
    poses = np.stack([v.cam_to_world for v in views])
    tt = token_targets(
        depths, Ks, poses, tuple(cfg.grid), query_frame=C.ANCHOR, rel_tol=cfg.rel_tol, border=cfg.border
    )
    tracks = compute_tracks(
        depths,
        Ks,
        poses,
        query_frame=C.ANCHOR,
        grids=tuple((g, g) for g in cfg.track_grids),
        keep_fraction=cfg.track_keep_fraction,
        rel_tol=cfg.rel_tol,
        border=cfg.border,
    )

    def arr(x: Any, dtype: Any) -> np.ndarray:
        return np.ascontiguousarray(torch.as_tensor(x).cpu().numpy(), dtype=dtype)

    return {
        C.FRAMES: np.stack([v.image for v in views]),
        C.INTRINSICS: Ks.astype(np.float32),
        C.CAM_TO_WORLD: poses.astype(np.float32),
        C.FRAME_INDEX: np.array([v.index for v in views], dtype=np.int64),
        C.TOKEN_DEPTH: arr(tt.token_depth, np.float32),
        C.MATCH_INDEX: arr(tt.match_index, np.int64),
        C.MATCH_VALID: arr(tt.valid, bool),
        C.MATCH_DEPTH: arr(tt.match_depth, np.float32),
        C.MATCH_SUBCELL: arr(tt.match_subcell, np.float32),
        C.TRACK_QUERY_UV: arr(tracks.query_uv, np.float32),
        C.TRACK_UV: arr(tracks.uv, np.float32),
        C.TRACK_VISIBLE: arr(tracks.visible, bool),
    }
