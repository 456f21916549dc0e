"""ScanNet (SensReader export) and ARKitScenes (raw) readers on synthetic scenes written in their
exact on-disk formats: geometry against the synthetic truth, the formats' awkward parts, bad input."""

import numpy as np
import pytest
from PIL import Image
from scene_writers import assert_reprojection_matches, save_png16, write_arkitscenes, write_scannet

from gasp.data import BadFrame, open_scene
from gasp.data.arkitscenes import ARKitScenes
from gasp.data.scannet import ScanNet
from gasp.data.synthetic import SyntheticScene

H, W = 48, 64


@pytest.fixture(scope="module")
def views():
    scene = SyntheticScene(2, num_frames=4, height=H, width=W, path_length=1.5)
    return [scene.view(i) for i in range(4)]


def _expect_bad(scene, i, path, reason):
    with pytest.raises(BadFrame) as e:
        scene.view(i)
    assert str(path) in e.value.path and reason in e.value.reason, (e.value.path, e.value.reason)


# ------------------------------------------------------------------------------------ ScanNet ----
def test_scannet_geometry_and_intrinsics_for_the_sens_resolution(tmp_path, views):
    root = write_scannet(tmp_path / "scene0000_00", views)
    scene = open_scene(root)
    assert isinstance(scene, ScanNet) and len(scene) == 4 and scene.frame_ids == ["0", "1", "2", "3"]
    read = [scene.view(i) for i in range(4)]
    for v, t in zip(read, views):
        np.testing.assert_allclose(v.K, t.K, rtol=1e-9)  # intrinsic_depth.txt is for 640x480
        np.testing.assert_allclose(v.depth, t.depth, atol=0.5e-3 + 1e-6)
        assert v.image.shape == (H, W, 3) and np.abs(v.image.astype(int) - t.image).mean() < 8
    assert_reprojection_matches(read[0], read[2], views[0], views[2])
    assert_reprojection_matches(read[3], read[1], views[3], views[1])


def test_scannet_frame_skip_and_lost_tracking(tmp_path, views):
    root = write_scannet(tmp_path / "s", views)
    for sub, ext in (("color", "jpg"), ("depth", "png"), ("pose", "txt")):
        (root / sub / f"2.{ext}").rename(root / sub / f"20.{ext}")  # frame_skip keeps .sens numbers
    np.savetxt(root / "pose" / "1.txt", np.full((4, 4), -np.inf))  # SensReader's lost tracking
    scene = ScanNet(root)
    assert scene.frame_ids == ["0", "1", "3", "20"] and scene.view(3).index == 20
    _expect_bad(scene, 1, root / "pose" / "1.txt", "pose is not finite")


