"""Mean and spread of probe reports over several seeds (``gasp demo --seeds N``).

Every seed's report holds the same models probed on the same held-out pairs. The combined report
keeps the shared fields (grid, delta, baselines) and, per model:

* ``pck``, ``pck_moved``, ``rho``: the per-layer mean over seeds, with ``pck_sd``, ``pck_moved_sd``,
  ``rho_sd`` (sample standard deviation, ``ddof=1``; 0 for one seed) for the figure's error bars;
  ``temporal_robustness.y`` the mean of each seed's Y(dt) (each at that seed's own layer) and ``y_sd``;
* ``headline``: the mean over seeds of each seed's headline figures, every seed's figures read at
  that seed's one layer (highest all-query PCK; ``gasp.probe_report.best_figures``), ``headline_sd`` their
  standard deviation and ``headline_by_seed`` the per-seed values;
* ``seeds``: the seeds and ``by_seed``: every seed's own model block.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gasp.errors import ConfigError

HEADLINE = ("pck", "pck_moved", "rho", "pck_lookalike", "min_y_dt_le_8", "y_max_dt")
"""Headline figures combined as mean +- sd."""
_PER_LAYER = ("pck", "pck_moved", "rho", "pck_lookalike")


def mean_sd(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1; 0 for one value) of the non-None ``values``."""
    present = np.array([v for v in values if v is not None], dtype=float)
    if not present.size:
        return None, None
    sd = float(present.std(ddof=1)) if present.size > 1 else 0.0
    return float(present.mean()), sd


def _columns(rows: Sequence[Sequence[float | None]]) -> tuple[list, list]:
    lengths = {len(r) for r in rows}
    if len(lengths) != 1:
        raise ConfigError(f"seeds disagree on the number of layers/frame distances: {sorted(lengths)}")
    pairs = [mean_sd(col) for col in zip(*rows)]
    return [m for m, _ in pairs], [s for _, s in pairs]


def combine_blocks(blocks: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> dict[str, Any]:
    """One model's blocks of several seeds -> the combined block (see the module docstring)."""
    from gasp.probe_report import best_figures

    out: dict[str, Any] = {}
    for key in _PER_LAYER:
        rows = [b.get(key) or [None] * len(b["pck"]) for b in blocks]
        out[key], out[f"{key}_sd"] = _columns(rows)
    dts = [list(b["temporal_robustness"]["dt"]) for b in blocks]
    if any(d != dts[0] for d in dts):
        raise ConfigError("seeds were probed on different frame distances; were the held-out data the same?")
    y, y_sd = _columns([b["temporal_robustness"]["y"] for b in blocks])
    out["temporal_robustness"] = {"dt": dts[0], "y": y, "y_sd": y_sd}
    heads = [best_figures(b) for b in blocks]
    out["best_layer"] = [h["best_layer"] for h in heads]
    out["headline"], out["headline_sd"] = {}, {}
    for key in HEADLINE:
        out["headline"][key], out["headline_sd"][key] = mean_sd([h[key] for h in heads])
    out["headline_by_seed"] = heads
    for key in ("train_seconds",):
        if all(key in b for b in blocks):
            out[key] = round(float(np.mean([b[key] for b in blocks])), 1)
    out["seeds"] = list(seeds)
    out["by_seed"] = [dict(b) for b in blocks]
    return out


def combine_reports(reports: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> dict[str, Any]:
    """Reports of the same models on the same held-out pairs, one per seed -> one combined report."""
    if not reports or len(reports) != len(seeds):
        raise ConfigError(f"need one report per seed, got {len(reports)} reports for seeds {list(seeds)}")
    first = reports[0]
    for seed, r in zip(seeds, reports):
        same = (r["grid"], r["delta"], r.get("num_pairs"), list(r["models"]))
        if same != (first["grid"], first["delta"], first.get("num_pairs"), list(first["models"])):
            raise ConfigError(
                f"seed {seed}: probed on other pairs, grid, delta or models than seed {seeds[0]}"
            )
    models = {name: combine_blocks([r["models"][name] for r in reports], seeds) for name in first["models"]}
    return {**{k: v for k, v in first.items() if k != "models"}, "seeds": list(seeds), "models": models}


def combine_checks(check_lists: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Acceptance checks of several seeds -> one list: a check passes only if it passes for every
    seed; ``value`` lists the seeds' values and ``passed_seeds`` says how many passed."""
    if len(check_lists) == 1:
        return [dict(c) for c in check_lists[0]]
    combined = []
    for checks in zip(*check_lists):
        names = {c["check"] for c in checks}
        if len(names) != 1:
            raise ConfigError(f"seeds ran different acceptance checks: {sorted(names)}")
        passed = sum(bool(c["pass"]) for c in checks)
        combined.append(
            {
                "check": checks[0]["check"],
                "value": [c["value"] for c in checks],
                "pass": passed == len(checks),
                "passed_seeds": f"{passed}/{len(checks)}",
            }
        )
    return combined
