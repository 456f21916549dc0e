"""Correspondence targets on a VLM's visual-token grid (what the GASP losses are trained against).

Conventions: pixel ``(u, v) = (column, row)`` with integer coordinates at pixel centres; ``K`` 3x3;
poses 4x4 camera-to-world, OpenCV axes, metres; depth in metres along z, ``0`` or non-finite = invalid.

Each frame of size ``(H, W)`` is covered by a ``gh x gw`` grid of equal cells of real-valued size
``(H / gh, W / gw)`` pixels. In pixel-edge coordinates (``u + 0.5``, spanning ``[0, W)``) cell column
``c`` covers ``[c * W / gw, (c + 1) * W / gw)``, so a point belongs to column
``floor((u + 0.5) * gw / W)`` and its sub-cell position is the fractional part of that quantity; rows
likewise. A pixel belongs to the cell containing its centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from gasp.geometry.cameras import ArrayLike, to_tensor
from gasp.geometry.tracks import check_frames, follow_points, grid_points


@dataclass
class TokenTargets:
    """Targets for ``N = gh * gw`` query cells of the query frame in each of ``F`` frames.

    Attributes:
        match_index: ``(F, N)`` int64 flat cell index ``r * gw + c`` matched in frame f, -1 if invalid.
        valid: ``(F, N)`` bool, the visibility rule of :mod:`gasp.geometry.reproject`.
        match_depth: ``(F, N)`` depth of the query cell's 3D point in frame f's camera, metres (0 if
            invalid).
        match_subcell: ``(F, N, 2)`` ``(x, y)`` position inside the matched cell, in ``[0, 1)`` (0 if
            invalid).
        token_depth: ``(F, gh, gw)`` lower median of the valid depth pixels of each cell, 0 if none.
        grid: ``(gh, gw)``.
        query_frame: index of the query (anchor) frame.
    """

    match_index: torch.Tensor
    valid: torch.Tensor
    match_depth: torch.Tensor
    match_subcell: torch.Tensor
    token_depth: torch.Tensor
    grid: tuple[int, int]
    query_frame: int


def _check_grid(hw: tuple[int, int], grid: tuple[int, int]) -> None:
    if len(grid) != 2 or min(grid) <= 0 or grid[0] > hw[0] or grid[1] > hw[1]:
        raise ValueError(f"grid must be (gh, gw) with 1 <= gh <= H and 1 <= gw <= W, got {grid} for {hw}")


def cell_of(uv: ArrayLike, hw: tuple[int, int], grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token cell containing each pixel position, and the position inside it.

    Args:
        uv: ``(..., N, 2)`` pixels ``(u, v) = (column, row)``, integers at pixel centres.
        hw: image size ``(H, W)``.
        grid: ``(gh, gw)`` token grid.

    Returns:
        ``index`` ``(..., N)`` int64 flat cell index ``r * gw + c`` (clamped into the grid; positions
        outside the image or NaN map to an arbitrary cell, mask them) and ``subcell`` ``(..., N, 2)``
        ``(x, y)`` in ``[0, 1)`` for points inside the image.
    """
    uv = to_tensor(uv)
    (H, W), (gh, gw) = hw, grid
    scale = uv.new_tensor([gw / W, gh / H])
    pos = (uv + 0.5) * scale
    cell = pos.floor()
    subcell = pos - cell
    cell = torch.nan_to_num(cell, nan=0.0)
    col = cell[..., 0].clamp(0, gw - 1).long()
    row = cell[..., 1].clamp(0, gh - 1).long()
    return row * gw + col, subcell


def cell_median_depth(depth: ArrayLike, grid: tuple[int, int]) -> torch.Tensor:
    """Per-cell depth of depth maps ``(..., H, W)`` -> ``(..., gh, gw)``.

    The lower median of the valid (finite, ``> 0``) depth pixels whose centres lie in the cell (an
    actual pixel value, so surfaces never mix), ``0`` where a cell has none. Cells may have any real
    pixel size.
    """
    d = to_tensor(depth)
    if d.dim() < 2:
        raise ValueError(f"depth must have shape (..., H, W), got {tuple(d.shape)}")
    H, W = d.shape[-2:]
    gh, gw = grid
    _check_grid((H, W), grid)
    if H % gh == 0 and W % gw == 0:
        return _median_whole_cells(d, grid)
    return _median_by_table(d, grid)


def _valid_or_nan(d: torch.Tensor) -> torch.Tensor:
    return torch.where((d > 0) & (d < math.inf), d, math.nan)


