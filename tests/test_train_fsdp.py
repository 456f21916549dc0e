"""FSDP on 2 CPU processes (gloo) through ``accelerate launch`` with the shipped FSDP config.

accelerate 1.15 selects FSDP for accelerator devices only: with ``ACCELERATE_USE_CPU=1`` its state
falls back to DDP (MULTI_CPU) whatever the config says. gasp detects that and switches accelerate's
state to FSDP2 (gasp.training.sharding.use_fsdp_on_cpu), so ``accelerator.prepare`` runs accelerate's
own ``fsdp2_prepare_model`` (TRANSFORMER_BASED_WRAP from ``_no_split_modules``, fp32 upcast of the
trained parameters, gasp's precision policy) over a gloo CPU mesh, as on GPUs, and the clipping and
sharded checkpoints run on its FSDP2 modules. What stays untested here is NCCL and CUDA memory.

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
from test_train_helpers import (
    accelerate_script,
    debug_config,
    direct_train,
    launch_train,
    prepare_tiny,
    read_metrics,
)

from gasp.errors import ConfigError
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
    assert "gasp switched its state to FSDP2" in first.stderr
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


def test_fsdp_precision_policy(monkeypatch):
    """bf16 compute, fp32 gradient reduction, outputs as computed (accelerate's default reduces and
    outputs in bf16); no plugin without an FSDP launch."""
    from gasp.training.sharding import fsdp_plugin

    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    assert fsdp_plugin("bf16") is None
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    policy = fsdp_plugin("bf16").mixed_precision_policy
    assert (policy.param_dtype, policy.reduce_dtype, policy.output_dtype) == (
        torch.bfloat16,
        torch.float32,
        None,
    )
    policy = fsdp_plugin("no").mixed_precision_policy
    assert (policy.param_dtype, policy.reduce_dtype) == (None, None)
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(ConfigError, match="fsdp_version: 2"):
        fsdp_plugin("bf16")


@pytest.mark.slow
@pytest.mark.skipif(accelerate_script() is None, reason="no accelerate script")
def test_fsdp_bf16_base_with_fp32_trained_weights(tmp_path):
    """What a GPU run does, on the CPU: the frozen base in bf16, LoRA and heads in fp32, bf16 compute.

    The launcher's ``mixed_precision: bf16`` reaches the run (``--mixed-precision auto``). Tolerances:
    a 2-process FSDP run against a 1-process run computes in bf16 (8-bit mantissa, unit roundoff
    2^-9 = 2e-3) with other summation orders and another cast path (FSDP's bf16 all-gather of the
    fp32 weights against autocast), so losses and gradient norms are compared to rtol 1e-2
    (measured: 2.8e-3 at worst). That bf16 was really used is shown by the same
    runs in fp32 differing by more than 1e-4 (measured: 1.3e-2; fp32 runs agree to 2e-7) and by the
    log line naming the dtype the model's logits came out in. Resume is
    exact: the resumed run's losses equal an uninterrupted 2-process run's to rtol 1e-6, which needs
    the checkpoint to hold the fp32 weights, not their bf16 casts.
    """
    data = prepare_tiny(tmp_path / "data")
    common = ["--config", "debug", "--data", str(data), "--max-steps", "4", "--save-every", "2"]
    bf16 = ["--base-dtype", "bfloat16"]
    direct_train(
        [
            *common,
            *bf16,
            "--mixed-precision",
            "bf16",
            "--batch-size",
            "2",
            "--output-dir",
            str(tmp_path / "one"),
        ]
    )
    direct_train([*common, "--batch-size", "2", "--output-dir", str(tmp_path / "fp32")])
    launch = ["--config_file", str(_fsdp_config(tmp_path, "bf16"))]
    sharded = [*common, *bf16, "--mixed-precision", "auto", "--batch-size", "1"]  # debug says "no"
    sharded += ["--gradient-checkpointing", "true"]  # the same losses as without (tests/test_train.py)

    whole = launch_train(launch, [*sharded, "--output-dir", str(tmp_path / "whole")])
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert "frozen bfloat16, trained float32, mixed precision bf16" in whole.stderr
    assert "compute dtype: bfloat16" in whole.stderr  # FSDP's policy reached the model
    run = tmp_path / "resumed"
    for extra in (["--stop-at-step", "2"], ["--resume"]):
        proc = launch_train(launch, [*sharded, "--output-dir", str(run), *extra])
        assert proc.returncode == 0, proc.stderr[-3000:]

    one, fp32, rows = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "fp32"), read_metrics(run)
    for key in KEYS:
        a, b = (np.array([r.get(key, np.nan) for r in x]) for x in (one, rows))
        np.testing.assert_allclose(b, a, rtol=1e-2, err_msg=key)
        np.testing.assert_allclose(
            b, [r.get(key, np.nan) for r in read_metrics(tmp_path / "whole")], rtol=1e-6
        )
    # gasp's precision policy leaves the objective's fp32 outputs alone. accelerate's default casts
    # them to bf16 (a loss of 7.3 in steps of 2^-5; the mean over 2 processes in steps of 2^-6): with
    # it every logged loss would be a multiple of 2^-10, which fp32 losses are not (chance 2^-11 each).
    losses = [r["loss"] for r in rows]
    assert not all(float(x * 1024).is_integer() for x in losses), losses
    gap = max(abs(r[k] - f[k]) / abs(f[k]) for r, f in zip(rows, fp32) for k in KEYS if k in f)
    assert gap > 1e-4, f"bf16 runs match fp32 to {gap:.1e}: bf16 compute did not happen"
    trained = read_trainable(list_checkpoints(run)[-1])
    assert {v.dtype for v in trained.values()} == {torch.float32}
    assert (export(run, tmp_path / "export") / "model.safetensors").is_file()
