"""Prepared data, format "gasp-prepared" version 2: frames stored once per scene, plus a sequence index.

A prepared folder (``gasp prepare --output D``)::

    D/manifest.json          format, version, complete, config, one entry per scene (file, bytes, crc32,
                             num_frames, num_sequences, skip statistics), the index files, the summary
    D/scenes/NNNNN.zip       one per scene: color/PPPPPP.jpg|png, depth/PPPPPP.u16z (uint16 mm),
                             K.npy, cam_to_world.npy, frame_index.npy, frame_ids.json and the scene's
                             sequences (sequence_frames/_lengths/_numbers.npy); a stored (uncompressed) zip
    D/index/*.npy            the sequence index: scene, number, num_frames, offsets, frames

Nothing model-specific (token grid, image size, targets) is stored: readers compute it from
:meth:`PreparedData.view`. Frames are addressed by their position in the scene's stored list (only the
frames some sequence uses are stored, in video order); ``View.index`` is the frame's position in the
source video.

Checks. :func:`open_prepared` refuses a folder that is unfinished, whose manifest does not list every
scene, whose counts do not add up (manifest vs index vs scene entries), whose files are missing or of
another size than recorded, or whose index files fail their CRC-32. Each scene member's CRC-32 (zip)
is checked whenever it is read; ``verify="full"`` (``gasp prepare --verify``) also checks every scene
file's CRC-32 and every member. Every failure names the file and the repair: rerun the same
``gasp prepare`` command, which redoes only the damaged scenes.
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from gasp.data.views import View
from gasp.errors import BadInputError, ConfigError

FORMAT = "gasp-prepared"
VERSION = 2  # 2: depth as row-delta + zlib (.u16z) instead of 16-bit PNG
MANIFEST = "manifest.json"
SCENES_DIR = "scenes"
INDEX_DIR = "index"
INDEX_ARRAYS = ("scene", "number", "num_frames", "offsets", "frames")
DEPTH_SCALE = 1000.0  # stored depth units per metre (uint16 millimetres)
DEPTH_EXT = "u16z"  # depth member: DEPTH_MAGIC, height, width (uint32 LE), zlib of row deltas
DEPTH_MAGIC = b"GD16"
_DEPTH_HEADER = struct.Struct("<4sII")
VERIFY_LEVELS = ("sizes", "full")
_OPEN_SCENE_FILES = 32  # scene files kept open per process


def file_crc32(path: Path, chunk: int = 1 << 22) -> int:
    """CRC-32 of a whole file, read in chunks."""
    crc = 0
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            crc = zlib.crc32(block, crc)
    return crc


def safe_name(name: str) -> str:
    """``name`` with runs of characters other than ``A-Za-z0-9_.-`` replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "scene"


def repair_hint(root: Path) -> str:
    return (
        f"rerun the same `gasp prepare` command with --output {root} (it redoes only the damaged "
        f"scenes), and check with `gasp prepare --verify {root}`"
    )


class DamagedFolderError(BadInputError):
    """A prepared folder is unfinished, edited or damaged; the message names the file and the repair."""

    def __init__(self, root: Path, path: Path | str, problem: str):
        self.path = str(path)
        super().__init__(f"{path}: {problem}. To repair: {repair_hint(root)}")


def read_manifest_json(path: Path) -> dict[str, Any]:
    """Load a manifest and check its format and version (any ``BadInputError`` names the file)."""
    if not path.is_file():
        raise BadInputError(f"{path} not found: is {path.parent} the output folder of `gasp prepare`?")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        hint = " (the old per-sequence shard format: prepare the data again)" if got == "gasp-shards" else ""
        raise BadInputError(f"{path}: format is {got!r}, expected {FORMAT!r}{hint}")
    if manifest.get("version") != VERSION:
        raise BadInputError(
            f"{path}: {FORMAT} version {manifest.get('version')!r} is not supported (this gasp reads "
            f"version {VERSION})"
        )
    return manifest


def encode_depth_units(units: np.ndarray) -> bytes:
    """Lossless bytes of a uint16 ``(H, W)`` depth map: a header, then zlib (level 6) of each row's
    differences to its left neighbour (modulo 2**16, little-endian). Smaller than a 16-bit PNG of the
    same map, faster to encode and about twice as fast to decode."""
    units = np.ascontiguousarray(units, dtype=np.uint16)
    deltas = np.diff(units, axis=1, prepend=np.uint16(0)).astype("<u2")
    header = _DEPTH_HEADER.pack(DEPTH_MAGIC, units.shape[0], units.shape[1])
    return header + zlib.compress(deltas.tobytes(), 6)


