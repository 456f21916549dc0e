"""VSI-Bench: question file, per-question scores and aggregation, as the official code computes them.

Reference: thinking-in-space (vision-x-nyu), ``lmms_eval/tasks/vsibench/utils.py``. Multiple-choice
tasks score ``exact_match`` of the first token; numeric tasks score Mean Relative Accuracy,
``mean over theta in linspace(0.5, 0.95, 10) of [|pred - gt| / gt <= 1 - theta]`` in float64, 0 when
the token is not a float. Per question type means; the three ``object_rel_direction_*`` levels are
averaged (a level absent from the question file counts 0, as there); ``overall`` is the mean of the
resulting task scores. Everything is reported x100.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gasp.errors import BadInputError
from gasp.eval import parsing
from gasp.eval.common import Scored, key_of
from gasp.eval.prompts import vsibench_prompt

MCA_QUESTION_TYPES = (
    "object_rel_direction_easy",
    "object_rel_direction_medium",
    "object_rel_direction_hard",
    "object_rel_distance",
    "route_planning",
    "obj_appearance_order",
)
NA_QUESTION_TYPES = (
    "object_abs_distance",
    "object_counting",
    "object_size_estimation",
    "room_size_estimation",
)
DIRECTION_LEVELS = ("object_rel_direction_easy", "object_rel_direction_medium", "object_rel_direction_hard")
MRA_SUFFIX = "_MRA:.5:.95:.05"
ACC_SUFFIX = "_accuracy"
# The official result keys, in the order the paper's table lists the tasks.
RESULT_KEYS = (
    "overall",
    "object_counting" + MRA_SUFFIX,
    "object_abs_distance" + MRA_SUFFIX,
    "object_size_estimation" + MRA_SUFFIX,
    "room_size_estimation" + MRA_SUFFIX,
    "object_rel_distance" + ACC_SUFFIX,
    "object_rel_direction" + ACC_SUFFIX,
    "route_planning" + ACC_SUFFIX,
    "obj_appearance_order" + ACC_SUFFIX,
)
# The official confidence thresholds: int((.95 - .5) / .05 + 2) == 10 points from 0.5 to 0.95.
MRA_THRESHOLDS = np.linspace(0.5, 0.95, 10)
REQUIRED_COLUMNS = ("id", "dataset", "scene_name", "question_type", "question", "ground_truth", "options")


@dataclass(frozen=True)
class VSIQuestion:
    """One row of the official parquet file."""

    id: int | str
    dataset: str
    scene_name: str
    question_type: str
    question: str
    ground_truth: str
    options: tuple[str, ...] | None

    @property
    def key(self) -> str:
        return key_of(self.id)

    @property
    def is_multiple_choice(self) -> bool:
        return self.question_type in MCA_QUESTION_TYPES

    @property
    def video(self) -> str:
        """Relative video path in the official release layout: ``{dataset}/{scene_name}.mp4``."""
        return f"{self.dataset}/{self.scene_name}.mp4"

    def prompt(self) -> str:
        return vsibench_prompt(self.question, list(self.options) if self.options is not None else None)


def load_questions(path: str | Path) -> list[VSIQuestion]:
    """Read the official parquet file (or the same records as JSON lines / a JSON list).

    Raises:
        BadInputError: naming the file and the record (id or row) for every inconsistency.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: VSI-Bench question file not found")
    rows = _read_rows(path)
    questions: list[VSIQuestion] = []
    seen: set[str] = set()
    for row_no, row in enumerate(rows):
        where = f"{path}, row {row_no}"
        if not isinstance(row, dict):
            raise BadInputError(f"{where}: expected a record with fields {', '.join(REQUIRED_COLUMNS)}")
        missing = [c for c in REQUIRED_COLUMNS if c not in row]
        if missing:
            raise BadInputError(f"{where}: missing field(s) {', '.join(missing)}")
        where = f"{path}, row {row_no} (id {row['id']!r})"
        qtype = row["question_type"]
        if qtype not in MCA_QUESTION_TYPES and qtype not in NA_QUESTION_TYPES:
            raise BadInputError(
                f"{where}: unknown question_type {qtype!r}; expected one of "
                + ", ".join(MCA_QUESTION_TYPES + NA_QUESTION_TYPES)
            )
        gt = row["ground_truth"]
        if not isinstance(gt, str) or not gt.strip():
            raise BadInputError(f"{where}: ground_truth must be a non-empty string, got {gt!r}")
        options = row["options"]
        if qtype in MCA_QUESTION_TYPES:
            if options is None or isinstance(options, str) or len(options) == 0:
                raise BadInputError(f"{where}: {qtype} needs a list of options")
            options = tuple(str(o) for o in options)
        else:
            value = parsing.to_float(gt)
            if value is None or not np.isfinite(value) or value <= 0:
                # The official MRA divides by the ground truth: it must be a positive number.
                raise BadInputError(f"{where}: ground_truth {gt!r} of {qtype} is not a positive number")
            options = None
        try:
            key = key_of(row["id"])
        except TypeError:
            raise BadInputError(f"{where}: id must be a number or string") from None
        if key in seen:
            raise BadInputError(f"{where}: duplicate id {key}")
        seen.add(key)
        questions.append(
            VSIQuestion(
                id=row["id"],
                dataset=str(row["dataset"]),
                scene_name=str(row["scene_name"]),
                question_type=qtype,
                question=str(row["question"]),
                ground_truth=gt,
                options=options,
            )
        )
    if not questions:
        raise BadInputError(f"{path}: no questions")
    return questions


