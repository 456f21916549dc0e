"""gasp prepare: targets, determinism, resume after a kill, bad-input skipping, errors, CLI."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gasp import constants as C
from gasp.cli import main
from gasp.data.prepare import LOW_OVERLAP, PrepareConfig, prepare
from gasp.data.shards import ShardReader, ShardWriter
from gasp.data.synthetic import SyntheticScene
from gasp.errors import BadInputError, ConfigError

HW = (32, 32)


def write_folder_scene(root: Path, seed: int, num_frames: int = 8) -> Path:
    """A tiny scene in gasp's generic folder format, rendered by the synthetic renderer."""
    scene = SyntheticScene(seed, num_frames=num_frames, height=HW[0], width=HW[1], path_length=0.6)
    for sub in ("color", "depth", "poses"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    np.savetxt(root / "intrinsics.txt", scene.K)
    for i in range(num_frames):
        view = scene.view(i)
        Image.fromarray(view.image).save(root / "color" / f"{i:06d}.png")
        np.save(root / "depth" / f"{i:06d}.npy", view.depth)
        np.savetxt(root / "poses" / f"{i:06d}.txt", view.cam_to_world)
    return root


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("scenes")
    good_a = write_folder_scene(base / "room_a", seed=1)
    good_b = write_folder_scene(base / "room_b", seed=2)
    bad = write_folder_scene(base / "room_bad", seed=3, num_frames=4)
    (bad / "color" / "000001.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    pose = np.loadtxt(bad / "poses" / "000002.txt")
    pose[0, 3] = -np.inf
    np.savetxt(bad / "poses" / "000002.txt", pose)
    hopeless = write_folder_scene(base / "room_hopeless", seed=4, num_frames=3)
    for i in (1, 2):
        (hopeless / "depth" / f"{i:06d}.npy").write_bytes(b"truncated")
    return {"a": good_a, "b": good_b, "bad": bad, "hopeless": hopeless}


def tiny_config(output: Path, scenes: list[Path | str], **kw) -> PrepareConfig:
    base = {
        "output": str(output),
        "scenes": [str(s) for s in scenes],
        "grid": (4, 4),
        "image_size": HW,
        "sequences_per_scene": 3,
        "min_frames": 3,
        "max_frames": 5,
        "radius": 4,
        "min_overlap": 0.3,
        "border": 1,
        "track_grids": [8, 4],
        "sequences_per_shard": 2,
        "progress": False,
    }
    base.update(kw)
    return PrepareConfig(**base)


def shard_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.glob("shard-*.tar"))}


def assert_same_shards(a: Path, b: Path) -> None:
    """Same sequences key by key (for a readable failure), then byte-identical shard files."""
    seqs_a, seqs_b = list(ShardReader(a, allow_partial=True)), list(ShardReader(b, allow_partial=True))
    assert [s[C.SEQUENCE_ID] for s in seqs_a] == [s[C.SEQUENCE_ID] for s in seqs_b]
    for x, y in zip(seqs_a, seqs_b):
        for key in x:
            same = x[key] == y[key] if isinstance(x[key], str) else x[key].tobytes() == y[key].tobytes()
            assert same and np.shape(x[key]) == np.shape(y[key]), f"{x[C.SEQUENCE_ID]}: {key} differs"
    assert shard_bytes(a) == shard_bytes(b)


