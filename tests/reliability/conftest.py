"""Fixtures of the reliability suite (helpers in cli_harness.py)."""

from pathlib import Path

import pytest
from cli_harness import TRAIN_ARGS, check_ok, run_gasp


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished tiny training run with checkpoints at steps 1 and 2 (`gasp train --config debug`)."""
    out = tmp_path_factory.mktemp("reliability") / "run"
    check_ok(run_gasp(*TRAIN_ARGS, "--output-dir", out, "--max-steps", "2", "--save-every", "1"))
    return out
