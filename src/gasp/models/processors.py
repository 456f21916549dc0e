"""Processors without video: building and loading HF processors where torchvision is missing.

``make_processor`` instantiates a processor class with ``video_processor=None``;
``load_processor`` falls back to an adapter's assembly from parts; ``read_chat_template`` reads the
chat template saved next to a checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gasp.models.base import VLMAdapter


def make_processor(processor_class: type, **parts: Any) -> Any:
    """Instantiate a real HF processor class, allowing ``video_processor=None``.

    Several VLM processors declare a video processor, whose class needs torchvision (not installed
    here). Images never need it, so it is left out: the type check is skipped for ``None`` parts
    and ``save_pretrained`` only writes the parts that exist.
    """
    processor = processor_class.__new__(processor_class)
    check = processor_class.check_argument_for_proper_class
    processor.check_argument_for_proper_class = lambda name, arg: (
        None if arg is None else check(processor, name, arg)
    )
    processor_class.__init__(processor, **parts)
    del processor.check_argument_for_proper_class
    if any(v is None for v in parts.values()):
        attributes = processor_class.get_attributes()
        processor.get_attributes = lambda: [a for a in attributes if getattr(processor, a, None) is not None]
    return processor


def load_processor(path: str | Path, adapter_class: type[VLMAdapter]) -> Any:
    """``AutoProcessor.from_pretrained(path)``, or the adapter's assembly from parts when that fails."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(str(path))
    except (OSError, ImportError, ValueError, TypeError):
        return adapter_class.load_processor_parts(path)


def read_chat_template(path: str | Path) -> str | None:
    """The chat template saved next to a checkpoint (chat_template.jinja or .json), if any."""
    import json

    root = Path(path)
    if (root / "chat_template.jinja").is_file():
        return (root / "chat_template.jinja").read_text(encoding="utf-8")
    if (root / "chat_template.json").is_file():
        return json.loads((root / "chat_template.json").read_text(encoding="utf-8")).get("chat_template")
    return None
