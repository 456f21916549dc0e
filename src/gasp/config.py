"""Training configuration: one flat dataclass, named presets, YAML files for overrides.

``TrainConfig.from_name("debug")`` returns a preset; ``TrainConfig.from_file("configs/train/x.yaml")``
reads a YAML mapping of field names (an optional ``preset:`` key picks the starting preset; without
it the dataclass defaults are the start). Every field is a ``gasp train --field-name``
flag (gasp.cli_args), so the dataclass is the CLI schema. Values the paper does not report are
project defaults and say so in their help text.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gasp.cli_args import option as _f
from gasp.errors import ConfigError

MODES = ("full", "corr_only", "lm_only")
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
BASE_DTYPE = ("auto", "float32", "bfloat16", "float16")
FINETUNE = ("lora", "full")
QK_INIT = ("hf", "tied_orthogonal")
VISION_INIT = ("hf", "local_offsets")


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``gasp train`` needs; see docs/TRAINING.md for the meaning of each group."""

    # --- model
    model: str = _f(
        "tiny-qwen2.5-vl", "model: a gasp tiny preset name, a local HF checkpoint folder or a hub id"
    )
    model_overrides: tuple[str, ...] = _f(
        (),
        "KEY=VALUE build arguments of a gasp tiny preset, e.g. num_kv_heads=4 hidden_size=96 "
        "(random-weight presets only)",
    )
    qk_init: str = _f(
        "hf",
        "init of a random-weight preset's LLM attention: hf (the transformers init) | tied_orthogonal "
        "(W_Q = W_K orthogonal, q/k biases 0; needs num_kv_heads == num_heads)",
    )
    qk_gain: float = _f(
        1.0, "with --qk-init tied_orthogonal: gain of W_Q = W_K (Q-K scores scale with its square)"
    )
    vision_init: str = _f(
        "hf",
        "init of a random-weight preset's vision tower: hf | local_offsets (each attention head starts "
        "out attending to one fixed neighbour patch; 2-D rotary ViTs: Qwen2-VL, Qwen2.5-VL, Qwen3-VL)",
    )
    finetune: str = _f(
        "lora",
        "lora: LoRA on the LLM decoder (paper) | full: train every model weight, vision tower included "
        "(small models; checkpoints hold the whole model)",
    )
    freeze_qk: bool = _f(
        False,
        "keep the LLM decoder's q_proj/k_proj fixed (full: not trained; lora: no LoRA on them)",
    )
    lora_rank: int = _f(128, "LoRA rank on the LLM decoder (paper: 128 Qwen2.5-VL, 512 LLaVA-NeXT-Video)")
    lora_alpha: float | None = _f(None, "LoRA alpha (project default: equal to --lora-rank, i.e. scale 1)")
    lora_dropout: float = _f(0.0, "LoRA dropout (project default 0)")
    gradient_checkpointing: bool = _f(False, "recompute decoder activations in backward (saves memory)")
    mixed_precision: str = _f(
        "auto",
        "auto (the accelerate launcher's setting if it gives one, else bf16 on CUDA, no on CPU) | no | "
        "bf16 | fp16",
    )
    base_dtype: str = _f(
        "auto",
        "dtype of the frozen base weights: auto (bfloat16 under bf16 mixed precision on CUDA, else as "
        "loaded) | float32 | bfloat16 | float16; trained weights (LoRA, heads) are float32 always",
    )
    # --- GASP heads and losses
    mode: str = _f(
        "full", "full: LM + corr + depth | corr_only: LM + corr (paper ablation) | lm_only: baseline"
    )
    layers: str = _f("all", "supervised decoder layers: 'all' or ids/ranges like '0-13,20'")
    d_emb: int = _f(256, "correspondence head output size (paper: not reported; project default 256)")
    tau: float = _f(0.07, "temperature of InfoNCE and of the soft-argmax (paper: not reported)")
    depth_eps: float = _f(1e-6, "epsilon in the depth-consistency denominator")
    lambda_corr: float = _f(0.3, "weight of the InfoNCE correspondence loss (paper: 0.3)")
    lambda_depth: float = _f(1.0, "weight of the depth-consistency loss (paper: 1.0)")
    head_lr_mult: float = _f(4.0, "heads' learning rate = lr * this (paper: 4)")
    # --- data
    data: str | None = _f(
        None, "prepared folder (`gasp prepare`); empty: synthetic scenes described in OUTPUT_DIR/data"
    )
    synthetic_scenes: int = _f(4, "number of synthetic scenes prepared when --data is not given")
    synthetic_sequences: int = _f(8, "sequences per synthetic scene (when --data is not given)")
    grid: tuple[int, int] | None = _f(
        None,
        "token grid GH GW of every frame the model sees; frames are resized to the size the model needs "
        "for it (default: the model's default grid, the only one for fixed-size vision towers)",
    )
    queries: str = _f(
        "cells",
        "supervised anchor queries: tracks (the paper's: 8x8 + 24x24 grid points, the most visible half, "
        "each on its token cell) | cells (every token cell)",
    )
    data_workers: int = _f(2, "DataLoader worker processes building the samples (0: in the training process)")
    prefetch: int = _f(2, "micro-batches each data worker loads ahead")
    synthetic_frames: tuple[int, int] = _f((8, 24), "min and max frames per synthetic sequence (paper: 8 24)")
    lm_fraction: float = _f(
        0.25,
        "fraction of batches that are language-only caption samples (no heads); "
        "geometric batches also carry a caption answer (project default)",
    )
    qa_data: str = _f(
        "",
        "general QA annotations (LLaVA-Video-178K / OneVision JSON or JSONL, docs/DATA_FORMATS.md) that "
        "feed the language-only batches; empty: those batches reuse the geometric sequences' captions",
    )
    qa_media_root: str = _f(
        "", "folder the QA media paths are relative to (empty: the annotation file's folder)"
    )
    qa_frames: int = _f(8, "frames sampled from each QA video")
    require_language_data: bool = _f(
        False,
        "refuse to start when no batch would have language supervision (real scenes carry no caption, "
        "so they need --qa-data); the paper presets set it. Otherwise such a run warns once and logs "
        "the LM loss as absent",
    )
    prompt: str = _f(
        "These are frames of a video. Describe the scene in one sentence.",
        "prompt of every training sample; the answer is the scene caption",
    )
    # --- optimisation
    batch_size: int = _f(1, "sequences per process per micro-batch")
    grad_accum: int = _f(1, "gradient accumulation steps")
    lr: float = _f(1e-4, "peak learning rate of the LoRA weights (paper: 1e-4)")
    weight_decay: float = _f(0.0, "AdamW weight decay (project default 0)")
    warmup_steps: int = _f(0, "linear warm-up steps before the cosine decay")
    max_steps: int = _f(1000, "optimizer steps")
    grad_clip: float = _f(1.0, "gradient-norm clipping (paper: 1.0; 0 disables)")
    seed: int = _f(0, "seed of the heads, LoRA init, data order and everything random")
    # --- run bookkeeping
    output_dir: str = _f("runs/gasp", "run folder: checkpoints/, logs/ (TensorBoard), data/ (synthetic)")
    log_every: int = _f(1, "log losses to TensorBoard every N steps")
    save_every: int = _f(100, "write a checkpoint every N steps (and at the end)")
    keep_last: int = _f(2, "keep only the newest N checkpoints")
    progress: bool = _f(True, "show a tqdm progress bar on the main process")
    stop_at_step: int = _f(
        0,
        "save a checkpoint and stop at this step, keeping the --max-steps schedule "
        "(for time-limited jobs; resume with --resume); 0 = never",
    )

    def __post_init__(self) -> None:
        if self.grid is not None:
            object.__setattr__(self, "grid", tuple(self.grid))
        object.__setattr__(self, "synthetic_frames", tuple(self.synthetic_frames))
        object.__setattr__(self, "model_overrides", tuple(self.model_overrides))
        self.parsed_model_overrides()  # raises ConfigError on a malformed entry
        checks = [
            (self.mode in MODES, "--mode", f"one of {', '.join(MODES)}"),
            (
                self.mixed_precision in MIXED_PRECISION,
                "--mixed-precision",
                f"one of {', '.join(MIXED_PRECISION)}",
            ),
            (self.base_dtype in BASE_DTYPE, "--base-dtype", f"one of {', '.join(BASE_DTYPE)}"),
            (self.finetune in FINETUNE, "--finetune", f"one of {', '.join(FINETUNE)}"),
            (self.qk_init in QK_INIT, "--qk-init", f"one of {', '.join(QK_INIT)}"),
            (self.vision_init in VISION_INIT, "--vision-init", f"one of {', '.join(VISION_INIT)}"),
            (self.qk_gain > 0, "--qk-gain", "> 0"),
            (self.lora_rank > 0, "--lora-rank", "> 0"),
            (self.d_emb > 0, "--d-emb", "> 0"),
            (self.tau > 0, "--tau", "> 0"),
            (self.depth_eps >= 0, "--depth-eps", ">= 0"),
            (self.lambda_corr >= 0 and self.lambda_depth >= 0, "--lambda-corr/--lambda-depth", ">= 0"),
            (self.head_lr_mult > 0, "--head-lr-mult", "> 0"),
            (0.0 <= self.lm_fraction <= 1.0, "--lm-fraction", "in [0, 1]"),
            (self.qa_frames >= 1, "--qa-frames", ">= 1"),
            (self.synthetic_scenes > 0, "--synthetic-scenes", "> 0"),
            (self.batch_size > 0, "--batch-size", "> 0"),
            (self.grad_accum > 0, "--grad-accum", "> 0"),
            (self.lr > 0, "--lr", "> 0"),
            (self.max_steps > 0, "--max-steps", "> 0"),
            (0 <= self.warmup_steps <= self.max_steps, "--warmup-steps", "in [0, --max-steps]"),
            (self.grad_clip >= 0, "--grad-clip", ">= 0"),
            (self.log_every > 0 and self.save_every > 0, "--log-every/--save-every", "> 0"),
            (self.keep_last > 0, "--keep-last", "> 0"),
            (self.synthetic_sequences > 0, "--synthetic-sequences", "> 0"),
            (self.grid is None or (len(self.grid) == 2 and min(self.grid) > 0), "--grid", "two ints > 0"),
            (self.queries in ("tracks", "cells"), "--queries", "one of tracks, cells"),
            (self.data_workers >= 0 and self.prefetch >= 1, "--data-workers/--prefetch", ">= 0 / >= 1"),
            (
                len(self.synthetic_frames) == 2 and 2 <= self.synthetic_frames[0] <= self.synthetic_frames[1],
                "--synthetic-frames",
                "MIN MAX with 2 <= MIN <= MAX",
            ),
            (self.stop_at_step >= 0, "--stop-at-step", ">= 0"),
        ]
        for ok, flag, expected in checks:
            if not ok:
                raise ConfigError(f"{flag} must be {expected}")
        if self.mode != "lm_only" and self.lm_fraction >= 1.0:
            raise ConfigError(
                f"--lm-fraction 1 leaves no geometric batch; use --mode lm_only (mode={self.mode})"
            )

    @property
    def effective_lora_alpha(self) -> float:
        return float(self.lora_rank if self.lora_alpha is None else self.lora_alpha)

    def parsed_model_overrides(self) -> dict[str, Any]:
        """``model_overrides`` as build keyword arguments (ints, floats, booleans or strings).

        Raises:
            ConfigError: an entry is not ``KEY=VALUE``.
        """
        parsed: dict[str, Any] = {}
        for item in self.model_overrides:
            key, sep, text = str(item).partition("=")
            if not sep or not key.strip() or not text.strip():
                raise ConfigError(f"--model-overrides: expected KEY=VALUE, got {item!r}")
            parsed[key.strip()] = _literal(text.strip())
        return parsed

    @property
    def uses_heads(self) -> bool:
        return self.mode != "lm_only"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_name(cls, name: str) -> TrainConfig:
        """A named preset (``debug``, ``qwen2.5-vl-7b``, ``llava-next-video-7b``)."""
        if name not in PRESETS:
            raise ConfigError(f"unknown training preset {name!r}; choose from: {', '.join(PRESETS)}")
        return cls(**PRESETS[name])

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> TrainConfig:
        """Build from a mapping of field names; ``preset`` (optional) names the starting preset."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping of field names, got {type(data).__name__}")
        data = dict(data)
        preset = data.pop("preset", None)
        if preset is not None and preset not in PRESETS:
            raise ConfigError(f"{where}: unknown preset {preset!r}; choose from: {', '.join(PRESETS)}")
        base = dict(PRESETS[preset]) if preset is not None else {}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"{where}: unknown field(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}"
            )
        base.update(data)
        try:
            return cls(**base)
        except TypeError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from exc

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """Read a YAML file (see module docstring)."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
        return cls.from_dict(data, where=str(path))

    @classmethod
    def load(cls, spec: str) -> TrainConfig:
        """``spec`` is a YAML file path or a preset name."""
        if spec in PRESETS and not Path(spec).is_file():
            return cls.from_name(spec)
        return cls.from_file(spec)


