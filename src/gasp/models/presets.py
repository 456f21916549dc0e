"""Named model presets: tiny random-weight models for tests/demos and real-size configs.

``from_preset(name, **overrides)`` builds the adapter; overrides are the keyword arguments of the
family's ``build`` classmethod (e.g. ``hidden_size``, ``num_layers``, ``patch_size``), so callers can
change widths, depths or the token cell size. Every preset uses an offline tokenizer
(``gasp.models.tokenizer``) and random weights; nothing is downloaded.

Tiny presets have an LLM of width 64 with 2 layers and a 2-block vision tower, and build in well
under a second on one CPU core. Real-size presets (e.g. ``qwen2.5-vl-7b``) have exactly the
released architecture (layer counts and widths) with random weights, for benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from gasp.errors import ConfigError
from gasp.models.base import VLMAdapter
from gasp.models.registry import adapter_class
from gasp.models.vision_init import VISION_INITS, local_offset_attention

QK_INITS = ("hf", "tied_orthogonal")
"""``from_preset(qk_init=...)`` choices: the transformers init, or tied orthogonal Q/K."""


@dataclass(frozen=True)
class Preset:
    """A family plus the ``build`` keyword arguments that define the model."""

    family: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""


PRESETS: dict[str, Preset] = {
    "tiny-qwen2.5-vl": Preset("qwen2.5-vl", {}, "Qwen2.5-VL, LLM 64x2, ViT 32x2, 8-px token cells"),
    "tiny-qwen2-vl": Preset("qwen2-vl", {}, "Qwen2-VL, LLM 64x2, ViT 32x2, 8-px token cells"),
    "tiny-qwen3-vl": Preset("qwen3-vl", {}, "Qwen3-VL, LLM 64x2, ViT 32x2 + DeepStack, 8-px cells"),
    "tiny-llava-onevision": Preset(
        "llava-onevision", {}, "LLaVA-OneVision, SigLIP 32x2, Qwen2 LLM 64x2, 64-px frames, 8-px cells"
    ),
    "tiny-llava-next-video": Preset(
        "llava-next-video", {}, "LLaVA-NeXT-Video, CLIP 32x2, Llama LLM 64x2, 64-px frames, 8-px cells"
    ),
    "tiny-internvl": Preset(
        "internvl", {}, "InternVL, InternViT 32x2, Qwen2 LLM 64x2, 64-px frames, 8-px cells"
    ),
    "tiny-smolvlm": Preset("smolvlm", {}, "SmolVLM, SigLIP 32x2, Llama LLM 64x2, 64-px frames, 8-px cells"),
    "tiny-idefics3": Preset(
        "idefics3", {}, "Idefics3, SigLIP 32x2, Llama LLM 64x2, 64-px frames, 8-px cells"
    ),
    "qwen2.5-vl-7b": Preset(
        "qwen2.5-vl",
        {
            "hidden_size": 3584,
            "num_layers": 28,
            "num_heads": 28,
            "num_kv_heads": 4,
            "intermediate_size": 18944,
            "vocab_size": 152064,
            "patch_size": 14,
            "merge_size": 2,
            "vision_hidden_size": 1280,
            "vision_depth": 32,
            "vision_heads": 16,
            "vision_intermediate_size": 3420,
            "window_size": 112,
            "fullatt_block_indexes": (7, 15, 23, 31),
            "max_tokens": 16384,
        },
        "Qwen2.5-VL-7B-Instruct architecture (28 LLM layers, width 3584), random weights, 28-px cells",
    ),
    "llava-next-video-7b": Preset(
        "llava-next-video",
        {
            "hidden_size": 4096,
            "num_layers": 32,
            "num_heads": 32,
            "num_kv_heads": 32,
            "intermediate_size": 11008,
            "vocab_size": 32064,
            "image_size": 336,
            "patch_size": 14,
            "vision_hidden_size": 1024,
            "vision_intermediate_size": 4096,
            "vision_depth": 24,
            "vision_heads": 16,
        },
        "LLaVA-NeXT-Video-7B architecture (CLIP ViT-L/14-336 + Vicuna-7B, 32 LLM layers), random weights",
    ),
}


def from_preset(
    name: str,
    qk_init: str = "hf",
    vision_init: str = "hf",
    qk_gain: float = 1.0,
    seed: int = 0,
    **overrides: Any,
) -> VLMAdapter:
    """Build the adapter of preset ``name`` with random weights; ``overrides`` change build kwargs.

    Args:
        name: a key of ``PRESETS``.
        qk_init: ``hf`` keeps the transformers init; ``tied_orthogonal`` re-initialises the LLM
            decoder's query/key projections (see ``tie_qk_orthogonal``).
        qk_gain: gain of the tied orthogonal matrix (the Q-K scores scale with its square).
        vision_init: ``hf`` keeps the transformers init; ``local_offsets`` points every vision
            attention head at one neighbour patch (``gasp.models.vision_init``).
        seed: seed of every random weight: the model's (``build``) and the tied Q/K matrices. The
            same seed gives identical weights; ``local_offsets`` draws nothing (its biases follow
            from the rotary frequencies only).
        **overrides: keyword arguments of the family's ``build`` (``hidden_size``, ...).

    Raises:
        ConfigError: unknown preset (the message lists the valid names), unknown override or
            ``qk_init`` / ``vision_init``, ``tied_orthogonal`` with fewer key/value heads than query
            heads, or ``local_offsets`` on a vision tower without 2-D rotary attention.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; valid presets: {', '.join(sorted(PRESETS))}")
    if qk_init not in QK_INITS:
        raise ConfigError(f"qk_init must be one of {', '.join(QK_INITS)}, got {qk_init!r}")
    if vision_init not in VISION_INITS:
        raise ConfigError(f"vision_init must be one of {', '.join(VISION_INITS)}, got {vision_init!r}")
    preset = PRESETS[name]
    cls = adapter_class(preset.family)
    try:
        adapter = cls.build(**{**preset.kwargs, **overrides}, seed=seed)
    except TypeError as err:
        raise ConfigError(f"preset {name!r}: bad override ({err})") from err
    if qk_init == "tied_orthogonal":
        tie_qk_orthogonal(adapter, gain=qk_gain, seed=seed)
    if vision_init == "local_offsets":
        local_offset_attention(adapter.model)
    return adapter


