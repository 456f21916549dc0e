"""One entry point per action on either benchmark: load questions, score a predictions file, write outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gasp.errors import ConfigError
from gasp.eval import allangles, report, vsibench
from gasp.eval.common import (
    BENCHMARKS,
    ID_KEYS,
    Scored,
    load_predictions,
    write_json_atomic,
    write_jsonl_atomic,
)

_MODULES = {"vsibench": vsibench, "all-angles": allangles}


def benchmark_module(benchmark: str):
    """The module implementing ``benchmark`` (`gasp.eval.vsibench` or `gasp.eval.allangles`)."""
    try:
        return _MODULES[benchmark]
    except KeyError:
        raise ConfigError(
            f"--benchmark {benchmark!r} is unknown; choose from {', '.join(BENCHMARKS)}"
        ) from None


def load_questions(benchmark: str, path: str | Path) -> list[Any]:
    """Questions of ``benchmark`` from its official file."""
    return benchmark_module(benchmark).load_questions(path)


def score_file(
    benchmark: str, questions: list[Any], predictions_path: str | Path, parser: str = "official"
) -> Scored:
    """Score a JSON-lines predictions file against loaded questions."""
    if benchmark == "all-angles" and parser != "official":
        raise ConfigError("--parser: All-Angles Bench has only the official (VLMEvalKit) matching")
    predictions = load_predictions(predictions_path, ID_KEYS[benchmark], {q.key for q in questions})
    return benchmark_module(benchmark).score(questions, predictions, parser)


def write_outputs(
    scored: Scored, benchmark: str, parser: str, output_dir: str | Path, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write ``results.json`` (atomically), ``per_question.jsonl``, ``results.md`` and ``results.png``.

    ``extra`` keys (e.g. ``generation``: how predictions were generated) are added to ``results.json``.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = {**scored.to_json(benchmark, parser), **(extra or {})}
    write_jsonl_atomic(out / "per_question.jsonl", scored.per_question)
    (out / "results.md").write_text(report.markdown_table(results), encoding="utf-8")
    report.bar_chart(results, out / "results.png")
    write_json_atomic(out / "results.json", results)
    return results
