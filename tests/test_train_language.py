"""Language supervision is never silently absent: real scenes (no captions) without --qa-data make a
paper preset refuse to start; other configs warn once and log the LM loss as absent, not 0."""

import logging

import numpy as np
import pytest
from test_train_helpers import debug_config, prepare_tiny

from gasp.config import TrainConfig
from gasp.errors import ConfigError
from gasp.train import train
from gasp.training import data as tdata


@pytest.fixture
def real_scenes(tmp_path, monkeypatch):
    """Prepared data whose scenes have no caption, as real RGB-D scenes."""
    data = prepare_tiny(tmp_path / "data", sequences=2, max_frames=3)
    monkeypatch.setattr(tdata, "scene_caption", lambda scene: None)
    return data


def test_paper_presets_require_language_data():
    for name in ("qwen2.5-vl-7b", "llava-next-video-7b"):
        assert TrainConfig.from_name(name).require_language_data
    assert not TrainConfig.from_name("debug").require_language_data


def test_a_run_that_requires_language_data_refuses_without_qa_data(real_scenes, tmp_path):
    cfg = debug_config(real_scenes, tmp_path / "run", require_language_data=True, max_steps=1, warmup_steps=0)
    with pytest.raises(ConfigError, match=r"no batch has language supervision.*LLaVA-Video-178K.*--qa-data"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_without_language_data_the_lm_loss_is_absent_and_warned_once(real_scenes, tmp_path, caplog):
    cfg = debug_config(real_scenes, tmp_path / "run", max_steps=2, warmup_steps=0, batch_size=1)
    with caplog.at_level(logging.WARNING, logger="gasp.train"):
        result = train(cfg)
    warned = [r for r in caplog.records if "no batch has language supervision" in r.getMessage()]
    assert len(warned) == 1 and "logged as absent" in warned[0].getMessage()
    assert len(result.history) == 2
    for row in result.history:
        assert "lm" not in row  # absent, not 0
        assert np.isfinite(row["loss"]) and np.isfinite(row["corr"])
        assert {"data_wait_s", "sequences_per_s", "visual_tokens_per_s", "step_time_s"} <= set(row)
