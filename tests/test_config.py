import argparse
from pathlib import Path

import pytest

from gasp.cli_args import add_dataclass_arguments, apply_overrides
from gasp.config import PRESETS, TrainConfig
from gasp.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "train").glob("*.yaml"))


def test_every_train_yaml_parses_and_matches_its_preset():
    names = {p.stem for p in CONFIGS}
    assert {"debug", "qwen2.5-vl-7b", "llava-next-video-7b"} <= names
    for path in CONFIGS:
        cfg = TrainConfig.from_file(path)
        if path.stem in PRESETS:
            assert cfg == TrainConfig.from_name(path.stem), path


def test_accelerate_configs_parse():
    import yaml

    root = Path(__file__).resolve().parents[1] / "configs" / "accelerate"
    files = {p.name: yaml.safe_load(p.read_text()) for p in root.glob("*.yaml")}
    assert files["fsdp.yaml"]["distributed_type"] == "FSDP"
    assert files["deepspeed_zero2.yaml"]["distributed_type"] == "DEEPSPEED"
    assert files["deepspeed_zero2.yaml"]["deepspeed_config"]["zero_stage"] == 2
    for cfg in files.values():
        assert cfg["mixed_precision"] == "bf16"


def test_paper_values():
    q = TrainConfig.from_name("qwen2.5-vl-7b")
    l = TrainConfig.from_name("llava-next-video-7b")
    assert (q.lora_rank, l.lora_rank) == (128, 512)
    for cfg in (q, l):
        assert (cfg.lambda_corr, cfg.lambda_depth, cfg.head_lr_mult, cfg.lr, cfg.grad_clip) == (
            0.3,
            1.0,
            4.0,
            1e-4,
            1.0,
        )
        assert cfg.layers == "all" and cfg.mixed_precision == "bf16" and cfg.gradient_checkpointing


def test_unknown_names_are_listed():
    with pytest.raises(ConfigError, match="debug"):
        TrainConfig.from_name("nope")
    with pytest.raises(ConfigError, match="valid:.*lora_rank"):
        TrainConfig.from_dict({"lora_rnak": 4})
    with pytest.raises(ConfigError, match="unknown preset"):
        TrainConfig.from_dict({"preset": "nope"})


def test_bad_values_name_the_flag(tmp_path):
    with pytest.raises(ConfigError, match="--mode"):
        TrainConfig(mode="geo")
    with pytest.raises(ConfigError, match="--warmup-steps"):
        TrainConfig(max_steps=5, warmup_steps=6)
    with pytest.raises(ConfigError, match="--lm-fraction"):
        TrainConfig(lm_fraction=1.0)
    bad = tmp_path / "bad.yaml"
    bad.write_text("tau: -1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*--tau"):
        TrainConfig.from_file(bad)
    with pytest.raises(ConfigError, match="not found"):
        TrainConfig.from_file(tmp_path / "missing.yaml")


def test_cli_overrides_replace_only_given_flags():
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, TrainConfig)
    args = parser.parse_args(["--max-steps", "7", "--output-dir", "runs/y", "--grid", "2", "3"])
    base = TrainConfig.from_name("debug")
    cfg = apply_overrides(base, args)
    assert (cfg.max_steps, cfg.output_dir, cfg.grid) == (7, "runs/y", (2, 3))
    assert cfg.lora_rank == base.lora_rank and cfg.d_emb == base.d_emb


def test_load_accepts_preset_names_and_files():
    assert TrainConfig.load("debug") == TrainConfig.from_name("debug")
    assert TrainConfig.load(str(CONFIGS[0])) == TrainConfig.from_file(CONFIGS[0])
