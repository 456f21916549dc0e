import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gasp.geometry import cameras
from gasp.geometry.reproject import reproject, reproject_points, sample_depth_nearest

H, W = 48, 64
# Power-of-two focal length and integer centre: K K^-1 is exactly the identity in floating point.
K = np.array([[64.0, 0.0, 32.0], [0.0, 64.0, 24.0], [0.0, 0.0, 1.0]])
EYE = np.eye(4)


def translated(tx=0.0, ty=0.0, tz=0.0) -> np.ndarray:
    T = np.eye(4)
    T[:3, 3] = (tx, ty, tz)
    return T


def pixel_grid(h=H, w=W) -> np.ndarray:
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.stack([u, v], axis=-1)


def random_pose(rng: np.random.Generator, angle=0.1, shift=0.1) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    a = rng.uniform(-angle, angle)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    T = np.eye(4)
    T[:3, :3] = np.eye(3) + math.sin(a) * k + (1 - math.cos(a)) * k @ k
    T[:3, 3] = rng.uniform(-shift, shift, size=3)
    return T


def test_identity_maps_pixels_to_themselves():
    depth = np.random.default_rng(0).uniform(0.5, 5.0, size=(H, W)).astype(np.float32)
    uv, valid = reproject(depth, K, EYE, depth, K, EYE, border=0)
    assert uv.shape == (H, W, 2) and valid.shape == (H, W)
    assert uv.dtype == torch.float32 and valid.dtype == torch.bool
    np.testing.assert_allclose(uv.numpy(), pixel_grid(), atol=1e-4)
    assert valid.all()


@pytest.mark.parametrize(("tx", "ty", "tz"), [(0.25, 0.0, 0.0), (-0.1, 0.2, 0.0), (0.05, -0.05, 0.5)])
def test_translation_over_fronto_parallel_plane_gives_analytic_shift(tx, ty, tz):
    Z = 4.0
    depth_a = np.full((H, W), Z, np.float32)
    depth_b = np.full((H, W), Z - tz, np.float32)  # the same plane seen from the moved camera
    uv, valid = reproject(depth_a, K, EYE, depth_b, K, translated(tx, ty, tz))
    grid = pixel_grid()
    f, c = 64.0, np.array([32.0, 24.0])
    expected = c + ((grid - c) * Z - f * np.array([tx, ty])) / (Z - tz)
    np.testing.assert_allclose(uv.numpy(), expected, atol=1e-3)
    inside = (expected[..., 0] >= 4) & (expected[..., 0] <= W - 5) & (expected[..., 1] >= 4)
    inside &= expected[..., 1] <= H - 5
    np.testing.assert_array_equal(valid.numpy(), inside)
    assert valid.any() and not valid.all()


def test_occluder_in_frame_b_invalidates_points():
    depth_a = np.full((H, W), 3.0, np.float32)
    depth_b = depth_a.copy()
    depth_b[10:20, 30:40] = 1.0  # something closer than the plane in b hides those points
    uv, valid = reproject(depth_a, K, EYE, depth_b, K, translated(0.1875))  # shift of exactly -4 px
    np.testing.assert_allclose(uv[..., 0].numpy(), pixel_grid()[..., 0] - 4, atol=1e-4)
    hidden = np.zeros((H, W), bool)
    hidden[10:20, 34:44] = True  # pixels of a that land on the occluder
    expected = ~hidden
    expected[:, :8] = False  # lands left of the border
    # The last column lands on u = W - 5, the last allowed one.
    expected[:4] = expected[H - 4 :] = False
    np.testing.assert_array_equal(valid.numpy(), expected)


@pytest.mark.parametrize("border", [0, 4, 7])
def test_border_rule_is_inclusive_and_exact(border):
    depth = np.full((H, W), 2.0, np.float32)
    _, valid = reproject(depth, K, EYE, depth, K, EYE, border=border)
    cols = valid.numpy().any(axis=0)
    rows = valid.numpy().any(axis=1)
    assert np.flatnonzero(cols).tolist() == list(range(border, W - border))  # border <= u <= W-1-border
    assert np.flatnonzero(rows).tolist() == list(range(border, H - border))
    # A quarter-pixel shift to the right: u_b = u + 0.25.
    _, valid = reproject(depth, K, EYE, depth, K, translated(-2.0 * 0.25 / 64), border=border)
    cols = np.flatnonzero(valid.numpy().any(axis=0))
    assert cols[0] == border and cols[-1] == W - 2 - border


