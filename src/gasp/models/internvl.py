"""InternVL adapter (InternViT + pixel shuffle + Qwen2 LLM, ``InternVLForConditionalGeneration``).

How frames map to tokens: dynamic tiling is disabled (``crop_to_patches=False``), so each frame is
one square tile at the vision tower's ``image_size`` (no thumbnail plus crops). The ViT cuts it into
``patch_size`` squares (its CLS token is dropped); pixel shuffle with ``downsample_ratio`` 0.5
folds every 2x2 block of patches into one LLM token, in raster order over the shuffled grid, so a
token covers a ``2 * patch_size`` pixel square. In the text each frame is ``<img>`` + gh*gw
``<IMG_CONTEXT>`` + ``</img>``; the context run is the frame's grid in raster order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import (
    AutoTokenizer,
    GotOcr2ImageProcessorPil,
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLProcessor,
)

from gasp.models.adapter_types import LLMSize
from gasp.models.processors import make_processor, read_chat_template
from gasp.models.registry import register
from gasp.models.square_frame import SquareFrameAdapter
from gasp.models.tokenizer import build_tokenizer, chatml_template

INTERNVL_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<img>",
    "</img>",
    "<IMG_CONTEXT>",
    "<video>",
]
INTERNVL_EXTRA_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}
INTERNVL_CHAT_TEMPLATE = chatml_template("<IMG_CONTEXT>\n", "<video>\n")
"""InternVL's chat format (ChatML; one ``<IMG_CONTEXT>`` placeholder line per image)."""


def _side(value: int | list[int] | tuple[int, ...]) -> int:
    """InternVL stores image/patch sizes as (h, w); frames are square."""
    if isinstance(value, (list, tuple)):
        if value[0] != value[1]:
            raise ValueError(f"non-square InternVL size {value} is not supported")
        return int(value[0])
    return int(value)


@register
class InternVLAdapter(SquareFrameAdapter):
    """InternVL (2.5 / 3 in transformers' native format), one tile per frame."""

    family = "internvl"
    model_types = ("internvl",)
    model_class = InternVLForConditionalGeneration

    @property
    def end_of_turn(self) -> str:
        return "<|im_end|>"

    @property
    def frame_side(self) -> int:
        return _side(self.model.config.vision_config.image_size)

    @property
    def cell_size(self) -> int:
        ratio = float(self.model.config.downsample_ratio)
        return round(_side(self.model.config.vision_config.patch_size) / ratio)

    def processor_call_kwargs(self) -> dict[str, Any]:
        side = self.frame_side
        return {"crop_to_patches": False, "size": {"height": side, "width": side}}

    @classmethod
    def load_processor_parts(cls, path: str | Path) -> Any:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(path))
        return make_processor(
            InternVLProcessor,
            image_processor=GotOcr2ImageProcessorPil.from_pretrained(str(path)),
            tokenizer=AutoTokenizer.from_pretrained(str(path)),
            video_processor=None,
            image_seq_length=config.image_seq_length,
            chat_template=read_chat_template(path),
        )

    default_patch_size = 4

    @classmethod
    def _family_config(cls, llm: LLMSize, vision: dict[str, Any]) -> tuple[Any, Any]:
        side, patch = vision["image_size"], vision["patch_size"]
        tokenizer = build_tokenizer(
            INTERNVL_SPECIAL_TOKENS,
            eos_token="<|im_end|>",
            pad_token="<|endoftext|>",
            extra=INTERNVL_EXTRA_TOKENS,
        )
        seq = (side // patch) ** 2 // 4
        processor = make_processor(
            InternVLProcessor,
            image_processor=GotOcr2ImageProcessorPil(
                size={"height": side, "width": side}, crop_to_patches=False
            ),
            tokenizer=tokenizer,
            video_processor=None,
            image_seq_length=seq,
            chat_template=INTERNVL_CHAT_TEMPLATE,
        )
        vision = {**vision, "image_size": [side, side], "patch_size": [patch, patch]}
        text = llm.text_config(
            tokenizer, model_type="qwen2", max_position_embeddings=32768, eos_token_id=tokenizer.eos_token_id
        )
        config = InternVLConfig(
            vision_config=vision,
            text_config=text,
            image_token_id=tokenizer.context_image_token_id,
            image_seq_length=seq,
            downsample_ratio=0.5,
        )
        return config, processor
