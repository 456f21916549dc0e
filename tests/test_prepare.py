"""gasp prepare: frames stored once + index, sampling, determinism, resume after a kill, skips, CLI."""

from __future__ import annotations

import dataclasses
import io
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prepared_scenes import folder_files, tiny_config, write_folder_scene

from gasp.cli import main
from gasp.data import prepare_scene
from gasp.data.prepare import LOW_OVERLAP, PrepareConfig, prepare
from gasp.data.prepare_scene import LowResFrames
from gasp.data.registry import open_scene
from gasp.data.store import open_prepared
from gasp.data.store_write import ManifestWriter
from gasp.errors import BadInputError, ConfigError
from gasp.geometry.sampling import draw_num_frames


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


def test_frames_are_stored_once_and_decode_to_the_readers_views(tmp_path, scenes):
    cfg = tiny_config(tmp_path / "out", [scenes["a"], scenes["b"]], image_format="png")
    summary = prepare(cfg)
    data = open_prepared(cfg.output)
    index = data.index
    assert summary.sequences == len(index) == 6 and summary.scenes == summary.scenes_used == 2
    assert data.scenes == ["room_a", "room_b"] and data.config["radius"] == 4
    assert summary.frames == int(index.num_frames.sum())
    assert len({index.sequence_id(i) for i in range(len(index))}) == 6
    for s, spec in enumerate((scenes["a"], scenes["b"])):
        reader = open_scene(spec)
        used = sorted({int(f) for i in range(len(index)) if index.scene[i] == s for f in index.frames(i)})
        assert used == list(range(data.num_frames(s)))  # exactly the frames some sequence uses, once
        for pos in used:
            got = data.view(s, pos)
            ref = reader.view(got.index)  # folder scene: View.index is the reader's position
            np.testing.assert_array_equal(got.image, ref.image)  # png: lossless colour
            np.testing.assert_allclose(got.depth, ref.depth, atol=5e-4)  # millimetres
            np.testing.assert_allclose(got.K, ref.K)
            np.testing.assert_allclose(got.cam_to_world, ref.cam_to_world)
    for i in range(len(index)):
        views = data.views(int(index.scene[i]), index.frames(i))
        src = [v.index for v in views]
        assert src[1:] == sorted(src[1:]) and max(abs(t - src[0]) for t in src) <= 4
        assert 2 <= len(views) == index.num_frames[i] <= 5


def test_the_index_keeps_the_papers_draws_exactly(tmp_path, scenes):
    """Without the overlap filter or bad frames, F is exactly the sampler's draw for (seed, scene, k)."""
    cfg = tiny_config(tmp_path / "out", [scenes["a"]], sequences_per_scene=12, min_overlap=0.0, seed=5)
    prepare(cfg)
    index = open_prepared(cfg.output).index
    drawn = [draw_num_frames(np.random.default_rng([5, 0, k]), 3, 5) for k in range(12)]
    assert index.num_frames.tolist() == drawn and index.number.tolist() == list(range(12))


def test_output_is_identical_for_any_worker_count_and_reruns(tmp_path, scenes):
    one = tiny_config(tmp_path / "one", [scenes["a"], scenes["b"]])
    two = dataclasses.replace(one, output=str(tmp_path / "two"), workers=2)
    prepare(one)
    prepare(two)
    assert folder_files(tmp_path / "one") == folder_files(tmp_path / "two")
    files = [p for p in (tmp_path / "one").rglob("*") if p.is_file() and p.name != ".gasp-lock"]
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    summary = prepare(one)  # a finished folder: every scene reused, no file touched
    assert summary.scenes_reused == 2 and summary.sequences == 6
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes


