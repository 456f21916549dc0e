import pytest
import torch
from torch import nn

from gasp.errors import ConfigError
from gasp.models.heads import (
    CorrespondenceHead,
    CorrespondenceHeads,
    capture_visual_tokens,
    gather_visual_tokens,
    parse_layers,
    svd_init,
)


def test_parse_layers():
    assert parse_layers("all", 4) == [0, 1, 2, 3]
    assert parse_layers("0-2,5", 8) == [0, 1, 2, 5]
    assert parse_layers("3,1,1", 4) == [1, 3]
    assert parse_layers([2, 0], 4) == [0, 2]
    for bad in ("4", "x", "2-9", ""):
        with pytest.raises(ConfigError, match="--layers"):
            parse_layers(bad, 4)


def test_head_shapes():
    head = CorrespondenceHead(hidden_size=12, d_emb=5)
    assert head.fc1.weight.shape == (10, 12) and head.fc2.weight.shape == (5, 10)
    assert head(torch.randn(2, 3, 4, 12)).shape == (2, 3, 4, 5)


def test_svd_init_keeps_top_query_directions():
    torch.manual_seed(0)
    q = nn.Linear(16, 24)  # q_out=24 > d=16: rank 16
    k = 8
    w1, b1 = svd_init(q.weight, q.bias, k)
    s = torch.linalg.svdvals(q.weight.detach())
    # W1 has exactly the k largest singular values of W_Q, with orthonormal row directions.
    assert torch.allclose(torch.linalg.svdvals(w1), s[:k], atol=1e-5)
    rows = w1 / w1.norm(dim=1, keepdim=True)
    assert torch.allclose(rows @ rows.T, torch.eye(k), atol=1e-5)
    # With k = rank the first layer is an isometry of the query: |W1 x| = |W_Q x| for every x, and
    # b1 is b_Q's component inside the column space of W_Q.
    w_full, b_full = svd_init(q.weight, q.bias, 16)
    x = torch.randn(5, 16)
    w = q.weight.detach()
    assert torch.allclose((x @ w_full.T).norm(dim=1), (x @ w.T).norm(dim=1), atol=1e-4)
    b_in_span = w @ torch.linalg.lstsq(w, q.bias.detach().unsqueeze(1)).solution
    assert torch.allclose(b_full.norm(), b_in_span.norm(), atol=1e-4)


def test_svd_init_pads_with_zeros_when_rank_is_small():
    q = nn.Linear(6, 4, bias=False)  # rank 4 < k = 10
    w1, b1 = svd_init(q.weight, None, 10)
    assert w1.shape == (10, 6) and torch.all(w1[4:] == 0) and torch.all(b1 == 0)
    assert torch.all(w1[:4].norm(dim=1) > 0)


class _Layer(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(d)
        self.q_proj = nn.Linear(d, d)
        self.mlp = nn.Linear(d, d)

    def forward(self, x):
        return x + self.mlp(torch.tanh(self.q_proj(self.input_layernorm(x))))


class _Adapter:
    def __init__(self, d=8, n=3):
        self.layers = nn.ModuleList(_Layer(d) for _ in range(n))

    def decoder_layers(self):
        return list(self.layers)

    def qk_projections(self, i):
        return type("QK", (), {"q_proj": self.layers[i].q_proj})()

    def attention_inputs(self):
        return [layer.input_layernorm for layer in self.layers]

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def test_heads_from_adapter_init_every_layer_from_its_own_query():
    torch.manual_seed(0)
    adapter = _Adapter()
    heads = CorrespondenceHeads.from_adapter(adapter, layers="0,2", d_emb=3)
    assert heads.layers == [0, 2] and set(heads.heads) == {"0", "2"}
    for i in (0, 2):
        w1, b1 = svd_init(adapter.layers[i].q_proj.weight, adapter.layers[i].q_proj.bias, 6)
        assert torch.equal(heads[i].fc1.weight, w1) and torch.equal(heads[i].fc1.bias, b1)
    assert not torch.equal(heads[0].fc1.weight, heads[2].fc1.weight)


def test_gather_visual_tokens():
    hidden = torch.arange(2 * 10 * 3, dtype=torch.float32).reshape(2, 10, 3)
    pos = torch.tensor([[[[1, 2]], [[5, 6]]], [[[0, 3]], [[7, 9]]]])  # (B=2, F=2, gh=1, gw=2)
    out = gather_visual_tokens(hidden, pos)
    assert out.shape == (2, 2, 2, 3)
    assert torch.equal(out[1, 1, 1], hidden[1, 9]) and torch.equal(out[0, 1, 0], hidden[0, 5])


def test_capture_does_not_change_outputs_and_sees_attention_inputs():
    torch.manual_seed(0)
    adapter = _Adapter()
    x = torch.randn(2, 10, 8)
    pos = torch.randint(0, 10, (2, 2, 2, 2))
    ref = adapter(x)
    modules = dict(enumerate(adapter.attention_inputs()))
    with capture_visual_tokens(modules, pos) as captured:
        out = adapter(x)
    assert torch.equal(out, ref)
    # Layer 1's capture is its layer norm applied to layer 0's output, gathered at pos.
    h1 = adapter.layers[0](x)
    expected = gather_visual_tokens(adapter.layers[1].input_layernorm(h1), pos)
    assert torch.allclose(captured[1], expected)
    # Hooks are gone after the block.
    assert all(not m._forward_hooks for m in modules.values())
