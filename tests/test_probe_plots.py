"""The analysis figures are written as real PNGs."""

import numpy as np
from PIL import Image

from gasp import plots


def _block(pck, rho, y):
    return {
        "pck": pck,
        "pck_moved": [p / 2 for p in pck],
        "rho": rho,
        "best_layer": int(np.argmax(pck)),
        "temporal_robustness": {"dt": [1, 2, 4], "y": y, "y_layer_mean": [1.0, 0.9, None]},
    }


def _is_png(path, min_side=100):
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert min(im.size) >= min_side
        return np.asarray(im.convert("L")).std() > 1.0  # not a blank canvas


def test_analysis_figure_overlays_several_models(tmp_path):
    models = {
        "baseline": _block([0.05, 0.04, 0.06], [-0.2, None, -0.1], [1.0, 0.5, 0.1]),
        "gasp": _block([0.3, 0.6, 0.7], [0.4, 0.5, 0.6], [1.0, 0.95, 0.9]),
    }
    out = plots.plot_analysis(models, tmp_path / "sub" / "analysis.png", chance=0.05, identity=0.5)
    assert out.exists() and not (tmp_path / "sub" / "analysis.png.tmp").exists()
    assert _is_png(out)
    assert _is_png(plots.plot_analysis(models, tmp_path / "moved.png", chance=0.05, moved=True))


def test_attention_and_match_pictures(tmp_path):
    rng = np.random.default_rng(0)
    grid = (4, 6)
    a = rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)
    b = rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)
    probs = rng.random(24)
    probs /= probs.sum()
    assert _is_png(plots.plot_attention(a, b, probs, 7, grid, tmp_path / "att.png", true_cell=8))
    true = (np.arange(24) + 1) % 24
    pred = true.copy()
    pred[:5] = 0
    valid = np.ones(24, bool)
    valid[-3:] = False
    assert _is_png(plots.plot_matches(a, b, pred, true, valid, grid, tmp_path / "m.png"))


def test_spread_over_seeds_is_drawn(tmp_path):
    block = _block([0.3, 0.6, 0.7], [0.4, 0.5, 0.6], [1.0, 0.95, 0.9])
    spread = {**block, "pck_sd": [0.1, 0.1, 0.1], "rho_sd": [0.2, 0.2, 0.2]}
    spread["temporal_robustness"] = {**block["temporal_robustness"], "y_sd": [0.0, 0.1, 0.1]}
    plain = plots.plot_analysis({"gasp": block}, tmp_path / "plain.png")
    bars = plots.plot_analysis({"gasp": spread}, tmp_path / "spread.png")
    with Image.open(plain) as a, Image.open(bars) as b:
        pa, pb = np.asarray(a.convert("L")), np.asarray(b.convert("L"))
    assert pa.shape != pb.shape or (pa != pb).sum() > 200  # error bars and bands add ink
