"""One writer per folder: the lock refuses a second writer at once, names the holder, and is free again
as soon as its holder dies (however it dies)."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gasp.locks import FolderBusyError, folder_lock, lock_path, read_holder

_HOLD = textwrap.dedent(
    """
    import sys, time
    from gasp.locks import folder_lock
    with folder_lock(sys.argv[1], sys.argv[2], beside=sys.argv[3] == "beside"):
        print("locked", flush=True)
        time.sleep(120)
    """
)


def _hold(folder: Path, command: str = "prepare", beside: bool = False) -> subprocess.Popen:
    """A separate process holding the lock of ``folder`` (returns once it holds it)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(folder), command, "beside" if beside else "inside"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_is_refused_with_the_holder_named(tmp_path):
    proc = _hold(tmp_path / "out")
    try:
        with pytest.raises(FolderBusyError) as err, folder_lock(tmp_path / "out", "train"):
            pass
        text = str(err.value)
        assert f"pid {proc.pid}" in text and socket.gethostname() in text and "gasp prepare" in text
        assert "started 20" in text  # an ISO date
    finally:
        proc.kill()
        proc.wait()


def test_lock_of_a_killed_holder_is_taken_over(tmp_path):
    proc = _hold(tmp_path / "out")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with folder_lock(tmp_path / "out", "train"):
        assert read_holder(lock_path(tmp_path / "out"))["pid"] == os.getpid()
    assert read_holder(lock_path(tmp_path / "out")) == {}  # released: nobody recorded


def test_lock_is_exclusive_within_one_process_too(tmp_path):
    with folder_lock(tmp_path, "probe"), pytest.raises(FolderBusyError), folder_lock(tmp_path, "probe"):
        pass


def test_beside_lock_lives_next_to_the_folder(tmp_path):
    out = tmp_path / "export"
    with folder_lock(out, "export", beside=True):
        assert lock_path(out, beside=True).parent == tmp_path and not out.exists()
        with pytest.raises(FolderBusyError), folder_lock(out, "export", beside=True):
            pass


def _gasp(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gasp", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["prepare", "--synthetic", "1", "--sequences-per-scene", "1", "--output", "{out}"],
        ["train", "--config", "debug", "--output-dir", "{out}", "--resume"],
        ["probe", "--model", "tiny-qwen2.5-vl", "--data", "{out}", "--output-dir", "{out}"],
        ["export", "--checkpoint", "{run}", "--output-dir", "{out}"],
        [
            "eval",
            "score",
            "--benchmark",
            "vsibench",
            "--questions",
            "q.parquet",
            "--predictions",
            "p.jsonl",
            "--output-dir",
            "{out}",
        ],
    ],
    ids=["prepare", "train-resume", "probe", "export", "eval"],
)
def test_every_writing_command_refuses_a_busy_folder(tmp_path, argv, request):
    out = tmp_path / "out"
    if "{run}" in argv:  # export checks its checkpoint and output folder before it takes the lock
        argv = [a.replace("{run}", str(request.getfixturevalue("tiny_run"))) for a in argv]
    holder = _hold(out, beside=argv[0] == "export")  # export locks a file next to its output folder
    try:
        t0 = time.monotonic()
        res = _gasp(*[a.replace("{out}", str(out)) for a in argv])
        assert res.returncode == 2, res.stderr
        assert f"pid {holder.pid}" in res.stderr and "Traceback" not in res.stderr
        assert time.monotonic() - t0 < 60  # refused at once, not after doing the work
    finally:
        holder.kill()
        holder.wait()


def test_pool_workers_die_with_their_parent(tmp_path):
    """`gasp prepare --workers N`: after SIGKILL of the parent its workers exit too."""
    script = textwrap.dedent(
        """
        import multiprocessing as mp, os, sys, time
        from gasp.procs import die_with_parent

        def init(parent):
            die_with_parent(parent)

        def work(_):
            time.sleep(120)

        if __name__ == "__main__":
            pool = mp.get_context("spawn").Pool(2, initializer=init, initargs=(os.getpid(),))
            pool.map_async(work, range(2))
            time.sleep(3)
            print(" ".join(str(p.pid) for p in pool._pool), flush=True)
            time.sleep(120)
        """
    )
    path = tmp_path / "pool.py"
    path.write_text(script)
    proc = subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE, text=True)
    workers = [int(p) for p in proc.stdout.readline().split()]
    assert len(workers) == 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20
    alive = workers
    while alive and time.monotonic() < deadline:
        alive = [p for p in workers if Path(f"/proc/{p}").exists() and "Z" not in _state(p)]
        time.sleep(0.2)
    assert not alive, f"workers {alive} outlived their killed parent"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return "Z"
