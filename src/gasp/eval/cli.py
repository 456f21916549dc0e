"""Spatial benchmarks (VSI-Bench, All-Angles Bench), scored exactly as their official code.

  gasp eval score   --benchmark B --questions FILE --predictions PRED.jsonl --output-dir OUT
  gasp eval run     --benchmark B --model PATH_OR_PRESET --questions FILE --media-root DIR --output-dir OUT
  gasp eval compare A/results.json B/results.json

Predictions are JSON lines: {"id": ..., "prediction": "..."} for VSI-Bench (the question file's id),
{"index": ..., "prediction": "..."} for All-Angles. OUT gets results.json (official keys, x100),
results.md, results.png and per_question.jsonl. See docs/EVAL.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gasp.eval.common import BENCHMARKS
from gasp.eval.frames import DEFAULT_NUM_FRAMES
from gasp.eval.parsing import PARSERS
from gasp.eval.run import INPUT_MODES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    score = sub.add_parser("score", help="score a predictions file")
    _common(score)
    score.add_argument(
        "--predictions", required=True, type=Path, help="JSON lines with id/index and prediction"
    )
    score.add_argument(
        "--parser",
        choices=PARSERS,
        default="official",
        help="VSI-Bench answer parsing: 'official' (first token, as published numbers) or 'lenient' "
        "(first letter/number anywhere; diagnostic only). Default: official",
    )

    run = sub.add_parser("run", help="generate predictions with a model (resumable), then score them")
    _common(run)
    run.add_argument("--model", required=True, help="checkpoint folder or preset name (gasp.models)")
    run.add_argument(
        "--media-root",
        required=True,
        type=Path,
        help="VSI-Bench: folder with {dataset}/{scene_name}.mp4; All-Angles: root of image_path",
    )
    run.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    run.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "bfloat16", "float16"],
        help="model dtype (default: as saved)",
    )
    run.add_argument("--batch-size", type=int, default=1, help="questions per generate() call (default 1)")
    run.add_argument(
        "--num-frames",
        type=int,
        default=None,
        help="video frames per VSI-Bench question (default: the published protocol's count for the "
        f"model's video input, {DEFAULT_NUM_FRAMES} for separate frames)",
    )
    run.add_argument(
        "--input",
        dest="input_mode",
        choices=INPUT_MODES,
        default="auto",
        help="how VSI-Bench videos reach the model: 'video' (the model's video input, the published "
        "protocol; Qwen-VL and LLaVA families), 'images' (separate frames), 'auto' (video when the "
        "family has it; default). All-Angles views are always images",
    )
    run.add_argument("--limit", type=int, default=None, help="only the first N questions (smoke tests)")

    compare = sub.add_parser("compare", help="print B - A for every metric of two results.json files")
    compare.add_argument("a", type=Path, help="baseline results.json (or its folder)")
    compare.add_argument("b", type=Path, help="results.json (or folder) to compare with the baseline")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--benchmark", required=True, choices=BENCHMARKS, help="which benchmark")
    parser.add_argument(
        "--questions",
        required=True,
        type=Path,
        help="official question file (VSI-Bench parquet, All-Angles data.json)",
    )
    parser.add_argument("--output-dir", required=True, type=Path, help="where results are written")


def run(args: argparse.Namespace) -> int:
    from gasp.eval import report

    if args.action == "compare":
        a, b = report.load_results(args.a), report.load_results(args.b)
        print(report.compare(a, b, str(args.a), str(args.b)), end="")
        return 0
    from gasp.locks import folder_lock

    with folder_lock(args.output_dir, f"eval {args.action}"):
        return _score_or_run(args)


def _score_or_run(args: argparse.Namespace) -> int:
    from gasp.eval import report, scoring

    if args.action == "score":
        questions = scoring.load_questions(args.benchmark, args.questions)
        scored = scoring.score_file(args.benchmark, questions, args.predictions, args.parser)
        results = scoring.write_outputs(scored, args.benchmark, args.parser, args.output_dir)
    else:
        from gasp.eval.run import load_model
        from gasp.eval.run import run as run_benchmark

        results = run_benchmark(
            load_model(args.model, args.device, args.dtype),
            args.benchmark,
            args.questions,
            args.media_root,
            args.output_dir,
            batch_size=args.batch_size,
            num_frames=args.num_frames,
            limit=args.limit,
            input_mode=args.input_mode,
        )
    print(report.markdown_table(results), end="")
    print(f"wrote {args.output_dir / 'results.json'}")
    return 0
