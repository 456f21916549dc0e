"""Probe reports: the report.json of `gasp probe` / `gasp demo`, its one-layer headline figures, the
markdown summary, the analysis figures, and several reports drawn together (``--compare``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gasp.data.store_write import write_json_atomic
from gasp.errors import BadInputError, ConfigError

if TYPE_CHECKING:
    from gasp.probe_layers import ProbeResult

REPORT_FORMAT = "gasp-probe"


def build_report(
    results: Mapping[str, ProbeResult], extra: Mapping[str, Mapping[str, Any]] | None = None
) -> dict:
    """The report dict: shared grid/delta/baselines plus one block per model.

    A model block has the per-layer lists (``pck``, ``pck_moved``, ``rho``, ...) and ``headline``:
    every headline figure at one layer, the layer of highest all-query PCK (``best_figures``).

    Args:
        results: label -> ProbeResult (all probed on the same sequences).
        extra: label -> extra fields merged into that model's block (e.g. ``train_seconds``).
    """
    if not results:
        raise ValueError("no results")
    first = next(iter(results.values()))
    base = first.baselines()
    for label, r in results.items():
        if r.grid != first.grid or r.delta != first.delta or r.baselines()["num_pairs"] != base["num_pairs"]:
            raise ConfigError(f"model {label!r} was probed on other sequences/grid/delta than the others")
    models = {
        label: {**r.model_block(), **dict((extra or {}).get(label, {}))} for label, r in results.items()
    }
    for block in models.values():
        block["headline"] = best_figures(block)
    return {
        "format": REPORT_FORMAT,
        "version": 1,
        "grid": list(first.grid),
        "delta": first.delta,
        **base,
        "num_sequences": first.num_sequences,
        "models": models,
    }


def read_report(path: str | Path) -> dict:
    """Load a probe/demo report.json, checking the fields the figures need."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"report not found: {path}")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{path}: not valid JSON ({exc})") from exc
    for key in ("grid", "delta", "models"):
        if key not in report:
            raise BadInputError(
                f"{path}: missing field {key!r}; is this a `gasp probe` or `gasp demo` report?"
            )
    for label, block in report["models"].items():
        for key in ("pck", "pck_moved", "rho", "temporal_robustness"):
            if key not in block:
                raise BadInputError(f"{path}: models.{label} lacks {key!r}")
    return report


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.3f}"


def best_figures(block: Mapping[str, Any]) -> dict[str, Any]:
    """Headline numbers of a model block, every one read at ONE layer: ``best_layer``, the layer of
    highest all-query PCK.

    ``pck``, ``pck_moved``, ``rho``, ``pck_lookalike`` (PCK on the look-alike-at-another-depth split,
    ``gasp.probe_metrics.lookalike_pairs``): that layer's values (not each figure's own maximum over layers);
    ``min_y_dt_le_8``: the smallest Y(dt) for dt <= 8 and ``y_max_dt`` Y at the largest dt, both of
    that layer (``temporal_robustness.y`` is computed at it).
    """
    pck = [p if p is not None else -1.0 for p in block["pck"]]
    best = int(np.argmax(pck))
    tr = block["temporal_robustness"]
    y_upto8 = [y for d, y in zip(tr["dt"], tr["y"]) if d <= 8 and y is not None]
    return {
        "best_layer": best,
        "pck": block["pck"][best],
        "pck_moved": block["pck_moved"][best],
        "rho": block["rho"][best],
        "pck_lookalike": (block.get("pck_lookalike") or [None] * len(pck))[best],
        "min_y_dt_le_8": min(y_upto8) if y_upto8 else None,
        "y_max_dt": tr["y"][-1] if tr["y"] else None,
        "max_dt": tr["dt"][-1] if tr["dt"] else None,
    }


_TABLE_FIGURES = ("pck", "pck_moved", "rho", "pck_lookalike", "min_y_dt_le_8")


