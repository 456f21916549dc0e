"""Models for lmms-eval's legacy ``LMMS_EVAL_PLUGINS`` discovery: name -> class in ``models/<name>.py``."""

AVAILABLE_MODELS = {"gasp": "GaspLMM"}
