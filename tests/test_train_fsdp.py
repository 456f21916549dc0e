"""FSDP on 2 CPU processes (gloo) through ``accelerate launch`` with the shipped FSDP config.

accelerate 1.15 runs FSDP on accelerators only: with ``ACCELERATE_USE_CPU=1`` its state falls back to
DDP (MULTI_CPU) whatever the config says. gasp detects that (an FSDP config was launched, accelerate
is not sharding) and shards the objective itself with torch's ``fully_shard`` (gasp.training.sharding:
the same units as accelerate's TRANSFORMER_BASED_WRAP from ``_no_split_modules``, the same
mixed-precision policy). So this test runs gasp's own wrapping, FSDP2 sharding, global clipping and
the sharded checkpoint code (torch.distributed.checkpoint); what it cannot cover is accelerate's own
``fsdp2_prepare_model`` on GPUs.

Tolerance: both runs see the same global batch in fp32; the 2-process run sums gradients by
reduce-scatter of two halves instead of one batch sum, a rounding difference (~1e-7 relative per
step). The losses and gradient norms agree to 2e-7 relative over 4 AdamW steps (measured: 1.9e-7 at
worst, the corr loss); the assertion allows rtol 1e-4 / atol 1e-5, as the DDP test.
"""

import json

import numpy as np
import pytest
import torch
import yaml
from test_train_helpers import accelerate_script, debug_config, launch_train, prepare_tiny, read_metrics

from gasp.export import export
from gasp.train import train
from gasp.training.checkpoint import is_complete, list_checkpoints
from gasp.training.state import read_trainable

KEYS = ("loss", "lm", "corr", "depth", "grad_norm")


def _fsdp_config(tmp_path, mixed_precision="no"):
    """The shipped configs/accelerate/fsdp.yaml, set to 2 CPU processes."""
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[1] / "configs" / "accelerate" / "fsdp.yaml"
    cfg = yaml.safe_load(shipped.read_text())
    assert cfg["fsdp_config"]["fsdp_version"] == 2
    cfg.update(num_processes=2, use_cpu=True, mixed_precision=mixed_precision)
    path = tmp_path / f"fsdp-{mixed_precision}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _close(a_rows, b_rows):
    for key in KEYS:
        a = np.array([r.get(key, np.nan) for r in a_rows])
        b = np.array([r.get(key, np.nan) for r in b_rows])
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=key)


@pytest.mark.slow
@pytest.mark.skipif(accelerate_script() is None, reason="no accelerate script")
def test_fsdp_two_processes_match_one_resume_and_export(tmp_path):
    data = prepare_tiny(tmp_path / "data")
    one = train(debug_config(data, tmp_path / "one", batch_size=2, max_steps=4, save_every=2))
    run = tmp_path / "fsdp"
    args = ["--config", "debug", "--data", str(data), "--batch-size", "1", "--max-steps", "4"]
    args += ["--save-every", "2", "--output-dir", str(run)]
    launch = ["--config_file", str(_fsdp_config(tmp_path))]

    first = launch_train(launch, [*args, "--stop-at-step", "2"])
    assert first.returncode == 0, first.stderr[-3000:]
    assert "gasp shards the model itself" in first.stderr
    (step2,) = list_checkpoints(run)
    state = json.loads((step2 / "state.json").read_text())
    assert state["sharded"] and state["num_processes"] == 2 and state["engine"] == "dcp"
    shards = sorted(p.name for p in (step2 / "state" / "model").glob("*.distcp"))
    assert shards == ["__0_0.distcp", "__1_0.distcp"]  # each process wrote its own shard
    (run / "checkpoints" / "step-0000003.tmp").mkdir()  # as a kill during the next save leaves it

    second = launch_train(launch, [*args, "--resume"])
    assert second.returncode == 0, second.stderr[-3000:]
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    _close(one.history, rows)
    final = list_checkpoints(run)[-1]
    assert final.name == "step-0000004" and is_complete(final)
    assert not (run / "checkpoints" / "step-0000003.tmp").exists()

    # The consolidated sharded checkpoint holds whole tensors equal to the 1-process run's.
    sharded, single = read_trainable(final), read_trainable(list_checkpoints(tmp_path / "one")[-1])
    assert sharded.keys() == single.keys()
    for k in single:
        torch.testing.assert_close(sharded[k], single[k], rtol=1e-3, atol=1e-5, msg=k)
    out = export(run, tmp_path / "export")
    assert (out / "model.safetensors").is_file()
