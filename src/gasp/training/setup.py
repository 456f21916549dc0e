"""Building a training run: precision, synthetic data, LoRA (or full fine-tuning), the objective,
the optimizer and the LR schedule."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import torch

from gasp.config import TrainConfig
from gasp.errors import ConfigError


def mixed_precision(cfg: TrainConfig) -> str:
    """accelerate's ``mixed_precision`` for ``cfg``.

    ``auto``: what ``accelerate launch`` was given (its ``--mixed_precision`` or the config file's
    ``mixed_precision``, exported as ``ACCELERATE_MIXED_PRECISION``), else bf16 on CUDA and none on
    the CPU. An explicit ``--mixed-precision`` wins over the launcher (accelerate takes the argument).
    """
    if cfg.mixed_precision != "auto":
        return cfg.mixed_precision
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION", "").lower()
    if launched in ("no", "bf16", "fp16"):
        return launched
    return "bf16" if torch.cuda.is_available() else "no"


def base_dtype(cfg: TrainConfig, mixed: str, device_type: str) -> torch.dtype | None:
    """The dtype the frozen base model is loaded in (None: as loaded). ``auto`` is bfloat16 under
    bf16 mixed precision on CUDA (as the paper trains) and the loaded dtype otherwise; CPU runs can
    ask for ``--base-dtype bfloat16`` to exercise the mixed-dtype setup of a GPU run."""
    if cfg.base_dtype == "auto":
        return torch.bfloat16 if (mixed == "bf16" and device_type == "cuda") else None
    return getattr(torch, cfg.base_dtype)


def upcast_trainable(module: torch.nn.Module) -> None:
    """Keep every trained parameter in float32 (the optimizer's master copy) whatever the base
    dtype. peft already does this for LoRA; ``--finetune full`` on a bf16 base needs it."""
    for p in module.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()


def prepare_synthetic(cfg: TrainConfig, out: Path) -> Path:
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
    """Parameter names (in ``adapter.model``) of the LLM decoder's q_proj/k_proj weights and biases,
    and of the per-head q/k norms where the family has them (Qwen3-VL: part of Q-K, and the tied Q/K
    init puts its gain there)."""
    path_of = {id(m): n for n, m in adapter.model.named_modules()}
    names = set()
    for i in range(len(adapter.decoder_layers())):
        qk = adapter.qk_projections(i)
        for part in (qk.q_proj, qk.k_proj, qk.q_norm, qk.k_norm):
            if part is not None:
                names.update(f"{path_of[id(part)]}.{n}" for n, _ in part.named_parameters())
    return names


def apply_full(adapter, cfg: TrainConfig) -> None:
    """``--finetune full``: every model parameter trains (vision tower included), except the decoder's
    q_proj/k_proj with ``--freeze-qk``."""
    frozen = frozen_qk_names(adapter) if cfg.freeze_qk else set()
    for name, param in adapter.model.named_parameters():
        param.requires_grad_(name not in frozen)


def build_objective(adapter, cfg: TrainConfig):
    """LoRA (or full fine-tuning), gradient checkpointing and the heads around ``adapter.model``.

    Returns:
        ``(objective, peft model or None)``.
    """
    from gasp.models.heads import CorrespondenceHeads
    from gasp.training.objective import GaspObjective

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
    upcast_trainable(adapter.model)
    objective = GaspObjective(
        adapter.model,
        adapter.attention_inputs(),
        heads,
        tau=cfg.tau,
        depth_eps=cfg.depth_eps,
        lambda_corr=cfg.lambda_corr,
        lambda_depth=0.0 if cfg.mode == "corr_only" else cfg.lambda_depth,
    )
    return objective, peft_model


def precision_summary(objective: torch.nn.Module, mixed: str) -> str:
    """One line naming the dtypes of the frozen and the trained parameters and the compute precision,
    e.g. ``frozen bfloat16, trained float32, mixed precision bf16``."""

    def names(trained: bool) -> str:
        found = sorted(
            {
                str(p.dtype).removeprefix("torch.")
                for p in objective.parameters()
                if p.requires_grad == trained
            }
        )
        return "/".join(found) or "none"

    return f"frozen {names(False)}, trained {names(True)}, mixed precision {mixed}"


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