def test_killed_run_resumes_to_the_same_result(tmp_path, scenes, monkeypatch):
    cfg = tiny_config(tmp_path / "killed", [scenes["a"], scenes["b"], scenes["bad"]])
    record = ManifestWriter.record
    calls = {"n": 0}

    def record_then_die(self, entry):
        record(self, entry)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # killed after two finished scenes

    monkeypatch.setattr(ManifestWriter, "record", record_then_die)
    with pytest.raises(KeyboardInterrupt):
        prepare(cfg)
    monkeypatch.undo()
    out = tmp_path / "killed"
    with pytest.raises(BadInputError, match=r"did not finish \(2 of 3 scenes\)"):
        open_prepared(out)
    finished = {p: p.stat().st_mtime_ns for p in (out / "scenes").glob("*.zip")}
    assert len(finished) == 2
    (out / "scenes" / "00002.zip.tmp").write_bytes(b"half-written by the killed run")

    summary = prepare(cfg)
    assert summary.scenes_reused == 2 and not (out / "scenes" / "00002.zip.tmp").exists()
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    prepare(dataclasses.replace(cfg, output=str(tmp_path / "clean")))
    assert folder_files(out) == folder_files(tmp_path / "clean")


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
    opened = [k for k in summary.scenes_skipped if k.startswith("could not be opened: ")]
    assert summary.scenes_skipped["no usable sequence"] == 1 and len(opened) == 1
    assert str(missing) in summary.examples[opened[0]]["reason"]  # the underlying reason, exactly
    # 2 unreadable frames in room_bad, 2 in room_hopeless, each counted once
    assert sum(summary.frames_skipped.values()) == 4
    assert any("not finite" in r for r in summary.frames_skipped)
    assert sum(summary.sequences_skipped.values()) == 3  # room_hopeless loses its 3 sequences
    assert set(summary.sequences_skipped) <= {"fewer than 2 usable frames", "no readable anchor frame"}
    data = open_prepared(cfg.output)
    assert summary.sequences == len(data.index) == 6
    bad_id = data.scenes.index("room_bad")
    for i in np.flatnonzero(data.index.scene[:] == bad_id):
        assert not {v.index for v in data.views(bad_id, data.index.frames(i))} & {1, 2}


def test_skip_reasons_show_one_exact_example_each(tmp_path, scenes, monkeypatch):
    """Grouped counts, each shown with an exact reason (numbers and nested parentheses kept) and file."""
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)  # lmms_eval turns it on when imported
    root = write_folder_scene(tmp_path / "room", seed=6, num_frames=6)
    colour = root / "color" / "000003.png"
    buf = io.BytesIO()
    Image.open(colour).save(buf, format="JPEG", quality=90)
    colour.write_bytes(buf.getvalue()[:-40])  # a truncated JPEG (the name does not matter to PIL)
    summary = prepare(tiny_config(tmp_path / "out", [root], min_overlap=0.0, sequences_per_scene=6))
    (key,) = [k for k in summary.frames_skipped if "truncated" in k]
    example = summary.examples[key]
    assert example["file"].endswith("color/000003.png")
    text = summary.format()
    assert example["reason"] in text and example["file"] in text
    assert "(" in example["reason"] and example["reason"].count("(") == example["reason"].count(")")
    assert "bytes not processed" in example["reason"]  # PIL's nested detail, shown exactly
    assert not key.endswith(")") and "N" not in example["reason"]


def test_reason_groups_drop_details_but_not_text():
    from gasp.data.prepare_summary import reason_key

    truncated = "colour image is corrupt or truncated (image file is truncated (5 bytes not processed))"
    assert reason_key(truncated) == "colour image is corrupt or truncated"
    key = reason_key("depth PNG must be single-channel 16-bit, got mode RGB shape (4, 4, 3)")
    assert key == "depth PNG must be single-channel N-bit, got mode RGB shape"


def test_frames_a_reader_drops_are_counted(tmp_path, scenes, monkeypatch):
    real = prepare_scene.open_scene

    def with_dropped(spec):
        scene = real(spec)
        scene.dropped = [("rgb/0017.png", "no pose within 0.02 s (nearest is 0.5 s away)")]
        return scene

    monkeypatch.setattr(prepare_scene, "open_scene", with_dropped)
    summary = prepare(tiny_config(tmp_path / "out", [scenes["a"]], min_overlap=0.0))
    (key,) = summary.frames_skipped
    assert summary.frames_skipped[key] == 1 and key.startswith("dropped by the reader: no pose within")
    assert summary.examples[key]["file"] == "rgb/0017.png"
    assert "0.02 s" in summary.format()


