"""On-disk shard format "gasp-shards" version 1: write atomically, stream-read, split across ranks/workers.

A prepared data set is a folder::

    OUT/manifest.json       {"format": "gasp-shards", "version": 1, "grid": [gh, gw], "image_size": [H, W],
                             "shards": [{"file": "shard-00000.tar", "num_sequences": n, ...}, ...],
                             "complete": bool, "summary": {...}, "config": {...}}
    OUT/shard-XXXXX.tar     one member "<sequence_id>.npz" per sequence (keys: gasp.constants names);
                            each member's PAX header "gasp.num_frames" holds its frame count

Writers build ``shard-XXXXX.tar.tmp`` and ``os.replace`` it onto its final name, so a shard that exists
under its final name is always whole; the manifest is rewritten the same way after every finished shard
and only shards listed in it (and present on disk, with the recorded size) count as finished. Files are
byte-reproducible: tar and zip members carry fixed timestamps and owners, so preparing the same data twice
gives identical shards.

Readers stream one sequence at a time (one tar member in memory), split the shards across
``(rank, world_size)`` and then across data-loader workers, and can resume a rank's stream after its
first ``start`` sequences without opening the shards they came from. A ``decode`` predicate lets a
process decode only its own positions of a shared stream: other members are skipped by seeking past
them, and only their header (:class:`SequenceHeader`, with the frame count) is yielded.
"""

from __future__ import annotations

import functools
import io
import json
import os
import tarfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.utils.data

from gasp import constants as C
from gasp.errors import BadInputError, ConfigError

FORMAT = "gasp-shards"
VERSION = 1
MANIFEST = "manifest.json"
NUM_FRAMES_HEADER = "gasp.num_frames"  # PAX header of every member: the sequence's frame count

# Every key a prepared sequence carries; readers reject members that lack one.
SEQUENCE_KEYS: tuple[str, ...] = (
    C.FRAMES,
    C.INTRINSICS,
    C.CAM_TO_WORLD,
    C.FRAME_INDEX,
    C.TOKEN_DEPTH,
    C.MATCH_INDEX,
    C.MATCH_VALID,
    C.MATCH_DEPTH,
    C.MATCH_SUBCELL,
    C.TRACK_QUERY_UV,
    C.TRACK_UV,
    C.TRACK_VISIBLE,
    C.SCENE,
    C.SEQUENCE_ID,
)
_STRING_KEYS = (C.SCENE, C.SEQUENCE_ID)
_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time zip can store: members never depend on the clock


