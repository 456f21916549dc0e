"""gasp.data.store: the reading interface of prepared folders (views, index, processes, errors)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from prepared_scenes import tiny_config, write_folder_scene

from gasp.data import store
from gasp.data.prepare import prepare
from gasp.data.registry import open_scene
from gasp.data.store import open_prepared
from gasp.errors import BadInputError, ConfigError


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("store")
    scene = write_folder_scene(base / "room", seed=3, num_frames=10)
    # quality 90 (the default is 80): the colour bound below is for 90 on these noisy 32x32 frames
    cfg = tiny_config(base / "data", [scene], sequences_per_scene=5, min_overlap=0.0, jpeg_quality=90)
    prepare(cfg)
    return Path(cfg.output), scene


def test_jpeg_views_are_close_to_the_source_and_geometry_is_exact(prepared):
    root, scene = prepared
    data, reader = open_prepared(root), open_scene(scene)
    for pos in range(data.num_frames(0)):
        got = data.view(0, pos)
        ref = reader.view(got.index)
        assert got.image.dtype == np.uint8 and got.image.shape == ref.image.shape
        assert np.abs(got.image.astype(int) - ref.image).mean() < 8  # JPEG quality 90
        assert got.depth.dtype == np.float32 and np.abs(got.depth - ref.depth).max() <= 5e-4
        np.testing.assert_array_equal(got.depth == 0, ref.depth == 0)
        np.testing.assert_allclose(got.K, ref.K)
        np.testing.assert_allclose(got.cam_to_world, ref.cam_to_world)
        assert got.frame_id == ref.frame_id and "scenes/00000.zip:color/" in got.source


def test_views_decode_each_distinct_frame_once(prepared, monkeypatch):
    root, _ = prepared
    data = open_prepared(root)
    decoded = []
    real = store._SceneFile.read
    monkeypatch.setattr(store._SceneFile, "read", lambda s, m: decoded.append(m) or real(s, m))
    data.view(0, 0)  # opens the scene file (its camera members)
    decoded.clear()
    views = data.views(0, [2, 0, 2, 1])
    assert [v.index for v in views] == [data.view(0, f).index for f in (2, 0, 2, 1)]
    frames = [m for m in decoded if m.startswith(("color/", "depth/"))]
    assert views[0] is views[2] and len(frames) == 3 * 2 + 4 * 2  # 3 distinct (colour + depth), then 4


def test_index_is_memory_mapped_and_pickles_as_paths(prepared):
    root, _ = prepared
    data = open_prepared(root)
    index = data.index
    assert isinstance(index.frames_flat, np.memmap) and index.scene.dtype == np.int32
    assert index.num_frames.dtype == np.int16 and len(index) == 5
    for i in range(len(index)):
        assert index.frames(i).dtype == np.int32 and len(index.frames(i)) == index.num_frames[i]
    blob = pickle.dumps(data)
    assert len(blob) < 20_000
    copy = pickle.loads(blob)
    mapped = copy.index.frames_flat  # re-mapped from the file, not copied
    assert isinstance(mapped, np.memmap) and Path(mapped.filename) == root / "index" / "frames.npy"
    assert [copy.index.sequence_id(i) for i in range(5)] == [index.sequence_id(i) for i in range(5)]
    np.testing.assert_array_equal(copy.view(0, 1).image, data.view(0, 1).image)


def _read_in_child(data, queue) -> None:
    image = data.view(0, 1).image
    queue.put((image.sum(), data._files[0]._pid == os.getpid()))  # reopened in this process


def test_a_forked_worker_reads_through_its_own_file_handle(prepared):
    root, _ = prepared
    data = open_prepared(root)
    expected = data.view(0, 1).image.sum()  # the parent has the scene file open
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(data, queue))
    child.start()
    assert queue.get(timeout=60) == (expected, True)
    child.join(60)
    assert data.view(0, 2).index >= 0  # the parent's handle still works


def test_not_a_prepared_folder_is_named(tmp_path, prepared):
    with pytest.raises(BadInputError, match="manifest.json not found"):
        open_prepared(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "gasp-shards", "version": 1}))
    with pytest.raises(BadInputError, match="old per-sequence shard format"):
        open_prepared(tmp_path)
    with pytest.raises(ConfigError, match="verify must be one of"):
        open_prepared(prepared[0], verify="crc")
    with pytest.raises(IndexError, match="out of range"):
        open_prepared(prepared[0]).view(0, 999)


def test_depth_codec_is_lossless_and_refuses_damaged_bytes():
    rng = np.random.default_rng(0)
    units = rng.integers(0, 65536, size=(7, 13), dtype=np.uint16)
    units[:, 0], units[:, 1] = 65535, 0  # deltas that wrap around 2**16
    data = store.encode_depth_units(units)
    got = store.decode_depth_units(data)
    assert got.dtype == np.uint16 and got.shape == (7, 13)
    np.testing.assert_array_equal(got, units)
    assert store.encode_depth_units(units) == data  # deterministic: reruns are byte-identical
    with pytest.raises(ValueError, match="not b'GD16'"):
        store.decode_depth_units(b"\x89PNG" + data[4:])
    with pytest.raises(ValueError, match="holds 182 bytes, expected 196"):
        store.decode_depth_units(
            data[:4] + (7).to_bytes(4, "little") + (14).to_bytes(4, "little") + data[12:]
        )
    with pytest.raises(ValueError):
        store.decode_depth_units(data[:-5])
