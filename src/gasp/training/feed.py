"""What the training loop reads: the prepared-sequence stream, the optional QA source, and one
micro-batch at a time (geometric, caption-only or general QA)."""

from __future__ import annotations

import logging
from pathlib import Path

from gasp.config import TrainConfig
from gasp.errors import ConfigError
from gasp.training import data as tdata

log = logging.getLogger("gasp.train")


def _scene_names(data_dir: Path) -> list[str]:
    """Scene names of a prepared folder (as recorded by `gasp prepare`)."""
    from gasp.data.store import open_prepared

    return list(open_prepared(data_dir).scenes)


def check_language_data(cfg: TrainConfig, data_dir: Path) -> bool:
    """Whether the run has language supervision; refuse or warn when it has none.

    Only synthetic scenes carry captions; real scenes give language supervision only through
    ``--qa-data``. Without either, a config with ``require_language_data`` (the paper presets)
    raises ConfigError naming ``--qa-data``; any other config warns once and the LM loss is logged
    as absent.
    """
    from gasp.training.data import scene_caption

    if cfg.qa_data or any(scene_caption(s) is not None for s in _scene_names(data_dir)):
        return True
    what = (
        f"{data_dir} holds real scenes (no captions) and no --qa-data was given, so no batch has language "
        "supervision"
    )
    if cfg.require_language_data:
        raise ConfigError(
            f"{what}; the paper interleaves general video QA (LLaVA-Video-178K): pass --qa-data "
            "ANNOTATIONS.json (and --qa-media-root), or --require-language-data false to train the "
            "geometric losses alone"
        )
    log.warning("%s: the LM loss is logged as absent; pass --qa-data for language supervision", what)
    return False


def open_feed(
    cfg: TrainConfig, adapter, data_dir: Path, rank: int, world: int, consumed: int, qa_consumed: int
):
    """``(stream, qa source or None)`` positioned at ``consumed`` sequences / ``qa_consumed`` QA records."""
    from gasp.data.loader import SampleStream, model_frame_size
    from gasp.training.qa_data import QASource

    grid, image_hw = model_frame_size(adapter, cfg.grid)
    stream = SampleStream(
        str(data_dir),
        grid=grid,
        image_hw=image_hw,
        queries=cfg.queries,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        consumed=consumed,
        rank=rank,
        world_size=world,
        num_workers=cfg.data_workers,
        prefetch=cfg.prefetch,
    )
    qa = None
    if cfg.qa_data:
        qa = QASource(
            cfg.qa_data,
            cfg.qa_media_root or Path(cfg.qa_data).parent,
            image_size=image_hw,
            num_frames=cfg.qa_frames,
            rank=rank,
            world_size=world,
            seed=cfg.seed,
            start=qa_consumed,
        )
    return stream, qa


def next_batch(cfg: TrainConfig, adapter, stream, qa, micro_index: int) -> tdata.Batch:
    """Global micro-batch ``micro_index``: language-only ones come from ``qa`` when there is one."""
    language_only = tdata.is_language_only(micro_index, cfg.lm_fraction)
    if qa is not None and language_only:
        return tdata.make_qa_batch(adapter, [next(qa) for _ in range(cfg.batch_size)])
    geometric = cfg.uses_heads and not language_only
    return tdata.make_batch(adapter, stream.next_batch(), cfg.prompt, geometric)
