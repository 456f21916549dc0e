"""gasp.data.shards: round trip, atomic writes, manifest validation, rank/worker splits, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gasp import constants as C
from gasp.data import shards
from gasp.data.shards import ShardDataset, ShardFileWriter, ShardReader, ShardWriter, shard_name
from gasp.errors import BadInputError, ConfigError

GRID = (2, 3)
HW = (8, 12)


def make_sequence(seq_id: str, num_frames: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    n, q = GRID[0] * GRID[1], 5
    return {
        C.FRAMES: rng.integers(0, 256, (num_frames, *HW, 3), dtype=np.uint8),
        C.INTRINSICS: rng.random((num_frames, 3, 3), dtype=np.float32),
        C.CAM_TO_WORLD: rng.random((num_frames, 4, 4), dtype=np.float32),
        C.FRAME_INDEX: rng.integers(0, 100, num_frames),
        C.TOKEN_DEPTH: rng.random((num_frames, *GRID), dtype=np.float32),
        C.MATCH_INDEX: rng.integers(-1, n, (num_frames, n)),
        C.MATCH_VALID: rng.random((num_frames, n)) > 0.5,
        C.MATCH_DEPTH: rng.random((num_frames, n), dtype=np.float32),
        C.MATCH_SUBCELL: rng.random((num_frames, n, 2), dtype=np.float32),
        C.TRACK_QUERY_UV: rng.random((q, 2), dtype=np.float32),
        C.TRACK_UV: rng.random((q, num_frames, 2), dtype=np.float32),
        C.TRACK_VISIBLE: rng.random((q, num_frames)) > 0.5,
        C.SCENE: "room",
        C.SEQUENCE_ID: seq_id,
    }


def write_dataset(root: Path, sizes: list[int]) -> list[dict]:
    """Shards with ``sizes[i]`` sequences each (frame counts vary); returns every sequence in order."""
    writer = ShardWriter(root, grid=GRID, image_size=HW, config={"seed": 1}, num_shards=len(sizes))
    out, k = [], 0
    for i, size in enumerate(sizes):
        with ShardFileWriter(root / shard_name(i)) as w:
            for _ in range(size):
                seq = make_sequence(f"seq-{k:04d}", num_frames=2 + k % 4, seed=k)
                w.add(seq)
                out.append(seq)
                k += 1
        writer.record(w.entry)
    return out


def assert_same(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for key in a:
        if isinstance(a[key], str):
            assert a[key] == b[key]
        else:
            assert a[key].dtype == np.asarray(b[key]).dtype, key
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_round_trip_keeps_every_key_and_varying_frame_counts(tmp_path):
    written = write_dataset(tmp_path, [3, 2])
    reader = ShardReader(tmp_path)
    got = list(reader.iter())
    assert len(got) == len(reader) == 5
    for a, b in zip(written, got):
        assert_same(a, b)
    assert {s[C.FRAMES].shape[0] for s in got} == {2, 3, 4, 5}
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["format"] == "gasp-shards" and manifest["version"] == 1
    assert manifest["grid"] == list(GRID) and manifest["image_size"] == list(HW)
    assert manifest["complete"] is True
    assert [e["file"] for e in manifest["shards"]] == ["shard-00000.tar", "shard-00001.tar"]


def test_shard_bytes_are_reproducible(tmp_path):
    write_dataset(tmp_path / "a", [3])
    write_dataset(tmp_path / "b", [3])
    assert (tmp_path / "a" / "shard-00000.tar").read_bytes() == (
        tmp_path / "b" / "shard-00000.tar"
    ).read_bytes()


def test_failed_write_leaves_no_shard_and_leftover_tmp_is_rewritten(tmp_path):
    path = tmp_path / shard_name(0)
    with pytest.raises(RuntimeError), ShardFileWriter(path) as w:
        w.add(make_sequence("a", 2, 0))
        raise RuntimeError("killed")
    assert not path.exists() and not path.with_name(path.name + ".tmp").exists()

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(b"half a shard from a killed run")
    writer = ShardWriter(tmp_path, grid=GRID, image_size=HW, config={}, num_shards=1)
    assert not writer.is_finished(0)
    with ShardFileWriter(path) as w:
        w.add(make_sequence("a", 2, 0))
    writer.record(w.entry)
    assert writer.is_finished(0) and not tmp.exists()
    assert [s[C.SEQUENCE_ID] for s in ShardReader(tmp_path)] == ["a"]


def test_finished_means_in_manifest_and_on_disk_with_recorded_size(tmp_path):
    write_dataset(tmp_path, [2, 2])
    writer = ShardWriter(tmp_path, grid=GRID, image_size=HW, config={"seed": 1}, num_shards=2)
    assert writer.is_finished(0) and writer.is_finished(1)
    (tmp_path / shard_name(1)).write_bytes(b"truncated")
    assert not writer.is_finished(1)
    (tmp_path / shard_name(0)).unlink()
    assert not writer.is_finished(0)


def test_writer_refuses_a_folder_prepared_with_another_config(tmp_path):
    write_dataset(tmp_path, [1])
    with pytest.raises(ConfigError, match=r"manifest.json.*config.*seed"):
        ShardWriter(tmp_path, grid=GRID, image_size=HW, config={"seed": 2}, num_shards=1)


def test_manifest_validation_names_the_file(tmp_path):
    with pytest.raises(BadInputError, match="manifest.json not found"):
        ShardReader(tmp_path)
    write_dataset(tmp_path, [1, 1])
    path = tmp_path / "manifest.json"
    manifest = json.loads(path.read_text())

    path.write_text(json.dumps({**manifest, "format": "webdataset"}))
    with pytest.raises(BadInputError, match=r"manifest.json: format is 'webdataset'"):
        ShardReader(tmp_path)
    path.write_text(json.dumps({**manifest, "version": 2}))
    with pytest.raises(BadInputError, match=r"manifest.json: gasp-shards version 2 is not supported"):
        ShardReader(tmp_path)
    path.write_text("{not json")
    with pytest.raises(BadInputError, match="not readable JSON"):
        ShardReader(tmp_path)
    path.write_text(json.dumps(manifest))
    (tmp_path / shard_name(1)).unlink()
    with pytest.raises(BadInputError, match=r"lists shard-00001.tar, which is missing"):
        ShardReader(tmp_path)


def test_unfinished_preparation_is_refused_unless_allowed(tmp_path):
    writer = ShardWriter(tmp_path, grid=GRID, image_size=HW, config={}, num_shards=3)
    with ShardFileWriter(tmp_path / shard_name(1)) as w:
        w.add(make_sequence("x", 2, 0))
    writer.record(w.entry)
    with pytest.raises(BadInputError, match=r"did not finish \(1 of 3 shards\)"):
        ShardReader(tmp_path)
    assert [s[C.SEQUENCE_ID] for s in ShardReader(tmp_path, allow_partial=True)] == ["x"]


def test_corrupt_member_is_reported_with_shard_and_member(tmp_path):
    write_dataset(tmp_path, [1])
    path = tmp_path / shard_name(0)
    import tarfile

    with tarfile.open(path) as tar:
        start = tar.getmembers()[0].offset_data + 100
    data = bytearray(path.read_bytes())
    data[start : start + 100] = b"\0" * 100  # inside the npz of the only member
    path.write_bytes(bytes(data))
    with pytest.raises(BadInputError, match=r"shard-00000.tar:seq-0000.npz"):
        list(ShardReader(tmp_path))


@pytest.mark.parametrize("world_size,num_workers", [(1, 1), (2, 1), (2, 3), (3, 2)])
def test_rank_and_worker_split_covers_every_sequence_once(tmp_path, world_size, num_workers):
    written = write_dataset(tmp_path, [3, 1, 4, 2, 0, 5, 2])
    reader = ShardReader(tmp_path)
    seen = []
    for rank in range(world_size):
        rank_ids = []
        for worker in range(num_workers):
            rank_ids += [s[C.SEQUENCE_ID] for s in reader.iter(rank, world_size, worker, num_workers)]
        assert len(rank_ids) == reader.num_sequences(rank, world_size)
        seen += rank_ids
    assert sorted(seen) == sorted(s[C.SEQUENCE_ID] for s in written)
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize("start", [0, 1, 3, 4, 7, 100])
def test_resume_skips_the_first_sequences_of_the_rank_stream(tmp_path, start):
    write_dataset(tmp_path, [3, 1, 4, 2, 5])
    reader = ShardReader(tmp_path)
    rank_stream = [s[C.SEQUENCE_ID] for s in reader.iter(1, 2)]
    for num_workers in (1, 2):
        resumed = []
        for worker in range(num_workers):
            resumed += [s[C.SEQUENCE_ID] for s in reader.iter(1, 2, worker, num_workers, start=start)]
        assert sorted(resumed) == sorted(rank_stream[start:])


def test_resume_does_not_open_skipped_shards(tmp_path):
    write_dataset(tmp_path, [2, 2])
    (tmp_path / shard_name(0)).write_bytes(b"garbage")  # would fail if it were read
    assert [s[C.SEQUENCE_ID] for s in ShardReader(tmp_path).iter(start=3)] == ["seq-0003"]


def test_seeded_shard_order_is_a_deterministic_permutation(tmp_path):
    write_dataset(tmp_path, [1] * 8)
    reader = ShardReader(tmp_path)
    a = [s[C.SEQUENCE_ID] for s in reader.iter(seed=3)]
    assert a == [s[C.SEQUENCE_ID] for s in reader.iter(seed=3)]
    assert a != [s[C.SEQUENCE_ID] for s in reader.iter(seed=4)]
    assert sorted(a) == [s[C.SEQUENCE_ID] for s in reader.iter()]


def test_torch_dataset_splits_across_dataloader_workers_and_ranks(tmp_path):
    written = write_dataset(tmp_path, [2, 3, 1, 2])
    ids = []
    for rank in range(2):
        ds = ShardDataset(tmp_path, rank=rank, world_size=2)
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
        got = [s[C.SEQUENCE_ID] for s in loader]
        assert len(got) == len(ds)
        ids += got
    assert sorted(ids) == sorted(s[C.SEQUENCE_ID] for s in written)

    ds = ShardDataset(tmp_path, rank=0, world_size=1, start=5, transform=lambda s: s[C.SEQUENCE_ID])
    assert list(ds) == ["seq-0005", "seq-0006", "seq-0007"] and len(ds) == 3


def test_distributed_rank_defaults_to_single_process():
    assert shards.distributed_rank() == (0, 1)


def test_decode_predicate_skips_members_but_reports_their_frame_counts(tmp_path, monkeypatch):
    seqs = write_dataset(tmp_path, [3, 2])
    decoded = []
    real = shards.decode_sequence
    monkeypatch.setattr(
        shards, "decode_sequence", lambda data, where="": decoded.append(where) or real(data, where)
    )
    got = list(ShardReader(tmp_path).iter(decode=lambda pos: pos % 2 == 1))
    assert len(got) == len(seqs) == 5
    for pos, (item, seq) in enumerate(zip(got, seqs)):
        if pos % 2 == 1:
            assert_same(item, seq)
        else:
            assert isinstance(item, shards.SequenceHeader)
            assert item.num_frames == seq[C.FRAMES].shape[0] and item.name == f"{seq[C.SEQUENCE_ID]}.npz"
    assert len(decoded) == 2  # only the selected members were decoded
