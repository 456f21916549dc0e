"""Saving and restoring the training state of a run (weights, optimizer, scheduler, RNG, data
position) in the checkpoint folders of :mod:`gasp.training.checkpoint`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gasp.errors import ConfigError
from gasp.training import checkpoint as ckpt


@dataclass
class Position:
    """Where a run continues: optimizer steps done, sequences and (this process's) QA records consumed."""

    step: int = 0
    consumed: int = 0
    qa_consumed: int = 0


def trainable_state(objective) -> dict[str, torch.Tensor]:
    """Trainable model (LoRA, or all weights with ``--finetune full``) + head parameters by name
    (what a checkpoint must restore)."""
    return {n: p.detach().cpu().contiguous() for n, p in objective.named_parameters() if p.requires_grad}


def load(last: Path, objective, optimizer, scheduler, rank: int) -> Position:
    """Restore checkpoint ``last`` into the (not yet prepared) objective, optimizer and scheduler."""
    from safetensors.torch import load_file

    state = ckpt.read_state(last)
    saved = load_file(str(last / "trainable.safetensors"))
    absent = sorted({n for n, p in objective.named_parameters() if p.requires_grad} - set(saved))
    if absent:
        raise ConfigError(f"{last}: checkpoint lacks {len(absent)} trainable tensors, e.g. {absent[:3]}")
    missing = objective.load_state_dict(saved, strict=False)
    if missing.unexpected_keys:
        raise ConfigError(f"{last}: checkpoint does not fit this model ({missing.unexpected_keys[:3]} ...)")
    optimizer.load_state_dict(torch.load(last / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(last / "scheduler.pt", weights_only=False))
    rng_file = last / f"rng-rank{rank}.pt"
    if rng_file.is_file():
        ckpt.set_rng_state(torch.load(rng_file, weights_only=False))
    pos = Position(int(state["step"]), int(state["consumed"]))
    qa_file = last / f"qa-rank{rank}.json"
    if qa_file.is_file():
        pos.qa_consumed = int(json.loads(qa_file.read_text())["consumed"])
    return pos


def save(run, step: int, meta: dict[str, Any]) -> Path:
    """Write checkpoint ``step`` of ``run`` (a :class:`gasp.training.loop.Run`) atomically."""
    from safetensors.torch import save_file

    accelerator, out = run.accelerator, run.out
    rank = accelerator.process_index
    tmp = ckpt.checkpoint_root(out) / f"step-{step:07d}.tmp"
    if accelerator.is_main_process:
        ckpt.begin(out, step)
    accelerator.wait_for_everyone()
    torch.save(ckpt.rng_state(), tmp / f"rng-rank{rank}.pt")
    if run.qa is not None:  # each process has its own position in its share of the QA records
        (tmp / f"qa-rank{rank}.json").write_text(json.dumps({"consumed": run.qa.consumed}))
    if accelerator.is_main_process:
        if run.peft_model is not None:
            run.peft_model.save_pretrained(str(tmp / "adapter"))
        save_file(trainable_state(run.objective), str(tmp / "trainable.safetensors"))
        torch.save(run.optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(run.scheduler.state_dict(), tmp / "scheduler.pt")
        ckpt.write_state(tmp, {"step": step, "consumed": run.stream.consumed, **meta})
    accelerator.wait_for_everyone()
    final = tmp.with_name(tmp.name[: -len(".tmp")])
    if accelerator.is_main_process:
        ckpt.commit(tmp, run.cfg.keep_last)
    accelerator.wait_for_everyone()
    return final
