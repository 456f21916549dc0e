"""Qwen-VL adapters: Qwen2.5-VL (the paper's model), Qwen2-VL and Qwen3-VL.

How frames map to tokens (all three families, multi-image mode):

* The image processor cuts an (H, W) frame into ``patch_size`` squares, in 2x2 merge blocks, and
  repeats each still image ``temporal_patch_size`` (= 2) times to fill the temporal patch of the
  3D patch embedding. So each frame is its own temporal slice (``image_grid_thw = (1, H/p, W/p)``)
  and nothing is merged across frames. (Video mode would put two consecutive frames into one
  temporal patch and halve the token count; training and probing do not use it because GASP needs
  one token grid per frame to supervise correspondences between frames. Benchmark generation does:
  ``build_video_inputs`` / ``generate_video``, `gasp.models.video`.)
* The merger turns every 2x2 block of patches into one LLM token: one token covers a
  ``cell = patch_size * spatial_merge_size`` pixel square, and the frame's grid is
  ``(H / cell, W / cell)``. Qwen2.5-VL's window attention reorders patches inside the vision tower
  and restores the order after the merger, so tokens leave in raster order.
* In the text, each frame is ``<|vision_start|>`` + gh*gw ``<|image_pad|>`` + ``<|vision_end|>``;
  the pads are the frame's grid in raster order (row-major).

The processor never resizes silently: ``grid_for_image_size`` raises unless (H, W) are multiples of
the cell size and within the processor's min/max pixel budget.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import (
    AutoTokenizer,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    Qwen2VLProcessor,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
)

from gasp.errors import BadInputError, ConfigError
from gasp.models.adapter_types import LLMSize
from gasp.models.base import VLMAdapter, snap_multiple
from gasp.models.processors import make_processor, read_chat_template
from gasp.models.registry import register
from gasp.models.tokenizer import build_tokenizer, chatml_template
from gasp.models.video import QwenVideoProcessor, VideoInputMixin, VideoProtocol

QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

QWEN_CHAT_TEMPLATE = chatml_template(
    "<|vision_start|><|image_pad|><|vision_end|>", "<|vision_start|><|video_pad|><|vision_end|>"
)
"""The Qwen chat format (same markers as the released Qwen2/2.5/3-VL templates)."""


class QwenAdapter(VideoInputMixin, VLMAdapter):
    """Shared logic of the Qwen-VL families (processor grid, tokens in raster order per frame)."""

    processor_class: type = Qwen2_5_VLProcessor
    video_budget_over_frames: bool = False
    """Qwen3-VL's video processor spreads its pixel budget over all frames."""

    @property
    def end_of_turn(self) -> str:
        return "<|im_end|>"

    @property
    def cell_size(self) -> int:
        """Pixels per LLM token side: ``patch_size * merge_size``."""
        ip = self.processor.image_processor
        return int(ip.patch_size) * int(ip.merge_size)

    def _pixel_budget(self) -> tuple[int, int]:
        size = self.processor.image_processor.size
        return int(size["shortest_edge"]), int(size["longest_edge"])

    def image_size_for_grid(self, grid: tuple[int, int]) -> tuple[int, int]:
        gh, gw = (int(g) for g in grid)
        cell = self.cell_size
        height, width = gh * cell, gw * cell
        lo, hi = self._pixel_budget()
        if gh < 1 or gw < 1 or not lo <= height * width <= hi:
            raise ConfigError(
                f"{self.family}: token grid {gh}x{gw} needs {height}x{width} px, outside the image "
                f"processor's pixel budget [{lo}, {hi}] (image_processor.size shortest_edge/longest_edge)"
            )
        return height, width

    def grid_for_image_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        height, width = (int(s) for s in image_size)
        cell = self.cell_size
        lo, hi = self._pixel_budget()
        if height % cell or width % cell or not lo <= height * width <= hi:
            suggestion = (snap_multiple(height, cell), snap_multiple(width, cell))
            raise BadInputError(
                f"{self.family}: frames of {height}x{width} px would be resized by the processor "
                f"(sides must be multiples of the {cell}-px token cell and H*W within [{lo}, {hi}]); "
                f"resize frames to e.g. {suggestion[0]}x{suggestion[1]} (see image_size_for_grid)"
            )
        return height // cell, width // cell

    # ----------------------------------------------------------------- video input (generation)
    def video_processor_for(self, protocol: VideoProtocol) -> QwenVideoProcessor:
        """The video processor's arithmetic with the protocol's per-frame budget (in token cells)."""
        ip = self.processor.image_processor
        area = self.cell_size**2
        return QwenVideoProcessor(
            patch_size=int(ip.patch_size),
            merge_size=int(ip.merge_size),
            temporal_patch_size=int(ip.temporal_patch_size),
            min_pixels=protocol.min_tokens * area,
            max_pixels=protocol.max_tokens * area,
            image_mean=list(ip.image_mean),
            image_std=list(ip.image_std),
            budget_over_frames=self.video_budget_over_frames,
        )

    def video_settings(self, protocol: VideoProtocol) -> dict[str, Any]:
        ip = self.processor.image_processor
        return {
            "input": "video",
            **protocol.describe(self.cell_size),
            "temporal_patch_size": int(ip.temporal_patch_size),
        }

    @classmethod
    def load_processor_parts(cls, path: str | Path) -> Any:
        return make_processor(
            cls.processor_class,
            image_processor=Qwen2VLImageProcessorPil.from_pretrained(str(path)),
            tokenizer=AutoTokenizer.from_pretrained(str(path)),
            video_processor=None,
            chat_template=read_chat_template(path),
        )

    @classmethod
    def build_processor(
        cls, *, patch_size: int, merge_size: int = 2, image_mean=None, image_std=None, max_tokens: int = 4096
    ) -> Any:
        """Offline processor: tiny BPE tokenizer + the real PIL image processor + chat template.

        ``min_pixels`` is one token cell and ``max_pixels`` is ``max_tokens`` cells, so any grid of
        1..max_tokens tokens passes unresized.
        """
        tokenizer = build_tokenizer(QWEN_SPECIAL_TOKENS, eos_token="<|im_end|>", pad_token="<|endoftext|>")
        cell = patch_size * merge_size
        extra = {"image_mean": image_mean, "image_std": image_std}
        image_processor = Qwen2VLImageProcessorPil(
            patch_size=patch_size,
            merge_size=merge_size,
            temporal_patch_size=2,
            min_pixels=cell * cell,
            max_pixels=cell * cell * max_tokens,
            **{k: v for k, v in extra.items() if v is not None},
        )
        return make_processor(
            cls.processor_class,
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=QWEN_CHAT_TEMPLATE,
        )

    @staticmethod
    def token_ids(processor: Any) -> dict[str, int]:
        """Config fields for the special-token ids of ``processor``'s tokenizer."""
        tok = processor.tokenizer
        return {
            "image_token_id": tok.convert_tokens_to_ids("<|image_pad|>"),
            "video_token_id": tok.convert_tokens_to_ids("<|video_pad|>"),
            "vision_start_token_id": tok.convert_tokens_to_ids("<|vision_start|>"),
            "vision_end_token_id": tok.convert_tokens_to_ids("<|vision_end|>"),
        }


