"""SmolVLM / Idefics3 adapters (SigLIP + pixel shuffle + Llama-style LLM).

How frames map to tokens: image splitting is disabled (``do_image_splitting=False``), so each frame
is one square tile at the vision tower's ``image_size`` (no global image plus crops). The ViT cuts
it into ``patch_size`` squares; the connector's pixel shuffle folds every ``scale_factor`` x
``scale_factor`` block of patches into one LLM token (raster order over the shuffled grid), so a
token covers a ``patch_size * scale_factor`` pixel square. In the text, each frame is
``<fake_token_around_image><global-img>`` + gh*gw ``<image>`` + ``<fake_token_around_image>``; the
``<image>`` run is the frame's grid in raster order. The processor is called with
``size = max_image_size = image_size`` so frames of exactly that size are never resampled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import (
    AutoTokenizer,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
    SmolVLMImageProcessorPil,
    SmolVLMProcessor,
)

from gasp.models.adapter_types import LLMSize
from gasp.models.processors import make_processor, read_chat_template
from gasp.models.registry import register
from gasp.models.square_frame import SquareFrameAdapter
from gasp.models.tokenizer import build_tokenizer

SMOLVLM_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<end_of_utterance>",
    "<fake_token_around_image>",
    "<global-img>",
    "<image>",
    "<video>",
]


@register
class SmolVLMAdapter(SquareFrameAdapter):
    """SmolVLM (``SmolVLMForConditionalGeneration``), one tile per frame."""

    family = "smolvlm"
    model_types = ("smolvlm",)
    model_class = SmolVLMForConditionalGeneration
    config_class: type = SmolVLMConfig
    processor_class: type = SmolVLMProcessor
    image_processor_class: type = SmolVLMImageProcessorPil
    nested_images = True

    @property
    def end_of_turn(self) -> str:
        return "<end_of_utterance>"

    @property
    def frame_side(self) -> int:
        return int(self.model.config.vision_config.image_size)

    @property
    def cell_size(self) -> int:
        return int(self.model.config.vision_config.patch_size) * int(self.model.config.scale_factor)

    def processor_call_kwargs(self) -> dict[str, Any]:
        side = self.frame_side
        return {
            "do_image_splitting": False,
            "size": {"longest_edge": side},
            "max_image_size": {"longest_edge": side},
        }

    @classmethod
    def _make_processor(
        cls, image_processor: Any, tokenizer: Any, image_seq_len: int, chat_template: Any
    ) -> Any:
        parts = {"image_processor": image_processor, "tokenizer": tokenizer}
        if "video_processor" in cls.processor_class.get_attributes():
            parts["video_processor"] = None  # needs torchvision; frames are images
        return make_processor(
            cls.processor_class, **parts, image_seq_len=image_seq_len, chat_template=chat_template
        )

    @classmethod
    def load_processor_parts(cls, path: str | Path) -> Any:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(path))
        vision = config.vision_config
        return cls._make_processor(
            cls.image_processor_class.from_pretrained(str(path)),
            AutoTokenizer.from_pretrained(str(path)),
            (vision.image_size // vision.patch_size) ** 2 // config.scale_factor**2,
            read_chat_template(path),
        )

    default_patch_size = 4

    @classmethod
    def _family_config(cls, llm: LLMSize, vision: dict[str, Any], scale_factor: int = 2) -> tuple[Any, Any]:
        """``scale_factor``: pixel-shuffle factor (cell = patch_size * scale_factor px)."""
        from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE

        side = vision["image_size"]
        tokenizer = build_tokenizer(
            SMOLVLM_SPECIAL_TOKENS, eos_token="<end_of_utterance>", pad_token="<|endoftext|>"
        )
        image_processor = cls.image_processor_class(
            size={"longest_edge": side}, max_image_size={"longest_edge": side}, do_image_splitting=False
        )
        seq = (side // vision["patch_size"]) ** 2 // scale_factor**2
        processor = cls._make_processor(image_processor, tokenizer, seq, DEFAULT_CHAT_TEMPLATE)
        text = llm.text_config(
            tokenizer, model_type="llama", max_position_embeddings=8192, eos_token_id=tokenizer.eos_token_id
        )
        config = cls.config_class(
            vision_config=vision,
            text_config=text,
            image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
            scale_factor=scale_factor,
            pad_token_id=tokenizer.pad_token_id,
        )
        return config, processor


@register
class Idefics3Adapter(SmolVLMAdapter):
    """Idefics3 (``Idefics3ForConditionalGeneration``): SmolVLM's parent, same token layout."""

    family = "idefics3"
    model_types = ("idefics3",)
    model_class = Idefics3ForConditionalGeneration
    config_class = Idefics3Config
    processor_class = Idefics3Processor
    image_processor_class = Idefics3ImageProcessorPil
