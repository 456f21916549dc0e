"""Readers of every on-disk format, round-tripped through files written here, and bad-input handling.

Ground truth comes from a small synthetic scene: its views are written in each format, read back and
compared (depth within the format's quantisation, poses and intrinsics exactly).
"""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scene_writers import rotation_to_quaternion

from gasp.data import BadFrame, View, open_scene
from gasp.data.folder import FolderScene
from gasp.data.redwood import Redwood
from gasp.data.sevenscenes import DEFAULT_K, SevenScenes
from gasp.data.synthetic import SyntheticScene
from gasp.data.tum import FREIBURG_K, TUM, associate
from gasp.errors import BadInputError, ConfigError

H, W = 30, 40


@pytest.fixture(scope="module")
def views():
    scene = SyntheticScene(5, num_frames=4, height=H, width=W)
    return [scene.view(i) for i in range(4)]


def save_depth_png(path: Path, depth: np.ndarray, scale: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(depth * scale).astype(np.uint16)).save(path)


def save_rgb(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, **({"quality": 95} if path.suffix == ".jpg" else {}))


def save_matrix(path: Path, M: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, M, fmt="%.17g")


def write_folder(root: Path, views, depth_format: str = "png", per_frame_k: bool = False) -> Path:
    for i, v in enumerate(views):
        fid = f"{i:04d}"
        save_rgb(root / "color" / f"{fid}.png", v.image)
        if depth_format == "npy":
            (root / "depth").mkdir(parents=True, exist_ok=True)
            np.save(root / "depth" / f"{fid}.npy", v.depth)
        else:
            save_depth_png(root / "depth" / f"{fid}.png", v.depth, 4000.0)
        save_matrix(root / "poses" / f"{fid}.txt", v.cam_to_world)
        if per_frame_k:
            save_matrix(root / "intrinsics" / f"{fid}.txt", v.K)
    if not per_frame_k:
        K = views[0].K
        (root / "intrinsics.txt").write_text(
            " ".join(repr(float(x)) for x in (K[0, 0], K[1, 1], K[0, 2], K[1, 2]))
        )
    (root / "depth_scale.txt").write_text("4000\n")
    return root


def write_7scenes(root: Path, views, ext: str = "png", intrinsics: bool = True) -> Path:
    for i, v in enumerate(views):
        stem = root / f"frame-{10 * i:06d}"
        save_rgb(Path(f"{stem}.color.{ext}"), v.image)
        raw = np.round(v.depth * 1000).astype(np.uint16)
        raw[0, :5] = 65535  # 7-Scenes marks invalid depth with 65535 as well as 0
        Image.fromarray(raw).save(f"{stem}.depth.png")
        save_matrix(Path(f"{stem}.pose.txt"), v.cam_to_world)
    if intrinsics:
        save_matrix(root / "camera-intrinsics.txt", views[0].K)
    return root


def write_redwood(root: Path, views, K: np.ndarray) -> Path:
    blocks = []
    for i, v in enumerate(views):
        save_rgb(root / "color" / f"{i:05d}.jpg", v.image)
        save_depth_png(root / "depth" / f"{i:05d}.png", v.depth, 1000.0)
        rows = "\n".join(" ".join(f"{x:.17g}" for x in r) for r in v.cam_to_world)
        blocks.append(f"{i} {i} {i + 1}\n{rows}\n")
    (root / "trajectory.log").write_text("".join(blocks))
    cam = {"width": W, "height": H, "intrinsic_matrix": K.T.ravel().tolist()}  # column-major
    (root / "camera_primesense.json").write_text(json.dumps(cam))
    return root