@torch.no_grad()
def tie_qk_orthogonal(adapter: VLMAdapter, gain: float = 1.0, seed: int = 0) -> None:
    """Set ``W_Q = W_K`` = one random orthogonal matrix times ``gain`` and zero q/k biases, in every
    LLM decoder layer (in place; the matrices are drawn from a generator seeded with ``seed``).

    Then the pre-rotary Q-K score of two tokens is ``gain**2`` times the dot product of their
    normalised hidden states, so attention starts out matching similar tokens: an inductive bias a
    pretrained LLM has and a random one lacks; ``gain`` sets how sharp that matching is. Weights are
    ``(num_heads * head_dim, hidden)``; orthogonal means orthonormal rows when ``num_heads *
    head_dim <= hidden`` (orthonormal columns otherwise).

    Families with per-head query/key norms (Qwen3-VL's RMSNorm ``q_norm``/``k_norm`` over each
    head's vector) normalise the projection's scale away, so there the matrix has gain 1 and both
    norms' weights are set to ``gain``: queries and keys are still one function of the token, and
    the score of two tokens is ``gain**2 * sqrt(head_dim)`` times the cosine of their projected
    head vectors.

    Raises:
        ConfigError: ``num_kv_heads != num_heads`` (grouped-query attention cannot tie Q and K), or
            a layer with only one of the two per-head norms.
    """
    generator = torch.Generator().manual_seed(seed)
    for index in range(len(adapter.decoder_layers())):
        qk = adapter.qk_projections(index)
        if qk.num_kv_heads != qk.num_heads or qk.q_proj.weight.shape != qk.k_proj.weight.shape:
            raise ConfigError(
                f"qk_init tied_orthogonal needs num_kv_heads == num_heads, got {qk.num_kv_heads} key/value "
                f"and {qk.num_heads} query heads (pass num_kv_heads={qk.num_heads})"
            )
        norms = [n for n in (qk.q_norm, qk.k_norm) if n is not None]
        if len(norms) == 1:
            raise ConfigError(f"qk_init tied_orthogonal: decoder layer {index} has a norm on only one of Q/K")
        for norm in norms:
            norm.weight.fill_(gain)
        weight = torch.empty_like(qk.q_proj.weight, dtype=torch.float32)
        torch.nn.init.orthogonal_(weight, gain=1.0 if norms else gain, generator=generator)
        qk.q_proj.weight.copy_(weight)
        qk.k_proj.weight.copy_(weight)
        for proj in (qk.q_proj, qk.k_proj):
            if proj.bias is not None:
                proj.bias.zero_()
