"""VSI-Bench task functions for lmms-eval, delegating to gasp's official-rule scoring and prompts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gasp.eval.vsibench import VSIQuestion, aggregate, score_answer


def _question(doc: dict[str, Any]) -> VSIQuestion:
    options = doc.get("options")
    return VSIQuestion(
        id=doc["id"],
        dataset=doc["dataset"],
        scene_name=doc["scene_name"],
        question_type=doc["question_type"],
        question=doc["question"],
        ground_truth=doc["ground_truth"],
        options=tuple(options) if options is not None else None,
    )


def vsibench_doc_to_visual(doc: dict[str, Any]) -> list[str]:
    """The question's video, where lmms-eval's vsibench task caches it ($HF_HOME/vsibench/...)."""
    root = Path(os.path.expanduser(os.getenv("HF_HOME", "~/.cache/huggingface/"))) / "vsibench"
    path = root / _question(doc).video
    if not path.is_file():
        raise FileNotFoundError(f"VSI-Bench video {path} does not exist")
    return [str(path)]


def vsibench_doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict | None = None) -> str:
    """The official prompt (`gasp.eval.prompts.vsibench_prompt`)."""
    return _question(doc).prompt()


def vsibench_process_results(doc: dict[str, Any], results: list[str]) -> dict[str, Any]:
    """Per-question score under the official (thinking-in-space) rules."""
    value, parsed = score_answer(_question(doc), results[0])
    record = {"id": doc["id"], "question_type": doc["question_type"], "score": value, "parsed": parsed}
    return {"vsibench_score": record}


def vsibench_aggregate_results(results: list[dict[str, Any]]) -> dict[str, float]:
    """The official result keys (x100), as `gasp eval score` writes them."""
    metrics, _ = aggregate(results)
    return metrics
