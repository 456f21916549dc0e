"""Scale (and shift) alignment of monocular depth predictions to a posed scene (used by `gasp annotate`).

A monocular model predicts, per frame, a map ``m`` that equals true depth only up to an unknown map:

- ``"disparity-affine"``: ``1 / depth = s * m + t`` (relative Depth Anything, DPT/MiDaS: affine-invariant
  inverse depth);
- ``"depth-affine"``: ``depth = s * m + t``;
- ``"depth-scale"``: ``depth = s * m`` (metric models: Depth Anything metric, ZoeDepth, Depth Pro; the
  poses' unit is still arbitrary for structure-from-motion scenes, so a scale is fitted, no shift).

Two ways to find ``(s, t)`` per frame:

- :func:`fit_to_points`: against structure-from-motion points seen in the frame (pixel, true depth):
  a robust least-squares fit of the relative depth error (random minimal samples, then iteratively
  reweighted least squares with Tukey weights);
- :func:`fit_multiview`: without points, by multi-view consistency with neighbouring frames: the
  frame's depth warps each neighbour's image into the frame; the ``(s, t)`` whose warp makes the
  images agree best (robust, exposure-invariant cost on locally normalised intensities) is found by a
  coarse-to-fine search. Known camera motion fixes the scale.

:func:`consistency_residual` measures how well aligned depth maps of neighbouring frames agree (the
residual of a multi-view fit); a point fit's residual is the median relative error over its points.
All depths share the poses' unit. Pixel ``(u, v) = (column, row)``, integers at pixel centres; poses
4x4 camera-to-world in OpenCV axes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from gasp.geometry.cameras import project, relative_pose, transform_points, unproject
from gasp.geometry.reproject import sample_depth_nearest

DepthKind = Literal["disparity-affine", "depth-affine", "depth-scale"]
DEPTH_KINDS: tuple[str, ...] = ("disparity-affine", "depth-affine", "depth-scale")
# Tukey's biweight cut-off, in robust standard deviations (1.4826 * median absolute deviation).
_TUKEY_C = 4.685
_RANSAC_SAMPLES = 64
_LCN_WINDOW = 5
_PHOTO_TRUNCATE = 1.0  # truncation of the photometric residual (locally normalised units)
_COARSE_POINTS = 400  # pixels of the coarse grid search (the most textured)
_STARTS = 3  # coarse candidates refined by the multi-view search


@dataclass
class Fit:
    """A fitted alignment: ``depth = apply_fit(m, kind, scale, shift)``.

    Attributes:
        scale, shift: the fitted map (shift 0 for "depth-scale").
        residual: the fit's robust residual (median relative depth error), NaN when not measured.
        num_points: observations used (points for a point fit, sampled pixels for a multi-view fit).
    """

    scale: float
    shift: float
    residual: float = float("nan")
    num_points: int = 0


def check_kind(kind: str) -> None:
    if kind not in DEPTH_KINDS:
        raise ValueError(f"depth kind must be one of {DEPTH_KINDS}, got {kind!r}")


def apply_fit(pred: torch.Tensor | np.ndarray, kind: str, scale: float, shift: float) -> torch.Tensor:
    """Depth from a prediction ``(..., H, W)`` under a fitted map; 0 where the result is not a positive
    finite depth (e.g. disparity <= 0: sky or far background for inverse-depth models)."""
    check_kind(kind)
    m = torch.as_tensor(pred).float()
    if kind == "disparity-affine":
        disp = scale * m + shift
        depth = torch.where(disp > 0, 1.0 / disp.clamp_min(1e-12), torch.zeros_like(disp))
    else:
        depth = scale * m + (shift if kind == "depth-affine" else 0.0)
    return torch.where(torch.isfinite(depth) & (depth > 0), depth, torch.zeros_like(depth))


def _design(m: np.ndarray, z: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``A`` and targets ``b`` with ``A @ (s, t) - b`` = relative depth error (to first order)."""
    if kind == "disparity-affine":  # (s m + t) z - 1 = (1/d_true - 1/d) d_true ~ relative error
        return np.stack([m * z, z], -1), np.ones_like(z)
    if kind == "depth-affine":
        return np.stack([m / z, 1.0 / z], -1), np.ones_like(z)
    return (m / z)[:, None], np.ones_like(z)


def _relative_errors(m: np.ndarray, z: np.ndarray, kind: str, params: np.ndarray) -> np.ndarray:
    s, t = float(params[0]), float(params[1]) if params.size > 1 else 0.0
    d = apply_fit(torch.from_numpy(m), kind, s, t).double().numpy()
    return np.where(d > 0, np.abs(d - z) / z, np.inf)


