"""The optimisation loop of ``gasp train``: micro-batches, gradient accumulation, skipped steps,
logging, periodic checkpoints and stopping on SIGTERM or ``--stop-at-step``."""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gasp.config import TrainConfig
from gasp.training import state as tstate
from gasp.training.feed import next_batch
from gasp.training.metrics import MetricsLog

log = logging.getLogger("gasp.train")


class StopFlag:
    """SIGTERM -> finish the current step, save a checkpoint, exit."""

    def __init__(self) -> None:
        self.requested = False
        self._old = None

    def __enter__(self) -> StopFlag:
        try:
            self._old = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            self._old = None
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


@dataclass
class Run:
    """Everything the loop works on (built by :func:`gasp.train.train`)."""

    cfg: TrainConfig
    accelerator: Any
    adapter: Any
    objective: torch.nn.Module
    model: torch.nn.Module  # the objective as prepared by accelerate
    peft_model: Any
    optimizer: Any
    scheduler: Any
    stream: Any
    qa: Any
    out: Path
    meta: dict[str, Any] = field(default_factory=dict)  # recorded in every checkpoint's state.json


@dataclass
class LoopResult:
    last_saved: Path | None
    stopped_early: bool


def _micro_step(
    run: Run, micro_index: int, sync: bool, step: int
) -> tuple[dict[str, torch.Tensor], bool, int]:
    """Forward + backward of one micro-batch: ``(logs, non-finite loss on some process, visual tokens)``."""
    cfg, accelerator = run.cfg, run.accelerator
    batch = next_batch(cfg, run.adapter, run.stream, run.qa, micro_index)
    inputs = {k: v.to(accelerator.device) for k, v in batch.inputs.items()}
    targets = None
    if batch.targets is not None:
        targets = {k: v.to(accelerator.device) for k, v in batch.targets.items()}
    ctx = contextlib.nullcontext() if sync else accelerator.no_sync(run.model)
    bad = False
    with ctx:
        loss, logs = run.model(inputs, batch.visual_positions.to(accelerator.device), targets)
        finite = accelerator.reduce(torch.isfinite(loss.detach()).float().reshape(1), "sum")
        if float(finite.item()) < accelerator.num_processes:
            bad = True
            if accelerator.is_main_process:
                log.warning(
                    "step %d: non-finite loss (sequences %s); skipping the step",
                    step + 1,
                    ", ".join(batch.sequence_ids),
                )
        else:
            accelerator.backward(loss / cfg.grad_accum)
    logs["loss"] = loss.detach()
    return logs, bad, batch.num_visual_tokens


def _optimizer_step(run: Run, trainable: list[torch.Tensor], bad: bool, step: int) -> tuple[bool, Any]:
    """Clip and step unless the step is skipped; returns ``(skipped, grad norm or None)``."""
    cfg, accelerator = run.cfg, run.accelerator
    grad_norm = None  # stays None without clipping, or under DeepSpeed (it clips itself)
    if not bad:
        if cfg.grad_clip > 0:
            grad_norm = accelerator.clip_grad_norm_(trainable, cfg.grad_clip)
        if grad_norm is None or bool(torch.isfinite(torch.as_tensor(grad_norm))):
            run.optimizer.step()
        else:
            bad = True
            if accelerator.is_main_process:
                log.warning("step %d: non-finite gradient norm; skipping the step", step + 1)
    run.optimizer.zero_grad(set_to_none=True)
    return bad, grad_norm


def run_loop(run: Run, step: int, last_saved: Path | None, metrics: MetricsLog) -> LoopResult:
    """Train from optimizer step ``step`` to ``cfg.max_steps`` (or until told to stop)."""
    from tqdm import tqdm

    cfg, accelerator = run.cfg, run.accelerator
    world = accelerator.num_processes
    trainable = [p for p in run.objective.parameters() if p.requires_grad]
    bar = tqdm(
        total=cfg.max_steps,
        initial=step,
        desc="train",
        dynamic_ncols=True,
        disable=not (accelerator.is_main_process and cfg.progress),
    )
    stopped = False
    with StopFlag() as stop:
        while step < cfg.max_steps:
            t0 = time.perf_counter()
            sums: dict[str, torch.Tensor] = {}
            counts: dict[str, int] = {}
            bad = False
            tokens = 0
            for micro in range(cfg.grad_accum):
                sync = micro == cfg.grad_accum - 1
                logs, micro_bad, n = _micro_step(run, step * cfg.grad_accum + micro, sync, step)
                bad, tokens = bad or micro_bad, tokens + n
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + v.float()
                    counts[k] = counts.get(k, 0) + 1
            bad, grad_norm = _optimizer_step(run, trainable, bad, step)
            lr = run.scheduler.get_last_lr()[0]
            run.scheduler.step()
            step += 1

            keys = sorted(sums)
            means = torch.stack([sums[k] / counts[k] for k in keys]).to(accelerator.device)
            means = accelerator.reduce(means, "mean")
            tok = accelerator.reduce(torch.tensor([float(tokens)], device=accelerator.device), "sum")
            dt = time.perf_counter() - t0
            if accelerator.is_main_process:
                row: dict[str, float] = {"step": step, **{k: float(v) for k, v in zip(keys, means)}}
                row.update(
                    lr=lr,
                    skipped=float(bad),
                    grad_norm=float("nan") if grad_norm is None else float(grad_norm),
                    sequences_per_s=cfg.batch_size * world * cfg.grad_accum / dt,
                    visual_tokens_per_s=float(tok) / dt,
                    step_time_s=dt,
                )
                metrics.append(row)
                bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{lr:.2e}")
            bar.update(1)

            flag = accelerator.reduce(torch.tensor([float(stop.requested)], device=accelerator.device), "sum")
            stop_now = float(flag.item()) > 0 or step == cfg.stop_at_step
            if step % cfg.save_every == 0 or step == cfg.max_steps or stop_now:
                last_saved = tstate.save(run, step, run.meta)
            if stop_now and step < cfg.max_steps:
                stopped = True
                if accelerator.is_main_process:
                    log.warning(
                        "stopping at step %d (checkpoint %s); continue with --resume", step, last_saved
                    )
                break
    bar.close()
    return LoopResult(last_saved, stopped)
