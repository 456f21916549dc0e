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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_script() -> Path | None:
    """The venv's ``accelerate`` launcher, or None."""
    import shutil
    import sys

    found = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    return Path(found) if found else None


def launch_train(launch_args: list[str], train_args: list[str], timeout: int = 500, use_cpu: bool = True):
    """``accelerate launch LAUNCH_ARGS -m gasp.train TRAIN_ARGS`` on CPU processes (gloo; with
    ``use_cpu`` accelerate is told so by ACCELERATE_USE_CPU); returns the completed process."""
    import os
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ACCELERATE_USE_CPU", None)
    if use_cpu:
        env["ACCELERATE_USE_CPU"] = "1"
    cmd = [
        str(accelerate_script()),
        "launch",
        *launch_args,
        "--main_process_port",
        str(free_port()),
        "-m",
        "gasp.train",
        *train_args,
        "--progress",
        "false",
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def direct_train(args: list[str]) -> None:
    """``python -m gasp.train ARGS`` in a fresh process (accelerate's state is a per-process
    singleton, so a bf16 run cannot share this test process with the fp32 ones)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "gasp.train", *args, "--progress", "false"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def read_metrics(run: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
