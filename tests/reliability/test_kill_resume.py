"""kill -9 at random points of `gasp prepare` and `gasp train`, then the same command again: the result
is byte-identical to an uninterrupted run's.

Kill points come from fixed seeds: a delay after the output folder appears (prepare), or after the
k-th line of metrics.jsonl / the first checkpoint entry appears (train). Outputs are compared as
whole trees, so the tests do not depend on the names of the files a format uses.
"""

import json
import random
import re
import shutil
import time
from pathlib import Path

import pytest
from cli_harness import TRAIN_ARGS, check_ok, kill_when, run_gasp, snapshot, start_gasp

PREPARE_ARGS = ("prepare", "--synthetic", "2", "--sequences-per-scene", "2", "--min-frames", "3")
PREPARE_ARGS += ("--max-frames", "4", "--progress", "false")


@pytest.fixture(scope="module")
def prepared_reference(tmp_path_factory) -> tuple[dict[str, str], float]:
    """An uninterrupted prepare: its output tree and how long it wrote after its folder appeared."""
    out = tmp_path_factory.mktemp("prepare") / "reference"
    proc = start_gasp(*PREPARE_ARGS, "--workers", "1", "--output", out)
    while not out.exists() and proc.poll() is None:
        time.sleep(0.005)
    t0 = time.monotonic()
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    tree = snapshot(out)
    assert tree
    return tree, time.monotonic() - t0


@pytest.mark.slow
@pytest.mark.parametrize("workers,seed", [(1, 0), (2, 1)])
def test_prepare_killed_then_rerun_is_byte_identical(prepared_reference, tmp_path, workers, seed):
    reference, duration = prepared_reference
    out = tmp_path / "data"
    args = (*PREPARE_ARGS, "--workers", str(workers), "--output", out)
    rng = random.Random(seed)
    killed = False
    for fraction in (rng.uniform(0.2, 0.9), 0.3, 0.1):  # shorter when the run ended before the kill
        proc = start_gasp(*args)
        killed = kill_when(proc, out.exists, fraction * duration)
        if killed:
            break
        shutil.rmtree(out)
    assert killed, "prepare always finished before the kill"
    check_ok(run_gasp(*args))
    assert snapshot(out) == reference


_NOT_A_RESULT = re.compile(r"(_s|_mb|_gb|_bytes)$|time|mem")  # throughput, timings, memory


def _losses(run: Path) -> list[dict]:
    """metrics.jsonl without its timing/throughput/memory fields: the numbers a resume must reproduce."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if not _NOT_A_RESULT.search(k)} for x in lines]


TRAIN_RUN = (*TRAIN_ARGS, "--max-steps", "6", "--save-every", "2")


@pytest.fixture(scope="module")
def trained_reference(tmp_path_factory) -> tuple[list[dict], dict[str, str]]:
    """An uninterrupted run: its losses and its trained weights (every safetensors file)."""
    out = tmp_path_factory.mktemp("train") / "reference"
    check_ok(run_gasp(*TRAIN_RUN, "--output-dir", out))
    losses, weights = _losses(out), _weights(out)
    assert len(losses) == 6 and "loss" in losses[-1] and weights
    return losses, weights


def _weights(run: Path) -> dict[str, str]:
    return snapshot(run, skip=lambda rel: rel.suffix != ".safetensors")


def _metrics_lines(run: Path) -> int:
    try:
        return len((run / "metrics.jsonl").read_text().splitlines())
    except OSError:
        return 0


def _checkpoint_started(run: Path) -> bool:
    return (run / "checkpoints").is_dir() and any((run / "checkpoints").iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_train_killed_then_resumed_gives_the_same_losses_and_weights(trained_reference, tmp_path, seed):
    losses, weights = trained_reference
    out = tmp_path / "run"
    rng = random.Random(seed)
    if seed == 0:  # during (or right after) the first checkpoint write
        ready = lambda: _checkpoint_started(out)  # noqa: E731
    else:  # after the k-th step was logged
        k = rng.randint(1, 5)
        ready = lambda: _metrics_lines(out) >= k  # noqa: E731
    proc = start_gasp(*TRAIN_RUN, "--output-dir", out)
    assert kill_when(proc, ready, rng.uniform(0.0, 0.15)), "training finished before the kill"
    check_ok(run_gasp(*TRAIN_RUN, "--output-dir", out, "--resume"))
    assert _losses(out) == losses
    assert _weights(out) == weights
