"""Saving and restoring the training state of a run (trained weights, optimizer, scheduler, RNG,
data position) in the checkpoint folders of :mod:`gasp.training.checkpoint`.

Weights and optimizer go through torch's distributed state-dict API
(``torch.distributed.checkpoint.state_dict.get_state_dict`` with ``ignore_frozen_params``, saved with
``torch.distributed.checkpoint``): under DDP the replicated tensors are written once, under FSDP every
process writes its own shard and nothing is gathered, and the frozen base model is never copied.
Under DeepSpeed the engine saves itself (``accelerator.save_state`` -> ``engine.save_checkpoint``).
:func:`read_trainable` consolidates a checkpoint into plain tensors in one process (export, probe).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gasp.errors import BadInputError, ConfigError
from gasp.training import checkpoint as ckpt

MODEL_DIR = "state/model"
OPTIM_DIR = "state/optimizer"
DEEPSPEED_DIR = "deepspeed"


@dataclass
class Position:
    """Where a run continues: optimizer steps done, sequences and (this process's) QA records consumed."""

    step: int = 0
    consumed: int = 0
    qa_consumed: int = 0


def engine_name(accelerator) -> str:
    """``deepspeed`` when the engine checkpoints itself, else ``dcp`` (DDP, FSDP, one process)."""
    from accelerate.utils import DistributedType

    return "deepspeed" if accelerator.distributed_type == DistributedType.DEEPSPEED else "dcp"


def _raw_optimizer(optimizer):
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps it


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(ignore_frozen_params=True, **kw)


def _dcp():
    import torch.distributed.checkpoint as dcp

    return dcp


def save(run, step: int, meta: dict[str, Any]) -> Path:
    """Write checkpoint ``step`` of ``run`` (a :class:`gasp.training.loop.Run`) atomically; every
    process takes part."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    accelerator, out = run.accelerator, run.out
    rank, engine = accelerator.process_index, engine_name(accelerator)
    tmp = ckpt.checkpoint_root(out) / f"step-{step:07d}.tmp"
    if accelerator.is_main_process:
        ckpt.begin(out, step)
    accelerator.wait_for_everyone()
    if engine == "deepspeed":
        # The frozen base is not part of the state (it is reloaded from the base model), as for DCP.
        accelerator.save_state(str(tmp / DEEPSPEED_DIR), exclude_frozen_parameters=True)
    else:
        model_sd, optim_sd = get_state_dict(run.model, _raw_optimizer(run.optimizer), options=_options())
        with warnings.catch_warnings():  # one process: DCP says it runs without a process group
            warnings.simplefilter("ignore", UserWarning)
            _dcp().save(model_sd, checkpoint_id=str(tmp / MODEL_DIR))
            _dcp().save(optim_sd, checkpoint_id=str(tmp / OPTIM_DIR))
    torch.save(ckpt.rng_state(), tmp / f"rng-rank{rank}.pt")
    if run.qa is not None:  # each process has its own position in its share of the QA records
        (tmp / f"qa-rank{rank}.json").write_text(json.dumps({"consumed": run.qa.consumed}))
    if accelerator.is_main_process:
        torch.save(run.scheduler.state_dict(), tmp / "scheduler.pt")
        state = {
            "step": step,
            "consumed": run.stream.consumed,
            "num_processes": accelerator.num_processes,
            "engine": engine,
            "sharded": run.sharded,
            **meta,
        }
        ckpt.write_state(tmp, state)
    accelerator.wait_for_everyone()
    final = tmp.with_name(tmp.name[: -len(".tmp")])
    if accelerator.is_main_process:
        ckpt.commit(tmp, run.cfg.keep_last)
    accelerator.wait_for_everyone()
    return final


def load(run, last: Path) -> Position:
    """Restore checkpoint ``last`` into the prepared model, optimizer and scheduler of ``run``.

    Raises:
        ConfigError: the checkpoint was written by another number of processes (the data split, the
            QA positions and the RNG streams are per process), or by another engine.
    """
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    accelerator = run.accelerator
    state = ckpt.read_state(last)
    saved_world = int(state.get("num_processes", 1))
    if saved_world != accelerator.num_processes:
        raise ConfigError(
            f"{last} was written by {saved_world} process(es) and this run has {accelerator.num_processes}: "
            f"resume with the same number (accelerate launch --num_processes {saved_world} ...); each "
            "process's data slice, QA position and RNG streams are part of the state"
        )
    engine = engine_name(accelerator)
    if state.get("engine", "dcp") != engine:
        raise ConfigError(
            f"{last} was written under {state.get('engine')!r} and this run uses {engine!r}; resume with the "
            "accelerate config the run started with"
        )
    if engine == "deepspeed":
        # Not strict: the checkpoint holds no frozen weights (they come from the base model).
        accelerator.load_state(str(last / DEEPSPEED_DIR), load_module_strict=False)
    else:
        optimizer = _raw_optimizer(run.optimizer)
        model_sd, optim_sd = get_state_dict(run.model, optimizer, options=_options())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            _dcp().load(model_sd, checkpoint_id=str(last / MODEL_DIR))
            _dcp().load(optim_sd, checkpoint_id=str(last / OPTIM_DIR))
        set_state_dict(
            run.model,
            optimizer,
            model_state_dict=model_sd,
            optim_state_dict=optim_sd,
            options=_options(strict=False),
        )
    run.scheduler.load_state_dict(torch.load(last / "scheduler.pt", weights_only=False))
    rank = accelerator.process_index
    ckpt.set_rng_state(torch.load(last / f"rng-rank{rank}.pt", weights_only=False))
    pos = Position(int(state["step"]), int(state["consumed"]))
    qa_file = last / f"qa-rank{rank}.json"
    if qa_file.is_file():
        pos.qa_consumed = int(json.loads(qa_file.read_text())["consumed"])
    return pos


def read_trainable(path: Path) -> dict[str, torch.Tensor]:
    """Every trained tensor of complete checkpoint ``path`` by name (``model.*``, ``heads.*``), whole
    (shards of all processes joined), on the CPU, in this process.

    Raises:
        BadInputError: the checkpoint's weights are missing or unreadable.
    """
    if (path / DEEPSPEED_DIR).is_dir():
        return _read_deepspeed(path / DEEPSPEED_DIR)
    where = path / MODEL_DIR
    if not (where / ".metadata").is_file():
        raise BadInputError(f"{where}: missing (the checkpoint's trained weights); the checkpoint is damaged")
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            tensors = _load_state_dict_from_keys(checkpoint_id=str(where))
    except Exception as exc:  # DCP raises CheckpointException and friends for damaged shards
        raise BadInputError(f"{where}: unreadable checkpoint shards ({exc})") from exc
    return {k: v.detach().cpu() for k, v in tensors.items() if torch.is_tensor(v)}


def _read_deepspeed(folder: Path) -> dict[str, torch.Tensor]:
    """Consolidate a DeepSpeed ZeRO checkpoint (accelerate names its tag ``pytorch_model``)."""
    try:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    except ImportError as exc:
        raise BadInputError(
            f"{folder}: a DeepSpeed checkpoint; reading it needs `pip install deepspeed`"
        ) from exc
    found = get_fp32_state_dict_from_zero_checkpoint(
        str(folder), tag="pytorch_model", exclude_frozen_parameters=True
    )
    return dict(found)
