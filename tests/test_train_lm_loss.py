"""The language loss computes logits only where a token is supervised: same loss and gradients as
the full-vocabulary logits at every position."""

import numpy as np
import pytest
import torch

from gasp.config import TrainConfig
from gasp.models import from_preset
from gasp.models.base import IGNORE_INDEX
from gasp.training import objective as tobj
from gasp.training.setup import build_objective


def test_lm_loss_is_a_per_sequence_mean():
    labels = torch.full((2, 5), IGNORE_INDEX)
    labels[0, 2:] = torch.tensor([1, 2, 3])
    labels[1, 4] = 6
    positions, targets = tobj.supervised_positions(labels)
    assert positions.tolist() == [1, 2, 3]
    assert targets.tolist() == [[1, 2, 3], [IGNORE_INDEX, IGNORE_INDEX, 6]]
    logits = torch.randn(2, 3, 7)
    loss, count = tobj.lm_loss_per_sequence(logits, targets)
    assert count.tolist() == [3, 1]
    ce = torch.nn.functional.cross_entropy
    assert torch.allclose(loss[0], ce(logits[0], labels[0, 2:]))
    assert torch.allclose(loss[1], ce(logits[1, 2:3], labels[1, 4:]))
    nothing, none_targets = tobj.supervised_positions(torch.full((2, 5), IGNORE_INDEX))
    assert nothing.numel() == 1 and (none_targets == IGNORE_INDEX).all()


@pytest.mark.parametrize(
    "preset", ["tiny-qwen2.5-vl", "tiny-llava-onevision", "tiny-internvl", "tiny-smolvlm"]
)
def test_label_only_logits_give_the_full_logits_loss_and_gradients(preset):
    torch.manual_seed(0)
    adapter = from_preset(preset)
    cfg = TrainConfig(model=preset, lora_rank=4, mode="lm_only", max_steps=1, mixed_precision="no")
    obj, _ = build_objective(adapter, cfg)
    for name, p in obj.named_parameters():
        if "lora_B" in name:  # peft starts B at 0; make LoRA matter
            torch.nn.init.normal_(p, std=0.05)
    rng = np.random.default_rng(0)
    h, w = adapter.image_size_for_grid(getattr(adapter, "default_grid", None) or (4, 4))
    frames = [rng.integers(0, 255, (2, h, w, 3), dtype=np.uint8) for _ in range(2)]
    batch = adapter.build_inputs(frames, ["describe", "what is left?"], ["a red room with a lamp", "blue"])
    trainable = [p for p in obj.parameters() if p.requires_grad]

    ref = tobj.full_logits_lm_loss(obj.model, batch.inputs)
    ref_grads = torch.autograd.grad(ref, trainable)
    loss, logs = obj(batch.inputs, batch.visual_positions, None)
    grads = torch.autograd.grad(loss, trainable)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logs["lm"], ref.detach(), rtol=1e-5, atol=1e-6)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_a_batch_without_answers_logs_the_lm_loss_as_absent():
    torch.manual_seed(0)
    adapter = from_preset("tiny-qwen2.5-vl")
    obj, _ = build_objective(adapter, TrainConfig(lora_rank=4, mode="lm_only", max_steps=1))
    rng = np.random.default_rng(0)
    batch = adapter.build_inputs([rng.integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)], ["describe"], None)
    inputs = dict(batch.inputs)
    inputs.setdefault("labels", torch.full_like(inputs["input_ids"], IGNORE_INDEX))
    loss, logs = obj(inputs, batch.visual_positions, None)
    assert torch.isnan(logs["lm"]) and float(loss.detach()) == 0.0
