"""Turning a model's free-text answer into something scorable, exactly as the official code does.

VSI-Bench (thinking-in-space, ``lmms_eval/tasks/vsibench/utils.py``):
    the answer is cut at the first *space* character (``str.split(" ")``, not any whitespace), a
    trailing ``.`` is stripped, then surrounding whitespace. Multiple-choice answers are compared
    case-insensitively with the ground-truth letter; numeric answers go through Python ``float()``
    (``"nan"``, ``"inf"``, ``"1e3"``, ``"1_000"`` all parse, as they do there), a failure scores 0.

All-Angles Bench (VLMEvalKit ``vlmeval/utils/matching_util.py`` ``can_infer``, the ``exact_matching``
policy, no LLM judge): a single option letter among the answer's words once ``.()[],:;!*#{}`` are
replaced by spaces; else the unique option whose text appears in the answer (case-insensitive);
otherwise no answer. Known refusal phrases and a bare ``Z`` map to ``"Z"``, which is never right.

The ``lenient`` VSI-Bench parser (never the default) takes the first option letter or number found
anywhere in the answer; it is for diagnosing formatting failures, not for reporting numbers.
"""

from __future__ import annotations

import re

PARSERS = ("official", "lenient")

# VLMEvalKit's refusal strings: when one appears, the inferred option is "Z" (always wrong).
REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
API_FAILURE = "Failed to obtain answer via API"
_PUNCTUATION = ".()[],:;!*#{}"
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def first_token(answer: str) -> str:
    """thinking-in-space ``fuzzy_matching``: text before the first space, trailing '.' stripped."""
    return answer.split(" ")[0].rstrip(".").strip()


def to_float(text: str) -> float | None:
    """Python ``float(text)``, or None when it fails (the official ``to_float``)."""
    try:
        return float(text)
    except (TypeError, ValueError, OverflowError):
        return None


def lenient_letter(answer: str, letters: list[str]) -> str:
    """First standalone option letter anywhere in ``answer`` ("The answer is (B)" -> "B"), else ""."""
    for match in re.finditer(r"(?<![A-Za-z])([A-Za-z])(?![A-Za-z])", answer):
        if match.group(1) in letters:
            return match.group(1)
    return ""


def lenient_number(answer: str) -> float | None:
    """First decimal number anywhere in ``answer`` ("about 3.5 meters" -> 3.5), else None."""
    match = _NUMBER.search(answer)
    return float(match.group(0)) if match else None


def infer_option(answer: str, options: dict[str, str]) -> str | None:
    """VLMEvalKit ``can_infer``: the option letter an answer names, "Z" for refusals, else None.

    Args:
        answer: the model's raw answer.
        options: letter -> option text (only the letters the question has).
    """
    answer = str(answer)
    letter = _infer_letter(answer, options)
    return letter if letter else _infer_text(answer, options)


def _infer_letter(answer: str, options: dict[str, str]) -> str | None:
    if API_FAILURE in answer:
        return None
    if any(refusal in answer for refusal in REFUSALS):
        return "Z"
    for char in _PUNCTUATION:
        answer = answer.replace(char, " ")
    words = answer.split()
    named = [letter for letter in options if letter in words]
    if len(named) == 1:
        return named[0]
    if not named and "Z" in words:
        return "Z"
    return None


def _infer_text(answer: str, options: dict[str, str]) -> str | None:
    answer = answer.lower()
    hits = [letter for letter, text in options.items() if str(text).lower() in answer]
    return hits[0] if len(hits) == 1 else None