def write_tum(root: Path, views) -> Path:
    """Depth at 30 Hz, colour 8 ms later, ground truth at 100 Hz offset by 3 ms; plus one extra depth
    frame with no colour near it (must be dropped)."""
    rgb, depth, gt = ["# color images"], ["# depth maps"], ["# timestamp tx ty tz qx qy qz qw"]
    for i, v in enumerate(views):
        t = 1305031102.0 + i / 30
        save_rgb(root / "rgb" / f"{t + 0.008:.6f}.png", v.image)
        save_depth_png(root / "depth" / f"{t:.6f}.png", v.depth, 5000.0)
        rgb.append(f"{t + 0.008:.6f} rgb/{t + 0.008:.6f}.png")
        depth.append(f"{t:.6f} depth/{t:.6f}.png")
        q = rotation_to_quaternion(v.cam_to_world[:3, :3]) * (-1 if i % 2 else 1)  # q and -q: same rotation
        values = [*v.cam_to_world[:3, 3], *q]
        gt.append(f"{t + 0.003:.6f} " + " ".join(repr(float(x)) for x in values))
        gt.append(f"{t + 0.013:.6f} 9 9 9 0 0 0 1")  # a farther sample that must not be chosen
    depth.append("1305031200.000000 depth/lonely.png")
    for name, lines in (("rgb.txt", rgb), ("depth.txt", depth), ("groundtruth.txt", gt)):
        (root / name).write_text("\n".join(lines) + "\n")
    return root


def assert_same_geometry(read, truth, depth_step: float) -> None:
    assert read.depth.shape == truth.depth.shape and read.depth.dtype == np.float32
    np.testing.assert_allclose(read.depth, truth.depth, atol=depth_step / 2 + 1e-6)
    np.testing.assert_allclose(read.cam_to_world, truth.cam_to_world, atol=1e-9)


# ---------------------------------------------------------------------------- round trips ----
@pytest.mark.parametrize("depth_format", ["png", "npy"])
def test_folder_round_trip(tmp_path, views, depth_format):
    scene = open_scene(write_folder(tmp_path / "scene", views, depth_format))
    assert isinstance(scene, FolderScene) and len(scene) == 4
    for i, truth in enumerate(views):
        v = scene.view(i)
        assert v.frame_id == f"{i:04d}" and v.index == i
        np.testing.assert_array_equal(v.image, truth.image)
        np.testing.assert_allclose(v.K, truth.K, rtol=1e-12)
        assert_same_geometry(v, truth, 1 / 4000 if depth_format == "png" else 0.0)


def test_folder_per_frame_intrinsics_and_explicit_depth_scale(tmp_path, views):
    root = write_folder(tmp_path / "s", views, per_frame_k=True)
    (root / "depth_scale.txt").unlink()
    scene = FolderScene(root, depth_scale=4000.0)
    np.testing.assert_allclose(scene.view(2).K, views[2].K, rtol=1e-12)
    assert_same_geometry(scene.view(2), views[2], 1 / 4000)
    wrong = FolderScene(root)  # default 1000 units per metre: depths 4x too large
    np.testing.assert_allclose(wrong.view(2).depth, 4 * scene.view(2).depth, rtol=1e-6)


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_sevenscenes_round_trip(tmp_path, views, ext):
    scene = open_scene(write_7scenes(tmp_path / "seq-01", views, ext))
    assert isinstance(scene, SevenScenes) and len(scene) == 4
    v = scene.view(3)
    assert v.frame_id == "frame-000030" and v.index == 30
    assert (v.depth[0, :5] == 0).all(), "65535 must read as invalid"
    truth = views[3].depth.copy()
    truth[0, :5] = 0
    np.testing.assert_allclose(v.depth, truth, atol=0.5e-3 + 1e-6)
    np.testing.assert_allclose(v.cam_to_world, views[3].cam_to_world, atol=1e-9)
    np.testing.assert_allclose(v.K, views[3].K, rtol=1e-12)
    diff = np.abs(v.image.astype(int) - views[3].image).mean()
    assert diff == 0 if ext == "png" else diff < 8


def test_sevenscenes_default_intrinsics(tmp_path, views):
    """The default K is for 640x480: used as it is there, and a small depth image is rejected."""
    big = [
        View(
            image=np.kron(v.image, np.ones((16, 16, 1), np.uint8)),
            depth=np.kron(v.depth, np.ones((16, 16), np.float32)),
            K=v.K,
            cam_to_world=v.cam_to_world,
            frame_id=v.frame_id,
            index=v.index,
            source=v.source,
        )
        for v in views[:1]
    ]
    scene = SevenScenes(write_7scenes(tmp_path / "seq", big, intrinsics=False))
    np.testing.assert_array_equal(scene.view(0).K, DEFAULT_K)
    assert DEFAULT_K[0, 0] == 585 and DEFAULT_K[0, 2] == 320 and DEFAULT_K[1, 2] == 240
    small = SevenScenes(write_7scenes(tmp_path / "small", views, intrinsics=False))
    _expect_bad(small, 0, tmp_path / "small" / "frame-000000.depth.png", "intrinsics are for a 640x480 image")


