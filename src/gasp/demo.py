"""GASP's effect on a CPU, end to end, with no downloads (the README's main command).

Stages (finished data and training stages are skipped on a re-run, so an interrupted demo resumes):

1. data: synthetic training scenes and separate held-out scenes (disjoint seeds, same camera
   motion) are prepared (``gasp prepare``: frames stored once per scene + a sequence index)
   under ``OUTPUT_DIR/data``;
2. train: three tiny Qwen2.5-VL models of the same architecture, the same random initialisation
   (drawn from ``--seed``), the same trained parameters and the same number of steps (``gasp
   train``): ``baseline`` (language loss only), ``corr_only`` (L_LM + L_corr, the paper's ablation)
   and ``gasp`` (L_LM + L_corr + L_depth), under ``OUTPUT_DIR/runs/NAME`` (``runs/seed-S/NAME`` with
   ``--seeds`` > 1). The default recipe fine-tunes the whole tiny model
   (vision tower included) from a tied orthogonal Q/K init (``W_Q = W_K``), which gives the random
   LLM the similarity-matching attention a pretrained one has, and a local-offset vision attention
   init (``gasp.models.vision_init``), which gives its vision tower the spatial context of a
   pretrained one;
3. probe: every layer of the three models on the held-out sequences (``gasp probe``);
4. report: ``report.json``, ``summary.md``, ``analysis.png`` / ``analysis_moved.png`` (three panels:
   PCK per layer, confidence-accuracy rho, temporal robustness) and, for the baseline and GASP,
   the attention heatmap and flow-coloured match picture of one held-out query point.

The figures are the paper's (Q-K attention of each layer; see docs/PROBE.md), every figure of a
model read at one layer (its highest all-query PCK). ``report.json`` and ``summary.md`` list each
acceptance check of the demo with its value and whether it passes; ``--seeds N`` repeats stages 2-3
for N seeds and reports mean ± sd. What the demo shows, and what it does not, is in docs/PROBE.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gasp.cli_args import option as _f
from gasp.data.store_write import write_json_atomic
from gasp.errors import ConfigError

MODELS = {"baseline": "lm_only", "corr_only": "corr_only", "gasp": "full"}
"""Demo model name -> ``gasp train --mode``."""

DEMO_MODEL_OVERRIDES = (
    "hidden_size=128",
    "intermediate_size=256",
    "num_heads=2",
    "num_kv_heads=2",
    "patch_size=8",
    "merge_size=1",
    "vision_hidden_size=128",
    "vision_heads=8",
    "vision_intermediate_size=256",
    "fullatt_block_indexes=0,1",
)
"""The demo's tiny Qwen2.5-VL: an LLM 128 wide with 2 attention heads of 64 (tied Q/K needs as many
key/value heads; averaging the softmaxes of narrow 16-dim heads blurs the probe's match, one head
cannot express how sure a match is), 8-px patches = cells, a 2-block vision tower 128 wide with 8
heads of 16 (4 rotary frequencies per axis; with ``--vision-init local_offsets`` heads 1-4 look 1-2
patches away and heads 5-8 twice as far) and full attention in both blocks."""


@dataclass
class DemoConfig:
    """Settings of ``gasp demo``; the defaults are the recipe measured in docs/PROBE.md."""

    output_dir: str = _f("runs/demo", "folder for data, runs, report.json, summary.md and figures")
    models: list[str] = _f(list(MODELS), "which of baseline, corr_only, gasp to train and probe")
    model: str = _f("tiny-qwen2.5-vl", "model preset (random weights; the same init for all three)")
    model_overrides: list[str] = _f(
        list(DEMO_MODEL_OVERRIDES),
        "KEY=VALUE build arguments of the preset (tied Q/K needs kv heads == heads)",
    )
    qk_init: str = _f(
        "tied_orthogonal", "LLM Q/K init: tied_orthogonal (W_Q = W_K orthogonal) | hf (transformers init)"
    )
    qk_gain: float = _f(2.0, "gain of the tied orthogonal W_Q = W_K (Q-K scores scale with its square)")
    vision_init: str = _f(
        "local_offsets",
        "vision tower init: local_offsets (each head starts on one neighbour patch) | hf (transformers init)",
    )
    finetune: str = _f("full", "full: train every model weight, vision tower included | lora")
    freeze_qk: bool = _f(False, "keep the LLM decoder's q_proj/k_proj at their init")
    steps: int = _f(500, "optimizer steps of each training (the same for all three)")
    lr: float = _f(2e-3, "peak learning rate of the model weights")
    head_lr_mult: float = _f(
        0.25, "heads' learning rate = lr * this (paper: 4; slower heads make the tokens themselves match)"
    )
    lora_rank: int = _f(64, "LoRA rank on the LLM decoder (with --finetune lora)")
    d_emb: int = _f(64, "correspondence head output size")
    tau: float = _f(0.07, "InfoNCE / soft-argmax temperature")
    lambda_corr: float = _f(0.3, "weight of the correspondence loss (corr_only and gasp; paper: 0.3)")
    lambda_depth: float = _f(1.0, "weight of the depth-consistency loss (gasp)")
    lm_fraction: float = _f(
        0.0, "fraction of language-only batches (every batch carries the caption LM loss)"
    )
    warmup_steps: int = _f(10, "linear warm-up steps")
    seed: int = _f(0, "seed of the model initialisation, LoRA, heads and data order")
    seeds: int = _f(
        1,
        "train and probe this many seeds (SEED, SEED+1, ...: initialisation and data order) and report "
        "mean ± sd of every figure",
    )
    grid: list[int] = _f([16, 16], "token grid GH GW of every frame")
    train_scenes: int = _f(16, "synthetic training scenes (seeds TRAIN_SEED ...)")
    train_seed: int = _f(0, "first seed of the training scenes")
    train_sequences: int = _f(16, "sequences per training scene")
    train_frames: list[int] = _f([6, 6], "min and max frames per training sequence")
    heldout_scenes: int = _f(6, "held-out scenes (seeds HELDOUT_SEED ...), disjoint from the training seeds")
    heldout_seed: int = _f(100000, "first seed of the held-out scenes")
    heldout_sequences: int = _f(4, "sequences per held-out scene")
    heldout_frames: list[int] = _f([12, 12], "min and max frames per held-out sequence")
    radius: int = _f(24, "frames are drawn from [anchor-R, anchor+R] (training and held-out; paper: 48)")
    delta: float = _f(2.0, "PCK threshold in token cells")
    threads: int = _f(0, "torch CPU threads (0: all cores)")
    progress: bool = _f(True, "show progress bars")

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in MODELS]
        if unknown or not self.models:
            raise ConfigError(f"--models: unknown {unknown or 'empty'}; choose from {', '.join(MODELS)}")
        if len(self.grid) != 2 or min(self.grid) < 1:
            raise ConfigError(f"--grid needs two positive integers, got {self.grid}")
        if self.seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {self.seeds}")
        if self.steps < 1:
            raise ConfigError(f"--steps must be >= 1, got {self.steps}")
        train = range(self.train_seed, self.train_seed + self.train_scenes)
        held = range(self.heldout_seed, self.heldout_seed + self.heldout_scenes)
        if set(train) & set(held):
            raise ConfigError(
                f"--heldout-seed {self.heldout_seed}: held-out seeds {held.start}..{held.stop - 1} overlap "
                f"the training seeds {train.start}..{train.stop - 1}; choose a seed outside that range"
            )


def _stage(text: str) -> None:
    print(f"[gasp demo] {text}", flush=True)


def prepare_data(cfg: DemoConfig) -> tuple[Path, Path]:
    """Stage 1: the training and held-out scenes as prepared data (no grid: the loader fits the model)."""
    from gasp.data.prepare import PrepareConfig, prepare

    root = Path(cfg.output_dir) / "data"
    sets = {
        "train": (cfg.train_scenes, cfg.train_seed, cfg.train_sequences, cfg.train_frames),
        "heldout": (cfg.heldout_scenes, cfg.heldout_seed, cfg.heldout_sequences, cfg.heldout_frames),
    }
    for name, (scenes, seed, per_scene, frames) in sets.items():
        _stage(f"data: {scenes} synthetic {name} scenes (seeds {seed}..{seed + scenes - 1})")
        prepare(
            PrepareConfig(
                output=str(root / name),
                synthetic=scenes,
                seed=seed,
                sequences_per_scene=per_scene,
                min_frames=frames[0],
                max_frames=frames[-1],
                radius=cfg.radius,
                jpeg_quality=90,  # synthetic renders are exact; the demo's figures were measured at 90
                workers=max(1, min(2, os.cpu_count() or 1)),
                progress=cfg.progress,
            )
        )
    return root / "train", root / "heldout"


def run_dir(cfg: DemoConfig, name: str) -> Path:
    """Run folder of one model: ``runs/NAME``, or ``runs/seed-S/NAME`` when several seeds run."""
    runs = Path(cfg.output_dir) / "runs"
    return runs / name if cfg.seeds == 1 else runs / f"seed-{cfg.seed}" / name


def train_config(cfg: DemoConfig, name: str, data: Path) -> Any:
    """The ``gasp train`` configuration of one demo model (only ``mode`` differs between them)."""
    from gasp.config import TrainConfig

    return TrainConfig(
        model=cfg.model,
        model_overrides=tuple(cfg.model_overrides),
        qk_init=cfg.qk_init,
        vision_init=cfg.vision_init,
        qk_gain=cfg.qk_gain,
        finetune=cfg.finetune,
        freeze_qk=cfg.freeze_qk,
        lambda_corr=cfg.lambda_corr,
        lambda_depth=cfg.lambda_depth,
        mode=MODELS[name],
        data=str(data),
        grid=tuple(cfg.grid),
        output_dir=str(run_dir(cfg, name)),
        lora_rank=cfg.lora_rank,
        d_emb=cfg.d_emb,
        tau=cfg.tau,
        lr=cfg.lr,
        head_lr_mult=cfg.head_lr_mult,
        warmup_steps=min(cfg.warmup_steps, cfg.steps),
        max_steps=cfg.steps,
        lm_fraction=cfg.lm_fraction,
        batch_size=1,
        seed=cfg.seed,
        save_every=cfg.steps,
        keep_last=1,
        mixed_precision="no",
        progress=cfg.progress,
    )


def train_model(cfg: DemoConfig, name: str, data: Path) -> float:
    """Stage 2 for one model; returns its training wall time in seconds (recorded for re-runs)."""
    from gasp.train import train

    timing = run_dir(cfg, name) / "demo_timing.json"
    tcfg = train_config(cfg, name, data)
    recipe = json.loads(json.dumps(tcfg.to_dict()))
    recipe.pop("progress", None)
    if timing.is_file():
        done = json.loads(timing.read_text())
        if done.get("recipe") == recipe:
            _stage(f"train {name}: done before ({done['train_seconds']:.0f} s), skipping")
            return float(done["train_seconds"])
    _stage(f"train {name} ({MODELS[name]}): {cfg.steps} steps")
    start = time.perf_counter()
    result = train(tcfg, resume=True)
    if result.stopped_early:
        # A signal (SIGTERM) made the trainer checkpoint and stop: the stage is NOT done. Stop the demo
        # here; the same command resumes this training from its checkpoint.
        where = result.checkpoint.name if result.checkpoint else "its last checkpoint"
        _stage(f"train {name}: stopped at {where}; run the same `gasp demo` command again to continue")
        raise KeyboardInterrupt
    seconds = time.perf_counter() - start
    write_json_atomic(timing, {"steps": cfg.steps, "recipe": recipe, "train_seconds": seconds})
    return seconds


def acceptance(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The demo's acceptance checks (issue 5) evaluated on a report; missing models are skipped."""
    from gasp.probe_report import best_figures

    models = report["models"]
    best = {name: best_figures(block) for name, block in models.items()}
    checks: list[dict[str, Any]] = [
        {"check": "token grid >= 16x16", "value": report["grid"], "pass": min(report["grid"]) >= 16},
        {"check": "delta == 2", "value": report["delta"], "pass": report["delta"] == 2},
    ]

    def add(text: str, value: Any, ok: bool) -> None:
        checks.append({"check": text, "value": value, "pass": bool(ok)})

    g = best.get("gasp")
    if g:
        add("gasp best-layer moved-query PCK >= 0.60", g["pck_moved"], (g["pck_moved"] or 0) >= 0.60)
        add(
            "gasp best-layer PCK >= identity + 0.10",
            [g["pck"], report["identity_pck"]],
            (g["pck"] or 0) >= report["identity_pck"] + 0.10,
        )
        add("gasp best-layer rho > 0.3", g["rho"], (g["rho"] or -1) > 0.3)
        add("gasp Y(dt) >= 0.75 for every dt <= 8", g["min_y_dt_le_8"], (g["min_y_dt_le_8"] or 0) >= 0.75)
    b = best.get("baseline")
    if b:
        add("baseline best-layer moved-query PCK <= 0.25", b["pck_moved"], (b["pck_moved"] or 0) <= 0.25)
    if g and b:
        add(
            "gasp best-layer rho above the baseline's",
            [g["rho"], b["rho"]],
            (g["rho"] or -1) > (b["rho"] or -1),
        )
    c = best.get("corr_only")
    if g and c:
        add(
            "gasp best-layer PCK >= corr_only's - 0.02",
            [g["pck"], c["pck"]],
            (g["pck"] or 0) >= (c["pck"] or 0) - 0.02,
        )
    return checks


