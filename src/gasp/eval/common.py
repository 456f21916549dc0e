"""Shared pieces of both benchmarks: prediction files, atomic JSON writes, result records."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gasp.errors import BadInputError

BENCHMARKS = ("vsibench", "all-angles")
# Key naming a question in a predictions line, per benchmark (the question file's own id field).
ID_KEYS = {"vsibench": "id", "all-angles": "index"}


@dataclass
class Scored:
    """Scores of one benchmark: official metrics plus what a user needs to trust them."""

    metrics: dict[str, Any]
    """Official result keys -> value (x100), in the official order; may hold nested dicts (pairs)."""
    per_question: list[dict[str, Any]]
    """One record per question: id, task, prediction (None when missing), parsed answer, score."""
    missing: list[str] = field(default_factory=list)
    """Ids of questions without a prediction (scored as wrong)."""
    warnings: list[str] = field(default_factory=list)

    def to_json(self, benchmark: str, parser: str) -> dict[str, Any]:
        """The ``results.json`` document: official keys at top level, then bookkeeping."""
        counts = Counter(str(r["task"]) for r in self.per_question)
        return {
            **self.metrics,
            "benchmark": benchmark,
            "parser": parser,
            "num_questions": len(self.per_question),
            "num_per_task": dict(sorted(counts.items())),
            "missing": {"count": len(self.missing), "ids": self.missing},
            "warnings": self.warnings,
        }


def key_of(value: Any) -> str:
    """Canonical string form of a question id, so that 12, "12" and 12.0 name the same question."""
    if isinstance(value, bool):
        raise TypeError("a boolean is not a question id")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def load_predictions(path: str | Path, id_key: str, known: set[str]) -> dict[str, str]:
    """Read a JSON-lines predictions file ``{"<id_key>": ..., "prediction": "..."}``.

    Args:
        path: the file.
        id_key: "id" (VSI-Bench) or "index" (All-Angles).
        known: canonical ids of the question file (see `key_of`).

    Returns:
        canonical id -> prediction text. A ``null`` prediction counts as missing.

    Raises:
        BadInputError: unreadable file or line (NaN / Infinity included: not JSON), missing field, a
            duplicate id (its line, the id, and the line that first had it), ids that are not in the
            question file (named).
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: predictions file not found")
    predictions: dict[str, str] = {}
    first_line: dict[str, int] = {}
    unknown: list[str] = []
    try:
        lines = path.read_text(encoding="utf-8").split("\n")  # not splitlines: U+2028 may sit in a string
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{path}: not UTF-8 text ({exc})") from None
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line, parse_constant=_refuse_constant)
        except json.JSONDecodeError as exc:
            raise BadInputError(f"{path}, line {line_no}: not valid JSON ({exc.msg})") from None
        except _NonStandardConstant as exc:
            message = f"not valid JSON ({exc} is not a JSON value)"
            raise BadInputError(f"{path}, line {line_no}: {message}") from None
        if not isinstance(record, dict) or id_key not in record or "prediction" not in record:
            raise BadInputError(
                f"{path}, line {line_no}: expected an object with {id_key!r} and 'prediction'"
            )
        try:
            key = key_of(record[id_key])
        except TypeError:
            raise BadInputError(f"{path}, line {line_no}: {id_key!r} must be a number or string") from None
        if key in first_line:
            raise BadInputError(
                f"{path}, line {line_no}: duplicate {id_key} {key!r} (first seen on line {first_line[key]})"
            )
        first_line[key] = line_no
        if key not in known:
            unknown.append(key)
        text = record["prediction"]
        if text is None:
            continue
        if isinstance(text, bool) or not isinstance(text, (str, int, float)):
            raise BadInputError(f"{path}, line {line_no}: 'prediction' must be a string")
        predictions[key] = str(text)
    if unknown:
        raise BadInputError(f"{path}: {id_key!r} values not in the question file: {_listing(unknown)}")
    return predictions


class _NonStandardConstant(ValueError):
    """NaN, Infinity or -Infinity: accepted by Python's json module, not valid JSON."""


def _refuse_constant(name: str) -> Any:
    raise _NonStandardConstant(name)


def _listing(items: list[str], limit: int = 20) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" ... ({len(items)} in all)" if len(items) > limit else "")


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON to ``path`` through a temporary file and ``os.replace`` (never half-written)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False, allow_nan=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_jsonl_atomic(path: str | Path, records: list[dict[str, Any]]) -> None:
    """Write JSON lines through a temporary file and ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
