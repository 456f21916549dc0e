"""Writing the prepared-data format "gasp-prepared" v1 (see :mod:`gasp.data.store` for the layout).

:class:`SceneFileWriter` builds one scene file (a stored, uncompressed zip) through a ``.tmp`` file that
is fsynced and renamed only when whole; :class:`ManifestWriter` owns ``manifest.json`` and rewrites it
atomically after every finished scene; :func:`write_index` writes the sequence index arrays. Members
carry fixed timestamps and permissions, so the same input gives byte-identical files.
"""

from __future__ import annotations

import io
import json
import logging
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from gasp.data.store import (
    DEPTH_EXT,
    DEPTH_SCALE,
    FORMAT,
    INDEX_ARRAYS,
    INDEX_DIR,
    MANIFEST,
    VERSION,
    encode_depth_units,
    file_crc32,
    read_manifest_json,
)
from gasp.data.views import View
from gasp.errors import BadInputError, ConfigError

_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time zip can store: files never depend on the clock
IMAGE_FORMATS = {"jpeg": "jpg", "png": "png"}
log = logging.getLogger(__name__)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through ``path.tmp``, fsync, ``os.replace``."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_bytes_atomic(Path(path), (json.dumps(data, indent=2) + "\n").encode())


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` in ``.npy`` format (no pickle)."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def encode_colour(image: np.ndarray, image_format: str, quality: int) -> bytes:
    """JPEG (``quality``) or PNG bytes of an ``(H, W, 3)`` uint8 image."""
    buf = io.BytesIO()
    if image_format == "jpeg":
        Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    else:
        Image.fromarray(image).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def encode_depth(depth: np.ndarray) -> bytes:
    """``depth`` (metres) in units of 1/DEPTH_SCALE m (millimetres), encoded by
    :func:`gasp.data.store.encode_depth_units`; beyond 65.535 m and non-finite values become 0
    (invalid). Lossless for millimetre sensor depth."""
    units = np.rint(np.nan_to_num(depth, nan=0.0, posinf=0.0) * DEPTH_SCALE)
    units[(units < 0) | (units > 65535)] = 0
    return encode_depth_units(units.astype(np.uint16))


class SceneFileWriter:
    """Write one scene file: frames in stored order, then the cameras and the scene's sequences.

    Use as a context manager; the file appears under its final name only when the block ends without
    an exception (a leftover ``.tmp`` of a killed run is overwritten).
    """

    def __init__(self, path: Path, image_format: str = "jpeg", quality: int = 80):
        if image_format not in IMAGE_FORMATS:
            raise ConfigError(f"--image-format must be one of {sorted(IMAGE_FORMATS)}, got {image_format!r}")
        self.path = path
        self.tmp = path.with_name(path.name + ".tmp")
        self.image_format, self.quality = image_format, quality
        self.K: list[np.ndarray] = []
        self.poses: list[np.ndarray] = []
        self.indices: list[int] = []
        self.frame_ids: list[str] = []
        self._zip: zipfile.ZipFile | None = None

    def __enter__(self) -> SceneFileWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._zip = zipfile.ZipFile(self.tmp, "w", compression=zipfile.ZIP_STORED)
        return self

    def _member(self, name: str, data: bytes) -> None:
        assert self._zip is not None, "use SceneFileWriter as a context manager"
        info = zipfile.ZipInfo(name, date_time=_FIXED_ZIP_TIME)
        info.external_attr = 0o644 << 16
        self._zip.writestr(info, data)

    def add_frame(self, view: View) -> None:
        """Append a validated view as the next stored frame."""
        pos = len(self.indices)
        ext = IMAGE_FORMATS[self.image_format]
        self._member(f"color/{pos:06d}.{ext}", encode_colour(view.image, self.image_format, self.quality))
        self._member(f"depth/{pos:06d}.{DEPTH_EXT}", encode_depth(view.depth))
        self.K.append(np.asarray(view.K, dtype=np.float64))
        self.poses.append(np.asarray(view.cam_to_world, dtype=np.float64))
        self.indices.append(int(view.index))
        self.frame_ids.append(str(view.frame_id))

    def finish(self, sequences: Sequence[np.ndarray], numbers: Sequence[int]) -> None:
        """Write the cameras and the scene's sequences (stored-frame positions, anchor first)."""
        n = len(self.indices)
        self._member("K.npy", npy_bytes(np.stack(self.K) if n else np.zeros((0, 3, 3))))
        self._member("cam_to_world.npy", npy_bytes(np.stack(self.poses) if n else np.zeros((0, 4, 4))))
        self._member("frame_index.npy", npy_bytes(np.asarray(self.indices, dtype=np.int64)))
        self._member("frame_ids.json", json.dumps(self.frame_ids).encode())
        lengths = np.array([len(s) for s in sequences], dtype=np.int16)
        flat = np.concatenate(sequences).astype(np.int32) if sequences else np.zeros(0, np.int32)
        self._member("sequence_frames.npy", npy_bytes(flat))
        self._member("sequence_lengths.npy", npy_bytes(lengths))
        self._member("sequence_numbers.npy", npy_bytes(np.asarray(numbers, dtype=np.int32)))

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._zip is not None
        self._zip.close()
        if exc_type is not None:
            self.tmp.unlink(missing_ok=True)
            return
        with open(self.tmp, "rb+") as fh:  # the data must be on disk before the name says "finished"
            os.fsync(fh.fileno())
        os.replace(self.tmp, self.path)

    def entry(self) -> dict[str, Any]:
        """Manifest fields of the finished file: name relative to the root, size, CRC-32, frames."""
        return {
            "file": f"{self.path.parent.name}/{self.path.name}",
            "bytes": self.path.stat().st_size,
            "crc32": file_crc32(self.path),
            "num_frames": len(self.indices),
        }


def write_index(root: Path, parts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, Any]:
    """Concatenate per-scene sequence arrays into ``root/index/*.npy``; files whose bytes are already
    there are left untouched (a rerun changes nothing). Returns the manifest's ``index`` entry."""
    arrays = {
        "scene": np.concatenate([p["scene"] for p in parts]).astype(np.int32),
        "number": np.concatenate([p["number"] for p in parts]).astype(np.int32),
        "num_frames": np.concatenate([p["num_frames"] for p in parts]).astype(np.int16),
        "frames": np.concatenate([p["frames"] for p in parts]).astype(np.int32),
    }
    arrays["offsets"] = np.concatenate([[0], np.cumsum(arrays["num_frames"], dtype=np.int64)])
    assert set(arrays) == set(INDEX_ARRAYS)
    (root / INDEX_DIR).mkdir(parents=True, exist_ok=True)
    files = {}
    for name in INDEX_ARRAYS:
        path = root / INDEX_DIR / f"{name}.npy"
        data = npy_bytes(arrays[name])
        if not path.is_file() or path.read_bytes() != data:
            write_bytes_atomic(path, data)
        files[f"{INDEX_DIR}/{name}.npy"] = {"bytes": len(data), "crc32": file_crc32(path)}
    return {"num_sequences": len(arrays["scene"]), "files": files}


class ManifestWriter:
    """Owner of ``manifest.json``: finished scenes are recorded, and the manifest rewritten atomically,
    one by one; a rerun with the same ``config`` keeps them (a different config is refused)."""

    def __init__(self, root: Path, config: Mapping[str, Any], specs: Sequence[str]):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.manifest: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "complete": False,
            "num_scenes": len(specs),
            "num_sequences": None,
            "config": json.loads(json.dumps(dict(config))),
            "scenes": [],
            "index": None,
            "summary": {},
        }
        self.entries: dict[int, dict[str, Any]] = {}
        path = root / MANIFEST
        old = self._previous(path)
        if old is not None:
            if old.get("config") != self.manifest["config"]:
                raise ConfigError(
                    f"{path} was written with a different config "
                    f"({_diff(old.get('config'), self.manifest['config'])}); use a new output folder, "
                    "or delete this one to start over"
                )
            for entry in old.get("scenes", []):
                if isinstance(entry, dict) and isinstance(entry.get("id"), int):
                    self.entries[entry["id"]] = entry

    @staticmethod
    def _previous(path: Path) -> dict[str, Any] | None:
        """The manifest of an earlier run; None when there is none or it is not readable JSON (then
        every scene is redone). A manifest of another format is refused: nothing is overwritten."""
        if not path.exists():
            return None
        try:
            json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            log.warning("%s is not readable (%s): preparing every scene again", path, exc)
            return None
        try:
            return read_manifest_json(path)
        except BadInputError as exc:
            raise ConfigError(f"{exc}; use a new output folder, or delete this one to start over") from exc

    def record(self, entry: Mapping[str, Any]) -> None:
        """Add (or replace) a finished scene's entry; the folder is incomplete until :meth:`complete`."""
        self.entries[int(entry["id"])] = dict(entry)
        self.manifest["complete"] = False
        self._write()

    def forget(self, scene_id: int) -> None:
        """Drop a scene's entry (its file failed verification): it will be redone."""
        if self.entries.pop(scene_id, None) is not None:
            self.manifest["complete"] = False
            self._write()

    def complete(self, index: Mapping[str, Any], summary: Mapping[str, Any]) -> None:
        """Record the index and summary and mark the folder complete."""
        self.manifest.update(
            index=dict(index), num_sequences=index["num_sequences"], summary=dict(summary), complete=True
        )
        self._write()

    def _write(self) -> None:
        self.manifest["scenes"] = [self.entries[k] for k in sorted(self.entries)]
        data = (json.dumps(self.manifest, indent=2) + "\n").encode()
        path = self.root / MANIFEST
        if not path.is_file() or path.read_bytes() != data:
            write_bytes_atomic(path, data)


def _diff(old: Any, new: Any) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        return ", ".join(f"{k}: {old.get(k)!r} there vs {new.get(k)!r} now" for k in keys)
    return f"{old!r} there vs {new!r} now"
