"""Correspondence heads: one small MLP per supervised LLM layer, used in training only.

A head reads its layer's visual tokens *as that layer's attention sees them*: the output of
``adapter.attention_inputs()[layer]`` (the pre-attention norm, i.e. what ``q_proj``/``k_proj`` read),
captured with forward hooks that only gather tokens and never modify the module output. The
heads are thrown away at export, so the trained model keeps the base architecture.

SVD initialisation (the paper: "first layer initialised from an SVD of that layer's pretrained
query projection W_Q (the top singular directions)"). With ``W_Q = U S V^T`` (``W_Q`` is
``(num_heads * head_dim, d)``, bias ``b_Q``) and ``k = 2 * d_emb``:

    W1 = U_k^T W_Q = diag(S_k) V_k^T        (k, d)
    b1 = U_k^T b_Q   (0 when q_proj has no bias)

so the first layer outputs exactly the query vector's coordinates along its ``k`` strongest
principal directions (the similarity structure the layer's Q-K attention starts from). When
``rank = min(W_Q.shape) < k`` the remaining ``k - rank`` rows and biases are zero. The second layer
keeps PyTorch's default initialisation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from gasp.errors import ConfigError


def parse_layers(spec: str | Sequence[int], num_layers: int, flag: str = "--layers") -> list[int]:
    """Turn ``"all"``, ``"20-27"``, ``"0,4,8-11"`` or a list of ints into sorted unique layer ids.

    Args:
        spec: ``"all"``, a comma list of ids and inclusive ``a-b`` ranges, or a sequence of ints.
        num_layers: number of decoder layers of the model.
        flag: name of the option, for error messages.

    Raises:
        ConfigError: on syntax errors or ids outside ``[0, num_layers)``.
    """
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text == "all":
            return list(range(num_layers))
        ids: list[int] = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            try:
                if "-" in part[1:]:
                    lo, hi = part.split("-", 1)
                    ids.extend(range(int(lo), int(hi) + 1))
                else:
                    ids.append(int(part))
            except ValueError as exc:
                raise ConfigError(
                    f"{flag}: cannot parse {part!r} in {spec!r}; use 'all' or e.g. '0-13,20'"
                ) from exc
    else:
        ids = [int(i) for i in spec]
    bad = [i for i in ids if not 0 <= i < num_layers]
    if bad or not ids:
        raise ConfigError(
            f"{flag}={spec!r}: layers must be in [0, {num_layers}) and non-empty (got {bad or ids})"
        )
    return sorted(set(ids))


def svd_init(weight: torch.Tensor, bias: torch.Tensor | None, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First-layer weights from the top-``k`` SVD of a query projection (see module docstring).

    Args:
        weight: ``(q_out, d)`` weight of ``q_proj``.
        bias: ``(q_out,)`` or None.
        k: number of rows (``2 * d_emb``).

    Returns:
        ``(W1 (k, d), b1 (k,))`` float32; rows past ``min(q_out, d)`` are zero.
    """
    w = weight.detach().float()
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    r = min(k, s.numel())
    w1 = torch.zeros(k, w.shape[1])
    b1 = torch.zeros(k)
    w1[:r] = s[:r, None] * vh[:r]
    if bias is not None:
        b1[:r] = u[:, :r].T @ bias.detach().float()
    return w1, b1


class CorrespondenceHead(nn.Module):
    """``d -> 2*d_emb -> GELU -> d_emb`` MLP; outputs are raw (the losses L2-normalise them)."""

    def __init__(self, hidden_size: int, d_emb: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, 2 * d_emb)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(2 * d_emb, d_emb)

    def init_from_query(self, q_proj: nn.Module) -> None:
        """Initialise ``fc1`` from ``q_proj``'s SVD (a peft LoRA wrapper is unwrapped to its base)."""
        base = getattr(q_proj, "base_layer", q_proj)
        w1, b1 = svd_init(base.weight, getattr(base, "bias", None), self.fc1.out_features)
        with torch.no_grad():
            self.fc1.weight.copy_(w1)
            self.fc1.bias.copy_(b1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(..., d)`` visual tokens -> ``(..., d_emb)`` embeddings."""
        return self.fc2(self.act(self.fc1(tokens.to(self.fc1.weight.dtype))))


class CorrespondenceHeads(nn.Module):
    """One :class:`CorrespondenceHead` per supervised layer (``heads[str(layer)]``)."""

    def __init__(self, hidden_size: int, layers: Sequence[int], d_emb: int) -> None:
        super().__init__()
        self.layers = list(layers)
        self.hidden_size = hidden_size
        self.d_emb = d_emb
        self.heads = nn.ModuleDict({str(i): CorrespondenceHead(hidden_size, d_emb) for i in self.layers})

    @classmethod
    def from_adapter(
        cls, adapter, layers: str | Sequence[int] = "all", d_emb: int = 256, seed: int | None = None
    ) -> CorrespondenceHeads:
        """Heads for ``adapter``'s decoder, each ``fc1`` SVD-initialised from that layer's ``W_Q``.

        ``seed``: seed of the random part (every ``fc2``), drawn from a forked torch RNG so the global
        RNG is left as it was; None draws from the global RNG.
        """
        n = len(adapter.decoder_layers())
        ids = parse_layers(layers, n)
        q0 = adapter.qk_projections(ids[0]).q_proj
        hidden = getattr(q0, "base_layer", q0).in_features
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            heads = cls(hidden, ids, d_emb)
        for i in ids:
            heads[i].init_from_query(adapter.qk_projections(i).q_proj)
        return heads

    def __getitem__(self, layer: int) -> CorrespondenceHead:
        return self.heads[str(layer)]


def gather_visual_tokens(hidden: torch.Tensor, visual_positions: torch.Tensor) -> torch.Tensor:
    """``(B, T, d)`` hidden states -> ``(B, F, N, d)`` visual tokens, ``N = gh * gw`` (row-major).

    ``visual_positions`` is ``(B, F, gh, gw)`` sequence indices (from ``AdapterBatch``).
    """
    b, f = visual_positions.shape[:2]
    pos = visual_positions.reshape(b, -1).to(hidden.device)
    rows = torch.arange(b, device=hidden.device).unsqueeze(1)
    return hidden[rows, pos].reshape(b, f, -1, hidden.shape[-1])


def _identity(x):
    return x


@contextlib.contextmanager
def capture_visual_tokens(
    modules: dict[int, nn.Module], visual_positions: torch.Tensor
) -> Iterator[dict[int, torch.Tensor]]:
    """Temporarily hook ``modules`` (layer -> module) and collect their visual tokens.

    Inside the ``with`` block every forward of ``modules[l]`` stores
    ``gather_visual_tokens(output, visual_positions)`` in the yielded dict under ``l``. The hooks
    return None, so the model's outputs are untouched; they are removed on exit, so gradient
    checkpointing's recomputation in backward does not fire them again. The gather runs under
    identity saved-tensor hooks so that it is not recorded by an enclosing activation checkpoint
    (its recomputation, without our hooks, would otherwise miss those saved tensors).
    """
    captured: dict[int, torch.Tensor] = {}

    def make_hook(layer: int):
        def hook(_module, _inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            with torch.autograd.graph.saved_tensors_hooks(_identity, _identity):
                captured[layer] = gather_visual_tokens(hidden, visual_positions)

        return hook

    handles = [m.register_forward_hook(make_hook(i)) for i, m in modules.items()]
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()
