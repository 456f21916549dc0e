"""``--seed`` seeds the model's initialisation: presets, tied Q/K, heads, and the trainer's base model."""

from types import SimpleNamespace

import torch

from gasp.config import TrainConfig
from gasp.models import from_preset
from gasp.models.heads import CorrespondenceHeads

TIED = {"qk_init": "tied_orthogonal", "vision_init": "local_offsets", "num_kv_heads": 4}


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _differing(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> set[str]:
    assert a.keys() == b.keys()
    return {k for k in a if not torch.equal(a[k], b[k])}


def test_one_seed_gives_identical_weights_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = _weights(from_preset("tiny-qwen2.5-vl", seed=3, **TIED).model)
    assert torch.equal(torch.rand(1), before)  # building did not reseed or consume the global RNG
    b = _weights(from_preset("tiny-qwen2.5-vl", seed=3, **TIED).model)
    assert not _differing(a, b)


def test_two_seeds_give_different_weights_everywhere_random():
    a = _weights(from_preset("tiny-qwen2.5-vl", seed=0, **TIED).model)
    b = _weights(from_preset("tiny-qwen2.5-vl", seed=1, **TIED).model)
    diff = _differing(a, b)
    q = [k for k in a if "language_model" in k and k.endswith("q_proj.weight")]
    k_ = [k for k in a if "language_model" in k and k.endswith("k_proj.weight")]
    vision = [
        k
        for k in a
        if k.startswith("model.visual") and k.endswith("weight") and "norm" not in k and "ln_" not in k
    ]
    assert q and k_ and vision
    assert set(q + k_ + vision) <= diff  # LLM, tied Q/K and vision tower all change with the seed
    for key in q:  # still tied within one model
        assert torch.equal(a[key], a[key.replace("q_proj", "k_proj")])
    # the local-offset vision biases draw nothing: they are the same for both seeds
    qkv_bias = [k for k in a if k.startswith("model.visual") and k.endswith("attn.qkv.bias")]
    assert qkv_bias and not set(qkv_bias) & diff


def test_heads_follow_their_seed():
    adapter = from_preset("tiny-qwen2.5-vl")
    make = lambda seed: _weights(CorrespondenceHeads.from_adapter(adapter, "all", 8, seed=seed))  # noqa: E731
    a, b, c = make(0), make(0), make(1)
    assert not _differing(a, b)
    assert {k for k in a if k.endswith("fc2.weight")} <= _differing(a, c)


def test_the_trainer_builds_its_base_model_from_the_train_seed(tmp_path):
    from gasp.train import _load_base

    accelerator = SimpleNamespace(is_main_process=True, wait_for_everyone=lambda: None)
    weights = []
    for seed in (0, 1):
        cfg = TrainConfig(model="tiny-qwen2.5-vl", seed=seed, output_dir=str(tmp_path / str(seed)))
        adapter, _ = _load_base(cfg, tmp_path / str(seed), accelerator, None)
        weights.append(_weights(adapter.model))
    assert any("language_model" in k for k in _differing(*weights))
