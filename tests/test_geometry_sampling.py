import numpy as np
import pytest
import torch

from gasp.geometry.sampling import draw_num_frames, overlap_fraction, sample_sequence
from gasp.geometry.token_grid import TokenTargets


def test_anchor_first_rest_sorted_in_window():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 400))
        anchor = int(rng.integers(0, n))
        F = draw_num_frames(rng)
        seq = sample_sequence(n, anchor, F, rng=rng)
        assert len(seq) == F and seq[0] == anchor
        rest = seq[1:]
        assert rest == sorted(rest)
        assert all(max(0, anchor - 48) <= t <= min(n - 1, anchor + 48) for t in rest)
        assert all(isinstance(t, int) for t in seq)


def test_uniform_with_replacement_over_clipped_window():
    rng = np.random.default_rng(1)
    draws = np.concatenate([sample_sequence(100, 3, 24, radius=10, rng=rng)[1:] for _ in range(2000)])
    # Window [3 - 10, 3 + 10] clipped to [0, 13]: 14 values, each about 1/14 of the draws.
    assert draws.min() == 0 and draws.max() == 13
    freq = np.bincount(draws, minlength=14) / draws.size
    np.testing.assert_allclose(freq, 1 / 14, atol=0.01)
    seq = sample_sequence(100, 50, 24, radius=2, rng=rng)  # 23 draws from 5 values: repeats
    assert len(set(seq[1:])) < 23
    assert sample_sequence(10, 9, 5, radius=0, rng=rng) == [9, 9, 9, 9, 9]


def test_seeded_reproducible_and_errors():
    a = sample_sequence(500, 250, 16, rng=np.random.default_rng(7))
    b = sample_sequence(500, 250, 16, rng=np.random.default_rng(7))
    c = sample_sequence(500, 250, 16, rng=np.random.default_rng(8))
    assert a == b and a != c
    with pytest.raises(ValueError, match="anchor"):
        sample_sequence(10, 10, 4, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="num_frames"):
        sample_sequence(10, 1, 0, rng=np.random.default_rng(0))


def test_draw_num_frames_covers_inclusive_range():
    rng = np.random.default_rng(2)
    values = {draw_num_frames(rng) for _ in range(2000)}
    assert values == set(range(8, 25))
    assert {draw_num_frames(rng, 3, 4) for _ in range(200)} == {3, 4}
    with pytest.raises(ValueError):
        draw_num_frames(rng, 5, 4)


def test_overlap_fraction():
    valid = torch.tensor([[True, True, True, False], [True, False, False, False], [False] * 4])
    t = TokenTargets(
        match_index=torch.where(valid, 0, -1),
        valid=valid,
        match_depth=torch.zeros(3, 4),
        match_subcell=torch.zeros(3, 4, 2),
        token_depth=torch.zeros(3, 2, 2),
        grid=(2, 2),
        query_frame=0,
    )
    np.testing.assert_allclose(overlap_fraction(t).numpy(), [0.75, 0.25, 0.0])
