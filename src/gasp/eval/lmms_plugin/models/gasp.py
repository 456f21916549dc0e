"""lmms-eval model ``gasp``: any gasp VLM adapter (checkpoint folder or preset), greedy decoding.

``lmms-eval --model gasp --model_args pretrained=PATH_OR_PRESET[,num_frames=N][,input=auto]
--tasks vsibench``.
Videos go through the model's video input with its published protocol (`gasp.models.video`) when
the family has one (``input=auto``/``video``), as in ``gasp eval run``; else, or with
``input=images``, N evenly spaced frames as separate images (`gasp.eval.frames`). Image sets
(All-Angles) are always stacked views.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from tqdm import tqdm

from gasp.eval.frames import DEFAULT_NUM_FRAMES, read_images, read_video_clip, read_video_frames
from gasp.eval.run import MAX_NEW_TOKENS, choose_protocol, generate_answers, load_model

_VIDEO_SUFFIXES = {".mp4", ".mkv", ".avi", ".mov", ".webm"}


class GaspLMM(lmms):
    """lmms-eval wrapper of a `gasp.models` adapter (generation only)."""

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        num_frames: int | str | None = None,
        batch_size: int | str = 1,
        device: str | None = None,
        dtype: str | None = None,
        adapter: Any = None,
        input: str = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.adapter = adapter if adapter is not None else load_model(str(pretrained), device, dtype)
        frames = None if num_frames in (None, "", "None") else int(num_frames)
        self.num_frames = frames or DEFAULT_NUM_FRAMES
        # Videos: the model's video input with the published protocol, as `gasp eval run` does.
        self.generation, self.protocol = choose_protocol(self.adapter, "vsibench", frames, input)
        # lmms-eval may pass "auto": the adapters have no automatic batch sizing, so use 1.
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 1

    def visual_frames(self, visuals: list[Any]) -> Any:
        """A doc's visuals: a `VideoClip` for a video path (video input), else (F, H, W, 3) uint8
        from a video path (separate frames), image paths or PIL images."""
        if (
            len(visuals) == 1
            and isinstance(visuals[0], (str, Path))
            and Path(visuals[0]).suffix in _VIDEO_SUFFIXES
        ):
            if self.protocol is not None:
                return read_video_clip(visuals[0], self.protocol.num_frames)
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
            prompts, visuals = [], []
            max_new_tokens = MAX_NEW_TOKENS
            for request in chunk:
                context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
                prompts.append(context)
                visuals.append(self.visual_frames(doc_to_visual(self.task_dict[task][split][doc_id])))
                max_new_tokens = int(gen_kwargs.get("max_new_tokens", max_new_tokens))
            out = [""] * len(chunk)
            is_clip = [not isinstance(v, np.ndarray) for v in visuals]
            for kind in (True, False):
                members = [i for i, c in enumerate(is_clip) if c == kind]
                if members:
                    texts = generate_answers(
                        self.adapter,
                        [visuals[i] for i in members],
                        [prompts[i] for i in members],
                        max_new_tokens,
                        self.protocol if kind else None,
                    )
                    for i, text in zip(members, texts):
                        out[i] = text
            answers.extend(out)
        return answers

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError("the gasp lmms-eval model only supports generation tasks")

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("the gasp lmms-eval model does not support multi-round generation")
