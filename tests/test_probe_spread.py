"""Mean ± sd over seeds: each seed read at its own one layer, then averaged."""

import pytest

from gasp.errors import ConfigError
from gasp.probe import markdown_table
from gasp.probe_spread import combine_checks, combine_reports


def _report(pck, moved, rho, y):
    block = {"pck": pck, "pck_moved": moved, "rho": rho, "temporal_robustness": {"dt": [1, 4], "y": y}}
    return {"grid": [16, 16], "delta": 2.0, "num_pairs": 10, "models": {"gasp": block}}


def test_headline_is_the_mean_of_each_seeds_own_layer():
    a = _report([0.9, 0.5], [0.6, 0.9], [0.2, 0.8], [1.0, 0.8])  # seed 0: layer 0
    b = _report([0.4, 0.7], [0.1, 0.8], [0.9, 0.4], [1.0, 0.6])  # seed 1: layer 1
    combined = combine_reports([a, b], [0, 1])
    m = combined["models"]["gasp"]
    assert m["best_layer"] == [0, 1]
    assert m["headline"]["pck"] == pytest.approx(0.8)  # (0.9 + 0.7) / 2, not a per-figure maximum
    assert m["headline"]["pck_moved"] == pytest.approx(0.7)  # (0.6 + 0.8) / 2
    assert m["headline"]["rho"] == pytest.approx(0.3)  # (0.2 + 0.4) / 2
    assert m["headline_sd"]["rho"] == pytest.approx(0.02**0.5)  # sample sd of 0.2, 0.4
    assert m["pck"] == pytest.approx([0.65, 0.6]) and m["pck_sd"][0] == pytest.approx(0.5 / 2**0.5)
    assert m["temporal_robustness"]["y"] == pytest.approx([1.0, 0.7])
    assert len(m["by_seed"]) == 2 and combined["seeds"] == [0, 1]
    row = next(line for line in markdown_table(combined).splitlines() if line.startswith("| gasp |"))
    assert row.startswith("| gasp | 0/1 | 0.800 ± 0.141 | 0.700 ± 0.141 | 0.300 ± 0.141 |")


def test_seeds_must_share_the_pairs_and_checks_pass_only_for_every_seed():
    a = _report([0.9], [0.6], [0.2], [1.0, 0.8])
    b = {**_report([0.9], [0.6], [0.2], [1.0, 0.8]), "num_pairs": 11}
    with pytest.raises(ConfigError, match="seed 1"):
        combine_reports([a, b], [0, 1])
    checks = combine_checks(
        [[{"check": "x", "value": 1, "pass": True}], [{"check": "x", "value": 0, "pass": False}]]
    )
    assert checks == [{"check": "x", "value": [1, 0], "pass": False, "passed_seeds": "1/2"}]
