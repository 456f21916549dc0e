"""The one adapter contract every VLM family implements.

An adapter wraps a real Hugging Face VLM (``model``) and its real processor (``processor``) and
answers the questions gasp asks of every backbone, so heads, losses, training and probing never
branch on the family:

* where each frame's visual tokens sit in the token sequence, and which (row, col) of that frame's
  token grid each one covers (``AdapterBatch.visual_positions``);
* which modules are the LLM decoder layers, what their attention reads (the input layernorm
  output) and their query/key projections;
* which module names LoRA may touch (LLM decoder only, never the vision tower).

Frames of one sequence always go in as ONE multi-image sample with one image placeholder per frame.

Its parts live beside it: ``adapter_types`` (QK, AdapterBatch, LLMSize, re-exported here),
``square_frame`` (SquareFrameAdapter, the base of fixed-square-frame families), ``processors``
(processors without video) and ``registry`` (the family registry and ``load_adapter``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from gasp.errors import BadInputError, ConfigError
from gasp.models.adapter_types import QK, AdapterBatch, LLMSize
from gasp.models.processors import load_processor

__all__ = ["IGNORE_INDEX", "QK", "AdapterBatch", "LLMSize", "VLMAdapter", "snap_multiple"]

IGNORE_INDEX = -100
"""Label value ignored by the LM loss (prompt, padding and visual tokens)."""

_TOKEN_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")
"""Processor outputs that are per-token (B, L) and are rebuilt when answers are appended."""

_LORA_LEAF_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class VLMAdapter:
    """Base class: a real HF VLM + processor behind gasp's family-independent interface.

    Subclasses set ``family`` / ``model_types`` / ``model_class`` and implement the grid methods
    (``grid_for_image_size``, ``image_size_for_grid``) and, when a frame's placeholder tokens are not
    exactly its token grid in raster order, ``_frame_token_order``.
    """

    family: ClassVar[str] = ""
    model_types: ClassVar[tuple[str, ...]] = ()
    """``config.model_type`` values handled by this adapter (used for auto-detection)."""
    model_class: ClassVar[type] = nn.Module
    """The transformers ``*ForConditionalGeneration`` class."""
    nested_images: ClassVar[bool] = False
    """Pass images to the processor as one list per sample (processors that count images per
    sample) instead of one flat list."""

    def __init__(self, model: nn.Module, processor: Any) -> None:
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_token = processor.image_token
        self.image_token_id = int(self.tokenizer.convert_tokens_to_ids(self.image_token))
        if self.tokenizer.pad_token_id is None:
            raise ConfigError(f"{self.family}: the tokenizer has no pad token; set tokenizer.pad_token")

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
    ) -> VLMAdapter:
        """Load a real checkpoint (local folder or hub id) of this family."""
        processor = load_processor(path, cls)
        model = cls.model_class.from_pretrained(str(path), dtype=dtype or "auto")
        if device is not None:
            model = model.to(device)
        return cls(model.eval(), processor)

    @classmethod
    def load_processor_parts(cls, path: str | Path) -> Any:
        """Assemble the processor from its parts when ``AutoProcessor`` cannot (no torchvision)."""
        raise NotImplementedError

    @classmethod
    def build(cls, *, seed: int = 0, dtype: torch.dtype | str | None = None, **kwargs: Any) -> VLMAdapter:
        """A random-weight model with an offline processor (what presets call).

        Args:
            seed: seed of the weights (drawn from a forked torch RNG: the global RNG state is left
                as it was, and the same seed always gives the same weights).
            dtype: parameter dtype (default float32).
            **kwargs: ``LLMSize`` fields (``hidden_size``, ``num_layers``, ...) and the family's
                ``build_config`` keyword arguments (vision sizes, ``patch_size``, ``image_size``, ...).
        """
        names = {f.name for f in fields(LLMSize)}
        llm = LLMSize(**{k: kwargs.pop(k) for k in list(kwargs) if k in names})
        config, processor = cls.build_config(llm, **kwargs)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls.model_class(config)
        if dtype is not None:
            model = model.to(_as_dtype(dtype))
        return cls(model.eval(), processor)

    @classmethod
    def build_config(cls, llm: LLMSize, **kwargs: Any) -> tuple[Any, Any]:
        """(HF model config, offline processor) of a random-weight model of this family."""
        raise NotImplementedError(f"{cls.family} has no random-weight build")

    def save_pretrained(self, directory: str | Path) -> None:
        """Save model weights (safetensors), config and processor files to ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory)
        self.processor.save_pretrained(str(directory))

    # ----------------------------------------------------------------- geometry of tokens
    def grid_for_image_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """Token grid (gh, gw) of one frame of pixel size (H, W).

        Raises:
            BadInputError: the processor would resize the frame (the grid would not match the
                pixels); the message names the closest valid size from ``image_size_for_grid``.
        """
        raise NotImplementedError

    def image_size_for_grid(self, grid: tuple[int, int]) -> tuple[int, int]:
        """Pixel size (H, W) a frame must have to give the token grid (gh, gw) unchanged.

        Raises:
            BadInputError / ConfigError: the family cannot produce that grid (LLaVA towers take one
                fixed size; Qwen grids must fit the processor's pixel budget).
        """
        raise NotImplementedError

    @property
    def default_grid(self) -> tuple[int, int]:
        """A token grid this adapter accepts (the only one for fixed-size vision towers)."""
        return (16, 16)

    def _frame_token_order(self, num_tokens: int, grid: tuple[int, int]) -> torch.Tensor:
        """Map one frame's placeholder tokens to its grid.

        Args:
            num_tokens: how many image placeholder tokens the frame produced in the sequence.
            grid: (gh, gw) token grid of the frame.

        Returns:
            (gh, gw) int64: index into the frame's placeholder run of the token at (row, col).
            Default: the run is exactly the grid in raster order.
        """
        gh, gw = grid
        if num_tokens != gh * gw:
            raise BadInputError(
                f"{self.family}: a frame produced {num_tokens} visual tokens, expected {gh}x{gw}={gh * gw}"
            )
        return torch.arange(gh * gw).view(gh, gw)

    # ----------------------------------------------------------------- inputs
    def prompt_text(self, num_frames: int, prompt: str) -> str:
        """The chat-formatted user turn with one image placeholder per frame, ready for the answer."""
        content = [{"type": "image"} for _ in range(num_frames)] + [{"type": "text", "text": prompt}]
        messages = [{"role": "user", "content": content}]
        # Rendered by the tokenizer with the processor's template: some processors'
        # apply_chat_template needs their (absent) video processor.
        template = getattr(self.processor, "chat_template", None)
        if template is None and getattr(self.tokenizer, "chat_template", None) is None:
            raise ConfigError(f"{self.family}: neither the processor nor the tokenizer has a chat template")
        return self.tokenizer.apply_chat_template(
            messages, chat_template=template, add_generation_prompt=True, tokenize=False
        )

    @property
    def end_of_turn(self) -> str:
        """Text appended after an answer so the model learns to stop (the tokenizer's EOS)."""
        return self.tokenizer.eos_token or ""

    def build_inputs(
        self,
        frames: Sequence[np.ndarray],
        prompts: Sequence[str],
        answers: Sequence[str] | None = None,
        *,
        padding_side: str = "right",
    ) -> AdapterBatch:
        """Turn B multi-frame samples into model inputs and the visual-token map.

        Args:
            frames: B arrays (F, H, W, 3) uint8 RGB; every sample must have the same F, H, W, and
                (H, W) must give a token grid without resizing (see ``image_size_for_grid``).
            prompts: B user prompts (frames are placed before the prompt, one placeholder each).
            answers: optional B answers; when given, ``labels`` supervise exactly the answer tokens
                plus the end-of-turn token.
            padding_side: "right" (training) or "left" (generation).

        Returns:
            AdapterBatch (see its docstring).
        """
        frames = [np.asarray(f) for f in frames]
        if len(frames) != len(prompts) or (answers is not None and len(answers) != len(prompts)):
            raise BadInputError(
                f"build_inputs: got {len(frames)} frame stacks, {len(prompts)} prompts and "
                f"{'no' if answers is None else len(answers)} answers; they must match"
            )
        if not frames:
            raise BadInputError("build_inputs: empty batch")
        shape = frames[0].shape
        for b, f in enumerate(frames):
            if f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8:
                raise BadInputError(
                    f"build_inputs: frames[{b}] must be (F, H, W, 3) uint8, got {f.shape} {f.dtype}"
                )
            if f.shape != shape:
                raise BadInputError(
                    f"build_inputs: frames[{b}] has shape {f.shape}, frames[0] has {shape}; "
                    "all samples of a batch need the same frame count and size"
                )
        num_frames, height, width = shape[:3]
        grid = self.grid_for_image_size((height, width))

        texts = [self.prompt_text(num_frames, p) for p in prompts]
        processed = self.processor(
            text=texts,
            images=[list(f) for f in frames] if self.nested_images else [x for f in frames for x in f],
            return_tensors="pt",
            padding=True,
            **self.processor_call_kwargs(),
        )
        rows = self._unpad_rows(processed)
        if answers is not None:
            for row, answer in zip(rows, answers):
                ids = self.tokenizer(answer + self.end_of_turn, add_special_tokens=False)["input_ids"]
                _append_answer(row, torch.tensor(ids, dtype=row["input_ids"].dtype))
        inputs = {k: v for k, v in processed.items() if k not in _TOKEN_KEYS}
        inputs.update(self._pad_rows(rows, padding_side))
        positions = torch.stack(
            [self._visual_positions(inputs["input_ids"][b], num_frames, grid) for b in range(len(frames))]
        )
        return AdapterBatch(inputs, positions, grid, (height, width))

    def processor_call_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments for every processor call (e.g. disable image splitting)."""
        return {}

    def _unpad_rows(self, processed: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        mask = processed["attention_mask"].bool()
        keys = [k for k in _TOKEN_KEYS if k in processed]
        return [{k: processed[k][b][mask[b]] for k in keys} for b in range(mask.shape[0])]

    def _pad_rows(self, rows: list[dict[str, torch.Tensor]], side: str) -> dict[str, torch.Tensor]:
        if side not in ("left", "right"):
            raise ConfigError(f"padding_side must be 'left' or 'right', got {side!r}")
        length = max(len(r["input_ids"]) for r in rows)
        pad_values = {"input_ids": self.tokenizer.pad_token_id, "labels": IGNORE_INDEX}
        out: dict[str, torch.Tensor] = {}
        for key in rows[0]:
            padded = []
            for r in rows:
                value = r[key]
                pad = torch.full((length - len(value),), pad_values.get(key, 0), dtype=value.dtype)
                padded.append(torch.cat([pad, value] if side == "left" else [value, pad]))
            out[key] = torch.stack(padded)
        return out

    def _visual_positions(
        self, input_ids: torch.Tensor, num_frames: int, grid: tuple[int, int]
    ) -> torch.Tensor:
        """(F, gh, gw) sequence indices of one sample's visual tokens (one contiguous run per frame)."""
        idx = torch.nonzero(input_ids == self.image_token_id).flatten()
        if idx.numel() == 0 or idx.numel() % num_frames:
            raise BadInputError(
                f"{self.family}: found {idx.numel()} image tokens for {num_frames} frames in one sample"
            )
        per_frame = idx.numel() // num_frames
        order = self._frame_token_order(per_frame, grid)
        return torch.stack([idx[f * per_frame : (f + 1) * per_frame][order] for f in range(num_frames)])

    # ----------------------------------------------------------------- LLM internals
    @property
    def text_config(self) -> Any:
        return self.model.config.get_text_config()

    @property
    def hidden_size(self) -> int:
        return int(self.text_config.hidden_size)

    @property
    def num_layers(self) -> int:
        return len(self.decoder_layers())

    def decoder(self) -> nn.Module:
        """The LLM decoder (embeddings + layers), never the vision tower."""
        return self.model.get_decoder()

    def decoder_layers(self) -> list[nn.Module]:
        return list(self.decoder().layers)

    def attention_inputs(self) -> list[nn.Module]:
        """Per layer, the module whose output is what q_proj/k_proj read (the input layernorm)."""
        return [layer.input_layernorm for layer in self.decoder_layers()]

    def qk_projections(self, layer: int) -> QK:
        attn = self.decoder_layers()[layer].self_attn
        cfg = self.text_config
        num_heads = int(cfg.num_attention_heads)
        head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // num_heads)
        num_kv = int(getattr(cfg, "num_key_value_heads", None) or num_heads)
        # per-head query/key norms (Qwen3-VL's q_norm/k_norm) are part of what the attention uses
        norms = (getattr(attn, "q_norm", None), getattr(attn, "k_norm", None))
        return QK(attn.q_proj, attn.k_proj, num_heads, num_kv, head_dim, *norms)

    def lora_target_modules(self) -> list[str]:
        """Full module paths of the LLM decoder's linear layers (never the vision tower or lm_head).

        PEFT matches a list entry against a module name exactly or as a dotted suffix, so full paths
        select exactly these modules.
        """
        path_of = {id(m): n for n, m in self.model.named_modules()}
        names = [
            f"{path_of[id(layer)]}.{name}"
            for layer in self.decoder_layers()
            for name, module in layer.named_modules()
            if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in _LORA_LEAF_NAMES
        ]
        if not names:
            raise ConfigError(f"{self.family}: no LoRA target modules found in the decoder layers")
        return names

    # ----------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(
        self, frames_list: Sequence[np.ndarray], prompts: Sequence[str], max_new_tokens: int = 16
    ) -> list[str]:
        """Greedy, batched (left-padded) generation; returns only the new text of each sample."""
        batch = self.build_inputs(frames_list, prompts, padding_side="left")
        return self.greedy_decode(batch.inputs, max_new_tokens)

    @torch.no_grad()
    def greedy_decode(self, inputs: dict[str, torch.Tensor], max_new_tokens: int = 16) -> list[str]:
        """Greedy generation from left-padded model inputs; returns only the new text of each sample."""
        param = next(self.model.parameters())
        # Only pixels take the model's dtype: second_per_grid_ts (seconds) must keep full precision.
        moved = {
            k: v.to(param.device, param.dtype if k.startswith("pixel_values") else None)
            for k, v in inputs.items()
        }
        out = self.model.generate(
            **moved,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        new = out[:, moved["input_ids"].shape[1] :]
        return self.tokenizer.batch_decode(new, skip_special_tokens=True)


def _append_answer(row: dict[str, torch.Tensor], ids: torch.Tensor) -> None:
    """Append answer token ids to one unpadded sample; only they are supervised in ``labels``."""
    row["labels"] = torch.cat([torch.full_like(row["input_ids"], IGNORE_INDEX), ids])
    for key in _TOKEN_KEYS:
        if key not in row:
            continue
        if key == "input_ids":
            extra = ids
        elif key == "attention_mask":
            extra = torch.ones(len(ids), dtype=row[key].dtype)
        else:  # token types: answers are text (0)
            extra = torch.zeros(len(ids), dtype=row[key].dtype)
        row[key] = torch.cat([row[key], extra])


def _as_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype):
        raise ConfigError(f"unknown dtype {dtype!r}; use e.g. float32, bfloat16, float16")
    return value


def snap_multiple(value: int, factor: int) -> int:
    """Nearest positive multiple of ``factor`` (used to suggest valid image sizes)."""
    return max(factor, round(value / factor) * factor)
