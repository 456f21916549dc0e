"""Shared helpers of the training tests (no tests here)."""

import dataclasses
from pathlib import Path

from gasp.config import TrainConfig


def prepare_tiny(out: Path, sequences: int = 4, max_frames: int = 4) -> Path:
    """One synthetic scene as 32x32-pixel frames (4x4 tokens of the tiny Qwen2.5-VL preset)."""
    from gasp.data.prepare import PrepareConfig, prepare

    cfg = PrepareConfig(
        output=str(out),
        synthetic=1,
        grid=(4, 4),
        image_size=(32, 32),
        sequences_per_scene=sequences,
        min_frames=3,
        max_frames=max_frames,
        progress=False,
    )
    prepare(cfg)
    return out


def debug_config(data: Path, output_dir: Path, **overrides) -> TrainConfig:
    """The ``debug`` preset on ``data`` without a progress bar."""
    fields = dict(data=str(data), output_dir=str(output_dir), progress=False)
    fields.update(overrides)
    return dataclasses.replace(TrainConfig.from_name("debug"), **fields)
