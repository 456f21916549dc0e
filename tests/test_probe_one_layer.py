"""Every headline figure of a model is read at one layer: the layer of highest all-query PCK."""

from gasp.demo import acceptance
from gasp.probe_report import best_figures, markdown_table


def _block(pck, moved, rho, ys):
    return {"pck": pck, "pck_moved": moved, "rho": rho, "temporal_robustness": {"dt": [1, 4, 8, 16], "y": ys}}


# PCK peaks at layer 0, moved PCK at layer 1, rho at layer 2 (the case: PCK 0.883 at layer 0
# with rho 0.253 there, and a higher rho at another layer)
GASP = _block([0.883, 0.80, 0.70], [0.55, 0.81, 0.60], [0.253, 0.30, 0.40], [1, 0.9, 0.8, 0.7])


def test_headline_figures_come_from_the_best_pck_layer():
    b = best_figures(GASP)
    assert b["best_layer"] == 0
    assert (b["pck"], b["pck_moved"], b["rho"]) == (0.883, 0.55, 0.253)


def test_summary_row_and_acceptance_use_that_layer():
    report = {
        "grid": [16, 16],
        "delta": 2.0,
        "identity_pck": 0.5,
        "num_sequences": 1,
        "models": {"gasp": GASP},
    }
    row = next(line for line in markdown_table(report).splitlines() if line.startswith("| gasp |"))
    assert row.startswith("| gasp | 0 | 0.883 | 0.550 | 0.253 |")
    checks = {c["check"]: c for c in acceptance(report)}
    rho = checks["gasp best-layer rho > 0.3"]
    assert rho["value"] == 0.253 and rho["pass"] is False  # layer 2's 0.40 is not borrowed
    moved = checks["gasp best-layer moved-query PCK >= 0.60"]
    assert moved["value"] == 0.55 and moved["pass"] is False  # nor layer 1's 0.81
