"""Generate a benchmark's predictions with a VLM adapter, resumably, then score them.

Predictions are appended to ``OUT/predictions.jsonl`` as each batch finishes (flushed and fsynced),
so an interrupted run continues where it stopped: questions already in the file are skipped.

How they were generated (input path, frames, pixel budget, source of the settings) is written to
``OUT/generation.json`` before the first question and added to ``results.json``; a rerun with other
settings into the same folder is refused, so one predictions file never mixes two protocols.
VSI-Bench videos go through the model's video input when its family has one
(`gasp.models.video`), else as separate frames; All-Angles views are always separate images.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from gasp.errors import BadInputError, ConfigError, GaspError
from gasp.eval import frames as frames_io
from gasp.eval import scoring
from gasp.eval.common import ID_KEYS, key_of, write_json_atomic

MAX_NEW_TOKENS = 16
PREDICTIONS_FILE = "predictions.jsonl"
GENERATION_FILE = "generation.json"
INPUT_MODES = ("auto", "video", "images")
"""``--input``: ``auto`` = the model's video input for VSI-Bench when its family has one."""


class Generator(Protocol):
    """The part of `gasp.models.VLMAdapter` that evaluation uses (greedy decoding)."""

    def generate(
        self, frames_list: list[np.ndarray], prompts: list[str], max_new_tokens: int = 16
    ) -> list[str]: ...


def load_model(spec: str, device: str | None = None, dtype: str | None = None) -> Generator:
    """A VLM adapter from a checkpoint folder or a preset name, via `gasp.models.load_adapter`.

    Args:
        spec: checkpoint folder or preset name.
        device: e.g. "cuda", "cpu"; None picks "cuda" when available.
        dtype: e.g. "bfloat16"; None keeps the checkpoint's.
    """
    try:
        import torch

        from gasp.models import load_adapter
    except ImportError as exc:
        raise ConfigError(f"--model: gasp.models is not available ({exc})") from None
    if device is None and torch.cuda.is_available():
        device = "cuda"
    return load_adapter(spec, device=device, dtype=dtype)


def fit_frames(model: Any, frames: np.ndarray) -> np.ndarray:
    """Resize (F, H, W, 3) frames to the nearest size the adapter takes without its processor resizing.

    Like Qwen's ``smart_resize``: sides snapped to whole token cells, aspect ratio kept, shrunk
    (or grown) by 10% steps until the adapter's pixel budget accepts the size. Adapters whose vision
    tower takes one fixed size (LLaVA, InternVL, SmolVLM presets: ``default_grid`` is their only grid)
    get frames resized to it, as those models' own processors do. Frames the adapter already accepts
    are returned unchanged.
    """
    from PIL import Image

    height, width = frames.shape[1:3]
    try:
        model.grid_for_image_size((height, width))
        return frames
    except GaspError:
        pass
    cell = _cell_size(model)
    # Shrink first (the usual case: a pixel budget), then grow (a minimum size).
    for scale in [0.9**k for k in range(80)] + [0.9**-k for k in range(1, 80)]:
        grid = (max(1, round(height * scale / cell)), max(1, round(width * scale / cell)))
        try:
            size = model.image_size_for_grid(grid)
            break
        except GaspError:
            continue
    else:
        try:
            size = model.image_size_for_grid(model.default_grid)
        except (AttributeError, GaspError):
            raise ConfigError(f"no frame size near {height}x{width} px is accepted by the model") from None
    if size == (height, width):
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize(size[::-1], Image.BILINEAR)) for f in frames])


def _cell_size(model: Any) -> int:
    for k in range(1, 257):
        try:
            return model.image_size_for_grid((k, k))[0] // k
        except GaspError:
            continue
    raise ConfigError("cannot determine the model's token cell size (image_size_for_grid)")


