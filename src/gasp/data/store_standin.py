"""A stand-in for ``gasp.data.store`` with the same interface, until the real format lands.

``open_prepared(root) -> PreparedData``: scenes, a memory-light sequence index, ``view()`` and
``views()`` returning decoded :class:`gasp.data.views.View` records. Nothing model-specific is stored:
the loader (:mod:`gasp.data.loader`) computes every model-specific array from ``views()``.

On disk the stand-in is one JSON file, ``standin.json``, naming the scenes (folders in any supported
format, or ``synthetic:SEED,...``) and the sampling settings. Frames are read in place from the
source scenes (each process opens a scene on first use and keeps a few decoded frames); synthetic
frames are rendered on first use. The sequence index is drawn with the paper's sampling
(:mod:`gasp.geometry.sampling`): sequence ``k`` of scene ``s`` uses ``default_rng([seed, s, k])``,
F uniform in ``[min_frames, max_frames]``, an anchor uniform over the scene's frames, the other
``F - 1`` frames uniform with replacement within ``radius`` of it, sorted by time. Stored-frame
positions are source-video positions here.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gasp.data.views import SceneReader, View
from gasp.errors import BadInputError
from gasp.geometry.sampling import draw_num_frames, sample_sequence

STANDIN_FILE = "standin.json"
FORMAT = "gasp-standin"
_VIEW_CACHE_BYTES = 256 << 20  # decoded frames kept per process (sequences of a scene share frames)


class SequenceIndex:
    """The sequences as flat numpy arrays (no per-sequence objects).

    Attributes:
        scene: ``(S,)`` int32 scene id of each sequence.
        num_frames: ``(S,)`` int16 F of each sequence, anchor included.
    """

    def __init__(self, scene: np.ndarray, offsets: np.ndarray, flat: np.ndarray, names: Sequence[str]):
        self.scene = np.asarray(scene, dtype=np.int32)
        self._offsets = np.asarray(offsets, dtype=np.int64)
        self._flat = np.asarray(flat, dtype=np.int32)
        self.num_frames = np.diff(self._offsets).astype(np.int16)
        self._names = list(names)
        self._first = np.searchsorted(self.scene, np.arange(len(self._names)), side="left")

    def __len__(self) -> int:
        return int(self.scene.shape[0])

    def frames(self, i: int) -> np.ndarray:
        """``(F,)`` int32 stored-frame positions of sequence ``i``, anchor first."""
        return self._flat[self._offsets[i] : self._offsets[i + 1]]

    def sequence_id(self, i: int) -> str:
        s = int(self.scene[i])
        return f"{_safe_name(self._names[s])}-{s:04d}-{int(i - self._first[s]):04d}"


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "scene"


class PreparedData:
    """Scenes read in place plus their sequence index (see the module docstring)."""

    def __init__(self, root: Path, config: dict[str, Any]) -> None:
        from gasp.data.registry import open_scene

        self.root = Path(root)
        self.config = dict(config)
        self._specs = [str(s) for s in config["scenes"]]
        self._readers: dict[int, SceneReader] = {}
        self._cache: OrderedDict[tuple[int, int], View] = OrderedDict()
        self._cached_bytes = 0
        names, lengths = [], []
        for s, spec in enumerate(self._specs):
            reader = open_scene(spec)
            self._readers[s] = reader
            names.append(reader.name)
            lengths.append(len(reader))
        self.scenes = names
        self.index = draw_index(lengths, names, config)

    def __getstate__(self) -> dict[str, Any]:  # worker processes reopen scenes themselves
        return {**self.__dict__, "_readers": {}, "_cache": OrderedDict(), "_cached_bytes": 0}

    def _reader(self, scene: int) -> SceneReader:
        if scene not in self._readers:
            from gasp.data.registry import open_scene

            self._readers[scene] = open_scene(self._specs[scene])
        return self._readers[scene]

    def view(self, scene: int, frame: int) -> View:
        key = (int(scene), int(frame))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        view = self._reader(key[0]).view(key[1])
        self._cache[key] = view
        self._cached_bytes += view.image.nbytes + view.depth.nbytes
        while self._cached_bytes > _VIEW_CACHE_BYTES and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= old.image.nbytes + old.depth.nbytes
        return view

    def views(self, scene: int, frames: Sequence[int]) -> list[View]:
        decoded = {int(f): self.view(scene, int(f)) for f in dict.fromkeys(int(f) for f in frames)}
        return [decoded[int(f)] for f in frames]


def draw_index(lengths: list[int], names: list[str], cfg: dict[str, Any]) -> SequenceIndex:
    """The paper's sequences of scenes with ``lengths`` frames (see the module docstring)."""
    seed, per_scene = int(cfg["seed"]), int(cfg["sequences_per_scene"])
    lo, hi, radius = int(cfg["min_frames"]), int(cfg["max_frames"]), int(cfg["radius"])
    scene, offsets, flat = [], [0], []
    for s, n in enumerate(lengths):
        if n < 2:
            continue
        for k in range(per_scene):
            rng = np.random.default_rng([seed, s, k])
            f = draw_num_frames(rng, lo, hi)
            anchor = int(rng.integers(n))
            flat += sample_sequence(n, anchor, f, radius, rng=rng)
            scene.append(s)
            offsets.append(len(flat))
    if not scene:
        raise BadInputError("no scene has 2 or more frames: nothing to sample")
    return SequenceIndex(np.array(scene), np.array(offsets), np.array(flat), names)


def write_standin(
    root: str | Path,
    scenes: Sequence[str],
    *,
    seed: int = 0,
    sequences_per_scene: int = 8,
    min_frames: int = 8,
    max_frames: int = 24,
    radius: int = 48,
) -> Path:
    """Write ``root/standin.json`` (atomically) and return ``root``."""
    from gasp.data.shards import write_json_atomic

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    config = {
        "format": FORMAT,
        "scenes": [str(s) for s in scenes],
        "seed": int(seed),
        "sequences_per_scene": int(sequences_per_scene),
        "min_frames": int(min_frames),
        "max_frames": int(max_frames),
        "radius": int(radius),
    }
    write_json_atomic(root / STANDIN_FILE, config)
    return root


def open_prepared(root: str | Path, verify: str = "sizes") -> PreparedData:
    """Open a folder written by :func:`write_standin`.

    Raises:
        BadInputError: no ``standin.json`` there, or it is not valid JSON of this format.
    """
    path = Path(root) / STANDIN_FILE
    if not path.is_file():
        raise BadInputError(f"{root}: not a prepared data folder (no {STANDIN_FILE})")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{path}: invalid JSON: {exc}") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise BadInputError(f"{path}: not a {FORMAT} file")
    return PreparedData(Path(root), config)
