"""Run checkpoints: atomic folders under ``OUTPUT_DIR/checkpoints/step-XXXXXXX``.

A checkpoint folder holds (:mod:`gasp.training.state` writes it)::

    state/                the trained tensors and the optimizer state as a torch.distributed.checkpoint
                          (DCP) folder: every process writes its own shard (``*.distcp``), ``.metadata``
                          maps them; LoRA (or, with ``--finetune full``, every trained model weight)
                          under ``model.*``, the heads under ``heads.*``; frozen weights are not saved
    deepspeed/            instead of ``state/`` under DeepSpeed: the engine's own checkpoint
    scheduler.pt          LR scheduler state
    rng-rank{r}.pt        python / numpy / torch (/ CUDA) RNG states of every process
    qa-rank{r}.json       each process's position in its share of the QA records (with --qa-data)
    state.json            step, sequences consumed, processes, engine, base model, finetune, config
    COMPLETE              completion marker, written last

A checkpoint is written to ``step-XXXXXXX.tmp``; the marker is written when everything else is in
place, then the folder is renamed. Rotation (only the newest ``keep_last`` are kept) deletes an old
checkpoint's marker FIRST, then its files, so a kill at any moment never leaves a folder that looks
complete and is not. Readers (resume, export, probe) take only folders with the marker;
:func:`leftovers` lists the rest (cleaned by the next training run of that folder, reported by
export and probe). The base model is stored once per run under ``OUTPUT_DIR/base`` when it is a
random-weight preset (its weights exist nowhere else).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gasp.errors import BadInputError

log = logging.getLogger(__name__)

STATE = "state.json"
MARKER = "COMPLETE"
_STEP_DIR = re.compile(r"step-(\d{7})")


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def is_complete(path: Path) -> bool:
    """Whether ``path`` is a committed checkpoint (its completion marker exists)."""
    return (path / MARKER).is_file() and (path / STATE).is_file()


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.fullmatch(p.name) and is_complete(p)]
    return sorted(found, key=lambda p: int(p.name[5:]))


def leftovers(output_dir: str | Path) -> list[Path]:
    """Entries of ``OUTPUT_DIR/checkpoints`` that are not complete checkpoints: interrupted saves
    (``*.tmp``) and folders an interrupted rotation left without their marker."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    complete = set(list_checkpoints(output_dir))
    return sorted(p for p in root.iterdir() if p not in complete)


def clean_leftovers(output_dir: str | Path) -> list[Path]:
    """Delete :func:`leftovers` (the run's writer only); returns what was removed."""
    gone = leftovers(output_dir)
    for p in gone:
        log.warning("removing incomplete checkpoint %s (interrupted save or rotation)", p)
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
    return gone


def resolve_checkpoint(path: str | Path) -> Path:
    """A complete checkpoint folder, or a run folder (its newest complete checkpoint).

    Raises:
        BadInputError: an incomplete checkpoint (no completion marker), or neither a checkpoint nor a
            run folder with a complete checkpoint.
    """
    path = Path(path)
    if (path / STATE).is_file() or (_STEP_DIR.fullmatch(path.name.removesuffix(".tmp")) and path.is_dir()):
        if not is_complete(path):
            raise BadInputError(
                f"{path}: incomplete checkpoint (no {MARKER} marker): its save or a rotation was "
                "interrupted, so its files may be missing or partial; use another checkpoint of the run "
                "(or the run folder, whose newest complete checkpoint is taken)"
            )
        return path
    found = list_checkpoints(path)
    left = leftovers(path)
    if left:
        log.warning(
            "%s: ignoring %d incomplete checkpoint folder(s) (%s); the next `gasp train --resume` of this "
            "run removes them",
            path,
            len(left),
            ", ".join(p.name for p in left),
        )
    if not found:
        raise BadInputError(
            f"{path}: no checkpoint here (a complete one has {STATE} and {MARKER}, in this folder or in "
            "checkpoints/step-XXXXXXX/); train with `gasp train --output-dir ...` first"
        )
    return found[-1]


def read_state(ckpt: Path) -> dict[str, Any]:
    try:
        return json.loads((ckpt / STATE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{ckpt / STATE}: unreadable checkpoint state ({exc})") from exc


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def begin(output_dir: str | Path, step: int) -> Path:
    """Create (empty) the temporary folder of checkpoint ``step``."""
    tmp = checkpoint_root(output_dir) / f"step-{step:07d}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove(ckpt: Path) -> None:
    """Delete a checkpoint: its marker first, so a kill midway leaves it visibly incomplete."""
    marker = ckpt / MARKER
    if marker.exists():
        marker.unlink()
        _fsync_dir(ckpt)
    shutil.rmtree(ckpt, ignore_errors=True)


def commit(tmp: Path, keep_last: int) -> Path:
    """Write the marker into ``tmp`` (last), rename it to its final name (replacing an older one) and
    delete all but the newest ``keep_last`` checkpoints."""
    final = tmp.with_name(tmp.name[: -len(".tmp")])
    for f in tmp.rglob("*"):
        if f.is_file():
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
    (tmp / MARKER).write_text(json.dumps({"step": int(final.name[5:])}) + "\n")
    _fsync_dir(tmp)
    if final.exists():
        remove(final)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    for old in list_checkpoints(tmp.parent.parent)[:-keep_last]:
        remove(old)
    return final


def write_state(tmp: Path, state: dict[str, Any]) -> None:
    (tmp / STATE).write_text(json.dumps(state, indent=2) + "\n")
