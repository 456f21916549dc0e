"""The family registry: adapter classes by family name and by ``config.model_type``, and ``load_adapter``.

Each family module registers its adapter with ``@register``; importing ``gasp.models`` registers
them all. Errors list the valid names.
"""

from __future__ import annotations

from pathlib import Path

import torch

from gasp.errors import BadInputError, ConfigError
from gasp.models.base import VLMAdapter, _as_dtype

ADAPTERS: dict[str, type[VLMAdapter]] = {}


def register(cls: type[VLMAdapter]) -> type[VLMAdapter]:
    """Class decorator: register an adapter under ``cls.family``."""
    if not cls.family or cls.family in ADAPTERS:
        raise ValueError(f"adapter family {cls.family!r} is empty or already registered")
    ADAPTERS[cls.family] = cls
    return cls


def adapter_class(family: str) -> type[VLMAdapter]:
    """The adapter class for ``family``; the error lists the valid names."""
    if family not in ADAPTERS:
        raise ConfigError(f"unknown model family {family!r}; valid families: {', '.join(sorted(ADAPTERS))}")
    return ADAPTERS[family]


def family_for_model_type(model_type: str) -> str:
    """The family whose adapter handles ``config.model_type``; the error lists supported types."""
    for family, cls in ADAPTERS.items():
        if model_type in cls.model_types:
            return family
    supported = sorted(t for cls in ADAPTERS.values() for t in cls.model_types)
    raise ConfigError(f"unsupported model_type {model_type!r}; supported model types: {', '.join(supported)}")


def load_adapter(
    name_or_path: str | Path,
    family: str | None = None,
    *,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
) -> VLMAdapter:
    """Load an adapter from a preset name, a local checkpoint folder or a hub id.

    Args:
        name_or_path: a preset name (see ``gasp.models.presets.PRESETS``), a folder with a HF
            checkpoint, or a hub id (needs network access).
        family: adapter family; auto-detected from ``config.model_type`` when None.
        dtype, device: where to put the model.
    """
    from transformers import AutoConfig

    from gasp.models.presets import PRESETS, from_preset

    name = str(name_or_path)
    if name in PRESETS:
        adapter = from_preset(name)
        if dtype is not None or device is not None:
            adapter.model.to(device=device, dtype=_as_dtype(dtype))
        return adapter
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise BadInputError(
            f"cannot load a model from {name!r} (not a checkpoint folder, unreachable hub id, or a "
            f"preset name; presets: {', '.join(sorted(PRESETS))}): {err}"
        ) from err
    family = family or family_for_model_type(config.model_type)
    return adapter_class(family).from_pretrained(name, dtype=dtype, device=device)
