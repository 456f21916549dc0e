"""Figures of the correspondence analysis, in the paper's style.

* :func:`plot_analysis`: three panels, (a) PCK@delta per layer as bars (several models overlaid, the
  chance and identity levels as lines), (b) confidence-accuracy rho per layer, (c) temporal
  robustness ``Y(dt)`` at each model's best layer (solid) and averaged over layers (dashed).
* :func:`plot_attention`: for one query cell, the matching distribution over the other frame.
* :func:`plot_matches`: predicted versus true token matches, coloured like optical flow (gasp.viz).

Every function writes a PNG atomically (temporary file, then rename) and returns its path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gasp import viz  # noqa: E402
from gasp.geometry.tracks import grid_points  # noqa: E402

PALETTE = ("#9e9e9e", "#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _values(xs: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if x is None else x for x in xs], dtype=float)


def _band(ax: plt.Axes, x: np.ndarray, y: np.ndarray, sd: Sequence[float | None] | None, colour: str) -> None:
    """Shade mean +- sd (the spread over seeds) around a curve; nothing when ``sd`` is None."""
    if sd is not None:
        s = _values(sd)
        ax.fill_between(x, y - s, y + s, color=colour, alpha=0.2, lw=0)


def plot_analysis(
    models: Mapping[str, Mapping],
    path: str | Path,
    *,
    chance: float | None = None,
    identity: float | None = None,
    delta: float = 2,
    moved: bool = False,
    title: str | None = None,
) -> Path:
    """Draw the three-panel analysis figure for one or several models.

    Args:
        models: label -> figures block (``pck``, ``pck_moved``, ``rho`` per layer and
            ``temporal_robustness`` with ``dt``, ``y`` and optionally ``y_layer_mean``), as in report.json.
            A block combined over seeds also has ``pck_sd``, ``pck_moved_sd``, ``rho_sd`` and
            ``temporal_robustness.y_sd``: drawn as error bars (a) and shaded bands (b, c).
        path: output PNG.
        chance: chance PCK drawn as a dotted line on panel (a).
        identity: same-position PCK drawn as a dashed line on panel (a).
        delta: PCK threshold, for the axis label.
        moved: plot moved-query PCK on panel (a) instead of all-query PCK.
        title: optional figure title.
    """
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    key = "pck_moved" if moved else "pck"
    width = 0.8 / max(1, len(models))
    for m, (label, block) in enumerate(models.items()):
        colour = PALETTE[m % len(PALETTE)]
        pck = _values(block[key])
        layers = np.arange(len(pck))
        sd = block.get(f"{key}_sd")
        axes[0].bar(
            layers + (m - (len(models) - 1) / 2) * width,
            pck,
            width,
            label=label,
            color=colour,
            yerr=None if sd is None else _values(sd),
            capsize=2,
        )
        rho = _values(block["rho"])
        axes[1].plot(np.arange(len(rho)), rho, "o-", color=colour, label=label, ms=3)
        _band(axes[1], np.arange(len(rho)), rho, block.get("rho_sd"), colour)
        tr = block["temporal_robustness"]
        if tr["dt"]:
            layer = block.get("best_layer", "?")
            axes[2].plot(
                tr["dt"],
                _values(tr["y"]),
                "o-",
                color=colour,
                ms=3,
                lw=1,
                label=f"{label} (layer {'/'.join(map(str, layer)) if isinstance(layer, list) else layer})",
            )
            _band(axes[2], np.asarray(tr["dt"]), _values(tr["y"]), tr.get("y_sd"), colour)
            if tr.get("y_layer_mean"):
                axes[2].plot(tr["dt"], _values(tr["y_layer_mean"]), "--", color=colour, lw=1, alpha=0.6)
    if chance is not None:
        axes[0].axhline(chance, color="k", ls=":", lw=1, label=f"chance {chance:.2f}")
    if identity is not None and not moved:
        axes[0].axhline(identity, color="k", ls="--", lw=1, label=f"identity {identity:.2f}")
    axes[0].set(
        xlabel="LLM layer",
        ylabel=f"PCK@{delta:g} ({'moved' if moved else 'all'} queries)",
        ylim=(0, 1),
        title="(a) correspondence accuracy",
    )
    axes[1].axhline(0, color="k", lw=0.5)
    axes[1].set(
        xlabel="LLM layer",
        ylabel="Pearson rho",
        ylim=(-1, 1),
        title="(b) confidence-accuracy correlation",
    )
    axes[2].axhline(1, color="k", lw=0.5)
    axes[2].set(
        xlabel="frame distance dt",
        ylabel="Y(dt) = PCK(dt) / PCK(1)",
        ylim=(0, 1.3),
        title="(c) temporal robustness (dashed: layer mean)",
    )
    num_layers = max(len(block["pck"]) for block in models.values())
    for ax in axes[:2]:
        ax.set_xticks(range(num_layers) if num_layers <= 32 else range(0, num_layers, 4))
    for ax in axes:
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _cell_centre(index: int, grid: tuple[int, int], hw: tuple[int, int]) -> np.ndarray:
    """Pixel (u, v) of the centre of one flat cell index."""
    return grid_points(hw, grid).numpy()[int(index)]


def plot_attention(
    query_image: np.ndarray,
    target_image: np.ndarray,
    probs: np.ndarray,
    query_cell: int,
    grid: tuple[int, int],
    path: str | Path,
    *,
    true_cell: int | None = None,
    title: str | None = None,
) -> Path:
    """Heatmap of one query cell's matching distribution over the target frame.

    Args:
        query_image: ``(H, W, 3)`` uint8 query frame.
        target_image: ``(H, W, 3)`` uint8 target frame.
        probs: ``(gh*gw,)`` matching probabilities of ``query_cell`` over the target cells.
        query_cell: flat index of the query cell (marked with a cross on the query frame).
        grid: token grid ``(gh, gw)``.
        path: output PNG.
        true_cell: flat index of the true match (green circle); the argmax is a red cross.
    """
    h, w = target_image.shape[:2]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5))
    qu, qv = _cell_centre(query_cell, grid, query_image.shape[:2])
    axes[0].imshow(query_image)
    axes[0].plot(qu, qv, "x", color="yellow", ms=12, mew=3)
    axes[0].set_title("query frame")
    axes[1].imshow(target_image)
    heat = np.asarray(probs, dtype=float).reshape(grid)
    axes[1].imshow(
        heat, cmap="magma", alpha=0.6, extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="nearest"
    )
    pu, pv = _cell_centre(int(np.argmax(probs)), grid, (h, w))
    axes[1].plot(pu, pv, "x", color="red", ms=12, mew=3, label="argmax")
    if true_cell is not None and true_cell >= 0:
        tu, tv = _cell_centre(true_cell, grid, (h, w))
        axes[1].plot(tu, tv, "o", mfc="none", mec="lime", ms=14, mew=2, label="true match")
    axes[1].legend(fontsize=7, loc="lower right")
    axes[1].set_title(f"matching probability (max {float(np.max(probs)):.2f})")
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_matches(
    query_image: np.ndarray,
    target_image: np.ndarray,
    pred_cell: np.ndarray,
    true_cell: np.ndarray,
    valid: np.ndarray,
    grid: tuple[int, int],
    path: str | Path,
    *,
    delta: float = 2,
    title: str | None = None,
) -> Path:
    """Flow-coloured picture of the true versus predicted token matches of every query cell.

    Panels: the query frame, the true displacement of every query cell (``gasp.viz.flow_to_rgb``
    colours over the query frame: hue = direction, saturation = length, grey = no match), the
    predicted displacement in the same colours with wrong cells (more than ``delta`` cells from the
    truth) crossed out, and the target frame. Both flow panels share one colour scale.

    Args:
        pred_cell, true_cell: ``(gh*gw,)`` flat cell indices in the target frame.
        valid: ``(gh*gw,)`` bool, query cells with a ground-truth match.
    """
    valid = np.asarray(valid, dtype=bool)
    hw = query_image.shape[:2]
    true_flow, ok = viz.token_displacement(true_cell, valid, grid, hw)
    pred_flow, _ = viz.token_displacement(pred_cell, valid, grid, hw)
    scale = max(float(np.hypot(*true_flow[ok].T).max(initial=0.0)), hw[1] / grid[1])
    cell_px = np.array([hw[1] / grid[1], hw[0] / grid[0]])
    wrong = ok & (np.linalg.norm((pred_flow - true_flow) / cell_px, axis=-1) > delta + 1e-6)
    panels = [viz.flow_to_rgb(f, ok, max_magnitude=scale) for f in (true_flow, pred_flow)]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    axes[0].imshow(query_image)
    axes[0].set_title("query frame")
    axes[1].imshow(viz.blend(query_image, viz.upsample_cells(panels[0], hw), 0.75))
    axes[1].set_title("true matches (flow colours)")
    axes[2].imshow(viz.blend(query_image, viz.upsample_cells(panels[1], hw), 0.75))
    bad = grid_points(hw, grid).numpy()[wrong.reshape(-1)]
    axes[2].plot(bad[:, 0], bad[:, 1], "x", color="k", ms=4, mew=1)
    n_ok = int(ok.sum())
    axes[2].set_title(f"predicted ({n_ok - int(wrong.sum())}/{n_ok} within {delta:g} cells; x = wrong)")
    axes[3].imshow(target_image)
    axes[3].set_title("target frame")
    inset = axes[3].inset_axes((0.78, 0.78, 0.2, 0.2))
    inset.imshow(viz.flow_wheel(48))
    inset.axis("off")
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return _save(fig, path)
