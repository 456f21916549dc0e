"""VLM adapters (one per family), their registry and model presets."""

from gasp.models import internvl, llava, qwen, smolvlm  # noqa: F401  (register the families)
from gasp.models.adapter_types import QK, AdapterBatch
from gasp.models.base import IGNORE_INDEX, VLMAdapter
from gasp.models.presets import PRESETS, Preset, from_preset
from gasp.models.registry import ADAPTERS, adapter_class, family_for_model_type, load_adapter

__all__ = [
    "ADAPTERS",
    "IGNORE_INDEX",
    "PRESETS",
    "QK",
    "AdapterBatch",
    "Preset",
    "VLMAdapter",
    "adapter_class",
    "family_for_model_type",
    "from_preset",
    "load_adapter",
]
