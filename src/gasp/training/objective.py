"""The GASP training objective: one forward gives the LM loss and every layer's geometric losses.

Memory: hooks keep a reference to each supervised layer's attention-input norm INPUT, the residual
stream that the model's backward (or its own gradient checkpoint) saves anyway, and a copy of the
norm's (small) parameters taken while its layer runs (under FSDP the layer's parameters are sharded
again once it has run). After the model forward, every layer's gather + norm + head + losses run under
``torch.utils.checkpoint`` (non-reentrant), so the GASP terms add no saved activations of their own:
the ``(F-1) x N x N`` similarity matrices of one layer are rebuilt in backward and freed before the
next layer's, never ``layers x tokens^2`` at once. The norm applied is the model's own module (with
those parameters), so the heads see exactly what the attention sees.

Language loss: the LM head runs only at the positions whose next token is supervised (the
model's ``logits_to_keep``), not over the whole sequence: the same loss and gradients as full
logits (tested) without the ``tokens x vocabulary`` logits tensor. A batch without any supervised
token logs ``lm`` as NaN (absent), never 0.

Reductions (chosen so the loss does not depend on how a global batch is split over processes):
each sequence weighs the same. LM: per-sequence mean over answer tokens, then mean over sequences.
Geometry: per-sequence mean over valid (anchor token, target frame) pairs, mean over sequences that
have any, then mean over supervised layers.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from gasp import constants as C
from gasp.losses import geometric_losses, mean_over_valid
from gasp.models.base import IGNORE_INDEX
from gasp.models.heads import CorrespondenceHead, CorrespondenceHeads, gather_visual_tokens


def supervised_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions whose logits predict a supervised token, and those tokens.

    Args:
        labels: ``(B, L)`` with ``IGNORE_INDEX`` on unsupervised tokens.

    Returns:
        ``(positions (K,), targets (B, K))``: every position ``t`` such that some sequence has a label
        at ``t + 1`` (one index set for the whole batch, as ``logits_to_keep`` takes), and
        ``labels[:, t + 1]`` there. ``K`` is at least 1 (an all-ignored column when nothing is
        supervised), so the model call stays the same.
    """
    shifted = labels[:, 1:]
    positions = (shifted != IGNORE_INDEX).any(0).nonzero().flatten()
    if positions.numel() == 0:
        positions = torch.zeros(1, dtype=torch.long, device=labels.device)
        return positions, torch.full_like(labels[:, :1], IGNORE_INDEX)
    return positions, shifted[:, positions]


