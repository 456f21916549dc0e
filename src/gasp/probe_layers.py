"""Probing every decoder layer of a VLM: one forward pass per held-out sequence, each layer's
matching distributions of the visual tokens (feature kinds ``qk``, ``head``, ``hidden``; see
gasp.probe) scored against the ground truth (gasp.probe_metrics), pooled into a ProbeResult."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from gasp import constants as C
from gasp import probe_metrics as pm
from gasp.errors import BadInputError, ConfigError

DEFAULT_PROMPT = "These are frames of a video."


@dataclass
class Picture:
    """What the attention/match pictures of one sequence need (filled during probing)."""

    frames: np.ndarray  # (F, H, W, 3) uint8
    match_index: np.ndarray  # (F, N)
    match_valid: np.ndarray  # (F, N)
    dt: np.ndarray  # (F,)
    probs: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)  # kind -> layer -> (K, N, N)


@dataclass
class ProbeResult:
    """Pooled per-pair scores of one model: ``scores[kind][layer]`` (None where a layer lacks that
    kind, e.g. no head) plus the picture sequence."""

    grid: tuple[int, int]
    delta: float
    scores: dict[str, list[pm.PairScores | None]]
    num_sequences: int
    picture: Picture | None = None

    def model_block(self) -> dict[str, Any]:
        """The report's per-model block: Q-K figures at the top level, every kind under ``by_feature``."""
        by_feature = {kind: pm.summarize_layers(layers) for kind, layers in self.scores.items()}
        main = by_feature.get("qk") or next(iter(by_feature.values()))
        return {**main, "by_feature": by_feature}

    def baselines(self) -> dict[str, Any]:
        """Chance and identity PCK of the probed pairs (the same for every kind and layer)."""
        return pm.baselines(next(s for layers in self.scores.values() for s in layers if s is not None))


def _frame_distance(sequence: Mapping[str, Any]) -> np.ndarray:
    index = np.asarray(sequence[C.FRAME_INDEX]).astype(np.int64)
    return np.abs(index - index[C.ANCHOR])


def _check_sequence(sequence: Mapping[str, Any], grid: tuple[int, int], where: str) -> None:
    need = (C.FRAMES, C.MATCH_INDEX, C.MATCH_VALID, C.FRAME_INDEX)
    missing = [k for k in need if k not in sequence]
    if missing:
        raise BadInputError(f"{where}: sequence is missing {', '.join(missing)} (re-run `gasp prepare`)")
    f = np.asarray(sequence[C.FRAMES]).shape[0]
    n = grid[0] * grid[1]
    if np.asarray(sequence[C.MATCH_INDEX]).shape != (f, n):
        raise BadInputError(
            f"{where}: {C.MATCH_INDEX} has shape {np.asarray(sequence[C.MATCH_INDEX]).shape}, expected "
            f"({f}, {n}) for the model's {grid[0]}x{grid[1]} token grid; build the targets for the grid "
            "the model gives its frames (gasp.data.loader.model_frame_size)"
        )


def layer_qk_logits(qk: Any, tokens: torch.Tensor) -> torch.Tensor:
    """The Q-K probe's logits of one layer: ``(H, F-1, N, N)`` scores of the query frame's tokens
    (frame 0) over every other frame's tokens, per query head.

    Args:
        qk: the layer's ``gasp.models.QK`` (projections and per-head norms, as its attention uses them).
        tokens: ``(F, N, d)`` the layer's attention inputs (input layernorm output) of the visual tokens.
    """
    q = qk.queries(tokens[0]).float().transpose(0, 1)  # (H, N, d)
    k = qk.keys(tokens[1:]).float().permute(2, 0, 1, 3)  # (Hkv, F-1, N, d)
    return pm.qk_logits(q, k)


