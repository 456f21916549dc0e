"""Camera-pose geometry of the synthetic rooms' trajectories: look-at poses, splines, rotation spread."""

from __future__ import annotations

import numpy as np


def _catmull_rom(pts: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Uniform Catmull-Rom spline through ``pts`` (K, D) at parameters ``s`` in [0, K-1]."""
    ext = np.concatenate([2 * pts[:1] - pts[1:2], pts, 2 * pts[-1:] - pts[-2:-1]])
    i = np.clip(np.floor(s).astype(int), 0, len(pts) - 2)
    t = (s - i)[:, None]
    p0, p1, p2, p3 = ext[i], ext[i + 1], ext[i + 2], ext[i + 3]
    return 0.5 * (
        2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (3 * p1 - p0 - 3 * p2 + p3) * t**3
    )


def _max_rotation_deg(poses: np.ndarray, samples: int = 24) -> float:
    """Largest rotation angle (degrees) between any two of ``samples`` evenly spaced poses."""
    R = poses[np.linspace(0, len(poses) - 1, min(samples, len(poses))).round().astype(int), :3, :3]
    cos = (np.einsum("aji,bji->ab", R, R) - 1) / 2  # trace(Ra^T Rb)
    return float(np.degrees(np.arccos(np.clip(cos, -1, 1))).max())


def _look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera-to-world (4, 4), OpenCV axes, looking from ``eye`` at ``target`` with world z up."""
    f = (target - eye) / np.linalg.norm(target - eye)
    r = np.cross(f, [0.0, 0.0, 1.0])
    r /= np.linalg.norm(r)
    T = np.eye(4)
    T[:3, :3] = np.stack([r, np.cross(f, r), f], -1)
    T[:3, 3] = eye
    return T
