"""Print the folder to pass to ``lmms-eval --include_path`` for the All-Angles Bench task."""

from gasp.eval.lmms_plugin import TASKS_DIR

print(TASKS_DIR)
