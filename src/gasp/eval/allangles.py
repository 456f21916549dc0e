"""All-Angles Bench: question file (official ``data.json`` schema), scores, category and pair metrics.

The answer letter is inferred as VLMEvalKit does without an LLM judge (`gasp.eval.parsing.infer_option`);
anything it cannot infer, refusals included, is wrong. ``overall`` and one key per category are
accuracies x100 (mean over questions). ``pairs`` reports, per category, over the unordered
{question, rephrased twin} pairs (``pair_idx``) with both members in the file, each counted once,
the fractions both correct (CC), both wrong (WW) and inconsistent (IC), and their number n.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gasp.errors import BadInputError
from gasp.eval.common import Scored, key_of
from gasp.eval.parsing import infer_option
from gasp.eval.prompts import allangles_prompt

REQUIRED_FIELDS = ("index", "category", "question", "answer", "image_path")
OPTION_LETTERS = "ABCDEFGH"


@dataclass(frozen=True)
class AAQuestion:
    """One record of ``data.json``."""

    index: int | str
    category: str
    question: str
    options: dict[str, str]
    answer: str
    image_path: tuple[str, ...]
    pair_idx: str | None
    folder: str = ""
    sourced_dataset: str = ""

    @property
    def key(self) -> str:
        return key_of(self.index)

    def prompt(self) -> str:
        return allangles_prompt(self.question, self.options)


def load_questions(path: str | Path) -> list[AAQuestion]:
    """Read ``data.json`` (a JSON list; JSON lines accepted too).

    Raises:
        BadInputError: naming the file and the record's index for every inconsistency.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: All-Angles question file not found")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            records = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{path}: cannot read JSON ({exc})") from None
    if not isinstance(records, list) or not records:
        raise BadInputError(f"{path}: expected a non-empty JSON list of question records")
    questions = []
    seen: set[str] = set()
    for n, record in enumerate(records):
        where = f"{path}, record {n}"
        if isinstance(record, dict) and "index" in record:
            where += f" (index {record['index']!r})"
        question = from_record(record, where)
        if question.key in seen:
            raise BadInputError(f"{where}: duplicate index {question.key}")
        seen.add(question.key)
        questions.append(question)
    return questions


def score(questions: list[AAQuestion], predictions: dict[str, str], parser: str = "official") -> Scored:
    """Score predictions (canonical index -> answer); missing ones are wrong and listed.

    ``parser`` must be "official" (VLMEvalKit matching); it exists for a uniform signature.
    """
    if parser != "official":
        raise ValueError("All-Angles Bench has only the official (VLMEvalKit) answer matching")
    per_question = []
    missing = []
    for q in questions:
        prediction = predictions.get(q.key)
        inferred = None
        if prediction is None:
            missing.append(q.key)
        else:
            inferred = infer_option(prediction, q.options)
        per_question.append(
            {
                "index": q.index,
                "task": q.category,
                "answer": q.answer,
                "prediction": prediction,
                "parsed": inferred,
                "score": 1.0 if inferred == q.answer else 0.0,
            }
        )
    metrics, warnings = aggregate(questions, per_question)
    if missing:
        warnings.append(f"{len(missing)} question(s) without a prediction were scored as wrong")
    return Scored(metrics=metrics, per_question=per_question, missing=missing, warnings=warnings)


def aggregate(
    questions: list[AAQuestion], per_question: list[dict[str, Any]]
) -> tuple[dict[str, Any], list[str]]:
    """Overall and per-category accuracy (x100) and the pair consistency table.

    Args:
        questions: the questions, in the same order as ``per_question``.
        per_question: records with ``score`` in {0, 1}.
    """
    correct = {q.key: r["score"] == 1.0 for q, r in zip(questions, per_question)}
    by_category: dict[str, list[float]] = {}
    for q, r in zip(questions, per_question):
        by_category.setdefault(q.category, []).append(r["score"])
    metrics: dict[str, Any] = {"overall": 100.0 * sum(correct.values()) / len(correct)}
    for category in sorted(by_category):
        scores = by_category[category]
        metrics[category] = 100.0 * sum(scores) / len(scores)

    category_of = {q.key: q.category for q in questions}
    counts: dict[str, dict[str, int]] = {}
    done: set[frozenset[str]] = set()
    absent_twins = 0
    for q in questions:
        if q.pair_idx is None:
            continue
        if q.pair_idx not in correct:
            absent_twins += 1
            continue
        pair = frozenset((q.key, q.pair_idx))
        if pair in done or len(pair) == 1:
            continue
        done.add(pair)
        both = correct[q.key] + correct[q.pair_idx]
        tally = counts.setdefault(category_of[q.key], {"CC": 0, "WW": 0, "IC": 0})
        tally["CC" if both == 2 else "WW" if both == 0 else "IC"] += 1
    metrics["pairs"] = {
        category: {**{k: v / sum(t.values()) for k, v in t.items()}, "n": sum(t.values())}
        for category, t in sorted(counts.items())
    }
    warnings = []
    if absent_twins:
        warnings.append(f"{absent_twins} question(s) name a pair_idx that is not in the file: not in pairs")
    return metrics, warnings


def from_record(record: Any, where: str = "record") -> AAQuestion:
    """Validate one ``data.json`` record; errors start with ``where`` (file and record)."""
    if not isinstance(record, dict):
        raise BadInputError(f"{where}: expected an object")
    missing = [f for f in REQUIRED_FIELDS if f not in record]
    if missing:
        raise BadInputError(f"{where}: missing field(s) {', '.join(missing)}")
    options = {
        letter: str(record[letter])
        for letter in OPTION_LETTERS
        if record.get(letter) is not None and str(record[letter]).strip() != ""
    }
    if len(options) < 2:
        raise BadInputError(f"{where}: needs at least two options among fields A, B, C, ...")
    answer = record["answer"]
    if answer not in options:
        raise BadInputError(f"{where}: answer {answer!r} is not one of its options {', '.join(options)}")
    images = record["image_path"]
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not images or not all(isinstance(p, str) for p in images):
        raise BadInputError(f"{where}: image_path must be a non-empty list of relative paths")
    try:
        key_of(record["index"])
        pair = record.get("pair_idx")
        pair = None if pair is None or str(pair).strip() == "" else key_of(pair)
    except TypeError:
        raise BadInputError(f"{where}: index and pair_idx must be numbers or strings") from None
    return AAQuestion(
        index=record["index"],
        category=str(record["category"]),
        question=str(record["question"]),
        options=options,
        answer=answer,
        image_path=tuple(images),
        pair_idx=pair,
        folder=str(record.get("folder", "")),
        sourced_dataset=str(record.get("sourced_dataset", "")),
    )
