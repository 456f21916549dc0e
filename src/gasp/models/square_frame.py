"""``SquareFrameAdapter``: the adapter base of families whose vision tower takes one fixed square size.

LLaVA, InternVL and SmolVLM: every frame is a ``frame_side`` square and gives the one token grid
``default_grid``; the random-weight build sizes the ViT from ``image_size`` and ``patch_size``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from gasp.errors import BadInputError
from gasp.models.adapter_types import LLMSize
from gasp.models.base import VLMAdapter


class SquareFrameAdapter(VLMAdapter):
    """Families whose vision tower takes one fixed square size (LLaVA, InternVL, SmolVLM).

    Subclasses give ``frame_side`` (pixels, the tower's ``image_size``) and ``cell_size`` (pixels
    per LLM token side: the ViT patch, times the pixel-shuffle factor where there is one).
    """

    vision_model_type: ClassVar[str | None] = None
    """``model_type`` written into the vision config (None: the family's own vision config)."""
    default_patch_size: ClassVar[int] = 8
    """ViT patch of the tiny presets (times the pixel-shuffle factor = the token cell)."""

    @classmethod
    def build_config(
        cls,
        llm: LLMSize,
        *,
        image_size: int = 64,
        patch_size: int | None = None,
        vision_hidden_size: int = 32,
        vision_depth: int = 2,
        vision_heads: int = 2,
        vision_intermediate_size: int | None = None,
        **family_kwargs: Any,
    ) -> tuple[Any, Any]:
        """Config and offline processor; frames are ``image_size`` squares (default 64 px)."""
        vision = {
            "image_size": image_size,
            "patch_size": patch_size or cls.default_patch_size,
            "hidden_size": vision_hidden_size,
            "intermediate_size": vision_intermediate_size or 2 * vision_hidden_size,
            "num_hidden_layers": vision_depth,
            "num_attention_heads": vision_heads,
        }
        if cls.vision_model_type:
            vision["model_type"] = cls.vision_model_type
        return cls._family_config(llm, vision, **family_kwargs)

    @classmethod
    def _family_config(cls, llm: LLMSize, vision: dict[str, Any], **kwargs: Any) -> tuple[Any, Any]:
        """(config, processor) from the LLM sizes and the ViT config dict."""
        raise NotImplementedError(f"{cls.family} has no random-weight build")

    @property
    def frame_side(self) -> int:
        raise NotImplementedError

    @property
    def cell_size(self) -> int:
        raise NotImplementedError

    @property
    def default_grid(self) -> tuple[int, int]:
        n = self.frame_side // self.cell_size
        return n, n

    def image_size_for_grid(self, grid: tuple[int, int]) -> tuple[int, int]:
        side = self.frame_side
        if tuple(int(g) for g in grid) != self.default_grid:
            raise BadInputError(
                f"{self.family}: the vision tower takes {side}x{side} px frames, i.e. the fixed token grid "
                f"{self.default_grid}; got {tuple(grid)} (build the preset with another image_size / "
                "patch_size to change it)"
            )
        return side, side

    def grid_for_image_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        side = self.frame_side
        if tuple(int(s) for s in image_size) != (side, side):
            raise BadInputError(
                f"{self.family}: frames of {image_size[0]}x{image_size[1]} px would be resized by the "
                f"processor; resize frames to {side}x{side} (see image_size_for_grid)"
            )
        return self.default_grid
