"""Synthetic rooms: determinism, exact depth, camera paths, view-independent textures, captions."""

import numpy as np
import pytest

from gasp.data import open_scene
from gasp.data.synthetic import NUM_ROOM_FACES, SyntheticScene
from gasp.data.synthetic_camera import _max_rotation_deg
from gasp.data.views import validate_view
from gasp.errors import ConfigError


@pytest.fixture(scope="module")
def scene() -> SyntheticScene:
    return SyntheticScene(3, num_frames=48, height=96, width=128)


def pixel_rays(K: np.ndarray, T: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """World directions (N, 3), float64, of rays through pixels ``uv`` with camera z component 1."""
    d_cam = np.concatenate([uv, np.ones((len(uv), 1))], 1) @ np.linalg.inv(K).T
    return d_cam @ T[:3, :3].T


def test_deterministic_per_seed_and_seeds_differ():
    a, b, c = (
        SyntheticScene(11, num_frames=8),
        SyntheticScene(11, num_frames=8),
        SyntheticScene(12, num_frames=8),
    )
    np.testing.assert_array_equal(a.poses, b.poses)
    np.testing.assert_array_equal(a.view(5).image, b.view(5).image)
    assert a.caption() == b.caption()
    assert not np.allclose(a.poses, c.poses)
    longer = SyntheticScene(11, num_frames=29, height=40, width=96)  # same path and caption
    np.testing.assert_allclose(longer.poses[::4], a.poses, atol=1e-9)
    assert longer.caption() == a.caption()
    assert np.abs(a.view(0).image.astype(int) - c.view(0).image).mean() > 10


def test_views_are_valid_and_depth_is_exact_z(scene):
    v = scene.view(7)
    assert v.image.shape == (96, 128, 3) and v.depth.shape == (96, 128) and v.frame_id == "frame-000007"
    assert validate_view(v) is v and (v.depth > 0.05).all()
    np.testing.assert_allclose(v.K[:2, 2], [63.5, 47.5])  # pixel centres at integers
    # every depth pixel unprojected to the world lies on the surface the exact ray cast reports
    rows, cols = np.mgrid[0:96:5, 0:128:5]
    uv = np.stack([cols.ravel(), rows.ravel()], -1).astype(float)
    T = v.cam_to_world
    d = pixel_rays(v.K, T, uv)
    t, hit = scene.raycast(T[:3, 3], d)
    np.testing.assert_allclose(v.depth[rows.ravel(), cols.ravel()], t, rtol=1e-5)
    world = T[:3, 3] + v.depth[rows.ravel(), cols.ravel(), None] * d
    size = scene.layout.size
    np.testing.assert_allclose(world[hit == 0, 2], 0.0, atol=1e-4)  # floor
    np.testing.assert_allclose(world[hit == 1, 2], size[2], atol=1e-4)  # ceiling
    np.testing.assert_allclose(world[hit == 3, 0], size[0], atol=1e-4)  # wall x = Lx
    assert (hit >= 0).all() and (hit == 0).any()


def test_raycast_exact_hits():
    scene = SyntheticScene(4, num_frames=2)
    lx, ly, lz = scene.layout.size
    o = np.array([[0.3, 0.3, 1.0]] * 2)
    t, hit = scene.raycast(o, np.array([[0.0, 0.0, -2.0], [0.0, 0.0, 1.0]]))
    np.testing.assert_allclose(t, [0.5, lz - 1.0])
    assert hit.tolist() == [0, 1]
    spheres = [(k, p) for k, p in enumerate(scene.prims) if type(p).__name__ == "_Sphere"]
    assert spheres, "seed 4 has a ball"
    k, ball = spheres[0]
    origin = ball.centre + np.array([0.0, 0.0, 0.9])  # straight above the ball
    t, hit = scene.raycast(origin, np.array([[0.0, 0.0, -1.0]]))
    assert hit[0] == NUM_ROOM_FACES + k and scene.prim_object[k] >= 0
    np.testing.assert_allclose(t[0], 0.9 - ball.radius, atol=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2, 5, 9])
