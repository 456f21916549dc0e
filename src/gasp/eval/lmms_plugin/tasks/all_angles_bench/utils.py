"""All-Angles Bench task functions for lmms-eval, delegating to gasp's scoring and prompts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gasp.eval.allangles import AAQuestion, aggregate, from_record
from gasp.eval.parsing import infer_option


def _root() -> Path:
    return Path(os.environ.get("ALL_ANGLES_BENCH_ROOT", "All-Angles-Bench"))


def all_angles_doc_to_visual(doc: dict[str, Any]) -> list[str]:
    """Image paths of the question's views (image_path relative to the data set root)."""
    return [str(_root() / p) for p in from_record(doc).image_path]


def all_angles_doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict | None = None) -> str:
    """The official prompt (`gasp.eval.prompts.allangles_prompt`)."""
    return from_record(doc).prompt()


def all_angles_process_results(doc: dict[str, Any], results: list[str]) -> dict[str, Any]:
    """Per-question record: the inferred letter and whether it is right."""
    question = from_record(doc)
    inferred = infer_option(results[0], question.options)
    record = {
        "record": dict(doc),
        "prediction": results[0],
        "parsed": inferred,
        "score": 1.0 if inferred == question.answer else 0.0,
    }
    return {"all_angles_score": record}


def all_angles_aggregate_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    """overall, per-category accuracy (x100) and the pairs table, as `gasp eval score` reports."""
    questions: list[AAQuestion] = [from_record(r["record"]) for r in results]
    metrics, _ = aggregate(questions, results)
    return metrics
