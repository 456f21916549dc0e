"""Checkpoint folders: the completion marker is written last and removed first, readers take only
complete checkpoints, and a training run cleans what an interrupted save or rotation left."""

import json
import logging

import pytest
from test_train_helpers import debug_config, prepare_tiny

from gasp.training import checkpoint as ckpt


def _fake(run, step, keep_last=5):
    tmp = ckpt.begin(run, step)
    ckpt.write_state(tmp, {"step": step})
    (tmp / "weights.bin").write_bytes(b"x" * 100)
    return ckpt.commit(tmp, keep_last)


def test_marker_is_written_last_and_rename_follows(tmp_path, monkeypatch):
    order = []
    real_replace = ckpt.os.replace

    def spy(src, dst):
        order.append(("rename", sorted(p.name for p in src.iterdir())))
        raise KeyboardInterrupt  # killed just before the rename

    monkeypatch.setattr(ckpt.os, "replace", spy)
    with pytest.raises(KeyboardInterrupt):
        _fake(tmp_path, 3)
    assert order == [("rename", ["COMPLETE", "state.json", "weights.bin"])]
    assert ckpt.list_checkpoints(tmp_path) == []  # a .tmp folder is never a checkpoint
    monkeypatch.setattr(ckpt.os, "replace", real_replace)
    assert [p.name for p in ckpt.leftovers(tmp_path)] == ["step-0000003.tmp"]


def test_rotation_removes_the_marker_first(tmp_path, monkeypatch):
    for step in (1, 2):
        _fake(tmp_path, step)
    seen = {}

    def killed_rmtree(path, ignore_errors=False):
        seen["marker_left"] = (path / ckpt.MARKER).exists()
        raise KeyboardInterrupt  # killed while deleting the old checkpoint's files

    monkeypatch.setattr(ckpt.shutil, "rmtree", killed_rmtree)
    with pytest.raises(KeyboardInterrupt):
        _fake(tmp_path, 3, keep_last=2)
    assert seen == {"marker_left": False}
    names = [p.name for p in ckpt.list_checkpoints(tmp_path)]
    assert names == ["step-0000002", "step-0000003"]  # step 1 lost its marker before anything else
    assert [p.name for p in ckpt.leftovers(tmp_path)] == ["step-0000001"]


def test_resolve_refuses_an_unmarked_checkpoint(tmp_path):
    good = _fake(tmp_path, 1)
    (good / ckpt.MARKER).unlink()
    with pytest.raises(ckpt.BadInputError, match="incomplete checkpoint"):
        ckpt.resolve_checkpoint(good)
    with pytest.raises(ckpt.BadInputError, match="no checkpoint here"):
        ckpt.resolve_checkpoint(tmp_path)


@pytest.mark.slow
def test_training_cleans_leftovers_and_refuses_another_process_count(tmp_path, caplog):
    from gasp.errors import ConfigError
    from gasp.train import train

    data = prepare_tiny(tmp_path / "data", sequences=2, max_frames=3)
    run = tmp_path / "run"
    stale = ckpt.checkpoint_root(run) / "step-0000009"
    stale.mkdir(parents=True)
    (stale / "state.json").write_text(json.dumps({"step": 9}))  # no weights, no marker
    (ckpt.checkpoint_root(run) / "step-0000010.tmp").mkdir()
    with caplog.at_level(logging.WARNING):
        result = train(debug_config(data, run, max_steps=1, warmup_steps=0))
    assert "removing incomplete checkpoint" in caplog.text
    assert sorted(p.name for p in ckpt.checkpoint_root(run).iterdir()) == ["step-0000001"]
    assert result.checkpoint.name == "step-0000001" and ckpt.is_complete(result.checkpoint)
    # Resuming with another number of processes is refused, naming the count to use.
    state = json.loads((result.checkpoint / "state.json").read_text())
    assert state["num_processes"] == 1
    state["num_processes"] = 2
    (result.checkpoint / "state.json").write_text(json.dumps(state))
    with pytest.raises(ConfigError, match=r"written by 2 process\(es\).*--num_processes 2"):
        train(debug_config(data, run, max_steps=2, warmup_steps=0), resume=True)
