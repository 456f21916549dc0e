"""One model-specific training sample from prepared data: frames at the model's size, token-grid
targets for the model's grid and the set of supervised queries.

Everything here depends on the model (its token grid and input size) and is computed from decoded
views, in DataLoader worker processes (:mod:`gasp.data.loader`); nothing of it is stored on disk.

Query sets (``queries``):

* ``tracks`` (the paper's): the cell centres of an 8x8 and a 24x24 grid over the anchor frame are
  followed through the sequence (:func:`gasp.geometry.tracks.compute_tracks`) and the 50% visible in
  the most frames are kept; each kept point supervises the token cell containing it. Points of both
  grids may fall in one cell, so the number of supervised cells is at most the number of kept points.
* ``cells``: every token cell of the anchor frame.

The query set is a per-anchor-token mask ``query_mask (N,)``; it is also folded into ``match_valid``
(an anchor token outside the set has no valid match in any frame), so the losses and the probe
supervise and score exactly the chosen queries.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from gasp import constants as C
from gasp.data.views import View
from gasp.errors import ConfigError
from gasp.geometry.cameras import fit_intrinsics, resize_depth, resize_image
from gasp.geometry.token_grid import cell_of, token_targets
from gasp.geometry.tracks import compute_tracks

QUERY_SETS = ("tracks", "cells")
QUERY_MASK = "query_mask"  # (N,) bool, anchor token cells that are supervised / scored
TRACK_GRIDS = ((24, 24), (8, 8))  # the paper's query grids over the anchor frame
TRACK_KEEP_FRACTION = 0.5  # the paper keeps the most visible half of the tracks
RESIZE_MODE = "center_crop"  # keep the aspect ratio, crop the centre (as `gasp prepare` did)


def check_queries(queries: str, flag: str = "--queries") -> str:
    """``queries`` if it names a query set, else ConfigError naming the flag."""
    if queries not in QUERY_SETS:
        raise ConfigError(f"{flag} must be one of {', '.join(QUERY_SETS)}, got {queries!r}")
    return queries


def fit_views(
    views: list[View], image_hw: tuple[int, int], mode: str = RESIZE_MODE
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Resize/crop decoded views to ``image_hw``: images ``(F, H, W, 3)`` uint8, depths ``(F, H, W)``,
    Ks ``(F, 3, 3)`` (through :func:`gasp.geometry.cameras.fit_intrinsics`), poses ``(F, 4, 4)``."""
    images, depths, Ks = [], [], []
    for v in views:
        depth_hw = tuple(v.depth.shape)
        K, _ = fit_intrinsics(torch.from_numpy(np.asarray(v.K, dtype=np.float64)), depth_hw, image_hw, mode)
        Ks.append(K)
        depths.append(resize_depth(torch.from_numpy(v.depth), depth_hw, image_hw, mode))
        images.append(resize_image(v.image, tuple(v.image.shape[:2]), image_hw, mode))
    poses = torch.from_numpy(np.stack([np.asarray(v.cam_to_world, dtype=np.float64) for v in views]))
    return torch.stack(images).numpy(), torch.stack(depths), torch.stack(Ks), poses


def distinct_views(views: list[View]) -> tuple[list[int], list[int]]:
    """Which views to compute, and where each view's results are among them.

    A sequence may repeat a stored frame (frames are drawn with replacement); each repeat is resized
    and given targets once (the same ``View`` object, from ``PreparedData.views``). The anchor is always
    computed on its own: it matches itself by identity, a repeat of it by reprojection.

    Returns:
        ``slots`` (positions of the views to compute, the anchor first) and ``inverse`` (for every
        view, its index into ``slots``).
    """
    slots, inverse, seen = [0], [0], {}
    for f, v in enumerate(views[1:], start=1):
        if id(v) not in seen:
            seen[id(v)] = len(slots)
            slots.append(f)
        inverse.append(seen[id(v)])
    return slots, inverse