@dataclass
class _Probe:
    """One probe run: the model, its feature kinds and what their distributions are made and scored with."""

    adapter: Any
    kinds: list[str]
    qk: list[Any]  # every decoder layer's gasp.models.QK
    heads: Any
    temperature: float
    head_temperature: float
    dtype: torch.dtype
    prompt: str
    delta: float

    def layer_probs(
        self, i: int, captured: Mapping[int, torch.Tensor], hidden_states: Any, visual_positions: Any
    ) -> dict[str, torch.Tensor]:
        """Layer ``i``'s ``kind -> (F-1, N, N)`` distributions of the query tokens over each target frame."""
        from gasp.models.heads import gather_visual_tokens

        x = captured[i][0].float()  # (F, N, d)
        probs: dict[str, torch.Tensor] = {}
        if "qk" in self.kinds:
            probs["qk"] = layer_qk_logits(self.qk[i], x.to(self.dtype)).softmax(dim=-1).mean(dim=0)
        if "head" in self.kinds and i in self.heads.layers:
            e = self.heads[i](x).float()
            probs["head"] = pm.cosine_probs(e[0], e[1:], self.head_temperature)
        if "hidden" in self.kinds:
            h = gather_visual_tokens(hidden_states[i], visual_positions)[0].float()
            probs["hidden"] = pm.cosine_probs(h[0], h[1:], self.temperature)
        return probs


def _make_probe(
    adapter: Any,
    features: Sequence[str],
    heads: Any,
    temperature: float,
    head_temperature: float | None,
    prompt: str,
    delta: float,
) -> _Probe:
    """The run's _Probe: kinds ``features`` less ``head`` where there are no heads (none left: refused)."""
    kinds = [k for k in features if k != "head" or heads is not None]
    if not kinds:
        raise ConfigError(
            "nothing to probe: the only feature kind asked for is 'head' and the model has no heads"
        )
    qk = [adapter.qk_projections(i) for i in range(len(adapter.decoder_layers()))]
    dtype = next(adapter.model.parameters()).dtype
    return _Probe(
        adapter, kinds, qk, heads, temperature, head_temperature or temperature, dtype, prompt, delta
    )


def _forward(
    probe: _Probe, sequence: Mapping[str, Any], frames: np.ndarray, where: str
) -> tuple[Any, Any, Any]:
    """One checked forward pass of ``sequence``: ``(batch, captured attention inputs, model output)``."""
    from gasp.models.heads import capture_visual_tokens

    adapter = probe.adapter
    param = next(adapter.model.parameters())
    batch = adapter.build_inputs([frames], [probe.prompt]).to(param.device, param.dtype)
    _check_sequence(sequence, tuple(batch.grid), where)
    modules = dict(enumerate(adapter.attention_inputs()))
    with capture_visual_tokens(modules, batch.visual_positions) as captured:
        out = adapter.model(**batch.inputs, output_hidden_states="hidden" in probe.kinds)
    return batch, captured, out


def _pair_scorer(
    sequence: Mapping[str, Any], frames: np.ndarray, grid: tuple[int, int], delta: float
) -> Callable[[torch.Tensor], pm.PairScores]:
    """Scores a ``(F-1, N, N)`` matching distribution of ``sequence`` against its ground truth."""
    match_index = torch.as_tensor(np.asarray(sequence[C.MATCH_INDEX]))[1:]
    match_valid = torch.as_tensor(np.asarray(sequence[C.MATCH_VALID])).bool()[1:]
    dt = torch.as_tensor(_frame_distance(sequence))[1:]
    lookalike = None
    if C.TOKEN_DEPTH in sequence:
        lookalike = pm.lookalike_pairs(
            frames,
            np.asarray(sequence[C.TOKEN_DEPTH]),
            np.asarray(sequence[C.MATCH_INDEX]),
            np.asarray(sequence[C.MATCH_VALID]),
            grid,
            delta,
        )
    return lambda probs: pm.score_pairs(probs, match_index, match_valid, dt, grid, delta, lookalike)


