"""`gasp probe` on a tiny random-weight Qwen2.5-VL: report schema, figures, comparison."""

import json

import numpy as np
import pytest
import torch

from gasp import probe, probe_report
from gasp.cli import main
from gasp.errors import BadInputError


@pytest.fixture(scope="module")
def adapter():
    from gasp.models.presets import from_preset

    return from_preset("tiny-qwen2.5-vl")


def _sequences(adapter, grid=(8, 8), n=2, copies=False):
    """Random-noise frames; with ``copies`` every frame repeats the anchor (true match = own cell)."""
    h, w = adapter.image_size_for_grid(grid)
    rng = np.random.default_rng(0)
    cells = grid[0] * grid[1]
    out = []
    for s in range(n):
        frames = rng.integers(0, 255, (3, h, w, 3), dtype=np.uint8)
        if copies:
            frames[1:] = frames[0]
        index = np.tile(np.arange(cells), (3, 1))
        index[2] = (index[2] + 3) % cells  # frame 2: matches three cells further on
        out.append(
            {
                "frames": frames,
                "match_index": index,
                "match_valid": np.ones((3, cells), bool),
                "frame_index": np.array([10, 11, 14]) + s,
                "sequence_id": f"s{s}",
            }
        )
    return out


def test_identical_frames_give_perfect_hidden_state_matches_at_the_first_layer(adapter):
    seqs = _sequences(adapter, copies=True)
    for s in seqs:
        s["match_index"][2] = np.arange(64)
    result = probe.probe_model(adapter, seqs, features=["hidden"])
    block = result.model_block()["by_feature"]["hidden"]
    # layer 0 reads the vision tower's output: the same pixels give the same token, hence PCK 1
    assert block["pck"][0] == 1.0
    assert result.baselines()["identity_pck"] == 1.0


def test_report_schema_figures_and_pictures(adapter, tmp_path):
    from gasp.models.heads import CorrespondenceHeads

    heads = CorrespondenceHeads.from_adapter(adapter, d_emb=8)
    result = probe.probe_model(adapter, _sequences(adapter), heads=heads, delta=1.0)
    report = probe_report.build_report({"tiny": result}, extra={"tiny": {"train_seconds": 1.5}})
    layers = len(adapter.decoder_layers())
    assert report["grid"] == [8, 8] and report["delta"] == 1.0
    m = report["models"]["tiny"]
    assert m["train_seconds"] == 1.5
    assert set(m["by_feature"]) == {"qk", "head", "hidden"}
    for block in [m, *m["by_feature"].values()]:
        assert len(block["pck"]) == len(block["pck_moved"]) == len(block["rho"]) == layers
        assert block["temporal_robustness"]["dt"] == [1, 4]
        assert len(block["temporal_robustness"]["y"]) == 2
    assert m["pck"] == m["by_feature"]["qk"]["pck"]
    best = m["best_layer"]
    assert m["headline"]["best_layer"] == best
    assert [m["headline"][k] for k in ("pck", "pck_moved", "rho")] == [
        m[k][best] for k in ("pck", "pck_moved", "rho")
    ]
    # 128 pairs: frame 1 identity matches (not moved), frame 2 three cells on (moved for delta 1)
    assert report["num_pairs"] == 256 and report["num_moved"] == 128
    assert report["identity_pck"] == 0.5 and report["identity_pck_moved"] == 0.0
    probe.write_json_atomic(tmp_path / "report.json", report)
    assert json.loads((tmp_path / "report.json").read_text())["models"]["tiny"]["pck"] == m["pck"]
    files = probe_report.draw_report(report, tmp_path)
    files += probe.draw_pictures(result, tmp_path, query_cell=(3, 4))
    assert sorted(p.name for p in files) == [
        "analysis.png",
        "analysis_moved.png",
        "attention.png",
        "matches.png",
    ]
    assert all(p.stat().st_size > 1000 for p in files)
    assert "| tiny |" in probe_report.markdown_table(report)


def test_compare_draws_reports_together_and_rejects_other_grids(adapter, tmp_path):
    result = probe.probe_model(adapter, _sequences(adapter, n=1), features=["qk"])
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        probe.write_json_atomic(tmp_path / name / "report.json", probe_report.build_report({"m": result}))
    out = tmp_path / "cmp"

    def compare() -> int:
        reports = [str(tmp_path / "a/report.json"), str(tmp_path / "b/report.json")]
        return main(["probe", "--compare", *reports, "--output-dir", str(out)])

    assert compare() == 0
    combined = json.loads((out / "comparison.json").read_text())
    assert list(combined["models"]) == ["m", "b/m"]
    assert (out / "analysis.png").is_file() and (out / "summary.md").is_file()
    other = json.loads((tmp_path / "b/report.json").read_text())
    other["grid"] = [4, 4]
    probe.write_json_atomic(tmp_path / "b/report.json", other)
    assert compare() == 2


def test_bad_inputs_name_the_problem(adapter, tmp_path):
    seq = _sequences(adapter, n=1)[0]
    seq["match_index"] = seq["match_index"][:, :10]
    with pytest.raises(BadInputError, match="match_index"):
        probe.probe_model(adapter, [seq])
    with pytest.raises(BadInputError, match="not found"):
        probe_report.read_report(tmp_path / "nope.json")
    assert torch.get_num_threads() >= 1


def test_heads_on_some_layers_leave_the_others_empty(adapter):
    from gasp.models.heads import CorrespondenceHeads

    heads = CorrespondenceHeads.from_adapter(adapter, layers="1", d_emb=8)
    result = probe.probe_model(adapter, _sequences(adapter, n=1), heads=heads, features=["head"])
    block = result.model_block()
    assert block["pck"][0] is None and block["rho"][0] is None
    assert isinstance(block["pck"][1], float) and block["best_layer"] == 1
