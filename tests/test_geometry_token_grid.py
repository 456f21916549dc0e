import numpy as np
import pytest
import torch

from gasp.geometry.sampling import overlap_fraction
from gasp.geometry.token_grid import cell_median_depth, cell_of, token_targets
from gasp.geometry.tracks import grid_points


def plane_sequence(hw, shifts_uv, Z=2.0, f=64.0):
    """Fronto-parallel plane at depth Z; frame k's camera moves so the image shifts by -shifts_uv[k]."""
    H, W = hw
    K = np.array([[f, 0.0, W / 2], [0.0, f, H / 2], [0.0, 0.0, 1.0]])
    F = len(shifts_uv)
    poses = np.stack([np.eye(4)] * F)
    poses[:, :2, 3] = np.asarray(shifts_uv, dtype=np.float64) * Z / f
    return np.full((F, H, W), Z, np.float32), np.stack([K] * F), poses


def test_one_cell_shift_on_integer_cells():
    # 128 x 96 image, 8 x 6 grid: 16 px cells; frame 1 shifts the image left by exactly one cell.
    depths, Ks, poses = plane_sequence((96, 128), [(0, 0), (16, 0), (0, -16)])
    t = token_targets(depths, Ks, poses, (6, 8))
    N = 48
    assert t.match_index.shape == (3, N) and t.match_subcell.shape == (3, N, 2)
    assert t.token_depth.shape == (3, 6, 8) and t.match_index.dtype == torch.int64
    idx = torch.arange(N)
    r, c = idx // 8, idx % 8
    torch.testing.assert_close(t.match_index[0], idx)  # query frame: identity
    assert t.valid[0].all()
    exp1 = torch.where(c >= 1, idx - 1, -1)
    torch.testing.assert_close(t.match_index[1], exp1)
    torch.testing.assert_close(t.valid[1], c >= 1)
    exp2 = torch.where(r <= 4, idx + 8, -1)  # image moves down one cell
    torch.testing.assert_close(t.match_index[2], exp2)
    valid = t.valid[1:]
    torch.testing.assert_close(t.match_subcell[1:][valid], torch.full((int(valid.sum()), 2), 0.5))
    assert (t.match_subcell[1:][~valid] == 0).all() and (t.match_depth[1:][~valid] == 0).all()
    np.testing.assert_allclose(t.match_depth[t.valid].numpy(), 2.0)
    np.testing.assert_allclose(t.token_depth.numpy(), 2.0)
    np.testing.assert_allclose(overlap_fraction(t).numpy(), [1.0, 42 / 48, 40 / 48])


def test_non_integer_cells_and_fractional_shift():
    H, W, grid = 100, 150, (7, 11)
    shift = (5.3, -3.1)
    depths, Ks, poses = plane_sequence((H, W), [(0, 0), shift])
    t = token_targets(depths, Ks, poses, grid)
    centres = grid_points((H, W), grid).numpy()
    uv_b = centres - np.array(shift)
    # Expected cell and sub-cell straight from the cell boundaries: column c spans [c W/gw, (c+1) W/gw).
    pos = (uv_b + 0.5) * np.array([grid[1] / W, grid[0] / H])
    cell = np.floor(pos)
    exp_index = cell[:, 1] * grid[1] + cell[:, 0]
    exp_valid = (uv_b[:, 0] >= 4) & (uv_b[:, 0] <= W - 5) & (uv_b[:, 1] >= 4) & (uv_b[:, 1] <= H - 5)
    np.testing.assert_array_equal(t.valid[1].numpy(), exp_valid)
    np.testing.assert_array_equal(t.match_index[1].numpy(), np.where(exp_valid, exp_index, -1))
    np.testing.assert_allclose(t.match_subcell[1].numpy()[exp_valid], (pos - cell)[exp_valid], atol=1e-4)
    assert exp_valid.mean() > 0.5 and not exp_valid.all()
    # The query frame's centres sit in the middle of their own cells.
    np.testing.assert_allclose(t.match_subcell[0].numpy(), 0.5, atol=1e-5)


def test_query_frame_invalid_depth_and_other_query_frame():
    depths, Ks, poses = plane_sequence((96, 128), [(0, 0), (16, 0)])
    depths[1, 40, 72] = 0.0  # centre pixel of cell (2, 4) of frame 1 (u = 71.5 -> 72, v = 39.5 -> 40)
    t = token_targets(depths, Ks, poses, (6, 8), query_frame=1)
    assert t.query_frame == 1
    assert not t.valid[1, 2 * 8 + 4] and t.match_index[1, 2 * 8 + 4] == -1
    assert int(t.valid[1].sum()) == 47
    # From frame 1 back to frame 0 the image moves right by one cell.
    assert t.match_index[0, 0] == 1 and not t.valid[0, 7]


@pytest.mark.parametrize("H, W", [(37, 53), (40, 56)])  # fractional cells; whole 8x8-pixel cells
def test_cell_median_depth_matches_numpy(H, W):
    rng = np.random.default_rng(0)
    grid = (5, 7)
    depth = rng.uniform(0.5, 4.0, size=(2, H, W)).astype(np.float32)
    depth[0, rng.random((H, W)) < 0.3] = 0.0
    depth[1, :8, :8] = np.nan  # cell (0, 0) of frame 1 has no valid pixel
    depth[1, 15:30, 15:30] = np.inf  # whole cells of non-finite depth are ignored, not medianed
    out = cell_median_depth(depth, grid).numpy()
    rows = np.floor((np.arange(H) + 0.5) * grid[0] / H).astype(int)
    cols = np.floor((np.arange(W) + 0.5) * grid[1] / W).astype(int)
    for f in range(2):
        for r in range(grid[0]):
            for c in range(grid[1]):
                vals = depth[f][np.ix_(rows == r, cols == c)].ravel()
                vals = np.sort(vals[np.isfinite(vals) & (vals > 0)])
                expected = vals[(len(vals) - 1) // 2] if len(vals) else 0.0
                assert out[f, r, c] == expected, (f, r, c)
    assert out[1, 0, 0] == 0.0


def test_cell_of_and_errors():
    idx, sub = cell_of(np.array([[-0.5, -0.5], [15.49, 0.0], [15.5, 31.5], [127.4, 95.4]]), (96, 128), (6, 8))
    assert idx.tolist() == [0, 0, 2 * 8 + 1, 47]  # (15.5, 31.5): edges 16 and 32 start col 1, row 2
    np.testing.assert_allclose(sub.numpy()[2], [0.0, 0.0], atol=1e-6)
    depths, Ks, poses = plane_sequence((96, 128), [(0, 0)])
    with pytest.raises(ValueError, match="grid"):
        token_targets(depths, Ks, poses, (200, 8))
