"""General QA / caption samples for the language-modelling loss (LLaVA-Video-178K / LLaVA-OneVision format).

The paper interleaves general video QA with the geometric sequences so the model keeps its language
skills. :class:`QASource` streams such samples from an annotation file in the format used by
LLaVA-NeXT's training code (LLaVA-Video-178K, LLaVA-OneVision data): a JSON list or JSONL file of
records ``{"id", "video" | "image", "conversations": [{"from": "human", "value": "<image>\\n..."},
{"from": "gpt", "value": "..."}, ...]}`` whose media paths are relative to a media root folder. The
accepted schema is documented in docs/DATA_FORMATS.md ("General QA data (language loss)").

Order and resume: record ``i`` (its position in the file) belongs to rank ``i % world_size``. Epoch
``e`` visits the records in the order of ``permutation(num_records)`` drawn with ``seed + e``, each
rank keeping its own records, so the ranks together cover every record once per epoch. A rank's
position is one integer, :attr:`QASource.consumed` (records visited, usable or skipped); a source
built with ``start=consumed`` continues exactly where the previous one stopped, without decoding the
records it skips.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gasp.errors import BadInputError
from gasp.eval.frames import read_images, read_video_frames
from gasp.geometry.cameras import ResizeMode, resize_image

log = logging.getLogger(__name__)

HUMAN_ROLES = ("human", "user")
ASSISTANT_ROLES = ("gpt", "assistant")
_PLACEHOLDER = re.compile(r"[ \t]*<(?:image|video)>[ \t]*\n?")


@dataclass
class QASample:
    """One language-supervision sample.

    Attributes:
        frames: (F, H, W, 3) uint8 RGB, every frame at the source's ``image_size``. Videos give
            ``min(num_frames, frames in the video)`` evenly spaced frames, images one frame each.
        prompt: the first human turn with its ``<image>`` / ``<video>`` placeholders removed.
        answer: the first assistant turn after it.
        id: the record's ``id`` (``"record-<i>"`` when it has none).
    """

    frames: np.ndarray
    prompt: str
    answer: str
    id: str


class _SkipRecord(Exception):
    """A record that cannot be used; ``reason`` is the key counted in ``QASource.skipped``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def strip_placeholders(text: str) -> str:
    """Removes ``<image>`` / ``<video>`` placeholders from a turn.

    A placeholder on its own line goes with its newline (``"<image>\nQ?"`` -> ``"Q?"``); one between
    words becomes a single space (``"Describe <video> briefly."`` -> ``"Describe briefly."``).
    """

    def repl(m: re.Match[str]) -> str:
        at_line_start = m.start() == 0 or text[m.start() - 1] == "\n"
        at_line_end = m.end() == len(text) or text[m.end() - 1] == "\n"
        return "" if at_line_start or at_line_end else " "

    return _PLACEHOLDER.sub(repl, text).strip()


def first_qa_pair(conversations: Any) -> tuple[str, str]:
    """The first human turn and the first assistant turn after it, placeholders removed.

    Later turns of a multi-turn conversation are ignored. ``"human"``/``"user"`` and
    ``"gpt"``/``"assistant"`` are accepted as roles; other roles (e.g. ``"system"``) are skipped.

    Raises:
        _SkipRecord: no conversation list, no human or assistant turn, or an empty prompt/answer.
    """
    if not isinstance(conversations, list):
        raise _SkipRecord("bad_record", "'conversations' is missing or not a list")
    prompt = None
    for turn in conversations:
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise _SkipRecord("bad_record", "a turn is not {'from': ..., 'value': str}")
        role = turn.get("from")
        if prompt is None and role in HUMAN_ROLES:
            prompt = strip_placeholders(turn["value"])
        elif prompt is not None and role in ASSISTANT_ROLES:
            answer = turn["value"].strip()
            if not prompt or not answer:
                raise _SkipRecord("empty_text", "the first question or answer is empty")
            return prompt, answer
    if prompt is None:
        raise _SkipRecord("no_human_turn", "no 'human' turn in 'conversations'")
    raise _SkipRecord("no_gpt_turn", "no 'gpt' turn after the first 'human' turn")


