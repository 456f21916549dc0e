"""One prepared folder trains two model families with different token grids and probes either."""

import json

import pytest
from test_train_helpers import debug_config, prepare_tiny

from gasp.cli import main
from gasp.data import loader
from gasp.data.loader import model_frame_size
from gasp.errors import BadInputError
from gasp.models import from_preset
from gasp.train import train


@pytest.mark.slow
def test_one_prepared_folder_trains_and_probes_two_families(tmp_path, monkeypatch):
    data = prepare_tiny(tmp_path / "data")
    asked = []
    real = loader.build_sample
    monkeypatch.setattr(loader, "build_sample", lambda *a: asked.append(a[1:]) or real(*a))
    runs = {
        "qwen": debug_config(
            data, tmp_path / "qwen", max_steps=2, save_every=2, batch_size=1, queries="tracks", data_workers=0
        ),
        "llava": debug_config(
            data, tmp_path / "llava", model="tiny-llava-next-video", grid=None, max_steps=2, save_every=2
        ),
    }
    grids = {}
    for name, cfg in runs.items():
        result = train(cfg)
        assert [r["step"] for r in result.history] == [1, 2] and result.history[-1]["corr"] > 0
        out = tmp_path / f"probe-{name}"
        argv = ["probe", "--model", str(result.checkpoint), "--data", str(data), "--output-dir", str(out)]
        assert main([*argv, "--max-sequences", "2", "--queries", "tracks", "--progress", "false"]) == 0
        report = json.loads((out / "report.json").read_text())
        assert report["queries"] == "tracks" and report["num_sequences"] == 2
        grids[name] = report["grid"]
        if name == "qwen":  # built in this process (no workers): what the trainer asked the loader for
            assert asked and all(a[1:] == ((4, 4), (32, 32), "tracks") for a in asked)
    assert grids == {"qwen": [4, 4], "llava": [8, 8]}  # 32x32 / 64x64 px frames from 32x32 sources


def test_a_grid_the_model_cannot_make_is_named():
    adapter = from_preset("tiny-llava-next-video")
    assert model_frame_size(adapter) == ((8, 8), (64, 64))
    with pytest.raises(BadInputError, match=r"fixed token grid \(8, 8\); got \(5, 5\)"):
        model_frame_size(adapter, (5, 5))