def fit_to_points(pred_at_points: np.ndarray, depth: np.ndarray, kind: str, seed: int = 0) -> Fit:
    """Robust fit of ``(s, t)`` so that ``apply_fit(pred)`` matches true depths at points.

    Args:
        pred_at_points: (N,) prediction sampled at the points' pixels.
        depth: (N,) the points' true depth (camera z) in the poses' unit, > 0.
        kind: one of DEPTH_KINDS.
        seed: seeds the random minimal samples (deterministic per frame).

    Returns:
        Fit with residual = median relative depth error over the points.

    Raises:
        ValueError: fewer points than parameters.
    """
    check_kind(kind)
    m = np.asarray(pred_at_points, np.float64)
    z = np.asarray(depth, np.float64)
    ok = np.isfinite(m) & np.isfinite(z) & (z > 0)
    m, z = m[ok], z[ok]
    A, b = _design(m, z, kind)
    k = A.shape[1]
    if m.size < k:
        raise ValueError(f"need at least {k} points, got {m.size}")
    rng = np.random.default_rng(seed)
    best, best_med = None, np.inf
    # Minimal samples pick the start that most points agree with (gross outliers cannot drag it).
    for _ in range(_RANSAC_SAMPLES):
        idx = rng.choice(m.size, size=k, replace=False)
        try:
            p = np.linalg.solve(A[idx], b[idx]) if k > 1 else b[idx] / A[idx, 0]
        except np.linalg.LinAlgError:
            continue
        med = float(np.median(_relative_errors(m, z, kind, np.atleast_1d(p))))
        if med < best_med:
            best, best_med = np.atleast_1d(p), med
    params = best if best is not None else np.linalg.lstsq(A, b, rcond=None)[0]
    for _ in range(20):  # IRLS with Tukey weights on the linearised relative residuals
        r = A @ params - b
        sigma = max(1.4826 * float(np.median(np.abs(r))), 1e-6)
        w = np.clip(1 - (r / (_TUKEY_C * sigma)) ** 2, 0, None) ** 2
        if w.sum() <= k:
            break
        sw = np.sqrt(w)[:, None]
        new = np.linalg.lstsq(A * sw, b * sw[:, 0], rcond=None)[0]
        done = np.allclose(new, params, rtol=1e-10, atol=0)
        params = new
        if done:
            break
    errors = _relative_errors(m, z, kind, params)
    return Fit(
        scale=float(params[0]),
        shift=float(params[1]) if k > 1 else 0.0,
        residual=float(np.median(errors)),
        num_points=int(m.size),
    )


# ------------------------------------------------------------------------------- multi-view ----
def local_normalise(image: torch.Tensor, window: int = _LCN_WINDOW) -> torch.Tensor:
    """Grey image ``(H, W, 3)`` uint8 -> ``(H, W)`` float32 with local mean 0 and local std 1 (a
    ``window`` x ``window`` box): invariant to exposure and white-balance changes between frames."""
    x = torch.from_numpy(np.asarray(image, dtype=np.float32)).mean(-1)[None, None] / 255.0
    pad = window // 2
    xp = F.pad(x, (pad,) * 4, mode="replicate")
    mean = F.avg_pool2d(xp, window, stride=1)
    var = F.avg_pool2d(xp * xp, window, stride=1) - mean * mean
    return ((x - mean) / (var.clamp_min(0).sqrt() + 0.02))[0, 0]


