"""Pinhole cameras, rigid poses, and the one place that keeps intrinsics consistent under resize/crop.

Conventions (shared by all of ``gasp.geometry``):

- Pixel ``(u, v) = (column, row)``; integer coordinates are pixel centres, so pixel ``(0, 0)`` covers
  ``[-0.5, 0.5) x [-0.5, 0.5)`` and an image of width ``W`` spans ``u`` in ``[-0.5, W - 0.5)``.
- ``K`` is 3x3 ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]``; poses are 4x4 **camera-to-world** with OpenCV
  axes (x right, y down, z forward), in metres.
- Depth is metres along the camera z axis; ``0`` or non-finite means invalid.
- Inputs may be numpy arrays or torch tensors; outputs are torch tensors, float64 if any floating input
  is float64 and float32 otherwise. Leading batch dimensions broadcast.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

ArrayLike = torch.Tensor | np.ndarray
ResizeMode = Literal["resize", "center_crop"]
RESIZE_MODES: tuple[str, ...] = ("resize", "center_crop")


def to_tensor(x: ArrayLike, device: torch.device | str | None = None) -> torch.Tensor:
    """Converts ``x`` to a floating torch tensor (float64 stays float64; anything else -> float32)."""
    t = torch.as_tensor(x, device=device)
    if t.dtype != torch.float64 and t.dtype != torch.float32:
        t = t.to(torch.float32)
    return t


def common_dtype(*xs: torch.Tensor) -> torch.dtype:
    """float64 if any of ``xs`` is float64, else float32."""
    return torch.float64 if any(x.dtype == torch.float64 for x in xs) else torch.float32


def _floats(*xs: ArrayLike) -> list[torch.Tensor]:
    """Tensors on the first input's device with a common float dtype (see :func:`common_dtype`)."""
    ts = [to_tensor(xs[0])]
    ts += [to_tensor(x, device=ts[0].device) for x in xs[1:]]
    dtype = common_dtype(*ts)
    return [t.to(dtype) for t in ts]


def _check_shape(name: str, t: torch.Tensor, tail: tuple[int | None, ...]) -> None:
    """Raises ValueError unless ``t.shape`` ends with ``tail`` (None = any size)."""
    ok = t.dim() >= len(tail) and all(
        want is None or got == want for got, want in zip(t.shape[t.dim() - len(tail) :], tail)
    )
    if not ok:
        pretty = ",".join("N" if s is None else str(s) for s in tail)
        raise ValueError(f"{name} must have shape (...,{pretty}), got {tuple(t.shape)}")


def unproject(uv: ArrayLike, depth: ArrayLike, K: ArrayLike) -> torch.Tensor:
    """Lifts pixels with depth to 3D points in the camera frame.

    Args:
        uv: ``(..., N, 2)`` pixel coordinates ``(u, v) = (column, row)``, integers at pixel centres.
        depth: ``(..., N)`` depth in metres along the camera z axis.
        K: ``(..., 3, 3)`` intrinsics.

    Returns:
        ``(..., N, 3)`` points in camera coordinates (OpenCV axes, metres); ``z == depth``.
    """
    uv, depth, K = _floats(uv, depth, K)
    _check_shape("uv", uv, (None, 2))
    _check_shape("K", K, (3, 3))
    fx, s, cx = (K[..., 0, j, None] for j in range(3))
    fy, cy = K[..., 1, 1, None], K[..., 1, 2, None]
    y = (uv[..., 1] - cy) / fy
    x = (uv[..., 0] - cx - s * y) / fx
    return torch.stack(torch.broadcast_tensors(x * depth, y * depth, depth), dim=-1)


