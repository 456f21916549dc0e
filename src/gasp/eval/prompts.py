"""The official prompts of both benchmarks (snapshot-tested: do not edit casually).

VSI-Bench: thinking-in-space ``vsibench_doc_to_text`` with the ``default`` lmms-eval kwargs.
All-Angles Bench: the question, one ``"L. text"`` line per option, then the standard
multiple-choice instruction.
"""

from __future__ import annotations

VSI_PRE_PROMPT = "These are frames of a video."
MCA_POST_PROMPT = "Answer with the option's letter from the given choices directly."
NA_POST_PROMPT = "Please answer the question using a single word or phrase."


def vsibench_prompt(question: str, options: list[str] | None) -> str:
    """VSI-Bench prompt: numeric questions (``options`` None) or multiple choice.

    Args:
        question: the ``question`` field.
        options: the ``options`` field, already formatted as ``"A. text"`` lines, or None.
    """
    if options is None:
        return VSI_PRE_PROMPT + "\n" + question + "\n" + NA_POST_PROMPT
    return "\n".join([VSI_PRE_PROMPT, question, "Options:\n" + "\n".join(options), MCA_POST_PROMPT])


def allangles_prompt(question: str, options: dict[str, str]) -> str:
    """All-Angles Bench prompt: question, ``"A. text"`` per option, instruction."""
    lines = [question, *(f"{letter}. {text}" for letter, text in options.items()), MCA_POST_PROMPT]
    return "\n".join(lines)