def decode_depth_units(data: bytes) -> np.ndarray:
    """The uint16 ``(H, W)`` map of :func:`encode_depth_units`; ValueError if ``data`` is not one."""
    if len(data) < _DEPTH_HEADER.size:
        raise ValueError("shorter than its header")
    magic, h, w = _DEPTH_HEADER.unpack_from(data)
    if magic != DEPTH_MAGIC:
        raise ValueError(f"starts with {magic!r}, not {DEPTH_MAGIC!r}")
    try:
        raw = zlib.decompress(data[_DEPTH_HEADER.size :], bufsize=2 * h * w)
    except zlib.error as exc:
        raise ValueError(str(exc)) from exc
    if len(raw) != 2 * h * w:
        raise ValueError(f"holds {len(raw)} bytes, expected {2 * h * w} for {h}x{w}")
    return np.cumsum(np.frombuffer(raw, dtype="<u2").reshape(h, w), axis=1, dtype=np.uint16)


# ------------------------------------------------------------------------------------------ index
class SequenceIndex:
    """The sequences of a prepared folder as memory-mapped numpy arrays (no per-sequence objects).

    Attributes:
        scene: ``(S,)`` int32 scene id of each sequence.
        number: ``(S,)`` int32 the sequence's number within its scene (its draw order).
        num_frames: ``(S,)`` int16 frame count F (anchor included).
        offsets: ``(S + 1,)`` int64 start of each sequence in ``frames_flat``.
        frames_flat: ``(sum F,)`` int32 stored-frame positions, anchor first in each sequence.
    """

    def __init__(self, root: Path, scene_names: Sequence[str]):
        self.root = Path(root)
        self.scene_names = list(scene_names)
        self._load()

    def _load(self) -> None:
        arrays = {n: np.load(self.root / INDEX_DIR / f"{n}.npy", mmap_mode="r") for n in INDEX_ARRAYS}
        self.scene, self.number = arrays["scene"], arrays["number"]
        self.num_frames, self.offsets = arrays["num_frames"], arrays["offsets"]
        self.frames_flat = arrays["frames"]

    def __getstate__(self) -> dict[str, Any]:  # pickles as paths: workers re-map, never copy arrays
        return {"root": self.root, "scene_names": self.scene_names}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.root, self.scene_names = state["root"], state["scene_names"]
        self._load()

    def __len__(self) -> int:
        return int(self.scene.shape[0])

    def frames(self, i: int) -> np.ndarray:
        """``(F,)`` int32 stored-frame positions of sequence ``i`` in its scene, anchor first."""
        return np.array(self.frames_flat[self.offsets[i] : self.offsets[i + 1]], dtype=np.int32)

    def sequence_id(self, i: int) -> str:
        """A stable name: ``<scene name>-<scene id>-<number>``."""
        s = int(self.scene[i])
        return f"{safe_name(self.scene_names[s])}-{s:04d}-{int(self.number[i]):04d}"