def test_redwood_round_trip_reads_column_major_intrinsics(tmp_path, views):
    K = np.array([[51.0, 0, 19.0], [0, 53.0, 15.5], [0, 0, 1]])  # fx != fy, cx != cy: a transpose shows
    scene = open_scene(write_redwood(tmp_path / "livingroom", views, K))
    assert isinstance(scene, Redwood) and len(scene) == 4
    v = scene.view(1)
    np.testing.assert_array_equal(v.K, K)
    assert_same_geometry(v, views[1], 1e-3)
    assert v.frame_id == "00001" and np.abs(v.image.astype(int) - views[1].image).mean() < 8


def test_tum_association_quaternions_and_depth_factor(tmp_path, views):
    root = write_tum(tmp_path / "rgbd_dataset_freiburg2_desk", views)
    scene = open_scene(root)
    assert isinstance(scene, TUM) and len(scene) == 4, "the lonely depth frame must be dropped"
    assert scene.dropped == [(str(root / "depth" / "lonely.png"), "no colour image within 0.02 s")]
    np.testing.assert_array_equal(scene.K, FREIBURG_K["fr2"])
    # the Freiburg K is for 640x480 depth; these 40x30 test images need their own K
    _expect_bad(scene, 0, root / "depth", "intrinsics are for a 640x480 image")
    scene = TUM(root, K=views[0].K)
    for i, truth in enumerate(views):
        v = scene.view(i)
        assert_same_geometry(v, truth, 1 / 5000)
        np.testing.assert_array_equal(v.image, truth.image)
        assert v.index == i


def test_tum_camera_choice_and_max_dt(tmp_path, views):
    root = write_tum(tmp_path / "seq", views)
    K = np.array([[40.0, 0, 20], [0, 40, 15], [0, 0, 1]])
    np.testing.assert_array_equal(TUM(root, camera="fr3").K, FREIBURG_K["fr3"])
    np.testing.assert_array_equal(TUM(root, K=K).view(0).K, K)
    with pytest.warns(UserWarning, match="ROS default"):
        np.testing.assert_array_equal(TUM(root).K, FREIBURG_K["ros"])
    with pytest.raises(ConfigError, match="fr1"):
        TUM(root, camera="kinect9")
    with pytest.raises(BadFrame, match="no depth frame has a colour image") as e, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        TUM(root, max_dt=0.005)  # colour is 8 ms away from depth
    assert e.value.path.endswith("depth.txt")


def test_associate_nearest_within_max_dt():
    ref = np.array([0.0, 0.1, 0.2, 0.3])
    q = np.array([-0.5, 0.04, 0.06, 0.19, 0.31, 0.9])
    np.testing.assert_array_equal(associate(q, ref, 0.02), [-1, -1, -1, 2, 3, -1])
    np.testing.assert_array_equal(associate(q, ref, 1.0), [0, 0, 1, 2, 3, 3])
    np.testing.assert_array_equal(associate(q, np.array([5.0]), 0.1), [-1] * 6)


# ------------------------------------------------------------------------------ bad input ----
def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def folder(tmp_path, views) -> Path:
    return write_folder(tmp_path / "scene", views)


@pytest.fixture
def sevenscenes_jpg(tmp_path, views) -> Path:
    return write_7scenes(tmp_path / "seq", views, "jpg")


def _expect_bad(scene, i: int, path: Path, reason: str) -> None:
    with pytest.raises(BadFrame) as e:
        scene.view(i)
    assert str(path) in e.value.path, e.value.path
    assert reason in e.value.reason, e.value.reason
    assert str(path) in str(e.value)