def test_low_overlap_frames_are_redrawn_or_dropped(tmp_path, scenes):
    threshold = 0.6
    cfg = tiny_config(tmp_path / "out", [scenes["a"]], sequences_per_scene=6, min_overlap=threshold, radius=7)
    summary = prepare(cfg)
    assert summary.frames_skipped.get(LOW_OVERLAP, 0) > 0
    data = open_prepared(cfg.output)
    check = LowResFrames(open_scene(scenes["a"]), cfg)
    for i in range(len(data.index)):
        src = [v.index for v in data.views(0, data.index.frames(i))]
        for t in src:
            assert check.get(t) is not None
        assert all(check.overlap(src[0], t) >= threshold for t in src[1:])


def test_nothing_usable_is_a_clear_error(tmp_path, scenes):
    cfg = tiny_config(tmp_path / "out", [scenes["hopeless"], tmp_path / "missing"])
    with pytest.raises(BadInputError, match=r"no usable sequence in 2 scene\(s\)"):
        prepare(cfg)


def test_config_errors_name_the_flag(tmp_path, scenes):
    with pytest.raises(ConfigError, match="--min-frames"):
        PrepareConfig(min_frames=5, max_frames=4)
    with pytest.raises(ConfigError, match="--image-format"):
        PrepareConfig(image_format="webp")
    with pytest.raises(ConfigError, match="no scenes"):
        prepare(PrepareConfig(output=str(tmp_path / "x"), progress=False))
    cfg = tiny_config(tmp_path / "out", [scenes["a"]], sequences_per_scene=1)
    prepare(cfg)
    with pytest.raises(ConfigError, match="different config.*radius"):
        prepare(dataclasses.replace(cfg, radius=3))


def test_cli_prepare_runs_verifies_and_refuses_removed_flags(tmp_path, scenes, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["prepare", "--help"])
    assert exc.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--scenes", "--synthetic", "--workers", "--min-overlap", "--verify", "--image-format"):
        assert flag in help_text
    assert "--grid" not in help_text
    out = tmp_path / "cli"
    argv = ["prepare", "--scenes", str(scenes["a"]), "--output", str(out), "--sequences-per-scene", "2"]
    argv += ["--min-frames", "2", "--max-frames", "3", "--progress", "false", "--min-overlap", "0"]
    assert main(argv) == 0
    assert "2 sequences" in capsys.readouterr().out
    assert len(open_prepared(out).index) == 2
    assert main(["prepare", "--verify", str(out)]) == 0
    assert "complete and intact" in capsys.readouterr().out
    assert main([*argv, "--grid", "12", "16"]) == 2
    assert "--grid is no longer a `gasp prepare` option" in capsys.readouterr().err
    assert main(["prepare", "--output", str(tmp_path / "none"), "--progress", "false"]) == 2
    assert "no scenes" in capsys.readouterr().err


def test_real_7scenes_with_64_sequences_stays_within_twice_the_source(shared_data, tmp_path):
    source = shared_data / "rgbd" / "7scenes-redkitchen"
    cfg = PrepareConfig(output=str(tmp_path / "out"), scenes=[str(source)], sequences_per_scene=64)
    cfg.progress = False
    summary = prepare(cfg)
    assert summary.sequences == 64 and summary.frames > 64 * 8
    size = sum(p.stat().st_size for p in (tmp_path / "out").rglob("*") if p.is_file())
    source_size = sum(p.stat().st_size for p in source.iterdir() if p.is_file())
    assert size <= 2 * source_size, (size, source_size)
    data = open_prepared(cfg.output, verify="full")
    view = data.view(0, 0)
    assert view.image.shape == (480, 640, 3) and view.depth.shape == (480, 640)
