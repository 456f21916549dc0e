"""Benchmark videos through a model's own video input (generation only).

Training and probing put frames in as separate images (one token grid per frame). Published
VSI-Bench numbers were generated through each model's video input instead, with the lmms-eval
settings in ``PUBLISHED``; ``VideoInputMixin`` gives the Qwen-VL and LLaVA video families that path:

* frames are sampled and resized with the arithmetic of the family's video processor (Qwen's
  ``smart_resize`` with factor ``patch_size * merge_size`` inside a per-frame pixel budget; LLaVA's
  fixed square), then go to the real HF processor as ONE video, which writes the video placeholder
  tokens, ``video_grid_thw`` and ``mm_token_type_ids``; the model merges ``temporal_patch_size`` (2)
  consecutive frames into one temporal patch (Qwen) or pools each frame's features (LLaVA).
* transformers' video processors need torchvision, which has no CPU build for this torch. When the
  processor has none, ``QwenVideoProcessor`` / ``LlavaVideoProcessor`` stand in for it: same
  outputs (pixel layout, grids, metadata), computed with PIL, numpy and torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature
from transformers.video_utils import VideoMetadata

from gasp.errors import BadInputError, ConfigError


@dataclass(frozen=True)
class VideoClip:
    """Frames sampled from one video, with where they came from (timestamps need it).

    Attributes:
        frames: (F, H, W, 3) uint8 RGB.
        indices: F positions of the frames in the source video.
        total_frames: number of frames in the source video.
        fps: the source video's frame rate (None: unknown).
    """

    frames: np.ndarray
    indices: tuple[int, ...]
    total_frames: int
    fps: float | None = None

    def metadata(self) -> VideoMetadata:
        height, width = self.frames.shape[1:3]
        return VideoMetadata(
            total_num_frames=self.total_frames,
            fps=self.fps,
            width=width,
            height=height,
            duration=self.total_frames / self.fps if self.fps else None,
            frames_indices=list(self.indices),
        )


@dataclass(frozen=True)
class VideoProtocol:
    """How a family's published VSI-Bench numbers fed a video to the model.

    Attributes:
        num_frames: frames sampled evenly over the whole video (lmms-eval ``max_num_frames`` /
            ``max_frames_num``).
        min_tokens, max_tokens: per-frame budget of the Qwen video processor in token cells
            (``min_pixels`` / ``max_pixels`` divided by the cell area); None for fixed-size towers.
        source: where the settings come from (repository, file, setting).
    """

    num_frames: int
    min_tokens: int | None = None
    max_tokens: int | None = None
    source: str = ""

    def describe(self, cell: int | None = None) -> dict[str, Any]:
        """The settings as recorded in a run's outputs (pixel budget for a ``cell``-px token cell)."""
        out: dict[str, Any] = asdict(self)
        if cell is not None and self.min_tokens is not None:
            out["min_pixels"] = self.min_tokens * cell * cell
            out["max_pixels"] = self.max_tokens * cell * cell
        return out


_LMMS = "lmms-eval 0.7.3 lmms_eval/models/simple/"
_QWEN_UTILS = "qwen-vl-utils vision_process.py fetch_video caps a video frame at VIDEO_MAX_PIXELS"
PUBLISHED: dict[str, VideoProtocol] = {
    "qwen2-vl": VideoProtocol(
        32, 4, 768, f"{_LMMS}qwen2_vl.py: max_num_frames=32, min_pixels=3136, max_pixels=602112 (28-px cells)"
    ),
    "qwen2.5-vl": VideoProtocol(
        32,
        256,
        768,
        f"{_LMMS}qwen2_5_vl.py: max_num_frames=32, min_pixels=256*28*28, max_pixels=1605632; "
        f"{_QWEN_UTILS} = 768*28*28",
    ),
    "qwen3-vl": VideoProtocol(
        32,
        196,
        768,
        f"{_LMMS}qwen3_vl.py: nframes=max_num_frames=32, min_pixels=256*28*28 (196 cells of 32 px), "
        f"max_pixels=1605632; {_QWEN_UTILS} = VIDEO_MAX_TOKEN_NUM 768 cells of 32 px",
    ),
    "llava-onevision": VideoProtocol(
        32,
        source="thinking-in-space evaluate_all_in_one.sh: llava_onevision max_frames_num=32 "
        "(lmms-eval simple/llava_onevision.py: mm_spatial_pool_mode=bilinear, stride 2)",
    ),
    "llava-next-video": VideoProtocol(
        32,
        source="thinking-in-space evaluate_all_in_one.sh: llava_vid max_frames_num=32 "
        "(lmms-eval simple/llava_vid.py: mm_spatial_pool_mode=average, stride 2)",
    ),
}
"""Published VSI-Bench protocol per video family (frames, per-frame budget, source)."""