def generate_answers(
    model: Generator,
    visuals: list[Any],
    prompts: list[str],
    max_new_tokens: int = MAX_NEW_TOKENS,
    protocol: Any = None,
) -> list[str]:
    """Greedy answers, batching together samples whose frames have the same shape (adapters need it).

    ``visuals`` are (F, H, W, 3) arrays (separate frames), or `VideoClip` objects with the
    ``protocol`` (`VideoProtocol`) of the model's video input.
    """
    video = protocol is not None
    if not video and hasattr(model, "image_size_for_grid"):
        visuals = [fit_frames(model, v) for v in visuals]
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, v in enumerate(visuals):
        groups.setdefault(tuple((v.frames if video else v).shape), []).append(i)
    answers: list[str] = [""] * len(prompts)
    for members in groups.values():
        chunk, texts = [visuals[i] for i in members], [prompts[i] for i in members]
        if video:
            out = model.generate_video(chunk, texts, max_new_tokens, protocol)  # type: ignore[attr-defined]
        else:
            out = model.generate(chunk, texts, max_new_tokens)
        if len(out) != len(members):
            raise RuntimeError(f"the model returned {len(out)} answers for {len(members)} prompts")
        for i, text in zip(members, out):
            answers[i] = text
    return answers


def visual_input(benchmark: str, question: Any, media_root: Path, num_frames: int) -> np.ndarray:
    """(F, H, W, 3) uint8 frames of one question: sampled video frames or the set of views."""
    if benchmark == "vsibench":
        return frames_io.read_video_frames(media_root / question.video, num_frames)
    return frames_io.read_images([media_root / p for p in question.image_path])


def video_input(benchmark: str, question: Any, media_root: Path, num_frames: int) -> Any:
    """The `VideoClip` of one VSI-Bench question (lmms-eval's frame sampling, with timestamps)."""
    return frames_io.read_video_clip(media_root / question.video, num_frames)


def choose_protocol(
    model: Any, benchmark: str, num_frames: int | None, input_mode: str = "auto"
) -> tuple[dict[str, Any], Any]:
    """(settings recorded in the outputs, `VideoProtocol` or None for separate frames).

    Raises:
        ConfigError: unknown ``input_mode``, ``video`` for All-Angles or for a family without a
            video input, or ``num_frames`` < 1.
    """
    if input_mode not in INPUT_MODES:
        raise ConfigError(f"--input must be one of {', '.join(INPUT_MODES)}, got {input_mode!r}")
    if num_frames is not None and num_frames < 1:
        raise ConfigError(f"--num-frames must be >= 1, got {num_frames}")
    has_video = bool(getattr(model, "has_video_input", False))
    family = getattr(model, "family", type(model).__name__)
    if input_mode == "video" and (benchmark != "vsibench" or not has_video):
        why = (
            "All-Angles is a multi-view image benchmark"
            if benchmark != "vsibench"
            else (f"the {family} family has no video input")
        )
        raise ConfigError(f"--input video: {why}; use --input images")
    if benchmark == "vsibench" and has_video and input_mode != "images":
        protocol = model.video_protocol
        if num_frames is not None:
            protocol = dataclasses.replace(protocol, num_frames=num_frames)
        return {"benchmark": benchmark, "family": family, **model.video_settings(protocol)}, protocol
    settings: dict[str, Any] = {"benchmark": benchmark, "family": family, "input": "images"}
    if benchmark == "vsibench":
        settings["num_frames"] = num_frames or frames_io.DEFAULT_NUM_FRAMES
        settings["sampling"] = "round(linspace(0, n_frames - 1, N)), deduplicated"
        settings["note"] = "frames as separate images: not the published VSI-Bench protocol"
    settings["resize"] = "nearest size the adapter accepts unresized (whole token cells, aspect kept)"
    return settings, None


def record_settings(output_dir: Path, settings: dict[str, Any]) -> None:
    """Write ``generation.json``, or check that an earlier run into this folder used the same settings."""
    path = output_dir / GENERATION_FILE
    if path.exists():
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadInputError(f"{path}: not JSON ({exc}); move the output folder away") from None
        if before != json.loads(json.dumps(settings)):
            changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
            raise ConfigError(
                f"{path}: predictions in {output_dir} were generated with other settings "
                f"(differing: {', '.join(changed)}); use a new --output-dir or the same settings"
            )
        return
    write_json_atomic(path, settings)


