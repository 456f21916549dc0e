"""ScanNet++ iPhone reader: rgb.mkv or extracted jpgs; depth.bin in its three layouts (whole-file zlib
float32, per-frame lz4 uint16, per-frame zlib float32) or extracted pngs; geometry against truth."""

import numpy as np
import pytest
from scene_writers import assert_reprojection_matches, encode_depth_bin, save_png16, write_scannetpp

from gasp.data import BadFrame, open_scene
from gasp.data.scannetpp import DepthBin, ScanNetPP
from gasp.data.synthetic import SyntheticScene


@pytest.fixture(scope="module")
def views():
    scene = SyntheticScene(4, num_frames=5, height=192, width=256, antialias=1, path_length=1.0)
    return [scene.view(i) for i in range(5)]


@pytest.mark.parametrize("layout", ["lz4", "zlib-stream", "zlib-frames"])
def test_scannetpp_video_and_depth_bin(tmp_path, views, layout):
    root = write_scannetpp(tmp_path / "0a5c013435", views, layout)
    scene = open_scene(root)
    assert isinstance(scene, ScanNetPP) and len(scene) == 5 and scene.name == "scannetpp/0a5c013435"
    step = 1e-3 if layout == "lz4" else 1e-7  # uint16 millimetres or float32 metres
    read = [scene.view(i) for i in (4, 0, 2, 1, 3)]  # out of order: seeks in the video
    for v in read:
        t = views[v.index]
        np.testing.assert_allclose(v.depth, t.depth, atol=step / 2 + 1e-6)
        np.testing.assert_array_equal(v.image, t.image)  # ffv1 is lossless
        np.testing.assert_allclose(v.K, t.K, rtol=1e-9)  # K for 1920x1440 scaled to 256x192
        np.testing.assert_allclose(v.cam_to_world, t.cam_to_world, atol=1e-12)  # aligned_pose
    assert_reprojection_matches(read[1], read[2], views[0], views[2])


def test_scannetpp_extracted_frames_from_the_iphone_folder(tmp_path, views):
    root = write_scannetpp(tmp_path / "s", views, extracted=True)
    scene = open_scene(root / "iphone")
    assert isinstance(scene, ScanNetPP) and scene.video is None and scene.depth_bin is None
    assert_reprojection_matches(scene.view(1), scene.view(4), views[1], views[4])
    save_png16(root / "iphone" / "depth" / "frame_000003.png", np.round(views[3].depth[::4, ::4] * 1000))
    v = ScanNetPP(root).view(3)  # depth of another size: K (for the colour) scaled to it
    np.testing.assert_allclose(v.K[0, 0], views[3].K[0, 0] / 4, rtol=1e-9)


def test_depth_bin_detects_float_or_millimetres_per_frame(tmp_path, views):
    path = tmp_path / "depth.bin"
    encode_depth_bin(path, [views[0].depth, views[1].depth], "lz4")
    raw = path.read_bytes()
    import struct
    import zlib

    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    block = c.compress(views[2].depth.astype("<f4").tobytes()) + c.flush()
    path.write_bytes(raw + struct.pack("<I", len(block)) + block)  # a float32 frame after uint16 ones
    d = DepthBin(path)
    assert len(d) == 3
    np.testing.assert_allclose(d.frame(2), views[2].depth)
    np.testing.assert_allclose(d.frame(1), views[1].depth, atol=0.5e-3 + 1e-6)


def test_scannetpp_bad_input(tmp_path, views):
    root = write_scannetpp(tmp_path / "s", views, "lz4")
    iphone = root / "iphone"
    import json

    meta = json.loads((iphone / "pose_intrinsic_imu.json").read_text())
    meta["frame_000001"]["aligned_pose"][0][0] = float("nan")
    del meta["frame_000002"]["aligned_pose"]
    meta["frame_000005"] = meta["frame_000004"]  # no such frame in the video or depth.bin
    (iphone / "pose_intrinsic_imu.json").write_text(json.dumps(meta))
    scene = ScanNetPP(root)
    with pytest.raises(BadFrame, match="pose is not finite"):
        scene.view(1)
    with pytest.raises(BadFrame, match="'aligned_pose' must be a 4x4 matrix") as e:
        scene.view(2)
    assert e.value.path.endswith("pose_intrinsic_imu.json")
    with pytest.raises(BadFrame, match="video has 5 frames, frame 5 does not exist"):
        scene.view(5)
    data = (iphone / "depth.bin").read_bytes()
    (iphone / "depth.bin").write_bytes(data[: len(data) - 100])  # the last frame cut short
    with pytest.raises(BadFrame, match="depth.bin") as e:
        ScanNetPP(root).view(4)
    assert e.value.path.endswith("depth.bin")
    (iphone / "rgb.mkv").write_bytes(b"not a video")
    with pytest.raises(BadFrame, match="video cannot be decoded") as e:
        ScanNetPP(root).view(0)
    (iphone / "pose_intrinsic_imu.json").write_text("{}")
    with pytest.raises(BadFrame, match="no 'frame_XXXXXX' entries"):
        open_scene(root)