def sample_indices(total: int, num_frames: int) -> list[int]:
    """lmms-eval's uniform sampling: ``linspace(0, total - 1, num_frames).astype(int)``, deduplicated."""
    if total <= 0:
        return []
    if num_frames <= 0:
        raise ConfigError(f"num_frames must be positive, got {num_frames}")
    return sorted({int(x) for x in np.linspace(0, total - 1, num_frames)})


# --------------------------------------------------------------------- Qwen arithmetic
def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL / Qwen2.5-VL frame size: sides multiples of ``factor``, H*W within the budget.

    Sides are rounded to the nearest multiple; over ``max_pixels`` both shrink by
    ``sqrt(H*W / max_pixels)`` and are floored; under ``min_pixels`` both grow and are ceiled.
    """
    if max(height, width) / min(height, width) > 200:
        raise BadInputError(f"frames of {height}x{width} px: aspect ratio over 200")
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def smart_resize_video(
    num_frames: int, height: int, width: int, factor: int, temporal: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """Qwen3-VL frame size: like ``smart_resize`` with the budget over the (rounded) frame count."""
    if num_frames < temporal:
        raise BadInputError(f"Qwen3-VL video: {num_frames} frames, at least {temporal} needed")
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    if max(height, width) / min(height, width) > 200:
        raise BadInputError(f"frames of {height}x{width} px: aspect ratio over 200")
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    t_bar = round(num_frames / temporal) * temporal
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt(num_frames * height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (num_frames * height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(F, H, W, 3) uint8 resized to ``size`` (H, W), bicubic (the video processors' resample)."""
    if tuple(frames.shape[1:3]) == tuple(size):
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize(size[::-1], Image.BICUBIC)) for f in frames])


