"""Benchmark videos through each family's video input: the stock arithmetic, tokens and positions.

transformers' video processors need torchvision (absent here), so gasp's stand-ins are checked
against what does run: transformers' own ``smart_resize`` functions, the stock image processors
(a still image is a video whose frames repeat), the stock processors (placeholder expansion,
``mm_token_type_ids``, Qwen3-VL timestamps) and the stock models (feature/token count checks and
their own position computation, captured at the rotary embedding).
"""

import dataclasses
import itertools
import json
import math
import re

import numpy as np
import pytest
import torch
from PIL import Image
from test_eval_run import write_video
from transformers import CLIPImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as stock_resize
from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize as stock_resize_video

from gasp.cli import main
from gasp.models import from_preset
from gasp.models.video import (
    PUBLISHED,
    VideoClip,
    VideoInputMixin,
    sample_indices,
    smart_resize,
    smart_resize_video,
)

QWEN = ["tiny-qwen2-vl", "tiny-qwen2.5-vl", "tiny-qwen3-vl"]
LLAVA = ["tiny-llava-onevision", "tiny-llava-next-video"]
_ADAPTERS: dict = {}


def adapter_for(preset):
    if preset not in _ADAPTERS:
        _ADAPTERS[preset] = from_preset(preset)
    return _ADAPTERS[preset]


