"""LLaVA adapters: LLaVA-OneVision and LLaVA-NeXT-Video (the paper's second model family).

Both use a ViT (SigLIP / CLIP) whose patches become LLM tokens one-to-one through an MLP projector;
one token covers one ``patch_size`` pixel square of a frame resized to the tower's ``image_size``.
Frames must already be square at exactly that size (``image_size_for_grid``); nothing is resized.

How frames map to tokens in multi-image mode:

* LLaVA-OneVision, F >= 2 images in one sample: each image is one tile (no anyres splitting for
  multi-image samples), giving gh*gw patch tokens in raster order followed by ONE ``image_newline``
  token at the end of the frame. The newline is skipped: the grid is the first gh*gw tokens of the
  frame's placeholder run. (A single image, F = 1, takes the anyres path; with the one-tile
  pinpoint of the tiny preset its base tokens come first and are the ones reported; the high-res
  copy of the same pixels follows, with a newline after every row.)
* LLaVA-NeXT-Video, images: every image takes LLaVA-NeXT's anyres path. With
  ``image_grid_pinpoints = [[S, S]]`` (one tile equal to the image) a frame produces the base
  image's gh*gw tokens, then the high-res tile's gh rows of (gw tokens + 1 newline). The reported
  grid is the high-res tile with the newline of each row skipped: token (r, c) is at offset
  ``gh*gw + r*(gw+1) + c`` of the frame's run. The base tokens see the same pixels (a duplicate).
  The CLS token is dropped (``vision_feature_select_strategy="default"``).
* Video-mode pooling (LLaVA-NeXT-Video's 2x2 average pooling of ``<video>`` frames, OneVision's
  bilinear 2x downsampling) is not used for training or probing: GASP supervises full-resolution
  token grids per frame. Benchmark generation uses it (``build_video_inputs`` / ``generate_video``,
  `gasp.models.video`, with torchvision-free stand-ins for the video processors).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoTokenizer,
    LlavaNextImageProcessorPil,
    LlavaNextVideoConfig,
    LlavaNextVideoForConditionalGeneration,
    LlavaNextVideoProcessor,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessorPil,
    LlavaOnevisionProcessor,
)

from gasp.errors import BadInputError
from gasp.models.adapter_types import LLMSize
from gasp.models.processors import make_processor, read_chat_template
from gasp.models.registry import register
from gasp.models.square_frame import SquareFrameAdapter
from gasp.models.tokenizer import build_tokenizer, chatml_template
from gasp.models.video import LlavaVideoProcessor, VideoInputMixin, VideoProtocol

ONEVISION_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]
ONEVISION_CHAT_TEMPLATE = chatml_template("<image>\n", "<video>\n")
"""LLaVA-OneVision's chat format (ChatML, ``<image>`` lines before the text)."""

VICUNA_SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<image>", "<video>"]
VICUNA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% elif message['role'] == 'assistant' %}ASSISTANT: "
    "{% else %}{{ message['role'] | upper }}: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<image>\n"
    "{% elif content['type'] == 'video' %}<video>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}</s>{% else %} {% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
"""LLaVA-NeXT-Video-7B's Vicuna-style format ("USER: <image>\\n... ASSISTANT:")."""


class LlavaAdapter(VideoInputMixin, SquareFrameAdapter):
    """Shared LLaVA logic: square frames at the vision tower's size, one token per ViT patch."""

    @property
    def frame_side(self) -> int:
        return int(self.model.config.vision_config.image_size)

    @property
    def cell_size(self) -> int:
        return int(self.model.config.vision_config.patch_size)

    # ----------------------------------------------------------------- video input (generation)
    def video_processor_for(self, protocol: VideoProtocol) -> LlavaVideoProcessor:
        """Frames at the tower's size, normalised like the family's images (the released configs)."""
        ip = self.processor.image_processor
        return LlavaVideoProcessor(**self._video_geometry(), image_mean=ip.image_mean, image_std=ip.image_std)

    def _video_geometry(self) -> dict[str, Any]:
        raise NotImplementedError

    def video_settings(self, protocol: VideoProtocol) -> dict[str, Any]:
        side = self.frame_side
        settings = {"input": "video", **protocol.describe(), "frame_size": [side, side]}
        return {**settings, "pooling": self.video_pooling}

    video_pooling: str = ""
    """How the model pools a video frame's tokens (recorded with the run's settings)."""