def test_prepare_writes_targets_of_the_documented_shapes(tmp_path, scenes):
    cfg = tiny_config(tmp_path / "out", [scenes["a"], scenes["b"]])
    summary = prepare(cfg)
    reader = ShardReader(cfg.output)
    seqs = list(reader)
    assert summary.sequences == len(seqs) == len(reader) == 6
    assert summary.scenes == summary.scenes_used == 2 and summary.shards == 3
    assert summary.frames == sum(s[C.FRAMES].shape[0] for s in seqs)
    assert reader.grid == (4, 4) and reader.image_size == HW
    assert len({s[C.SEQUENCE_ID] for s in seqs}) == 6
    assert {s[C.SCENE] for s in seqs} == {"room_a", "room_b"}
    num_tracks = (8 * 8 + 4 * 4) // 2
    for s in seqs:
        f = s[C.FRAMES].shape[0]
        assert 2 <= f <= 5
        assert s[C.FRAMES].shape == (f, *HW, 3) and s[C.FRAMES].dtype == np.uint8
        assert s[C.INTRINSICS].shape == (f, 3, 3) and s[C.CAM_TO_WORLD].shape == (f, 4, 4)
        assert s[C.MATCH_INDEX].shape == (f, 16) and s[C.MATCH_SUBCELL].shape == (f, 16, 2)
        assert s[C.TOKEN_DEPTH].shape == (f, 4, 4)
        assert s[C.TRACK_UV].shape == (num_tracks, f, 2) and s[C.TRACK_QUERY_UV].shape == (num_tracks, 2)
        # non-anchor frames are in time order and within the radius of the anchor
        idx = s[C.FRAME_INDEX]
        assert list(idx[1:]) == sorted(idx[1:]) and np.abs(idx[1:] - idx[0]).max() <= 4
        # the anchor matches itself; every frame kept has some valid match
        valid0 = s[C.MATCH_VALID][0]
        np.testing.assert_array_equal(s[C.MATCH_INDEX][0][valid0], np.arange(16)[valid0])
        assert s[C.MATCH_VALID][1:].any(axis=1).all()
    # the manifest stores the content config and the summary
    manifest = reader.manifest
    assert manifest["config"]["image_size"] == list(HW) and manifest["summary"]["sequences"] == 6


def test_frames_are_resized_with_their_intrinsics(tmp_path, scenes):
    """Halving the image size halves fx: K follows the resize (fit_intrinsics), depth stays in metres."""
    full = tiny_config(tmp_path / "full", [scenes["a"]], sequences_per_scene=1, min_overlap=0.0)
    half = dataclasses.replace(full, output=str(tmp_path / "half"), image_size=(16, 16))
    prepare(full)
    prepare(half)
    (a,), (b,) = list(ShardReader(full.output)), list(ShardReader(half.output))
    np.testing.assert_array_equal(a[C.FRAME_INDEX], b[C.FRAME_INDEX])  # same sampling
    assert b[C.FRAMES].shape[1:3] == (16, 16)
    np.testing.assert_allclose(b[C.INTRINSICS][:, 0, 0], a[C.INTRINSICS][:, 0, 0] / 2, rtol=1e-5)
    np.testing.assert_allclose(
        b[C.INTRINSICS][:, 0, 2], (a[C.INTRINSICS][:, 0, 2] + 0.5) / 2 - 0.5, rtol=1e-5
    )


def test_output_is_identical_for_any_worker_count_and_reruns(tmp_path, scenes):
    one = tiny_config(tmp_path / "one", [scenes["a"], scenes["b"]])
    two = dataclasses.replace(one, output=str(tmp_path / "two"), workers=2)
    prepare(one)
    prepare(two)
    assert_same_shards(tmp_path / "one", tmp_path / "two")
    assert len(shard_bytes(tmp_path / "one")) == 3

    # a second run over a finished folder reuses every shard without touching it
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "one").glob("shard-*.tar")}
    summary = prepare(one)
    assert summary.shards_reused == 3 and summary.sequences == 6
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "one").glob("shard-*.tar")} == mtimes
    assert len(ShardReader(tmp_path / "one")) == 6  # and the folder still reads as complete


def test_killed_run_resumes_to_the_same_result(tmp_path, scenes, monkeypatch):
    cfg = tiny_config(tmp_path / "killed", [scenes["a"], scenes["b"]])
    calls = {"n": 0}
    record = ShardWriter.record

    def record_then_die(self, entry):
        record(self, entry)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # killed after two finished shards

    monkeypatch.setattr(ShardWriter, "record", record_then_die)
    with pytest.raises(KeyboardInterrupt):
        prepare(cfg)
    monkeypatch.undo()
    out = tmp_path / "killed"
    with pytest.raises(BadInputError, match="did not finish"):
        ShardReader(out)
    finished = {p: p.stat().st_mtime_ns for p in out.glob("shard-*.tar")}
    assert len(finished) == 2
    (out / "shard-00002.tar.tmp").write_bytes(b"half-written by the killed run")

    summary = prepare(cfg)
    assert summary.shards_reused == 2 and not (out / "shard-00002.tar.tmp").exists()
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    clean = dataclasses.replace(cfg, output=str(tmp_path / "clean"))
    prepare(clean)
    assert_same_shards(out, tmp_path / "clean")
    assert ShardReader(out).manifest["summary"] == ShardReader(clean.output).manifest["summary"]