def random_frames(count, height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def test_smart_resize_equals_transformers():
    sizes = [(480, 640), (60, 90), (1080, 1920), (17, 3000), (28, 28), (333, 251), (9, 40)]
    budgets = [(4 * 28 * 28, 768 * 28 * 28), (256 * 28 * 28, 1605632), (64, 64 * 300), (4096, 8192)]
    for (h, w), (lo, hi), factor in itertools.product(sizes, budgets, (8, 28, 32)):
        expected = stock_resize(h, w, factor=factor, min_pixels=lo, max_pixels=hi)
        assert smart_resize(h, w, factor, lo, hi) == expected, (h, w, lo, hi, factor)
        for frames in (2, 5, 32):
            expected = stock_resize_video(
                frames, h, w, temporal_factor=2, factor=factor, min_pixels=lo, max_pixels=hi
            )
            assert smart_resize_video(frames, h, w, factor, 2, lo, hi) == expected, (frames, h, w, lo, hi)


def test_sample_indices_like_lmms_eval():
    # lmms-eval: np.linspace(0, total - 1, n, dtype=int) (truncation), here deduplicated
    assert sample_indices(100, 5) == [0, 24, 49, 74, 99]
    assert sample_indices(3, 8) == [0, 1, 2]
    assert sample_indices(0, 8) == []


def test_published_protocols_cover_the_video_families():
    assert set(PUBLISHED) == {"qwen2-vl", "qwen2.5-vl", "qwen3-vl", "llava-onevision", "llava-next-video"}
    assert all(p.num_frames == 32 and p.source for p in PUBLISHED.values())
    for preset in ("tiny-internvl", "tiny-smolvlm"):
        assert not isinstance(from_preset(preset), VideoInputMixin)


@pytest.mark.parametrize("preset", QWEN)
def test_qwen_video_pixels_equal_stock_image_processor(preset):
    """Frames a, a, b (padded to a, a, b, b) give exactly the stock processor's patches of images a, b."""
    adapter = adapter_for(preset)
    a, b = random_frames(2, 128, 160, seed=1)
    processor = adapter.video_processor_for(adapter.video_protocol)
    out = processor([np.stack([a, a, b])])
    stock = adapter.processor.image_processor(images=[a, b], return_tensors="pt")
    grid = stock["image_grid_thw"].tolist()
    assert grid[0] == grid[1] and grid[0][0] == 1
    assert out["video_grid_thw"].tolist() == [[2, *grid[0][1:]]]
    torch.testing.assert_close(out["pixel_values_videos"], stock["pixel_values"], atol=1e-5, rtol=0)


def captured_positions(adapter, inputs):
    """The position ids the model's own forward hands to its LLM rotary embedding."""
    seen = []
    rotary = adapter.model.model.language_model.rotary_emb
    handle = rotary.register_forward_pre_hook(lambda module, args: seen.append(args[1].clone()))
    try:
        with torch.no_grad():
            adapter.model(**inputs)
    finally:
        handle.remove()
    return seen[0]


def reference_positions(ids, video_id, block, interval):
    """3-D positions from Qwen's documented M-RoPE rule, written out token by token.

    Text advances every axis by 1. A run of video tokens is temporal patches of ``block = (gh, gw)``
    tokens in raster order: (start + int(t * interval), start + row, start + col); the text after
    it continues at start + max(gh, gw).
    """
    gh, gw = block
    out, pos, k = [], 0, 0
    ids = ids.tolist()
    while k < len(ids):
        if ids[k] != video_id:
            out.append((pos, pos, pos))
            pos, k = pos + 1, k + 1
            continue
        run = next((j for j in range(k, len(ids)) if ids[j] != video_id), len(ids)) - k
        for m in range(run):
            t, r, c = m // (gh * gw), (m % (gh * gw)) // gw, m % gw
            out.append((pos + int(t * interval), pos + r, pos + c))
        pos, k = pos + max(gh, gw), k + run
    return torch.tensor(out).T.unsqueeze(1)


@pytest.mark.parametrize("preset", QWEN)
def test_qwen_video_tokens_and_positions(preset):
    adapter = adapter_for(preset)
    qwen3 = preset == "tiny-qwen3-vl"
    indices, total, fps = (0, 7, 14, 21, 28), 30, 15.0  # 5 frames: the last temporal patch is padded
    clip = VideoClip(random_frames(5, 60, 90), indices, total, fps)
    protocol = dataclasses.replace(adapter.video_protocol, num_frames=5)
    batch = adapter.build_video_inputs([clip], ["How many chairs are in the room?"], protocol)
    inputs = batch.inputs
    ids = inputs["input_ids"][0]

    cell = adapter.cell_size
    lo, hi = protocol.min_tokens * cell * cell, protocol.max_tokens * cell * cell
    if qwen3:
        height, width = stock_resize_video(
            5, 60, 90, temporal_factor=2, factor=cell, min_pixels=5 * lo, max_pixels=5 * hi
        )
    else:
        height, width = stock_resize(60, 90, factor=cell, min_pixels=lo, max_pixels=hi)
    gh, gw, t = height // cell, width // cell, 3
    patch = cell // 2
    assert inputs["video_grid_thw"].tolist() == [[t, height // patch, width // patch]]
    assert inputs["pixel_values_videos"].shape[0] == t * (height // patch) * (width // patch)

    video_id = adapter.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    is_video = ids == video_id
    assert int(is_video.sum()) == t * gh * gw  # = t*h*w / merge^2 of video_grid_thw
    assert torch.equal(inputs["mm_token_type_ids"][0], is_video.long() * 2)
    assert not (ids == adapter.image_token_id).any()

    text = adapter.tokenizer.decode(ids)
    starts = int((ids == adapter.tokenizer.convert_tokens_to_ids("<|vision_start|>")).sum())
    if qwen3:  # one "<t seconds>" + vision_start per temporal patch, t = mean time of its two frames
        padded = [*indices, indices[-1]]
        stamps = [(padded[i] + padded[i + 1]) / 2 / fps for i in range(0, 6, 2)]
        assert starts == t
        assert "".join(f"<{s:.1f} seconds><|vision_start|>" for s in stamps) in text.replace(
            "<|video_pad|>", ""
        ).replace("<|vision_end|>", "")
        interval = 0  # every temporal patch is its own block of gh x gw tokens
    else:
        assert starts == 1
        if preset == "tiny-qwen2.5-vl":
            sampled_fps = len(indices) / total * fps
            torch.testing.assert_close(inputs["second_per_grid_ts"], torch.tensor([2 / sampled_fps]))
            interval = adapter.model.config.vision_config.tokens_per_second * 2 / sampled_fps
            assert not math.isclose(interval, round(interval))  # truncation matters here
        else:
            interval = 1

    positions = captured_positions(adapter, inputs)
    expected = reference_positions(ids, video_id, (gh, gw), interval)
    assert torch.equal(positions, expected)


@pytest.mark.parametrize("preset", LLAVA)
def test_llava_video_tokens_pixels_and_positions(preset):
    adapter = adapter_for(preset)
    frames = random_frames(3, 48, 80, seed=2)
    clip = VideoClip(frames, (0, 5, 9), 10, 10.0)
    batch = adapter.build_video_inputs([clip], ["Which object is closest?"], adapter.video_protocol)
    ids = batch.inputs["input_ids"][0]
    side, cell = adapter.frame_side, adapter.cell_size
    n = side // cell
    onevision = preset == "tiny-llava-onevision"
    # OneVision: bilinear 2x per frame + one image_newline; NeXT-Video: 2x2 average pooling per frame
    expected = 3 * math.ceil(n / 2) ** 2 + 1 if onevision else 3 * (n * n // 4)
    video_id = adapter.tokenizer.convert_tokens_to_ids("<video>")
    assert int((ids == video_id).sum()) == expected
    assert not (ids == adapter.image_token_id).any()

    pixels = batch.inputs["pixel_values_videos"]
    assert pixels.shape == (1, 3, 3, side, side)
    ip = adapter.processor.image_processor
    # OneVision's video processor squashes a frame to the tower's square like the image processor's
    # base tile; NeXT-Video's resizes the short side and center-crops (CLIP preprocessing).
    crop = {"height": side, "width": side}
    clip_processor = CLIPImageProcessorPil(
        size={"shortest_edge": side}, crop_size=crop, image_mean=ip.image_mean, image_std=ip.image_std
    )
    for f, frame in enumerate(frames):
        if onevision:
            stock = ip(images=[frame], return_tensors="pt")["pixel_values"][0, 0]  # the base tile
        else:
            stock = clip_processor(images=[frame], return_tensors="pt")["pixel_values"][0]
        torch.testing.assert_close(pixels[0, f], stock, atol=1e-5, rtol=0)

    seen = []
    hook = adapter.model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs), with_kwargs=True
    )
    try:
        with torch.no_grad():
            adapter.model(**batch.inputs)  # the model checks video features == video tokens
    finally:
        hook.remove()
    assert seen[0]["inputs_embeds"].shape[1] == len(ids)
    position_ids = seen[0].get("position_ids")
    assert position_ids is None or torch.equal(position_ids[0], torch.arange(len(ids)))


# --------------------------------------------------------------------- end to end: gasp eval run
def vsi_questions(tmp_path):
    records = [
        {"id": 1, "dataset": "scannet", "scene_name": "scene0001", "question_type": "object_counting",
         "question": "How many chairs?", "ground_truth": "3", "options": None},
        {"id": 2, "dataset": "scannet", "scene_name": "scene0002", "question_type": "object_rel_distance",
         "question": "Which is closer to the bed?", "ground_truth": "A", "options": ["A. lamp", "B. desk"]},
    ]  # fmt: skip
    path = tmp_path / "vsi.json"
    path.write_text(json.dumps(records))
    for k, r in enumerate(records):
        write_video(tmp_path / "media" / r["dataset"] / f"{r['scene_name']}.mp4", 9 + 4 * k)
    return path, tmp_path / "media"


class Spy:
    """Counts calls of the video and image generation paths (and lets them run)."""

    def __init__(self, monkeypatch):
        from gasp.models.base import VLMAdapter

        self.video, self.images = [], []
        for cls, name, calls in (
            (VideoInputMixin, "generate_video", self.video),
            (VLMAdapter, "generate", self.images),
        ):
            original = getattr(cls, name)

            def wrapped(model, *args, _original=original, _calls=calls, **kwargs):
                _calls.append(args[0])
                return _original(model, *args, **kwargs)

            monkeypatch.setattr(cls, name, wrapped)


def test_eval_run_vsibench_through_the_video_input(tmp_path, monkeypatch, capsys):
    questions, media = vsi_questions(tmp_path)
    spy = Spy(monkeypatch)
    out = tmp_path / "out"
    args = ["eval", "run", "--benchmark", "vsibench", "--model", "tiny-qwen2.5-vl"] + [
        "--questions",
        str(questions),
    ]
    args += ["--media-root", str(media), "--output-dir", str(out), "--num-frames", "4"]
    assert main(args) == 0
    assert len(spy.video) == 2 and not spy.images  # batch size 1: one call per question
    assert all(isinstance(c[0], VideoClip) and len(c[0].indices) == 4 for c in spy.video)
    assert spy.video[0][0].indices == (0, 2, 5, 8)  # linspace(0, 8, 4) truncated, as lmms-eval
    generation = json.loads((out / "generation.json").read_text())
    assert generation["input"] == "video" and generation["num_frames"] == 4
    assert generation["min_pixels"] == 256 * 64 and generation["max_pixels"] == 768 * 64
    assert "qwen2_5_vl.py" in generation["source"]
    assert json.loads((out / "results.json").read_text())["generation"] == generation
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 2

    capsys.readouterr()
    assert main([*args, "--input", "images"]) != 0
    assert re.search(
        r"generation.json: predictions .* other settings \(differing: .*input", capsys.readouterr().err
    )
    other = [a if a != "tiny-qwen2.5-vl" else "tiny-internvl" for a in args]
    other[other.index(str(out))] = str(tmp_path / "o2")
    assert main([*other, "--input", "video"]) != 0
    assert "--input video: the internvl family has no video input" in capsys.readouterr().err


def test_eval_run_all_angles_stays_images(tmp_path, monkeypatch, capsys):
    records = [
        {"index": i, "category": "counting", "question": f"Q{i}?", "A": "1", "B": "2", "C": "3",
         "answer": "A", "image_path": [f"v/{i}_0.png", f"v/{i}_1.png"], "pair_idx": None}
        for i in range(2)
    ]  # fmt: skip
    (tmp_path / "data.json").write_text(json.dumps(records))
    for r in records:
        for rel in r["image_path"]:
            (tmp_path / "img" / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (96, 64), (40, 90, 200)).save(tmp_path / "img" / rel)
    spy = Spy(monkeypatch)
    out = tmp_path / "out"
    args = ["eval", "run", "--benchmark", "all-angles", "--model", "tiny-qwen2.5-vl"]
    args += [
        "--questions",
        str(tmp_path / "data.json"),
        "--media-root",
        str(tmp_path / "img"),
        "--output-dir",
        str(out),
    ]
    assert main(args) == 0
    assert len(spy.images) == 2 and not spy.video
    assert all(f.shape[0] == 2 for f in spy.images[0])  # two views as two images
    assert json.loads((out / "generation.json").read_text())["input"] == "images"
    capsys.readouterr()
    assert main([*args, "--input", "video"]) != 0
    assert "All-Angles is a multi-view image benchmark" in capsys.readouterr().err
