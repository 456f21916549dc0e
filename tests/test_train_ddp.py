"""Two CPU processes (gloo DDP) give the same loss curve as one process with the same global batch.

Launched with accelerate: ``accelerate launch --cpu --num_processes 2`` starts ONE process unless MPI
is set up (accelerate 1.x), so the MPI-free form ``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu
--num_processes 2`` is used (accelerate's torchrun launcher with the CPU/gloo backend).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_train_helpers import debug_config, prepare_tiny

from gasp.train import train


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("accelerate", path=str(Path(sys.executable).parent)) is None, reason="no accelerate script"
)
def test_two_processes_match_one_process(tmp_path):
    data = prepare_tiny(tmp_path / "data")
    steps = 3
    one = train(debug_config(data, tmp_path / "one", batch_size=2, max_steps=steps))
    accelerate = Path(sys.executable).parent / "accelerate"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        str(accelerate),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        "-m",
        "gasp.train",
        "--config",
        "debug",
        "--data",
        str(data),
        "--batch-size",
        "1",
        "--max-steps",
        str(steps),
        "--output-dir",
        str(tmp_path / "two"),
        "--progress",
        "false",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in two] == list(range(1, steps + 1))
    for key in ("loss", "lm", "corr", "depth"):
        a = np.array([r.get(key, np.nan) for r in one.history])
        b = np.array([r.get(key, np.nan) for r in two])
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=key)
