"""Shared helpers of the training tests (no tests here)."""

import dataclasses
from pathlib import Path

from gasp.config import TrainConfig


def prepare_tiny(out: Path, sequences: int = 4, max_frames: int = 4) -> Path:
    """One synthetic scene of 32x32-pixel frames as prepared data (no grid: the loader fits any model)."""
    from gasp.data.prepare import PrepareConfig, prepare

    prepare(
        PrepareConfig(
            output=str(out),
            scenes=["synthetic:0,height=32,width=32"],
            sequences_per_scene=sequences,
            min_frames=3,
            max_frames=max_frames,
            progress=False,
        )
    )
    return out


def debug_config(data: Path, output_dir: Path, **overrides) -> TrainConfig:
    """The ``debug`` preset on ``data`` without a progress bar."""
    fields = dict(data=str(data), output_dir=str(output_dir), progress=False)
    fields.update(overrides)
    return dataclasses.replace(TrainConfig.from_name("debug"), **fields)