def _mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 rotary frequencies into (time, height, width) like Qwen's 16/24/24 of 64."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def _text_config(llm: LLMSize, processor: Any, **extra: Any) -> dict[str, Any]:
    """Qwen LLM config: M-RoPE split over (t, h, w) and the tokenizer's special-token ids."""
    rope = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": _mrope_section(llm.dim_per_head)}
    tok = processor.tokenizer
    return llm.text_config(
        tok, max_position_embeddings=32768, rope_parameters=rope, eos_token_id=tok.eos_token_id, **extra
    )


@register
class Qwen25VLAdapter(QwenAdapter):
    """Qwen2.5-VL (``Qwen2_5_VLForConditionalGeneration``): window-attention ViT + 2x2 merger."""

    family = "qwen2.5-vl"
    model_types = ("qwen2_5_vl",)
    model_class = Qwen2_5_VLForConditionalGeneration
    processor_class = Qwen2_5_VLProcessor

    @classmethod
    def build_config(
        cls,
        llm: LLMSize,
        *,
        patch_size: int = 4,
        merge_size: int = 2,
        vision_hidden_size: int = 32,
        vision_depth: int = 2,
        vision_heads: int = 2,
        vision_intermediate_size: int = 64,
        window_size: int | None = None,
        fullatt_block_indexes: tuple[int, ...] | None = None,
        max_tokens: int = 4096,
    ) -> tuple[Any, Any]:
        """Qwen2.5-VL config and offline processor.

        ``patch_size * merge_size`` is the token cell in pixels (default 4*2 = 8 px, so a 16x16 token
        grid is 128x128 px). ``window_size`` (pixels) defaults to 4 cells, like the 112-px windows of
        the released model (4 cells of 28 px); ``fullatt_block_indexes`` defaults to the last block.
        """
        processor = cls.build_processor(patch_size=patch_size, merge_size=merge_size, max_tokens=max_tokens)
        vision = {
            "depth": vision_depth,
            "hidden_size": vision_hidden_size,
            "intermediate_size": vision_intermediate_size,
            "num_heads": vision_heads,
            "patch_size": patch_size,
            "spatial_merge_size": merge_size,
            "temporal_patch_size": 2,
            "window_size": window_size or 4 * patch_size * merge_size,
            "out_hidden_size": llm.hidden_size,
            "fullatt_block_indexes": list(fullatt_block_indexes or [vision_depth - 1]),
            "tokens_per_second": 2,
        }
        text = _text_config(llm, processor, bos_token_id=processor.tokenizer.pad_token_id)
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **cls.token_ids(processor)), processor