def read_done(path: Path, id_key: str) -> set[str]:
    """Ids already answered in a predictions file; a torn last line (a killed run) is cut off."""
    if not path.exists():
        return set()
    done: set[str] = set()
    good_bytes = 0
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                break  # the last line of an interrupted write: dropped below
            try:
                done.add(key_of(json.loads(raw)[id_key]))
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
                raise BadInputError(
                    f"{path}, line {line_no}: not a predictions line; move the file away"
                ) from None
            good_bytes += len(raw)
    if good_bytes != path.stat().st_size:
        with path.open("r+b") as f:
            f.truncate(good_bytes)
    return done


def generate_predictions(
    model: Generator,
    benchmark: str,
    questions: Sequence[Any],
    media_root: str | Path,
    predictions_path: str | Path,
    *,
    batch_size: int = 1,
    num_frames: int = frames_io.DEFAULT_NUM_FRAMES,
    max_new_tokens: int = MAX_NEW_TOKENS,
    progress: bool = True,
    load_visual: Callable[[str, Any, Path, int], Any] | None = None,
    protocol: Any = None,
) -> int:
    """Answer every question not yet in ``predictions_path``; returns how many were generated now.

    With a ``protocol`` (`VideoProtocol`), videos go through the model's video input with its
    frame count; else ``num_frames`` separate frames (``load_visual`` reads one question's visual).
    """
    if load_visual is None:
        load_visual = video_input if protocol is not None else visual_input
    if protocol is not None:
        num_frames = protocol.num_frames
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    id_key = ID_KEYS[benchmark]
    path = Path(predictions_path)
    done = read_done(path, id_key)
    todo = [q for q in questions if q.key not in done]
    media_root = Path(media_root)
    bar = tqdm(
        total=len(questions),
        initial=len(questions) - len(todo),
        desc=f"{benchmark}",
        unit="q",
        disable=not progress,
    )
    with path.open("a", encoding="utf-8") as out:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            visuals = [load_visual(benchmark, q, media_root, num_frames) for q in batch]
            prompts = [q.prompt() for q in batch]
            answers = generate_answers(model, visuals, prompts, max_new_tokens, protocol)
            for q, answer in zip(batch, answers):
                qid = q.id if benchmark == "vsibench" else q.index
                out.write(json.dumps({id_key: qid, "prediction": answer}, ensure_ascii=False) + "\n")
            out.flush()
            os.fsync(out.fileno())
            bar.update(len(batch))
    bar.close()
    return len(todo)


def run(
    model: Generator,
    benchmark: str,
    questions_path: str | Path,
    media_root: str | Path,
    output_dir: str | Path,
    *,
    batch_size: int = 1,
    num_frames: int | None = None,
    limit: int | None = None,
    progress: bool = True,
    input_mode: str = "auto",
) -> dict[str, Any]:
    """Generate (resumably) then score.

    Writes OUT/generation.json (see `choose_protocol`), OUT/predictions.jsonl and the
    `scoring.write_outputs` files; ``results.json`` gets the settings under ``generation``.
    ``num_frames`` None: the published protocol's count (video input) or 32 separate frames.
    """
    settings, protocol = choose_protocol(model, benchmark, num_frames, input_mode)
    questions = scoring.load_questions(benchmark, questions_path)
    if limit is not None:
        questions = questions[:limit]
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    record_settings(out, settings)
    predictions = out / PREDICTIONS_FILE
    generate_predictions(
        model,
        benchmark,
        questions,
        media_root,
        predictions,
        batch_size=batch_size,
        num_frames=settings.get("num_frames") or frames_io.DEFAULT_NUM_FRAMES,
        progress=progress,
        protocol=protocol,
    )
    scored = scoring.score_file(benchmark, questions, predictions)
    return scoring.write_outputs(scored, benchmark, "official", out, {"generation": settings})
