"""Export a trained run as a plain Hugging Face checkpoint: LoRA merged (or, for ``--finetune full``
runs, the trained weights loaded), heads dropped.

The result has exactly the base architecture (same class, parameter names and count) and is loaded by
stock transformers, e.g. ``AutoModelForImageTextToText.from_pretrained(OUT)``: GASP adds nothing at
inference. Weights are saved as safetensors next to the config and the tokenizer/processor files.

Examples:
  gasp export --checkpoint runs/x --output-dir runs/x-export            # newest checkpoint of a run
  gasp export --checkpoint runs/x/checkpoints/step-0000020 --output-dir out
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gasp.errors import BadInputError, ConfigError
from gasp.export_guard import check_output_dir, publish
from gasp.locks import folder_lock
from gasp.training.checkpoint import read_state, resolve_checkpoint


def _base_model(ckpt: Path, state: dict) -> str:
    """The base model of a checkpoint: as recorded, else the run's ``base/`` folder (run moved)."""
    ref = str(state.get("base_model", ""))
    if ref and (Path(ref).exists() or not ref.startswith("/")):
        return ref
    local = ckpt.parent.parent / "base"
    if (local / "config.json").is_file():
        return str(local)
    raise BadInputError(f"{ckpt}: base model {ref!r} not found (and no {local})")


def finetune_kind(state: dict) -> str:
    """``lora`` or ``full``: how the run of a checkpoint state trained its model."""
    return str(state.get("finetune") or state.get("config", {}).get("finetune") or "lora")


def _lora_config(ckpt: Path, state: dict):
    """The TrainConfig a LoRA checkpoint was trained with (its LoRA settings rebuild the adapter)."""
    import dataclasses

    from gasp.config import TrainConfig

    saved = state.get("config") or {}
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    try:
        return TrainConfig.from_dict({k: v for k, v in saved.items() if k in known}, where=str(ckpt))
    except ConfigError as exc:
        raise BadInputError(f"{ckpt / 'state.json'}: config unreadable ({exc})") from exc


def load_trained(ckpt: Path, state: dict):
    """The trained model of complete checkpoint ``ckpt`` as a plain adapter (no peft wrapper, no heads).

    The trained tensors are read whole from the checkpoint's shards (``gasp.training.state.read_trainable``,
    whatever number of processes wrote them). LoRA runs: the base model with LoRA rebuilt from the
    run's settings, loaded and merged. Full fine-tuning runs: the base model with every ``model.*``
    tensor loaded (frozen weights stay the base's).

    Raises:
        BadInputError: missing files, or tensors that do not fit the base model.
    """
    from gasp.models import load_adapter
    from gasp.training.setup import apply_lora
    from gasp.training.state import read_trainable

    tensors = read_trainable(ckpt)
    prefix = "model."
    weights = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not weights:
        raise BadInputError(f"{ckpt}: the checkpoint holds no model.* weights")
    adapter = load_adapter(_base_model(ckpt, state))
    base_shapes = {k: tuple(v.shape) for k, v in adapter.model.state_dict().items()}
    peft_model = None
    if finetune_kind(state) != "full":
        peft_model = apply_lora(adapter, _lora_config(ckpt, state))
        expected = {n for n, p in adapter.model.named_parameters() if p.requires_grad}
        absent = sorted(expected - set(weights))
        if absent:
            raise BadInputError(f"{ckpt}: LoRA weights missing from the checkpoint, e.g. {absent[:3]}")
    result = adapter.model.load_state_dict(weights, strict=False)
    if result.unexpected_keys:
        raise BadInputError(f"{ckpt}: tensors not in the model, e.g. {result.unexpected_keys[:3]}")
    if peft_model is not None:
        adapter.model = peft_model.merge_and_unload()
    shapes = {k: tuple(v.shape) for k, v in adapter.model.state_dict().items()}
    if shapes != base_shapes:
        extra = sorted(set(shapes) - set(base_shapes))[:3]
        missing = sorted(set(base_shapes) - set(shapes))[:3]
        raise BadInputError(f"{ckpt}: trained model differs from the base (extra {extra}, missing {missing})")
    return adapter


def export(checkpoint: str | Path, output_dir: str | Path, overwrite: bool = False) -> Path:
    """Save the trained model of ``checkpoint`` (LoRA merged, or full fine-tuning weights) to ``output_dir``.

    Sharded checkpoints (FSDP, several processes) are consolidated in this one process.

    Args:
        checkpoint: a complete checkpoint folder or a run folder (its newest complete checkpoint).
        output_dir: destination: new, empty, or a previous export (written beside it, then swapped in
            atomically; see :mod:`gasp.export_guard`).
        overwrite: replace a previous export at ``output_dir``.

    Returns:
        The output folder.

    Raises:
        BadInputError: no checkpoint / base model; an incomplete checkpoint (no completion marker); the
            trained model's parameters differ from the base's.
        ConfigError: ``output_dir`` is a file, is/contains/lies inside the run exported, holds a run or
            prepared data, is a non-empty folder export did not write, or a previous export without
            ``overwrite``.
    """
    out = Path(output_dir)
    ckpt = resolve_checkpoint(checkpoint)
    check_output_dir(out, Path(checkpoint), ckpt, overwrite)
    with folder_lock(out, "export", beside=True):
        return _export(ckpt, out, overwrite)


def _export(ckpt: Path, out: Path, overwrite: bool) -> Path:
    state = read_state(ckpt)
    adapter = load_trained(ckpt, state)
    return publish(out, adapter.save_pretrained, {"checkpoint": str(ckpt.resolve())}, overwrite)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="checkpoint folder, or a run folder (its newest checkpoint is used)",
    )
    parser.add_argument("--output-dir", required=True, help="where to write the trained HF checkpoint")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a previous export at --output-dir (never a folder export did not write)",
    )


def run(args: argparse.Namespace) -> int:
    out = export(args.checkpoint, args.output_dir, overwrite=args.overwrite)
    print(f"exported {resolve_checkpoint(args.checkpoint)} -> {out}")
    return 0
