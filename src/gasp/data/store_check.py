"""Checks of a prepared folder (format "gasp-prepared"): what :func:`gasp.data.store.open_prepared` and
`gasp prepare --verify` refuse. Every failure is a :class:`DamagedFolderError` naming the file."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from gasp.data.store import INDEX_ARRAYS, INDEX_DIR, MANIFEST, DamagedFolderError, file_crc32


def scene_file_problem(root: Path, entry: dict[str, Any], full: bool) -> str | None:
    """Why the file of a scene entry is not usable (None: it is): missing, another size, and with
    ``full`` a CRC-32 mismatch of the file or of a member."""
    if not entry.get("file"):
        return None
    path = root / entry["file"]
    if not path.is_file():
        return "is missing"
    size = path.stat().st_size
    if size != entry.get("bytes"):
        return f"is {size} bytes, the manifest records {entry.get('bytes')} (cut short or replaced)"
    if full:
        crc = file_crc32(path)
        if crc != entry.get("crc32"):
            return f"content checksum (CRC-32) is {crc:08x}, the manifest records {entry.get('crc32', 0):08x}"
        try:
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
        except (OSError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
            return f"is not a readable scene file ({exc})"
        if bad is not None:
            return f"member {bad} fails its CRC-32"
    return None


def _check_entries(root: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    path = root / MANIFEST
    scenes = manifest.get("scenes")
    num_scenes = manifest.get("num_scenes")
    if not isinstance(scenes, list) or not isinstance(num_scenes, int):
        raise DamagedFolderError(root, path, "needs a 'scenes' list and 'num_scenes'")
    ids = [e.get("id") if isinstance(e, dict) else None for e in scenes]
    if ids != list(range(num_scenes)):
        missing = sorted(set(range(num_scenes)) - {i for i in ids if isinstance(i, int)})
        what = f"lacks the entries of scene(s) {missing[:10]}" if missing else "has unexpected scene entries"
        raise DamagedFolderError(root, path, f"lists {len(scenes)} of {num_scenes} scenes and {what}")
    for e in scenes:
        for key in ("name", "file", "num_frames", "num_sequences"):
            if key not in e:
                raise DamagedFolderError(root, path, f"scene entry {e['id']} lacks {key!r}")
    return scenes


def _load_index(root: Path, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    index = manifest.get("index")
    path = root / MANIFEST
    if not isinstance(index, dict) or not isinstance(index.get("files"), dict):
        raise DamagedFolderError(root, path, "has no 'index' entry")
    arrays = {}
    for name in INDEX_ARRAYS:
        rel = f"{INDEX_DIR}/{name}.npy"
        rec = index["files"].get(rel)
        file = root / rel
        if rec is None:
            raise DamagedFolderError(root, path, f"does not list the index file {rel}")
        if not file.is_file():
            raise DamagedFolderError(root, file, "is missing")
        if file.stat().st_size != rec.get("bytes"):
            raise DamagedFolderError(
                root, file, f"is {file.stat().st_size} bytes, the manifest records {rec.get('bytes')}"
            )
        if file_crc32(file) != rec.get("crc32"):
            raise DamagedFolderError(root, file, "fails its content checksum (CRC-32)")
        try:
            arrays[name] = np.load(file, mmap_mode="r")
        except ValueError as exc:
            raise DamagedFolderError(root, file, f"is not a readable .npy ({exc})") from exc
    return arrays


def _check_counts(root: Path, manifest: dict[str, Any], scenes: list, arrays: dict) -> None:
    path = root / MANIFEST
    listed = sum(int(e["num_sequences"]) for e in scenes)
    n = len(arrays["scene"])
    if manifest.get("num_sequences") != listed or manifest["index"].get("num_sequences") != listed:
        raise DamagedFolderError(
            root,
            path,
            f"num_sequences is {manifest.get('num_sequences')} (index: "
            f"{manifest['index'].get('num_sequences')}) but the scene entries add up to {listed}",
        )
    idx = root / INDEX_DIR
    if n != listed or any(len(arrays[k]) != n for k in ("number", "num_frames")):
        raise DamagedFolderError(root, idx, f"holds {n} sequences, the manifest lists {listed}")
    offsets = arrays["offsets"]
    if len(offsets) != n + 1 or offsets[-1] != len(arrays["frames"]):
        raise DamagedFolderError(root, idx / "offsets.npy", "does not match the frame lists")
    per_scene = np.bincount(np.asarray(arrays["scene"]), minlength=len(scenes))
    expected = np.array([int(e["num_sequences"]) for e in scenes])
    if len(per_scene) != len(scenes) or (per_scene != expected).any():
        raise DamagedFolderError(root, idx / "scene.npy", "sequences per scene differ from the manifest")
    limit = np.repeat(np.array([int(e["num_frames"]) for e in scenes])[arrays["scene"]], arrays["num_frames"])
    frames = np.asarray(arrays["frames"])
    if frames.size and (frames.min() < 0 or (frames >= limit).any()):
        raise DamagedFolderError(root, idx / "frames.npy", "refers to frames a scene does not store")


def check_folder(root: Path, manifest: dict[str, Any], full: bool = False) -> None:
    """Everything :func:`gasp.data.store.open_prepared` checks (see its docstring)."""
    if not manifest.get("complete"):
        done = len(manifest.get("scenes") or [])
        raise DamagedFolderError(
            root,
            root / MANIFEST,
            f"preparation did not finish ({done} of {manifest.get('num_scenes', '?')} scenes)",
        )
    scenes = _check_entries(root, manifest)
    for e in scenes:
        problem = scene_file_problem(root, e, full)
        if problem:
            raise DamagedFolderError(root, root / e["file"], problem)
    _check_counts(root, manifest, scenes, _load_index(root, manifest))
