"""Point tracks: grid query points in one frame followed into every frame with depth-checked visibility.

Conventions: pixel ``(u, v) = (column, row)`` with integer coordinates at pixel centres; ``K`` 3x3;
poses 4x4 camera-to-world, OpenCV axes, metres; depth in metres along z, ``0`` or non-finite = invalid.
Visibility in a frame is the rule of :mod:`gasp.geometry.reproject` (valid depth, in front, at least
``border`` px from every edge, ``|z - d| < rel_tol * min(z, d)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gasp.geometry.cameras import ArrayLike, common_dtype, to_tensor
from gasp.geometry.reproject import reproject_points, sample_depth_nearest


@dataclass
class Tracks:
    """Tracks of ``Q`` query points through ``F`` frames.

    Attributes:
        query_uv: ``(Q, 2)`` query pixels ``(u, v)`` in the query frame.
        uv: ``(Q, F, 2)`` pixel position in every frame (NaN where the point has no valid query depth
            or is behind that camera).
        depth: ``(Q, F)`` depth of the 3D point in each frame's camera, metres.
        visible: ``(Q, F)`` bool; in the query frame True wherever the query depth is valid.
        query_frame: index of the query frame.
    """

    query_uv: torch.Tensor
    uv: torch.Tensor
    depth: torch.Tensor
    visible: torch.Tensor
    query_frame: int


def grid_points(
    hw: tuple[int, int], grid: tuple[int, int], device: torch.device | str | None = None
) -> torch.Tensor:
    """Centres of a ``rows x cols`` grid of equal cells over an ``(H, W)`` image, row-major.

    Cell ``(r, c)`` has centre ``((c + 0.5) * W / cols - 0.5, (r + 0.5) * H / rows - 0.5)`` (pixel
    ``(u, v) = (column, row)``, integers at pixel centres); cells may be any real pixel size.

    Returns:
        ``(rows * cols, 2)`` float32 pixel coordinates, flat index ``r * cols + c``.
    """
    (H, W), (gh, gw) = hw, grid
    if min(H, W, gh, gw) <= 0:
        raise ValueError(f"image size and grid must be positive, got hw={hw}, grid={grid}")
    u = (torch.arange(gw, dtype=torch.float64, device=device) + 0.5) * (W / gw) - 0.5
    v = (torch.arange(gh, dtype=torch.float64, device=device) + 0.5) * (H / gh) - 0.5
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([uu, vv], dim=-1).reshape(-1, 2).to(torch.float32)


def check_frames(
    depths: torch.Tensor, Ks: torch.Tensor, cam_to_world: torch.Tensor, query_frame: int
) -> None:
    """Raises ValueError unless depths ``(F, H, W)``, Ks ``(F, 3, 3)``, poses ``(F, 4, 4)`` agree."""
    if depths.dim() != 3:
        raise ValueError(f"depths must have shape (F, H, W), got {tuple(depths.shape)}")
    F = depths.shape[0]
    if tuple(Ks.shape) != (F, 3, 3):
        raise ValueError(f"Ks must have shape ({F}, 3, 3) to match depths, got {tuple(Ks.shape)}")
    if tuple(cam_to_world.shape) != (F, 4, 4):
        raise ValueError(f"cam_to_world must have shape ({F}, 4, 4), got {tuple(cam_to_world.shape)}")
    if not -F <= query_frame < F:
        raise ValueError(f"query_frame={query_frame} is out of range for {F} frames")


def follow_points(
    query_uv: ArrayLike,
    depths: ArrayLike,
    Ks: ArrayLike,
    cam_to_world: ArrayLike,
    *,
    query_frame: int = 0,
    rel_tol: float = 0.05,
    border: float = 4,
) -> Tracks:
    """Follows query pixels of one frame into every frame (no ranking; see :func:`compute_tracks`).

    Each query point takes the query frame's depth at its nearest pixel, is lifted to 3D and projected
    into every frame with :func:`gasp.geometry.reproject.reproject_points`. The query frame itself is
    the identity: ``uv = query_uv``, ``depth`` = the query depth, visible where that depth is valid.

    Args:
        query_uv: ``(Q, 2)`` pixels ``(u, v)`` in the query frame.
        depths: ``(F, H, W)`` depth maps, metres.
        Ks: ``(F, 3, 3)`` intrinsics.
        cam_to_world: ``(F, 4, 4)`` camera-to-world poses (OpenCV axes, metres).
        query_frame: index of the query frame.
        rel_tol: relative depth tolerance of the visibility test.
        border: minimum distance in pixels from every edge for visibility.

    Returns:
        :class:`Tracks` with ``uv`` ``(Q, F, 2)``, ``depth`` ``(Q, F)``, ``visible`` ``(Q, F)``.
    """
    d = to_tensor(depths)
    K = to_tensor(Ks, device=d.device)
    T = to_tensor(cam_to_world, device=d.device)
    check_frames(d, K, T, query_frame)
    q = query_frame % d.shape[0]
    quv = to_tensor(query_uv, device=d.device).to(common_dtype(d))
    if quv.dim() != 2 or quv.shape[-1] != 2:
        raise ValueError(f"query_uv must have shape (Q, 2), got {tuple(quv.shape)}")
    qd = sample_depth_nearest(d[q], quv)
    uv, z, valid = reproject_points(quv, qd, K[q], T[q], d, K, T, rel_tol=rel_tol, border=border)
    uv, z, valid = uv.transpose(0, 1).clone(), z.transpose(0, 1).clone(), valid.transpose(0, 1).clone()
    query_ok = (qd > 0) & (qd < math.inf)
    uv[:, q] = torch.where(query_ok[:, None], quv, math.nan)
    z[:, q] = qd
    valid[:, q] = query_ok
    return Tracks(query_uv=quv, uv=uv, depth=z, visible=valid, query_frame=q)


def compute_tracks(
    depths: ArrayLike,
    Ks: ArrayLike,
    cam_to_world: ArrayLike,
    *,
    query_frame: int = 0,
    grids: tuple[tuple[int, int], ...] = ((24, 24), (8, 8)),
    keep_fraction: float = 0.5,
    rel_tol: float = 0.05,
    border: float = 4,
    frame_counts: ArrayLike | None = None,
) -> Tracks:
    """Paper tracks: grid query points followed through all frames, the most visible fraction kept.

    Query points are the cell centres of every grid in ``grids`` (:func:`grid_points`, concatenated in
    order) on the query frame. Each is followed into every frame (:func:`follow_points`) and ranked by
    how many frames it is visible in (query frame included); the ``ceil(keep_fraction * Q)`` most
    visible are kept, ties broken by the lower query index (grid order), so the result is
    deterministic. Kept tracks are returned in their original query order. A kept track can be
    invisible everywhere when fewer points than that have a valid query depth.

    Args:
        depths: ``(F, H, W)`` depth maps, metres (0 / non-finite = invalid).
        Ks: ``(F, 3, 3)`` intrinsics.
        cam_to_world: ``(F, 4, 4)`` camera-to-world poses (OpenCV axes, metres).
        query_frame: index of the query frame.
        grids: ``(rows, cols)`` query grids.
        keep_fraction: fraction of query points kept, in ``(0, 1]``.
        rel_tol: relative depth tolerance of the visibility test.
        border: minimum distance in pixels from every edge for visibility.
        frame_counts: ``(F,)`` how many frames of the sequence each given frame stands for (a frame a
            sequence repeats is passed once); visibility is counted with these weights. Default 1.

    Returns:
        :class:`Tracks` with ``Q = ceil(keep_fraction * sum(rows * cols))`` tracks.
    """
    if not 0 < keep_fraction <= 1:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    if not grids:
        raise ValueError("grids must name at least one (rows, cols) query grid")
    d = to_tensor(depths)
    hw = tuple(d.shape[-2:])
    query_uv = torch.cat([grid_points(hw, g, device=d.device) for g in grids])
    tracks = follow_points(
        query_uv, d, Ks, cam_to_world, query_frame=query_frame, rel_tol=rel_tol, border=border
    )
    Q = query_uv.shape[0]
    keep = math.ceil(keep_fraction * Q - 1e-9)
    if frame_counts is None:
        counts = tracks.visible.sum(dim=1)
    else:
        counts = (tracks.visible.long() * to_tensor(frame_counts, device=d.device).long()).sum(dim=1)
    order = torch.sort(-counts, stable=True).indices[:keep]
    kept = order.sort().values
    return Tracks(
        query_uv=tracks.query_uv[kept],
        uv=tracks.uv[kept],
        depth=tracks.depth[kept],
        visible=tracks.visible[kept],
        query_frame=tracks.query_frame,
    )
