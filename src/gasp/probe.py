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
from dataclasses import dataclass, field
from pathlib import Path

from gasp import probe_metrics as pm
from gasp.data.store_write import write_json_atomic
from gasp.data.targets import check_queries
from gasp.errors import ConfigError
from gasp.locks import folder_lock
from gasp.probe_inputs import heldout_samples, load_model, trained_grid
from gasp.probe_layers import DEFAULT_PROMPT, Picture, ProbeResult, layer_qk_logits, probe_model
from gasp.probe_pictures import draw_pictures
from gasp.probe_report import build_report, compare, draw_report, markdown_table

# The command's parts live beside it: probe_layers (probe_model: one forward pass per sequence, every
# layer scored), probe_inputs (model, trained grid, held-out samples), probe_pictures (attention.png,
# matches.png), probe_report (report.json, summary, --compare). Their names are re-exported here.
__all__ = [
    "DEFAULT_PROMPT",
    "Picture",
    "ProbeConfig",
    "ProbeResult",
    "add_arguments",
    "build_report",
    "compare",
    "draw_pictures",
    "draw_report",
    "heldout_samples",
    "layer_qk_logits",
    "load_model",
    "markdown_table",
    "probe_model",
    "run",
    "trained_grid",
    "write_json_atomic",
]


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
