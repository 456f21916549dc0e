"""Pure metric functions of the layer-wise correspondence analysis (the paper's analysis figure).

No model, no I/O: features in, figures out, so every number can be checked on constructed inputs.

Conventions:
    * A frame's visual tokens form a ``(gh, gw)`` grid, flattened row-major: cell ``(r, c)`` has
      flat index ``r * gw + c``. Distances between cells are Euclidean, in cell units, between
      cell centres.
    * The query frame is the anchor (position 0 of a sequence); every other frame ``k`` is a
      target frame. A (query cell, target frame) pair is evaluated where the ground truth
      (``match_valid``) has a match for it.
    * ``dt`` is the frame distance ``|frame_index[k] - frame_index[0]|`` in the source video.
      Pairs with ``dt == 0`` (the same image drawn twice by the paper's sampling with replacement)
      carry no correspondence information and are left out of every figure.

Figures (see :func:`summarize_layers`):
    * PCK@delta: the predicted cell (argmax of the matching distribution) is correct when it lies
      within ``delta`` cells of the true match.
    * Moved PCK: the same over queries whose true match lies more than ``delta`` cells from the
      query's own cell, where predicting "same position" scores 0.
    * Chance: expected PCK of a uniformly random cell; identity: PCK of predicting the query's own
      cell. Both depend only on the grid, delta and the ground truth, not on the model.
    * rho: Pearson correlation between confidence (the maximum probability of the matching
      distribution) and correctness (0/1).
    * Temporal robustness ``Y(dt) = PCK(dt) / PCK(1)``, at the best layer (highest all-query PCK) and
      for the layer average (ratio of the layer-averaged PCKs, which stays finite when a single
      layer's PCK(1) is 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

FEATURE_KINDS = ("qk", "head", "hidden")


def cell_coords(grid: tuple[int, int]) -> torch.Tensor:
    """(row, col) of every cell of a ``(gh, gw)`` grid, flat row-major order: ``(gh*gw, 2)`` float32."""
    gh, gw = grid
    rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    return torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=-1).float()


def cell_distance(index_a: torch.Tensor, index_b: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Euclidean distance in cell units between flat cell indices ``index_a`` and ``index_b`` (same shape)."""
    gw = grid[1]
    dr = torch.div(index_a, gw, rounding_mode="floor") - torch.div(index_b, gw, rounding_mode="floor")
    dc = index_a % gw - index_b % gw
    return torch.sqrt((dr.float() ** 2) + (dc.float() ** 2))


def neighbourhood_fraction(grid: tuple[int, int], delta: float) -> torch.Tensor:
    """For every cell ``t``: the fraction of the grid's cells within ``delta`` of ``t``, ``(gh*gw,)``.

    This is the probability that a uniformly random prediction is correct when the true match is ``t``.
    """
    xy = cell_coords(grid)
    dist = torch.cdist(xy, xy)
    return (dist <= delta + 1e-6).float().mean(dim=1)


