"""lmms-eval task YAMLs shipped by gasp (found through ``--include_path`` or ``LMMS_EVAL_PLUGINS``)."""
