"""The training loader: global order, exact frames and F, resume, query sets, worker processes."""

from collections import Counter

import numpy as np
import pytest
import torch
from prepared_fakes import WallScenes

from gasp import constants as C
from gasp.data.loader import SampleStream, build_sample
from gasp.data.order import BatchOrder
from gasp.data.targets import QUERY_MASK, sample_from_views
from gasp.errors import BadInputError, ConfigError


def chi2_pvalue(observed: np.ndarray, expected: np.ndarray) -> float:
    """P(chi2 >= statistic) with len-1 degrees of freedom."""
    stat = float(((observed - expected) ** 2 / expected).sum())
    dof = len(observed) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2.0), torch.tensor(stat / 2.0)))


def draw(data, batches: int, batch_size: int, **kw) -> list[list[dict]]:
    stream = SampleStream(
        data, grid=(2, 2), image_hw=(8, 8), queries="cells", batch_size=batch_size, seed=3, **kw
    )
    with stream:
        return [stream.next_batch() for _ in range(batches)]


def check_distributions(samples: list[dict], data: WallScenes) -> None:
    """F uniform on [min, max] and offsets uniform on [-R, R] (anchors away from the ends), exactly
    the index's frames; chi-square at p > 1e-3."""
    cfg, n = data.config, data.frames_per_scene
    lo, hi, radius = cfg["min_frames"], cfg["max_frames"], cfg["radius"]
    fs = Counter()
    offsets = Counter()
    for s in samples:
        frames = s[C.FRAME_INDEX]
        np.testing.assert_array_equal(frames, data.index.frames(s["index"]))  # the model sees the index's
        assert s[C.FRAMES].shape[0] == len(frames) == data.index.num_frames[s["index"]]
        fs[len(frames)] += 1
        anchor = int(frames[0])
        if radius <= anchor < n - radius:
            offsets.update((frames[1:] - anchor).tolist())
    assert set(fs) <= set(range(lo, hi + 1))
    f_obs = np.array([fs[f] for f in range(lo, hi + 1)], float)
    assert chi2_pvalue(f_obs, np.full(len(f_obs), f_obs.sum() / len(f_obs))) > 1e-3, f_obs
    assert set(offsets) <= set(range(-radius, radius + 1))
    o_obs = np.array([offsets[o] for o in range(-radius, radius + 1)], float)
    assert o_obs.sum() > 1000
    assert chi2_pvalue(o_obs, np.full(len(o_obs), o_obs.sum() / len(o_obs))) > 1e-3, o_obs


def test_global_order_is_a_shuffle_in_batches_of_one_frame_count():
    data = WallScenes(num_scenes=5, sequences_per_scene=40, min_frames=2, max_frames=6)
    nf = np.asarray(data.index.num_frames)
    order = BatchOrder(nf, global_batch=4, seed=1)
    epochs = 3
    count = order.batches_before(epochs)
    batches = [order.batch(k) for k in range(count)]
    assert all(len(set(nf[b].tolist())) == 1 and len(b) == 4 for b in batches)
    seen = Counter(np.concatenate(batches).tolist())
    assert set(seen.values()) <= {epochs - 1, epochs} and len(seen) == len(nf)
    for f, n in order.frame_counts.items():  # every queue emitted all but its remainder
        assert sum(int(nf[b[0]] == f) for b in batches) * 4 == (epochs * n) // 4 * 4
    perm = order.permutation(0)
    scene = np.asarray(data.index.scene)[perm]
    assert (np.diff(scene) != 0).sum() > len(perm) / 2  # scenes mixed, not one after the other
    assert not np.array_equal(perm, order.permutation(1))  # a new order every epoch
    assert np.array_equal(BatchOrder(nf, 4, seed=1).batch(37), batches[37])  # deterministic


def test_f_and_offsets_are_the_samplers_in_one_process():
    data = WallScenes(num_scenes=4, frames_per_scene=200, sequences_per_scene=100, radius=20)
    order = BatchOrder(np.asarray(data.index.num_frames), 4, seed=3)
    batches = draw(data, order.batches_before(1), batch_size=4, num_workers=0)
    for k, batch in enumerate(batches):
        assert [s["index"] for s in batch] == order.batch(k).tolist()
        assert len({s[C.FRAMES].shape[0] for s in batch}) == 1
    check_distributions([s for b in batches for s in b], data)


def test_resume_from_a_position_continues_the_shuffled_stream():
    data = WallScenes(num_scenes=3, sequences_per_scene=12, min_frames=3, max_frames=5)
    whole = draw(data, 30, batch_size=2, num_workers=0)  # crosses two epochs of 36 sequences
    stream = SampleStream(
        data, grid=(2, 2), image_hw=(8, 8), queries="cells", batch_size=2, seed=3, consumed=22 * 2
    )
    resumed = [stream.next_batch() for _ in range(8)]
    assert stream.consumed == 30 * 2
    for a, b in zip(whole[22:], resumed):
        assert [s[C.SEQUENCE_ID] for s in a] == [s[C.SEQUENCE_ID] for s in b]
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x[C.FRAMES], y[C.FRAMES])
            np.testing.assert_array_equal(x[C.MATCH_INDEX], y[C.MATCH_INDEX])
    with pytest.raises(ValueError, match="multiple of the global batch 2"):
        SampleStream(data, grid=(2, 2), image_hw=(8, 8), queries="cells", batch_size=2, seed=3, consumed=3)


