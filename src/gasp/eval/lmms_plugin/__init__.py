"""lmms-eval plugin: the ``gasp`` model (our adapters and frame sampling) and an All-Angles Bench task.

Discovery (lmms-eval 0.7):
- model: entry point group ``lmms_eval.models``, ``gasp = "gasp.eval.lmms_plugin:model_manifests"``;
  the legacy ``LMMS_EVAL_PLUGINS=gasp.eval.lmms_plugin`` also works (``models.AVAILABLE_MODELS``).
- task: ``--include_path`` `TASKS_DIR` (printed by ``python -m gasp.eval.lmms_plugin``), or
  ``LMMS_EVAL_PLUGINS=gasp.eval.lmms_plugin`` which adds this package's ``tasks`` folder.
"""

from __future__ import annotations

from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
MODEL_NAME = "gasp"
MODEL_CLASS_PATH = "gasp.eval.lmms_plugin.models.gasp.GaspLMM"


def model_manifests() -> list:
    """Entry-point payload for lmms-eval's model registry (imports lmms-eval lazily)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=MODEL_NAME, simple_class_path=MODEL_CLASS_PATH)]
