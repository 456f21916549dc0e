"""Structure-from-motion scenes: COLMAP (binary and text models) and DL3DV (nerfstudio transforms in
OpenGL axes, images_4, optional colmap/ in another world), with depth as ``gasp annotate`` writes it."""

import dataclasses
import json

import numpy as np
import pycolmap
import pytest
from scene_writers import (
    assert_reprojection_matches,
    colmap_points,
    save_rgb,
    write_annotated_depth,
    write_colmap_model,
    write_dl3dv,
)

from gasp.data import BadFrame, open_scene
from gasp.data.colmap import Colmap
from gasp.data.dl3dv import DL3DV
from gasp.data.registry import open_sfm_scene
from gasp.data.synthetic import SyntheticScene
from gasp.errors import BadInputError

H, W = 48, 64


@pytest.fixture(scope="module")
def views():
    scene = SyntheticScene(6, num_frames=4, height=H, width=W, path_length=1.5)
    return [scene.view(i) for i in range(4)]


def _annotate_with_truth(scene, views, depth_root=None):
    root = depth_root or scene.depth_root
    for i, v in enumerate(views):
        write_annotated_depth(root, scene.frame_ids[i], v.depth)


def write_colmap_scene(root, views, binary):
    names = [f"seq/{i:04d}.png" for i in range(len(views))]
    for n, v in zip(names, views):
        save_rgb(root / "images" / n, v.image)
    write_colmap_model(root / "sparse" / "0", views, names, binary)
    return root


def _seen_points_match(scene, views, i):
    """The scene's points of frame i project into frame i at their truth depth."""
    pts = scene.points(i)
    assert pts is not None and len(pts) >= 20
    T = np.linalg.inv(views[i].cam_to_world)
    cam = pts @ T[:3, :3].T + T[:3, 3]
    uv = cam[:, :2] / cam[:, 2:] * [views[i].K[0, 0], views[i].K[1, 1]] + views[i].K[:2, 2]
    r, c = np.round(uv[:, 1]).astype(int), np.round(uv[:, 0]).astype(int)
    np.testing.assert_allclose(cam[:, 2], views[i].depth[r, c], rtol=0.02)


@pytest.mark.parametrize("binary", [True, False])
def test_colmap_binary_and_text(tmp_path, views, binary):
    root = write_colmap_scene(tmp_path / "scene", views, binary)
    with pytest.raises(BadFrame, match="run `gasp annotate"):
        open_scene(root).view(0)
    scene = open_sfm_scene(root)
    assert isinstance(scene, Colmap) and scene.frame_ids == [f"seq__{i:04d}" for i in range(4)]
    for i, t in enumerate(views):
        p = scene.posed_image(i)
        np.testing.assert_allclose(p.K, t.K, rtol=1e-12)  # COLMAP's half-pixel convention undone
        np.testing.assert_allclose(p.cam_to_world, t.cam_to_world, atol=1e-9)
        np.testing.assert_array_equal(p.image, t.image)
    _seen_points_match(scene, views, 1)
    _annotate_with_truth(scene, views)
    read = [open_scene(root).view(i) for i in range(4)]
    assert_reprojection_matches(read[0], read[2], views[0], views[2])


def test_colmap_distortion_is_removed(tmp_path, views):
    """An OPENCV camera: the image on disk is distorted; the reader returns the pinhole view. The
    images are colour ramps (red = 4u, green = 5v of the pinhole pixel), which bilinear sampling
    reproduces exactly, so every undistorted pixel must show its own coordinates."""
    from gasp.data.remap import pixel_grid, remap_bilinear

    root = tmp_path / "d"
    K = views[0].K
    params = [K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5, -0.25, 0.05, 0.001, -0.002]
    cam = pycolmap.Camera.create_from_model_name(1, "OPENCV", 1.0, W, H)
    cam.params = params
    grid = pixel_grid((H, W))
    ramp = np.stack([4 * grid[..., 0], 5 * grid[..., 1], np.full((H, W), 128.0)], -1).astype(np.uint8)
    rays = np.asarray(cam.cam_from_img(grid[..., :2].reshape(-1, 2) + 0.5))  # distorted pixel -> ray
    src = (np.c_[rays, np.ones(len(rays))] @ K.T)[:, :2].reshape(H, W, 2)  # -> pinhole pixel
    names = [f"{i}.png" for i in range(4)]
    for n in names:
        save_rgb(root / "images" / n, remap_bilinear(ramp, src))
    cameras = [(4, "OPENCV", W, H, params)] * 4
    write_colmap_model(root / "sparse" / "0", views, names, binary=True, cameras=cameras)
    p = open_sfm_scene(root).posed_image(2)
    np.testing.assert_allclose(p.K, K, rtol=1e-12)
    inner = (slice(4, -4), slice(4, -4))
    err = np.abs(p.image[inner][..., :2].astype(int) - ramp[inner][..., :2])
    assert err.max() <= 2, err.max()
    distorted = np.asarray(__import__("PIL.Image").Image.open(root / "images" / names[2]))
    assert np.abs(distorted[inner][..., :2].astype(int) - ramp[inner][..., :2]).max() > 8