def normalize(frames: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(F, H, W, 3) uint8 -> (F, 3, H, W) float32, ``(x / 255 - mean) / std``."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def patchify(video: torch.Tensor, patch: int, merge: int, temporal: int) -> tuple[torch.Tensor, list[int]]:
    """Qwen's flat patch layout of one (F, C, H, W) video.

    F is padded to a multiple of ``temporal`` by repeating the last frame; rows are temporal
    patches, then 2x2 merge blocks in raster order, then the patches of a block; each row holds
    (C, temporal, patch, patch) values. Returns (rows, [t, h, w]) with h, w in patches.
    """
    if pad := -video.shape[0] % temporal:
        video = torch.cat([video, video[-1:].expand(pad, -1, -1, -1)])
    frames, channels, height, width = video.shape
    t, h, w = frames // temporal, height // patch, width // patch
    x = video.reshape(t, temporal, channels, h // merge, merge, patch, w // merge, merge, patch)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(t * h * w, channels * temporal * patch * patch), [t, h, w]


@dataclass
class QwenVideoProcessor:
    """Torchvision-free stand-in for ``Qwen2VLVideoProcessor`` / ``Qwen3VLVideoProcessor``.

    Frames given are already the sampled ones (``do_sample_frames`` off). Returns
    ``pixel_values_videos`` (sum of t*h*w rows), ``video_grid_thw`` (V, 3) and, with
    ``return_metadata``, ``video_metadata`` (what the processors read for timestamps and
    ``second_per_grid_ts``).
    """

    patch_size: int
    merge_size: int
    temporal_patch_size: int
    min_pixels: int
    max_pixels: int
    image_mean: Sequence[float]
    image_std: Sequence[float]
    budget_over_frames: bool = False
    """Qwen3-VL: ``smart_resize_video`` with the per-frame budget times the frame count (the
    processor's ``cap_pixels_per_frame`` arithmetic), else ``smart_resize`` per frame."""
    model_input_names: ClassVar[list[str]] = ["pixel_values_videos", "video_grid_thw"]

    def target_size(self, num_frames: int, height: int, width: int) -> tuple[int, int]:
        """Frame size (H, W) the processor resizes ``num_frames`` frames of ``height`` x ``width`` to."""
        factor = self.patch_size * self.merge_size
        if self.budget_over_frames:
            lo, hi = self.min_pixels * num_frames, self.max_pixels * num_frames
            return smart_resize_video(num_frames, height, width, factor, self.temporal_patch_size, lo, hi)
        return smart_resize(height, width, factor, self.min_pixels, self.max_pixels)

    def __call__(
        self,
        videos: Sequence[np.ndarray],
        video_metadata: Sequence[VideoMetadata] | None = None,
        return_metadata: bool = False,
        return_tensors: str | None = None,
        **_: Any,
    ) -> BatchFeature:
        rows, grids = [], []
        for video in videos:
            video = np.asarray(video)
            size = self.target_size(*video.shape[:3])
            x = normalize(resize_frames(video, size), self.image_mean, self.image_std)
            patches, grid = patchify(x, self.patch_size, self.merge_size, self.temporal_patch_size)
            rows.append(patches)
            grids.append(grid)
        data: dict[str, Any] = {"pixel_values_videos": torch.cat(rows), "video_grid_thw": torch.tensor(grids)}
        if return_metadata:
            data["video_metadata"] = list(video_metadata or [])
        return BatchFeature(data)


@dataclass
class LlavaVideoProcessor:
    """Torchvision-free stand-in for ``LlavaOnevisionVideoProcessor`` / ``LlavaNextVideoVideoProcessor``.

    Every frame is resized to ``resize`` (H, W) (bicubic), center-cropped to ``crop`` (H, W) when
    given, scaled to [0, 1] and normalised; ``pixel_values_videos`` is (V, F, 3, H, W).
    """

    resize: tuple[int, int] | None
    crop: tuple[int, int] | None
    image_mean: Sequence[float]
    image_std: Sequence[float]
    shortest_edge: int | None = None
    """Resize the short side to this (aspect kept) instead of to ``resize``."""
    model_input_names: ClassVar[list[str]] = ["pixel_values_videos"]

    def frame_size(self, height: int, width: int) -> tuple[int, int]:
        if self.shortest_edge is None:
            return self.resize
        short = self.shortest_edge
        if height <= width:
            return short, int(short * width / height)
        return int(short * height / width), short

    def __call__(
        self, videos: Sequence[np.ndarray], return_tensors: str | None = None, **_: Any
    ) -> BatchFeature:
        out = []
        for video in videos:
            video = np.asarray(video)
            video = resize_frames(video, self.frame_size(*video.shape[1:3]))
            if self.crop is not None:
                video = center_crop(video, self.crop)
            out.append(normalize(video, self.image_mean, self.image_std))
        return BatchFeature({"pixel_values_videos": torch.stack(out)})


def center_crop(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Center crop of (F, H, W, 3) frames to (h, w) (top/left offsets floored, as transformers does)."""
    height, width = frames.shape[1:3]
    top, left = int((height - size[0]) / 2), int((width - size[1]) / 2)
    if top < 0 or left < 0:
        raise BadInputError(f"frames of {height}x{width} px are smaller than the crop {size[0]}x{size[1]}")
    return frames[:, top : top + size[0], left : left + size[1]]


@dataclass
class VideoBatch:
    """Model inputs for B videos (generation) plus the settings they were built with.

    Attributes:
        inputs: ``model.generate`` keyword arguments (left-padded ``input_ids``, ``attention_mask``,
            ``pixel_values_videos``, and for Qwen ``video_grid_thw``, ``mm_token_type_ids`` and
            Qwen2.5-VL's ``second_per_grid_ts``).
        frame_size: (H, W) of the frames given (before the video processor's resize).
        num_frames: frames per video given.
        settings: the adapter's ``video_settings`` (recorded by ``gasp eval run``).
    """

    inputs: dict[str, torch.Tensor]
    frame_size: tuple[int, int]
    num_frames: int
    settings: dict[str, Any] = field(default_factory=dict)


class VideoInputMixin:
    """The video input path (``build_video_inputs`` / ``generate_video``) of a `VLMAdapter` family.

    Subclasses give ``video_processor_for`` (the stock processor's video processor when it has one,
    else a torchvision-free stand-in) and ``video_settings``.
    """

    has_video_input: ClassVar[bool] = True

    @property
    def video_protocol(self) -> VideoProtocol:
        return PUBLISHED[self.family]  # type: ignore[attr-defined]

    def video_processor_for(self, protocol: VideoProtocol) -> Any:
        raise NotImplementedError

    def video_settings(self, protocol: VideoProtocol) -> dict[str, Any]:
        """What the run records: the protocol plus this model's pixel budget or frame size."""
        raise NotImplementedError

    def video_prompt_text(self, prompt: str) -> str:
        """The chat-formatted user turn with one video placeholder before the prompt."""
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}]
        template = getattr(self.processor, "chat_template", None)  # type: ignore[attr-defined]
        return self.tokenizer.apply_chat_template(  # type: ignore[attr-defined]
            messages, chat_template=template, add_generation_prompt=True, tokenize=False
        )

    def build_video_inputs(
        self, clips: Sequence[VideoClip], prompts: Sequence[str], protocol: VideoProtocol | None = None
    ) -> VideoBatch:
        """Left-padded model inputs for B videos, each through the family's video input.

        Raises:
            BadInputError: counts differ, or a clip is not (F, H, W, 3) uint8.
        """
        protocol = protocol or self.video_protocol
        if len(clips) != len(prompts) or not clips:
            raise BadInputError(f"build_video_inputs: {len(clips)} videos and {len(prompts)} prompts")
        for b, clip in enumerate(clips):
            f = clip.frames
            if f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8 or len(clip.indices) != len(f):
                raise BadInputError(
                    f"build_video_inputs: clip {b} must be (F, H, W, 3) uint8 with F indices, "
                    f"got {f.shape} {f.dtype} and {len(clip.indices)} indices"
                )
        video_processor = self.video_processor_for(protocol)
        saved = getattr(self.processor, "video_processor", None)  # type: ignore[attr-defined]
        self.processor.video_processor = video_processor  # type: ignore[attr-defined]
        try:
            processed = self.processor(  # type: ignore[attr-defined]
                text=[self.video_prompt_text(p) for p in prompts],
                videos=[c.frames for c in clips],
                videos_kwargs={"video_metadata": [c.metadata() for c in clips]},
                return_tensors="pt",
                padding=True,
                padding_side="left",
            )
        finally:
            self.processor.video_processor = saved  # type: ignore[attr-defined]
        inputs = {k: v for k, v in processed.items() if torch.is_tensor(v)}
        frames = clips[0].frames
        return VideoBatch(inputs, tuple(frames.shape[1:3]), len(frames), self.video_settings(protocol))

    @torch.no_grad()
    def generate_video(
        self,
        clips: Sequence[VideoClip],
        prompts: Sequence[str],
        max_new_tokens: int = 16,
        protocol: VideoProtocol | None = None,
    ) -> list[str]:
        """Greedy answers for B videos given through the model's video input."""
        batch = self.build_video_inputs(clips, prompts, protocol)
        return self.greedy_decode(batch.inputs, max_new_tokens)  # type: ignore[attr-defined]