@register
class LlavaOnevisionAdapter(LlavaAdapter):
    """LLaVA-OneVision (SigLIP + Qwen2 LLM); multi-image samples use one tile per frame."""

    family = "llava-onevision"
    model_types = ("llava_onevision",)
    model_class = LlavaOnevisionForConditionalGeneration
    vision_model_type = "siglip_vision_model"

    @property
    def end_of_turn(self) -> str:
        return "<|im_end|>"

    # The processor counts images per sample (batch_num_images) and uses the one-tile
    # multi-image path when a sample has more than one image.
    nested_images = True
    video_pooling = "bilinear 2x downsampling of each frame's token grid (+1 image_newline per video)"

    def _video_geometry(self) -> dict[str, Any]:
        side = self.frame_side
        return {"resize": (side, side), "crop": None}

    def _frame_token_order(self, num_tokens: int, grid: tuple[int, int]) -> torch.Tensor:
        gh, gw = grid
        if num_tokens < gh * gw + 1:
            raise BadInputError(
                f"{self.family}: a frame produced {num_tokens} visual tokens, expected at least "
                f"{gh}x{gw}+1 (grid + image_newline)"
            )
        return torch.arange(gh * gw).view(gh, gw)

    @classmethod
    def load_processor_parts(cls, path: str | Path) -> Any:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(path))
        side, patch = config.vision_config.image_size, config.vision_config.patch_size
        return make_processor(
            LlavaOnevisionProcessor,
            image_processor=LlavaOnevisionImageProcessorPil.from_pretrained(str(path)),
            tokenizer=AutoTokenizer.from_pretrained(str(path)),
            video_processor=None,
            num_image_tokens=(side // patch) ** 2,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
            chat_template=read_chat_template(path),
        )

    @classmethod
    def _family_config(cls, llm: LLMSize, vision: dict[str, Any]) -> tuple[Any, Any]:
        side = vision["image_size"]
        tokenizer = build_tokenizer(
            ONEVISION_SPECIAL_TOKENS, eos_token="<|im_end|>", pad_token="<|endoftext|>"
        )
        image_processor = LlavaOnevisionImageProcessorPil(
            size={"height": side, "width": side},
            image_grid_pinpoints=[[side, side]],
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
        )
        processor = make_processor(
            LlavaOnevisionProcessor,
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            num_image_tokens=(side // vision["patch_size"]) ** 2,
            vision_feature_select_strategy="full",
            chat_template=ONEVISION_CHAT_TEMPLATE,
        )
        text = llm.text_config(
            tokenizer, model_type="qwen2", max_position_embeddings=32768, eos_token_id=tokenizer.eos_token_id
        )
        config = LlavaOnevisionConfig(
            vision_config=vision,
            text_config=text,
            image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
            video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
            vision_feature_select_strategy="full",
            vision_feature_layer=-1,
            image_grid_pinpoints=[[side, side]],
        )
        return config, processor


@register
class LlavaNextVideoAdapter(LlavaAdapter):
    """LLaVA-NeXT-Video (CLIP + Llama LLM); frames are images on the one-tile anyres path."""

    family = "llava-next-video"
    model_types = ("llava_next_video",)
    model_class = LlavaNextVideoForConditionalGeneration
    vision_model_type = "clip_vision_model"
    video_pooling = "2x2 average pooling of each frame's token grid"

    def _video_geometry(self) -> dict[str, Any]:
        side = self.frame_side
        return {"resize": None, "shortest_edge": side, "crop": (side, side)}

    def _frame_token_order(self, num_tokens: int, grid: tuple[int, int]) -> torch.Tensor:
        gh, gw = grid
        expected = gh * gw + gh * (gw + 1)
        if num_tokens != expected:
            raise BadInputError(
                f"{self.family}: a frame produced {num_tokens} visual tokens, expected {expected} "
                f"(base {gh}x{gw} + one high-res tile of {gh} rows x ({gw}+1 newline)); use "
                "image_grid_pinpoints=[[S, S]] with S the vision tower's image_size"
            )
        rows = torch.arange(gh).view(gh, 1)
        cols = torch.arange(gw).view(1, gw)
        return gh * gw + rows * (gw + 1) + cols

    @classmethod
    def load_processor_parts(cls, path: str | Path) -> Any:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(path))
        return make_processor(
            LlavaNextVideoProcessor,
            video_processor=None,
            image_processor=LlavaNextImageProcessorPil.from_pretrained(str(path)),
            tokenizer=AutoTokenizer.from_pretrained(str(path)),
            patch_size=config.vision_config.patch_size,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
            num_additional_image_tokens=1,
            chat_template=read_chat_template(path),
        )

    @classmethod
    def _family_config(cls, llm: LLMSize, vision: dict[str, Any]) -> tuple[Any, Any]:
        side, patch = vision["image_size"], vision["patch_size"]
        tokenizer = build_tokenizer(
            VICUNA_SPECIAL_TOKENS, bos_token="<s>", eos_token="</s>", pad_token="<unk>", unk_token="<unk>"
        )
        image_processor = LlavaNextImageProcessorPil(
            size={"shortest_edge": side},
            crop_size={"height": side, "width": side},
            image_grid_pinpoints=[[side, side]],
        )
        processor = make_processor(
            LlavaNextVideoProcessor,
            video_processor=None,
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=patch,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
            chat_template=VICUNA_CHAT_TEMPLATE,
        )
        text = llm.text_config(
            tokenizer,
            model_type="llama",
            max_position_embeddings=4096,
            rms_norm_eps=1e-5,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        grid = side // patch
        config = LlavaNextVideoConfig(
            vision_config=vision,
            text_config=text,
            image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
            video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
            vision_feature_select_strategy="default",
            vision_feature_layer=-2,
            image_grid_pinpoints=[[side, side]],
            image_seq_length=grid * grid,
            video_seq_length=(grid // 2) ** 2,
        )
        return config, processor