def _headline_cells(block: Mapping[str, Any]) -> list[str]:
    """The table cells of one model: layer, PCK all, PCK moved, rho, min Y(dt<=8), Y at max dt."""
    if "headline_sd" not in block:  # one seed
        b = best_figures(block)
        return [str(b["best_layer"]), *(_fmt(b[k]) for k in _TABLE_FIGURES)] + [
            f"{_fmt(b['y_max_dt'])} (dt={b['max_dt']})"
        ]
    mean, sd = block["headline"], block["headline_sd"]
    dts = block["temporal_robustness"]["dt"]

    def cell(key: str) -> str:
        return "-" if mean[key] is None else f"{mean[key]:.3f} ± {sd[key]:.3f}"

    return [
        "/".join(map(str, block["best_layer"])),
        *(cell(k) for k in _TABLE_FIGURES),
        f"{cell('y_max_dt')} (dt={dts[-1] if dts else None})",
    ]


def markdown_table(report: Mapping[str, Any]) -> str:
    """A short markdown summary: one row per model, plus the chance and identity levels.

    A report combined over seeds (``gasp.probe_spread``) shows mean ± sd over the seeds, each seed's
    figures read at that seed's own layer (listed in the layer column).
    """
    seeds = report.get("seeds")
    spread = (
        f" Mean ± sd over {len(seeds)} seeds ({', '.join(map(str, seeds))}); each seed read at its own layer."
        if seeds
        else ""
    )
    lines = [
        f"Token grid {report['grid'][0]}x{report['grid'][1]}, PCK@{report['delta']:g} cells, "
        f"{report.get('num_sequences', '?')} held-out sequences, {report.get('num_pairs', '?')} query/frame "
        f"pairs ({report.get('num_moved', '?')} moved, {report.get('num_lookalike', '?')} look-alike "
        f"at another depth). Chance {_fmt(report.get('chance_pck'))} "
        f"(moved {_fmt(report.get('chance_pck_moved'))}), identity {_fmt(report.get('identity_pck'))} "
        "(moved 0 by construction). Q-K attention figures, every figure of a model at one layer: "
        f"the layer of its highest all-query PCK.{spread}",
        "",
        "| model | layer | PCK all | PCK moved | rho | PCK look-alike | min Y(dt<=8) | Y at max dt "
        "| train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, block in report["models"].items():
        train = block.get("train_seconds")
        cells = [label, *_headline_cells(block), "-" if train is None else f"{train:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def draw_report(report: Mapping[str, Any], output_dir: str | Path, title: str | None = None) -> list[Path]:
    """``analysis.png`` (all queries) and ``analysis_moved.png`` of every model in ``report``."""
    from gasp import plots

    out = Path(output_dir)
    kw = {
        "chance": report.get("chance_pck"),
        "identity": report.get("identity_pck"),
        "delta": report["delta"],
        "title": title,
    }
    moved_kw = {**kw, "chance": report.get("chance_pck_moved")}
    return [
        plots.plot_analysis(report["models"], out / "analysis.png", **kw),
        plots.plot_analysis(report["models"], out / "analysis_moved.png", moved=True, **moved_kw),
    ]


def compare(paths: Sequence[str], output_dir: str | Path) -> dict:
    """Draw several reports together; labels are prefixed with the report's folder on collisions."""
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    merged: dict[str, Any] = {}
    first: dict | None = None
    for p in paths:
        report = read_report(p)
        if first is None:
            first = report
        elif report["grid"] != first["grid"] or report["delta"] != first["delta"]:
            raise ConfigError(
                f"{p}: grid/delta {report['grid']}/{report['delta']} differ from {paths[0]}'s "
                f"{first['grid']}/{first['delta']}; figures would not be comparable"
            )
        for label, block in report["models"].items():
            name = label if label not in merged else f"{Path(p).parent.name}/{label}"
            merged[name] = block
    combined = {
        **{k: v for k, v in first.items() if k != "models"},
        "models": merged,
        "compared": list(paths),
    }
    write_json_atomic(Path(output_dir) / "comparison.json", combined)
    draw_report(combined, output_dir)
    (Path(output_dir) / "summary.md").write_text(markdown_table(combined), encoding="utf-8")
    return combined