def test_worker_processes_give_the_same_batches():
    data = WallScenes(num_scenes=2, sequences_per_scene=8, min_frames=3, max_frames=5)
    main = draw(data, 6, batch_size=2, num_workers=0)
    data.decoded.clear()
    workers = draw(data, 6, batch_size=2, num_workers=2, prefetch=2)
    for a, b in zip(main, workers):
        assert [s["index"] for s in a] == [s["index"] for s in b]
        for x, y in zip(a, b):
            for key in (C.FRAMES, C.MATCH_INDEX, C.MATCH_VALID, C.MATCH_DEPTH, C.TOKEN_DEPTH, QUERY_MASK):
                np.testing.assert_array_equal(x[key], y[key])
    assert data.decoded == []  # the frames were decoded in the workers, not here


def _track_sample(queries: str) -> tuple[dict, WallScenes]:
    data = WallScenes(
        num_scenes=1, frames_per_scene=40, sequences_per_scene=1, min_frames=6, radius=20, hw=(48, 48)
    )
    return build_sample(data, 0, (6, 6), (48, 48), queries), data


def test_track_queries_are_the_most_visible_half_of_8x8_and_24x24_points():
    tracks, data = _track_sample("tracks")
    cells, _ = _track_sample("cells")
    # Independent count: a wall point at pixel u (row-independent) stays visible in frame f while its
    # projection u - shift_f keeps 4 px from the edges (the wall is parallel to the image plane).
    frames = data.index.frames(0)
    focal, depth = 0.8 * 48, 2.0
    shift = (frames - frames[0]) * 0.02 * focal / depth
    points = []
    for g in (24, 8):  # grid order: 24x24 first, ties go to the lower query index
        step = 48 / g
        for r in range(g):
            for c in range(g):
                u, v = (c + 0.5) * step - 0.5, (r + 0.5) * step - 0.5
                seen = sum(1 for s in shift if 4 <= u - s <= 47 - 4 and 4 <= v <= 47 - 4)
                points.append((seen, u, v))
    ranked = sorted(range(len(points)), key=lambda i: (-points[i][0], i))[: (24 * 24 + 8 * 8) // 2]
    assert len(ranked) == 320
    expected = np.zeros(36, bool)
    for i in ranked:
        _, u, v = points[i]
        expected[int((v + 0.5) // 8) * 6 + int((u + 0.5) // 8)] = True
    np.testing.assert_array_equal(tracks[QUERY_MASK], expected)
    assert 0 < expected.sum() < 36
    assert cells[QUERY_MASK].all()
    np.testing.assert_array_equal(tracks[C.MATCH_VALID], cells[C.MATCH_VALID] & expected[None])
    assert (tracks[C.MATCH_INDEX][:, ~expected] == -1).all()
    np.testing.assert_array_equal(tracks[C.TOKEN_DEPTH], cells[C.TOKEN_DEPTH])


def test_bad_query_set_and_missing_folder_are_named(tmp_path):
    data = WallScenes(num_scenes=1, sequences_per_scene=1)
    with pytest.raises(ConfigError, match="--queries must be one of tracks, cells"):
        sample_from_views(data.views(0, [0, 1]), (2, 2), (8, 8), "points")
    with pytest.raises(BadInputError, match="manifest.json not found"):
        SampleStream(tmp_path, grid=(2, 2), image_hw=(8, 8), queries="cells", batch_size=1, seed=0)


@pytest.mark.parametrize("queries", ["tracks", "cells"])
def test_repeated_frames_are_computed_once_with_the_same_result(queries):
    from gasp.data.targets import fit_views, track_query_mask
    from gasp.geometry.token_grid import token_targets

    data = WallScenes(num_scenes=1, frames_per_scene=40, sequences_per_scene=1, hw=(48, 48))
    a, b, c = data.views(0, [5, 9, 12])
    views = [a, b, b, a, c, b]  # repeats share one View object, as PreparedData.views returns them
    sample = sample_from_views(views, (6, 6), (48, 48), queries)
    images, depths, Ks, poses = fit_views(views, (48, 48))  # every frame on its own
    tt = token_targets(depths, Ks, poses, (6, 6))
    mask = track_query_mask(depths, Ks, poses, (6, 6)) if queries == "tracks" else torch.ones(36, dtype=bool)
    valid = (tt.valid & mask[None]).numpy()
    np.testing.assert_array_equal(sample[C.FRAMES], images)
    np.testing.assert_array_equal(sample[C.MATCH_VALID], valid)
    np.testing.assert_array_equal(sample[C.MATCH_INDEX], np.where(valid, tt.match_index.numpy(), -1))
    np.testing.assert_array_equal(sample[C.TOKEN_DEPTH], tt.token_depth.reshape(6, -1).numpy())
    np.testing.assert_array_equal(sample[QUERY_MASK], mask.numpy())
    assert not np.array_equal(valid[0], valid[3])  # the anchor's repeat is matched, not the identity


def test_track_visibility_counts_repeated_frames_by_their_multiplicity():
    from gasp.data.targets import fit_views
    from gasp.geometry.tracks import compute_tracks

    data = WallScenes(num_scenes=1, frames_per_scene=40, sequences_per_scene=1, hw=(48, 48))
    a, b, c = data.views(0, [10, 30, 0])  # b shifts the wall one way, c the other way
    _, depths, Ks, poses = fit_views([a, b, c], (48, 48))
    weighted = compute_tracks(depths, Ks, poses, frame_counts=torch.tensor([1, 3, 1]))
    expanded = compute_tracks(depths[[0, 1, 1, 1, 2]], Ks[[0, 1, 1, 1, 2]], poses[[0, 1, 1, 1, 2]])
    plain = compute_tracks(depths, Ks, poses)
    torch.testing.assert_close(weighted.query_uv, expanded.query_uv)
    assert not torch.equal(weighted.query_uv, plain.query_uv)  # the repeats change which tracks are kept