def _probe_sequence(
    probe: _Probe,
    sequence: Mapping[str, Any],
    scores: dict[str, list[list[pm.PairScores]]],
    where: str,
    keep_picture: bool,
) -> tuple[tuple[int, int], Picture | None]:
    """Add every layer's pair scores of one sequence to ``scores``: ``(grid, its Picture if kept)``."""
    frames = np.asarray(sequence[C.FRAMES])
    batch, captured, out = _forward(probe, sequence, frames, where)
    grid = tuple(batch.grid)
    score = _pair_scorer(sequence, frames, grid, probe.delta)
    picture = None
    if keep_picture:
        match_valid = np.asarray(sequence[C.MATCH_VALID]).astype(bool)
        picture = Picture(frames, np.asarray(sequence[C.MATCH_INDEX]), match_valid, _frame_distance(sequence))
    for i in range(len(probe.qk)):
        for kind, pr in probe.layer_probs(i, captured, out.hidden_states, batch.visual_positions).items():
            scores[kind][i].append(score(pr.cpu()))
            if picture is not None:
                picture.probs.setdefault(kind, {})[i] = pr.cpu().numpy()
    return grid, picture


def _pooled_result(
    scores: dict[str, list[list[pm.PairScores]]],
    grid: tuple[int, int] | None,
    delta: float,
    count: int,
    picture: Picture | None,
) -> ProbeResult:
    """The ProbeResult of ``count`` sequences, each layer's scores pooled; refuses one with no pairs."""
    if count == 0 or grid is None:
        raise BadInputError("no sequences to probe (is the data folder empty?)")
    pooled = {
        kind: [pm.PairScores.concat(s) if s else None for s in per_layer]
        for kind, per_layer in scores.items()
        if any(per_layer)
    }
    if not ProbeResult(grid, delta, pooled, count).baselines()["num_pairs"]:
        raise BadInputError("the probed sequences have no valid correspondence at frame distance > 0")
    return ProbeResult(grid, delta, pooled, count, picture)


@torch.no_grad()
def probe_model(
    adapter: Any,
    sequences: Iterable[Mapping[str, Any]],
    *,
    heads: Any = None,
    features: Sequence[str] = pm.FEATURE_KINDS,
    delta: float = 2.0,
    temperature: float = 0.07,
    head_temperature: float | None = None,
    prompt: str = DEFAULT_PROMPT,
    max_sequences: int | None = None,
    picture_sequence: int = 0,
    progress: bool = False,
    desc: str = "probe",
) -> ProbeResult:
    """Probe every decoder layer of ``adapter``'s model on ``sequences`` (one forward each).

    Args:
        adapter: a gasp VLMAdapter (model in eval mode is not required; it is set temporarily).
        sequences: dicts with gasp.constants keys (``frames``, ``match_index``, ``match_valid``,
            ``frame_index``), e.g. from ``gasp.data.loader.iter_samples``.
        heads: CorrespondenceHeads for the ``head`` kind (kind skipped when None).
        features: kinds to compute (subset of ``qk``, ``head``, ``hidden``).
        delta: PCK threshold in cells.
        temperature: softmax temperature of ``hidden`` cosine matching.
        head_temperature: temperature of ``head`` matching (default ``temperature``).
        prompt: text after the frames.
        max_sequences: stop after this many.
        picture_sequence: index of the sequence whose matching distributions are kept for pictures.
        progress: tqdm bar.

    Returns:
        :class:`ProbeResult`.
    """
    from tqdm.auto import tqdm

    probe = _make_probe(adapter, features, heads, temperature, head_temperature, prompt, delta)
    scores: dict[str, list[list[pm.PairScores]]] = {k: [[] for _ in probe.qk] for k in probe.kinds}
    grid: tuple[int, int] | None = None
    picture: Picture | None = None
    count = 0
    was_training = adapter.model.training
    adapter.model.eval()
    bar = tqdm(total=max_sequences, desc=desc, unit="seq", disable=not progress)
    try:
        for sequence in sequences:
            if max_sequences is not None and count >= max_sequences:
                break
            where = str(sequence.get(C.SEQUENCE_ID, f"sequence {count}"))
            grid, kept = _probe_sequence(probe, sequence, scores, where, count == picture_sequence)
            picture = kept or picture
            count += 1
            bar.update(1)
    finally:
        bar.close()
        adapter.model.train(was_training)
    return _pooled_result(scores, grid, delta, count, picture)
