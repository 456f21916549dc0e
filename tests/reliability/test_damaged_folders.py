"""Edited or damaged prepared folders are refused with the file named, and rerunning prepare repairs
them, redoing only the damaged part."""

from __future__ import annotations

import json
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

from gasp.cli import main
from gasp.data.prepare import prepare
from gasp.data.store import DamagedFolderError, open_prepared
from gasp.errors import BadInputError, ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from prepared_scenes import folder_files, tiny_config, write_folder_scene  # noqa: E402


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, dict]:
    base = tmp_path_factory.mktemp("damaged")
    scenes = [write_folder_scene(base / f"room_{i}", seed=i) for i in range(2)]
    cfg = tiny_config(base / "good", scenes, min_overlap=0.0)
    prepare(cfg)
    return base / "good", {"scenes": scenes}


@pytest.fixture
def folder(prepared, tmp_path) -> Path:
    good, _ = prepared
    out = tmp_path / "data"
    shutil.copytree(good, out)
    return out


def _rerun_repairs(folder: Path, prepared) -> None:
    good, info = prepared
    summary = prepare(tiny_config(folder, info["scenes"], min_overlap=0.0))
    open_prepared(folder, verify="full")
    assert folder_files(folder) == folder_files(good)
    return summary


def _edit_manifest(folder: Path, edit) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def test_entry_removed_from_a_complete_manifest(folder, prepared):
    _edit_manifest(folder, lambda m: m["scenes"].pop(1))
    with pytest.raises(DamagedFolderError, match=r"manifest.json: lists 1 of 2 scenes.*scene\(s\) \[1\]"):
        open_prepared(folder)
    summary = _rerun_repairs(folder, prepared)
    assert summary.scenes_reused == 1  # only the unlisted scene was redone


def test_wrong_num_sequences(folder, prepared):
    _edit_manifest(folder, lambda m: m.update(num_sequences=m["num_sequences"] - 2))
    with pytest.raises(DamagedFolderError, match=r"manifest.json: num_sequences is 4 .* add up to 6"):
        open_prepared(folder)
    assert _rerun_repairs(folder, prepared).scenes_reused == 2


def test_scene_file_cut_short(folder, prepared):
    path = folder / "scenes" / "00001.zip"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DamagedFolderError, match=r"scenes/00001.zip: is \d+ bytes, the manifest records"):
        open_prepared(folder)
    assert _rerun_repairs(folder, prepared).scenes_reused == 1


def test_flipped_byte_fails_the_checksum_when_read(folder, prepared, capsys):
    path = folder / "scenes" / "00000.zip"
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("depth/000000.u16z")
    data = bytearray(path.read_bytes())
    at = info.header_offset + 30 + len(info.filename) + info.file_size // 2  # inside the member's data
    data[at] ^= 0x40
    path.write_bytes(bytes(data))
    folder_data = open_prepared(folder)  # same size: the cheap open check passes ...
    with pytest.raises(DamagedFolderError, match=r"scenes/00000.zip: member depth/000000.u16z is damaged"):
        folder_data.view(0, 0)  # ... the member's CRC-32 fails when it is read
    with pytest.raises(DamagedFolderError, match=r"scenes/00000.zip: content checksum .*To repair: rerun"):
        open_prepared(folder, verify="full")
    assert main(["prepare", "--verify", str(folder)]) == 2
    assert "scenes/00000.zip" in capsys.readouterr().err
    assert _rerun_repairs(folder, prepared).scenes_reused == 1


def test_damaged_index_file(folder, prepared):
    path = folder / "index" / "frames.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(DamagedFolderError, match=r"index/frames.npy: fails its content checksum"):
        open_prepared(folder)
    assert _rerun_repairs(folder, prepared).scenes_reused == 2


def test_missing_scene_file(folder, prepared):
    (folder / "scenes" / "00000.zip").unlink()
    with pytest.raises(DamagedFolderError, match=r"scenes/00000.zip: is missing"):
        open_prepared(folder)
    assert _rerun_repairs(folder, prepared).scenes_reused == 1


def test_unreadable_manifest_is_refused_and_a_rerun_redoes_every_scene(folder, prepared):
    (folder / "manifest.json").write_text('{"format": "gasp-prepared", "scen')
    with pytest.raises(BadInputError, match=r"manifest.json: not readable JSON"):
        open_prepared(folder)
    assert _rerun_repairs(folder, prepared).scenes_reused == 0


def test_a_folder_of_the_old_format_is_not_overwritten(tmp_path, prepared):
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "gasp-shards", "version": 1}))
    with pytest.raises(ConfigError, match=r"old per-sequence shard format.*use a new output folder"):
        prepare(tiny_config(tmp_path, prepared[1]["scenes"]))
    assert json.loads((tmp_path / "manifest.json").read_text())["format"] == "gasp-shards"
