"""Frame sampling, resumable generation with a fake adapter, and a tiny real model on real questions."""

import json

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from gasp.cli import main
from gasp.errors import BadInputError
from gasp.eval import vsibench
from gasp.eval.frames import frame_indices, read_images, read_video_frames
from gasp.eval.run import generate_predictions, run


def write_video(path, num_frames, size=(48, 64), fps=10):
    """Gray frames whose brightness encodes their index: frame i has value 20 * i."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        for i in range(num_frames):
            img = np.full((*size, 3), 20 * i, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_frame_indices():
    # linspace(0, 99, 5) = 0, 24.75, 49.5, 74.25, 99 -> rounded (half to even)
    assert frame_indices(100, 5) == [0, 25, 50, 74, 99]
    assert frame_indices(3, 32) == [0, 1, 2]  # short video: every frame once
    assert frame_indices(1, 32) == [0]
    assert frame_indices(0, 32) == []


def test_read_video_frames(tmp_path):
    path = tmp_path / "v.mp4"
    write_video(path, 10)
    frames = read_video_frames(path, 4)  # indices 0, 3, 6, 9
    assert frames.shape == (4, 48, 64, 3) and frames.dtype == np.uint8
    np.testing.assert_allclose(frames.reshape(4, -1).mean(1), [0, 60, 120, 180], atol=6)
    assert read_video_frames(path, 32).shape[0] == 10
    with pytest.raises(BadInputError, match="missing.mp4: video not found"):
        read_video_frames(tmp_path / "missing.mp4")
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(BadInputError, match="bad.mp4: cannot decode video"):
        read_video_frames(tmp_path / "bad.mp4")


def test_read_images_resizes_to_first_view(tmp_path):
    Image.new("RGB", (40, 30), (255, 0, 0)).save(tmp_path / "a.png")
    Image.new("RGB", (80, 50), (0, 0, 255)).save(tmp_path / "b.jpg")
    views = read_images([tmp_path / "a.png", tmp_path / "b.jpg"])
    assert views.shape == (2, 30, 40, 3)
    assert views[1, ..., 2].mean() > 240 and views[0, ..., 0].mean() > 240
    with pytest.raises(BadInputError, match="c.png: image not found"):
        read_images([tmp_path / "c.png"])


class FakeAdapter:
    """Answers each prompt with its length; can fail after some calls to simulate an interruption."""

    def __init__(self, fail_after=None):
        self.calls = []
        self.fail_after = fail_after

    def generate(self, frames_list, prompts, max_new_tokens=16):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt
        assert max_new_tokens == 16
        assert all(f.ndim == 4 and f.shape[-1] == 3 for f in frames_list)
        self.calls.append(list(prompts))
        return [str(len(p)) for p in prompts]


def _questions(n):
    return [
        vsibench.VSIQuestion(i, "scannet", f"s{i}", "object_counting", f"Q{i}?", "3", None) for i in range(n)
    ]


def _fake_visual(benchmark, question, media_root, num_frames):
    return np.zeros((2, 8, 8, 3), np.uint8)


def test_generation_resumes_after_interruption(tmp_path):
    questions = _questions(7)
    path = tmp_path / "predictions.jsonl"
    options = dict(batch_size=2, progress=False, load_visual=_fake_visual)
    with pytest.raises(KeyboardInterrupt):
        generate_predictions(FakeAdapter(fail_after=2), "vsibench", questions, tmp_path, path, **options)
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == [0, 1, 2, 3]
    with path.open("a") as f:
        f.write('{"id": 4, "predic')  # a write torn by the kill
    adapter = FakeAdapter()
    assert generate_predictions(adapter, "vsibench", questions, tmp_path, path, **options) == 3
    assert adapter.calls == [[q.prompt() for q in questions[4:6]], [questions[6].prompt()]]
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["id"] for r in lines] == list(range(7))
    assert all(r["prediction"] == str(len(q.prompt())) for r, q in zip(lines, questions))
    assert generate_predictions(adapter, "vsibench", questions, tmp_path, path, progress=False) == 0


def _all_angles_questions(tmp_path, shared_data, n):
    """The first ``n`` real All-Angles questions, with small generated views of odd sizes."""
    records = json.loads((shared_data / "all_angles_bench/data.derived.json").read_text())[:n]
    aa_file = tmp_path / "aa.json"
    aa_file.write_text(json.dumps(records))
    images = tmp_path / "images"
    for r in records:
        for k, rel in enumerate(r["image_path"]):
            (images / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (96 + 8 * k, 64), (30 * k, 90, 200)).save(images / rel)
    return records, aa_file, images


@pytest.mark.slow
def test_tiny_model_on_real_questions(tmp_path, shared_data):
    pytest.importorskip("gasp.models")
    import torch

    from gasp.models import from_preset

    torch.manual_seed(0)
    model = from_preset("tiny-qwen2.5-vl")

    rows = pq.read_table(shared_data / "vsibench/test-00000-of-00001.parquet").to_pylist()
    picked = [next(r for r in rows if r["question_type"] == t) for t in ("object_counting", "route_planning")]
    picked.append(next(r for r in rows if r["scene_name"] != picked[0]["scene_name"] and r["options"]))
    vsi_file = tmp_path / "vsi.json"
    vsi_file.write_text(json.dumps(picked))
    media = tmp_path / "videos"
    for i, r in enumerate(picked):
        write_video(media / r["dataset"] / f"{r['scene_name']}.mp4", 5 + 4 * i, size=(64, 80))
    out = tmp_path / "vsi_out"
    results = run(model, "vsibench", vsi_file, media, out, batch_size=2, num_frames=4, progress=False)
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(p["id"] for p in preds) == sorted(r["id"] for r in picked)
    assert all(isinstance(p["prediction"], str) for p in preds)
    assert results["num_questions"] == 3 and 0.0 <= results["overall"] <= 100.0
    assert (out / "results.png").exists()

    records, aa_file, images = _all_angles_questions(tmp_path, shared_data, 3)
    out = tmp_path / "aa_out"
    args = [
        "eval",
        "run",
        "--benchmark",
        "all-angles",
        "--model",
        "tiny-qwen2.5-vl",
        "--questions",
        str(aa_file),
    ]
    args += ["--media-root", str(images), "--output-dir", str(out), "--batch-size", "3"]
    assert main(args) == 0
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["index"] for line in lines) == [r["index"] for r in records]
    results = json.loads((out / "results.json").read_text())
    assert results["num_questions"] == 3 and results["missing"]["count"] == 0 and "pairs" in results
    assert main(args) == 0  # resumed: nothing left to generate, same predictions
    assert (out / "predictions.jsonl").read_text().splitlines() == lines


@pytest.mark.slow
@pytest.mark.parametrize(
    "preset",
    [
        "tiny-qwen2-vl",
        "tiny-qwen3-vl",
        "tiny-llava-onevision",
        "tiny-llava-next-video",
        "tiny-internvl",
        "tiny-smolvlm",
        "tiny-idefics3",
    ],
)
def test_every_family_answers_real_all_angles_questions(tmp_path, shared_data, preset):
    """Views of odd sizes reach every family: fixed-size towers get their one accepted size."""
    pytest.importorskip("gasp.models")
    from gasp.models.presets import PRESETS

    assert preset in PRESETS
    records, aa_file, images = _all_angles_questions(tmp_path, shared_data, 2)
    out = tmp_path / "out"
    args = ["eval", "run", "--benchmark", "all-angles", "--model", preset, "--questions", str(aa_file)]
    assert main([*args, "--media-root", str(images), "--output-dir", str(out), "--batch-size", "2"]) == 0
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(p["index"] for p in preds) == sorted(r["index"] for r in records)
    assert json.loads((out / "results.json").read_text())["num_questions"] == 2
