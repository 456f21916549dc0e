"""Helpers of the reliability suite: the ``gasp`` CLI in a subprocess, whole-tree snapshots, kills.

The suite drives gasp only through its command line and compares observable outputs (whole folders,
metrics.jsonl), so it keeps holding while the modules behind the commands change.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import gasp

SRC = Path(gasp.__file__).resolve().parents[1]  # the sources this test process imports
LOCKS = (".gasp-lock",)  # lock files record their holder: not part of a command's output


def gasp_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def gasp_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "gasp", *map(str, args)]


def run_gasp(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``gasp ARGS`` to completion (output captured)."""
    return subprocess.run(gasp_cmd(*args), capture_output=True, text=True, timeout=timeout, env=gasp_env())


def start_gasp(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        gasp_cmd(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=gasp_env()
    )


def snapshot(root: Path, skip: Callable[[Path], bool] = lambda p: False) -> dict[str, str]:
    """Every file under ``root`` (relative path -> sha256), lock files and ``skip``-ped paths left out."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and not path.name.endswith(LOCKS) and not skip(rel):
            found[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], delay: float, limit: float = 240) -> bool:
    """SIGKILL ``proc`` ``delay`` seconds after ``ready()`` first holds (polled every 5 ms).

    Returns True when the kill hit a running process, False when it had already exited.
    """
    deadline = time.monotonic() + limit
    while not ready():
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, "the kill point was never reached"
        time.sleep(0.005)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def check_ok(res: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert res.returncode == 0, res.stderr[-3000:]
    return res


# Tiny `gasp train --config debug` arguments shared by the tests (one synthetic scene, short sequences).
TRAIN_ARGS = (
    "train",
    "--config",
    "debug",
    "--synthetic-scenes",
    "1",
    "--synthetic-sequences",
    "2",
    "--progress",
    "false",
)
