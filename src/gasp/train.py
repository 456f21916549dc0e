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
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gasp.cli_args import add_dataclass_arguments, apply_overrides
from gasp.config import TrainConfig
from gasp.errors import ConfigError
from gasp.locks import FolderBusyError, folder_lock
from gasp.training import checkpoint as ckpt
from gasp.training import sharding
from gasp.training.setup import (
    apply_lora,
    base_dtype,
    build_optimizer,
    build_scheduler,
    mixed_precision,
    precision_summary,
)

__all__ = ["TrainResult", "apply_lora", "build_optimizer", "build_scheduler", "train"]

log = logging.getLogger("gasp.train")


@dataclass
class TrainResult:
    """What a run did: per-step logs (as written to metrics.jsonl) and its last checkpoint."""

    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: Path | None = None
    stopped_early: bool = False


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


def train(cfg: TrainConfig, resume: bool = False) -> TrainResult:
    """Run (or resume) a training run described by ``cfg``; see the module docstring.

    The main process holds the writer lock of ``cfg.output_dir`` for the whole run; when another
    process holds it, every process of this run stops with :class:`gasp.locks.FolderBusyError`.
    """
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import broadcast_object_list

    launched = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if launched and cfg.mixed_precision not in ("auto", launched):
        log.warning(
            "--mixed-precision %s overrides the launcher's mixed_precision %s", cfg.mixed_precision, launched
        )
    plugin = sharding.fsdp_plugin(mixed_precision(cfg))
    accelerator = Accelerator(
        mixed_precision=mixed_precision(cfg),
        fsdp_plugin=plugin,
        kwargs_handlers=[
            DistributedDataParallelKwargs(find_unused_parameters=True),
            *sharding.process_group_handlers(),
        ],
    )
    launched_world = int(os.environ.get("WORLD_SIZE", accelerator.num_processes))
    if accelerator.num_processes != launched_world:
        raise ConfigError(
            f"{launched_world} processes were launched but accelerate counts {accelerator.num_processes} "
            f"({accelerator.distributed_type}): every process would act as the main one; check the launch "
            "config (distributed_type, use_cpu) against this machine's devices"
        )
    sharding.use_fsdp_on_cpu(accelerator, plugin)
    sharding.check_deepspeed_ran(accelerator)
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

    from gasp.training import state as tstate
    from gasp.training.feed import check_language_data, open_feed
    from gasp.training.loop import run_loop
    from gasp.training.metrics import MetricsLog
    from gasp.training.setup import prepare_synthetic

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if accelerator.is_main_process:
        ckpt.clean_leftovers(out)  # this process holds the run's lock: no other writer
    accelerator.wait_for_everyone()
    previous = ckpt.list_checkpoints(out)
    if previous and not resume:
        raise ConfigError(
            f"--output-dir {out} already holds checkpoints (newest {previous[-1].name}); pass --resume to "
            "continue that run or choose another --output-dir"
        )
    if resume and not previous:
        log.warning("--resume: no checkpoint in %s, starting from scratch", out)
    set_seed(cfg.seed)

    dtype = base_dtype(cfg, mixed_precision(cfg), accelerator.device.type)
    with sharding.no_zero3_init(accelerator):
        adapter, base_ref = _load_base(cfg, out, accelerator, dtype)
    if cfg.data:
        data_dir = Path(cfg.data)
    else:
        if accelerator.is_main_process:
            prepare_synthetic(cfg, out)
        accelerator.wait_for_everyone()
        data_dir = out / "data"
    check_language_data(cfg, data_dir)

    run = _build_run(cfg, accelerator, adapter, out)
    heads = run.objective.heads
    run.meta = {
        "base_model": base_ref,
        "finetune": cfg.finetune,
        "config": cfg.to_dict(),
        "heads": None if heads is None else {"layers": heads.layers, "d_emb": heads.d_emb},
    }
    pos = tstate.Position()
    if previous:
        pos = tstate.load(run, previous[-1])
        if accelerator.is_main_process:
            log.info("resumed from %s (step %d)", previous[-1], pos.step)
    rank, world = accelerator.process_index, accelerator.num_processes
    run.stream, run.qa = open_feed(cfg, adapter, data_dir, rank, world, pos.consumed, pos.qa_consumed)
    metrics = MetricsLog(out, pos.step, accelerator.is_main_process, cfg.log_every)
    if accelerator.is_main_process:
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    try:
        done = run_loop(run, pos.step, previous[-1] if previous else None, metrics)
    finally:
        metrics.close()
        run.stream.close()
    accelerator.wait_for_everyone()
    return TrainResult(history=metrics.history, checkpoint=done.last_saved, stopped_early=done.stopped_early)


def _build_run(cfg: TrainConfig, accelerator, adapter, out: Path):
    """The objective, optimizer and scheduler, prepared for the engine accelerate runs (DDP, FSDP2,
    DeepSpeed; :mod:`gasp.training.sharding`)."""
    from gasp.training.loop import Run
    from gasp.training.setup import build_objective

    objective, peft_model = build_objective(adapter, cfg)
    objective.to(accelerator.device)
    if accelerator.is_main_process:
        log.info("precision: %s", precision_summary(objective, mixed_precision(cfg)))
    sharding.configure_deepspeed(accelerator, cfg)
    optimizer = build_optimizer(objective, cfg)
    scheduler = build_scheduler(optimizer, cfg)  # on the torch optimizer (engines wrap it)
    model, optimizer = accelerator.prepare(objective, optimizer)
    model.train()
    return Run(
        cfg=cfg,
        accelerator=accelerator,
        adapter=adapter,
        objective=objective,
        model=model,
        peft_model=peft_model,
        optimizer=optimizer,
        scheduler=scheduler,
        stream=None,
        qa=None,
        out=out,
        sharded=sharding.accelerate_shards(accelerator),
    )


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
