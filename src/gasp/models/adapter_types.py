"""Value types of the adapter contract (see ``gasp.models.base``).

``QK``: one decoder layer's query/key projections as its attention uses them; ``AdapterBatch``:
model inputs of a batch of multi-frame samples plus the visual-token map; ``LLMSize``: the LLM
decoder sizes of a random-weight build.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class QK:
    """Query/key projections of one decoder layer as its attention uses them.

    ``q_proj(x)`` has ``num_heads * head_dim`` features and ``k_proj(x)`` has
    ``num_kv_heads * head_dim`` (grouped-query attention shares each key head between
    ``num_heads // num_kv_heads`` query heads). ``q_norm`` / ``k_norm``: the per-head norms some
    families apply to each head's query/key vector before rotary (Qwen3-VL's RMSNorm over
    ``head_dim``); None where the family has none. Rotary position embeddings are applied after
    these inside the attention module and are not included: ``queries`` / ``keys`` are what the
    module's attention multiplies, with rotary removed.
    """

    q_proj: nn.Linear
    k_proj: nn.Linear
    num_heads: int
    num_kv_heads: int
    head_dim: int
    q_norm: nn.Module | None = None
    k_norm: nn.Module | None = None

    def queries(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., d)`` attention inputs -> ``(..., num_heads, head_dim)`` query vectors."""
        q = self.q_proj(x).unflatten(-1, (self.num_heads, self.head_dim))
        return q if self.q_norm is None else self.q_norm(q)

    def keys(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., d)`` attention inputs -> ``(..., num_kv_heads, head_dim)`` key vectors."""
        k = self.k_proj(x).unflatten(-1, (self.num_kv_heads, self.head_dim))
        return k if self.k_norm is None else self.k_norm(k)


@dataclass
class AdapterBatch:
    """Model inputs for a batch of multi-frame samples plus the visual-token map.

    Attributes:
        inputs: keyword arguments for ``model(**inputs)``: ``input_ids`` (B, L), ``attention_mask``
            (B, L), the family's pixel tensors and grid info, ``mm_token_type_ids`` (B, L) for Qwen
            families, and ``labels`` (B, L) when answers were given (-100 on prompt, visual and
            padding tokens).
        visual_positions: (B, F, gh, gw) int64, the sequence index (into L) of the visual token
            covering row ``r``, column ``c`` of frame ``f``'s token grid.
        grid: (gh, gw) token grid of every frame.
        image_size: (H, W) pixel size of every frame (one token cell is H/gh x W/gw pixels).
    """

    inputs: dict[str, torch.Tensor]
    visual_positions: torch.Tensor
    grid: tuple[int, int]
    image_size: tuple[int, int]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> AdapterBatch:
        """Move tensors to ``device``; floating-point pixel tensors are also cast to ``dtype``."""
        moved = {}
        for key, value in self.inputs.items():
            if torch.is_tensor(value):
                value = value.to(device)
                if dtype is not None and value.is_floating_point():
                    value = value.to(dtype)
            moved[key] = value
        return AdapterBatch(moved, self.visual_positions.to(device), self.grid, self.image_size)


@dataclass(frozen=True)
class LLMSize:
    """LLM decoder sizes shared by every family's ``build`` (defaults: the tiny presets)."""

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 128
    vocab_size: int | None = None
    """None: the tokenizer's size."""
    head_dim: int | None = None
    """None: hidden_size // num_heads (only Qwen3-VL's config takes another value)."""

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    def text_config(self, tokenizer: Any, **extra: Any) -> dict[str, Any]:
        """The HF ``text_config`` dict of these sizes; ``extra`` adds or overrides fields."""
        return {
            "vocab_size": self.vocab_size or len(tokenizer),
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "pad_token_id": tokenizer.pad_token_id,
            **extra,
        }