def test_dl3dv_opengl_axes_images_4_and_colmap_in_another_world(tmp_path, views):
    root = write_dl3dv(tmp_path / "1K" / "0a1b", views, factor=4)
    # colmap/ in its own world: x_col = R^T (x - t) / s
    s, t = 2.5, np.array([0.3, -1.0, 2.0])
    a = np.radians(40)
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    to_col = lambda X: (X - t) @ R / s  # noqa: E731
    col_views = []
    for v in views:
        c2w = np.eye(4)
        c2w[:3, :3] = R.T @ v.cam_to_world[:3, :3]
        c2w[:3, 3] = to_col(v.cam_to_world[:3, 3])
        col_views.append(dataclasses.replace(v, cam_to_world=c2w))
    pts = [(to_col(X), obs) for X, obs in colmap_points(views)]
    names = [f"frame_{i + 1:05d}.png" for i in range(4)]
    write_colmap_model(root / "colmap" / "sparse" / "0", col_views, names, binary=False, points=pts)
    scene = open_sfm_scene(root)
    assert isinstance(scene, DL3DV) and scene.images == "images_4" and scene.has_points()
    for i, tv in enumerate(views):
        p = scene.posed_image(i)
        np.testing.assert_allclose(p.K, tv.K, rtol=1e-9)  # w x h is 4x the files: scaled
        np.testing.assert_allclose(p.cam_to_world, tv.cam_to_world, atol=1e-9)  # OpenGL -> OpenCV
    _seen_points_match(scene, views, 2)
    # annotate into another folder: that folder then opens as the scene with depth
    out = tmp_path / "annotations" / "0a1b"
    sc = open_sfm_scene(root, depth_root=out / "gasp_depth")
    _annotate_with_truth(sc, views)
    (out / "gasp_depth" / "report.json").write_text(
        json.dumps({"scene": str(root), "format": "dl3dv", "images": "images_4"})
    )
    again = open_scene(out)
    assert isinstance(again, DL3DV) and again.depth_root == out / "gasp_depth"
    assert_reprojection_matches(again.view(3), again.view(1), views[3], views[1])


def test_dl3dv_colmap_from_another_reconstruction_is_refused(tmp_path, views):
    root = write_dl3dv(tmp_path / "s", views, factor=2)
    shuffled = [
        dataclasses.replace(v, cam_to_world=views[(i + 1) % 4].cam_to_world) for i, v in enumerate(views)
    ]
    names = [f"frame_{i + 1:05d}.png" for i in range(4)]
    write_colmap_model(root / "colmap" / "sparse" / "0", shuffled, names, binary=True)
    with pytest.raises(BadFrame, match="different reconstructions"):
        DL3DV(root)


def test_sfm_bad_input(tmp_path, views):
    root = write_dl3dv(tmp_path / "s", views, factor=4)
    meta = json.loads((root / "transforms.json").read_text())
    meta["frames"][1]["transform_matrix"][0][3] = float("inf")
    (root / "transforms.json").write_text(json.dumps(meta))
    (root / "images_4" / "frame_00003.png").write_bytes(b"broken")
    save_rgb(root / "images_4" / "frame_00004.png", views[3].image[:, :H])  # square: wrong aspect
    scene = open_sfm_scene(root)
    _annotate_with_truth(scene, views)
    with pytest.raises(BadFrame, match="pose is not finite"):
        scene.view(1)
    with pytest.raises(BadFrame, match="corrupt or truncated") as e:
        scene.view(2)
    assert e.value.path.endswith("frame_00003.png")
    with pytest.raises(BadFrame, match="another aspect ratio"):
        scene.view(3)
    write_annotated_depth(scene.depth_root, scene.frame_ids[0], views[0].depth[::2, ::2])
    v = scene.view(0)  # annotated depth at half resolution: K scaled to it
    np.testing.assert_allclose(v.K[0, 0], views[0].K[0, 0] / 2, rtol=1e-9)
    (scene.depth_root / "depth" / f"{scene.frame_ids[0]}.png").unlink()
    (scene.depth_root / "frames.jsonl").write_text(
        json.dumps({"frame": scene.frame_ids[0], "status": "dropped", "reason": "residual 0.3 > 0.1"})
        + "\n{cut"
    )
    with pytest.raises(BadFrame, match="gasp annotate left this frame without depth: residual 0.3 > 0.1"):
        DL3DV(root).view(0)
    with pytest.raises(BadInputError, match="has depth already"):
        open_sfm_scene(f"folder:{root}")
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "sparse" / "0").mkdir(parents=True)
    (empty / "sparse" / "0" / "cameras.txt").write_text("")
    with pytest.raises(BadFrame, match="COLMAP"):
        open_scene(empty)
