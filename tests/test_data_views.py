"""validate_view: the one place that checks shapes, dtypes, finiteness, units and rigidity."""

import numpy as np
import pytest

from gasp.data.views import BadFrame, SceneReader, View, validate_view
from gasp.errors import BadInputError


def make_view(**over) -> View:
    rng = np.random.default_rng(0)
    fields = dict(
        image=rng.integers(0, 255, (48, 64, 3), dtype=np.uint8),
        depth=rng.uniform(0.5, 4.0, (48, 64)).astype(np.float32),
        K=np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]]),
        cam_to_world=np.eye(4),
        frame_id="f0",
        index=0,
        source="mem://f0",
    )
    fields.update(over)
    return View(**fields)


def rotation_z(deg: float) -> np.ndarray:
    a = np.radians(deg)
    T = np.eye(4)
    T[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    return T


def test_valid_view_is_normalised():
    depth = np.full((48, 64), 2.0, dtype=np.float64)
    depth[0, 0], depth[1, 1], depth[2, 2] = np.nan, np.inf, -np.inf
    K32 = np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]], np.float32)
    v = validate_view(make_view(depth=depth, K=K32))
    assert v.depth.dtype == np.float32 and v.K.dtype == np.float64 and v.cam_to_world.dtype == np.float64
    assert v.depth[0, 0] == 0 and v.depth[1, 1] == 0 and v.depth[2, 2] == 0 and v.depth[3, 3] == 2.0


def test_rigid_rotation_passes_and_integer_depth_is_accepted():
    T = rotation_z(30)
    T[:3, 3] = [1.0, -2.0, 0.5]
    v = validate_view(make_view(cam_to_world=T, depth=np.full((48, 64), 3, np.uint16)))
    assert v.depth.dtype == np.float32 and float(v.depth[0, 0]) == 3.0


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"image": np.zeros((48, 64), np.uint8)}, "image must be"),
        ({"image": np.zeros((48, 64, 3), np.float32)}, "image must be"),
        ({"image": np.zeros((48, 64, 4), np.uint8)}, "image must be"),
        ({"depth": np.ones((48, 64, 1), np.float32)}, "2-D"),
        ({"depth": np.zeros((48, 64), np.float32)}, "no valid pixel"),
        ({"depth": np.full((48, 64), np.nan, np.float32)}, "no valid pixel"),
        ({"depth": -np.ones((48, 64), np.float32)}, "negative"),
        ({"depth": np.full((48, 64), 1500.0, np.float32)}, "millimetres"),
        ({"image": np.zeros((48, 48, 3), np.uint8)}, "aspect ratio"),
        ({"K": np.eye(3)[:2]}, "finite 3x3"),
        ({"K": np.array([[np.nan, 0, 1], [0, 1, 1], [0, 0, 1]])}, "finite 3x3"),
        ({"K": np.array([[-50.0, 0, 1], [0, 50, 1], [0, 0, 1]])}, "fx, fy > 0"),
        ({"K": np.array([[50.0, 0, 1], [0, 0, 1], [0, 0, 1]])}, "fx, fy > 0"),
        ({"K": np.array([[50.0, 0, 1], [0, 50, 1], [0, 0, 2]])}, "fx, fy > 0"),
        ({"cam_to_world": np.eye(3)}, "4x4"),
        ({"cam_to_world": np.full((4, 4), -np.inf)}, "not finite"),
        ({"cam_to_world": np.where(np.eye(4) > 0, np.nan, 0.0)}, "not finite"),
        ({"cam_to_world": np.diag([2.0, 1.0, 1.0, 1.0])}, "not rigid"),
        ({"cam_to_world": np.diag([-1.0, 1.0, 1.0, 1.0])}, "not rigid"),
        ({"cam_to_world": np.array([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]])}, "not rigid"),
    ],
)
def test_bad_views_raise_bad_frame_with_source_and_reason(over, reason):
    with pytest.raises(BadFrame) as e:
        validate_view(make_view(**over))
    assert reason in e.value.reason
    assert e.value.path == "mem://f0"
    assert str(e.value).startswith("mem://f0: ")
    assert isinstance(e.value, BadInputError)


def test_colour_may_have_another_resolution_with_the_same_aspect():
    v = validate_view(make_view(image=np.zeros((96, 128, 3), np.uint8)))
    assert v.image.shape == (96, 128, 3) and v.depth.shape == (48, 64)


class _Two(SceneReader):
    name = "two"

    def __init__(self, bad: int) -> None:
        self.frame_ids = ["a", "b"]
        self.bad = bad

    def _load_view(self, i: int) -> View:
        pose = np.full((4, 4), -np.inf) if i == self.bad else np.eye(4)
        return make_view(frame_id=self.frame_ids[i], index=i, cam_to_world=pose, source=f"two/{i}")


def test_scene_reader_validates_every_view_and_checks_bounds():
    r = _Two(bad=1)
    assert len(r) == 2 and r.view(0).frame_id == "a" and r.view(-2).frame_id == "a"
    with pytest.raises(BadFrame, match="two/1: pose is not finite"):
        r.view(1)
    with pytest.raises(BadFrame):
        list(r.views())
    with pytest.raises(IndexError, match="out of range"):
        r.view(2)
    assert [v.index for v in _Two(bad=5).views()] == [0, 1]


def test_intrinsics_are_scaled_to_the_depth_only_where_the_format_says_so():
    K = np.array([[100.0, 0, 63.5], [0, 100.0, 47.5], [0, 0, 1]])  # for 128x96
    v = validate_view(make_view(K=K, intrinsics_hw=(96, 128), scale_intrinsics=True))
    np.testing.assert_allclose(v.K, [[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])
    assert v.intrinsics_hw == (48, 64)
    with pytest.raises(BadFrame, match="depth image is 64x48 but the intrinsics are for a 128x96 image"):
        validate_view(make_view(K=K, intrinsics_hw=(96, 128)))
    with pytest.raises(BadFrame, match="another aspect ratio"):
        validate_view(make_view(K=K, intrinsics_hw=(96, 96), scale_intrinsics=True))
    with pytest.raises(BadFrame, match="principal point"):
        validate_view(make_view(K=K))  # size not stated: caught by the principal point
