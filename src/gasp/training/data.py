"""Training micro-batches: loader samples -> tokenised model inputs with geometric targets.

The samples come from :class:`gasp.data.loader.SampleStream` (built in DataLoader workers for the
model's token grid and frame size, in the deterministic global order of :mod:`gasp.data.order`);
every micro-batch has one frame count, exactly the frames the sequence index drew.

Language supervision: every sequence carries its scene caption as the answer (synthetic scenes
describe themselves, :meth:`gasp.data.synthetic.SyntheticScene.caption`), so one forward gives the LM
loss and the geometric losses. A fraction ``lm_fraction`` of the micro-batches are language-only
(same kind of sample, heads off), interleaved deterministically by the micro-batch index. Scenes
without a caption (real RGB-D folders) give no LM loss.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gasp import constants as C
from gasp.data.targets import QUERY_MASK
from gasp.errors import BadInputError
from gasp.models.base import IGNORE_INDEX

log = logging.getLogger(__name__)

TARGET_KEYS = (C.MATCH_INDEX, C.MATCH_VALID, C.MATCH_DEPTH, C.TOKEN_DEPTH, QUERY_MASK)


@functools.lru_cache(maxsize=256)
def scene_caption(scene: str) -> str | None:
    """The caption of a synthetic scene (``synthetic-SEED`` / ``synthetic:SEED``), else None."""
    m = re.fullmatch(r"synthetic[-:](\d+)", scene)
    if m is None:
        return None
    from gasp.data.synthetic import SyntheticScene

    return SyntheticScene(int(m.group(1))).caption()


def is_language_only(micro_index: int, fraction: float) -> bool:
    """Whether global micro-batch ``micro_index`` is language-only (evenly spread, deterministic)."""
    return math.floor((micro_index + 1) * fraction) > math.floor(micro_index * fraction)


@dataclass
class Batch:
    """One process's micro-batch, ready for :class:`gasp.training.objective.GaspObjective`."""

    inputs: dict[str, torch.Tensor]
    visual_positions: torch.Tensor
    targets: dict[str, torch.Tensor] | None
    sequence_ids: list[str]
    num_visual_tokens: int


def make_batch(adapter, sequences: list[dict[str, Any]], prompt: str, geometric: bool) -> Batch:
    """Tokenise a micro-batch of loader samples and attach their targets.

    Raises:
        BadInputError: the samples have different frame counts, or the model's visual tokens per
            frame differ from the targets' count (the message names the sequence and both counts).
    """
    ids = [str(s[C.SEQUENCE_ID]) for s in sequences]
    counts = {int(np.asarray(s[C.FRAMES]).shape[0]) for s in sequences}
    if len(counts) != 1:
        raise BadInputError(
            f"sequences {ids} have different frame counts {sorted(counts)} in one micro-batch"
        )
    frames = [np.asarray(s[C.FRAMES]) for s in sequences]
    captions = [scene_caption(str(s[C.SCENE])) for s in sequences]
    answers = None if any(c is None for c in captions) else captions
    batch = adapter.build_inputs(frames, [prompt] * len(sequences), answers)
    inputs = dict(batch.inputs)
    if "labels" not in inputs:
        inputs["labels"] = torch.full_like(inputs["input_ids"], IGNORE_INDEX)
    b, nf, gh, gw = batch.visual_positions.shape
    for s, sid in zip(sequences, ids):
        n = int(np.asarray(s[C.MATCH_INDEX]).shape[-1])
        if n != gh * gw:
            raise BadInputError(
                f"sequence {sid!r}: the loader built targets for {n} tokens per frame but the model gives "
                f"{gh * gw} ({gh}x{gw}) visual tokens per frame"
            )
    targets = None
    if geometric:
        targets = {
            key: torch.as_tensor(np.stack([np.asarray(s[key]) for s in sequences])) for key in TARGET_KEYS
        }
        targets[C.MATCH_VALID] = targets[C.MATCH_VALID].bool()
        targets[QUERY_MASK] = targets[QUERY_MASK].bool()
        targets[C.MATCH_INDEX] = targets[C.MATCH_INDEX].long()
        targets[C.MATCH_DEPTH] = targets[C.MATCH_DEPTH].float()
        targets[C.TOKEN_DEPTH] = targets[C.TOKEN_DEPTH].float()
    return Batch(inputs, batch.visual_positions, targets, ids, b * nf * gh * gw)


def make_qa_batch(adapter, samples: list) -> Batch:
    """A language-only micro-batch of general QA samples (:class:`gasp.training.qa_data.QASample`).

    Samples are cut to the smallest frame count of the micro-batch; the answer is supervised, the
    heads are off (no targets).
    """
    f = min(int(s.frames.shape[0]) for s in samples)
    batch = adapter.build_inputs(
        [s.frames[:f] for s in samples], [s.prompt for s in samples], [s.answer for s in samples]
    )
    b, nf, gh, gw = batch.visual_positions.shape
    return Batch(dict(batch.inputs), batch.visual_positions, None, [s.id for s in samples], b * nf * gh * gw)
