import json
import logging
from collections import Counter
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from gasp.errors import BadInputError
from gasp.training.qa_data import QASource, first_qa_pair, strip_placeholders

HW = (12, 16)


def _conv(question: str, answer: str) -> list[dict[str, str]]:
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


def _write_video(path: Path, num_frames: int = 10, size: tuple[int, int] = (32, 48)) -> None:
    """A tiny mpeg4 video whose frame t is a flat grey of level 20 * t."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        for t in range(num_frames):
            img = np.full((*size, 3), 20 * t, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_png(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (20, 30)) -> None:
    from PIL import Image

    Image.fromarray(np.full((*size, 3), color, np.uint8)).save(path)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("media")
    (root / "videos").mkdir()
    _write_video(root / "videos" / "clip.mp4")
    for k in range(6):
        _write_png(root / f"img{k}.png", (40 * k, 0, 255 - 40 * k))
    (root / "broken.png").write_bytes(b"not a png")
    (root / "videos" / "broken.mp4").write_bytes(b"\x00" * 64)
    return root


def _image_records(n: int) -> list[dict]:
    return [
        {"id": f"im{k}", "image": f"img{k % 6}.png", "conversations": _conv(f"<image>\nQ{k}?", f"A{k}.")}
        for k in range(n)
    ]


def _write(path: Path, records: list, jsonl: bool) -> Path:
    if jsonl:
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records, indent=1))
    return path


def test_strip_placeholders_and_first_pair():
    assert strip_placeholders("<image>\nWhat is this?") == "What is this?"
    assert strip_placeholders("Describe <video> briefly.\n<image>") == "Describe briefly."
    conv = [
        {"from": "system", "value": "Be brief."},
        {"from": "human", "value": "<video>\nWhat happens?"},
        {"from": "gpt", "value": " A dog runs. "},
        {"from": "human", "value": "And then?"},
        {"from": "gpt", "value": "It sits."},
    ]
    assert first_qa_pair(conv) == ("What happens?", "A dog runs.")


@pytest.mark.parametrize("jsonl", [False, True])
def test_parses_json_and_jsonl_image_records(tmp_path, media, jsonl):
    records = _image_records(4)
    records[1]["image"] = ["img1.png", "img2.png"]  # multi-image record (LLaVA-OneVision)
    ann = _write(tmp_path / ("a.jsonl" if jsonl else "a.json"), records, jsonl)
    src = QASource(ann, media, image_size=HW, seed=3)
    samples = list(islice(src, 4))
    assert sorted(s.id for s in samples) == ["im0", "im1", "im2", "im3"]
    assert src.consumed == 4 and not src.skipped
    by_id = {s.id: s for s in samples}
    for k, s in by_id.items():
        n = int(k[2:])
        assert s.prompt == f"Q{n}?" and s.answer == f"A{n}."
        assert s.frames.dtype == np.uint8 and s.frames.shape[1:] == (*HW, 3)
    assert by_id["im1"].frames.shape[0] == 2
    assert by_id["im0"].frames.shape[0] == 1
    # Flat colour survives resizing: img2 is (80, 0, 175).
    np.testing.assert_allclose(by_id["im1"].frames[1].reshape(-1, 3).mean(0), (80, 0, 175), atol=1)


def test_video_record_gives_evenly_spaced_frames(tmp_path, media):
    rec = {"id": "v", "video": "videos/clip.mp4", "conversations": _conv("<image>\nWhat?", "Grey.")}
    ann = _write(tmp_path / "v.json", [rec], jsonl=False)
    for mode in ("resize", "center_crop"):
        sample = next(QASource(ann, media, image_size=HW, num_frames=4, resize_mode=mode))
        assert sample.frames.shape == (4, *HW, 3)
        levels = sample.frames.reshape(4, -1).mean(1)
        # Frames 0, 3, 6, 9 of a ramp of 20 per frame (lossy codec: a few levels of tolerance).
        np.testing.assert_allclose(levels, [0, 60, 120, 180], atol=6)
        assert sample.prompt == "What?" and sample.answer == "Grey."


def test_epochs_repeat_every_record_in_a_new_order(tmp_path, media):
    ann = _write(tmp_path / "a.jsonl", _image_records(7), jsonl=True)
    ids = [s.id for s in islice(QASource(ann, media, image_size=HW, seed=1), 21)]
    epochs = [ids[0:7], ids[7:14], ids[14:21]]
    for e in epochs:
        assert sorted(e) == sorted(f"im{k}" for k in range(7))
    assert epochs[0] != epochs[1] or epochs[1] != epochs[2]


@pytest.mark.parametrize("jsonl", [False, True])
def test_rank_split_covers_every_record_once(tmp_path, media, jsonl):
    n, world = 11, 3
    ann = _write(tmp_path / "a.data", _image_records(n), jsonl)
    seen = []
    for rank in range(world):
        src = QASource(ann, media, image_size=HW, rank=rank, world_size=world, seed=5)
        mine = [s.id for s in islice(src, src.rank_records)]
        assert all(int(i[2:]) % world == rank for i in mine)
        seen += mine
    assert sorted(seen) == sorted(f"im{k}" for k in range(n))


@pytest.mark.parametrize("jsonl", [False, True])
def test_resume_from_start_gives_the_same_continuation(tmp_path, media, jsonl):
    records = _image_records(5)
    records[2]["image"] = "missing.png"  # skipped records count in the position too
    ann = _write(tmp_path / "a.data", records, jsonl)
    full = QASource(ann, media, image_size=HW, seed=2, rank=1, world_size=2)
    reference = [s.id for s in islice(full, 8)]
    first = QASource(ann, media, image_size=HW, seed=2, rank=1, world_size=2)
    head = [s.id for s in islice(first, 3)]
    resumed = QASource(ann, media, image_size=HW, seed=2, rank=1, world_size=2, start=first.consumed)
    tail = [s.id for s in islice(resumed, 5)]
    assert head + tail == reference
    assert resumed.consumed == full.consumed


def test_bad_records_are_skipped_counted_and_named(tmp_path, media, caplog):
    good = _image_records(2)
    bad = [
        {"id": "nofile", "image": "nope.png", "conversations": _conv("<image>\nQ?", "A.")},
        {"id": "badimg", "image": "broken.png", "conversations": _conv("<image>\nQ?", "A.")},
        {"id": "badvid", "video": "videos/broken.mp4", "conversations": _conv("<image>\nQ?", "A.")},
        {"id": "nogpt", "image": "img0.png", "conversations": [{"from": "human", "value": "<image>\nQ?"}]},
        {"id": "empty", "image": "img0.png", "conversations": _conv("<image>\n", "A.")},
        {"id": "text", "conversations": _conv("Q?", "A.")},
    ]
    ann = tmp_path / "a.jsonl"
    ann.write_text("".join(json.dumps(r) + "\n" for r in good + bad) + "{oops\n\n")
    reasons = ["missing_media", "corrupt_media", "corrupt_media", "no_gpt_turn", "empty_text", "no_media"]
    reason_of = dict(enumerate([None, None, *reasons, "bad_json"]))
    src = QASource(ann, media, image_size=HW)
    assert src.num_records == 9  # blank lines are not records
    with caplog.at_level(logging.WARNING, logger="gasp.training.qa_data"):
        ids = [s.id for s in islice(src, 4)]
    assert sorted(ids) == ["im0", "im0", "im1", "im1"]
    order = [int(i) for e in range(2) for i in src.epoch_order(e)]
    good_positions = [k for k, i in enumerate(order) if reason_of[i] is None]
    assert src.consumed == good_positions[3] + 1
    expected = Counter(reason_of[i] for i in order[: src.consumed] if reason_of[i] is not None)
    assert set(expected) == set(reasons) | {"bad_json"}  # every bad record was met at least once
    assert src.skipped == expected
    text = caplog.text
    assert str(ann) in text and "'nofile'" in text and "nope.png" in text and "'badvid'" in text
    assert text.count("'badimg'") == 1  # warned once per record, counted every epoch


def test_nothing_usable_raises_naming_the_file(tmp_path, media):
    records = [
        {"id": "a", "image": "nope.png", "conversations": _conv("<image>\nQ?", "A.")},
        {"id": "b", "image": "img0.png", "conversations": _conv("<image>\nQ?", "")},
    ]
    ann = _write(tmp_path / "bad.json", records, jsonl=False)
    with pytest.raises(BadInputError, match=r"bad\.json.*no usable record"):
        next(QASource(ann, media, image_size=HW))


def test_bad_annotation_files(tmp_path, media):
    with pytest.raises(BadInputError, match="not found"):
        QASource(tmp_path / "none.json", media)
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(BadInputError, match=r"empty\.jsonl.*no records"):
        QASource(tmp_path / "empty.jsonl", media)
    (tmp_path / "cut.json").write_text('[{"id": 1}')
    with pytest.raises(BadInputError, match=r"cut\.json.*not a valid JSON"):
        QASource(tmp_path / "cut.json", media)
    ann = _write(tmp_path / "two.json", _image_records(2), jsonl=False)
    with pytest.raises(BadInputError, match="rank 2 of 3"):
        QASource(ann, media, rank=2, world_size=3)
