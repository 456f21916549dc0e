"""Scene data: posed RGB-D readers (one module per source), synthetic rooms and the shard format.

``open_scene(spec)`` is the entry point; every reader returns validated ``View`` records.
"""

from gasp.data.registry import FORMATS, open_scene, supported_formats
from gasp.data.synthetic import SyntheticScene
from gasp.data.views import BadFrame, SceneReader, View, validate_view

__all__ = [
    "FORMATS",
    "BadFrame",
    "SceneReader",
    "SyntheticScene",
    "View",
    "open_scene",
    "supported_formats",
    "validate_view",
]
