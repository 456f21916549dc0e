"""Alignment math of `gasp annotate` on synthetic scenes with exact depth: a prediction distorted by
a known affine map (of depth or of inverse depth) plus noise must give the map back to 1%, from
reconstruction points (with outliers) and from multi-view consistency alone."""

import numpy as np
import pytest

from gasp.data.annotate_fit import DEFAULT_WINDOW, choose_neighbours
from gasp.data.depth_align import Frame, apply_fit, consistency_residual, fit_multiview, fit_to_points
from gasp.data.synthetic import SyntheticScene

NOISE = 0.01  # 1% multiplicative noise on every predicted pixel


@pytest.fixture(scope="module")
def scene_views():
    scene = SyntheticScene(1, num_frames=12, height=96, width=128)
    return [scene.view(i) for i in range(12)]


def distort(depth: np.ndarray, kind: str, rng) -> tuple[np.ndarray, float, float]:
    """A prediction m with depth = s m + t (or 1/depth = s m + t), times (1 + 1% noise)."""
    target = 1 / depth if kind == "disparity-affine" else depth
    s = 1.7
    t = 0.3 * float(np.median(target)) if kind != "depth-scale" else 0.0
    m = (target - t) / s
    return m * (1 + NOISE * rng.standard_normal(m.shape)), s, t


KINDS = ["disparity-affine", "depth-affine", "depth-scale"]


@pytest.mark.parametrize("kind", KINDS)
def test_fit_to_points_recovers_the_map_despite_outliers(scene_views, kind):
    rng = np.random.default_rng(0)
    v = scene_views[4]
    m, s, t = distort(v.depth.astype(np.float64), kind, rng)
    idx = rng.choice(v.depth.size, 200, replace=False)
    z = v.depth.reshape(-1)[idx] * (1 + 0.005 * rng.standard_normal(200))  # SfM points are noisy too
    at = m.reshape(-1)[idx].copy()
    at[:40] *= rng.uniform(0.2, 5.0, 40)  # 20% gross outliers (mismatched points, depth edges)
    fit = fit_to_points(at, z, kind)
    assert abs(fit.scale / s - 1) < 0.01, fit
    if t:
        assert abs(fit.shift / t - 1) < 0.01, fit
    assert fit.residual < 0.02 and fit.num_points == 200
    aligned = apply_fit(m, kind, fit.scale, fit.shift).numpy()
    assert np.median(np.abs(aligned - v.depth) / v.depth) < 0.015


@pytest.mark.parametrize("kind", KINDS)
def test_fit_multiview_recovers_the_map_without_points(scene_views, kind):
    """Scale to 1%; the shift to 1% of the median depth (inverse depth). The shift alone is less well
    determined than the map (it trades off against the scale over a frame's depth range): its own
    relative error is up to about 3% at this test's 128x96 resolution."""
    rng = np.random.default_rng(1)
    i = 6
    m, s, t = distort(scene_views[i].depth.astype(np.float64), kind, rng)
    target = 1 / scene_views[i].depth if kind == "disparity-affine" else scene_views[i].depth
    frame = lambda v: Frame(v.image, v.K, v.cam_to_world)  # noqa: E731
    near = choose_neighbours([v.cam_to_world for v in scene_views], i, DEFAULT_WINDOW)
    assert len(near) == 4
    fit = fit_multiview(m, frame(scene_views[i]), [frame(scene_views[j]) for j in near], kind)
    assert abs(fit.scale / s - 1) < 0.01, (fit, s, t)
    assert abs(fit.shift - t) < 0.01 * np.median(target), (fit, s, t)
    aligned = apply_fit(m, kind, fit.scale, fit.shift).numpy()
    assert np.median(np.abs(aligned - scene_views[i].depth) / scene_views[i].depth) < 0.01


def test_fit_multiview_needs_camera_motion(scene_views):
    v = scene_views[0]
    with pytest.raises(ValueError, match="no camera motion"):
        fit_multiview(
            v.depth, Frame(v.image, v.K, v.cam_to_world), [Frame(v.image, v.K, v.cam_to_world)], "depth-scale"
        )
    with pytest.raises(ValueError, match="at least one"):
        fit_multiview(v.depth, Frame(v.image, v.K, v.cam_to_world), [], "depth-scale")


def test_consistency_residual_tells_consistent_from_scaled_depth(scene_views):
    a, b, c = scene_views[3], scene_views[5], scene_views[7]
    others = [(b.depth, b.K, b.cam_to_world), (c.depth, c.K, c.cam_to_world)]
    good, n = consistency_residual(a.depth, a.K, a.cam_to_world, others)
    bad, _ = consistency_residual(a.depth * 1.15, a.K, a.cam_to_world, others)
    assert good < 0.005 and n > 1000 and bad > 0.05


def test_apply_fit_marks_non_positive_depth_invalid():
    m = np.array([[-1.0, 0.0, 1.0]])
    np.testing.assert_allclose(apply_fit(m, "disparity-affine", 1.0, 0.0).numpy(), [[0, 0, 1.0]])
    np.testing.assert_allclose(apply_fit(m, "depth-affine", 2.0, 0.5).numpy(), [[0, 0.5, 2.5]])
    with pytest.raises(ValueError, match="depth kind"):
        apply_fit(m, "inverse", 1, 0)