# ------------------------------------------------------------------------------------------ scenes
class _SceneFile:
    """One scene file, opened lazily (again in each process: zip reads seek a shared descriptor)."""

    def __init__(self, root: Path, entry: dict[str, Any]):
        self.root, self.path = root, root / entry["file"]
        self.num_frames = int(entry["num_frames"])
        self._zip: zipfile.ZipFile | None = None
        self._pid = -1
        self.meta: dict[str, Any] = {}

    def _fail(self, problem: str) -> DamagedFolderError:
        return DamagedFolderError(self.root, self.path, problem)

    def zip(self) -> zipfile.ZipFile:
        if self._zip is None or self._pid != os.getpid():
            try:
                self._zip = zipfile.ZipFile(self.path)
            except (OSError, zipfile.BadZipFile) as exc:
                raise self._fail(f"not a readable scene file ({exc})") from exc
            self._pid = os.getpid()
            self.meta = {
                "K": self.array("K.npy"),
                "cam_to_world": self.array("cam_to_world.npy"),
                "frame_index": self.array("frame_index.npy"),
                "frame_ids": json.loads(self.read("frame_ids.json")),
            }
            if not all(len(v) == self.num_frames for v in self.meta.values()):
                raise self._fail(f"holds cameras for another number of frames than {self.num_frames}")
        return self._zip

    def read(self, member: str) -> bytes:
        """A member's bytes; zip checks its CRC-32."""
        zf = self._zip if self._zip is not None and self._pid == os.getpid() else self.zip()
        try:
            return zf.read(member)
        except KeyError as exc:
            raise self._fail(f"member {member} is missing") from exc
        except (OSError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise self._fail(f"member {member} is damaged ({exc})") from exc

    def array(self, member: str) -> np.ndarray:
        try:
            return np.load(io.BytesIO(self.read(member)), allow_pickle=False)
        except ValueError as exc:
            raise self._fail(f"member {member} is not a readable .npy ({exc})") from exc

    def close(self) -> None:
        if self._zip is not None and self._pid == os.getpid():
            self._zip.close()
        self._zip = None

    def view(self, frame: int) -> View:
        zf = self.zip()
        if not 0 <= frame < self.num_frames:
            raise IndexError(f"{self.path}: frame {frame} out of range (scene stores {self.num_frames})")
        del zf
        colour = self._colour_member(frame)
        image = self._decode(colour, lambda im: np.asarray(im.convert("RGB"), dtype=np.uint8))
        units = self._depth(frame)
        depth = units.astype(np.float32) / np.float32(DEPTH_SCALE)
        return View(
            image=image,
            depth=depth,
            K=np.array(self.meta["K"][frame], dtype=np.float64),
            cam_to_world=np.array(self.meta["cam_to_world"][frame], dtype=np.float64),
            frame_id=str(self.meta["frame_ids"][frame]),
            index=int(self.meta["frame_index"][frame]),
            source=f"{self.path}:{colour}",
            intrinsics_hw=(int(depth.shape[0]), int(depth.shape[1])),
        )

    def _colour_member(self, frame: int) -> str:
        names = self.zip().NameToInfo
        for ext in ("jpg", "png"):
            if f"color/{frame:06d}.{ext}" in names:
                return f"color/{frame:06d}.{ext}"
        raise self._fail(f"colour image of stored frame {frame} is missing")

    def _depth(self, frame: int) -> np.ndarray:
        member = f"depth/{frame:06d}.{DEPTH_EXT}"
        try:
            return decode_depth_units(self.read(member))
        except ValueError as exc:
            raise self._fail(f"member {member} is not a decodable depth map ({exc})") from exc

    def _decode(self, member: str, convert) -> np.ndarray:
        data = self.read(member)
        try:
            with Image.open(io.BytesIO(data)) as im:
                return convert(im)
        except (OSError, SyntaxError, ValueError) as exc:
            raise self._fail(f"member {member} is not a decodable image ({exc})") from exc


# ------------------------------------------------------------------------------------------ folder
class PreparedData:
    """A checked prepared folder: scene names, the sequence index, decoded views.

    Attributes:
        root: the folder.
        scenes: scene names; the position is the scene id used by the index.
        index: the :class:`SequenceIndex`.
        config: the `gasp prepare` settings the folder was written with.
        manifest: the whole manifest (summary, per-scene statistics).
    """

    def __init__(self, root: Path, manifest: dict[str, Any]):
        self.root = root
        self.manifest = manifest
        self.config: dict[str, Any] = manifest["config"]
        self._entries = manifest["scenes"]
        self.scenes: list[str] = [e["name"] for e in self._entries]
        self.index = SequenceIndex(root, self.scenes)
        self._files: OrderedDict[int, _SceneFile] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_files"] = OrderedDict()  # open files stay in their process
        return state

    def num_frames(self, scene: int) -> int:
        """Stored frames of scene ``scene``."""
        return int(self._entries[scene]["num_frames"])

    def _scene(self, scene: int) -> _SceneFile:
        if scene in self._files:
            self._files.move_to_end(scene)
            return self._files[scene]
        entry = self._entries[scene]
        if not entry.get("file"):
            raise IndexError(f"{self.root}: scene {scene} ({entry['name']}) has no stored frames")
        f = self._files[scene] = _SceneFile(self.root, entry)
        if len(self._files) > _OPEN_SCENE_FILES:
            self._files.popitem(last=False)[1].close()
        return f

    def view(self, scene: int, frame: int) -> View:
        """Frame ``frame`` (position in the scene's stored list) of scene ``scene``, decoded: image
        uint8 ``(H, W, 3)``, depth float32 metres (0 = invalid), K of the depth image, cam_to_world."""
        return self._scene(scene).view(int(frame))

    def views(self, scene: int, frames: Sequence[int]) -> list[View]:
        """``view`` for each of ``frames``, decoding each distinct frame once (repeats share arrays)."""
        decoded = {f: self.view(scene, f) for f in dict.fromkeys(int(f) for f in frames)}
        return [decoded[int(f)] for f in frames]

    def close(self) -> None:
        """Close open scene files (they reopen on the next read)."""
        while self._files:
            self._files.popitem()[1].close()


def open_prepared(root: str | Path, verify: str = "sizes") -> PreparedData:
    """Open and check a prepared folder.

    Args:
        root: the output folder of `gasp prepare`.
        verify: ``"sizes"``: complete, every listed file present with its recorded size, counts that add
            up, index CRC-32s (scene members are CRC-checked when read); ``"full"``: also every scene
            file's CRC-32 and every member.

    Raises:
        BadInputError: not a prepared folder, or damaged (:class:`DamagedFolderError`, naming the file
            and the repair).
        ConfigError: an unknown ``verify`` level.
    """
    if verify not in VERIFY_LEVELS:
        raise ConfigError(f"verify must be one of {VERIFY_LEVELS}, got {verify!r}")
    root = Path(root)
    from gasp.data.store_check import check_folder

    manifest = read_manifest_json(root / MANIFEST)
    check_folder(root, manifest, full=verify == "full")
    return PreparedData(root, manifest)