def test_bad_frames_and_scenes_are_skipped_with_warnings_and_counts(tmp_path, scenes, caplog):
    missing = tmp_path / "no_such_scene"
    cfg = tiny_config(
        tmp_path / "out",
        [scenes["a"], scenes["bad"], scenes["hopeless"], missing],
        min_frames=4,
        max_frames=4,
        min_overlap=0.0,
    )
    with caplog.at_level(logging.WARNING, logger="gasp.data.prepare"):
        summary = prepare(cfg)
    text = caplog.text
    assert "color/000001.png" in text and "corrupt" in text
    assert "000002" in text and "not finite" in text
    assert str(missing) in text

    assert summary.scenes == 4 and summary.scenes_used == 2
    assert summary.scenes_skipped == {"no usable sequence": 1, "could not be opened": 1}
    # 2 unreadable frames in room_bad, 2 in room_hopeless, each counted once
    assert sum(summary.frames_skipped.values()) == 4
    assert any("not finite" in r for r in summary.frames_skipped)
    # room_hopeless (only frame 0 readable) loses its 3 sequences; the others lose none
    assert sum(summary.sequences_skipped.values()) == 3
    assert set(summary.sequences_skipped) <= {"fewer than 2 usable frames", "no readable anchor frame"}
    seqs = list(ShardReader(cfg.output))
    assert summary.sequences == len(seqs) == 6
    for s in seqs:
        if s[C.SCENE] == "room_bad":
            assert not set(s[C.FRAME_INDEX].tolist()) & {1, 2}


def test_low_overlap_frames_are_redrawn_or_dropped(tmp_path, scenes):
    threshold = 0.6
    cfg = tiny_config(tmp_path / "out", [scenes["a"]], sequences_per_scene=6, min_overlap=threshold, radius=7)
    summary = prepare(cfg)
    assert summary.frames_skipped.get(LOW_OVERLAP, 0) > 0
    for s in ShardReader(cfg.output):
        # overlap = fraction of anchor cells with a valid match (sampling.overlap_fraction)
        assert (s[C.MATCH_VALID][1:].mean(axis=1) >= threshold).all()


def test_nothing_usable_is_a_clear_error(tmp_path, scenes):
    cfg = tiny_config(tmp_path / "out", [scenes["hopeless"], tmp_path / "missing"])
    with pytest.raises(BadInputError, match=r"no usable sequence in 2 scene\(s\)"):
        prepare(cfg)


def test_config_errors_name_the_flag(tmp_path, scenes):
    with pytest.raises(ConfigError, match="--image-size or --cell-size"):
        PrepareConfig(image_size=(32, 32), cell_size=8)
    with pytest.raises(ConfigError, match="--min-frames"):
        PrepareConfig(min_frames=5, max_frames=4)
    with pytest.raises(ConfigError, match="no scenes"):
        prepare(PrepareConfig(output=str(tmp_path / "x"), progress=False))
    assert PrepareConfig(grid=(3, 4), cell_size=14).image_hw == (42, 56)
    assert PrepareConfig(grid=(3, 4)).image_hw == (84, 112)
    cfg = tiny_config(tmp_path / "out", [scenes["a"]], sequences_per_scene=1)
    prepare(cfg)
    with pytest.raises(ConfigError, match="different config.*radius"):
        prepare(dataclasses.replace(cfg, radius=3))


def test_cli_prepare_runs_and_documents_its_flags(tmp_path, scenes, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["prepare", "--help"])
    assert exc.value.code == 0
    help_text = capsys.readouterr().out
    for flag in (
        "--scenes",
        "--synthetic",
        "--grid",
        "--image-size",
        "--cell-size",
        "--sequences-per-shard",
        "--workers",
        "--min-overlap",
    ):
        assert flag in help_text
    out = tmp_path / "cli"
    argv = [
        "prepare",
        "--scenes",
        str(scenes["a"]),
        "--output",
        str(out),
        "--grid",
        "2",
        "2",
        "--image-size",
        "16",
        "16",
        "--sequences-per-scene",
        "2",
        "--min-frames",
        "2",
        "--max-frames",
        "3",
        "--track-grids",
        "4",
        "--progress",
        "false",
        "--min-overlap",
        "0",
    ]
    assert main(argv) == 0
    assert "2 sequences" in capsys.readouterr().out
    assert len(ShardReader(out)) == 2
    assert main(["prepare", "--output", str(tmp_path / "none"), "--progress", "false"]) == 2
    assert "no scenes" in capsys.readouterr().err
