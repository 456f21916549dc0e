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
from gasp.training.sharding import full_norm

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
    sharded: bool = False  # parameters, gradients or optimizer state are sharded over processes


@dataclass
class LoopResult:
    last_saved: Path | None
    stopped_early: bool


def _sync_context(run: Run, sync: bool):
    """Gradient synchronisation of a micro-batch: off for all but the last of an accumulation."""
    if hasattr(run.model, "set_requires_gradient_sync"):  # FSDP2: accelerate's no_sync does not apply
        run.model.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()
    return contextlib.nullcontext() if sync else run.accelerator.no_sync(run.model)


def _micro_step(
    run: Run, micro_index: int, sync: bool, step: int
) -> tuple[dict[str, torch.Tensor], bool, int, float]:
    """Forward + backward of one micro-batch: ``(logs, non-finite loss on some process, visual tokens,
    seconds spent waiting for the batch)``."""
    cfg, accelerator = run.cfg, run.accelerator
    t0 = time.perf_counter()
    batch = next_batch(cfg, run.adapter, run.stream, run.qa, micro_index)
    waited = time.perf_counter() - t0
    inputs = {k: v.to(accelerator.device) for k, v in batch.inputs.items()}
    targets = None
    if batch.targets is not None:
        targets = {k: v.to(accelerator.device) for k, v in batch.targets.items()}
    ctx = _sync_context(run, sync)
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
    return logs, bad, batch.num_visual_tokens, waited


def _optimizer_step(run: Run, trainable: list[torch.Tensor], bad: bool, step: int) -> tuple[bool, Any]:
    """Clip and step unless the step is skipped; returns ``(skipped, grad norm or None)``."""
    cfg, accelerator = run.cfg, run.accelerator
    grad_norm = None  # stays None without clipping
    if not bad:
        if cfg.grad_clip > 0:  # the global norm: all trainable parameters (DTensor shards under FSDP)
            grad_norm = full_norm(accelerator.clip_grad_norm_(trainable, cfg.grad_clip))
        if grad_norm is None or bool(torch.isfinite(grad_norm)):
            run.optimizer.step()
            engine_norm = getattr(run.model, "get_global_grad_norm", None)  # DeepSpeed clips itself
            if callable(engine_norm) and engine_norm() is not None:
                grad_norm = torch.as_tensor(float(engine_norm()))
        else:
            bad = True
            if accelerator.is_main_process:
                log.warning("step %d: non-finite gradient norm; skipping the step", step + 1)
    run.optimizer.zero_grad(set_to_none=True)
    return bad, grad_norm


def _global_means(
    run: Run, sums: dict[str, torch.Tensor], counts: dict[str, torch.Tensor]
) -> dict[str, float]:
    """Means over all micro-batches of all processes; a key with no finite value anywhere (e.g. the
    LM loss of a run without language data) is left out, i.e. logged as absent."""
    keys = sorted(sums)
    device = run.accelerator.device
    packed = torch.stack([torch.stack([sums[k], counts[k]]) for k in keys]).to(device)
    packed = run.accelerator.reduce(packed, "sum")
    return {k: float(s / c) for k, (s, c) in zip(keys, packed) if float(c) > 0}


def _peak_memory(device: torch.device) -> float:
    """Peak allocated bytes of this device since the last call (CUDA), else NaN."""
    if device.type != "cuda":
        return float("nan")
    peak = float(torch.cuda.max_memory_allocated(device))
    torch.cuda.reset_peak_memory_stats(device)
    return peak


def _one_step(run: Run, step: int, trainable: list[torch.Tensor]) -> dict[str, float]:
    """One optimizer step (all its micro-batches); returns this step's row of metrics.jsonl (the same
    on every process: every figure is reduced over processes)."""
    cfg, accelerator = run.cfg, run.accelerator
    t0 = time.perf_counter()
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, torch.Tensor] = {}
    bad, tokens, waited = False, 0, 0.0
    for micro in range(cfg.grad_accum):
        sync = micro == cfg.grad_accum - 1
        logs, micro_bad, n, w = _micro_step(run, step * cfg.grad_accum + micro, sync, step)
        bad, tokens, waited = bad or micro_bad, tokens + n, waited + w
        for k, v in logs.items():
            v = v.float().cpu()
            ok = torch.isfinite(v)
            sums[k] = sums.get(k, torch.zeros(())) + torch.where(ok, v, torch.zeros(()))
            counts[k] = counts.get(k, torch.zeros(())) + ok.float()
    bad, grad_norm = _optimizer_step(run, trainable, bad, step)
    lr = run.scheduler.get_last_lr()[0]
    run.scheduler.step()
    dt = time.perf_counter() - t0
    device = accelerator.device
    figures = torch.tensor([float(bad), float(tokens), waited, dt, _peak_memory(device)], device=device)
    total = accelerator.reduce(figures.clone(), "sum")
    top = accelerator.reduce(figures.clone(), "max") if hasattr(accelerator, "reduce") else figures
    world = accelerator.num_processes
    row: dict[str, float] = {"step": step + 1, **_global_means(run, sums, counts)}
    row.update(
        lr=lr,
        skipped=float(float(total[0]) > 0),
        grad_norm=float("nan") if grad_norm is None else float(grad_norm),
        sequences_per_s=cfg.batch_size * world * cfg.grad_accum / float(top[3]),
        visual_tokens_per_s=float(total[1]) / float(top[3]),
        data_wait_s=float(top[2]),
        step_time_s=float(top[3]),
    )
    if device.type == "cuda":
        row["peak_memory_gb"] = float(top[4]) / 1e9  # the largest over processes
    return row


def run_loop(run: Run, step: int, last_saved: Path | None, metrics: MetricsLog) -> LoopResult:
    """Train from optimizer step ``step`` to ``cfg.max_steps`` (or until told to stop)."""
    from tqdm import tqdm

    cfg, accelerator = run.cfg, run.accelerator
    trainable = [p for p in run.model.parameters() if p.requires_grad]  # as prepared (sharded)
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
            row = _one_step(run, step, trainable)
            step += 1
            if accelerator.is_main_process:
                if not metrics.history:  # what the engine really computed in, once per run
                    log.info("compute dtype: %s", str(run.objective.compute_dtype).removeprefix("torch."))
                metrics.append(row)
                bar.set_postfix(loss=f"{row.get('loss', float('nan')):.4f}", lr=f"{row['lr']:.2e}")
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
