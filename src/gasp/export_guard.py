"""Where ``gasp export`` may write, and how it replaces a previous export without a moment of neither.

An export folder is marked by a small ``gasp-export.json`` that export writes into it. The output folder
is refused when it:

- is a file;
- is, contains, or lies inside the checkpoint or the run being exported (symlinks resolved);
- holds a training run (``checkpoints/``, a checkpoint ``state.json``, ``metrics.jsonl``) or prepared
  data (a ``manifest.json`` whose ``format`` names a gasp format), or lies inside prepared data;
- is not empty and holds no export marker: ``--overwrite`` replaces only a previous export, never a
  folder export did not write.

The new export is written to a hidden sibling folder and swapped in with one atomic rename exchange
(``renameat2(RENAME_EXCHANGE)`` on Linux), so a kill at any moment leaves the previous export or the new
one at ``--output-dir``, plus at most a leftover sibling the next export removes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gasp.errors import ConfigError

MARKER = "gasp-export.json"
_TRAINING_RUN = ("checkpoints", "state.json", "metrics.jsonl")  # any one of these marks a run folder
_MAX_SCAN = 10_000  # entries looked at when checking what a previous export folder holds


def _manifest_format(folder: Path) -> str | None:
    """The ``format`` of ``folder/manifest.json`` when it names a gasp data format, else None."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    return fmt if isinstance(fmt, str) and fmt.lower().startswith("gasp") else None


def holds_gasp_data(folder: Path) -> str | None:
    """What ``folder`` holds that export must never replace ("a training run", "prepared data"), or None."""
    if any((folder / name).exists() for name in _TRAINING_RUN):
        return "a training run"
    fmt = _manifest_format(folder)
    if fmt is not None:
        return f"prepared data (manifest.json format {fmt!r})"
    return None


def _is_export(folder: Path) -> bool:
    try:
        return json.loads((folder / MARKER).read_text()).get("format") == "gasp-export"
    except (OSError, ValueError, AttributeError):
        return False


def _relation(out: Path, other: Path) -> str | None:
    if out == other:
        return "is"
    if out in other.parents:
        return "contains"
    if other in out.parents:
        return "lies inside"
    return None


def _run_of(ckpt: Path) -> list[Path]:
    """The run folder of checkpoint ``ckpt``: its nearest ancestor (up to 3 levels) that holds a run."""
    for folder in list(ckpt.parents)[:3]:
        if holds_gasp_data(folder) == "a training run":
            return [folder]
    return []


def check_output_dir(out: Path, checkpoint: Path, ckpt: Path, overwrite: bool) -> None:
    """Refuse an ``--output-dir`` export must not write (see the module docstring).

    Args:
        out: the ``--output-dir`` as given.
        checkpoint: the ``--checkpoint`` as given (a run or a checkpoint folder).
        ckpt: the checkpoint folder it resolved to.
        overwrite: ``--overwrite`` was passed.

    Raises:
        ConfigError: naming the folder and what it is, is inside or holds.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output-dir {out} is a file, not a folder; choose a new or empty folder")
    real = out.resolve()
    for folder in (checkpoint.resolve(), ckpt.resolve(), *_run_of(ckpt.resolve())):
        relation = _relation(real, folder)
        if relation is not None:
            raise ConfigError(
                f"--output-dir {out} {relation} {folder}, which is being exported; "
                "choose a folder outside the run"
            )
    held = holds_gasp_data(real)
    if held is not None:
        raise ConfigError(f"--output-dir {out} holds {held}; choose another folder")
    for folder in real.parents:
        fmt = _manifest_format(folder)
        if fmt is not None:
            raise ConfigError(
                f"--output-dir {out} lies inside {folder}, which holds prepared data (manifest.json "
                f"format {fmt!r}); choose a folder outside it"
            )
    if _check_replaceable(out, overwrite):
        _check_export_contents(out)


def _check_replaceable(out: Path, overwrite: bool) -> bool:
    """True when ``out`` holds a previous export that ``overwrite`` allows replacing, False when ``out`` is
    absent or empty; else raise."""
    if not out.is_dir() or not any(out.iterdir()):
        return False
    if not _is_export(out):
        raise ConfigError(
            f"--output-dir {out} is not empty and is not a previous gasp export (no {MARKER}); "
            "--overwrite replaces only a previous export: choose a new or empty folder"
        )
    if not overwrite:
        raise ConfigError(f"--output-dir {out} holds a previous export; pass --overwrite to replace it")
    return True


def _check_export_contents(out: Path) -> None:
    """Refuse a marked export folder that nevertheless holds a run or prepared data somewhere inside."""
    for seen, (dirpath, dirnames, _) in enumerate(os.walk(out)):
        held = holds_gasp_data(Path(dirpath))
        if held is not None:
            raise ConfigError(f"--output-dir {out}: {dirpath} holds {held}; move it out before --overwrite")
        if seen > _MAX_SCAN:
            raise ConfigError(f"--output-dir {out} holds too many folders to be an export; choose another")
        dirnames.sort()


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux ``renameat2``); False where the system cannot."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    if not hasattr(libc, "renameat2"):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL / ENOSYS / EOPNOTSUPP: file system without exchange
        return False
    raise OSError(err, os.strerror(err), str(a))


def _siblings(out: Path) -> tuple[Path, Path]:
    return out.with_name(f".{out.name}.gasp-new"), out.with_name(f".{out.name}.gasp-old")


def publish(out: Path, save: Callable[[Path], None], info: dict[str, Any], overwrite: bool) -> Path:
    """Write an export with ``save(folder)`` plus the marker, then put it at ``out`` atomically.

    Call under the export lock of ``out``, after :func:`check_output_dir` (``out`` is checked again
    here, under the lock, in case another export wrote it meanwhile).

    Args:
        out: the output folder (absent, empty, or a previous export).
        save: writes the model files into the folder it is given.
        info: recorded in the marker (e.g. the checkpoint exported).
        overwrite: ``--overwrite`` was passed.

    Returns:
        ``out``.
    """
    new, old = _siblings(out)
    if not out.exists() and _is_export(old):  # a fallback swap was killed between its two renames
        os.replace(old, out)
    _check_replaceable(out, overwrite)
    for leftover in (new, old):
        shutil.rmtree(leftover, ignore_errors=True)
    new.mkdir(parents=True)
    save(new)
    (new / MARKER).write_text(json.dumps({"format": "gasp-export", "version": 1, **info}, indent=2) + "\n")
    if out.exists() and _exchange(new, out):
        shutil.rmtree(new)
        return out
    if out.exists():
        os.replace(out, old)
    os.replace(new, out)
    shutil.rmtree(old, ignore_errors=True)
    return out
