"""Human-readable outputs of a scored benchmark: markdown table, per-task bar chart, comparisons."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gasp.errors import BadInputError

# Top-level keys of results.json that are bookkeeping, not metrics.
_NOT_METRICS = {"benchmark", "parser", "num_questions", "num_per_task", "missing", "warnings", "pairs"}


def metric_items(results: dict[str, Any]) -> list[tuple[str, float]]:
    """(key, value) of the scalar metrics of a results document, in file order."""
    return [
        (k, float(v))
        for k, v in results.items()
        if k not in _NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)
    ]


def markdown_table(results: dict[str, Any]) -> str:
    """Markdown: one row per metric (x100, 1 decimal), then the pair table for All-Angles."""
    counts = results.get("num_per_task", {})
    lines = [f"## {results.get('benchmark', 'benchmark')} (parser: {results.get('parser', 'official')})", ""]
    lines += ["| metric | score |", "|---|---:|"]
    lines += [f"| {key} | {value:.1f} |" for key, value in metric_items(results)]
    pairs = results.get("pairs") or {}
    if pairs:
        lines += ["", "| category | CC | WW | IC | pairs |", "|---|---:|---:|---:|---:|"]
        lines += [
            f"| {c} | {100 * p['CC']:.1f}% | {100 * p['WW']:.1f}% | {100 * p['IC']:.1f}% | {p['n']} |"
            for c, p in pairs.items()
        ]
    missing = results.get("missing", {}).get("count", 0)
    lines += [
        "",
        f"Questions: {results.get('num_questions', sum(counts.values()))}; "
        f"missing predictions (scored wrong): {missing}.",
    ]
    lines += [f"- warning: {w}" for w in results.get("warnings", [])]
    return "\n".join(lines) + "\n"


def bar_chart(results: dict[str, Any], path: str | Path, title: str | None = None) -> None:
    """Save a horizontal bar chart of every metric (``overall`` highlighted) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = metric_items(results)
    names = [k for k, _ in items]
    values = [v for _, v in items]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(items) + 1.2))
    colors = ["tab:red" if n == "overall" else "tab:blue" for n in names]
    ax.barh(range(len(items)), values, color=colors)
    ax.set_yticks(range(len(items)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("score (x100)")
    for y, v in enumerate(values):
        ax.text(min(v + 1, 92), y, f"{v:.1f}", va="center", fontsize=8)
    ax.set_title(title or f"{results.get('benchmark', '')} ({results.get('parser', 'official')} parser)")
    fig.tight_layout()
    tmp = Path(path).with_name(Path(path).name + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a results.json (or a folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(f"{path}: results file not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{path}: not a results JSON ({exc})") from None
    if not isinstance(data, dict) or not metric_items(data):
        raise BadInputError(
            f"{path}: no metrics found (expected a results.json written by `gasp eval score`)"
        )
    return data


def compare(a: dict[str, Any], b: dict[str, Any], name_a: str = "A", name_b: str = "B") -> str:
    """Markdown table of every metric in either result: A, B and B - A (pair shares too)."""
    va, vb = dict(metric_items(a)), dict(metric_items(b))
    for results, values in ((a, va), (b, vb)):
        for category, p in (results.get("pairs") or {}).items():
            for k in ("CC", "WW", "IC"):
                values[f"pairs/{category}/{k}"] = 100.0 * p[k]
    keys = list(va) + [k for k in vb if k not in va]
    lines = [f"| metric | {name_a} | {name_b} | delta |", "|---|---:|---:|---:|"]
    for key in keys:
        x, y = va.get(key), vb.get(key)
        delta = f"{y - x:+.1f}" if x is not None and y is not None else "n/a"
        fx = f"{x:.1f}" if x is not None else "-"
        fy = f"{y:.1f}" if y is not None else "-"
        lines.append(f"| {key} | {fx} | {fy} | {delta} |")
    if a.get("benchmark") != b.get("benchmark"):
        lines.append(f"\nwarning: different benchmarks ({a.get('benchmark')} vs {b.get('benchmark')})")
    return "\n".join(lines) + "\n"
