"""Train a VLM with GASP: LoRA on the LLM decoder (or, with --finetune full, every weight of a small
model), a correspondence head at every supervised layer,
L = L_LM + lambda_corr * L_corr + lambda_depth * L_depth (see docs/TRAINING.md).

Runs on one CPU or many GPUs through accelerate; every config field is a flag and overrides the
--config file. Without --data, synthetic scenes are prepared into OUTPUT_DIR/data first.

Examples:
  gasp train --config configs/train/debug.yaml --max-steps 20 --output-dir runs/x
  gasp train --config configs/train/debug.yaml --output-dir runs/x --resume
  ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 -m gasp.train --config debug --batch-size 1
  accelerate launch --config_file configs/accelerate/fsdp.yaml -m gasp.train \\
      --config configs/train/qwen2.5-vl-7b.yaml --data /data/prepared
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shutil
import signal
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gasp.cli_args import add_dataclass_arguments, apply_overrides
from gasp.config import TrainConfig
from gasp.errors import ConfigError
from gasp.locks import FolderBusyError, folder_lock
from gasp.training import checkpoint as ckpt

log = logging.getLogger("gasp.train")

METRICS = "metrics.jsonl"


@dataclass
class TrainResult:
    """What a run did: per-step logs (as written to metrics.jsonl) and its last checkpoint."""

    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: Path | None = None
    stopped_early: bool = False


# --------------------------------------------------------------------------------------------- setup
def _mixed_precision(cfg: TrainConfig) -> str:
    if cfg.mixed_precision == "auto":
        return "bf16" if torch.cuda.is_available() else "no"
    return cfg.mixed_precision


def _prepare_synthetic(cfg: TrainConfig, out: Path) -> Path:
    """Prepare ``cfg.synthetic_scenes`` synthetic scenes into ``OUTPUT_DIR/data`` (idempotent; no grid:
    the loader fits the frames to the model)."""
    from gasp.data.prepare import PrepareConfig, prepare

    data = out / "data"
    prepare(
        PrepareConfig(
            output=str(data),
            synthetic=cfg.synthetic_scenes,
            seed=cfg.seed,
            sequences_per_scene=cfg.synthetic_sequences,
            min_frames=cfg.synthetic_frames[0],
            max_frames=cfg.synthetic_frames[1],
            progress=cfg.progress,
        )
    )
    return data


def _load_base(cfg: TrainConfig, out: Path, accelerator, dtype: torch.dtype | None):
    """The base adapter. A random-weight preset is saved once to OUTPUT_DIR/base (export and resume
    need its exact weights) and every process loads that copy."""
    from gasp.models import PRESETS, from_preset, load_adapter

    overrides = cfg.parsed_model_overrides()
    if cfg.model not in PRESETS:
        if overrides or cfg.qk_init != "hf" or cfg.vision_init != "hf" or cfg.qk_gain != 1.0:
            raise ConfigError(
                "--model-overrides/--qk-init/--qk-gain/--vision-init apply to random-weight presets only, "
                f"not to {cfg.model!r}"
            )
        return load_adapter(cfg.model, dtype=dtype), cfg.model
    base = out / "base"
    if accelerator.is_main_process and not (base / "config.json").is_file():
        adapter = from_preset(
            cfg.model,
            qk_init=cfg.qk_init,
            vision_init=cfg.vision_init,
            qk_gain=cfg.qk_gain,
            seed=cfg.seed,
            **overrides,
        )
        tmp = out / "base.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        adapter.save_pretrained(tmp)
        shutil.rmtree(base, ignore_errors=True)
        os.replace(tmp, base)
    accelerator.wait_for_everyone()
    return load_adapter(base, dtype=dtype), str(base.resolve())


def apply_lora(adapter, cfg: TrainConfig):
    """Inject LoRA into the LLM decoder's linear layers only; returns the peft model.

    Raises:
        ConfigError: a LoRA module landed outside the decoder layers (e.g. the vision tower).
    """
    from peft import LoraConfig, get_peft_model

    targets = adapter.lora_target_modules()
    if cfg.freeze_qk:
        targets = [t for t in targets if t.rsplit(".", 1)[-1] not in ("q_proj", "k_proj")]
    config = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.effective_lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        bias="none",
    )
    with warnings.catch_warnings():  # peft probes a transformers attribute deprecated in 5.x
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = get_peft_model(adapter.model, config)
    allowed = set(targets)
    stray = [
        name
        for name, module in adapter.model.named_modules()
        if hasattr(module, "lora_A") and name not in allowed
    ]
    if stray:
        raise ConfigError(f"LoRA was applied outside the LLM decoder: {stray[:5]}")
    return peft_model


def frozen_qk_names(adapter) -> set[str]:
    """Parameter names (in ``adapter.model``) of the LLM decoder's q_proj/k_proj weights and biases."""
    path_of = {id(m): n for n, m in adapter.model.named_modules()}
    names = set()
    for i in range(len(adapter.decoder_layers())):
        qk = adapter.qk_projections(i)
        for proj in (qk.q_proj, qk.k_proj):
            names.update(f"{path_of[id(proj)]}.{n}" for n, _ in proj.named_parameters())
    return names


