"""`gasp export` never deletes or mixes into what it did not write, and replaces a previous export
atomically.

The original data loss: `gasp export --checkpoint RUN --output-dir RUN --overwrite` wrote the export,
then deleted the whole run folder.
"""

import contextlib
import json
import random
import shutil
from pathlib import Path

import pytest
from cli_harness import check_ok, kill_when, run_gasp, snapshot, start_gasp

from gasp import export_guard
from gasp.cli import main as gasp_main


def _all_paths(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _refused(capsys, *argv: str) -> str:
    """Run `gasp export ARGV` in this process; it must exit 2 with a one-line error, no traceback."""
    code = gasp_main(["export", *map(str, argv)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "gasp export: error: --output-dir" in err and "Traceback" not in err
    return err


def _outputs_inside_and_around(run: Path, tmp_path: Path) -> list[tuple[str, Path]]:
    link = tmp_path / "link-to-run"
    link.symlink_to(run, target_is_directory=True)
    subfolders = [p for p in run.rglob("*") if p.is_dir()]
    assert subfolders
    return [
        ("is", run),
        ("is", link),  # the run through a symlink
        ("lies inside", link / "new-export"),
        ("contains", run.parent),
        *[("lies inside", p) for p in subfolders],  # checkpoints, base model, data, logs, ...
    ]


def test_export_into_the_run_being_exported_is_refused_and_the_run_kept(tiny_run, tmp_path, capsys):
    before, paths = snapshot(tiny_run), _all_paths(tiny_run)
    for relation, out in _outputs_inside_and_around(tiny_run, tmp_path):
        err = _refused(capsys, "--checkpoint", tiny_run, "--output-dir", out, "--overwrite")
        assert f"{relation} {tiny_run.resolve()}" in err and "being exported" in err
        assert snapshot(tiny_run) == before and _all_paths(tiny_run) == paths  # not a file added either


def test_the_original_data_loss_through_a_subprocess(tiny_run):
    before = snapshot(tiny_run)
    res = run_gasp("export", "--checkpoint", tiny_run, "--output-dir", tiny_run, "--overwrite")
    assert res.returncode == 2 and "being exported" in res.stderr and "Traceback" not in res.stderr
    assert snapshot(tiny_run) == before


def test_folders_holding_a_run_or_prepared_data_are_refused_even_when_marked(tiny_run, tmp_path, capsys):
    prepared = next(p.parent for p in tiny_run.rglob("manifest.json"))  # the run's synthetic data
    other_run = tmp_path / "other-run"
    shutil.copytree(tiny_run, other_run, ignore=shutil.ignore_patterns("base", "data"))
    data_copy = tmp_path / "data-copy"
    shutil.copytree(prepared, data_copy)
    for folder, what in [(other_run, "a training run"), (data_copy, "prepared data")]:
        (folder / export_guard.MARKER).write_text(json.dumps({"format": "gasp-export"}))  # a planted marker
        before = snapshot(folder)
        err = _refused(capsys, "--checkpoint", tiny_run, "--output-dir", folder, "--overwrite")
        assert f"holds {what}" in err
        assert snapshot(folder) == before
    # Prepared data is recognised by its manifest's content, and nothing may be exported inside it.
    err = _refused(capsys, "--checkpoint", tiny_run, "--output-dir", data_copy / "export")
    assert f"lies inside {data_copy.resolve()}" in err and "prepared data" in err


def test_overwrite_never_replaces_a_folder_export_did_not_write(tiny_run, tmp_path, capsys):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    err = _refused(capsys, "--checkpoint", tiny_run, "--output-dir", folder, "--overwrite")
    assert "not a previous gasp export" in err
    assert (folder / "thesis.tex").read_text() == "years of work"


def test_output_dir_that_is_a_file_is_a_clear_error(tiny_run, tmp_path, capsys):
    path = tmp_path / "model.bin"
    path.write_bytes(b"x")
    err = _refused(capsys, "--checkpoint", tiny_run, "--output-dir", path)
    assert "is a file" in err and path.read_bytes() == b"x"


@pytest.mark.slow
def test_overwrite_replaces_a_previous_export_atomically(tiny_run, tmp_path):
    """A previous export is replaced only with --overwrite, and a kill during the replacement leaves
    the previous export or the new one, whole."""
    out = tmp_path / "export"
    export_guard.publish(out, lambda f: _export_files(f, "old"), {}, overwrite=False)
    (out / "stale.bin").write_bytes(b"a file of an older version")
    old = snapshot(out)
    res = run_gasp("export", "--checkpoint", tiny_run, "--output-dir", out)
    assert res.returncode == 2 and "--overwrite" in res.stderr and snapshot(out) == old

    # Kill shortly after export starts writing beside the output folder (the new export's folder).
    siblings = set(tmp_path.iterdir())
    proc = start_gasp("export", "--checkpoint", tiny_run, "--output-dir", out, "--overwrite")
    delay = random.Random(0).uniform(0.0, 0.3)
    assert kill_when(proc, lambda: bool(set(tmp_path.iterdir()) - siblings), delay), "export ended first"
    after_kill = snapshot(out)

    check_ok(run_gasp("export", "--checkpoint", tiny_run, "--output-dir", out, "--overwrite"))
    new = snapshot(out)
    assert "stale.bin" not in new and {"config.json", export_guard.MARKER} <= set(new)
    assert after_kill in (old, new)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".export")] == [".export.gasp-lock"]


class _Killed(BaseException):
    """Stands for SIGKILL at one file-system step of `publish`."""


class _KillAt:
    """Raises :class:`_Killed` at the ``nth`` (0-based) call of the file-system step ``step``."""

    def __init__(self, step: str, nth: int):
        self.step, self.nth, self.calls = step, nth, {}

    def wrap(self, name: str, real):
        def wrapped(*args, **kwargs):
            self.calls[name] = self.calls.get(name, 0) + 1
            if name == self.step and self.calls[name] == self.nth + 1:
                raise _Killed
            return real(*args, **kwargs)

        return wrapped


def _export_files(folder: Path, tag: str) -> None:
    (folder / "config.json").write_text(tag)
    (folder / "model.safetensors").write_text(tag * 100)


def test_publish_leaves_old_or_new_export_whatever_step_is_killed(tmp_path, monkeypatch):
    """Every file-system step of a replacement, interrupted in turn: the output folder always holds a
    whole export, the previous or the new one (never neither, never a mix)."""
    out = tmp_path / "export"
    export_guard.publish(out, lambda f: _export_files(f, "old"), {}, overwrite=False)
    old = snapshot(out)
    steps = ["rmtree", "replace", "exchange", "save"]
    for step in steps:
        for nth in range(3):
            kill = _KillAt(step, nth)
            monkeypatch.setattr(export_guard.shutil, "rmtree", kill.wrap("rmtree", shutil.rmtree))
            monkeypatch.setattr(export_guard.os, "replace", kill.wrap("replace", export_guard.os.replace))
            monkeypatch.setattr(export_guard, "_exchange", kill.wrap("exchange", export_guard._exchange))
            save = kill.wrap("save", lambda f: _export_files(f, "new"))
            with contextlib.suppress(_Killed):
                export_guard.publish(out, save, {}, overwrite=True)
            monkeypatch.undo()
            now = snapshot(out)
            assert {"config.json", "model.safetensors", export_guard.MARKER} <= set(now)
            assert now == old or all("new" in (out / f).read_text() for f in now if f != export_guard.MARKER)
            if now != old:  # replaced: put the old one back for the next interruption
                export_guard.publish(out, lambda f: _export_files(f, "old"), {}, overwrite=True)
                assert snapshot(out) == old