def track_query_mask(
    depths: torch.Tensor,
    Ks: torch.Tensor,
    poses: torch.Tensor,
    grid: tuple[int, int],
    *,
    rel_tol: float = 0.05,
    border: float = 4,
    frame_counts: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(gh * gw,)`` bool: the anchor cells holding a kept track point (see the module docstring);
    ``frame_counts`` as in :func:`gasp.geometry.tracks.compute_tracks`."""
    tracks = compute_tracks(
        depths,
        Ks,
        poses,
        query_frame=C.ANCHOR,
        grids=TRACK_GRIDS,
        keep_fraction=TRACK_KEEP_FRACTION,
        rel_tol=rel_tol,
        border=border,
        frame_counts=frame_counts,
    )
    hw = (int(depths.shape[-2]), int(depths.shape[-1]))
    cells, _ = cell_of(tracks.query_uv, hw, grid)
    mask = torch.zeros(grid[0] * grid[1], dtype=torch.bool)
    mask[cells] = True
    return mask


def sample_from_views(
    views: list[View],
    grid: tuple[int, int],
    image_hw: tuple[int, int],
    queries: str,
    *,
    rel_tol: float = 0.05,
    border: float = 4,
) -> dict[str, Any]:
    """A sample dict (gasp.constants keys + ``query_mask``) from the views of one sequence, anchor first.

    Keys: ``frames`` (F, H, W, 3) uint8; ``match_index``, ``match_valid``, ``match_depth`` (F, N);
    ``token_depth`` (F, N); ``query_mask`` (N,); ``frame_index`` (F,) source-video positions.
    """
    check_queries(queries)
    grid = (int(grid[0]), int(grid[1]))
    slots, inverse = distinct_views(views)
    images, depths, Ks, poses = fit_views([views[f] for f in slots], image_hw)
    tt = token_targets(depths, Ks, poses, grid, query_frame=C.ANCHOR, rel_tol=rel_tol, border=border)
    inv = torch.as_tensor(inverse)
    if queries == "tracks":  # visibility is counted over every frame of the sequence, repeats included
        counts = torch.bincount(inv, minlength=len(slots))
        mask = track_query_mask(depths, Ks, poses, grid, rel_tol=rel_tol, border=border, frame_counts=counts)
    else:
        mask = torch.ones(grid[0] * grid[1], dtype=torch.bool)
    if len(slots) < len(views):
        images = images[inverse]
    tt.valid, tt.match_index, tt.match_depth = tt.valid[inv], tt.match_index[inv], tt.match_depth[inv]
    tt.token_depth = tt.token_depth[inv]
    valid = tt.valid & mask[None]
    f = len(views)
    return {
        C.FRAMES: images,
        C.MATCH_INDEX: torch.where(valid, tt.match_index, -1).numpy(),
        C.MATCH_VALID: valid.numpy(),
        C.MATCH_DEPTH: torch.where(valid, tt.match_depth, 0).numpy(),
        C.TOKEN_DEPTH: tt.token_depth.reshape(f, -1).numpy(),
        QUERY_MASK: mask.numpy(),
        C.FRAME_INDEX: np.array([v.index for v in views], dtype=np.int64),
    }


def build_sample(
    prepared: Any,
    i: int,
    grid: tuple[int, int],
    image_hw: tuple[int, int],
    queries: str,
    *,
    rel_tol: float = 0.05,
    border: float = 4,
) -> dict[str, Any]:
    """Sample ``i`` of a prepared data set (``gasp.data.store.PreparedData``) for a model's grid and size.

    Decodes the sequence's frames (exactly the index's frames, anchor first), resizes them, and
    computes the targets and query mask of :func:`sample_from_views`; adds ``scene`` (name),
    ``sequence_id`` and ``index`` (= ``i``).
    """
    index = prepared.index
    scene = int(index.scene[i])
    views = prepared.views(scene, [int(f) for f in index.frames(i)])
    sample = sample_from_views(views, grid, image_hw, queries, rel_tol=rel_tol, border=border)
    sample[C.SCENE] = prepared.scenes[scene]
    sample[C.SEQUENCE_ID] = index.sequence_id(i)
    sample["index"] = int(i)
    return sample
