"""Depth-checked reprojection of pixels from frame a into frame b (dense and sparse share one kernel).

Conventions: pixel ``(u, v) = (column, row)`` with integer coordinates at pixel centres; ``K`` 3x3;
poses 4x4 camera-to-world, OpenCV axes, metres; depth in metres along z, ``0`` or non-finite = invalid.
Inputs may be numpy or torch; outputs are torch tensors on the depth's device, float64 if a depth input
is float64 and float32 otherwise (camera matrices are combined in float64 first). Leading batch
dimensions broadcast.

A point of frame a is **valid** in frame b exactly when

1. its depth ``d_a`` is valid (finite and ``> 0``);
2. it lands in front of camera b (``z_b > 0``);
3. it lies inside frame b at least ``border`` pixels from every edge:
   ``border <= u_b <= W_b - 1 - border`` and ``border <= v_b <= H_b - 1 - border`` (inclusive);
4. frame b's depth ``d_b`` at the nearest pixel ``(floor(u_b + 0.5), floor(v_b + 0.5))`` is valid and
   agrees: ``|z_b - d_b| < rel_tol * min(z_b, d_b)`` (strict).
"""

from __future__ import annotations

import math

import torch

from gasp.geometry.cameras import ArrayLike, common_dtype, relative_pose, to_tensor


def _check_options(rel_tol: float, border: float) -> None:
    if not rel_tol >= 0:
        raise ValueError(f"rel_tol must be >= 0, got {rel_tol}")
    if not border >= 0:
        raise ValueError(f"border must be >= 0 pixels, got {border}")


def _check_depth(name: str, t: torch.Tensor) -> None:
    if t.dim() < 2:
        raise ValueError(f"{name} must have shape (..., H, W), got {tuple(t.shape)}")


