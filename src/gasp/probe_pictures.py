"""The pictures of one probed sequence: ``attention.png`` (one query cell's matching distribution over
a target frame) and ``matches.png`` (every query's predicted match), at a model's best layer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from gasp import probe_metrics as pm
from gasp.errors import ConfigError
from gasp.probe_layers import Picture, ProbeResult


def _far(match_index: np.ndarray, valid: np.ndarray, grid: tuple[int, int], delta: float) -> np.ndarray:
    """Which query cells' true match (read where ``valid``) lies more than ``delta`` cells away."""
    own = np.arange(grid[0] * grid[1])
    true = np.where(valid, match_index, 0)
    return pm.cell_distance(torch.as_tensor(own), torch.as_tensor(true), grid).numpy() > delta


def _target_frame(pic: Picture, grid: tuple[int, int], delta: float) -> int:
    """The target frame with the most valid moved queries (ties: the most valid queries at dt > 0)."""
    moved_valid = []
    for f in range(1, len(pic.frames)):
        ok = pic.match_valid[f] & (pic.dt[f] > 0)
        far = _far(pic.match_index[f], ok, grid, delta)
        moved_valid.append(int((ok & far).sum()) + (int(ok.sum()) if pic.dt[f] > 0 else -1) * 1e-3)
    return 1 + int(np.argmax(moved_valid))


def _query_cell(pic: Picture, f: int, grid: tuple[int, int], delta: float, query_cell: Sequence[int]) -> int:
    """The flat query cell: ``query_cell`` (row, col), else frame ``f``'s valid moved query nearest the
    grid centre (any valid query when none moved)."""
    gh, gw = grid
    if query_cell:
        q = int(query_cell[0]) * gw + int(query_cell[1])
        if not 0 <= q < gh * gw:
            raise ConfigError(f"--query-cell {list(query_cell)} is outside the {gh}x{gw} grid")
        return q
    valid = pic.match_valid[f].astype(bool)
    rows, cols = np.divmod(np.arange(gh * gw), gw)
    dist_centre = np.hypot(rows - (gh - 1) / 2, cols - (gw - 1) / 2)
    far = _far(pic.match_index[f], valid, grid, delta)
    candidates = valid & far if (valid & far).any() else valid
    return int(np.argmin(np.where(candidates, dist_centre, np.inf)))


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
    best = pm.summarize_layers(result.scores[kind])["best_layer"]
    f = _target_frame(pic, result.grid, result.delta)
    valid = pic.match_valid[f].astype(bool)
    q = _query_cell(pic, f, result.grid, result.delta, query_cell)
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