def test_camera_paths_are_smooth_inside_the_room_and_move(seed):
    s = SyntheticScene(seed, num_frames=64)
    pos = s.poses[:, :3, 3]
    assert s._free(pos[:, :2], 0.2).all(), "camera too close to a wall or inside an object footprint"
    assert ((pos[:, 2] > 0.8) & (pos[:, 2] < s.layout.size[2] - 0.5)).all()
    steps = np.linalg.norm(np.diff(pos, axis=0), axis=1)
    assert steps.sum() > 1.5, "the camera should travel metres"
    assert steps.max() < 3 * np.median(steps), "no jumps"
    total_rot = _max_rotation_deg(s.poses)
    assert 10 < total_rot <= 75.0 + 1e-6, total_rot
    rel = np.einsum("nji,njk->nik", s.poses[:-1, :3, :3], s.poses[1:, :3, :3])
    step_rot = np.degrees(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert step_rot.max() < 6.0
    K = s.K * np.array([[0.25], [0.25], [1.0]])  # the same field of view at 32x32
    K[:2, 2] = 15.5
    for T in s.poses[::8]:  # looks into the room: nothing within 30 cm in view, median depth > 1.2 m
        d = s.render(K, T, 32, 32)[1]
        assert d.min() > 0.25 and np.median(d) > 1.0


def test_texture_is_anchored_in_3d(scene):
    """The same 3D point has the same colour from another camera: render a 1x1 image from frame b whose
    single pixel ray passes through the point seen at a pixel of frame a."""
    a, b = scene.view(0), scene.view(30)
    point_sampled, _ = scene.render(a.K, a.cam_to_world, 96, 128)  # views are antialiased; rays are not
    rng = np.random.default_rng(0)
    uv = np.stack([rng.integers(0, 128, 200), rng.integers(0, 96, 200)], -1).astype(float)
    Ta, Tb = a.cam_to_world, b.cam_to_world
    t, _ = scene.raycast(Ta[:3, 3], pixel_rays(a.K, Ta, uv))
    X = Ta[:3, 3] + t[:, None] * pixel_rays(a.K, Ta, uv)
    Xb = (X - Tb[:3, 3]) @ Tb[:3, :3]
    same = []
    for k in range(len(X)):
        if Xb[k, 2] <= 0.1:
            continue
        dist = np.linalg.norm(X[k] - Tb[:3, 3])
        tb, _ = scene.raycast(Tb[:3, 3], (X[k] - Tb[:3, 3])[None] / dist)
        if abs(tb[0] - dist) > 1e-4:  # occluded from b
            continue
        f = 100.0
        K1 = np.array([[f, 0, -f * Xb[k, 0] / Xb[k, 2]], [0, f, -f * Xb[k, 1] / Xb[k, 2]], [0, 0, 1]])
        img, depth = scene.render(K1, Tb, 1, 1)
        assert abs(depth[0, 0] - Xb[k, 2]) < 1e-4 * Xb[k, 2]
        same.append(np.abs(img[0, 0].astype(int) - point_sampled[int(uv[k, 1]), int(uv[k, 0])]).max())
    same = np.array(same)
    assert len(same) > 40
    assert np.median(same) <= 1 and (same <= 3).mean() > 0.9, same


def test_views_are_antialiased_with_exact_centre_depth(scene):
    """A view's pixel is the mean of its 3x3 sub-pixel rays (as a camera integrates over a pixel);
    its depth stays the exact z of the pixel-centre ray, so the geometry does not change."""
    v = scene.view(5)
    s = scene.antialias
    assert s == 3
    fine_K = v.K.copy()
    fine_K[:2] *= s
    fine_K[:2, 2] += 0.5 * s - 0.5
    fine, fine_depth = scene.render(fine_K, v.cam_to_world, 96 * s, 128 * s)  # point-sampled
    mean = fine.reshape(96, s, 128, s, 3).astype(float).mean((1, 3))
    assert np.abs(mean - v.image).max() <= 1.0  # rounding of the mean of unrounded colours
    np.testing.assert_allclose(v.depth, fine_depth[1::s, 1::s], rtol=1e-6)  # the very same rays
    centre, centre_depth = scene.render(v.K, v.cam_to_world, 96, 128)
    np.testing.assert_allclose(v.depth, centre_depth, rtol=1e-4)  # same rays up to float32 rounding
    assert np.abs(centre.astype(int) - v.image).mean() > 1.0  # antialiasing did change colours
    with pytest.raises(ConfigError, match="odd"):
        SyntheticScene(1, antialias=2)


def test_surfaces_vary_slowly_so_repeated_patterns_differ():
    """The colour variation is anchored to the surface and non-periodic: two points one tile period
    apart on the floor get different colours, though the tile pattern alone repeats exactly."""
    from gasp.data.synthetic_materials import _tint

    uv = np.random.default_rng(0).uniform(0, 4, (500, 2)).astype(np.float32)
    t0, t1 = _tint(uv, 5), _tint(uv + np.float32(1.0), 5)
    assert t0.min() >= 0.64 and t0.max() <= 1.36
    assert np.abs(t0 - t1).mean() > 0.05  # one metre apart: different
    assert np.abs(_tint(uv, 5) - t0).max() == 0  # deterministic per seed
    near = _tint(uv + np.float32(0.01), 5)
    assert np.abs(t0 - near).mean() < 0.02  # smooth: 1 cm apart, nearly the same


def test_caption_is_true_to_the_layout():
    for seed in range(6):
        s = SyntheticScene(seed, num_frames=4)
        cap = s.caption()
        lay = s.layout
        assert f"{lay.floor.words} floor" in cap and f"{lay.walls.words} walls" in cap
        assert f"about {lay.size[0]:.1f} m by {lay.size[1]:.1f} m" in cap
        for obj in lay.objects:
            assert f"{obj.material.words} {obj.kind}" in cap
        twins = sum(o.twin_of is not None for o in lay.objects)
        assert ("identical" in cap) == (twins > 0)
        # direction words agree with the first camera
        w2c = np.linalg.inv(s.poses[0])
        grouped = {o.twin_of for o in lay.objects} | {
            k for k, o in enumerate(lay.objects) if o.twin_of is not None
        }
        for k, obj in enumerate(lay.objects):
            x, _, z = w2c[:3, :3] @ obj.centre + w2c[:3, 3]
            if z > 0 and abs(np.degrees(np.arctan2(x, z))) > 15 and k not in grouped:
                side = "on the left" if x < 0 else "on the right"
                noun = f"{obj.material.words} {obj.kind}"
                rest = cap.split(noun, 1)[1]
                assert rest.strip().startswith(side), (cap, noun)


def test_layout_has_repeats_and_distinct_objects():
    kinds, twins = set(), 0
    for seed in range(6):
        lay = SyntheticScene(seed, num_frames=2).layout
        kinds |= {o.kind for o in lay.objects}
        twins += sum(o.twin_of is not None for o in lay.objects)
        for o in lay.objects:
            if o.twin_of is not None:
                src = lay.objects[o.twin_of]
                assert o.material is src.material and np.linalg.norm(o.centre - src.centre) > 0.5
    assert kinds >= {"crate", "cabinet", "table", "ball", "barrel"} and twins >= 3


def test_open_scene_synthetic_and_config_errors():
    s = open_scene("synthetic:7")
    assert isinstance(s, SyntheticScene) and len(s) == 96 and s.view(0).image.shape == (128, 128, 3)
    with pytest.raises(ConfigError, match="fov_deg"):
        SyntheticScene(1, fov_deg=200)
    with pytest.raises(ConfigError, match="num_frames"):
        SyntheticScene(1, num_frames=0)