def _warp_matrices(
    K_a: ArrayLike,
    cam_to_world_a: ArrayLike,
    K_b: ArrayLike,
    cam_to_world_b: ArrayLike,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``M = K_b R_ab K_a^-1`` ``(..., 3, 3)`` and ``t = K_b t_ab`` ``(..., 3)``, built in float64.

    A pixel ``(u, v)`` of frame a with depth ``d`` maps to ``p = M [u, v, 1]^T + t / d`` in frame b
    (homogeneous, scaled by ``1 / d``), so ``z_b = d * p_2`` and ``(u_b, v_b) = (p_0, p_1) / p_2``.
    """
    # Tiny matrices: build them where float64 exists (not on MPS), then move.
    work = torch.device("cpu") if device.type == "mps" else device
    Ka, Ta, Kb, Tb = (
        to_tensor(x, work).to(torch.float64) for x in (K_a, cam_to_world_a, K_b, cam_to_world_b)
    )
    for name, t, tail in (("K_a", Ka, (3, 3)), ("K_b", Kb, (3, 3)), ("cam_to_world_a", Ta, (4, 4)),
                          ("cam_to_world_b", Tb, (4, 4))):  # fmt: skip
        if tuple(t.shape[-2:]) != tail:
            raise ValueError(f"{name} must have shape (...,{tail[0]},{tail[1]}), got {tuple(t.shape)}")
    T = relative_pose(Ta, Tb)
    M = Kb @ T[..., :3, :3] @ torch.linalg.inv(Ka)
    t = (Kb @ T[..., :3, 3:])[..., 0]
    return M.to(device, dtype), t.to(device, dtype)


def _flat_index(cr: torch.Tensor, depth: torch.Tensor, point_dims: int) -> torch.Tensor:
    """Flat index into ``depth.reshape(-1)`` of rounded pixel coordinates ``cr`` (planar ``(..., 2, *P)``).

    ``cr`` holds ``(column, row)`` already rounded, clamped into the image and free of NaN; the batch
    dimensions in front broadcast against ``depth``'s batch dimensions. int32 when it fits (about 3x
    faster to convert and to gather with than int64 on CPU).
    """
    H, W = depth.shape[-2:]
    itype = torch.int32 if depth.numel() < 2**31 else torch.int64
    idx = torch.add(cr.select(-1 - point_dims, 0), cr.select(-1 - point_dims, 1), alpha=W).to(itype)
    batch = depth.shape[:-2]
    if batch:
        offsets = torch.arange(math.prod(batch), device=depth.device, dtype=itype) * (H * W)
        idx = idx + offsets.reshape(batch + (1,) * point_dims)
    return idx


def _gather_nearest(depth: torch.Tensor, uv: torch.Tensor, point_dims: int) -> torch.Tensor:
    """``depth`` ``(..., H, W)`` at the nearest pixels ``floor(uv + 0.5)`` of planar ``uv`` ``(..., 2, *P)``.

    Coordinates outside the image (or NaN) read some pixel of the same map: callers mask them.
    """
    H, W = depth.shape[-2:]
    # Flat index col + W * row in floating point: exact below 2**24 pixels for float32.
    work = uv.dtype if H * W < 2**24 else torch.float64
    cr = (uv.to(work) + 0.5).floor_().nan_to_num_(0.0, 0.0, 0.0).clamp_(min=0)
    hi = cr.new_tensor([W - 1, H - 1]).reshape((2,) + (1,) * point_dims)
    torch.minimum(cr, hi, out=cr)
    idx = _flat_index(cr, depth, point_dims)
    return depth.reshape(-1).index_select(0, idx.reshape(-1)).reshape(idx.shape)


def _check_border(uv: torch.Tensor, hw: tuple[int, int], border: float, point_dims: int) -> torch.Tensor:
    """``border <= u <= W - 1 - border`` and the same for ``v``, for planar ``uv`` ``(..., 2, *P)``.

    The differences ``u - border`` and ``(W - 1 - border) - u`` have exactly the sign of the
    comparisons (IEEE subtraction never flips a sign), so one ``>= 0`` test on their minimum is exact.
    NaN coordinates give False.
    """
    H, W = hw
    hi = uv.new_tensor([W - 1 - border, H - 1 - border]).reshape((2,) + (1,) * point_dims)
    margin = uv - border
    torch.minimum(margin, hi - uv, out=margin)
    ax = -1 - point_dims
    lo = margin.select(ax, 0)
    return torch.minimum(lo, margin.select(ax, 1), out=lo) >= 0


def sample_depth_nearest(depth: ArrayLike, uv: ArrayLike) -> torch.Tensor:
    """Depth ``(..., H, W)`` sampled at pixels ``uv`` ``(..., N, 2)`` (nearest pixel) -> ``(..., N)``.

    Pixel ``(u, v) = (column, row)``, integers at pixel centres; a point outside the image
    (``floor(u + 0.5)`` not in ``[0, W - 1]`` or likewise for ``v``) gets ``0`` (invalid depth).
    """
    d = to_tensor(depth)
    uv = to_tensor(uv, device=d.device)
    _check_depth("depth", d)
    H, W = d.shape[-2:]
    inside = ((uv >= -0.5) & (uv < uv.new_tensor([W - 0.5, H - 0.5]))).all(dim=-1)
    vals = _gather_nearest(d, uv.movedim(-1, -2), point_dims=1)
    return torch.where(inside, vals, 0).to(common_dtype(d, uv))


def _warp(
    u: torch.Tensor,
    v: torch.Tensor,
    d_a: torch.Tensor,
    M: torch.Tensor,
    t: torch.Tensor,
    depth_b: torch.Tensor,
    rel_tol: float,
    border: float,
    point_dims: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Kernel shared by :func:`reproject` and :func:`reproject_points`.

    ``u``, ``v``, ``d_a`` broadcast to ``(*batch, *P)`` where ``P`` are the ``point_dims`` trailing point
    dimensions (``(N,)`` sparse; ``(H, W)`` dense, with ``u`` ``(1, W)`` and ``v`` ``(H, 1)`` so the ray
    directions are outer sums). ``M``/``t`` carry batch dimensions only. Works on the homogeneous point
    divided by depth, ``M [u, v, 1] + t / d_a``: exact for pure translations (identity maps ``u`` to
    ``u`` bit for bit), which matters at the inclusive border. ``(u_b, v_b)`` are kept planar
    ``(..., 2, *P)`` (contiguous, vectorised) and returned as a ``(..., *P, 2)`` view.
    """
    ext = (1,) * point_dims
    batch = M.shape[:-2]
    ax = -1 - point_dims  # the planar (x, y, z) axis, in front of the point dimensions

    def col(j: int) -> torch.Tensor:  # column j of M (and then t), shaped to broadcast over points
        return M[..., :, j].reshape(batch + (3,) + ext)

    inv_d = d_a.reciprocal()
    # Rows (x, y, z) of M [u, v, 1] + t / d_a; the ray part is an outer sum for the dense grid.
    ray = (col(0) * u.unsqueeze(ax) + col(2)) + col(1) * v.unsqueeze(ax)
    inv_d_p = inv_d.unsqueeze(ax)
    # In place where shapes allow: fresh large buffers cost more than the arithmetic.
    in_place = ray.shape == torch.broadcast_shapes(ray.shape, inv_d_p.shape)
    p = torch.addcmul(ray, inv_d_p, t.reshape(batch + (3,) + ext), out=ray if in_place else None)
    pz = p.select(ax, 2)
    z = pz * d_a
    # d_a valid (finite, > 0) and in front of b <=> min(d_a, 1 / d_a, pz) > 0 (NaN compares False).
    front = torch.minimum(d_a, inv_d)
    front = (
        torch.minimum(front, pz, out=front) > 0 if front.shape == pz.shape else torch.minimum(front, pz) > 0
    )
    pz.masked_fill_(~front, math.nan)
    uv_b = p.narrow(ax, 0, 2).div_(pz.unsqueeze(ax))
    inside = _check_border(uv_b, depth_b.shape[-2:], border, point_dims)
    d_b = _gather_nearest(depth_b, uv_b, point_dims)
    # Also rejects d_b = 0 / NaN / inf, since min(z, d_b) is then <= 0 or the difference is not finite.
    tol = torch.minimum(z, d_b).mul_(rel_tol)
    valid = d_b.sub_(z).abs_() < tol if d_b.shape == tol.shape else (d_b - z).abs_() < tol
    valid &= inside
    full = valid.shape
    return uv_b.movedim(ax, -1).expand(full + (2,)), z.expand(full), valid


