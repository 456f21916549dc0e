"""The Q-K probe measures the model's own attention: for every family, the probe's logits of every
layer equal the pre-softmax scores the model's attention modules compute, with rotary removed.

The model side is taken from inside the model: the rotary embedding module's output is replaced by
(cos=1, sin=0), which makes the attention module's own rotary application the identity, and a
registered attention function receives the query and key states exactly as the module hands them to
its attention kernel (after its projections, per-head norms and rotary) together with its scaling.
"""

import contextlib

import numpy as np
import pytest
import torch
from transformers import AttentionInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from gasp.models import ADAPTERS, PRESETS, from_preset
from gasp.models.heads import capture_visual_tokens
from gasp.probe import layer_qk_logits

TINY = {p.family: name for name, p in PRESETS.items() if name.startswith("tiny-")}
CAPTURE = "gasp_test_capture"


def test_every_family_has_a_tiny_preset():
    assert set(TINY) == set(ADAPTERS) and len(ADAPTERS) == 8


@contextlib.contextmanager
def model_attention_scores(adapter):
    """Yield {layer: (B, H, L, L) pre-softmax scores} filled by the next forward, rotary removed."""
    layer_of = {id(layer.self_attn): i for i, layer in enumerate(adapter.decoder_layers())}
    config = adapter.text_config
    previous = config._attn_implementation
    kernel = ALL_ATTENTION_FUNCTIONS[previous]
    scores = {}

    def capture(module, query, key, value, attention_mask, **kwargs):
        index = layer_of.get(id(module))
        if index is not None:
            keys = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
            scores[index] = query.float() @ keys.float().transpose(-1, -2) * kwargs["scaling"]
        return kernel(module, query, key, value, attention_mask, **kwargs)

    def no_rotary(_module, _args, output):
        cos, sin = output
        return torch.ones_like(cos), torch.zeros_like(sin)

    AttentionInterface.register(CAPTURE, capture)
    config._attn_implementation = CAPTURE
    hook = adapter.decoder().rotary_emb.register_forward_hook(no_rotary)
    try:
        yield scores
    finally:
        hook.remove()
        config._attn_implementation = previous


@pytest.mark.parametrize("family", sorted(ADAPTERS))
def test_probe_logits_equal_the_models_attention_logits(family):
    adapter = from_preset(TINY[family], seed=1)
    height, width = adapter.image_size_for_grid(adapter.default_grid)
    frames = np.random.default_rng(0).integers(0, 256, (3, height, width, 3), dtype=np.uint8)
    batch = adapter.build_inputs([frames], ["Where is the chair?"])
    positions = batch.visual_positions[0].flatten(1)  # (F, N) sequence index of every visual token
    inputs = dict(enumerate(adapter.attention_inputs()))
    with (
        torch.no_grad(),
        model_attention_scores(adapter) as scores,
        capture_visual_tokens(inputs, batch.visual_positions) as x,
    ):
        adapter.model(**batch.inputs)
    assert sorted(scores) == sorted(x) == list(range(adapter.num_layers))
    for layer in range(adapter.num_layers):
        probe = layer_qk_logits(adapter.qk_projections(layer), x[layer][0])  # (H, F-1, N, N)
        s = scores[layer][0]  # (H, L, L)
        model = torch.stack([s[:, positions[0]][:, :, positions[f]] for f in range(1, len(frames))], dim=1)
        assert probe.shape == model.shape
        assert model.abs().max() > 1e-3  # not trivially zero
        torch.testing.assert_close(probe, model, rtol=1e-4, atol=1e-4, msg=f"{family} layer {layer}")


def test_tied_init_ties_what_the_attention_uses_and_scales_it_with_the_gain():
    """Qwen3-VL normalises each head's query/key: the tied init must tie the norms too and put the
    gain where the norm cannot remove it."""
    x = torch.randn(5, 64)
    logits = {}
    for gain in (1.0, 2.0):
        adapter = from_preset("tiny-qwen3-vl", qk_init="tied_orthogonal", qk_gain=gain, num_kv_heads=4)
        for layer in range(adapter.num_layers):
            qk = adapter.qk_projections(layer)
            assert qk.q_norm is not None and qk.k_norm is not None
            with torch.no_grad():
                torch.testing.assert_close(qk.queries(x), qk.keys(x))
        with torch.no_grad():
            logits[gain] = layer_qk_logits(adapter.qk_projections(0), torch.stack([x, x]))
    torch.testing.assert_close(logits[2.0], 4 * logits[1.0])
