"""Child processes that never outlive the command that started them."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Make this (worker) process receive SIGKILL when its parent ``parent`` dies (Linux), and exit
    at once if the parent is already gone. Elsewhere a no-op: the folder lock still keeps a re-run
    from racing leftover workers there.

    Call it first thing in a pool initializer, with the parent's pid captured before the pool starts.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
