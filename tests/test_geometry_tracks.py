import math

import numpy as np
import pytest
import torch

from gasp.geometry.tracks import compute_tracks, follow_points, grid_points

H, W = 96, 128
K = np.array([[64.0, 0.0, 64.0], [0.0, 64.0, 48.0], [0.0, 0.0, 1.0]])


def shifted_frames(shifts_px, Z=2.0):
    """Frames of a fronto-parallel plane at depth Z; camera f moves so the image shifts by -shifts_px[f]."""
    F = len(shifts_px)
    poses = np.stack([np.eye(4)] * F)
    poses[:, 0, 3] = np.asarray(shifts_px) * Z / 64.0  # u_b = u - f * tx / Z
    depths = np.full((F, H, W), Z, np.float32)
    return depths, np.stack([K] * F), poses


def test_grid_points_are_cell_centres():
    pts = grid_points((480, 640), (24, 24)).numpy()
    assert pts.shape == (576, 2)
    cw, ch = 640 / 24, 480 / 24
    np.testing.assert_allclose(pts[0], [cw / 2 - 0.5, ch / 2 - 0.5], rtol=1e-6)
    np.testing.assert_allclose(pts[25], [1.5 * cw - 0.5, 1.5 * ch - 0.5], rtol=1e-6)  # row 1, col 1
    np.testing.assert_allclose(pts[-1], [640 - cw / 2 - 0.5, 480 - ch / 2 - 0.5], rtol=1e-6)
    # Non-square, non-integer cells: the mean of the centres is the image centre.
    pts = grid_points((100, 150), (7, 11)).numpy()
    np.testing.assert_allclose(pts.mean(0), [74.5, 49.5], atol=1e-4)
    with pytest.raises(ValueError, match="positive"):
        grid_points((100, 150), (0, 3))


def test_follow_points_shift_and_query_frame_identity():
    depths, Ks, poses = shifted_frames([0.0, 10.0, -6.0])
    q = grid_points((H, W), (4, 4))
    tr = follow_points(q, depths, Ks, poses, query_frame=1)
    assert tr.uv.shape == (16, 3, 2) and tr.visible.shape == (16, 3) and tr.depth.shape == (16, 3)
    # Query frame 1 is shifted by 10 px: frame f sees the point at u + 10 - shift_f.
    expected_u = q[:, 0, None].numpy() + 10.0 - np.array([0.0, 10.0, -6.0])
    np.testing.assert_allclose(tr.uv[..., 0].numpy(), expected_u, atol=1e-4)
    np.testing.assert_allclose(tr.uv[..., 1].numpy(), np.repeat(q[:, 1, None].numpy(), 3, 1), atol=1e-4)
    torch.testing.assert_close(tr.uv[:, 1], q)
    np.testing.assert_allclose(tr.depth.numpy(), 2.0)
    inside = (expected_u >= 4) & (expected_u <= W - 5)
    np.testing.assert_array_equal(tr.visible.numpy(), inside)


def test_compute_tracks_ranks_and_keeps_top_fraction():
    # Frames shift further and further, so points on the left leave the view one column band at a time.
    depths, Ks, poses = shifted_frames([0.0, 20.0, 40.0, 60.0, 80.0])
    grids = ((6, 8), (2, 2))
    tr = compute_tracks(depths, Ks, poses, grids=grids, keep_fraction=0.5)
    Q = 6 * 8 + 2 * 2
    assert tr.query_uv.shape == (Q // 2, 2) and tr.visible.shape == (Q // 2, 5)
    assert tr.visible[:, 0].all()  # query frame
    all_pts = torch.cat([grid_points((H, W), g) for g in grids])
    full = follow_points(all_pts, depths, Ks, poses)
    counts = full.visible.sum(1)
    kept = [int(np.flatnonzero((all_pts == p).all(1).numpy())[0]) for p in tr.query_uv]
    dropped = sorted(set(range(Q)) - set(kept))
    assert counts[kept].min() >= counts[dropped].max()
    assert counts[kept].float().mean() > counts[dropped].float().mean()
    assert kept == sorted(kept)  # returned in query order
    np.testing.assert_array_equal(tr.visible.numpy(), full.visible[kept].numpy())


def test_ties_broken_by_query_order_and_rounding_up():
    depths, Ks, poses = shifted_frames([0.0, 0.0, 0.0])  # every point visible everywhere: all tied
    tr = compute_tracks(depths, Ks, poses, grids=((3, 3),), keep_fraction=0.5)
    assert tr.query_uv.shape[0] == math.ceil(0.5 * 9)
    torch.testing.assert_close(tr.query_uv, grid_points((H, W), (3, 3))[:5])
    tr = compute_tracks(depths, Ks, poses, grids=((3, 3),), keep_fraction=1.0)
    assert tr.visible.all() and tr.query_uv.shape[0] == 9


def test_invalid_query_depth_sinks_to_the_bottom():
    depths, Ks, poses = shifted_frames([0.0, 5.0])
    pts = grid_points((H, W), (2, 2)).numpy()
    r, c = int(round(pts[0, 1])), int(round(pts[0, 0]))
    depths[0, r, c] = np.nan  # query point 0 has no depth
    full = follow_points(pts, depths, Ks, poses)
    assert not full.visible[0].any() and torch.isnan(full.uv[0]).all()
    tr = compute_tracks(depths, Ks, poses, grids=((2, 2),), keep_fraction=0.75)
    torch.testing.assert_close(tr.query_uv, torch.from_numpy(pts[1:]))
    with pytest.raises(ValueError, match="keep_fraction"):
        compute_tracks(depths, Ks, poses, keep_fraction=0.0)
    with pytest.raises(ValueError, match="Ks must have shape"):
        compute_tracks(depths, Ks[:1], poses)
