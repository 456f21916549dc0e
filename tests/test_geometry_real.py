"""Geometry on real Kinect frames (Microsoft 7-Scenes "redkitchen", see ../shared/data/README.md).

Files are read directly (no gasp.data): depth PNG uint16 millimetres with 0 and 65535 invalid, pose
4x4 camera-to-world in metres, one 3x3 K for the depth camera. Checks are depth-to-depth (the colour
camera is not registered to the depth camera).
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gasp.geometry import cameras
from gasp.geometry.reproject import reproject, reproject_points, sample_depth_nearest
from gasp.geometry.sampling import overlap_fraction
from gasp.geometry.token_grid import token_targets
from gasp.geometry.tracks import compute_tracks


@pytest.fixture(scope="module")
def kitchen(shared_data) -> Path:
    root = shared_data / "rgbd" / "7scenes-redkitchen"
    if not (root / "camera-intrinsics.txt").is_file():
        pytest.skip(f"7-Scenes frames not found under {root}")
    return root


def load(root: Path, i: int) -> tuple[np.ndarray, np.ndarray]:
    raw = np.array(Image.open(root / f"frame-{i:06d}.depth.png"))
    assert raw.dtype == np.uint16 and raw.shape == (480, 640)
    depth = raw.astype(np.float32) / 1000.0
    depth[(raw == 0) | (raw == 65535)] = 0.0
    pose = np.loadtxt(root / f"frame-{i:06d}.pose.txt")
    assert bool(cameras.is_rigid_pose(pose))
    return depth, pose


def depth_errors(depth_a, K, pose_a, depth_b, pose_b):
    """|z_b - d_b| of every valid pixel, via the sparse path (which must agree with the dense one)."""
    H, W = depth_a.shape
    v, u = np.mgrid[0:H, 0:W]
    pts = np.stack([u, v], axis=-1).reshape(-1, 2).astype(np.float32)
    uv_b, z_b, valid = reproject_points(pts, depth_a.reshape(-1), K, pose_a, depth_b, K, pose_b)
    uv_dense, valid_dense = reproject(depth_a, K, pose_a, depth_b, K, pose_b)
    np.testing.assert_array_equal(valid.numpy(), valid_dense.reshape(-1).numpy())
    torch.testing.assert_close(uv_b[valid], uv_dense.reshape(-1, 2)[valid])
    d_b = sample_depth_nearest(depth_b, uv_b[valid])
    return (z_b[valid] - d_b).abs(), valid_dense


@pytest.mark.parametrize(
    ("a", "b", "max_median_m", "valid_band"), [(0, 1, 0.004, (0.75, 0.95)), (20, 49, 0.01, (0.55, 0.85))]
)
def test_kitchen_pairs_agree_in_depth(kitchen, a, b, max_median_m, valid_band):
    # Measured: 0->1 median 1.5 mm, 85% of pixels valid; 20->49 median 6.5 mm, 70% valid.
    K = np.loadtxt(kitchen / "camera-intrinsics.txt")
    (da, pa), (db, pb) = load(kitchen, a), load(kitchen, b)
    err, valid = depth_errors(da, K, pa, db, pb)
    assert float(err.median()) < max_median_m
    assert valid_band[0] < float(valid.float().mean()) < valid_band[1]


def test_kitchen_wrong_pose_convention_is_caught(kitchen):
    # Frames 0 and 1 barely move, so the control uses 20 -> 49 (measured: 10% valid, median 2.6 cm).
    K = np.loadtxt(kitchen / "camera-intrinsics.txt")
    (da, pa), (db, pb) = load(kitchen, 20), load(kitchen, 49)
    err, valid = depth_errors(da, K, np.linalg.inv(pa), db, np.linalg.inv(pb))
    assert float(valid.float().mean()) < 0.3
    assert float(err.median()) > 0.01


def test_kitchen_token_targets_and_tracks_after_resize(kitchen):
    K = np.loadtxt(kitchen / "camera-intrinsics.txt")
    frames = [0, 1, 10, 30, 49]
    depths, poses = zip(*(load(kitchen, i) for i in frames))
    src, dst = (480, 640), (336, 336)
    K_small, _ = cameras.fit_intrinsics(K, src, dst, "center_crop")
    small = cameras.resize_depth(np.stack(depths), src, dst, "center_crop")
    Ks = K_small.expand(len(frames), 3, 3)
    t = token_targets(small, Ks, np.stack(poses), (12, 12))
    overlap = overlap_fraction(t).numpy()
    assert overlap[1] > 0.7  # next frame: almost everything matches
    assert overlap[1] >= overlap[-1]  # 49 frames later the view has moved on
    valid = t.valid[1:]
    assert (t.match_subcell[1:][valid] >= 0).all() and (t.match_subcell[1:][valid] < 1).all()
    # Depth of the matched point agrees with the token depth of the matched cell (same surface).
    f, n = torch.nonzero(valid, as_tuple=True)
    token_d = t.token_depth[1:].reshape(len(frames) - 1, -1)[f, t.match_index[1:][f, n]]
    rel = ((t.match_depth[1:][f, n] - token_d).abs() / token_d).median()
    assert float(rel) < 0.1
    tracks = compute_tracks(small, Ks, np.stack(poses))
    assert tracks.visible.shape == (320, len(frames))
    assert float(tracks.visible.float().mean()) > 0.6