def _bilinear(img: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Sample ``img`` (H, W) at pixels ``uv`` (..., 2) (integers at pixel centres), bilinear."""
    H, W = img.shape
    grid = torch.stack([(2 * uv[..., 0] + 1) / W - 1, (2 * uv[..., 1] + 1) / H - 1], -1)
    flat = grid.reshape(1, 1, -1, 2).to(img.dtype)
    out = F.grid_sample(img[None, None], flat, mode="bilinear", padding_mode="border", align_corners=False)
    return out.reshape(uv.shape[:-1])


@dataclass
class Frame:
    """What the multi-view fit knows about a frame: colour, intrinsics, pose.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        K: (3, 3) intrinsics of ``image``.
        cam_to_world: (4, 4) camera-to-world, OpenCV axes.
    """

    image: np.ndarray
    K: np.ndarray
    cam_to_world: np.ndarray


def _candidates_to_params(c: torch.Tensor, beta: torch.Tensor, med: float, kind: str) -> tuple:
    """Search parameters -> (s, t): depth (or 1/depth) = c * ((1 - beta) + beta * m / med)."""
    if kind == "disparity-affine":
        return beta / (c * med), (1 - beta) / c
    if kind == "depth-affine":
        return c * beta / med, c * (1 - beta)
    return c / med, torch.zeros_like(c)


def fit_multiview(
    pred: np.ndarray | torch.Tensor,
    frame: Frame,
    neighbours: list[Frame],
    kind: str,
    *,
    max_points: int = 2000,
    rounds: int = 4,
) -> Fit:
    """Fit ``(s, t)`` of one frame's prediction by photometric consistency with neighbouring frames.

    For a candidate ``(s, t)`` the frame's depth lifts its textured pixels to 3D; each lands in every
    neighbour, where the locally normalised intensity must match the frame's own (truncated L1; a
    pixel that leaves a neighbour or falls behind it costs the truncation). The search runs over the
    scene depth scale (log grid from 0.3 to 1000 camera baselines) and the shift ratio, then refines
    around the best candidate ``rounds`` times.

    Args:
        pred: (H, W) prediction of ``frame`` at the image's resolution.
        frame: the frame; neighbours: frames with camera motion relative to it (at least one).
        kind: one of DEPTH_KINDS.
        max_points: textured pixels used (the most textured, on a regular grid).
        rounds: refinement rounds after the coarse grid.

    Returns:
        Fit (residual NaN: measure it with :func:`consistency_residual`; num_points = pixels used).

    Raises:
        ValueError: no neighbour, or neighbours without camera motion (scale not observable).
    """
    check_kind(kind)
    if not neighbours:
        raise ValueError("multi-view fit needs at least one neighbouring frame")
    m = torch.as_tensor(pred).double()
    H, W = m.shape
    lcn = local_normalise(frame.image).double()
    stride = max(1, int(np.sqrt(H * W / (2 * max_points))))
    v, u = torch.meshgrid(
        torch.arange(stride // 2, H, stride), torch.arange(stride // 2, W, stride), indexing="ij"
    )
    u, v = u.reshape(-1), v.reshape(-1)
    texture = F.avg_pool2d(lcn.abs()[None, None], 3, stride=1, padding=1)[0, 0]
    ok = torch.isfinite(m[v, u]) & (m[v, u] > 0 if kind != "depth-affine" else torch.isfinite(m[v, u]))
    u, v = u[ok], v[ok]
    keep = torch.argsort(texture[v, u], descending=True)[:max_points]
    u, v = u[keep], v[keep]
    uv = torch.stack([u, v], -1).double()
    mp = m[v, u]
    med = float(mp.median())
    rays = unproject(uv, torch.ones(len(uv), dtype=torch.float64), torch.as_tensor(frame.K)).double()
    ref = lcn[v, u].float()
    warps = []
    for nb in neighbours:
        # pixel p at depth d lands at (d a_p + b) / (d a_p + b)_z: a = K_n R ray_p, b = K_n t
        T = relative_pose(torch.as_tensor(frame.cam_to_world), torch.as_tensor(nb.cam_to_world)).double()
        Kn = torch.as_tensor(nb.K).double()
        a = (rays @ T[:3, :3].T @ Kn.T).float()
        b = (Kn @ T[:3, 3]).float()
        warps.append((a, b, local_normalise(nb.image), float(T[:3, 3].norm())))
    base = float(np.median([w[3] for w in warps]))
    if base <= 0:
        raise ValueError("neighbouring frames have no camera motion: the depth scale is not observable")
    mp32 = mp.float()

    def cost(c: torch.Tensor, beta: torch.Tensor, n: int | None = None) -> torch.Tensor:
        """Mean truncated photometric error of candidates; ``n``: only the n most textured pixels."""
        s, t = _candidates_to_params(c, beta, med, kind)
        d = _depth(mp32[:n], s.float(), t.float(), kind)
        total = torch.zeros(len(c))
        for a, b, img, _ in warps:
            h, w = img.shape
            q = d[..., None] * a[:n] + b  # (C, P, 3)
            z = q[..., 2]
            uvn = q[..., :2] / z.clamp_min(1e-9)[..., None]
            inside = (z > 0) & (d > 0)
            inside &= (uvn[..., 0] >= 0) & (uvn[..., 0] <= w - 1)
            inside &= (uvn[..., 1] >= 0) & (uvn[..., 1] <= h - 1)
            r = (_bilinear(img, torch.nan_to_num(uvn)) - ref[:n]).abs().clamp_max(_PHOTO_TRUNCATE)
            total += torch.where(inside, r, _PHOTO_TRUNCATE).mean(-1)
        return total.double() / len(warps)

    log_c = torch.linspace(np.log(0.3 * base), np.log(1000 * base), 64, dtype=torch.float64)
    betas = (
        torch.linspace(0.2, 1.8, 9, dtype=torch.float64)
        if kind != "depth-scale"
        else torch.ones(1, dtype=torch.float64)
    )
    step_c, step_b = float(log_c[1] - log_c[0]), float(betas[1] - betas[0]) if len(betas) > 1 else 0.0
    gc, gb = torch.meshgrid(log_c, betas, indexing="ij")
    values = cost(gc.reshape(-1).exp(), gb.reshape(-1), _COARSE_POINTS)
    # Refine the few best coarse candidates: the right basin can be narrow at the coarse resolution.
    results = []
    for start in torch.argsort(values)[:_STARTS].tolist():
        bc, bb = float(gc.reshape(-1)[start]), float(gb.reshape(-1)[start])
        sc, sb = step_c, step_b
        for _ in range(rounds):
            cs = torch.linspace(bc - sc, bc + sc, 7, dtype=torch.float64)
            bs = torch.linspace(bb - sb, bb + sb, 7, dtype=torch.float64) if sb else torch.full((1,), bb)
            rc, rb = torch.meshgrid(cs, bs.double(), indexing="ij")
            vals = cost(rc.reshape(-1).exp(), rb.reshape(-1))
            k = int(vals.argmin())
            bc, bb, best = float(rc.reshape(-1)[k]), float(rb.reshape(-1)[k]), float(vals[k])
            sc, sb = sc / 3, sb / 3
        results.append((best, bc, bb))
    _, bc, bb = min(results)
    s, t = _candidates_to_params(torch.tensor(np.exp(bc)), torch.tensor(bb), med, kind)
    return Fit(scale=float(s), shift=float(t), num_points=int(len(uv)))


def _depth(m: torch.Tensor, s: torch.Tensor, t: torch.Tensor, kind: str) -> torch.Tensor:
    """(C, N) depths of N predictions under C candidate maps (0 = invalid)."""
    x = s[:, None] * m[None] + t[:, None]
    if kind == "disparity-affine":
        return torch.where(x > 0, 1.0 / x.clamp_min(1e-12), torch.zeros_like(x))
    return torch.where(x > 0, x, torch.zeros_like(x))


def consistency_residual(
    depth: torch.Tensor | np.ndarray,
    K: np.ndarray,
    cam_to_world: np.ndarray,
    neighbours: list[tuple[torch.Tensor | np.ndarray, np.ndarray, np.ndarray]],
    max_points: int = 4000,
) -> tuple[float, int]:
    """Median relative disagreement between a frame's depth and its neighbours' depths.

    Valid pixels of ``depth`` (subsampled to about ``max_points``) are warped into each neighbour
    ``(depth_j, K_j, cam_to_world_j)``; where they land inside on a valid depth, the relative
    difference ``|z - d_j| / d_j`` is collected.

    Returns:
        (median relative difference, number of compared pixels); (NaN, 0) when nothing overlaps.
    """
    d = torch.as_tensor(depth).double()
    H, W = d.shape
    stride = max(1, int(np.sqrt(H * W / max_points)))
    v, u = torch.meshgrid(torch.arange(0, H, stride), torch.arange(0, W, stride), indexing="ij")
    u, v = u.reshape(-1), v.reshape(-1)
    dv = d[v, u]
    ok = dv > 0
    uv = torch.stack([u[ok], v[ok]], -1).double()
    xyz = unproject(uv, dv[ok], torch.as_tensor(K).double())
    diffs = []
    for dn, Kn, Tn in neighbours:
        T = relative_pose(torch.as_tensor(cam_to_world), torch.as_tensor(Tn)).double()
        uvn, z = project(transform_points(T, xyz), torch.as_tensor(Kn).double())
        dn_t = torch.as_tensor(dn).double()
        sampled = sample_depth_nearest(dn_t, torch.nan_to_num(uvn, nan=-1e9))
        good = (z > 0) & (sampled > 0)
        diffs.append(((z - sampled).abs() / sampled)[good])
    allv = torch.cat(diffs) if diffs else torch.zeros(0, dtype=torch.float64)
    if allv.numel() == 0:
        return float("nan"), 0
    return float(allv.median()), int(allv.numel())