def test_invalid_depths_are_invalid():
    depth_a = np.full((H, W), 2.0, np.float32)
    bad = {(10, 10): 0.0, (10, 20): np.nan, (10, 30): np.inf, (10, 40): -2.0, (10, 50): -np.inf}
    for (r, c), val in bad.items():
        depth_a[r, c] = val
    uv, valid = reproject(depth_a, K, EYE, np.full((H, W), 2.0, np.float32), K, EYE)
    for r, c in bad:
        assert not valid[r, c]
        assert torch.isnan(uv[r, c]).all()
    assert valid[10, 15] and valid[11, 10]
    # Invalid depth in frame b invalidates the points that land there.
    depth_b = np.full((H, W), 2.0, np.float32)
    for (r, c), val in bad.items():
        depth_b[r, c] = val
    _, valid = reproject(np.full((H, W), 2.0, np.float32), K, EYE, depth_b, K, EYE)
    for r, c in bad:
        assert not valid[r, c]
    assert int(valid.sum()) == (H - 8) * (W - 8) - len(bad)


@pytest.mark.parametrize(("d_a", "d_b"), [(2.0, 2.5), (2.5, 2.0)])
def test_rel_tol_boundary_is_strict(d_a, d_b):
    # |2.5 - 2| = 0.5 = 0.25 * min(2, 2.5) exactly: not "<", so invalid; a hair closer is valid.
    depth_a = np.full((H, W), d_a, np.float32)
    at = np.full((H, W), d_b, np.float32)
    closer = np.full((H, W), np.nextafter(np.float32(d_b), np.float32(d_a)), np.float32)
    assert not reproject(depth_a, K, EYE, at, K, EYE, rel_tol=0.25)[1].any()
    assert reproject(depth_a, K, EYE, closer, K, EYE, rel_tol=0.25)[1][4:-4, 4:-4].all()
    # Default tolerance 0.05.
    near = np.full((H, W), 2.0 * 1.049, np.float32)
    far = np.full((H, W), 2.0 * 1.051, np.float32)
    two = np.full((H, W), 2.0, np.float32)
    assert reproject(two, K, EYE, near, K, EYE)[1][4:-4, 4:-4].all()
    assert not reproject(two, K, EYE, far, K, EYE)[1].any()


def test_batched_equals_per_item_and_broadcasts():
    rng = np.random.default_rng(1)
    B = 3
    depth_a = rng.uniform(1.0, 3.0, size=(B, H, W)).astype(np.float32)
    depth_b = rng.uniform(1.0, 3.0, size=(B, H, W)).astype(np.float32)
    poses_a = np.stack([random_pose(rng) for _ in range(B)])
    poses_b = np.stack([random_pose(rng) for _ in range(B)])
    Ks = np.stack([K * [[1 + 0.1 * i], [1 + 0.1 * i], [1]] for i in range(B)])
    uv, valid = reproject(depth_a, Ks, poses_a, depth_b, K, poses_b, rel_tol=0.2)
    assert uv.shape == (B, H, W, 2) and valid.shape == (B, H, W)
    for i in range(B):
        uv_i, valid_i = reproject(depth_a[i], Ks[i], poses_a[i], depth_b[i], K, poses_b[i], rel_tol=0.2)
        torch.testing.assert_close(uv[i], uv_i, equal_nan=True)
        torch.testing.assert_close(valid[i], valid_i)
    assert valid.any()
    # One frame a against a batch of frames b.
    uv, valid = reproject(depth_a[0], K, poses_a[0], depth_b, K, poses_b, rel_tol=0.2)
    assert valid.shape == (B, H, W)
    for i in range(B):
        torch.testing.assert_close(
            valid[i], reproject(depth_a[0], K, poses_a[0], depth_b[i], K, poses_b[i], rel_tol=0.2)[1]
        )


