"""The ``gasp`` command: one entry point, subcommands dispatched lazily to their modules.

Each command module exposes ``add_arguments(parser)`` and ``run(args) -> int``; importing it only
when its command is chosen keeps ``gasp --help`` fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": (
        "gasp.data.prepare",
        "scenes -> prepared data: frames stored once + the paper's sequence index",
    ),
    "annotate": (
        "gasp.data.annotate",
        "depth maps for scenes without depth (DL3DV, COLMAP) from a depth model",
    ),
    "show-matches": ("gasp.data.show_matches", "draw ground-truth correspondences of two frames as PNGs"),
    "train": ("gasp.train", "train a VLM with GASP's correspondence heads and losses (accelerate, LoRA)"),
    "export": ("gasp.export", "merge LoRA, drop the heads, save a plain Hugging Face checkpoint"),
    "probe": ("gasp.probe", "layer-wise correspondence analysis (PCK, confidence rho, temporal robustness)"),
    "eval": ("gasp.eval.cli", "spatial benchmarks: score predictions, run a model, compare results"),
    "demo": ("gasp.demo", "the whole effect on a CPU: synthetic scenes, three tiny VLMs, probe, figure"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gasp",
        description="GASP: inject 3D correspondence priors into vision-language models.",
        epilog="Run `gasp COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def command_parser(name: str) -> tuple[argparse.ArgumentParser, object]:
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(
        prog=f"gasp {name}",
        description=module.__doc__ or help_text,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    return parser, module


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = build_parser()
    if not argv or argv[0] in {"-h", "--help"}:
        top.print_help()
        return 0
    if argv[0] == "--version":
        from gasp import __version__

        print(__version__)
        return 0
    name = argv[0]
    if name not in COMMANDS:
        top.error(f"unknown command {name!r}; choose from: {', '.join(COMMANDS)}")
    parser, module = command_parser(name)
    args = parser.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except GaspError as exc:
        print(f"gasp {name}: error: {exc}", file=sys.stderr)
        return 2


from gasp.errors import GaspError  # noqa: E402  (kept light: no torch import)