def shard_name(index: int) -> str:
    """File name of shard ``index`` (``shard-00042.tar``)."""
    return f"shard-{index:05d}.tar"


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` through a ``.tmp`` file and ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------- encoding
def encode_sequence(sequence: Mapping[str, Any], compress: bool = True) -> bytes:
    """Serialise one sequence to reproducible ``.npz`` bytes.

    Args:
        sequence: every key of ``SEQUENCE_KEYS``; strings (scene, sequence id) become 0-d unicode arrays,
            so reading never needs pickle.
        compress: deflate the members (level 1: most of the gain of zlib at a fraction of its time).

    Returns:
        The bytes of a zip archive that ``np.load`` reads.
    """
    missing = [k for k in SEQUENCE_KEYS if k not in sequence]
    if missing:
        raise ValueError(f"sequence lacks keys {missing}")
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", compression=method, compresslevel=1 if compress else None) as zf:
        for key in SEQUENCE_KEYS:
            value = sequence[key]
            array = np.asarray(str(value)) if key in _STRING_KEYS else np.ascontiguousarray(value)
            info = zipfile.ZipInfo(key + ".npy", date_time=_FIXED_ZIP_TIME)
            info.compress_type = method
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
    return buf.getvalue()


def decode_sequence(data: bytes, where: str = "<bytes>") -> dict[str, Any]:
    """Inverse of :func:`encode_sequence`: numpy arrays, with scene and sequence id as ``str``.

    Raises:
        BadInputError: the member is not a readable npz or lacks a key; ``where`` names it.
    """
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            out: dict[str, Any] = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise BadInputError(f"{where}: not a readable npz ({exc})") from exc
    missing = [k for k in SEQUENCE_KEYS if k not in out]
    if missing:
        raise BadInputError(f"{where}: missing keys {missing} (expected the gasp-shards v{VERSION} keys)")
    for key in _STRING_KEYS:
        out[key] = str(out[key])
    return out


# --------------------------------------------------------------------------------------------- writing
class ShardFileWriter:
    """Write one shard file: members stream into ``<name>.tmp``, which is renamed only on success.

    Use as a context manager; an exception inside the block removes the ``.tmp`` file and leaves any
    earlier finished shard of that name untouched. A leftover ``.tmp`` from a killed run is overwritten.

    Example::

        with ShardFileWriter(root / shard_name(3)) as w:
            for seq in sequences:
                w.add(seq)
        entry = w.entry   # {"file": "shard-00003.tar", "num_sequences": n, "bytes": size}
    """

    def __init__(self, path: str | Path, compress: bool = True):
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.compress = compress
        self.num_sequences = 0
        self._names: set[str] = set()
        self._tar: tarfile.TarFile | None = None
        self.entry: dict[str, Any] | None = None

    def __enter__(self) -> ShardFileWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tar = tarfile.open(self.tmp, "w", format=tarfile.PAX_FORMAT)
        return self

    def add(self, sequence: Mapping[str, Any]) -> None:
        """Append one sequence (a mapping with every key of ``SEQUENCE_KEYS``)."""
        assert self._tar is not None, "use ShardFileWriter as a context manager"
        name = f"{sequence[C.SEQUENCE_ID]}.npz"
        if name in self._names or "/" in name:
            raise ValueError(f"sequence id {sequence[C.SEQUENCE_ID]!r} is repeated or contains '/'")
        self._names.add(name)
        data = encode_sequence(sequence, self.compress)
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 0
        info.mode = 0o644
        info.pax_headers = {NUM_FRAMES_HEADER: str(int(np.asarray(sequence[C.FRAMES]).shape[0]))}
        self._tar.addfile(info, io.BytesIO(data))
        self.num_sequences += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._tar is not None
        self._tar.close()
        if exc_type is not None:
            self.tmp.unlink(missing_ok=True)
            return
        with open(self.tmp, "rb+") as fh:  # the data must be on disk before the name says "finished"
            os.fsync(fh.fileno())
        os.replace(self.tmp, self.path)
        self.entry = {
            "file": self.path.name,
            "num_sequences": self.num_sequences,
            "bytes": self.path.stat().st_size,
        }


class ShardWriter:
    """Owner of ``manifest.json``: records finished shards and rewrites the manifest atomically.

    Shard files themselves may be written by any process (:class:`ShardFileWriter`); the one process
    holding the ``ShardWriter`` records them with :meth:`record`.

    Args:
        root: output folder (created).
        grid: token grid ``(gh, gw)`` of every sequence.
        image_size: frame size ``(H, W)`` of every sequence.
        config: JSON-serialisable settings that determine the content. When ``root`` already holds a
            manifest, it must have the same grid, image size and config (else ``ConfigError``), and its
            finished shards are kept: that is how an interrupted run resumes.
        num_shards: total number of shards the run will write (``complete`` turns true when all are in).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        grid: tuple[int, int],
        image_size: tuple[int, int],
        config: Mapping[str, Any],
        num_shards: int,
    ):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.manifest: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "grid": [int(grid[0]), int(grid[1])],
            "image_size": [int(image_size[0]), int(image_size[1])],
            "num_shards": int(num_shards),
            "complete": False,
            "shards": [],
            "summary": {},
            "config": json.loads(json.dumps(dict(config))),  # normalised: tuples -> lists
        }
        path = self.root / MANIFEST
        if path.exists():
            old = read_manifest(self.root, check_files=False)
            for key in ("grid", "image_size", "num_shards", "config"):
                if old.get(key) != self.manifest[key]:
                    raise ConfigError(
                        f"{path} was written with a different {key} "
                        f"({_diff(old.get(key), self.manifest[key])}); use a new output folder, or delete "
                        "this one to start over"
                    )
            self.manifest["shards"] = old["shards"]
            self.manifest["summary"] = old.get("summary", {})
        self._entries = {e["file"]: e for e in self.manifest["shards"]}
        self.manifest["complete"] = len(self._entries) == self.manifest["num_shards"]

    def is_finished(self, index: int) -> bool:
        """True when shard ``index`` is in the manifest and on disk with the recorded size."""
        entry = self._entries.get(shard_name(index))
        if entry is None:
            return False
        path = self.root / entry["file"]
        return path.is_file() and ("bytes" not in entry or path.stat().st_size == entry["bytes"])

    def entry(self, index: int) -> dict[str, Any] | None:
        """Manifest entry of shard ``index`` (with any extra fields recorded), or None."""
        return self._entries.get(shard_name(index))

    def record(self, entry: Mapping[str, Any]) -> None:
        """Add (or replace) a finished shard's entry and rewrite the manifest."""
        self._entries[entry["file"]] = dict(entry)
        self.manifest["shards"] = [self._entries[k] for k in sorted(self._entries)]
        self.manifest["complete"] = len(self._entries) == self.manifest["num_shards"]
        self._write()

    def set_summary(self, summary: Mapping[str, Any]) -> None:
        """Store the run summary and rewrite the manifest."""
        self.manifest["summary"] = dict(summary)
        self._write()

    def _write(self) -> None:
        write_json_atomic(self.root / MANIFEST, self.manifest)


def _diff(old: Any, new: Any) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        return ", ".join(f"{k}: {old.get(k)!r} there vs {new.get(k)!r} now" for k in keys)
    return f"{old!r} there vs {new!r} now"


# --------------------------------------------------------------------------------------------- reading
def read_manifest(root: str | Path, check_files: bool = True) -> dict[str, Any]:
    """Load and validate ``root/manifest.json``.

    Raises:
        BadInputError: the manifest is missing, unreadable, of another format/version, or (with
            ``check_files``) lists a shard that is not on disk. The message names the file.
    """
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise BadInputError(f"{path} not found: is {root} the output folder of `gasp prepare`?")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise BadInputError(f"{path}: format is {got!r}, expected {FORMAT!r}")
    if manifest.get("version") != VERSION:
        raise BadInputError(
            f"{path}: {FORMAT} version {manifest.get('version')!r} is not supported "
            f"(this gasp reads version {VERSION})"
        )
    for key in ("grid", "image_size", "shards"):
        if key not in manifest:
            raise BadInputError(f"{path}: missing field {key!r}")
    for i, entry in enumerate(manifest["shards"]):
        if not isinstance(entry, dict) or "file" not in entry or "num_sequences" not in entry:
            raise BadInputError(f"{path}: shards[{i}] needs 'file' and 'num_sequences'")
        if check_files and not (Path(root) / entry["file"]).is_file():
            raise BadInputError(f"{path} lists {entry['file']}, which is missing from {root}")
    return manifest


class SequenceHeader:
    """A stream position that was not decoded (see ``decode`` of :meth:`ShardReader.iter`)."""

    __slots__ = ("name", "num_frames")

    def __init__(self, name: str, num_frames: int):
        self.name = name
        self.num_frames = num_frames

    def __repr__(self) -> str:
        return f"SequenceHeader({self.name!r}, num_frames={self.num_frames})"


def iter_shard(
    path: str | Path, decode: Callable[[int], bool] | None = None
) -> Iterator[dict[str, Any] | SequenceHeader]:
    """Stream the sequences of one shard file, one decoded member at a time.

    Args:
        path: the shard file.
        decode: optional predicate on the member's index in the shard; members it rejects are
            skipped by seeking past their data and yielded as :class:`SequenceHeader`.
    """
    path = Path(path)
    try:
        with tarfile.open(path, "r|" if decode is None else "r:") as tar:
            j = 0
            for member in tar:
                if not member.isfile():
                    continue
                if decode is not None and not decode(j):
                    frames = member.pax_headers.get(NUM_FRAMES_HEADER)
                    if frames is None:  # a shard written before the header existed
                        fh = tar.extractfile(member)
                        assert fh is not None
                        frames = decode_sequence(fh.read(), where=f"{path}:{member.name}")[C.FRAMES].shape[0]
                    yield SequenceHeader(member.name, int(frames))
                else:
                    fh = tar.extractfile(member)
                    assert fh is not None
                    yield decode_sequence(fh.read(), where=f"{path}:{member.name}")
                j += 1
    except tarfile.TarError as exc:
        raise BadInputError(f"{path}: not a readable tar file ({exc})") from exc


def _decode_member(j: int, *, skip: int, first: int, decode: Callable[[int], bool] | None) -> bool:
    """Whether member ``j`` of a shard starting at stream position ``first`` is decoded."""
    return j >= skip and (decode is None or decode(first + j))


class ShardReader:
    """Stream the sequences of a prepared data set (see the module docstring for the layout).

    Args:
        root: folder holding ``manifest.json``.
        allow_partial: read an unfinished preparation (``complete`` false in the manifest) instead of
            raising ``BadInputError``.

    Attributes:
        manifest: the validated manifest dict.
        grid, image_size: ``(gh, gw)`` and ``(H, W)`` of every sequence.
    """

    def __init__(self, root: str | Path, allow_partial: bool = False):
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        if not self.manifest.get("complete", True) and not allow_partial:
            raise BadInputError(
                f"{self.root / MANIFEST}: preparation did not finish ({len(self.manifest['shards'])} of "
                f"{self.manifest.get('num_shards', '?')} shards); rerun the same `gasp prepare` command to "
                "finish it"
            )
        # Empty shards (every candidate of the shard was skipped) are recorded but never read.
        self.shards: list[dict[str, Any]] = [e for e in self.manifest["shards"] if e["num_sequences"] > 0]
        self.grid = tuple(self.manifest["grid"])
        self.image_size = tuple(self.manifest["image_size"])

    def __len__(self) -> int:
        return sum(e["num_sequences"] for e in self.shards)

    def shard_order(self, seed: int | None = None) -> list[dict[str, Any]]:
        """Shards in reading order: file order, or a permutation fixed by ``seed`` (e.g. seed + epoch)."""
        if seed is None:
            return list(self.shards)
        perm = np.random.default_rng(seed).permutation(len(self.shards))
        return [self.shards[i] for i in perm]

    def rank_shards(
        self, rank: int = 0, world_size: int = 1, seed: int | None = None
    ) -> list[dict[str, Any]]:
        """The shards of one rank: every ``world_size``-th shard of the reading order, from ``rank``."""
        _check_split("rank", rank, world_size)
        return self.shard_order(seed)[rank::world_size]

    def num_sequences(self, rank: int = 0, world_size: int = 1) -> int:
        """Number of sequences in the stream of ``rank`` (the same for any shard order seed)."""
        return sum(e["num_sequences"] for e in self.rank_shards(rank, world_size))

    def iter(
        self,
        rank: int = 0,
        world_size: int = 1,
        worker: int = 0,
        num_workers: int = 1,
        start: int = 0,
        seed: int | None = None,
        decode: Callable[[int], bool] | None = None,
    ) -> Iterator[dict[str, Any] | SequenceHeader]:
        """Stream the sequences of one (rank, worker) as dicts of numpy arrays.

        The shards of a rank (:meth:`rank_shards`) form the rank's stream; worker ``w`` of
        ``num_workers`` reads every ``num_workers``-th of them. ``start`` skips the first ``start``
        sequences of the rank's stream (whole shards are skipped without being opened), so that
        together the workers of a rank yield exactly the rank's stream minus its first ``start``
        sequences.

        Args:
            rank, world_size: this process among the distributed processes.
            worker, num_workers: this data-loader worker among the rank's workers.
            start: resume position within the rank's stream.
            seed: permute the shard order with this seed (``None``: file order).
            decode: optional predicate on the position in the rank's stream; positions it rejects are
                not decoded and come as :class:`SequenceHeader` (name and frame count only).
        """
        _check_split("worker", worker, num_workers)
        if start < 0:
            raise ConfigError(f"start must be >= 0, got {start}")
        offset = 0  # position of the current shard's first sequence in the rank's stream
        for i, entry in enumerate(self.rank_shards(rank, world_size, seed)):
            n = entry["num_sequences"]
            first, offset = offset, offset + n
            if i % num_workers != worker or offset <= start:
                continue
            skip = max(0, start - first)
            member_decode = None
            if decode is not None or skip:
                member_decode = functools.partial(_decode_member, skip=skip, first=first, decode=decode)
            for j, sequence in enumerate(iter_shard(self.root / entry["file"], member_decode)):
                if j >= skip:
                    yield sequence

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.iter()


def _check_split(what: str, index: int, count: int) -> None:
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"{what} {index} is out of range for {count} {what}s")


def distributed_rank() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: torch.distributed if initialised, else accelerate's
    state if initialised, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    try:
        from accelerate.state import PartialState
    except ImportError:  # pragma: no cover - accelerate is a dependency
        return 0, 1
    if PartialState._shared_state != {}:
        state = PartialState()
        return state.process_index, state.num_processes
    return 0, 1


class ShardDataset(torch.utils.data.IterableDataset):
    """torch ``IterableDataset`` over a prepared data set, split across ranks and workers.

    Rank and world size come from the arguments, else torch.distributed / accelerate when initialised
    (:func:`distributed_rank`); the data-loader worker from ``torch.utils.data.get_worker_info()``.
    Each item is the dict of numpy arrays of one sequence, passed through ``transform`` when given.

    Args:
        root: folder holding ``manifest.json``.
        rank, world_size: override the detected distributed position.
        start: resume position: skip the first ``start`` sequences of this rank's stream.
        seed: shuffle the shard order with ``seed + epoch`` (see :meth:`set_epoch`); ``None`` keeps file
            order.
        transform: callable applied to every sequence dict.
        allow_partial: read an unfinished preparation.
    """

    def __init__(
        self,
        root: str | Path,
        rank: int | None = None,
        world_size: int | None = None,
        start: int = 0,
        seed: int | None = None,
        transform: Callable[[dict[str, Any]], Any] | None = None,
        allow_partial: bool = False,
    ):
        super().__init__()
        self.reader = ShardReader(root, allow_partial=allow_partial)
        self.rank, self.world_size = rank, world_size
        self.start = start
        self.seed = seed
        self.epoch = 0
        self.transform = transform

    def set_epoch(self, epoch: int) -> None:
        """Choose the shard permutation of this epoch (only with a ``seed``); resets ``start`` to 0."""
        self.epoch = epoch
        self.start = 0

    def _position(self) -> tuple[int, int]:
        if self.rank is not None and self.world_size is not None:
            return self.rank, self.world_size
        return distributed_rank()

    def __len__(self) -> int:
        rank, world_size = self._position()
        return max(0, self.reader.num_sequences(rank, world_size) - self.start)

    def __iter__(self) -> Iterator[Any]:
        rank, world_size = self._position()
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        seed = None if self.seed is None else self.seed + self.epoch
        for sequence in self.reader.iter(rank, world_size, worker, num_workers, self.start, seed):
            yield self.transform(sequence) if self.transform is not None else sequence
