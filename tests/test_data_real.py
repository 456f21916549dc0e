"""Readers on real public data (skipped when ../shared/data is absent): 7-Scenes and Redwood.

Geometry is checked depth-to-depth: warping frame a into frame b with the read poses and intrinsics
must land on b's measured depth (7-Scenes colour is not registered to depth, so colour is not used).
"""

import numpy as np
import pytest

from gasp.data import open_scene
from gasp.data.redwood import Redwood
from gasp.data.sevenscenes import SevenScenes
from gasp.geometry.reproject import reproject


def depth_agreement(a, b) -> tuple[float, float]:
    """Median |z_b - d_b| (metres) and the fraction within 5 cm, over pixels of a landing inside b."""
    H, W = a.depth.shape
    v, u = np.mgrid[0:H, 0:W]
    m = a.depth > 0
    xyz = np.stack([(u - a.K[0, 2]) / a.K[0, 0], (v - a.K[1, 2]) / a.K[1, 1], np.ones_like(u, float)], -1)[m]
    xyz *= a.depth[m, None]
    T = np.linalg.inv(b.cam_to_world) @ a.cam_to_world
    y = xyz @ T[:3, :3].T + T[:3, 3]
    ub = np.floor(y[:, 0] / y[:, 2] * b.K[0, 0] + b.K[0, 2] + 0.5).astype(int)
    vb = np.floor(y[:, 1] / y[:, 2] * b.K[1, 1] + b.K[1, 2] + 0.5).astype(int)
    inside = (y[:, 2] > 0) & (ub >= 0) & (ub < W) & (vb >= 0) & (vb < H)
    d_b = b.depth[vb[inside], ub[inside]]
    err = np.abs(d_b - y[inside, 2])[d_b > 0]
    return float(np.median(err)), float((err < 0.05).mean())


def test_sevenscenes_redkitchen(shared_data):
    scene = open_scene(shared_data / "rgbd" / "7scenes-redkitchen")
    assert isinstance(scene, SevenScenes) and len(scene) == 58
    assert scene.frame_ids[49] == "frame-000049" and scene.frame_ids[50] == "frame-000100"
    v0, v1 = scene.view(0), scene.view(1)
    assert v0.image.shape == (480, 640, 3) and v0.depth.shape == (480, 640) and v0.index == 0
    assert scene.view(50).index == 100
    np.testing.assert_array_equal(v0.K, [[585, 0, 320], [0, 585, 240], [0, 0, 1]])
    valid = v0.depth[v0.depth > 0]
    assert valid.min() > 0.3 and valid.max() < 5.0, "depth must be metres"
    med, frac = depth_agreement(v0, v1)
    assert med < 0.003 and frac > 0.97, (med, frac)  # README: about 1.4 mm
    med, frac = depth_agreement(scene.view(20), scene.view(49))
    assert med < 0.012 and frac > 0.93, (med, frac)  # README: about 7 mm, 96% within 5 cm
    _, valid_mask = reproject(v0.depth, v0.K, v0.cam_to_world, v1.depth, v1.K, v1.cam_to_world)
    assert valid_mask.float().mean() > 0.7


def test_sevenscenes_wrong_pose_is_detected(shared_data):
    """The agreement test can fail: frame 1 with frame 300's pose does not line up."""
    scene = open_scene(shared_data / "rgbd" / "7scenes-redkitchen")
    v0, v1 = scene.view(0), scene.view(1)
    v1.cam_to_world = scene.view(scene.frame_ids.index("frame-000300")).cam_to_world
    med, frac = depth_agreement(v0, v1)
    assert med > 0.05 or frac < 0.5


@pytest.mark.parametrize("log", ["trajectory.log", "odometry.log"])
def test_redwood_livingroom(shared_data, log):
    root = shared_data / "rgbd" / "redwood-livingroom1"
    scene = Redwood(root, trajectory=log)
    assert len(scene) == 5 and scene.frame_ids == ["00000", "00001", "00002", "00003", "00004"]
    v0, v4 = scene.view(0), scene.view(4)
    np.testing.assert_array_equal(v0.K, [[525, 0, 319.5], [0, 525, 239.5], [0, 0, 1]])
    assert v0.image.shape == (480, 640, 3) and v0.depth.dtype == np.float32
    med, frac = depth_agreement(v0, v4)
    assert med < 0.01 and frac > 0.95, (med, frac)


def test_redwood_autodetect_prefers_trajectory_log(shared_data):
    scene = open_scene(shared_data / "rgbd" / "redwood-livingroom1")
    assert isinstance(scene, Redwood) and scene.log_path.name == "trajectory.log"
