"""Resampling colour images into another camera: a pinhole with other intrinsics, or a distortion-free
view of a distorted camera. Pixel ``(u, v) = (column, row)``, integers at pixel centres."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def remap_bilinear(image: np.ndarray, source_uv: np.ndarray) -> np.ndarray:
    """Output pixel ``(r, c)`` takes the colour of ``image`` at ``source_uv[r, c]`` (bilinear).

    Args:
        image: (H, W, 3) uint8 RGB.
        source_uv: (h, w, 2) source pixel of every output pixel; outside the image (or NaN) gives black.

    Returns:
        (h, w, 3) uint8 RGB.
    """
    H, W = image.shape[:2]
    uv = torch.as_tensor(np.nan_to_num(source_uv, nan=-1e6), dtype=torch.float32)
    grid = torch.stack([(2 * uv[..., 0] + 1) / W - 1, (2 * uv[..., 1] + 1) / H - 1], -1)[None]
    x = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)[None]
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def pixel_grid(hw: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) homogeneous pixel coordinates ``(u, v, 1)`` of an image, float64."""
    v, u = np.mgrid[0 : hw[0], 0 : hw[1]].astype(np.float64)
    return np.stack([u, v, np.ones_like(u)], -1)


def resample_pinhole(
    image: np.ndarray, K_src: np.ndarray, K_dst: np.ndarray, dst_hw: tuple[int, int]
) -> np.ndarray:
    """The view of a pinhole camera ``K_dst`` (size ``dst_hw``) at the same centre and orientation as
    the camera ``K_src`` that took ``image``: each output pixel maps through ``K_src K_dst^-1``."""
    H = K_src @ np.linalg.inv(K_dst)
    p = pixel_grid(dst_hw) @ H.T
    return remap_bilinear(image, p[..., :2] / p[..., 2:3])