def _median_whole_cells(d: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """:func:`cell_median_depth` for cells of whole pixels: one reshape, no gather. On the CPU each
    cell's pixels are sorted by numpy (invalid ones as +inf, last) and the lower median of the valid
    ones is picked; elsewhere torch's ``nanmedian`` (same values)."""
    (H, W), (gh, gw) = d.shape[-2:], grid
    ch, cw = H // gh, W // gw
    if d.device.type != "cpu":
        cells = d.reshape(d.shape[:-2] + (gh, ch, gw, cw)).transpose(-3, -2)
        cells = cells.reshape(d.shape[:-2] + (gh, gw, ch * cw))
        cells = cells.masked_fill(~((cells > 0) & (cells < math.inf)), math.nan)
        return torch.nan_to_num(cells.nanmedian(dim=-1).values, nan=0.0)
    a = d.detach().numpy()
    cells = (
        a.reshape(a.shape[:-2] + (gh, ch, gw, cw)).swapaxes(-3, -2).reshape(a.shape[:-2] + (gh, gw, ch * cw))
    )
    if np.may_share_memory(cells, a):
        cells = cells.copy()  # sorted in place below
    invalid = ~(cells > 0)  # also NaN
    invalid |= cells == np.inf
    np.copyto(cells, np.inf, where=invalid)
    count = ch * cw - np.count_nonzero(invalid, axis=-1)
    cells.sort(axis=-1)
    lower = np.maximum(count - 1, 0) // 2
    med = np.take_along_axis(cells, lower[..., None], axis=-1)[..., 0]
    return torch.from_numpy(np.where(count > 0, med, np.zeros((), dtype=a.dtype)))


def _median_by_table(d: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """:func:`cell_median_depth` for cells of any real pixel size (a padded pixel table per cell)."""
    (H, W), (gh, gw) = d.shape[-2:], grid
    dev = d.device
    rows = ((torch.arange(H, dtype=torch.float64, device=dev) + 0.5) * (gh / H)).floor().long()
    cols = ((torch.arange(W, dtype=torch.float64, device=dev) + 0.5) * (gw / W)).floor().long()
    cell = (rows[:, None] * gw + cols[None, :]).reshape(-1)
    order = torch.argsort(cell, stable=True)
    counts = torch.bincount(cell, minlength=gh * gw)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(H * W, device=dev) - starts[cell[order]]
    # (N, max_count) pixel index per cell, padded with H * W, which points at an appended NaN.
    table = torch.full((gh * gw, int(counts.max())), H * W, dtype=torch.long, device=dev)
    table[cell[order], slot] = order
    flat = _valid_or_nan(d.reshape(-1, H * W))
    flat = torch.cat([flat, flat.new_full((flat.shape[0], 1), math.nan)], dim=1)
    med = flat[:, table].nanmedian(dim=-1).values
    return torch.nan_to_num(med, nan=0.0).reshape(d.shape[:-2] + (gh, gw))


def token_targets(
    depths: ArrayLike,
    Ks: ArrayLike,
    cam_to_world: ArrayLike,
    grid: tuple[int, int],
    *,
    query_frame: int = 0,
    rel_tol: float = 0.05,
    border: float = 4,
) -> TokenTargets:
    """Token-grid correspondence targets: where each query-frame cell lands in every frame.

    The query point of cell ``(r, c)`` is its centre ``((c + 0.5) * W / gw - 0.5, (r + 0.5) * H / gh -
    0.5)`` with the depth map sampled there (nearest pixel). It is followed into every frame with the
    visibility rule of :mod:`gasp.geometry.reproject` (valid depth, in front, at least ``border`` px
    from every edge, ``|z - d| < rel_tol * min(z, d)``); the matched cell is the cell containing the
    projection. The query frame matches itself (identity, valid where its depth is valid).

    Args:
        depths: ``(F, H, W)`` depth maps at the resolution the VLM sees, metres.
        Ks: ``(F, 3, 3)`` intrinsics for that resolution (see ``cameras.fit_intrinsics``).
        cam_to_world: ``(F, 4, 4)`` camera-to-world poses (OpenCV axes, metres).
        grid: ``(gh, gw)`` token grid per frame.
        query_frame: index of the query (anchor) frame.
        rel_tol: relative depth tolerance of the visibility test.
        border: minimum distance in pixels from every edge for visibility.

    Returns:
        :class:`TokenTargets` (``N = gh * gw``, flat index ``r * gw + c``).
    """
    d = to_tensor(depths)
    K = to_tensor(Ks, device=d.device)
    T = to_tensor(cam_to_world, device=d.device)
    check_frames(d, K, T, query_frame)
    hw = (d.shape[-2], d.shape[-1])
    grid = (int(grid[0]), int(grid[1]))
    _check_grid(hw, grid)
    tracks = follow_points(
        grid_points(hw, grid, device=d.device),
        d,
        K,
        T,
        query_frame=query_frame,
        rel_tol=rel_tol,
        border=border,
    )
    valid = tracks.visible.transpose(0, 1).contiguous()
    index, subcell = cell_of(tracks.uv.transpose(0, 1), hw, grid)
    return TokenTargets(
        match_index=torch.where(valid, index, -1),
        valid=valid,
        match_depth=torch.where(valid, tracks.depth.transpose(0, 1), 0).to(torch.float32),
        match_subcell=torch.where(valid[..., None], subcell, 0).to(torch.float32),
        token_depth=cell_median_depth(d, grid).to(torch.float32),
        grid=grid,
        query_frame=tracks.query_frame,
    )