def apply_full(adapter, cfg: TrainConfig) -> None:
    """``--finetune full``: every model parameter trains (vision tower included), except the decoder's
    q_proj/k_proj with ``--freeze-qk``."""
    frozen = frozen_qk_names(adapter) if cfg.freeze_qk else set()
    for name, param in adapter.model.named_parameters():
        param.requires_grad_(name not in frozen)


def build_optimizer(objective, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with two groups: the model's trainable weights (LoRA, or every weight with
    ``--finetune full``) at ``cfg.lr`` and the heads at ``cfg.lr * cfg.head_lr_mult``."""
    head_params = [p for p in objective.heads.parameters()] if objective.heads is not None else []
    head_ids = {id(p) for p in head_params}
    lora_params = [p for p in objective.model.parameters() if p.requires_grad and id(p) not in head_ids]
    groups = [{"params": lora_params, "lr": cfg.lr}]
    if head_params:
        groups.append({"params": head_params, "lr": cfg.lr * cfg.head_lr_mult})
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer, cfg: TrainConfig):
    """Linear warm-up over ``cfg.warmup_steps``, then cosine decay to 0 at ``cfg.max_steps``."""

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def trainable_state(objective) -> dict[str, torch.Tensor]:
    """Trainable model (LoRA, or all weights with ``--finetune full``) + head parameters by name
    (what a checkpoint must restore)."""
    return {n: p.detach().cpu().contiguous() for n, p in objective.named_parameters() if p.requires_grad}


# --------------------------------------------------------------------------------------------- training
class _StopFlag:
    """SIGTERM -> finish the current step, save a checkpoint, exit."""

    def __init__(self) -> None:
        self.requested = False
        self._old = None

    def __enter__(self) -> _StopFlag:
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


def train(cfg: TrainConfig, resume: bool = False) -> TrainResult:
    """Run (or resume) a training run described by ``cfg``; see the module docstring.

    The main process holds the writer lock of ``cfg.output_dir`` for the whole run; when another
    process holds it, every process of this run stops with :class:`gasp.locks.FolderBusyError`.
    """
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import broadcast_object_list

    accelerator = Accelerator(
        mixed_precision=_mixed_precision(cfg),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    with contextlib.ExitStack() as stack:
        refused = [""]
        if accelerator.is_main_process:
            try:
                stack.enter_context(folder_lock(cfg.output_dir, "train"))
            except FolderBusyError as exc:
                refused = [str(exc)]
        if accelerator.num_processes > 1:
            broadcast_object_list(refused)
        if refused[0]:
            raise FolderBusyError(refused[0])
        return _train(cfg, resume, accelerator)


def _train(cfg: TrainConfig, resume: bool, accelerator) -> TrainResult:
    from accelerate.utils import set_seed
    from safetensors.torch import load_file, save_file
    from tqdm import tqdm

    from gasp.data.loader import SampleStream, model_frame_size
    from gasp.models.heads import CorrespondenceHeads
    from gasp.training.data import is_language_only, make_batch, make_qa_batch
    from gasp.training.objective import GaspObjective
    from gasp.training.qa_data import QASource

    mp = _mixed_precision(cfg)
    rank, world = accelerator.process_index, accelerator.num_processes
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    previous = ckpt.list_checkpoints(out)
    if previous and not resume:
        raise ConfigError(
            f"--output-dir {out} already holds checkpoints (newest {previous[-1].name}); pass --resume to "
            "continue that run or choose another --output-dir"
        )
    if resume and not previous:
        log.warning("--resume: no checkpoint in %s, starting from scratch", out)
    set_seed(cfg.seed)

    dtype = torch.bfloat16 if (mp == "bf16" and accelerator.device.type == "cuda") else None
    adapter, base_ref = _load_base(cfg, out, accelerator, dtype)
    if cfg.data:
        data_dir = Path(cfg.data)
    else:
        if accelerator.is_main_process:
            _prepare_synthetic(cfg, out)
        accelerator.wait_for_everyone()
        data_dir = out / "data"

    torch.manual_seed(cfg.seed)
    peft_model = apply_lora(adapter, cfg) if cfg.finetune == "lora" else None
    if peft_model is None:
        apply_full(adapter, cfg)
    if cfg.gradient_checkpointing:
        adapter.model.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False}
        )
        adapter.model.config.use_cache = False
    heads = None
    if cfg.uses_heads:
        torch.manual_seed(cfg.seed + 1)
        heads = CorrespondenceHeads.from_adapter(adapter, cfg.layers, cfg.d_emb)
    objective = GaspObjective(
        adapter.model,
        adapter.attention_inputs(),
        heads,
        tau=cfg.tau,
        depth_eps=cfg.depth_eps,
        lambda_corr=cfg.lambda_corr,
        lambda_depth=0.0 if cfg.mode == "corr_only" else cfg.lambda_depth,
    )
    objective.to(accelerator.device)
    optimizer = build_optimizer(objective, cfg)
    scheduler = build_scheduler(optimizer, cfg)

    step, consumed, qa_consumed = 0, 0, 0
    if previous:
        last = previous[-1]
        state = ckpt.read_state(last)
        saved = load_file(str(last / "trainable.safetensors"))
        absent = sorted({n for n, p in objective.named_parameters() if p.requires_grad} - set(saved))
        if absent:
            raise ConfigError(f"{last}: checkpoint lacks {len(absent)} trainable tensors, e.g. {absent[:3]}")
        missing = objective.load_state_dict(saved, strict=False)
        if missing.unexpected_keys:
            raise ConfigError(
                f"{last}: checkpoint does not fit this model ({missing.unexpected_keys[:3]} ...)"
            )
        optimizer.load_state_dict(torch.load(last / "optimizer.pt", weights_only=False))
        scheduler.load_state_dict(torch.load(last / "scheduler.pt", weights_only=False))
        rng_file = last / f"rng-rank{rank}.pt"
        if rng_file.is_file():
            ckpt.set_rng_state(torch.load(rng_file, weights_only=False))
        step, consumed = int(state["step"]), int(state["consumed"])
        qa_file = last / f"qa-rank{rank}.json"
        if qa_file.is_file():
            qa_consumed = int(json.loads(qa_file.read_text())["consumed"])
        if accelerator.is_main_process:
            log.info("resumed from %s (step %d)", last, step)

    model, optimizer = accelerator.prepare(objective, optimizer)
    model.train()
    grid, image_hw = model_frame_size(adapter, cfg.grid)
    stream = SampleStream(
        str(data_dir),
        grid=grid,
        image_hw=image_hw,
        queries=cfg.queries,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        consumed=consumed,
        rank=rank,
        world_size=world,
        num_workers=cfg.data_workers,
        prefetch=cfg.prefetch,
    )
    qa = None
    if cfg.qa_data:
        qa = QASource(
            cfg.qa_data,
            cfg.qa_media_root or Path(cfg.qa_data).parent,
            image_size=image_hw,
            num_frames=cfg.qa_frames,
            rank=rank,
            world_size=world,
            seed=cfg.seed,
            start=qa_consumed,
        )
    trainable = [p for p in objective.parameters() if p.requires_grad]

    metrics_path = out / METRICS
    history = _read_history(metrics_path, step) if accelerator.is_main_process else []
    writer = None
    if accelerator.is_main_process:
        _write_history(metrics_path, history)
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "logs"))
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

    def save() -> Path:
        tmp = ckpt.checkpoint_root(out) / f"step-{step:07d}.tmp"
        if accelerator.is_main_process:
            ckpt.begin(out, step)
        accelerator.wait_for_everyone()
        torch.save(ckpt.rng_state(), tmp / f"rng-rank{rank}.pt")
        if qa is not None:  # each process has its own position in its share of the QA records
            (tmp / f"qa-rank{rank}.json").write_text(json.dumps({"consumed": qa.consumed}))
        if accelerator.is_main_process:
            if peft_model is not None:
                peft_model.save_pretrained(str(tmp / "adapter"))
            save_file(trainable_state(objective), str(tmp / "trainable.safetensors"))
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
            ckpt.write_state(
                tmp,
                {
                    "step": step,
                    "consumed": stream.consumed,
                    "base_model": base_ref,
                    "finetune": cfg.finetune,
                    "config": cfg.to_dict(),
                    "heads": None if heads is None else {"layers": heads.layers, "d_emb": heads.d_emb},
                },
            )
        accelerator.wait_for_everyone()
        final = tmp.with_name(tmp.name[: -len(".tmp")])
        if accelerator.is_main_process:
            ckpt.commit(tmp, cfg.keep_last)
        accelerator.wait_for_everyone()
        return final

    result = TrainResult(history=history)
    bar = tqdm(
        total=cfg.max_steps,
        initial=step,
        desc="train",
        dynamic_ncols=True,
        disable=not (accelerator.is_main_process and cfg.progress),
    )
    last_saved = previous[-1] if previous else None
    with _StopFlag() as stop:
        while step < cfg.max_steps:
            t0 = time.perf_counter()
            sums: dict[str, torch.Tensor] = {}
            counts: dict[str, int] = {}
            bad = False
            tokens = 0
            for micro in range(cfg.grad_accum):
                g = step * cfg.grad_accum + micro
                language_only = is_language_only(g, cfg.lm_fraction)
                if qa is not None and language_only:
                    batch = make_qa_batch(adapter, [next(qa) for _ in range(cfg.batch_size)])
                else:
                    geometric = cfg.uses_heads and not language_only
                    batch = make_batch(adapter, stream.next_batch(), cfg.prompt, geometric)
                tokens += batch.num_visual_tokens
                inputs = {k: v.to(accelerator.device) for k, v in batch.inputs.items()}
                targets = None
                if batch.targets is not None:
                    targets = {k: v.to(accelerator.device) for k, v in batch.targets.items()}
                sync = micro == cfg.grad_accum - 1
                ctx = contextlib.nullcontext() if sync else accelerator.no_sync(model)
                with ctx:
                    loss, logs = model(inputs, batch.visual_positions.to(accelerator.device), targets)
                    finite = accelerator.reduce(torch.isfinite(loss.detach()).float().reshape(1), "sum")
                    if float(finite.item()) < world:
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
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + v.float()
                    counts[k] = counts.get(k, 0) + 1
            grad_norm = None  # stays None without clipping, or under DeepSpeed (it clips itself)
            if not bad:
                if cfg.grad_clip > 0:
                    grad_norm = accelerator.clip_grad_norm_(trainable, cfg.grad_clip)
                if grad_norm is None or bool(torch.isfinite(torch.as_tensor(grad_norm))):
                    optimizer.step()
                else:
                    bad = True
                    if accelerator.is_main_process:
                        log.warning("step %d: non-finite gradient norm; skipping the step", step + 1)
            optimizer.zero_grad(set_to_none=True)
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
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
                history.append(row)
                with metrics_path.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
                if writer is not None and step % cfg.log_every == 0:
                    for k, v in row.items():
                        if k != "step":
                            writer.add_scalar(_tb_name(k), v, step)
                bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{lr:.2e}")
            bar.update(1)

            flag = accelerator.reduce(torch.tensor([float(stop.requested)], device=accelerator.device), "sum")
            stop_now = float(flag.item()) > 0 or step == cfg.stop_at_step
            if step % cfg.save_every == 0 or step == cfg.max_steps or stop_now:
                last_saved = save()
            if stop_now and step < cfg.max_steps:
                result.stopped_early = True
                if accelerator.is_main_process:
                    log.warning(
                        "stopping at step %d (checkpoint %s); continue with --resume", step, last_saved
                    )
                break
    bar.close()
    stream.close()
    if writer is not None:
        writer.close()
    result.checkpoint = last_saved
    accelerator.wait_for_everyone()
    return result


def _tb_name(key: str) -> str:
    if key in ("loss", "lm", "corr", "depth"):
        return f"loss/{key}"
    if "/" in key:
        return f"layers/{key}"
    return f"train/{key}"


def _read_history(path: Path, upto: int) -> list[dict[str, float]]:
    """Rows of an earlier invocation up to step ``upto`` (later rows were not checkpointed)."""
    if upto == 0 or not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["step"] <= upto]


def _write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default="debug",
        help="YAML file (configs/train/*.yaml) or preset name: debug, qwen2.5-vl-7b, "
        "llava-next-video-7b (default: debug)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint in --output-dir (weights, heads, optimizer, "
        "scheduler, RNG and data position)",
    )
    add_dataclass_arguments(parser, TrainConfig)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = apply_overrides(TrainConfig.load(args.config), args)
    result = train(cfg, resume=args.resume)
    if result.history:
        last = result.history[-1]
        print(f"step {int(last['step'])}: loss {last['loss']:.4f}; checkpoint {result.checkpoint}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m gasp.train`` (what ``accelerate launch -m gasp.train`` runs)."""
    from gasp.cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