def _read_rows(path: Path) -> list[Any]:
    import json

    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
            raise BadInputError(f"{path}: cannot read parquet ({exc})") from None
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{path}: cannot read JSON ({exc})") from None
    if not isinstance(data, list):
        raise BadInputError(f"{path}: expected a JSON list of question records")
    return data


def mean_relative_accuracy(pred: float, target: float) -> float:
    """Official MRA of one numeric answer: share of the 10 thresholds with ``rel. error <= 1 - theta``.

    ``pred`` may be nan or +-inf (scores 0); ``target`` must be positive.
    """
    relative_error = abs(pred - target) / target
    return float(np.mean(relative_error <= 1 - MRA_THRESHOLDS))


def score_answer(question: VSIQuestion, prediction: str, parser: str = "official") -> tuple[float, str]:
    """Score one answer in [0, 1]; also return the parsed answer (as text) for the report.

    Args:
        question: the question.
        prediction: the model's raw answer.
        parser: "official" (first token) or "lenient" (first letter/number anywhere).
    """
    if parser not in parsing.PARSERS:
        raise ValueError(f"unknown parser {parser!r}; choose from {', '.join(parsing.PARSERS)}")
    if question.is_multiple_choice:
        if parser == "official":
            parsed = parsing.first_token(prediction)
        else:
            letters = [o.split(".")[0].strip() for o in question.options or ()]
            parsed = parsing.lenient_letter(prediction, letters)
        return (1.0 if parsed.lower() == question.ground_truth.lower() else 0.0), parsed
    if parser == "official":
        token = parsing.first_token(prediction)
        value = parsing.to_float(token)
    else:
        value = parsing.lenient_number(prediction)
        token = "" if value is None else repr(value)
    target = parsing.to_float(question.ground_truth)
    if value is None or target is None:
        return 0.0, token
    return mean_relative_accuracy(value, target), token


def task_of(question_type: str) -> str:
    """Result key of a question type (the three direction levels share one)."""
    if question_type in DIRECTION_LEVELS:
        return "object_rel_direction" + ACC_SUFFIX
    suffix = ACC_SUFFIX if question_type in MCA_QUESTION_TYPES else MRA_SUFFIX
    return question_type + suffix


def aggregate(per_question: list[dict[str, Any]]) -> tuple[dict[str, float], list[str]]:
    """Official aggregation of per-question scores (records with ``question_type`` and ``score``).

    Returns:
        (metrics x100 keyed by `RESULT_KEYS` order, warnings).
    """
    by_type: dict[str, list[float]] = {}
    for record in per_question:
        by_type.setdefault(record["question_type"], []).append(record["score"])
    output = {task_of(t): float(np.mean(s)) for t, s in by_type.items() if t not in DIRECTION_LEVELS}
    warnings = []
    absent = [level for level in DIRECTION_LEVELS if level not in by_type]
    if absent:
        warnings.append(
            f"no {', '.join(absent)} questions: the official code counts each absent level as 0 "
            "in object_rel_direction_accuracy"
        )
    levels = [float(np.mean(by_type[level])) if level in by_type else 0.0 for level in DIRECTION_LEVELS]
    output["object_rel_direction" + ACC_SUFFIX] = sum(levels) / 3.0
    output["overall"] = sum(output.values()) / len(output)
    tasks_present = [key for key in RESULT_KEYS if key in output]
    if len(tasks_present) < len(RESULT_KEYS):
        warnings.append("not all 8 tasks are in the question file: overall is the mean of those present")
    return {key: 100.0 * output[key] for key in tasks_present}, warnings


def score(questions: list[VSIQuestion], predictions: dict[str, str], parser: str = "official") -> Scored:
    """Score predictions (canonical id -> answer); missing ones are scored as wrong and listed."""
    per_question = []
    missing = []
    for q in questions:
        prediction = predictions.get(q.key)
        if prediction is None:
            missing.append(q.key)
            value, parsed = 0.0, None
        else:
            value, parsed = score_answer(q, prediction, parser)
        per_question.append(
            {
                "id": q.id,
                "task": task_of(q.question_type),
                "question_type": q.question_type,
                "ground_truth": q.ground_truth,
                "prediction": prediction,
                "parsed": parsed,
                "score": value,
            }
        )
    metrics, warnings = aggregate(per_question)
    if missing:
        warnings.append(f"{len(missing)} question(s) without a prediction were scored as wrong")
    return Scored(metrics=metrics, per_question=per_question, missing=missing, warnings=warnings)
