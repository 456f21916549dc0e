"""Two real gasp commands writing one folder at once: the second is refused at once, naming the first
(which goes on undisturbed)."""

import os
import signal
import time

import pytest
from cli_harness import TRAIN_ARGS, run_gasp, start_gasp

from gasp.locks import lock_path, read_holder


def _wait_for_lock(proc, folder) -> None:
    """Wait until ``proc`` holds the writer lock of ``folder`` (its record names it)."""
    deadline = time.monotonic() + 240
    while read_holder(lock_path(folder)).get("pid") != proc.pid:
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "the first writer never took its lock"
        time.sleep(0.01)


def _refused_by(res, proc, command: str) -> None:
    assert res.returncode == 2, res.stderr[-2000:]
    assert f"`gasp {command}` (pid {proc.pid} on " in res.stderr and "Traceback" not in res.stderr


def _stop(proc) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_two_prepare_runs_with_different_settings(tmp_path):
    out = tmp_path / "data"
    common = ("prepare", "--sequences-per-scene", "2", "--min-frames", "3", "--max-frames", "4")
    first = start_gasp(*common, "--synthetic", "16", "--seed", "0", "--output", out)  # runs long enough
    try:
        _wait_for_lock(first, out)
        res = run_gasp(*common, "--synthetic", "1", "--seed", "7", "--output", out)
        _refused_by(res, first, "prepare")
        assert first.poll() is None, "the first run was disturbed"
    finally:
        _stop(first)


@pytest.mark.slow
def test_second_train_and_resume_against_a_live_run_are_refused(tmp_path):
    out = tmp_path / "run"
    first = start_gasp(*TRAIN_ARGS, "--max-steps", "100000", "--output-dir", out)
    try:
        _wait_for_lock(first, out)
        # Two at once (as when a job is submitted twice): each is refused, neither writes.
        second = start_gasp(*TRAIN_ARGS, "--max-steps", "4", "--lr", "0.1", "--output-dir", out)
        resume = run_gasp(*TRAIN_ARGS, "--max-steps", "100000", "--output-dir", out, "--resume")
        _refused_by(resume, first, "train")
        assert second.wait(timeout=240) == 2
        assert f"(pid {first.pid} on " in second.stderr.read()
        assert first.poll() is None, "the first run was disturbed"
    finally:
        _stop(first)
