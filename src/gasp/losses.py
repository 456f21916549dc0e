"""GASP's geometric losses as pure tensor functions.

Two losses act on the correspondence heads' embeddings of the visual tokens of one sequence (an
anchor frame and F-1 other frames of the same scene):

* **InfoNCE** (``L_corr``): for every anchor token with a ground-truth match in frame ``b``, the
  token of frame ``b`` that shows the same 3D point is the positive and every other token of frame
  ``b`` a negative, with cosine similarity over a temperature ``tau`` as logits;
* **depth consistency** (``L_depth``): the same softmax gives a soft match over frame ``b``'s tokens
  (soft-argmax); the depth it predicts, the softmax-weighted mean of those tokens' depths, must
  agree with the depth of the true 3D point in frame ``b``'s camera (a symmetric relative error).
  Probability put on tokens at another depth (e.g. a look-alike further away or nearer) is
  penalised; probability on wrong tokens at the right depth is not.

All functions work on token grids flattened to ``N = gh * gw`` tokens per frame and reduce in
float32. Embeddings are L2-normalised here, so callers pass raw head outputs.

Conventions:
  * ``emb`` is ``(B, F, N, D)``: B sequences, F frames each, frame ``ANCHOR`` (= 0) is the anchor.
  * Targets come from :func:`gasp.geometry.token_grid.token_targets` (keys in :mod:`gasp.constants`):
    ``match_index (B, F, N)`` flat cell of frame f matched by anchor cell i (-1 = none),
    ``match_valid (B, F, N)``, ``match_depth (B, F, N)`` (metres, depth of the 3D point in frame f's
    camera, i.e. ``d_i^b``), ``token_depth (B, F, N)`` (metres, per-cell depth ``d_j^b``, 0 = none).
  * Reduction: per sequence, the mean over every valid (anchor token, target frame) pair; a
    sequence without any valid pair gets loss 0 and ``count`` 0 so callers can exclude it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gasp.constants import ANCHOR


def pairwise_logits(emb_a: torch.Tensor, emb_b: torch.Tensor, tau: float) -> torch.Tensor:
    """Cosine similarities divided by the temperature.

    Args:
        emb_a: ``(..., N, D)`` anchor embeddings (not necessarily normalised).
        emb_b: ``(..., M, D)`` target-frame embeddings.
        tau: temperature (> 0).

    Returns:
        ``(..., N, M)`` float32 logits ``<e_i^a, e_j^b> / tau`` with L2-normalised ``e``.
    """
    a = F.normalize(emb_a.float(), dim=-1)
    b = F.normalize(emb_b.float(), dim=-1)
    return a @ b.transpose(-1, -2) / tau


def info_nce(logits: torch.Tensor, match_index: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-anchor InfoNCE: ``-log softmax_j(logits_ij)[match_i]``; negatives are all other tokens.

    Args:
        logits: ``(..., N, M)`` from :func:`pairwise_logits`.
        match_index: ``(..., N)`` int64 index of the true match in ``[0, M)``; ignored where invalid.
        valid: ``(..., N)`` bool.

    Returns:
        ``(..., N)`` float32 losses, exactly 0 where ``valid`` is False.
    """
    index = torch.where(valid, match_index, torch.zeros_like(match_index)).clamp(0, logits.shape[-1] - 1)
    log_p = torch.log_softmax(logits, dim=-1)
    picked = log_p.gather(-1, index.unsqueeze(-1)).squeeze(-1)
    return torch.where(valid, -picked, torch.zeros_like(picked))


