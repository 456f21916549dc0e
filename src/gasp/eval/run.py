"""Generate a benchmark's predictions with a VLM adapter, resumably, then score them.

Predictions are appended to ``OUT/predictions.jsonl`` as each batch finishes (flushed and fsynced),
so an interrupted run continues where it stopped: questions already in the file are skipped.
"""

from __future__ import annotations

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
from gasp.eval.common import ID_KEYS, key_of

MAX_NEW_TOKENS = 16
PREDICTIONS_FILE = "predictions.jsonl"


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
    model: Generator, visuals: list[np.ndarray], prompts: list[str], max_new_tokens: int = MAX_NEW_TOKENS
) -> list[str]:
    """Greedy answers, batching together samples whose frames have the same shape (adapters need it)."""
    if hasattr(model, "image_size_for_grid"):
        visuals = [fit_frames(model, v) for v in visuals]
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, v in enumerate(visuals):
        groups.setdefault(tuple(v.shape), []).append(i)
    answers: list[str] = [""] * len(prompts)
    for members in groups.values():
        out = model.generate([visuals[i] for i in members], [prompts[i] for i in members], max_new_tokens)
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
    load_visual: Callable[[str, Any, Path, int], np.ndarray] = visual_input,
) -> int:
    """Answer every question not yet in ``predictions_path``; returns how many were generated now."""
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
            answers = generate_answers(model, visuals, [q.prompt() for q in batch], max_new_tokens)
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
    num_frames: int = frames_io.DEFAULT_NUM_FRAMES,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate (resumably) then score; writes OUT/predictions.jsonl and the `scoring.write_outputs` files."""
    questions = scoring.load_questions(benchmark, questions_path)
    if limit is not None:
        questions = questions[:limit]
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    predictions = out / PREDICTIONS_FILE
    generate_predictions(
        model,
        benchmark,
        questions,
        media_root,
        predictions,
        batch_size=batch_size,
        num_frames=num_frames,
        progress=progress,
    )
    scored = scoring.score_file(benchmark, questions, predictions)
    return scoring.write_outputs(scored, benchmark, "official", out)