def project(xyz_cam: ArrayLike, K: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Projects camera-frame points to pixels.

    Args:
        xyz_cam: ``(..., N, 3)`` points in camera coordinates (OpenCV axes, metres).
        K: ``(..., 3, 3)`` intrinsics.

    Returns:
        ``uv`` ``(..., N, 2)`` pixel coordinates ``(column, row)`` (pixel centres at integers) and ``z``
        ``(..., N)`` depth along the camera axis. ``uv`` is meaningless where ``z <= 0``.
    """
    xyz, K = _floats(xyz_cam, K)
    _check_shape("xyz_cam", xyz, (None, 3))
    _check_shape("K", K, (3, 3))
    z = xyz[..., 2]
    xn, yn = xyz[..., 0] / z, xyz[..., 1] / z
    fx, s, cx = (K[..., 0, j, None] for j in range(3))
    fy, cy = K[..., 1, 1, None], K[..., 1, 2, None]
    uv = torch.stack(torch.broadcast_tensors(fx * xn + s * yn + cx, fy * yn + cy), dim=-1)
    return uv, z


def transform_points(T: ArrayLike, xyz: ArrayLike) -> torch.Tensor:
    """Applies a rigid 4x4 transform ``T`` ``(..., 4, 4)`` to points ``(..., N, 3)`` -> ``(..., N, 3)``."""
    T, xyz = _floats(T, xyz)
    _check_shape("T", T, (4, 4))
    _check_shape("xyz", xyz, (None, 3))
    return xyz @ T[..., :3, :3].transpose(-1, -2) + T[..., None, :3, 3]


def invert_pose(T: ArrayLike) -> torch.Tensor:
    """Rigid inverse of ``(..., 4, 4)`` poses: ``[R | t]^-1 = [R^T | -R^T t]`` (exact for rigid ``T``)."""
    (T,) = _floats(T)
    _check_shape("T", T, (4, 4))
    R_t = T[..., :3, :3].transpose(-1, -2)
    out = torch.zeros_like(T)
    out[..., :3, :3] = R_t
    out[..., :3, 3] = -(R_t @ T[..., :3, 3, None])[..., 0]
    out[..., 3, 3] = 1
    return out


def relative_pose(cam_to_world_a: ArrayLike, cam_to_world_b: ArrayLike) -> torch.Tensor:
    """``T_a_to_b = inv(cam_to_world_b) @ cam_to_world_a`` ``(..., 4, 4)``: camera-a points -> camera b.

    Both poses are camera-to-world, OpenCV axes, metres; batch dimensions broadcast.
    """
    a, b = _floats(cam_to_world_a, cam_to_world_b)
    return invert_pose(b) @ a


def is_rigid_pose(T: ArrayLike, atol: float = 1e-3) -> torch.Tensor:
    """Whether each ``(..., 4, 4)`` pose is a rigid transform, as a bool tensor ``(...)``.

    True when every entry is finite, the rotation block is orthonormal (``|R R^T - I| <= atol``),
    ``|det R - 1| <= atol`` (no reflection) and the last row is ``0 0 0 1`` within ``atol``.
    """
    (T,) = _floats(T)
    _check_shape("T", T, (4, 4))
    finite = torch.isfinite(T).flatten(-2).all(-1)
    T = torch.where(finite[..., None, None], T, torch.eye(4, dtype=T.dtype, device=T.device))
    R = T[..., :3, :3]
    eye = torch.eye(3, dtype=T.dtype, device=T.device)
    ortho = ((R @ R.transpose(-1, -2) - eye).abs() <= atol).flatten(-2).all(-1)
    det_ok = (torch.linalg.det(R) - 1).abs() <= atol
    last = T.new_tensor([0.0, 0.0, 0.0, 1.0])
    row_ok = ((T[..., 3, :] - last).abs() <= atol).all(-1)
    return finite & ortho & det_ok & row_ok


def _scale_and_crop(
    src_hw: tuple[int, int], dst_hw: tuple[int, int], mode: str
) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """Scaled size ``(Hs, Ws)`` (before the crop) and crop box ``(top, left, h, w)`` in the scaled image."""
    (H, W), (h, w) = src_hw, dst_hw
    if min(H, W, h, w) <= 0:
        raise ValueError(f"image sizes must be positive, got src_hw={src_hw}, dst_hw={dst_hw}")
    if mode == "resize":
        Hs, Ws = h, w
    elif mode == "center_crop":
        s = max(h / H, w / W)
        Hs, Ws = max(h, round(H * s)), max(w, round(W * s))
    else:
        raise ValueError(f"mode must be one of {RESIZE_MODES}, got {mode!r}")
    return (Hs, Ws), ((Hs - h) // 2, (Ws - w) // 2, h, w)


def fit_intrinsics(
    K: ArrayLike, src_hw: tuple[int, int], dst_hw: tuple[int, int], mode: ResizeMode = "resize"
) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Intrinsics of an image resized (and possibly centre-cropped) from ``src_hw`` to ``dst_hw``.

    This is THE function that owns resize/crop of ``K``; :func:`resize_image` and :func:`resize_depth`
    use the same scaled size and crop box, so pixels and ``K`` always stay consistent.

    Modes: ``"resize"`` scales each axis to ``dst_hw`` exactly (aspect ratio may change);
    ``"center_crop"`` scales both axes by one factor so the result covers ``dst_hw`` (scaled size
    ``max(dst, round(src * s))``), then crops the centre (offset ``(scaled - dst) // 2``).
    With pixel centres at integers, a scale ``s`` maps ``u -> s * (u + 0.5) - 0.5``.

    Args:
        K: ``(..., 3, 3)`` intrinsics of the source image.
        src_hw: ``(H, W)`` source size in pixels.
        dst_hw: ``(h, w)`` output size in pixels.
        mode: ``"resize"`` or ``"center_crop"``.

    Returns:
        ``K_new`` ``(..., 3, 3)`` and ``crop_box = (top, left, height, width)`` in the SCALED image
        (``(0, 0, h, w)`` for "resize").
    """
    (K,) = _floats(K)
    _check_shape("K", K, (3, 3))
    (Hs, Ws), box = _scale_and_crop(src_hw, dst_hw, mode)
    top, left = box[:2]
    sy, sx = Hs / src_hw[0], Ws / src_hw[1]
    A = K.new_tensor([[sx, 0.0, 0.5 * sx - 0.5 - left], [0.0, sy, 0.5 * sy - 0.5 - top], [0.0, 0.0, 1.0]])
    return A @ K, box


def _source_indices(src: int, scaled: int, offset: int, size: int, device: torch.device) -> torch.Tensor:
    """Nearest source pixel (``floor(x + 0.5)``) of each output pixel along one axis."""
    centres = torch.arange(size, dtype=torch.float64, device=device) + offset + 0.5
    return (centres * (src / scaled)).floor().long().clamp_(0, src - 1)


def _check_hw(name: str, t: torch.Tensor, hw_dims: tuple[int, int], src_hw: tuple[int, int]) -> None:
    if (t.shape[hw_dims[0]], t.shape[hw_dims[1]]) != tuple(src_hw):
        raise ValueError(f"{name} has shape {tuple(t.shape)} but src_hw={tuple(src_hw)}")


def resize_depth(
    depth: ArrayLike, src_hw: tuple[int, int], dst_hw: tuple[int, int], mode: ResizeMode = "resize"
) -> torch.Tensor:
    """Resizes/crops depth maps ``(..., H, W)`` -> ``(..., h, w)`` consistently with :func:`fit_intrinsics`.

    Nearest neighbour (each output pixel centre takes the source pixel containing it), so depths from
    different surfaces never mix and invalid values (0, non-finite) stay invalid. Depth values are
    unchanged (metres along z do not depend on image scale).
    """
    t = torch.as_tensor(depth)
    if t.dim() < 2:
        raise ValueError(f"depth must have shape (..., H, W), got {tuple(t.shape)}")
    _check_hw("depth", t, (-2, -1), src_hw)
    (Hs, Ws), (top, left, h, w) = _scale_and_crop(src_hw, dst_hw, mode)
    rows = _source_indices(src_hw[0], Hs, top, h, t.device)
    cols = _source_indices(src_hw[1], Ws, left, w, t.device)
    return t.index_select(-2, rows).index_select(-1, cols)


def resize_image(
    image: ArrayLike, src_hw: tuple[int, int], dst_hw: tuple[int, int], mode: ResizeMode = "resize"
) -> torch.Tensor:
    """Resizes/crops an RGB image ``(H, W, 3)`` uint8 -> ``(h, w, 3)`` uint8 consistently with ``K``.

    Bilinear with antialiasing (area-like when shrinking), pixel centres mapped as in
    :func:`fit_intrinsics`; for "center_crop" the image is scaled to cover ``dst_hw`` and the same crop
    box is cut out.
    """
    if isinstance(image, np.ndarray) and not image.flags.writeable:
        image = image.copy()  # e.g. a PIL-backed array; torch refuses to alias read-only memory
    t = torch.as_tensor(image)
    if t.dim() != 3 or t.shape[-1] != 3:
        raise ValueError(f"image must have shape (H, W, 3), got {tuple(t.shape)}")
    _check_hw("image", t, (0, 1), src_hw)
    (Hs, Ws), (top, left, h, w) = _scale_and_crop(src_hw, dst_hw, mode)
    x = t.permute(2, 0, 1)[None]
    if x.dtype != torch.uint8:
        x = x.to(torch.float32)
    # uint8 in, uint8 out (rounded): torch's integer kernel, several times faster than float32.
    x = F.interpolate(x, size=(Hs, Ws), mode="bilinear", align_corners=False, antialias=True)
    x = x[..., top : top + h, left : left + w]
    if x.dtype != torch.uint8:
        x = x.round_().clamp_(0, 255).to(torch.uint8)
    return x[0].permute(1, 2, 0).contiguous()