def _train_and_probe(cfg: DemoConfig, train_dir: Path, heldout_dir: Path) -> tuple[dict, dict]:
    """Stages 2-3 for one seed (``cfg.seed``): (report, probe results by model)."""
    from gasp.data.loader import open_prepared
    from gasp.probe_inputs import heldout_samples, load_model
    from gasp.probe_layers import probe_model
    from gasp.probe_report import build_report

    seconds = {name: train_model(cfg, name, train_dir) for name in cfg.models}
    num_heldout = len(open_prepared(heldout_dir).index)
    results = {}
    for name in cfg.models:
        _stage(f"probe {name} (seed {cfg.seed}): {num_heldout} held-out sequences, every layer")
        adapter, heads, tau = load_model(run_dir(cfg, name))
        results[name] = probe_model(
            adapter,
            heldout_samples(heldout_dir, adapter, cfg.grid, "cells", num_heldout, workers=2),
            heads=heads,
            head_temperature=tau,
            temperature=cfg.tau,
            delta=cfg.delta,
            max_sequences=num_heldout,
            progress=cfg.progress,
            desc=f"probe {name}",
        )
    report = build_report(results, extra={n: {"train_seconds": round(s, 1)} for n, s in seconds.items()})
    return report, results


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run every stage; returns the report (also written to ``OUTPUT_DIR/report.json``).

    With ``cfg.seeds > 1`` every seed trains and probes its own three models (``runs/seed-S/``) on
    the same data, and the report holds mean ± sd over seeds (``gasp.probe_spread``); the acceptance
    checks run on every seed and pass only where every seed passes.
    """
    from gasp.models import from_preset
    from gasp.probe_pictures import draw_pictures
    from gasp.probe_report import draw_report, markdown_table
    from gasp.probe_spread import combine_checks, combine_reports

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    overrides = train_config(cfg, "baseline", out).parsed_model_overrides()
    from_preset(cfg.model, **overrides).image_size_for_grid(tuple(cfg.grid))  # fails early on a bad grid
    train_dir, heldout_dir = prepare_data(cfg)
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    reports, first_results = [], None
    for seed in seeds:
        report, results = _train_and_probe(dataclasses.replace(cfg, seed=seed), train_dir, heldout_dir)
        reports.append(report)
        first_results = first_results or results
    checks = combine_checks([acceptance(r) for r in reports])
    report = reports[0] if cfg.seeds == 1 else combine_reports(reports, seeds)
    report["demo_config"] = dataclasses.asdict(cfg)
    report["acceptance"] = checks
    report["total_seconds"] = round(time.perf_counter() - start, 1)
    write_json_atomic(out / "report.json", report)
    spread = "" if cfg.seeds == 1 else f", mean ± sd of {cfg.seeds} seeds"
    draw_report(report, out, title=f"gasp demo: tiny Qwen2.5-VL on held-out synthetic scenes{spread}")
    for name in ("baseline", "gasp"):
        if name in first_results:
            draw_pictures(first_results[name], out, prefix=f"{name}_")
    lines = [markdown_table(report), "", "| acceptance check | value | pass |", "|---|---|---|"]
    lines += [
        f"| {c['check']} | {c['value']} | {'yes' if c['pass'] else 'NO'}"
        f"{' (' + c['passed_seeds'] + ' seeds)' if 'passed_seeds' in c else ''} |"
        for c in report["acceptance"]
    ]
    failed = [c["check"] for c in report["acceptance"] if not c["pass"]]
    lines.append(
        f"\n{len(failed)} of {len(checks)} checks fail" + (": " + "; ".join(failed) + "." if failed else ".")
    )
    lines.append(f"\nTotal time {report['total_seconds']:.0f} s.")
    (out / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gasp.cli_args import add_dataclass_arguments

    add_dataclass_arguments(parser, DemoConfig)


def run(args: argparse.Namespace) -> int:
    from gasp.cli_args import apply_overrides

    cfg = apply_overrides(DemoConfig(), args)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from gasp.locks import folder_lock

    with folder_lock(cfg.output_dir, "demo"):
        run_demo(cfg)
    out = Path(cfg.output_dir)
    print((out / "summary.md").read_text(encoding="utf-8"))
    print(f"wrote {out / 'report.json'}, {out / 'summary.md'}, {out / 'analysis.png'}")
    return 0
