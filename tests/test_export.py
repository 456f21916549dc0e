import numpy as np
import pytest
import torch
from test_train_helpers import debug_config, prepare_tiny

from gasp.errors import BadInputError, ConfigError
from gasp.export import export
from gasp.train import train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    data = prepare_tiny(root / "data", sequences=2, max_frames=3)
    cfg = debug_config(data, root / "run", max_steps=2, lr=2e-2, lm_fraction=0.0)
    train(cfg)
    return root / "run"


@pytest.mark.slow
def test_export_round_trip(run_dir, tmp_path):
    from transformers import AutoModelForImageTextToText

    from gasp.config import TrainConfig
    from gasp.models import load_adapter
    from gasp.training.setup import apply_lora
    from gasp.training.state import read_trainable

    out = export(run_dir, tmp_path / "export")
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert (out / "tokenizer.json").is_file() or (out / "tokenizer_config.json").is_file()
    exported = AutoModelForImageTextToText.from_pretrained(str(out)).eval()
    base = AutoModelForImageTextToText.from_pretrained(str(run_dir / "base")).eval()
    assert type(exported) is type(base)
    names = dict(exported.named_parameters())
    base_names = dict(base.named_parameters())
    assert list(names) == list(base_names)
    assert sum(p.numel() for p in names.values()) == sum(p.numel() for p in base_names.values())
    changed = [n for n in names if not torch.equal(names[n], base_names[n])]
    assert changed and all(".layers." in n and "visual" not in n for n in changed)  # LoRA merged, LLM only

    # Same greedy tokens as the trained model without heads (base + unmerged LoRA from the checkpoint).
    trained = load_adapter(run_dir / "base")
    ckpt = sorted((run_dir / "checkpoints").iterdir())[-1]
    lora = apply_lora(trained, TrainConfig.from_name("debug"))
    weights = {k[len("model.") :]: v for k, v in read_trainable(ckpt).items() if k.startswith("model.")}
    assert weights and all("lora_" in k for k in weights)
    assert not trained.model.load_state_dict(weights, strict=False).unexpected_keys
    trained.model = lora.eval()
    plain = load_adapter(out)
    assert type(plain.model) is type(exported)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (3, 32, 32, 3), dtype=np.uint8) for _ in range(2)]
    prompts = ["Describe the scene.", "What is on the left?"]
    batch = plain.build_inputs(frames, prompts, padding_side="left")
    with torch.no_grad():
        a = plain.model.generate(**batch.inputs, max_new_tokens=8, do_sample=False)
        b = trained.model.generate(**batch.inputs, max_new_tokens=8, do_sample=False)
        logits_a = plain.model(**batch.inputs).logits
        logits_b = trained.model(**batch.inputs).logits
    assert torch.equal(a, b)
    assert torch.allclose(logits_a, logits_b, atol=1e-4)


def test_export_errors(run_dir, tmp_path):
    with pytest.raises(BadInputError, match="no checkpoint"):
        export(tmp_path, tmp_path / "x")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "f").write_text("x")
    with pytest.raises(ConfigError, match="--overwrite"):
        export(run_dir, tmp_path / "busy")


@pytest.mark.slow
def test_full_finetune_export_loads_with_stock_transformers(tmp_path):
    from transformers import AutoModelForImageTextToText

    from gasp.export import load_trained
    from gasp.training.checkpoint import read_state, resolve_checkpoint

    data = prepare_tiny(tmp_path / "data", sequences=2, max_frames=3)
    run = tmp_path / "run"
    train(debug_config(data, run, max_steps=2, lr=2e-2, lm_fraction=0.0, finetune="full"))
    ckpt = resolve_checkpoint(run)
    out = export(run, tmp_path / "export")
    exported = AutoModelForImageTextToText.from_pretrained(str(out)).eval()
    base = AutoModelForImageTextToText.from_pretrained(str(run / "base")).eval()
    names, base_names = dict(exported.named_parameters()), dict(base.named_parameters())
    assert type(exported) is type(base) and list(names) == list(base_names)
    assert sum(p.numel() for p in names.values()) == sum(p.numel() for p in base_names.values())
    changed = [n for n in names if not torch.equal(names[n], base_names[n])]
    assert any("visual" in n for n in changed) and any(".layers." in n and "visual" not in n for n in changed)
    trained = load_trained(ckpt, read_state(ckpt)).model
    for n, p in trained.named_parameters():
        assert torch.equal(p, names[n]), n


def test_incomplete_checkpoints_are_never_taken(run_dir, tmp_path, caplog):
    """What a killed rotation could leave (#13): a step with state.json and no weights, one with only
    adapter/. Neither counts as a checkpoint; export names the problem; the run's complete one wins."""
    import logging
    import shutil

    from gasp.training.checkpoint import MARKER, leftovers, list_checkpoints, resolve_checkpoint

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    good = list_checkpoints(run)[-1]
    root = run / "checkpoints"
    no_weights = root / "step-0000090"
    no_weights.mkdir()
    shutil.copy(good / "state.json", no_weights / "state.json")
    only_adapter = root / "step-0000091"
    (only_adapter / "adapter").mkdir(parents=True)
    (only_adapter / "adapter" / "adapter_config.json").write_text("{}")
    unmarked_copy = root / "step-0000092"
    shutil.copytree(good, unmarked_copy)
    (unmarked_copy / MARKER).unlink()  # every file there but the marker: still not complete

    assert list_checkpoints(run) == [good]
    assert set(leftovers(run)) == {no_weights, only_adapter, unmarked_copy}
    with caplog.at_level(logging.WARNING):
        assert resolve_checkpoint(run) == good
    assert "incomplete checkpoint" in caplog.text and "step-0000090" in caplog.text
    for bad in (no_weights, only_adapter, unmarked_copy):
        with pytest.raises(BadInputError, match=r"incomplete checkpoint \(no COMPLETE marker\)"):
            export(bad, tmp_path / f"out-{bad.name}")
        assert not (tmp_path / f"out-{bad.name}").exists()
    # A marker on a folder without weights (edited by hand) fails on the missing shards, by name.
    (no_weights / MARKER).write_text("{}")
    with pytest.raises(BadInputError, match=r"state/model: missing"):
        export(no_weights, tmp_path / "out-forged")