def lm_loss_per_sequence(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token cross entropy averaged per sequence.

    Args:
        logits: ``(B, K, V)`` logits at the positions of :func:`supervised_positions`.
        targets: ``(B, K)`` the tokens they predict, ``IGNORE_INDEX`` where not supervised.

    Returns:
        ``(loss (B,), num_tokens (B,))``; loss is 0 where a sequence has no supervised token.
    """
    tok = F.cross_entropy(
        logits.float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
    )
    count = (targets != IGNORE_INDEX).sum(1)
    return tok.sum(1) / count.clamp(min=1), count


def full_logits_lm_loss(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The LM loss as computed before label-only logits: fp32 logits at every position, shifted cross
    entropy, per-sequence mean, mean over sequences. The reference of tests and
    benchmarks/bench_lm_logits.py; training uses :func:`supervised_positions` instead."""
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    logits = model(**inputs).logits[:, :-1].float()
    shifted = labels[:, 1:]
    tok = F.cross_entropy(logits.transpose(1, 2), shifted, ignore_index=IGNORE_INDEX, reduction="none")
    count = (shifted != IGNORE_INDEX).sum(1)
    return mean_over_valid(tok.sum(1) / count.clamp(min=1), count)


@contextlib.contextmanager
def capture_norm_inputs(
    modules: dict[int, nn.Module],
) -> Iterator[dict[int, tuple[torch.Tensor, dict[str, torch.Tensor]]]]:
    """Temporarily hook ``modules`` (layer -> attention-input norm): keep a reference to the input
    tensor (no copy: the residual stream, which backward keeps anyway) and a clone of the norm's
    parameters taken while they are materialised (FSDP frees them after the layer). Cloning keeps
    autograd, so a trained norm still receives the heads' gradient. The hooks are removed on exit, so
    checkpoint recomputation in backward does not fire them again."""
    captured: dict[int, tuple[torch.Tensor, dict[str, torch.Tensor]]] = {}

    def make_hook(layer: int):
        def hook(module, args):
            params = {n: p.clone() for n, p in module.named_parameters()}
            captured[layer] = (args[0], params)

        return hook

    handles = [m.register_forward_pre_hook(make_hook(i)) for i, m in modules.items()]
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()


def _layer_losses(
    head: CorrespondenceHead,
    norm: nn.Module,
    norm_params: dict[str, torch.Tensor],
    hidden: torch.Tensor,
    visual_positions: torch.Tensor,
    targets: dict[str, torch.Tensor],
    tau: float,
    eps: float,
) -> tuple[torch.Tensor, ...]:
    tokens = gather_visual_tokens(hidden, visual_positions)
    emb = head(torch.func.functional_call(norm, norm_params, (tokens,)))
    device_type = hidden.device.type
    with torch.autocast(device_type=device_type, enabled=False):
        out = geometric_losses(
            emb.float(),
            targets[C.MATCH_INDEX],
            targets[C.MATCH_VALID],
            targets[C.MATCH_DEPTH],
            targets[C.TOKEN_DEPTH],
            tau=tau,
            eps=eps,
        )
    return out.corr, out.depth, out.corr_count, out.depth_count


def _hook_free_twin(module: nn.Module) -> nn.Module:
    """A shallow copy of ``module`` (same forward, same parameter objects) with hook tables of its own,
    so hooks added to ``module`` later (FSDP, DeepSpeed) do not run when the twin is called."""
    twin = copy.copy(module)
    for table in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
        setattr(twin, table, type(getattr(module, table))())
    for table in (
        "_forward_hooks_with_kwargs",
        "_forward_hooks_always_called",
        "_forward_pre_hooks_with_kwargs",
    ):
        if hasattr(module, table):
            setattr(twin, table, type(getattr(module, table))())
    twin._parameters = dict(module._parameters)
    twin._buffers = dict(module._buffers)
    return twin


class GaspObjective(nn.Module):
    """The VLM (with LoRA) plus its correspondence heads; ``forward`` returns ``(loss, logs)``.

    Args:
        model: the HF VLM (already LoRA-injected).
        attention_inputs: per decoder layer, the module whose output the attention reads.
        heads: the correspondence heads, or None for language-only training.
        tau, depth_eps: loss hyper-parameters.
        lambda_corr, lambda_depth: loss weights (0 switches a term off).
    """

    def __init__(
        self,
        model: nn.Module,
        attention_inputs: list[nn.Module],
        heads: CorrespondenceHeads | None,
        tau: float,
        depth_eps: float,
        lambda_corr: float,
        lambda_depth: float,
    ) -> None:
        super().__init__()
        self.model = model
        self.heads = heads
        self._attention_inputs = list(attention_inputs)  # plain list: not registered twice
        # Hook-free twins of those norms, applied to the captured tokens with the captured parameters:
        # engines hook every module (ZeRO-3 fetches parameters in them), which must not fire here.
        self._norm_twins = [_hook_free_twin(m) for m in self._attention_inputs]
        self.compute_dtype: torch.dtype | None = None  # set by forward
        self.tau, self.depth_eps = tau, depth_eps
        self.lambda_corr, self.lambda_depth = lambda_corr, lambda_depth
        # What FSDP wraps as one unit (accelerate's TRANSFORMER_BASED_WRAP reads this): the model's
        # decoder (and vision) layers, and each correspondence head.
        inner = list(getattr(model, "_no_split_modules", None) or [])
        self._no_split_modules = sorted(set(inner) | {CorrespondenceHead.__name__})

    @contextlib.contextmanager
    def without_heads(self):
        """The objective as language-only LoRA training has it: no heads in the forward, so they get no
        gradient at all (benchmarks' LM-only baseline; training keeps them, see :meth:`_idle_heads`)."""
        heads = self.heads
        self.heads = None
        try:
            yield self
        finally:
            self.heads = heads

    def _idle_heads(self, like: torch.Tensor) -> torch.Tensor:
        """An exact 0 that depends on every head parameter, for a language-only batch.

        Each head runs on zero tokens, so its parameters get a gradient of exactly 0 instead of none.
        Every engine then treats idle heads alike: AdamW's momentum moves them, as DeepSpeed's flat
        ZeRO partitions do anyway (a skipped ``None`` gradient in a torch optimizer would leave them
        still, and ZeRO-3 would reuse the previous step's gradient in their place)."""
        zero = like.new_zeros(())
        for layer in self.heads.layers:
            head = self.heads[layer]
            zero = zero + head(like.new_zeros(0, head.fc1.in_features)).sum()
        return zero

    def forward(
        self,
        inputs: dict[str, torch.Tensor],
        visual_positions: torch.Tensor,
        targets: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One training forward.

        Args:
            inputs: ``AdapterBatch.inputs`` including ``labels``.
            visual_positions: ``(B, F, gh, gw)``.
            targets: ``match_index``, ``match_valid``, ``match_depth`` ``(B, F, N)`` and
                ``token_depth`` ``(B, F, N)``; None for a language-only batch.

        Returns:
            ``(total loss, logs)``; logs hold detached scalars: ``lm``, ``corr``, ``depth`` and
            ``corr/layer_XX``, ``depth/layer_XX``.
        """
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        geometric = targets is not None and self.heads is not None
        modules = {i: self._attention_inputs[i] for i in self.heads.layers} if geometric else {}
        ctx = capture_norm_inputs(modules) if geometric else contextlib.nullcontext({})
        positions, lm_targets = supervised_positions(labels)
        with ctx as captured:
            logits = self.model(**inputs, logits_to_keep=positions).logits
        self.compute_dtype = logits.dtype  # the precision the model ran in (autocast, FSDP, DeepSpeed)
        lm_per_seq, lm_count = lm_loss_per_sequence(logits, lm_targets)
        lm = mean_over_valid(lm_per_seq, lm_count)
        absent = torch.full_like(lm.detach(), float("nan"))
        logs: dict[str, torch.Tensor] = {"lm": lm.detach() if int(lm_count.sum()) > 0 else absent}
        total = lm
        if not geometric:
            if self.heads is not None:
                total = total + self._idle_heads(lm)
            return total, logs
        corr_layers, depth_layers = [], []
        for layer in self.heads.layers:
            corr_b, depth_b, cc, dc = checkpoint(
                _layer_losses,
                self.heads[layer],
                self._norm_twins[layer],
                captured[layer][1],
                captured[layer][0],
                visual_positions,
                targets,
                self.tau,
                self.depth_eps,
                use_reentrant=False,
            )
            corr_layers.append(mean_over_valid(corr_b, cc))
            depth_layers.append(mean_over_valid(depth_b, dc))
            logs[f"corr/layer_{layer:02d}"] = corr_layers[-1].detach()
            logs[f"depth/layer_{layer:02d}"] = depth_layers[-1].detach()
        corr = torch.stack(corr_layers).mean()
        depth = torch.stack(depth_layers).mean()
        logs["corr"], logs["depth"] = corr.detach(), depth.detach()
        if self.lambda_corr:
            total = total + self.lambda_corr * corr
        if self.lambda_depth:
            total = total + self.lambda_depth * depth
        return total, logs
