"""The training stream: prepared sequences -> model batches with geometric targets.

Order and splitting: all processes walk the same global stream (shards in an order fixed by
``seed + epoch``); process ``r`` decodes only its own slice ``[r*b, (r+1)*b)`` of each global batch
of ``b * num_processes`` sequences. The other members are skipped by seeking past them in the tar
file, and only their headers (frame counts) are read. The global batch therefore does not depend on
the number of processes (a 2-process run sees exactly the sequences of a 1-process run with twice
the batch), each process decodes 1/num_processes of the data, and the stream position is one
integer (sequences consumed) that resumes exactly.

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
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gasp import constants as C
from gasp.data.shards import SequenceHeader, ShardReader
from gasp.errors import BadInputError
from gasp.models.base import IGNORE_INDEX

log = logging.getLogger(__name__)

TARGET_KEYS = (C.MATCH_INDEX, C.MATCH_VALID, C.MATCH_DEPTH, C.TOKEN_DEPTH)


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


class SequenceStream:
    """Endless, resumable stream of global batches of prepared sequences, split over processes.

    Args:
        root: prepared shard folder.
        batch_size: sequences per process and micro-batch.
        seed: shard order of epoch e is permuted with ``seed + e``.
        consumed: sequences of the global stream already consumed (resume position).
        rank, world_size: this process among the training processes.
    """

    def __init__(
        self, root: str, batch_size: int, seed: int, consumed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        self.reader = ShardReader(root)
        self.total = len(self.reader)
        if self.total == 0:
            raise BadInputError(f"{root}: the prepared data set has no sequences")
        self.batch_size = batch_size
        self.global_batch = batch_size * world_size
        self.rank = rank
        self.seed = seed
        self.consumed = consumed
        self._it: Iterator[dict[str, Any] | SequenceHeader] | None = None

    def _mine(self, epoch: int, position: int) -> bool:
        """Whether position ``position`` of epoch ``epoch`` falls in this process's slice."""
        slot = (epoch * self.total + position) % self.global_batch
        return slot // self.batch_size == self.rank

    def _open(self) -> Iterator[dict[str, Any] | SequenceHeader]:
        epoch, offset = divmod(self.consumed, self.total)
        return self.reader.iter(
            start=offset, seed=self.seed + epoch, decode=functools.partial(self._mine, epoch)
        )

    def _next(self) -> dict[str, Any] | SequenceHeader:
        if self._it is None:
            self._it = self._open()
        try:
            seq = next(self._it)
        except StopIteration:
            self._it = self._open()  # consumed is a multiple of total: next epoch
            seq = next(self._it)
        self.consumed += 1
        if self.consumed % self.total == 0:
            self._it = None
        return seq

    def next_batch(self) -> tuple[list[dict[str, Any]], int]:
        """This process's sequences of the next global batch, and the batch's common frame count.

        The frame count is the smallest of the whole global batch (read from headers for the
        sequences of other processes), so the split over processes does not change what is computed.
        """
        items = [self._next() for _ in range(self.global_batch)]
        mine = [s for s in items if not isinstance(s, SequenceHeader)]
        frames = min(
            s.num_frames if isinstance(s, SequenceHeader) else int(s[C.FRAMES].shape[0]) for s in items
        )
        return mine, frames


@dataclass
class Batch:
    """One process's micro-batch, ready for :class:`gasp.training.objective.GaspObjective`."""

    inputs: dict[str, torch.Tensor]
    visual_positions: torch.Tensor
    targets: dict[str, torch.Tensor] | None
    sequence_ids: list[str]
    num_visual_tokens: int


def make_batch(
    adapter, sequences: list[dict[str, Any]], prompt: str, geometric: bool, num_frames: int
) -> Batch:
    """Tokenise a micro-batch and attach its targets.

    Every sequence is cut to its first ``num_frames`` frames (the global batch's smallest frame
    count, from :meth:`SequenceStream.next_batch`, so the split over processes changes nothing).

    Raises:
        BadInputError: the model's visual tokens per frame differ from the prepared targets' count
            (the message names the sequence and both counts).
    """
    f = num_frames
    frames = [np.asarray(s[C.FRAMES][:f]) for s in sequences]
    captions = [scene_caption(str(s[C.SCENE])) for s in sequences]
    answers = None if any(c is None for c in captions) else captions
    batch = adapter.build_inputs(frames, [prompt] * len(sequences), answers)
    inputs = dict(batch.inputs)
    if "labels" not in inputs:
        inputs["labels"] = torch.full_like(inputs["input_ids"], IGNORE_INDEX)
    b, nf, gh, gw = batch.visual_positions.shape
    ids = [str(s[C.SEQUENCE_ID]) for s in sequences]
    for s, sid in zip(sequences, ids):
        n = int(np.asarray(s[C.MATCH_INDEX]).shape[-1])
        if n != gh * gw:
            raise BadInputError(
                f"sequence {sid!r}: the prepared targets have {n} tokens per frame but the model gives "
                f"{gh * gw} ({gh}x{gw}) visual tokens per frame; prepare the data with --grid {gh} {gw}"
            )
    targets = None
    if geometric:
        targets = {
            key: torch.as_tensor(np.stack([np.asarray(s[key])[:f].reshape(f, -1) for s in sequences]))
            for key in TARGET_KEYS
        }
        targets[C.MATCH_VALID] = targets[C.MATCH_VALID].bool()
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
