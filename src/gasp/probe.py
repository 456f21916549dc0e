"""Layer-wise correspondence analysis of a VLM (the paper's analysis figure) on held-out sequences.

One forward pass per sequence yields every decoder layer's figures for up to three feature kinds of
the visual tokens (anchor frame = query frame, every other frame = target frame):

* ``qk`` (default, the paper's measure): the layer's own ``q_proj``/``k_proj`` applied to what its
  attention reads (the input layernorm output); per head, ``softmax(q . k / sqrt(d))`` of a query
  token over the tokens of the target frame, averaged over heads. Rotary position embeddings are
  NOT applied: the probe measures what the content of the tokens says about correspondence, not
  where the tokens sit in the sequence (with RoPE, a token's own position in another frame would be
  favoured by construction).
* ``head``: the correspondence head's embedding of the same tokens (needs a checkpoint with heads),
  matched by ``softmax(cos / tau)`` with the heads' training temperature.
* ``hidden``: the raw residual-stream hidden state entering the layer, ``softmax(cos / temperature)``.

Figures per layer (see gasp.probe_metrics): PCK@delta over all and over moved queries, chance and
identity baselines, confidence-accuracy rho and temporal robustness Y(dt). Outputs in
``--output-dir``: ``report.json``, ``analysis.png`` (all queries), ``analysis_moved.png``, and for one
query point ``attention.png`` and ``matches.png``. ``--compare A/report.json B/report.json`` draws
several reports together instead of probing.

Example::

    gasp prepare --synthetic 8 --seed 9000 --output runs/heldout
    gasp probe --model runs/gasp/checkpoints/last --data runs/heldout --output-dir runs/probe

The held-out frames are resized to the model's input size for ``--grid`` (default: the model's own
grid) and the targets are computed for that grid when the sequences are read, so one prepared
folder probes any model; ``--queries`` chooses the scored anchor queries (recorded in the report).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gasp import constants as C
from gasp import probe_metrics as pm
from gasp.data.store_write import write_json_atomic
from gasp.data.targets import check_queries
from gasp.errors import BadInputError, ConfigError
from gasp.locks import folder_lock
from gasp.probe_report import build_report, compare, draw_report, markdown_table

DEFAULT_PROMPT = "These are frames of a video."


@dataclass
class ProbeConfig:
    """Settings of ``gasp probe`` (every field is a flag: ``max_sequences`` -> ``--max-sequences``)."""

    model: str = field(
        default="",
        metadata={
            "help": "model: a tiny preset name, a HF checkpoint folder, or a `gasp train` checkpoint "
            "folder (its correspondence heads are probed too)"
        },
    )
    data: str = field(default="", metadata={"help": "held-out sequences: a `gasp prepare` folder"})
    grid: list[int] = field(
        default_factory=list,
        metadata={
            "help": "token grid GH GW the frames are resized for (default: the grid a `gasp train` "
            "checkpoint was trained with, else the model's default grid)"
        },
    )
    queries: str = field(
        default="cells",
        metadata={"help": "scored anchor queries: cells (every token cell) | tracks (the paper's tracks)"},
    )
    data_workers: int = field(
        default=2, metadata={"help": "DataLoader worker processes building the samples (0: this process)"}
    )
    output_dir: str = field(default="runs/probe", metadata={"help": "folder for report.json and the figures"})
    label: str = field(
        default="", metadata={"help": "model name in the report and figures (default: --model)"}
    )
    features: list[str] = field(
        default_factory=lambda: list(pm.FEATURE_KINDS),
        metadata={"help": "feature kinds: qk (Q-K attention, the paper's), head, hidden"},
    )
    delta: float = field(default=2.0, metadata={"help": "PCK threshold in token cells (paper: 2)"})
    max_sequences: int = field(
        default=200, metadata={"help": "probe at most this many sequences (paper: 200)"}
    )
    temperature: float = field(
        default=0.07,
        metadata={"help": "softmax temperature of the cosine features (sets confidence for rho)"},
    )
    prompt: str = field(default=DEFAULT_PROMPT, metadata={"help": "text placed after the frames"})
    query_cell: list[int] = field(
        default_factory=list,
        metadata={
            "help": "ROW COL of the query cell of attention.png (default: a moved query near the centre)"
        },
    )
    picture_sequence: int = field(default=0, metadata={"help": "which probed sequence the pictures show"})
    compare: list[str] = field(
        default_factory=list, metadata={"help": "draw these report.json files together instead of probing"}
    )
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def __post_init__(self) -> None:
        bad = [f for f in self.features if f not in pm.FEATURE_KINDS]
        if bad or not self.features:
            raise ConfigError(
                f"--features: unknown {bad or 'empty'}; choose from {', '.join(pm.FEATURE_KINDS)}"
            )
        if self.delta <= 0:
            raise ConfigError(f"--delta must be > 0, got {self.delta}")
        if self.max_sequences < 1:
            raise ConfigError(f"--max-sequences must be >= 1, got {self.max_sequences}")
        if self.temperature <= 0:
            raise ConfigError(f"--temperature must be > 0, got {self.temperature}")
        if self.grid and (len(self.grid) != 2 or min(self.grid) < 1):
            raise ConfigError(f"--grid needs two positive integers GH GW, got {self.grid}")
        check_queries(self.queries)
        if self.data_workers < 0:
            raise ConfigError(f"--data-workers must be >= 0, got {self.data_workers}")
        if self.query_cell and len(self.query_cell) != 2:
            raise ConfigError(f"--query-cell needs ROW COL, got {self.query_cell}")


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

    from gasp.models.heads import capture_visual_tokens, gather_visual_tokens

    kinds = [k for k in features if k != "head" or heads is not None]
    if not kinds:
        raise ConfigError(
            "nothing to probe: the only feature kind asked for is 'head' and the model has no heads"
        )
    model = adapter.model
    layers = adapter.decoder_layers()
    num_layers = len(layers)
    qk = [adapter.qk_projections(i) for i in range(num_layers)]
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    scores: dict[str, list[list[pm.PairScores]]] = {k: [[] for _ in range(num_layers)] for k in kinds}
    grid: tuple[int, int] | None = None
    picture: Picture | None = None
    count = 0
    bar = tqdm(total=max_sequences, desc=desc, unit="seq", disable=not progress)
    try:
        for sequence in sequences:
            if max_sequences is not None and count >= max_sequences:
                break
            frames = np.asarray(sequence[C.FRAMES])
            batch = adapter.build_inputs([frames], [prompt]).to(param.device, param.dtype)
            grid = tuple(batch.grid)
            _check_sequence(sequence, grid, str(sequence.get(C.SEQUENCE_ID, f"sequence {count}")))
            modules = dict(enumerate(adapter.attention_inputs()))
            with capture_visual_tokens(modules, batch.visual_positions) as captured:
                out = model(**batch.inputs, output_hidden_states="hidden" in kinds)
            dt = _frame_distance(sequence)
            match_index = torch.as_tensor(np.asarray(sequence[C.MATCH_INDEX]))[1:]
            match_valid = torch.as_tensor(np.asarray(sequence[C.MATCH_VALID])).bool()[1:]
            dt_t = torch.as_tensor(dt)[1:]
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
            keep_picture = count == picture_sequence
            if keep_picture:
                picture = Picture(
                    frames,
                    np.asarray(sequence[C.MATCH_INDEX]),
                    np.asarray(sequence[C.MATCH_VALID]).astype(bool),
                    dt,
                )
            for i in range(num_layers):
                x = captured[i][0].float()  # (F, N, d)
                probs: dict[str, torch.Tensor] = {}
                if "qk" in kinds:
                    probs["qk"] = layer_qk_logits(qk[i], x.to(param.dtype)).softmax(dim=-1).mean(dim=0)
                if "head" in kinds and i in heads.layers:
                    e = heads[i](x).float()
                    probs["head"] = pm.cosine_probs(e[0], e[1:], head_temperature or temperature)
                if "hidden" in kinds:
                    h = gather_visual_tokens(out.hidden_states[i], batch.visual_positions)[0].float()
                    probs["hidden"] = pm.cosine_probs(h[0], h[1:], temperature)
                for kind, pr in probs.items():
                    scores[kind][i].append(
                        pm.score_pairs(pr.cpu(), match_index, match_valid, dt_t, grid, delta, lookalike)
                    )
                    if keep_picture:
                        picture.probs.setdefault(kind, {})[i] = pr.cpu().numpy()
            count += 1
            bar.update(1)
    finally:
        bar.close()
        model.train(was_training)
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


def draw_pictures(
    result: ProbeResult,
    output_dir: str | Path,
    *,
    prefix: str = "",
    query_cell: Sequence[int] = (),
    kind: str = "qk",
) -> list[Path]:
    """``attention.png`` and ``matches.png`` of the picture sequence at the best layer of ``kind``.

    The target frame is the one with the most valid moved queries; the query cell is ``query_cell``
    (row, col) or the valid moved query nearest the grid centre.
    """
    from gasp import plots

    pic = result.picture
    if pic is None or kind not in pic.probs:
        return []
    gh, gw = result.grid
    n = gh * gw
    best = pm.summarize_layers(result.scores[kind])["best_layer"]
    own = np.arange(n)
    moved_valid = []
    for f in range(1, len(pic.frames)):
        ok = pic.match_valid[f] & (pic.dt[f] > 0)
        far = (
            pm.cell_distance(
                torch.as_tensor(own), torch.as_tensor(np.where(ok, pic.match_index[f], 0)), result.grid
            ).numpy()
            > result.delta
        )
        moved_valid.append(int((ok & far).sum()) + (int(ok.sum()) if pic.dt[f] > 0 else -1) * 1e-3)
    f = 1 + int(np.argmax(moved_valid))
    valid = pic.match_valid[f].astype(bool)
    if query_cell:
        q = int(query_cell[0]) * gw + int(query_cell[1])
        if not 0 <= q < n:
            raise ConfigError(f"--query-cell {list(query_cell)} is outside the {gh}x{gw} grid")
    else:
        rows, cols = np.divmod(own, gw)
        dist_centre = np.hypot(rows - (gh - 1) / 2, cols - (gw - 1) / 2)
        true = np.where(valid, pic.match_index[f], 0)
        far = (
            pm.cell_distance(torch.as_tensor(own), torch.as_tensor(true), result.grid).numpy() > result.delta
        )
        candidates = valid & far if (valid & far).any() else valid
        q = int(np.argmin(np.where(candidates, dist_centre, np.inf)))
    probs = pic.probs[kind][best][f - 1]
    out = Path(output_dir)
    title = f"{prefix.rstrip('_') or 'model'}: {kind} layer {best}, frame distance {int(pic.dt[f])}"
    return [
        plots.plot_attention(
            pic.frames[0],
            pic.frames[f],
            probs[q],
            q,
            result.grid,
            out / f"{prefix}attention.png",
            true_cell=int(pic.match_index[f][q]) if valid[q] else None,
            title=title,
        ),
        plots.plot_matches(
            pic.frames[0],
            pic.frames[f],
            probs.argmax(-1),
            pic.match_index[f],
            valid,
            result.grid,
            out / f"{prefix}matches.png",
            delta=result.delta,
            title=title,
        ),
    ]


def load_model(spec: str | Path) -> tuple[Any, Any, float | None]:
    """``(adapter, heads or None, head temperature or None)`` for what ``--model`` names.

    A `gasp train` run or checkpoint folder (``state.json``) gives its trained model (LoRA merged, or
    the full fine-tuning weights; ``gasp.export.load_trained``) and its correspondence heads;
    anything else goes to ``gasp.models.load_adapter`` (a preset name, a HF checkpoint folder such
    as a `gasp export` output, or a hub id).
    """
    from gasp.models import load_adapter
    from gasp.training.checkpoint import checkpoint_root

    path = Path(spec)
    if not (path / "state.json").is_file() and not checkpoint_root(path).is_dir():
        return load_adapter(str(spec)), None, None
    from gasp.export import load_trained
    from gasp.models.heads import CorrespondenceHeads
    from gasp.training.checkpoint import read_state, resolve_checkpoint
    from gasp.training.state import read_trainable

    ckpt = resolve_checkpoint(path)
    state = read_state(ckpt)
    adapter = load_trained(ckpt, state)
    info = state.get("heads")
    if not info:
        return adapter, None, None
    heads = CorrespondenceHeads(adapter.hidden_size, info["layers"], int(info["d_emb"]))
    weights = read_trainable(ckpt)
    prefix = "heads."
    missing = heads.load_state_dict(
        {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}, strict=False
    )
    if missing.missing_keys:
        raise BadInputError(f"{ckpt}: the checkpoint lacks head weights {missing.missing_keys[:3]}")
    return adapter, heads, float(state.get("config", {}).get("tau", 0.07))


def trained_grid(spec: str | Path) -> list[int] | None:
    """The token grid a `gasp train` run or checkpoint was trained with (``--grid``), else None."""
    from gasp.training.checkpoint import list_checkpoints, read_state, resolve_checkpoint

    path = Path(spec)
    if not (path / "state.json").is_file() and not list_checkpoints(path):
        return None
    grid = read_state(resolve_checkpoint(path)).get("config", {}).get("grid")
    return list(grid) if grid else None


def heldout_samples(
    data: str | Path, adapter: Any, grid: Sequence[int] | None, queries: str, max_sequences: int, workers: int
) -> Iterable[dict[str, Any]]:
    """The first ``max_sequences`` sequences of a prepared folder (index order) as samples for
    ``adapter``'s token grid (``grid``, default the model's) and frame size, built in ``workers``
    DataLoader worker processes."""
    from gasp.data.loader import iter_samples, model_frame_size, open_prepared

    grid_, image_hw = model_frame_size(adapter, grid or None)
    count = min(max_sequences, len(open_prepared(data).index))
    return iter_samples(str(data), grid_, image_hw, queries, range(count), num_workers=workers)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gasp.cli_args import add_dataclass_arguments

    add_dataclass_arguments(parser, ProbeConfig)


def run(args: argparse.Namespace) -> int:
    from gasp.cli_args import apply_overrides

    cfg = apply_overrides(ProbeConfig(), args)
    with folder_lock(cfg.output_dir, "probe"):
        return _run(cfg)


def _run(cfg: ProbeConfig) -> int:
    out = Path(cfg.output_dir)
    if cfg.compare:
        combined = compare(cfg.compare, out)
        print(markdown_table(combined))
        print(f"wrote {out / 'analysis.png'}, {out / 'comparison.json'}")
        return 0
    if not cfg.model or not cfg.data:
        raise ConfigError("give --model and --data (or --compare REPORT.json ...)")
    adapter, heads, tau = load_model(cfg.model)
    label = cfg.label or Path(cfg.model).name or cfg.model
    result = probe_model(
        adapter,
        heldout_samples(
            cfg.data,
            adapter,
            cfg.grid or trained_grid(cfg.model),
            cfg.queries,
            cfg.max_sequences,
            cfg.data_workers,
        ),
        heads=heads,
        features=cfg.features,
        delta=cfg.delta,
        temperature=cfg.temperature,
        head_temperature=tau,
        prompt=cfg.prompt,
        max_sequences=cfg.max_sequences,
        picture_sequence=cfg.picture_sequence,
        progress=cfg.progress,
        desc=f"probe {label}",
    )
    report = build_report({label: result})
    report["model_spec"] = {label: cfg.model}
    report["data"] = str(cfg.data)
    report["queries"] = cfg.queries
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "report.json", report)
    draw_report(report, out, title=label)
    draw_pictures(result, out, query_cell=cfg.query_cell)
    (out / "summary.md").write_text(markdown_table(report), encoding="utf-8")
    print(markdown_table(report))
    print(f"wrote {out / 'report.json'} and figures in {out}")
    return 0