def test_missing_files(folder, sevenscenes_jpg):
    (folder / "color" / "0001.png").unlink()
    _expect_bad(FolderScene(folder), 1, folder / "color" / "0001.png", "missing")
    (folder / "poses" / "0002.txt").unlink()
    _expect_bad(FolderScene(folder), 2, folder / "poses" / "0002.txt", "missing")
    (sevenscenes_jpg / "frame-000010.depth.png").unlink()
    _expect_bad(SevenScenes(sevenscenes_jpg), 1, sevenscenes_jpg / "frame-000010.depth.png", "missing")


@pytest.mark.parametrize("tolerant", [False, True], ids=["pil-default", "pil-tolerant"])
def test_truncated_png_and_jpg(folder, sevenscenes_jpg, tolerant, monkeypatch):
    # lmms-eval switches PIL's process-wide truncated-image tolerance on when imported: still refused
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", tolerant)
    _truncate(folder / "depth" / "0001.png")
    _expect_bad(FolderScene(folder), 1, folder / "depth" / "0001.png", "corrupt or truncated")
    _truncate(folder / "color" / "0002.png")
    _expect_bad(FolderScene(folder), 2, folder / "color" / "0002.png", "corrupt or truncated")
    _truncate(sevenscenes_jpg / "frame-000020.color.jpg")
    _expect_bad(
        SevenScenes(sevenscenes_jpg), 2, sevenscenes_jpg / "frame-000020.color.jpg", "corrupt or truncated"
    )
    assert ImageFile.LOAD_TRUNCATED_IMAGES is tolerant  # the caller's setting is restored


def test_garbage_instead_of_an_image(folder):
    (folder / "depth" / "0003.png").write_bytes(b"not a png at all")
    _expect_bad(FolderScene(folder), 3, folder / "depth" / "0003.png", "corrupt or truncated")


@pytest.mark.parametrize(
    ("pose_text", "reason"),
    [
        ("nan 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n", "not finite"),
        ("-inf -inf -inf -inf\n" * 4, "not finite"),  # ScanNet's lost-tracking marker
        ("2 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n", "not rigid"),
        ("1 0 0 0\n0 1 0 0\n0 0 1 0\n", "must hold 4x4 numbers"),
        ("1 0 0 0\n0 one 0 0\n0 0 1 0\n0 0 0 1\n", "not a whitespace-separated list of numbers"),
    ],
)
def test_bad_poses(folder, sevenscenes_jpg, pose_text, reason):
    (folder / "poses" / "0001.txt").write_text(pose_text)
    _expect_bad(FolderScene(folder), 1, folder / "poses" / "0001.txt", reason)
    (sevenscenes_jpg / "frame-000030.pose.txt").write_text(pose_text)
    _expect_bad(SevenScenes(sevenscenes_jpg), 3, sevenscenes_jpg / "frame-000030.pose.txt", reason)


def test_all_zero_depth(folder, sevenscenes_jpg):
    Image.fromarray(np.zeros((H, W), np.uint16)).save(folder / "depth" / "0000.png")
    _expect_bad(FolderScene(folder), 0, folder / "depth" / "0000.png", "no valid pixel")
    Image.fromarray(np.full((H, W), 65535, np.uint16)).save(sevenscenes_jpg / "frame-000000.depth.png")
    _expect_bad(SevenScenes(sevenscenes_jpg), 0, sevenscenes_jpg / "frame-000000.depth.png", "no valid pixel")


def test_eight_bit_depth_png_is_rejected(folder):
    Image.fromarray(np.full((H, W), 9, np.uint8)).save(folder / "depth" / "0000.png")
    _expect_bad(FolderScene(folder), 0, folder / "depth" / "0000.png", "16-bit")


def test_colour_depth_size_mismatch(folder, views):
    Image.fromarray(np.zeros((H, H, 3), np.uint8)).save(folder / "color" / "0001.png")  # square vs 4:3
    _expect_bad(FolderScene(folder), 1, folder / "depth" / "0001.png", "aspect ratio")
    big = np.asarray(Image.fromarray(views[2].image).resize((2 * W, 2 * H)))  # same aspect: allowed
    Image.fromarray(big).save(folder / "color" / "0002.png")
    v = FolderScene(folder).view(2)
    assert v.image.shape == (2 * H, 2 * W, 3) and v.depth.shape == (H, W)