def test_dense_matches_camera_composition_and_sparse():
    rng = np.random.default_rng(2)
    depth_a = rng.uniform(1.0, 3.0, size=(H, W))  # float64 in -> float64 out
    depth_b = rng.uniform(1.0, 3.0, size=(H, W))
    a, b = random_pose(rng), random_pose(rng)
    uv, valid = reproject(depth_a, K, a, depth_b, K, b, rel_tol=0.3)
    assert uv.dtype == torch.float64
    pts = pixel_grid().reshape(-1, 2)
    xyz = cameras.transform_points(
        cameras.relative_pose(a, b), cameras.unproject(pts, depth_a.reshape(-1), K)
    )
    uv_ref, z_ref = cameras.project(xyz, K)
    np.testing.assert_allclose(uv.reshape(-1, 2).numpy(), uv_ref.numpy(), atol=1e-9)
    uv_s, z_s, valid_s = reproject_points(pts, depth_a.reshape(-1), K, a, depth_b, K, b, rel_tol=0.3)
    np.testing.assert_allclose(z_s.numpy(), z_ref.numpy(), atol=1e-9)
    np.testing.assert_array_equal(valid_s.numpy(), valid.reshape(-1).numpy())
    # Validity from first principles on the reference projection.
    cols = np.floor(uv_ref[:, 0].numpy() + 0.5)
    rows = np.floor(uv_ref[:, 1].numpy() + 0.5)
    inside = (uv_ref[:, 0] >= 4).numpy() & (uv_ref[:, 0] <= W - 5).numpy()
    inside &= (uv_ref[:, 1] >= 4).numpy() & (uv_ref[:, 1] <= H - 5).numpy() & (z_ref > 0).numpy()
    d_b = np.where(inside, depth_b[rows.clip(0, H - 1).astype(int), cols.clip(0, W - 1).astype(int)], np.nan)
    z = z_ref.numpy()
    expected = inside & (np.abs(z - d_b) < 0.3 * np.minimum(z, d_b))
    np.testing.assert_array_equal(valid.reshape(-1).numpy(), expected)
    assert 0.05 < expected.mean() < 0.95


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), depth=st.floats(0.5, 20.0))
def test_round_trip_a_to_b_to_a(seed, depth):
    rng = np.random.default_rng(seed)
    a, b = random_pose(rng, 0.2, 0.3), random_pose(rng, 0.2, 0.3)
    uv = rng.uniform(0, [W - 1, H - 1], size=(16, 2))
    d = np.full(16, depth)
    far = np.full((H, W), np.inf)  # no depth check possible: only geometry is compared
    uv_b, z_b, _ = reproject_points(uv, d, K, a, far, K, b)
    front = z_b.numpy() > 0
    uv_back, z_back, _ = reproject_points(uv_b, z_b, K, b, far, K, a)
    np.testing.assert_allclose(uv_back.numpy()[front], uv[front], atol=1e-6)
    np.testing.assert_allclose(z_back.numpy()[front], d[front], rtol=1e-9)


def test_sample_depth_nearest_and_errors():
    depth = np.arange(H * W, dtype=np.float32).reshape(H, W) + 1
    uv = np.array([[0.0, 0.0], [2.49, 3.5], [W - 0.51, H - 0.51], [W - 0.5, 0.0], [-0.6, 2.0]])
    vals = sample_depth_nearest(depth, uv).numpy()
    np.testing.assert_array_equal(vals, [depth[0, 0], depth[4, 2], depth[H - 1, W - 1], 0.0, 0.0])
    with pytest.raises(ValueError, match="rel_tol"):
        reproject(depth, K, EYE, depth, K, EYE, rel_tol=-1)
    with pytest.raises(ValueError, match="border"):
        reproject(depth, K, EYE, depth, K, EYE, border=-1)
    with pytest.raises(ValueError, match="cam_to_world_b"):
        reproject(depth, K, EYE, depth, K, np.eye(3))
