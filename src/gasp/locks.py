"""One writer per folder: an exclusive lock every writing command holds while it runs.

``gasp prepare``, ``train``, ``export``, ``probe``, ``eval run`` (and ``annotate``) take the lock of their
output folder before they write anything. A second writer is refused at once with a
:class:`FolderBusyError` that names the holder (command, pid, host, start time).

The lock is an advisory ``flock`` on a small file (``.gasp-lock`` inside the folder, or a file beside it
for commands that replace their folder whole). The kernel drops it when the holder's last file
descriptor closes, so a lock left by a killed process needs no clean-up: the next writer simply gets
it. Worker processes forked by the holder share its descriptor and keep the lock until they exit too,
so a re-run never races the workers of a killed run. The file itself is never deleted (deleting a
lock file races with processes that have it open); it only records who holds it.

Scope: ``flock`` is reliable on local file systems and on NFSv4 (Linux maps it to POSIX locks).
Some cluster file systems (Lustre mounted without ``flock``) ignore it: there, the lock is only as
good as the mount.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gasp.errors import GaspError

LOCK_NAME = ".gasp-lock"

if sys.platform == "win32":  # pragma: no cover - gasp is tested on Linux
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False


class FolderBusyError(GaspError):
    """Another process is writing the folder; the message names it."""


def lock_path(folder: str | Path, beside: bool = False) -> Path:
    """The lock file of ``folder``: inside it, or (``beside=True``) next to it as ``.NAME.gasp-lock``
    for commands that build their output elsewhere and rename it into place."""
    folder = Path(folder)
    if beside:
        return folder.parent / f".{folder.name}{LOCK_NAME}"
    return folder / LOCK_NAME


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process (it has not yet recorded who it is)"
    pid, host = holder.get("pid"), holder.get("host", "?")
    text = f"`gasp {holder.get('command', '?')}` (pid {pid} on {host}, started {holder.get('started', '?')})"
    if host == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid):
        text += "; that process has exited but processes it started (e.g. workers) still hold the lock"
    return text


def read_holder(path: str | Path) -> dict[str, Any]:
    """What the lock file at ``path`` says about its holder ({} when empty or unreadable)."""
    try:
        return json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def folder_lock(
    folder: str | Path, command: str, *, beside: bool = False, enabled: bool = True
) -> Iterator[None]:
    """Hold the exclusive writer lock of ``folder`` for the body of the ``with`` block.

    Args:
        folder: the output folder (created when the lock lives inside it).
        command: the gasp command, for the message another writer gets (e.g. ``"prepare"``).
        beside: keep the lock file next to the folder (see :func:`lock_path`).
        enabled: ``False`` makes this a no-op (processes of a distributed run other than the main one).

    Raises:
        FolderBusyError: another live process holds the lock.
    """
    if not enabled:
        yield
        return
    path = lock_path(folder, beside)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd):
            raise FolderBusyError(
                f"{Path(folder)} is being written by {_describe(read_holder(path))}; wait for it to finish "
                f"or stop it, then run this again (lock file {path})"
            )
        holder = {
            "command": command,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)
