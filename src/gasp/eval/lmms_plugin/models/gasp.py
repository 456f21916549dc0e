"""lmms-eval model ``gasp``: any gasp VLM adapter (checkpoint folder or preset), greedy decoding.

``lmms-eval --model gasp --model_args pretrained=PATH_OR_PRESET,num_frames=32 --tasks vsibench``.
Videos are sampled with `gasp.eval.frames` (N evenly spaced frames), image sets are stacked views.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from tqdm import tqdm

from gasp.eval.frames import DEFAULT_NUM_FRAMES, read_images, read_video_frames
from gasp.eval.run import MAX_NEW_TOKENS, generate_answers, load_model

_VIDEO_SUFFIXES = {".mp4", ".mkv", ".avi", ".mov", ".webm"}


class GaspLMM(lmms):
    """lmms-eval wrapper of a `gasp.models` adapter (generation only)."""

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        num_frames: int = DEFAULT_NUM_FRAMES,
        batch_size: int | str = 1,
        device: str | None = None,
        dtype: str | None = None,
        adapter: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.adapter = adapter if adapter is not None else load_model(str(pretrained), device, dtype)
        self.num_frames = int(num_frames)
        # lmms-eval may pass "auto": the adapters have no automatic batch sizing, so use 1.
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 1

    def visual_frames(self, visuals: list[Any]) -> np.ndarray:
        """(F, H, W, 3) uint8 from a doc's visuals: video paths, image paths or PIL images."""
        if (
            len(visuals) == 1
            and isinstance(visuals[0], (str, Path))
            and Path(visuals[0]).suffix in _VIDEO_SUFFIXES
        ):
            return read_video_frames(visuals[0], self.num_frames)
        if all(isinstance(v, (str, Path)) for v in visuals):
            return read_images(list(visuals))
        views = [np.asarray(v.convert("RGB"), dtype=np.uint8) for v in visuals]
        if len({v.shape for v in views}) > 1:
            size = visuals[0].size
            views = [np.asarray(v.convert("RGB").resize(size), dtype=np.uint8) for v in visuals]
        return np.stack(views)

    def generate_until(self, requests: list[Instance]) -> list[str]:
        answers: list[str] = []
        for start in tqdm(range(0, len(requests), self.batch_size), disable=self.rank != 0, desc="gasp"):
            chunk = requests[start : start + self.batch_size]
            prompts, frames = [], []
            max_new_tokens = MAX_NEW_TOKENS
            for request in chunk:
                context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
                prompts.append(context)
                frames.append(self.visual_frames(doc_to_visual(self.task_dict[task][split][doc_id])))
                max_new_tokens = int(gen_kwargs.get("max_new_tokens", max_new_tokens))
            answers.extend(generate_answers(self.adapter, frames, prompts, max_new_tokens))
        return answers

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError("the gasp lmms-eval model only supports generation tasks")

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("the gasp lmms-eval model does not support multi-round generation")
