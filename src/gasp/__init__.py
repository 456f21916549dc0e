"""gasp: geometric-aware spatial priors for vision-language models.

Subpackages: ``gasp.geometry`` (pure tensor maths), ``gasp.data`` (scene readers, synthetic scenes,
prepared data), ``gasp.models`` (VLM adapters, correspondence heads), ``gasp.losses``, ``gasp.train``,
``gasp.probe`` and ``gasp.eval`` (benchmarks).
"""

__version__ = "0.1.0"