@register
class Qwen2VLAdapter(QwenAdapter):
    """Qwen2-VL (``Qwen2VLForConditionalGeneration``): full-attention ViT + 2x2 merger."""

    family = "qwen2-vl"
    model_types = ("qwen2_vl",)
    model_class = Qwen2VLForConditionalGeneration
    processor_class = Qwen2VLProcessor

    @classmethod
    def build_config(
        cls,
        llm: LLMSize,
        *,
        patch_size: int = 4,
        merge_size: int = 2,
        vision_hidden_size: int = 32,
        vision_depth: int = 2,
        vision_heads: int = 2,
        max_tokens: int = 4096,
    ) -> tuple[Any, Any]:
        """Qwen2-VL config and offline processor (cell = patch_size * merge_size px)."""
        processor = cls.build_processor(patch_size=patch_size, merge_size=merge_size, max_tokens=max_tokens)
        vision = {
            "depth": vision_depth,
            "embed_dim": vision_hidden_size,
            "hidden_size": llm.hidden_size,
            "num_heads": vision_heads,
            "mlp_ratio": 2,
            "patch_size": patch_size,
            "spatial_merge_size": merge_size,
            "temporal_patch_size": 2,
        }
        text = _text_config(llm, processor, bos_token_id=processor.tokenizer.pad_token_id)
        return Qwen2VLConfig(text_config=text, vision_config=vision, **cls.token_ids(processor)), processor


@register
class Qwen3VLAdapter(QwenAdapter):
    """Qwen3-VL (``Qwen3VLForConditionalGeneration``): ViT with learned, interpolated position
    embeddings, 2x2 merger, and DeepStack (features of some ViT blocks are added to the hidden
    states of the first LLM layers at the same visual-token positions)."""

    family = "qwen3-vl"
    model_types = ("qwen3_vl",)
    model_class = Qwen3VLForConditionalGeneration
    processor_class = Qwen3VLProcessor
    video_budget_over_frames = True

    def video_prompt_text(self, prompt: str) -> str:
        """The template's ``<|vision_start|><|video_pad|><|vision_end|>`` reduced to ``<|video_pad|>``.

        The processor writes every temporal patch as ``<t seconds><|vision_start|>pads<|vision_end|>``;
        transformers 4.x replaced the template's whole marked placeholder with it, transformers 5
        replaces only the pad and would leave an extra start/end pair around the video.
        """
        text = super().video_prompt_text(prompt)
        return text.replace("<|vision_start|><|video_pad|><|vision_end|>", "<|video_pad|>")

    @classmethod
    def build_config(
        cls,
        llm: LLMSize,
        *,
        patch_size: int = 4,
        merge_size: int = 2,
        vision_hidden_size: int = 32,
        vision_depth: int = 2,
        vision_heads: int = 2,
        vision_intermediate_size: int = 64,
        num_position_embeddings: int = 256,
        deepstack_visual_indexes: tuple[int, ...] = (0,),
        max_tokens: int = 4096,
    ) -> tuple[Any, Any]:
        """Qwen3-VL config and offline processor (cell = patch_size * merge_size px)."""
        processor = cls.build_processor(
            patch_size=patch_size,
            merge_size=merge_size,
            max_tokens=max_tokens,
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
        )
        vision = {
            "depth": vision_depth,
            "hidden_size": vision_hidden_size,
            "intermediate_size": vision_intermediate_size,
            "num_heads": vision_heads,
            "patch_size": patch_size,
            "spatial_merge_size": merge_size,
            "temporal_patch_size": 2,
            "out_hidden_size": llm.hidden_size,
            "num_position_embeddings": num_position_embeddings,
            "deepstack_visual_indexes": list(deepstack_visual_indexes),
        }
        text = _text_config(llm, processor, head_dim=llm.dim_per_head)
        text["rope_parameters"]["mrope_interleaved"] = True
        del text["eos_token_id"]  # Qwen3VLTextConfig has no token-id fields
        return Qwen3VLConfig(text_config=text, vision_config=vision, **cls.token_ids(processor)), processor
