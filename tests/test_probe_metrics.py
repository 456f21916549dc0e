"""Probe metrics on constructed features whose answers are known."""

import math

import numpy as np
import pytest
import torch

from gasp import probe_metrics as pm


def _shift_matches(grid, shifts):
    """Ground truth of a scene translating by ``shifts[k] = (dr, dc)`` cells in target frame k."""
    gh, gw = grid
    rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    index, valid = [], []
    for dr, dc in shifts:
        r, c = rows + dr, cols + dc
        ok = (r >= 0) & (r < gh) & (c >= 0) & (c < gw)
        index.append(torch.where(ok, r * gw + c, torch.full_like(r, -1)).reshape(-1))
        valid.append(ok.reshape(-1))
    return torch.stack(index), torch.stack(valid)


def _perfect_features(match_index, match_valid, n, dim=64, seed=0):
    """Query tokens get one random code per 3D point; target tokens carry the code of the point they show."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randn(n, dim, generator=g)
    query = codes
    target = torch.randn(match_index.shape[0], n, dim, generator=g)  # background for unmatched cells
    for k in range(match_index.shape[0]):
        q = torch.nonzero(match_valid[k]).squeeze(1)
        target[k, match_index[k, q]] = codes[q]
    return query, target


def test_neighbourhood_fraction_counts_cells_by_hand():
    near = pm.neighbourhood_fraction((4, 4), 1.0) * 16
    # corner: itself + 2 neighbours; edge: itself + 3; interior: itself + 4 (diagonals are sqrt(2) > 1)
    assert near[0].item() == 3 and near[1].item() == 4 and near[5].item() == 5
    near2 = pm.neighbourhood_fraction((5, 5), 2.0) * 25
    assert near2[12].item() == 13  # centre of 5x5: the Euclidean disc of radius 2 holds 13 cells


def test_perfect_qk_features_give_pck_one_and_flat_temporal_curve():
    grid = (6, 7)
    n = grid[0] * grid[1]
    shifts = [(0, 1), (1, 2), (2, 3), (3, 4)]
    index, valid = _shift_matches(grid, shifts)
    query, target = _perfect_features(index, valid, n)
    heads = 4
    q = (query * 3).unsqueeze(0).expand(heads, n, -1)
    k = target.unsqueeze(0).expand(heads, *target.shape)
    probs = pm.qk_attention_probs(q, k)
    assert probs.shape == (4, n, n)
    torch.testing.assert_close(probs.sum(-1), torch.ones(4, n))
    scores = pm.score_pairs(probs, index, valid, torch.tensor([1, 2, 3, 4]), grid, delta=1.0)
    assert scores.correct.size == int(valid.sum())
    summary = pm.summarize_layers([scores])
    assert summary["pck"] == [1.0] and summary["pck_moved"] == [1.0]
    assert summary["temporal_robustness"]["dt"] == [1, 2, 3, 4]
    assert summary["temporal_robustness"]["y"] == [1.0, 1.0, 1.0, 1.0]


def test_known_temporal_curve_and_best_layer():
    grid = (8, 8)
    n = 64
    dts = [1, 2, 4, 8]
    index, valid = _shift_matches(grid, [(0, 3)] * 4)
    fractions = [0.8, 0.6, 0.4, 0.2]
    layers = []
    for scale in (1.0, 0.5):  # layer 1 is right half as often: its PCK is lower, layer 0 is best
        probs = torch.full((4, n, n), 1e-3)
        for k, frac in enumerate(fractions):
            q = torch.nonzero(valid[k]).squeeze(1)
            right = q[: round(frac * scale * len(q))]
            wrong = q[round(frac * scale * len(q)) :]
            probs[k, right, index[k, right]] = 1.0
            far = (index[k, wrong] + 4 * 8) % n  # four rows away: outside delta=2
            probs[k, wrong, far] = 1.0
        layers.append(pm.score_pairs(probs, index, valid, torch.tensor(dts), grid, delta=2.0))
    summary = pm.summarize_layers(layers)
    assert summary["best_layer"] == 0
    tr = summary["temporal_robustness"]
    assert tr["dt"] == dts
    np.testing.assert_allclose(tr["pck"], fractions, atol=1e-9)
    np.testing.assert_allclose(tr["y"], [f / fractions[0] for f in fractions], atol=1e-9)
    np.testing.assert_allclose(tr["y_layer_mean"], [f / fractions[0] for f in fractions], atol=1e-9)


def test_shuffled_features_score_chance_and_baselines_are_exact():
    grid = (16, 16)
    n = 256
    shifts = [(dr, dc) for dr in (-2, 0, 3) for dc in (-4, 1, 5)]
    index, valid = _shift_matches(grid, shifts)
    g = torch.Generator().manual_seed(1)
    query = torch.randn(n, 32, generator=g)
    target = torch.randn(len(shifts), n, 32, generator=g)
    probs = pm.cosine_probs(query, target, temperature=0.1)
    scores = pm.score_pairs(probs, index, valid, torch.arange(1, len(shifts) + 1), grid, delta=2.0)
    base = pm.baselines(scores)
    # exact chance: the mean, over evaluated pairs, of the true match's neighbourhood share
    near = pm.neighbourhood_fraction(grid, 2.0)
    expected_chance = float(near[index[valid]].double().mean())
    assert base["chance_pck"] == pytest.approx(expected_chance, abs=1e-9)
    # identity: only the shift (0, 1) keeps matches within 2 cells; all its valid pairs count
    moved_by_shift = [math.hypot(dr, dc) > 2.0 for dr, dc in shifts]
    expected_identity = sum(int(valid[k].sum()) for k, m in enumerate(moved_by_shift) if not m) / int(
        valid.sum()
    )
    assert base["identity_pck"] == pytest.approx(expected_identity)
    assert base["identity_pck_moved"] == 0.0
    # random features: PCK within 4 binomial standard errors of chance
    figs = pm.layer_figures(scores)
    se = math.sqrt(expected_chance * (1 - expected_chance) / scores.correct.size)
    assert abs(figs.pck - expected_chance) < 4 * se
    assert figs.pck < 0.2


def test_pairs_at_zero_frame_distance_and_invalid_matches_are_dropped():
    grid = (4, 4)
    index, valid = _shift_matches(grid, [(0, 0), (0, 1)])
    probs = torch.eye(16).expand(2, 16, 16).clone()
    scores = pm.score_pairs(probs, index, valid, torch.tensor([0, 3]), grid, delta=0.5)
    assert scores.correct.size == 12  # frame with dt=0 dropped, 4 cells of frame 2 fall off the grid
    assert set(scores.dt.tolist()) == {3}
    assert not scores.correct.any()  # identity prediction is one cell off, delta 0.5


def test_rho_tracks_confidence_and_correctness():
    rng = np.random.default_rng(0)
    correct = rng.random(2000) < 0.5
    conf = np.where(correct, 0.7, 0.3) + rng.normal(0, 0.05, 2000)
    assert pm.pearson(conf, correct) > 0.9
    assert pm.pearson(-conf, correct) < -0.9
    assert pm.pearson(rng.random(2000), correct) == pytest.approx(0.0, abs=0.1)
    assert pm.pearson(np.ones(10), correct[:10]) is None


def test_qk_attention_shares_kv_heads_like_grouped_query_attention():
    g = torch.Generator().manual_seed(3)
    q = torch.randn(4, 5, 8, generator=g)
    k = torch.randn(2, 3, 6, 8, generator=g)
    probs = pm.qk_attention_probs(q, k)
    manual = torch.stack(
        [torch.softmax(q[h] @ k[h // 2].transpose(-1, -2) / math.sqrt(8), dim=-1) for h in range(4)]
    ).mean(0)
    torch.testing.assert_close(probs, manual)
    with pytest.raises(ValueError, match="multiple"):
        pm.qk_attention_probs(torch.randn(3, 5, 8), k)


def test_score_pairs_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="grid"):
        pm.score_pairs(torch.rand(1, 16, 16), torch.zeros(1, 16), torch.ones(1, 16), torch.ones(1), (4, 5), 2)


def test_lookalike_split_is_a_wrong_colour_match_at_another_depth():
    grid, cell = (1, 6), 4
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, (6, 3), dtype=np.uint8)
    frame = np.repeat(np.repeat(colours[None, :, None, :], cell, 0), cell, 2).reshape(cell, 6 * cell, 3)
    frames = np.stack([frame, frame])  # the target looks exactly like the query frame
    shifted = np.stack([np.arange(6), (np.arange(6) + 3) % 6])  # but each cell truly sits 3 cells on
    valid = np.ones((2, 6), bool)
    valid[1, 5] = False
    depth = np.array([[[2.0] * 6], [[1.0, 1, 1, 3, 3, 3]]])
    split = pm.lookalike_pairs(frames, depth, shifted, valid, grid, delta=1.0)
    assert split.tolist() == [[True, True, True, True, True, False]]  # cell 5 has no valid match
    same_depth = depth.copy()
    same_depth[1] = 2.0
    assert not pm.lookalike_pairs(frames, same_depth, shifted, valid, grid, delta=1.0).any()
    right = np.stack([np.arange(6), np.arange(6)])  # the best colour match is the true one
    assert not pm.lookalike_pairs(frames, depth, right, valid, grid, delta=1.0).any()
    # PCK on the split counts only those pairs
    probs = torch.zeros(1, 6, 6)
    probs[0, torch.arange(6), torch.as_tensor(shifted[1])] = 1.0  # every prediction right ...
    probs[0, 0] = 0.0
    probs[0, 0, 0] = 1.0  # ... except query 0, which takes the look-alike
    scores = pm.score_pairs(
        probs,
        torch.as_tensor(shifted[1:]),
        torch.as_tensor(valid[1:]),
        torch.tensor([1]),
        grid,
        1.0,
        torch.as_tensor(split),
    )
    assert pm.layer_figures(scores).pck_lookalike == 0.8
