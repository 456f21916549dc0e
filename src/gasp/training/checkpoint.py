"""Run checkpoints: atomic folders under ``OUTPUT_DIR/checkpoints/step-XXXXXXX``.

A checkpoint folder holds::

    adapter/              peft LoRA weights (adapter_model.safetensors + adapter_config.json);
                          absent for ``--finetune full`` runs
    trainable.safetensors every trained tensor by name: ``model.*`` (the LoRA weights, or with
                          ``--finetune full`` every trained model weight) and ``heads.*``
    optimizer.pt          optimizer state
    scheduler.pt          LR scheduler state
    rng-rank{r}.pt        python / numpy / torch (/ CUDA) RNG states of every process
    state.json            step, sequences consumed, base model folder, finetune kind, the TrainConfig

It is written to ``step-XXXXXXX.tmp`` and renamed, so a folder without ``.tmp`` is always complete;
only the newest ``keep_last`` are kept. The base model is stored once per run under
``OUTPUT_DIR/base`` when it is a random-weight preset (its weights exist nowhere else).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gasp.errors import BadInputError

STATE = "state.json"
_STEP_DIR = re.compile(r"step-(\d{7})")


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.fullmatch(p.name) and (p / STATE).is_file()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or a run folder (its newest checkpoint).

    Raises:
        BadInputError: neither a checkpoint nor a run folder with a checkpoint.
    """
    path = Path(path)
    if (path / STATE).is_file():
        return path
    found = list_checkpoints(path)
    if not found:
        raise BadInputError(
            f"{path}: no checkpoint here (expected {STATE} or checkpoints/step-XXXXXXX/{STATE}); "
            "train with `gasp train --output-dir ...` first"
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


def commit(tmp: Path, keep_last: int) -> Path:
    """Rename ``tmp`` to its final name (replacing an older one) and delete all but ``keep_last``."""
    final = tmp.with_name(tmp.name[: -len(".tmp")])
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(tmp.parent.parent)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def write_state(tmp: Path, state: dict[str, Any]) -> None:
    (tmp / STATE).write_text(json.dumps(state, indent=2) + "\n")