def qk_logits(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Attention logits of query tokens over the tokens of each target frame, per query head.

    Args:
        q: ``(Hq, N, d)`` queries of the query-frame tokens (one row per head).
        k: ``(Hkv, K, M, d)`` keys of the ``M`` tokens of each of ``K`` target frames. ``Hq`` must
            be a multiple of ``Hkv`` (grouped-query attention shares each key head among
            ``Hq / Hkv`` query heads, as the model does).

    Returns:
        ``(Hq, K, N, M)``: ``q_h,i . k_h,j / sqrt(d)``, the pre-softmax scores of the model's
        attention (without rotary embeddings) between those tokens.
    """
    hq, hkv = q.shape[0], k.shape[0]
    if hq % hkv:
        raise ValueError(f"query heads ({hq}) must be a multiple of key/value heads ({hkv})")
    k = k.repeat_interleave(hq // hkv, dim=0)
    return torch.einsum("hnd,hkmd->hknm", q.float(), k.float()) / math.sqrt(q.shape[-1])


def qk_attention_probs(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Head-averaged attention of query tokens over the tokens of each target frame.

    Args: as :func:`qk_logits`.

    Returns:
        ``(K, N, M)``: ``mean_h softmax_j(q_h,i . k_h,j / sqrt(d))``, each row a distribution over
        the target frame's tokens (the attention restricted to that frame, without RoPE).
    """
    return qk_logits(q, k).softmax(dim=-1).mean(dim=0)


def cosine_probs(query: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """Matching distribution from cosine similarity: ``softmax_j(cos(a_i, b_j) / temperature)``.

    Args:
        query: ``(N, D)`` query-frame features.
        target: ``(K, M, D)`` features of ``K`` target frames.
        temperature: softmax temperature (> 0); it sets the confidence scale, not the argmax.

    Returns:
        ``(K, N, M)`` row-stochastic matching probabilities.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    a = torch.nn.functional.normalize(query.float(), dim=-1)
    b = torch.nn.functional.normalize(target.float(), dim=-1)
    return (torch.einsum("nd,kmd->knm", a, b) / temperature).softmax(dim=-1)


@dataclass
class PairScores:
    """Per-pair outcomes of one sequence, one layer, one feature kind (all arrays of length P)."""

    correct: np.ndarray  # bool
    moved: np.ndarray  # bool, true match more than delta cells from the query's own cell
    confidence: np.ndarray  # float, maximum matching probability
    dt: np.ndarray  # int, frame distance
    chance: np.ndarray  # float, probability that a uniform guess is correct for this pair
    identity: np.ndarray  # bool, the query's own cell is within delta of the true match
    lookalike: np.ndarray | None = None  # bool, the pair is in the look-alike split (see lookalike_pairs)

    @staticmethod
    def concat(items: Sequence[PairScores]) -> PairScores:
        """Join the pairs of several sequences."""
        if not items:
            raise ValueError("no pairs to join")
        joined = [np.concatenate([getattr(i, f) for i in items]) for f in _PAIR_FIELDS]
        looks = [i.lookalike for i in items]
        lookalike = None if any(x is None for x in looks) else np.concatenate(looks)
        return PairScores(*joined, lookalike=lookalike)


_PAIR_FIELDS = ("correct", "moved", "confidence", "dt", "chance", "identity")


def cell_descriptors(frames: np.ndarray, grid: tuple[int, int], context: int = 1) -> np.ndarray:
    """What a token looks like, from colours only: ``(F, N, 3 * (2*context+1)**2)``.

    The mean RGB (in [0, 1]) of each cell and of its neighbours up to ``context`` cells away (edge
    cells repeat the border), i.e. the cell's colour in its surroundings.
    """
    f, h, w, _ = frames.shape
    gh, gw = grid
    cells = frames.astype(np.float64).reshape(f, gh, h // gh, gw, w // gw, 3).mean(axis=(2, 4)) / 255.0
    padded = np.pad(cells, ((0, 0), (context, context), (context, context), (0, 0)), mode="edge")
    size = 2 * context + 1
    parts = [padded[:, dy : dy + gh, dx : dx + gw] for dy in range(size) for dx in range(size)]
    return np.concatenate(parts, axis=-1).reshape(f, gh * gw, -1)


def lookalike_pairs(
    frames: np.ndarray,
    token_depth: np.ndarray,
    match_index: np.ndarray,
    match_valid: np.ndarray,
    grid: tuple[int, int],
    delta: float,
    depth_ratio: float = 0.25,
) -> np.ndarray:
    """The look-alike-at-another-depth split: ``(F-1, N)`` bool over the (query, target frame) pairs.

    A pair is in it when the target frame's token that looks most like the query token (nearest
    :func:`cell_descriptors`, colours only) is a wrong token, more than ``delta`` cells from the
    true match, whose depth differs from the true match's depth by more than ``depth_ratio`` of
    it: the ambiguity that a depth-consistency term can resolve and appearance alone cannot.
    Defined from the frames, depths and ground truth only, never from a model.

    Args:
        frames: ``(F, H, W, 3)`` uint8, frame 0 the query frame.
        token_depth: ``(F, gh, gw)`` metres per cell (0 = unknown).
        match_index, match_valid: ``(F, N)`` ground truth; row 0 (the query frame) is ignored.
        grid, delta: token grid and PCK threshold in cells.
        depth_ratio: relative depth difference that counts as "another depth".
    """
    desc = cell_descriptors(np.asarray(frames), grid)
    depth = np.asarray(token_depth, dtype=np.float64).reshape(len(desc), -1)
    out = np.zeros((len(desc) - 1, desc.shape[1]), dtype=bool)
    for k in range(1, len(desc)):
        dist = ((desc[0][:, None, :] - desc[k][None, :, :]) ** 2).sum(-1)  # (N query, N target)
        best = dist.argmin(axis=1)
        true = np.asarray(match_index[k]).astype(np.int64)
        wrong = cell_distance(torch.as_tensor(best), torch.as_tensor(true), grid).numpy() > delta + 1e-6
        d_true, d_best = depth[k][true], depth[k][best]
        other_depth = (d_true > 0) & (d_best > 0) & (np.abs(d_best - d_true) > depth_ratio * d_true)
        out[k - 1] = np.asarray(match_valid[k]).astype(bool) & wrong & other_depth
    return out


def score_pairs(
    probs: torch.Tensor,
    match_index: torch.Tensor,
    match_valid: torch.Tensor,
    dt: torch.Tensor,
    grid: tuple[int, int],
    delta: float,
    lookalike: torch.Tensor | None = None,
) -> PairScores:
    """Score the predicted matches of the query-frame cells in every target frame.

    Args:
        probs: ``(K, N, N)`` matching distribution of each query cell over each target frame's cells.
        match_index: ``(K, N)`` int, true flat cell index of each query cell's match in frame k.
        match_valid: ``(K, N)`` bool, where the ground truth has a match.
        dt: ``(K,)`` int, frame distance of each target frame from the query frame.
        grid: ``(gh, gw)`` with ``gh * gw == N``.
        delta: PCK threshold in cells.
        lookalike: optional ``(K, N)`` bool, the look-alike split (:func:`lookalike_pairs`).

    Returns:
        :class:`PairScores` over valid pairs of frames with ``dt != 0``.
    """
    kf, n, m = probs.shape
    if n != grid[0] * grid[1] or m != n:
        raise ValueError(f"probs {tuple(probs.shape)} does not match grid {grid} (expected (K, N, N))")
    if match_index.shape != (kf, n) or match_valid.shape != (kf, n) or dt.shape != (kf,):
        raise ValueError(
            f"match_index {tuple(match_index.shape)}, match_valid {tuple(match_valid.shape)}, dt "
            f"{tuple(dt.shape)} must be ({kf}, {n}), ({kf}, {n}), ({kf},)"
        )
    conf, pred = probs.float().max(dim=-1)
    dt_full = dt.long().view(kf, 1).expand(kf, n)
    keep = match_valid.bool() & (dt_full != 0)
    true = match_index.long()[keep]
    pred = pred[keep]
    query = torch.arange(n).view(1, n).expand(kf, n)[keep]
    near = neighbourhood_fraction(grid, delta)
    correct = cell_distance(pred, true, grid) <= delta + 1e-6
    identity = cell_distance(query, true, grid) <= delta + 1e-6
    return PairScores(
        correct=correct.numpy(),
        moved=(~identity).numpy(),
        confidence=conf[keep].numpy().astype(np.float64),
        dt=dt_full[keep].numpy(),
        chance=near[true].numpy().astype(np.float64),
        identity=identity.numpy(),
        lookalike=None if lookalike is None else torch.as_tensor(lookalike).bool()[keep].numpy(),
    )


def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson correlation of two 1-D arrays; ``None`` when either is constant or has < 2 values."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size < 2:
        return None
    xc, yc = x - x.mean(), y - y.mean()
    den = math.sqrt(float((xc * xc).sum()) * float((yc * yc).sum()))
    if den <= 1e-12:
        return None
    return float((xc * yc).sum() / den)


def _mean(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if values.size else None


@dataclass
class LayerFigures:
    """Figures of one layer: PCK over all / moved queries, rho, and PCK per frame distance."""

    pck: float | None
    pck_moved: float | None
    rho: float | None
    dt: list[int] = field(default_factory=list)
    pck_lookalike: float | None = None
    pck_by_dt: list[float] = field(default_factory=list)
    count_by_dt: list[int] = field(default_factory=list)


def layer_figures(scores: PairScores) -> LayerFigures:
    """PCK, moved PCK, rho and PCK per frame distance of one layer's pooled pairs."""
    dts = sorted({int(d) for d in scores.dt})
    by_dt = [scores.correct[scores.dt == d] for d in dts]
    return LayerFigures(
        pck=_mean(scores.correct),
        pck_moved=_mean(scores.correct[scores.moved]),
        rho=pearson(scores.confidence, scores.correct),
        dt=dts,
        pck_by_dt=[float(c.mean()) for c in by_dt],
        count_by_dt=[int(c.size) for c in by_dt],
        pck_lookalike=None if scores.lookalike is None else _mean(scores.correct[scores.lookalike]),
    )


def temporal_robustness(dts: Sequence[int], pck_by_dt: Sequence[float]) -> list[float | None]:
    """``Y(dt) = PCK(dt) / PCK(1)``; all ``None`` when there is no ``dt == 1`` or PCK(1) is 0."""
    table = dict(zip(dts, pck_by_dt))
    base = table.get(1)
    if not base:
        return [None for _ in dts]
    return [float(p / base) for p in pck_by_dt]


def baselines(scores: PairScores) -> dict[str, float | None]:
    """Chance and identity PCK (all queries and moved queries) of the evaluated pairs."""
    return {
        "chance_pck": _mean(scores.chance),
        "chance_pck_moved": _mean(scores.chance[scores.moved]),
        "identity_pck": _mean(scores.identity),
        "identity_pck_moved": _mean(scores.identity[scores.moved]),
        "num_pairs": int(scores.correct.size),
        "num_moved": int(scores.moved.sum()),
        "num_lookalike": None if scores.lookalike is None else int(scores.lookalike.sum()),
    }


def summarize_layers(per_layer: Sequence[PairScores | None]) -> dict:
    """The per-model figures of one feature kind (the report's ``M`` block).

    Args:
        per_layer: pooled :class:`PairScores` of every layer, in layer order (same pairs in each);
            ``None`` for a layer without this feature (e.g. no correspondence head there).

    Returns:
        ``{"pck": [...], "pck_moved": [...], "rho": [...], "best_layer": i,
        "temporal_robustness": {"dt": [...], "y": [...], "y_layer_mean": [...], "pck": [...],
        "count": [...]}}`` with per-layer lists; ``y`` is at the best layer (highest all-query PCK),
        ``y_layer_mean`` the ratio of layer-averaged PCKs; missing values are ``None``.
    """
    present = [s for s in per_layer if s is not None]
    if not present:
        raise ValueError("no layers to summarize")
    figs = [layer_figures(s) if s is not None else LayerFigures(None, None, None) for s in per_layer]
    pcks = [f.pck if f.pck is not None else -1.0 for f in figs]
    best = int(np.argmax(pcks))
    dts = figs[best].dt
    measured = [f.pck_by_dt for f in figs if f.pck is not None]
    mean_by_dt = np.mean(measured, axis=0).tolist() if dts else []
    return {
        "pck": [f.pck for f in figs],
        "pck_moved": [f.pck_moved for f in figs],
        "rho": [f.rho for f in figs],
        "pck_lookalike": [f.pck_lookalike for f in figs],
        "best_layer": best,
        "temporal_robustness": {
            "dt": dts,
            "y": temporal_robustness(dts, figs[best].pck_by_dt),
            "y_layer_mean": temporal_robustness(dts, mean_by_dt),
            "pck": figs[best].pck_by_dt,
            "count": figs[best].count_by_dt,
        },
    }
