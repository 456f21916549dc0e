"""Dataclass -> argparse: the config dataclass is the CLI schema (no hand-written mirrors).

``add_dataclass_arguments(parser, Cls)`` adds one ``--field-name`` flag per field (help text taken
from the field's ``metadata["help"]``); ``apply_overrides(cfg, args)`` returns a copy of ``cfg``
with every flag the user actually gave replaced. Nested dataclasses become ``--outer.inner`` flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

_MISSING = object()


def _base_type(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0]) if len(args) == 1 else str
    return tp


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _converter(tp: Any):
    tp = _base_type(tp)
    origin = typing.get_origin(tp)
    if tp is bool:
        return _parse_bool, None
    if origin in (list, tuple):
        inner = typing.get_args(tp)
        elem = _base_type(inner[0]) if inner else str
        return (elem if elem in (int, float, str) else str), "+"
    if tp in (int, float, str):
        return tp, None
    return str, None


def option(default: Any, help: str) -> Any:
    """A dataclass field carrying its ``--help`` text; a list default is copied for every instance."""
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return _MISSING


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value) if value else "none"
    return str(value)


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        flag = "--" + prefix + f.name.replace("_", "-")
        if dataclasses.is_dataclass(_base_type(tp)):
            add_dataclass_arguments(parser, _base_type(tp), prefix=prefix + f.name.replace("_", "-") + ".")
            continue
        conv, nargs = _converter(tp)
        help_text = f.metadata.get("help", "")
        default = _field_default(f)
        if default is not _MISSING:
            help_text = f"{help_text} (default: {_show(default)})".strip()
        kwargs: dict[str, Any] = {
            "type": conv,
            "default": _MISSING,
            "dest": (prefix + f.name).replace("-", "_"),
            "help": help_text,
        }
        if nargs:
            kwargs["nargs"] = nargs
        parser.add_argument(flag, **kwargs)


def apply_overrides(cfg: Any, args: argparse.Namespace, prefix: str = "") -> Any:
    """Return ``cfg`` with every explicitly given flag applied (re-running ``__post_init__`` checks)."""
    changes: dict[str, Any] = {}
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        key = (prefix + f.name).replace("-", "_")
        tp = _base_type(hints[f.name])
        if dataclasses.is_dataclass(tp):
            sub = apply_overrides(getattr(cfg, f.name), args, prefix=prefix + f.name.replace("_", "-") + ".")
            if sub is not getattr(cfg, f.name):
                changes[f.name] = sub
            continue
        value = getattr(args, key, _MISSING)
        if value is _MISSING:
            continue
        if typing.get_origin(tp) is tuple:
            value = tuple(value)
        changes[f.name] = value
    return dataclasses.replace(cfg, **changes) if changes else cfg
