"""vision_init local_offsets: every head of a 2-D rotary ViT starts out looking at its neighbour patch."""

import numpy as np
import pytest
import torch

from gasp.errors import ConfigError
from gasp.models import from_preset
from gasp.models.vision_init import find_rotary_vit, head_offsets, local_offset_attention

QWEN_PRESETS = ["tiny-qwen2.5-vl", "tiny-qwen2-vl", "tiny-qwen3-vl"]


def rotary_function(vit):
    """The transformers function that rotates q/k in this tower (from the tower's own module)."""
    import importlib

    module = importlib.import_module(type(vit).__module__)
    return module.apply_rotary_pos_emb_vision


def bias_scores(vit, block: int, grid: int) -> torch.Tensor:
    """Pre-softmax scores (heads, N, N) of a block when q/k are their biases alone (zero input), with
    the tower's own rotary embedding at a ``grid x grid`` raster of patch positions."""
    attn = vit.blocks[block].attn
    dim, heads = attn.qkv.in_features, attn.num_heads
    head_dim = dim // heads
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    pos = torch.stack([rows.reshape(-1), cols.reshape(-1)])  # (2, N): row 0 h, row 1 w
    n = pos.shape[1]
    cos, sin = vit.rotary_pos_emb(torch.zeros(n, dim), pos.T)  # (N, 2) position ids: (h, w)
    bias = attn.qkv.bias.detach()
    q = bias[:dim].view(1, heads, head_dim).expand(n, -1, -1)
    k = bias[dim : 2 * dim].view(1, heads, head_dim).expand(n, -1, -1)
    q, k = rotary_function(vit)(q, k, cos, sin)
    return torch.einsum("nhd,mhd->hnm", q, k) * head_dim**-0.5, pos


@pytest.mark.parametrize("preset", QWEN_PRESETS)
def test_each_head_attends_to_its_offset(preset):
    adapter = from_preset(preset, vision_hidden_size=64, vision_heads=4)
    layout = local_offset_attention(adapter.model)
    vit = find_rotary_vit(adapter.model)
    assert len(layout) == len(vit.blocks) and layout[0] == head_offsets(0, 4)
    grid = 12
    for block, offsets in enumerate(layout):
        scores, pos = bias_scores(vit, block, grid)
        probs = scores.softmax(-1)
        for h, (dy, dx) in enumerate(offsets):
            target = pos[:, None, :] - pos[:, :, None]  # (2, N query, N key): key - query
            hit = (target[0] == dy) & (target[1] == dx)  # the one key at the offset, per query
            has = hit.any(-1)  # queries whose offset patch is inside the grid
            assert has.sum() > grid
            best = scores[h].argmax(-1)
            assert hit[has, best[has]].all(), (preset, block, h, (dy, dx))
            # most of the weight on that one patch: a sharp, conv-like tap, not an average
            assert probs[h][hit].mean() > 0.5


def test_offsets_differ_between_heads_and_blocks():
    seen = {o for b in range(4) for o in head_offsets(b, 4)}
    assert len(seen) == 16 and (0, 0) not in seen
    assert head_offsets(0, 8)[4:] == [(-2, 0), (2, 0), (0, -2), (0, 2)]  # heads 5-8: twice as far


def test_init_changes_only_qk_biases_and_tokens_see_their_neighbours():
    tower = dict(
        patch_size=8,
        merge_size=1,
        vision_hidden_size=64,
        vision_heads=4,
        vision_intermediate_size=64,
        fullatt_block_indexes=(0, 1),
    )
    base = from_preset("tiny-qwen2.5-vl", **tower)
    init = from_preset("tiny-qwen2.5-vl", vision_init="local_offsets", **tower)
    a, b = base.model.state_dict(), init.model.state_dict()
    changed = [k for k in a if not torch.equal(a[k], b[k])]
    assert changed and all(k.endswith("attn.qkv.bias") for k in changed)
    # a visual token's output after the tower responds to its 4-neighbours more than to far patches
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (1, 128, 128, 3), dtype=np.uint8)

    def tokens(adapter, img):
        batch = adapter.build_inputs([img], ["x"])
        with torch.no_grad():
            return _vision_tokens(adapter, batch)

    def response(adapter, dy, dx):
        changed = frames.copy()
        r, c = 8 + dy, 8 + dx
        cell = (0, slice(r * 8, r * 8 + 8), slice(c * 8, c * 8 + 8))
        changed[cell] = 255 - changed[cell]
        t0, t1 = tokens(adapter, frames), tokens(adapter, changed)
        return float((t1 - t0)[8 * 16 + 8].norm() / t0[8 * 16 + 8].norm())

    near = np.mean([response(init, *o) for o in head_offsets(0, 4)])
    far = np.mean([response(init, *o) for o in [(5, 5), (-6, 4), (4, -7), (-5, -5)]])
    near_base = np.mean([response(base, *o) for o in head_offsets(0, 4)])
    assert near > 3 * far and near > 2 * near_base


def _vision_tokens(adapter, batch) -> torch.Tensor:
    """The tower's output tokens of the first frame, in raster order (16x16 grid, merge 1)."""
    visual = adapter.model.model.visual
    out = visual(batch.inputs["pixel_values"], grid_thw=batch.inputs["image_grid_thw"])
    hidden = out.pooler_output if hasattr(out, "pooler_output") and out.pooler_output is not None else out[0]
    return hidden[:256]


def test_towers_without_2d_rotary_are_refused():
    with pytest.raises(ConfigError, match="2-D rotary"):
        from_preset("tiny-llava-onevision", vision_init="local_offsets")
    with pytest.raises(ConfigError, match="vision_init must be one of"):
        from_preset("tiny-qwen2.5-vl", vision_init="conv")
