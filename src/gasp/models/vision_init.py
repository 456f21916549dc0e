"""Initialisations of a random-weight vision tower that give it the spatial bias a pretrained one has.

A pretrained ViT describes a patch by its surroundings; a randomly initialised one mostly averages
its attention window, so its tokens say little more than "this colour" and cannot be matched across
views. ``local_offset_attention`` sets the query/key biases of every attention head of a 2-D-rotary
ViT (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) so that, before any training, head ``m`` of block ``b``
attends to the patch at one fixed offset ``(dy, dx)`` from the query patch: the tokens then carry
their neighbours' features through distinct value/output projections, like a convolution with a
sparse kernel. Weights are untouched (content-based attention can still be learned) and the model
stays the stock transformers class: this is only an initial value of existing parameters.

How it works: the rotary embedding turns the score of a query at grid position ``p`` and a key at
``p + d`` into ``sum_j |q_j| |k_j| cos(phi_j - f_j d_axis(j))`` over the rotary pairs ``j`` (phase
difference ``phi_j`` of the pair's complex numbers, frequency ``f_j``, axis rows or columns). With
the input-dependent parts of q and k negligible next to constant biases of size ``strength`` and
``phi_j = f_j * offset_axis(j)``, every pair peaks at ``d = offset``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gasp.errors import ConfigError

VISION_INITS = ("hf", "local_offsets")
"""``vision_init`` choices: the transformers init, or ``local_offset_attention``."""

# Offsets (rows, columns) in patches per block, cycled: block 0 the 4-neighbours, block 1 the
# diagonals two patches away, block 2 three patches along the axes, block 3 the near diagonals.
# Composed over blocks they cover a 7x7-patch neighbourhood.
BLOCK_OFFSETS: tuple[tuple[tuple[int, int], ...], ...] = (
    ((-1, 0), (1, 0), (0, -1), (0, 1)),
    ((-2, -2), (-2, 2), (2, -2), (2, 2)),
    ((0, -3), (0, 3), (-3, 0), (3, 0)),
    ((-1, -1), (1, 1), (-1, 1), (1, -1)),
)


def head_offsets(block: int, num_heads: int) -> list[tuple[int, int]]:
    """The (row, column) offset, in patches, that head ``m`` of block ``block`` attends to.

    Heads beyond the four of a block's set repeat it at 2x, 3x ... the distance.
    """
    base = BLOCK_OFFSETS[block % len(BLOCK_OFFSETS)]
    return [(base[m % 4][0] * (m // 4 + 1), base[m % 4][1] * (m // 4 + 1)) for m in range(num_heads)]


def find_rotary_vit(model: nn.Module) -> nn.Module:
    """The vision tower of ``model`` with 2-D axial rotary attention (``blocks``, ``rotary_pos_emb``).

    Raises:
        ConfigError: the model has no such tower (e.g. SigLIP/CLIP/InternViT towers with learned
            absolute position embeddings).
    """
    for module in model.modules():
        rotary = getattr(module, "rotary_pos_emb", None)
        if hasattr(module, "blocks") and rotary is not None and hasattr(rotary, "inv_freq"):
            return module
    raise ConfigError(
        "vision_init local_offsets needs a vision tower with 2-D rotary attention (Qwen2-VL, Qwen2.5-VL, "
        f"Qwen3-VL); {type(model).__name__} has none"
    )


@torch.no_grad()
def local_offset_attention(model: nn.Module, strength: float = 8.0) -> list[list[tuple[int, int]]]:
    """Point every vision attention head at a fixed neighbour patch (in place); see the module doc.

    Args:
        model: a VLM whose vision tower uses 2-D axial rotary attention with a biased ``qkv``
            projection (q, k, v stacked, heads contiguous), as in Qwen2-VL / Qwen2.5-VL / Qwen3-VL.
        strength: size of each query/key bias component. The score gap between the target patch and
            its neighbours grows with ``strength**2``; 8 makes each head put most of its weight on
            its target patch in a 16-dim head.

    Returns:
        per block, the (row, column) offset of each head.

    Raises:
        ConfigError: no such vision tower, or a head dimension not divisible by 4 (axial rotary
            pairs for rows and columns).
    """
    vit = find_rotary_vit(model)
    inv_freq = vit.rotary_pos_emb.inv_freq.detach().float().cpu()  # (head_dim / 4,)
    layout = []
    for index, block in enumerate(vit.blocks):
        attn = block.attn
        qkv: nn.Linear = attn.qkv
        dim, heads = qkv.in_features, attn.num_heads
        head_dim = dim // heads
        if qkv.bias is None or head_dim % 4 or inv_freq.numel() != head_dim // 4:
            raise ConfigError(
                f"vision block {index}: local_offsets needs a biased qkv and head_dim divisible by 4 with "
                f"head_dim/4 rotary frequencies, got head_dim {head_dim}, {inv_freq.numel()} frequencies"
            )
        quarter, half = head_dim // 4, head_dim // 2
        offsets = head_offsets(index, heads)
        bias = qkv.bias
        for m, (dy, dx) in enumerate(offsets):
            q = torch.zeros(head_dim)
            k = torch.zeros(head_dim)
            # rotary pair j = (dim j, dim j + head_dim/2); pairs 0..quarter-1 rotate with the row,
            # quarter..half-1 with the column, at frequency inv_freq[j % quarter]
            for j in range(half):
                angle = float(inv_freq[j % quarter]) * (dy if j < quarter else dx)
                k[j] = strength
                q[j], q[j + half] = strength * math.cos(angle), strength * math.sin(angle)
            bias[m * head_dim : (m + 1) * head_dim] = q.to(bias.dtype)
            bias[dim + m * head_dim : dim + (m + 1) * head_dim] = k.to(bias.dtype)
        layout.append(offsets)
    return layout