def reproject_points(
    uv_a: ArrayLike,
    depth_a_vals: ArrayLike,
    K_a: ArrayLike,
    cam_to_world_a: ArrayLike,
    depth_b: ArrayLike,
    K_b: ArrayLike,
    cam_to_world_b: ArrayLike,
    *,
    rel_tol: float = 0.05,
    border: float = 4,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Moves sparse pixels of frame a into frame b and checks them against b's depth map.

    Validity is the module rule: valid depth, in front of b, ``border <= u_b <= W_b - 1 - border`` and
    ``border <= v_b <= H_b - 1 - border``, and ``|z_b - d_b| < rel_tol * min(z_b, d_b)`` with ``d_b`` read
    at the nearest pixel ``floor(uv_b + 0.5)``.

    Args:
        uv_a: ``(..., N, 2)`` pixels ``(u, v) = (column, row)`` in frame a, integers at pixel centres.
        depth_a_vals: ``(..., N)`` their depths in metres (0 / non-finite = invalid).
        K_a: ``(..., 3, 3)`` intrinsics of frame a.
        cam_to_world_a: ``(..., 4, 4)`` camera-to-world pose of a (OpenCV axes, metres).
        depth_b: ``(..., H_b, W_b)`` depth map of frame b, metres.
        K_b: ``(..., 3, 3)`` intrinsics of frame b.
        cam_to_world_b: ``(..., 4, 4)`` camera-to-world pose of b.
        rel_tol: relative depth tolerance (>= 0).
        border: minimum distance in pixels from every edge of frame b (>= 0).

    Returns:
        ``uv_b`` ``(..., N, 2)`` positions in frame b (NaN where ``d_a`` is invalid or the point is
        not in front of b), ``z_b`` ``(..., N)`` depth of the point in camera b (meaningless where
        ``d_a`` is invalid) and ``valid`` ``(..., N)`` bool.
    """
    _check_options(rel_tol, border)
    uv = to_tensor(uv_a)
    d = to_tensor(depth_a_vals, device=uv.device)
    db = to_tensor(depth_b, device=uv.device)
    if uv.dim() < 2 or uv.shape[-1] != 2:
        raise ValueError(f"uv_a must have shape (..., N, 2), got {tuple(uv.shape)}")
    _check_depth("depth_b", db)
    dtype = common_dtype(uv, d, db)
    uv, d, db = uv.to(dtype), d.to(dtype), db.to(dtype)
    M, t = _warp_matrices(K_a, cam_to_world_a, K_b, cam_to_world_b, dtype, uv.device)
    return _warp(uv[..., 0], uv[..., 1], d, M, t, db, rel_tol, border, point_dims=1)


def reproject(
    depth_a: ArrayLike,
    K_a: ArrayLike,
    cam_to_world_a: ArrayLike,
    depth_b: ArrayLike,
    K_b: ArrayLike,
    cam_to_world_b: ArrayLike,
    *,
    rel_tol: float = 0.05,
    border: float = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Moves every pixel of frame a into frame b and checks it against b's depth map (dense).

    Pixel ``(u, v)`` of ``uv_b[..., v, u]`` is column ``u``, row ``v`` of frame a. ``valid`` is True
    exactly when: ``depth_a`` there is valid (finite, ``> 0``); the point is in front of camera b;
    ``border <= u_b <= W_b - 1 - border`` and ``border <= v_b <= H_b - 1 - border`` (inclusive, pixel
    centres at integers); and ``depth_b`` at the nearest pixel ``floor(uv_b + 0.5)`` is valid and agrees,
    ``|z_b - d_b| < rel_tol * min(z_b, d_b)``. Same kernel as :func:`reproject_points`.

    Args:
        depth_a: ``(..., H, W)`` depth of frame a, metres (0 / non-finite = invalid).
        K_a: ``(..., 3, 3)`` intrinsics of frame a.
        cam_to_world_a: ``(..., 4, 4)`` camera-to-world pose of a (OpenCV axes, metres).
        depth_b: ``(..., H_b, W_b)`` depth of frame b, metres.
        K_b: ``(..., 3, 3)`` intrinsics of frame b.
        cam_to_world_b: ``(..., 4, 4)`` camera-to-world pose of b.
        rel_tol: relative depth tolerance (>= 0).
        border: minimum distance in pixels from every edge of frame b (>= 0).

    Returns:
        ``uv_b`` ``(..., H, W, 2)`` position of each pixel of a in frame b (NaN where ``depth_a`` is
        invalid or the point is behind b) and ``valid`` ``(..., H, W)`` bool.
    """
    _check_options(rel_tol, border)
    da = to_tensor(depth_a)
    db = to_tensor(depth_b, device=da.device)
    _check_depth("depth_a", da)
    _check_depth("depth_b", db)
    dtype = common_dtype(da, db)
    da, db = da.to(dtype), db.to(dtype)
    H, W = da.shape[-2:]
    M, t = _warp_matrices(K_a, cam_to_world_a, K_b, cam_to_world_b, dtype, da.device)
    u = torch.arange(W, dtype=dtype, device=da.device)[None, :]
    v = torch.arange(H, dtype=dtype, device=da.device)[:, None]
    uv_b, _, valid = _warp(u, v, da, M, t, db, rel_tol, border, point_dims=2)
    return uv_b, valid