def test_empty_folders(tmp_path):
    empty = tmp_path / "empty"
    for sub in ("color", "depth", "poses"):
        (empty / sub).mkdir(parents=True)
    with pytest.raises(BadFrame, match="no frames found") as e:
        FolderScene(empty)
    assert e.value.path == str(empty)
    with pytest.raises(BadFrame, match="no 7-Scenes frames"):
        SevenScenes(tmp_path)
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(BadInputError, match="not a supported scene folder") as e:
        open_scene(bare)
    for name in ("7scenes", "tum", "redwood", "folder", "synthetic"):
        assert name in str(e.value)
    with pytest.raises(BadInputError, match="does not exist"):
        open_scene(tmp_path / "nowhere")


def test_redwood_log_errors(tmp_path, views):
    root = write_redwood(tmp_path / "r", views, views[0].K)
    log = root / "trajectory.log"
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:-5]) + "\n")
    with pytest.raises(BadFrame, match="3 poses but depth/ has 4 frames"):
        Redwood(root)
    log.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(BadFrame, match="blocks of 5 lines"):
        Redwood(root)
    (root / "odometry.log").write_text("")
    log.unlink()
    with pytest.raises(BadFrame, match="trajectory has 0 poses"):
        Redwood(root)


def test_open_scene_forced_format_and_synthetic_specs(tmp_path, views):
    root = write_folder(tmp_path / "x", views)
    assert isinstance(open_scene(f"folder:{root}"), FolderScene)
    scene = open_scene("synthetic:7,num_frames=5,height=24,width=32,fov_deg=80.5")
    assert isinstance(scene, SyntheticScene) and len(scene) == 5 and scene.view(4).image.shape == (24, 32, 3)
    for bad in ("synthetic:x", "synthetic:1,colour=red", "synthetic:1,height=tall", "synthetic:1,height"):
        with pytest.raises(ConfigError):
            open_scene(bad)


# ------------------------------------------------- intrinsics describe the depth image read ----
def test_folder_depth_of_another_size(tmp_path, views):
    """Without a stated size, a K for twice the depth's resolution is caught by its principal point;
    with the size after K in intrinsics.txt, a same-aspect depth image is a resized copy."""
    root = write_folder(tmp_path / "s", views)
    half = np.round(views[1].depth[::2, ::2] * 4000)
    Image.fromarray(half.astype(np.uint16)).save(root / "depth" / "0001.png")
    _expect_bad(FolderScene(root), 1, root / "depth" / "0001.png", "principal point")
    K = views[0].K
    (root / "intrinsics.txt").write_text(
        " ".join(repr(float(x)) for x in (K[0, 0], K[1, 1], K[0, 2], K[1, 2])) + f" {W} {H}\n"
    )
    v = FolderScene(root).view(1)
    np.testing.assert_allclose(v.K[0, 0], K[0, 0] / 2, rtol=1e-12)
    np.testing.assert_allclose(v.K[1, 2], (K[1, 2] + 0.5) / 2 - 0.5, rtol=1e-12)
    np.testing.assert_array_equal(FolderScene(root).view(2).K, K)
    Image.fromarray(np.full((H, H), 4000, np.uint16)).save(root / "depth" / "0002.png")
    Image.fromarray(np.zeros((H, H, 3), np.uint8)).save(root / "color" / "0002.png")
    _expect_bad(FolderScene(root), 2, root / "depth" / "0002.png", "another aspect ratio")
    (root / "intrinsics.txt").write_text("1 1 0 0 40.5 30\n")
    with pytest.raises(BadFrame, match="positive integers"):
        FolderScene(root)


def test_redwood_camera_json_size_is_enforced(tmp_path, views):
    root = write_redwood(tmp_path / "r", views, views[0].K)
    Image.fromarray(np.round(views[2].depth[::2, ::2] * 1000).astype(np.uint16)).save(
        root / "depth" / "00002.png"
    )
    _expect_bad(Redwood(root), 2, root / "depth" / "00002.png", "intrinsics are for a 40x30 image")
    assert Redwood(root).view(1).K.shape == (3, 3)