def test_scannet_depth_of_another_size(tmp_path, views):
    root = write_scannet(tmp_path / "s", views)
    half = np.round(views[1].depth[::2, ::2] * 1000)  # SensReader's image_size option: same aspect
    save_png16(root / "depth" / "1.png", half)
    v = ScanNet(root).view(1)
    assert v.depth.shape == (H // 2, W // 2)
    np.testing.assert_allclose(v.K[0, 0], views[1].K[0, 0] / 2, rtol=1e-9)
    np.testing.assert_allclose(v.K[0, 2], (views[1].K[0, 2] + 0.5) / 2 - 0.5, rtol=1e-9)
    save_png16(root / "depth" / "2.png", np.ones((H, H)) * 2000)  # square: another aspect ratio
    _expect_bad(ScanNet(root), 2, root / "depth" / "2.png", "another aspect ratio")


def test_scannet_bad_input(tmp_path, views):
    root = write_scannet(tmp_path / "s", views)
    data = (root / "color" / "0.jpg").read_bytes()
    (root / "color" / "0.jpg").write_bytes(data[: len(data) // 3])
    (root / "pose" / "3.txt").unlink()
    (root / "pose" / "2.txt").write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n")
    scene = ScanNet(root)
    _expect_bad(scene, 0, root / "color" / "0.jpg", "corrupt or truncated")
    _expect_bad(scene, 3, root / "pose" / "3.txt", "missing")
    _expect_bad(scene, 2, root / "pose" / "2.txt", "must hold 4x4 numbers")
    assert scene.view(1).frame_id == "1"
    empty = tmp_path / "empty"
    (empty / "intrinsic").mkdir(parents=True)
    (empty / "pose").mkdir()
    (empty / "intrinsic" / "intrinsic_depth.txt").write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    with pytest.raises(BadFrame, match="no ScanNet frames"):
        open_scene(empty)


# -------------------------------------------------------------------------------- ARKitScenes ----
def test_arkitscenes_geometry_and_pose_matching(tmp_path, views):
    root = tmp_path / "41069021"
    stamps = write_arkitscenes(root, views)
    scene = open_scene(root)
    assert isinstance(scene, ARKitScenes) and len(scene) == 4 and scene.dropped == []
    read = [scene.view(i) for i in range(4)]
    for v, t in zip(read, views):
        np.testing.assert_allclose(v.cam_to_world, t.cam_to_world, atol=1e-9)  # inverted angle-axis
        np.testing.assert_allclose(v.K, t.K, rtol=1e-12)
    assert read[1].frame_id == f"41069021_{stamps[1]}"  # its .pincam is stamped 1 ms later
    assert_reprojection_matches(read[0], read[3], views[0], views[3])
    assert_reprojection_matches(read[2], read[1], views[2], views[1])


def test_arkitscenes_frames_without_a_pose_in_time_are_dropped_and_named(tmp_path, views):
    root = tmp_path / "v"
    stamps = write_arkitscenes(root, views)
    extra = root / "lowres_depth" / "41069021_1000.130.png"  # 20 ms from the nearest pose
    Image.open(root / "lowres_depth" / f"41069021_{stamps[1]}.png").save(extra)
    scene = ARKitScenes(root)
    assert len(scene) == 4 and scene.indices == [0, 1, 3, 4]
    assert scene.dropped == [(str(extra), "no pose within 0.005 s (nearest is 0.02 s away)")]
    assert len(ARKitScenes(root, max_dt=0.03)) == 5
    with pytest.raises(BadFrame, match="no depth frame has a pose within 0.001 s"):
        ARKitScenes(root, max_dt=0.001)


def test_arkitscenes_bad_input(tmp_path, views):
    root = tmp_path / "v"
    stamps = write_arkitscenes(root, views)
    (root / "lowres_wide" / f"41069021_{stamps[0]}.png").write_bytes(b"garbage")
    (root / "lowres_wide_intrinsics" / f"41069021_{stamps[2]}.pincam").unlink()
    save_png16(root / "lowres_depth" / f"41069021_{stamps[3]}.png", np.ones((H, H)) * 1500)
    scene = ARKitScenes(root)
    _expect_bad(scene, 0, root / "lowres_wide", "corrupt or truncated")
    _expect_bad(scene, 2, root / "lowres_wide_intrinsics", "missing")
    _expect_bad(scene, 3, root / "lowres_depth", "aspect ratio")
    save_png16(root / "lowres_depth" / f"41069021_{stamps[1]}.png", np.round(views[1].depth[::2, ::2] * 1000))
    half = ARKitScenes(root).view(1)  # the .pincam says which size its K is for: scaled to the depth
    np.testing.assert_allclose(half.K[1, 1], views[1].K[1, 1] / 2, rtol=1e-9)
    traj = (root / "lowres_wide.traj").read_text().splitlines()
    (root / "lowres_wide.traj").write_text("\n".join(traj[:2] + ["1000.1 nan 0 0 0 0 0", "bad line"]))
    with pytest.raises(BadFrame, match="line 4 must be 'timestamp ax ay az tx ty tz'"):
        ARKitScenes(root)
    (root / "lowres_wide.traj").write_text("\n".join(traj[:2] + [f"{float(stamps[1]):.3f} nan 0 0 0 0 0"]))
    _expect_bad(ARKitScenes(root), 1, root / "lowres_depth", "pose is not finite")
    empty = tmp_path / "e"
    (empty / "lowres_depth").mkdir(parents=True)
    (empty / "lowres_wide.traj").write_text("")
    with pytest.raises(BadFrame, match="no depth frames"):
        open_scene(empty)
