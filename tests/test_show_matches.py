"""gasp show-matches and the shared drawing helpers of gasp.viz."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from prepared_scenes import tiny_config, write_folder_scene

from gasp import constants as C
from gasp import viz
from gasp.cli import main
from gasp.data.prepare import prepare
from gasp.data.show_matches import GAP, ShowMatchesConfig, match_figure, show_matches
from gasp.errors import ConfigError


def expected_size(hw: tuple[int, int], scale: int) -> tuple[int, int]:
    """(width, height) of the show-matches PNG: two rows of titled side-by-side panels."""
    h, w = hw[0] * scale, hw[1] * scale
    return 2 * w + GAP, 2 * (viz.TITLE_HEIGHT + h) + GAP


def shifted_sequence(hw=(16, 24), grid=(2, 3)) -> dict:
    """Two frames where every anchor cell matches the cell to its right (last column: no match)."""
    gh, gw = grid
    n = gh * gw
    r, c = np.divmod(np.arange(n), gw)
    valid = c < gw - 1
    rng = np.random.default_rng(0)
    return {
        C.FRAMES: rng.integers(0, 256, (2, *hw, 3), dtype=np.uint8),
        C.FRAME_INDEX: np.array([10, 12]),
        C.TOKEN_DEPTH: np.ones((2, gh, gw), np.float32),
        C.MATCH_INDEX: np.stack([np.arange(n), np.where(valid, np.arange(n) + 1, -1)]),
        C.MATCH_VALID: np.stack([np.ones(n, bool), valid]),
        C.MATCH_SUBCELL: np.full((2, n, 2), 0.5, np.float32),
        C.TRACK_QUERY_UV: np.array([[2.0, 3.0], [10.0, 8.0]], np.float32),
        C.TRACK_UV: np.array([[[2.0, 3.0], [6.0, 3.0]], [[10.0, 8.0], [np.nan, np.nan]]], np.float32),
        C.TRACK_VISIBLE: np.array([[True, True], [True, False]]),
    }


def test_flow_colours_direction_length_and_invalid():
    flow = np.array([[0.0, 0.0], [4.0, 0.0], [-4.0, 0.0], [2.0, 0.0], [1.0, 1.0]])
    rgb = flow_rgb = viz.flow_to_rgb(flow, valid=[True, True, True, True, False], max_magnitude=4.0)
    assert tuple(rgb[0]) == (255, 255, 255)  # no motion: white
    assert tuple(rgb[1]) == (255, 0, 0)  # right, full length: red
    assert tuple(rgb[2]) == (0, 255, 255)  # left: cyan
    assert rgb[3, 0] == 255 and 100 < rgb[3, 1] < 160  # half length: pale red
    assert tuple(flow_rgb[4]) == viz.INVALID_GREY


def test_token_displacement_uses_cell_geometry():
    seq = shifted_sequence()
    disp, valid = viz.token_displacement(
        seq[C.MATCH_INDEX][1], seq[C.MATCH_VALID][1], (2, 3), (16, 24), seq[C.MATCH_SUBCELL][1]
    )
    assert valid.tolist() == [[True, True, False], [True, True, False]]
    np.testing.assert_allclose(disp[valid], [[8.0, 0.0]] * 4, atol=1e-5)  # one 8-px cell to the right
    assert (disp[~valid] == 0).all()


def test_match_figure_draws_lines_and_flow_panel():
    seq = shifted_sequence()
    fig = match_figure(seq, 1, scale=2)
    assert fig.shape[1::-1] == expected_size((16, 24), 2)
    # bottom-right panel: flow colours upsampled; a valid cell is red (right), the last column grey
    top = viz.TITLE_HEIGHT + 16 * 2 + GAP + viz.TITLE_HEIGHT
    left = 24 * 2 + GAP
    assert tuple(fig[top + 4, left + 4]) == (255, 0, 0)
    assert tuple(fig[top + 4, left + 2 * 2 * 8 + 4]) == viz.INVALID_GREY
    # the one visible track is drawn as a line between the two frames; the invisible one is not
    plain = viz.stack(
        [viz.resize_nearest(seq[C.FRAMES][0], 2), viz.resize_nearest(seq[C.FRAMES][1], 2)], gap=GAP
    )
    drawn = fig[viz.TITLE_HEIGHT : viz.TITLE_HEIGHT + 32]
    changed = (drawn != plain).any(-1)
    assert changed[:, 30:60].any()  # the line crosses the gap between the frames
    assert not changed[12:, :].any()  # nothing drawn below the line's row (the second track is hidden)
    with pytest.raises(ConfigError, match="out of range"):
        match_figure(seq, 2)


def test_show_matches_on_a_scene_and_on_prepared_data(tmp_path):
    scene = write_folder_scene(tmp_path / "room", seed=5, num_frames=6)
    out = tmp_path / "scene.png"
    show_matches(
        ShowMatchesConfig(scene=str(scene), frames=(0, 2), grid=(4, 4), image_size=(32, 32), output=str(out))
    )
    with Image.open(out) as im:
        assert im.size == expected_size((32, 32), 2) and im.mode == "RGB"

    cfg = tiny_config(tmp_path / "prepared", [scene])
    prepare(cfg)
    png = tmp_path / "prepared.png"
    argv = [
        "show-matches",
        "--data",
        cfg.output,
        "--grid",
        "4",
        "4",
        "--image-size",
        "32",
        "32",
        "--index",
        "1",
        "--frames",
        "0",
        "1",
        "--scale",
        "3",
        "--output",
        str(png),
    ]
    assert main(argv) == 0
    with Image.open(png) as im:
        assert im.size == expected_size((32, 32), 3)
    assert main(["show-matches", "--data", cfg.output, "--frames", "1", "2", "--output", str(png)]) == 2
    assert main(["show-matches", "--data", cfg.output, "--frames", "0", "99", "--output", str(png)]) == 2
    assert main(["show-matches", "--output", str(png)]) == 2


def test_show_matches_on_real_7scenes(shared_data, tmp_path):
    out = tmp_path / "kitchen.png"
    scene = shared_data / "rgbd" / "7scenes-redkitchen"
    show_matches(
        ShowMatchesConfig(
            scene=str(scene), frames=(0, 20), grid=(6, 8), image_size=(168, 224), scale=1, output=str(out)
        )
    )
    with Image.open(out) as im:
        assert im.size == expected_size((168, 224), 1)
