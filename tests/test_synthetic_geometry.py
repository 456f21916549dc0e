"""gasp.geometry.reproject against the synthetic scene's exact geometry.

For a pixel of frame a, casting its ray gives the exact 3D point; projecting that point into frame b
is the ground-truth match. reproject, fed only the rendered (noise-free) depth maps, must agree to
0.01 px, and must reject points that frame b sees hidden behind something nearer (occlusion).
"""

import numpy as np
import pytest

from gasp.data.synthetic import NUM_ROOM_FACES, SyntheticScene
from gasp.geometry.reproject import reproject

H, W, BORDER = 96, 128, 4


@pytest.fixture(scope="module")
def pair():
    scene = SyntheticScene(1, num_frames=40, height=H, width=W)
    return scene, scene.view(0), scene.view(39)


def exact_match(scene, a, b):
    """Per pixel of a: exact uv in b (H, W, 2), z in b, and whether b sees that very point (not occluded)."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    uv1 = np.stack([u.ravel(), v.ravel(), np.ones(H * W)], -1)
    Ta, Tb = a.cam_to_world, b.cam_to_world
    d = uv1 @ np.linalg.inv(a.K).T @ Ta[:3, :3].T
    t, _ = scene.raycast(Ta[:3, 3], d)
    X = Ta[:3, 3] + t[:, None] * d  # exact 3D points (float64)
    Xb = (X - Tb[:3, 3]) @ Tb[:3, :3]
    uvb = Xb[:, :2] / Xb[:, 2:] * np.diag(b.K)[:2] + b.K[:2, 2]
    to_x = X - Tb[:3, 3]
    dist = np.linalg.norm(to_x, axis=1)
    tb, hit_b = scene.raycast(Tb[:3, 3], to_x / dist[:, None])
    seen = tb > dist * (1 - 1e-6)
    return (
        uvb.reshape(H, W, 2),
        Xb[:, 2].reshape(H, W),
        seen.reshape(H, W),
        tb.reshape(H, W),
        hit_b.reshape(H, W),
    )


def test_reproject_matches_exact_geometry(pair):
    scene, a, b = pair
    uv_exact, z_exact, seen, _, _ = exact_match(scene, a, b)
    uv_b, valid = reproject(a.depth, a.K, a.cam_to_world, b.depth, b.K, b.cam_to_world, border=BORDER)
    uv_b, valid = uv_b.numpy().astype(np.float64), valid.numpy()
    inside = (
        (z_exact > 0)
        & (uv_exact[..., 0] >= BORDER)
        & (uv_exact[..., 0] <= W - 1 - BORDER)
        & (uv_exact[..., 1] >= BORDER)
        & (uv_exact[..., 1] <= H - 1 - BORDER)
    )
    front = z_exact > 0
    err = np.abs(uv_b[front] - uv_exact[front]).max()
    assert err < 0.01, f"reprojection differs from exact geometry by {err:.4f} px"
    assert inside.mean() > 0.3, "the test needs an overlapping pair"
    # visible points: valid except where the nearest-pixel depth of b straddles a depth edge
    agree = valid[inside & seen].mean()
    assert agree > 0.95, agree
    assert not valid[~inside].any()


def test_reproject_rejects_points_occluded_by_objects(pair):
    scene, a, b = pair
    uv_exact, z_exact, seen, tb, hit_b = exact_match(scene, a, b)
    _, valid = reproject(a.depth, a.K, a.cam_to_world, b.depth, b.K, b.cam_to_world, border=BORDER)
    valid = valid.numpy()
    inside = (z_exact > 0) & (uv_exact[..., 0] >= BORDER) & (uv_exact[..., 0] <= W - 1 - BORDER)
    inside &= (uv_exact[..., 1] >= BORDER) & (uv_exact[..., 1] <= H - 1 - BORDER)
    # hidden in b behind an object: the exact ray from b towards the point stops on an object at
    # least 10% nearer, and the object covers the 3x3 pixel centres around the point's position in b
    # (so it is not a silhouette pixel that may round onto the background)
    ui = np.clip(np.floor(uv_exact[..., 0] + 0.5), 1, W - 2).astype(int)
    vi = np.clip(np.floor(uv_exact[..., 1] + 0.5), 1, H - 2).astype(int)
    covered = np.ones((H, W), bool)
    for dv in (-1, 0, 1):
        for du in (-1, 0, 1):
            covered &= b.depth[vi + dv, ui + du] < 0.9 * z_exact
    hidden = inside & ~seen & (hit_b >= NUM_ROOM_FACES) & covered
    assert hidden.sum() >= 30, f"the pair should show occlusion by an object, got {hidden.sum()} pixels"
    assert not valid[hidden].any(), f"{valid[hidden].sum()} occluded points marked valid"
    assert valid[inside & seen].any(), "visible points stay valid"
