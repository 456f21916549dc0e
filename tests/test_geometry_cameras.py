import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gasp.geometry import cameras
from gasp.geometry.reproject import reproject

finite = st.floats(-1.0, 1.0, allow_nan=False)


def rotation(q: np.ndarray) -> np.ndarray:
    """Rotation matrix of a (not necessarily unit) quaternion (w, x, y, z)."""
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def pose(q, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = rotation(np.asarray(q, dtype=np.float64))
    T[:3, 3] = t
    return T


quaternions = st.lists(finite, min_size=4, max_size=4).filter(lambda q: np.linalg.norm(q) > 0.1)
translations = st.lists(st.floats(-10, 10), min_size=3, max_size=3)
poses = st.builds(pose, quaternions, translations)


@settings(max_examples=60, deadline=None)
@given(
    fx=st.floats(50, 1000),
    fy=st.floats(50, 1000),
    skew=st.floats(-2, 2),
    cx=st.floats(0, 640),
    cy=st.floats(0, 480),
    uv=st.lists(st.tuples(st.floats(-50, 700), st.floats(-50, 500)), min_size=1, max_size=8),
    depth=st.floats(0.05, 100),
)
def test_unproject_project_round_trip(fx, fy, skew, cx, cy, uv, depth):
    K = np.array([[fx, skew, cx], [0, fy, cy], [0, 0, 1]])
    uv = np.asarray(uv)
    d = np.full(len(uv), depth)
    xyz = cameras.unproject(uv, d, K)
    assert xyz.dtype == torch.float64
    np.testing.assert_allclose(xyz[:, 2].numpy(), d)
    uv2, z = cameras.project(xyz, K)
    np.testing.assert_allclose(uv2.numpy(), uv, atol=1e-6)
    np.testing.assert_allclose(z.numpy(), d)


@settings(max_examples=60, deadline=None)
@given(T=poses)
def test_invert_pose(T):
    inv = cameras.invert_pose(T).numpy()
    np.testing.assert_allclose(T @ inv, np.eye(4), atol=1e-9)
    np.testing.assert_allclose(inv @ T, np.eye(4), atol=1e-9)
    np.testing.assert_allclose(inv, np.linalg.inv(T), atol=1e-9)
    assert bool(cameras.is_rigid_pose(T)) and bool(cameras.is_rigid_pose(inv))


@settings(max_examples=60, deadline=None)
@given(a=poses, b=poses, c=poses, pts=st.lists(st.tuples(finite, finite, finite), min_size=1, max_size=5))
def test_relative_pose_composition(a, b, c, pts):
    T_ab = cameras.relative_pose(a, b)
    T_bc = cameras.relative_pose(b, c)
    np.testing.assert_allclose((T_bc @ T_ab).numpy(), cameras.relative_pose(a, c).numpy(), atol=1e-9)
    # Points in camera a, sent to the world by a, then into camera b, match T_ab directly.
    pts = np.asarray(pts)
    world = cameras.transform_points(a, pts)
    in_b = cameras.transform_points(np.linalg.inv(b), world)
    np.testing.assert_allclose(cameras.transform_points(T_ab, pts).numpy(), in_b.numpy(), atol=1e-9)


def test_batched_broadcasting_and_dtypes():
    K = torch.tensor([[100.0, 0, 50], [0, 100, 40], [0, 0, 1]])
    uv = np.random.default_rng(0).uniform(0, 100, size=(3, 5, 2)).astype(np.float32)
    d = np.full((3, 5), 2.0, np.float32)
    xyz = cameras.unproject(uv, d, K)  # K broadcasts over the batch
    assert xyz.shape == (3, 5, 3) and xyz.dtype == torch.float32
    for i in range(3):
        torch.testing.assert_close(xyz[i], cameras.unproject(uv[i], d[i], K))
    assert cameras.unproject(uv.astype(np.float64), d, K).dtype == torch.float64
    with pytest.raises(ValueError, match="K must have shape"):
        cameras.unproject(uv, d, torch.eye(4))


def test_is_rigid_pose_rejects():
    good = pose([0.9, 0.1, -0.3, 0.2], [1, 2, 3])
    reflect = good.copy()
    reflect[:3, 0] *= -1
    scaled = good.copy()
    scaled[:3, :3] *= 1.01
    bad_row = good.copy()
    bad_row[3, 0] = 0.5
    nan = good.copy()
    nan[0, 3] = np.nan
    inf = good.copy()
    inf[1, 1] = np.inf
    out = cameras.is_rigid_pose(np.stack([good, reflect, scaled, bad_row, nan, inf]))
    assert out.tolist() == [True, False, False, False, False, False]
    slightly_off = good.copy()
    slightly_off[:3, :3] *= 1 + 1e-5
    assert bool(cameras.is_rigid_pose(slightly_off))
    assert not bool(cameras.is_rigid_pose(slightly_off, atol=1e-7))


def test_fit_intrinsics_values():
    K = np.array([[585.0, 0, 320], [0, 585, 240], [0, 0, 1]])
    K2, box = cameras.fit_intrinsics(K, (480, 640), (240, 320), "resize")
    assert box == (0, 0, 240, 320)
    np.testing.assert_allclose(K2.numpy(), [[292.5, 0, 159.75], [0, 292.5, 119.75], [0, 0, 1]])
    K3, box = cameras.fit_intrinsics(K, (480, 640), (224, 224), "center_crop")
    scaled_w = round(640 * 224 / 480)  # 299
    left = (scaled_w - 224) // 2
    assert box == (0, left, 224, 224)
    s = 224 / 480
    np.testing.assert_allclose(K3[1].numpy(), [0, 585 * s, (240 + 0.5) * s - 0.5], rtol=1e-12)
    sx = scaled_w / 640
    np.testing.assert_allclose(K3[0].numpy(), [585 * sx, 0, (320 + 0.5) * sx - 0.5 - left], rtol=1e-12)
    with pytest.raises(ValueError, match="mode must be one of"):
        cameras.fit_intrinsics(K, (480, 640), (224, 224), "pad")


@pytest.mark.parametrize(
    ("src", "dst", "mode", "offset"),
    [((96, 129), (32, 43), "resize", (0, 0)), ((96, 144), (32, 32), "center_crop", (0, 8))],
)
def test_resize_depth_picks_nearest_source_pixel(src, dst, mode, offset):
    H, W = src
    rows, cols = np.mgrid[0:H, 0:W]
    code = (rows * 1000 + cols + 1).astype(np.float32)  # every pixel distinct
    code[5, 7] = 0.0  # an invalid pixel stays invalid (never mixed)
    out = cameras.resize_depth(code, src, dst, mode).numpy()
    assert out.shape == dst
    # 3x downsampling: output pixel p sits exactly on source pixel 3 * (p + offset) + 1.
    exp_r = 3 * (np.arange(dst[0]) + offset[0]) + 1
    exp_c = 3 * (np.arange(dst[1]) + offset[1]) + 1
    np.testing.assert_array_equal(out, code[exp_r[:, None], exp_c[None, :]])
    batched = cameras.resize_depth(np.stack([code, 2 * code]), src, dst, mode)
    np.testing.assert_array_equal(batched[1].numpy(), 2 * out)
    with pytest.raises(ValueError, match="src_hw"):
        cameras.resize_depth(code, (H + 1, W), dst, mode)


@pytest.mark.parametrize("mode", ["resize", "center_crop"])
def test_resize_image_follows_pixel_centre_mapping(mode):
    src, dst = (60, 90), (24, 24)
    _, box = cameras.fit_intrinsics(np.eye(3), src, dst, mode)
    Hs, Ws = (24, 24) if mode == "resize" else (24, 36)
    rows, cols = np.mgrid[0 : src[0], 0 : src[1]]
    img = np.stack([2 * cols, 3 * rows, np.full_like(rows, 77)], axis=-1).astype(np.uint8)
    out = cameras.resize_image(img, src, dst, mode).numpy().astype(np.float64)
    assert out.shape == (24, 24, 3)
    # A linear ramp is reproduced exactly (antialiasing filter is symmetric) away from the edges.
    u_src = (np.arange(24) + box[1] + 0.5) * (src[1] / Ws) - 0.5
    v_src = (np.arange(24) + box[0] + 0.5) * (src[0] / Hs) - 0.5
    inner = slice(3, -3)
    np.testing.assert_allclose(
        out[inner, inner, 0], np.broadcast_to(2 * u_src, (24, 24))[inner, inner], atol=1
    )
    np.testing.assert_allclose(
        out[inner, inner, 1], np.broadcast_to(3 * v_src[:, None], (24, 24))[inner, inner], atol=1
    )
    assert (out[..., 2] == 77).all()


def plane_depth(K: np.ndarray, c2w: np.ndarray, hw, normal, offset) -> np.ndarray:
    """Exact depth map of the world plane ``normal . X = offset`` seen by a pinhole camera."""
    H, W = hw
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(K).T  # z component 1
    dirs = rays @ c2w[:3, :3].T
    n = np.asarray(normal, dtype=np.float64)
    return ((offset - n @ c2w[:3, 3]) / (dirs @ n)).astype(np.float32)


@pytest.mark.parametrize(
    ("src", "dst", "mode", "offset"),
    [((96, 129), (32, 43), "resize", (0, 0)), ((96, 144), (32, 32), "center_crop", (0, 8))],
)
def test_reproject_after_resize_agrees_with_full_resolution(src, dst, mode, offset):
    K = np.array([[120.0, 0, src[1] / 2 - 0.5], [0, 118, src[0] / 2 - 0.5], [0, 0, 1]])
    a = pose([1, 0.02, -0.03, 0.01], [0, 0, 0])
    b = pose([1, -0.01, 0.02, 0.0], [0.05, -0.03, 0.05])
    normal, off = np.array([0.1, -0.2, 1.0]), 3.0
    da, db = (plane_depth(K, c, src, normal, off) for c in (a, b))
    uv_full, valid_full = reproject(da, K, a, db, K, b, border=0)
    K_small, _ = cameras.fit_intrinsics(K, src, dst, mode)
    da_s, db_s = (cameras.resize_depth(d, src, dst, mode) for d in (da, db))
    uv_small, valid_small = reproject(da_s, K_small, a, db_s, K_small, b, border=0)
    # Output pixel p is source pixel 3 * (p + offset) + 1, with identical depth (nearest resize).
    r = 3 * (np.arange(dst[0]) + offset[0]) + 1
    c = 3 * (np.arange(dst[1]) + offset[1]) + 1
    uv_full = uv_full.numpy()[r[:, None], c[None, :]]
    valid_full = valid_full.numpy()[r[:, None], c[None, :]]
    expected = (uv_full + 0.5) / 3 - 0.5 - np.array([offset[1], offset[0]])
    both = valid_full & valid_small.numpy()
    assert both.mean() > 0.6
    np.testing.assert_allclose(uv_small.numpy()[both], expected[both], atol=1e-3)
    # Where the point lands inside the smaller frame, visibility agrees (up to nearest-pixel lookups).
    lands = (expected[..., 0] >= 1) & (expected[..., 0] <= dst[1] - 2)
    lands &= (expected[..., 1] >= 1) & (expected[..., 1] <= dst[0] - 2)
    assert (valid_full != valid_small.numpy())[lands].mean() < 0.02
    assert math.isclose(float(K_small[0, 0]), 120.0 * dst[1] / src[1] if mode == "resize" else 40.0)