class QASource:
    """Endless, resumable stream of :class:`QASample` from a LLaVA-style annotation file.

    Args:
        annotation_path: ``.json`` (a list of records) or ``.jsonl`` (one record per line); detected
            from the first non-blank character (``[`` = JSON list), not from the extension. A JSONL
            file is indexed once (byte offset of this rank's lines, 8 bytes per record) and read line
            by line; a JSON list is parsed once and only this rank's records are kept in memory
            (about ``file size / world_size`` as Python objects: split very large JSON files into
            JSONL to stream them).
        media_root: folder that relative ``image`` / ``video`` paths are relative to.
        image_size: (H, W) of every returned frame.
        num_frames: evenly spaced frames decoded from a video.
        resize_mode: "resize" (stretch) or "center_crop" (scale to cover, crop the centre).
        rank, world_size: this process; record ``i`` belongs to rank ``i % world_size``.
        seed: epoch ``e`` visits records in an order permuted with ``seed + e``.
        start: records of this rank's stream already consumed (resume position).

    Attributes:
        consumed: records of this rank's stream visited so far, usable or skipped.
        skipped: reason -> number of records skipped.

    Raises:
        BadInputError: the file is missing, unparsable as a whole, has no records, this rank has no
            record, or (while iterating) a whole epoch yields no usable sample.
    """

    def __init__(
        self,
        annotation_path: str | Path,
        media_root: str | Path,
        *,
        image_size: tuple[int, int] = (224, 224),
        num_frames: int = 8,
        resize_mode: ResizeMode = "resize",
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        start: int = 0,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if num_frames <= 0:
            raise ValueError(f"num_frames must be positive, got {num_frames}")
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.path = Path(annotation_path)
        self.media_root = Path(media_root)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.num_frames = num_frames
        self.resize_mode: ResizeMode = resize_mode
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.consumed = start
        self.skipped: Counter[str] = Counter()
        self._warned: set[int] = set()
        self._records: list[Any] | None = None  # JSON list: this rank's records
        self._offsets: np.ndarray | None = None  # JSONL: byte offsets of this rank's lines
        self.num_records = self._index()
        self.rank_records = len(range(rank, self.num_records, world_size))
        if self.num_records == 0:
            raise BadInputError(f"{self.path}: the annotation file has no records")
        if self.rank_records == 0:
            raise BadInputError(
                f"{self.path}: {self.num_records} record(s) cannot feed rank {rank} of {world_size} processes"
            )
        self._it: Iterator[QASample] | None = None

    # ------------------------------------------------------------------ reading the annotation file
    def _index(self) -> int:
        """Loads (JSON list) or indexes (JSONL) the file; returns the total number of records."""
        if not self.path.is_file():
            raise BadInputError(f"{self.path}: annotation file not found")
        with open(self.path, "rb") as f:
            head = b""
            while not head and (chunk := f.read(4096)):
                head = chunk.lstrip()
        if head.startswith(b"["):
            try:
                with open(self.path, encoding="utf-8") as f:
                    data = json.load(f)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise BadInputError(f"{self.path}: not a valid JSON file ({exc})") from None
            self._records = data[self.rank :: self.world_size]
            return len(data)
        offsets = []
        n = 0
        with open(self.path, "rb") as f:
            pos = 0
            for line in f:
                if line.strip():
                    if n % self.world_size == self.rank:
                        offsets.append(pos)
                    n += 1
                pos += len(line)
        self._offsets = np.asarray(offsets, dtype=np.int64)
        return n

    def _raw_record(self, i: int, jsonl: Any) -> Any:
        """Record ``i`` (a global index of this rank) as parsed JSON."""
        j = (i - self.rank) // self.world_size
        if self._records is not None:
            return self._records[j]
        jsonl.seek(int(self._offsets[j]))
        line = jsonl.readline()
        try:
            return json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _SkipRecord("bad_json", f"line is not valid JSON ({exc})") from None

    # ------------------------------------------------------------------ decoding one record
    def _media_path(self, value: Any) -> Path:
        if not isinstance(value, str) or not value:
            raise _SkipRecord("bad_record", f"media path must be a non-empty string, got {value!r}")
        path = self.media_root / value  # an absolute ``value`` replaces the root
        if not path.is_file():
            raise _SkipRecord("missing_media", f"{path}: file not found")
        return path

    def _load_frames(self, record: dict[str, Any]) -> np.ndarray:
        """(F, H, W, 3) uint8 frames of a record, resized to ``image_size``."""
        if record.get("image") is not None:  # "image" wins over "video", as in LLaVA-NeXT's loader
            images = record["image"] if isinstance(record["image"], list) else [record["image"]]
            if not images:
                raise _SkipRecord("bad_record", "'image' is an empty list")
            paths = [self._media_path(p) for p in images]
            try:
                raw = [read_images([p])[0] for p in paths]
            except BadInputError as exc:
                raise _SkipRecord("corrupt_media", str(exc)) from None
        elif record.get("video") is not None:
            video = record["video"]
            if isinstance(video, list):
                if len(video) != 1:
                    raise _SkipRecord("bad_record", f"'video' lists {len(video)} files; one is supported")
                video = video[0]
            path = self._media_path(video)
            try:
                raw = list(read_video_frames(path, self.num_frames))
            except BadInputError as exc:
                raise _SkipRecord("corrupt_media", str(exc)) from None
        else:
            raise _SkipRecord("no_media", "record has neither 'image' nor 'video' (text-only)")
        return np.stack(
            [resize_image(im, im.shape[:2], self.image_size, self.resize_mode).numpy() for im in raw]
        )

    def _sample(self, record: Any, i: int) -> QASample:
        if not isinstance(record, dict):
            raise _SkipRecord("bad_record", f"record is a {type(record).__name__}, not an object")
        prompt, answer = first_qa_pair(record.get("conversations"))
        frames = self._load_frames(record)
        return QASample(frames=frames, prompt=prompt, answer=answer, id=str(record.get("id", f"record-{i}")))

    # ------------------------------------------------------------------ iteration
    def epoch_order(self, epoch: int) -> np.ndarray:
        """Global indices of this rank's records in the order epoch ``epoch`` visits them."""
        perm = np.random.default_rng(self.seed + epoch).permutation(self.num_records)
        return perm[perm % self.world_size == self.rank]

    def _generate(self) -> Iterator[QASample]:
        epoch, offset = divmod(self.consumed, self.rank_records)
        with contextlib.ExitStack() as stack:
            jsonl = stack.enter_context(open(self.path, "rb")) if self._offsets is not None else None
            while True:
                usable = 0
                for i in self.epoch_order(epoch)[offset:]:
                    i = int(i)
                    self.consumed += 1
                    record = None
                    try:
                        record = self._raw_record(i, jsonl)
                        sample = self._sample(record, i)
                    except _SkipRecord as exc:
                        self._skip(i, record, exc)
                        continue
                    usable += 1
                    yield sample
                if usable == 0 and offset == 0:
                    raise BadInputError(
                        f"{self.path}: no usable record in a whole epoch of rank {self.rank} "
                        f"({self.rank_records} records; skipped: {dict(self.skipped)})"
                    )
                epoch, offset = epoch + 1, 0

    def _skip(self, i: int, record: Any, exc: _SkipRecord) -> None:
        self.skipped[exc.reason] += 1
        if i in self._warned:  # count every skip, warn once per record
            return
        self._warned.add(i)
        rid = record.get("id") if isinstance(record, dict) else None
        log.warning("%s: record #%d (id %r) skipped, %s: %s", self.path, i, rid, exc.reason, exc)

    def __iter__(self) -> QASource:
        return self

    def __next__(self) -> QASample:
        if self._it is None:
            self._it = self._generate()
        return next(self._it)