def _literal(text: str) -> Any:
    """``"4"`` -> 4, ``"0.5"`` -> 0.5, ``"true"`` -> True, ``"0,1"`` -> (0, 1) (comma-separated
    integers: a tuple, e.g. ``fullatt_block_indexes=0,1``); anything else stays a string."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if "," in text:
        try:
            return tuple(int(part) for part in text.split(","))
        except ValueError:
            return text
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


# The paper's optimisation recipe shared by both 7B presets (32 GPUs, bf16, all layers supervised).
# Step counts and warm-up are project defaults (the paper reports about 10 hours on 32 H200s).
_PAPER_7B: dict[str, Any] = dict(
    d_emb=256,
    lr=1e-4,
    warmup_steps=100,
    max_steps=3000,
    batch_size=1,
    gradient_checkpointing=True,
    mixed_precision="bf16",
    save_every=250,
    require_language_data=True,
)

PRESETS: dict[str, dict[str, Any]] = {
    # A tiny random-weight Qwen2.5-VL: 20 steps take about a minute on 2 CPU cores.
    "debug": dict(
        model="tiny-qwen2.5-vl",
        lora_rank=8,
        d_emb=16,
        tau=0.1,
        lr=1e-3,
        warmup_steps=2,
        max_steps=20,
        batch_size=2,
        synthetic_scenes=2,
        synthetic_sequences=4,
        grid=(4, 4),
        synthetic_frames=(3, 4),
        output_dir="runs/debug",
        save_every=10,
        mixed_precision="no",
    ),
    # Qwen2.5-VL-7B: 28 LLM layers, LoRA rank 128.
    "qwen2.5-vl-7b": dict(
        _PAPER_7B,
        model="Qwen/Qwen2.5-VL-7B-Instruct",
        lora_rank=128,
        output_dir="runs/qwen2.5-vl-7b",
        grid=(24, 24),  # 672x672 px frames (28-px cells)
        queries="tracks",
    ),
    # LLaVA-NeXT-Video-7B: 32 LLM layers, LoRA rank 512.
    "llava-next-video-7b": dict(
        _PAPER_7B,
        model="llava-hf/LLaVA-NeXT-Video-7B-hf",
        lora_rank=512,
        output_dir="runs/llava-next-video-7b",
        queries="tracks",
    ),
}