def depth_consistency(
    logits: torch.Tensor,
    target_depth: torch.Tensor,
    match_depth: torch.Tensor,
    valid: torch.Tensor,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-anchor soft-argmax depth loss ``|d_i^b - d_hat_i| / (d_i^b + d_hat_i + eps)``.

    ``A_ij = softmax_j(logits_ij)`` over the target tokens that have a depth (``target_depth > 0``;
    a cell without valid depth cannot vote, so it is masked out of this softmax), and
    ``d_hat_i = sum_j A_ij d_j^b``.

    Args:
        logits: ``(..., N, M)`` from :func:`pairwise_logits`.
        target_depth: ``(..., M)`` metres, per-token depth of the target frame, 0 = none.
        match_depth: ``(..., N)`` metres, ``d_i^b``: depth of anchor i's 3D point in the target camera.
        valid: ``(..., N)`` bool correspondence validity.
        eps: added to the denominator.

    Returns:
        ``(losses (..., N), valid_depth (..., N))``: losses are 0 where ``valid_depth`` is False
        (invalid match, non-positive ``d_i^b`` or no target token with depth).
    """
    has_depth = target_depth > 0
    masked = logits.masked_fill(~has_depth.unsqueeze(-2), float("-inf"))
    any_depth = has_depth.any(dim=-1, keepdim=True)
    masked = torch.where(any_depth.unsqueeze(-1), masked, torch.zeros_like(masked))
    attn = torch.softmax(masked, dim=-1)
    d_hat = (attn * target_depth.float().unsqueeze(-2)).sum(dim=-1)
    ok = valid & (match_depth > 0) & any_depth
    d = torch.where(ok, match_depth.float(), torch.ones_like(d_hat))
    loss = (d - d_hat).abs() / (d + d_hat + eps)
    return torch.where(ok, loss, torch.zeros_like(loss)), ok


@dataclass
class GeometricLosses:
    """Per-sequence losses of one layer; ``*_count`` = number of valid (anchor, frame) pairs."""

    corr: torch.Tensor  # (B,) mean InfoNCE over valid pairs, 0 where corr_count == 0
    depth: torch.Tensor  # (B,) mean depth loss over valid pairs, 0 where depth_count == 0
    corr_count: torch.Tensor  # (B,) int64
    depth_count: torch.Tensor  # (B,) int64


def geometric_losses(
    emb: torch.Tensor,
    match_index: torch.Tensor,
    match_valid: torch.Tensor,
    match_depth: torch.Tensor,
    token_depth: torch.Tensor,
    tau: float,
    eps: float = 1e-6,
) -> GeometricLosses:
    """Both GASP losses for the anchor frame against every other frame, reduced per sequence.

    Args:
        emb: ``(B, F, N, D)`` head outputs; frame ``ANCHOR`` (0) is the anchor.
        match_index: ``(B, F, N)`` int64, flat target cell matched by each anchor cell.
        match_valid: ``(B, F, N)`` bool.
        match_depth: ``(B, F, N)`` metres.
        token_depth: ``(B, F, N)`` metres, 0 = no depth in that cell.
        tau: temperature of both the InfoNCE and the soft-argmax.
        eps: depth-loss denominator epsilon.

    Returns:
        :class:`GeometricLosses` with the mean over valid (anchor token, target frame) pairs of each
        sequence (0 and count 0 when it has none, never NaN).
    """
    if emb.dim() != 4:
        raise ValueError(f"emb must be (B, F, N, D), got {tuple(emb.shape)}")
    frames = [f for f in range(emb.shape[1]) if f != ANCHOR]
    anchor = emb[:, ANCHOR : ANCHOR + 1]  # (B, 1, N, D)
    logits = pairwise_logits(anchor, emb[:, frames], tau)  # (B, F-1, N, N)
    valid = match_valid[:, frames].bool()
    nce = info_nce(logits, match_index[:, frames], valid)
    dep, dep_ok = depth_consistency(logits, token_depth[:, frames], match_depth[:, frames], valid, eps)
    corr_count = valid.flatten(1).sum(1)
    depth_count = dep_ok.flatten(1).sum(1)
    corr = nce.flatten(1).sum(1) / corr_count.clamp(min=1)
    depth = dep.flatten(1).sum(1) / depth_count.clamp(min=1)
    return GeometricLosses(corr, depth, corr_count, depth_count)


def mean_over_valid(values: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Mean of per-sequence ``values`` over sequences with ``counts > 0`` (0, with grad, if none)."""
    has = (counts > 0).to(values.dtype)
    return (values * has).sum() / has.sum().clamp(min=1)
