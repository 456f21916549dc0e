"""What `gasp probe` reads: the model ``--model`` names (with a `gasp train` checkpoint's
correspondence heads and trained token grid) and the held-out samples of a prepared folder."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from gasp.errors import BadInputError


def load_model(spec: str | Path) -> tuple[Any, Any, float | None]:
    """``(adapter, heads or None, head temperature or None)`` for what ``--model`` names.

    A `gasp train` run or checkpoint folder (``state.json``) gives its trained model (LoRA merged, or
    the full fine-tuning weights; ``gasp.export.load_trained``) and its correspondence heads;
    anything else goes to ``gasp.models.load_adapter`` (a preset name, a HF checkpoint folder such
    as a `gasp export` output, or a hub id).
    """
    from gasp.models import load_adapter
    from gasp.training.checkpoint import checkpoint_root

    path = Path(spec)
    if not (path / "state.json").is_file() and not checkpoint_root(path).is_dir():
        return load_adapter(str(spec)), None, None
    from gasp.export import load_trained
    from gasp.models.heads import CorrespondenceHeads
    from gasp.training.checkpoint import read_state, resolve_checkpoint
    from gasp.training.state import read_trainable

    ckpt = resolve_checkpoint(path)
    state = read_state(ckpt)
    adapter = load_trained(ckpt, state)
    info = state.get("heads")
    if not info:
        return adapter, None, None
    heads = CorrespondenceHeads(adapter.hidden_size, info["layers"], int(info["d_emb"]))
    weights = read_trainable(ckpt)
    prefix = "heads."
    missing = heads.load_state_dict(
        {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}, strict=False
    )
    if missing.missing_keys:
        raise BadInputError(f"{ckpt}: the checkpoint lacks head weights {missing.missing_keys[:3]}")
    return adapter, heads, float(state.get("config", {}).get("tau", 0.07))


def trained_grid(spec: str | Path) -> list[int] | None:
    """The token grid a `gasp train` run or checkpoint was trained with (``--grid``), else None."""
    from gasp.training.checkpoint import list_checkpoints, read_state, resolve_checkpoint

    path = Path(spec)
    if not (path / "state.json").is_file() and not list_checkpoints(path):
        return None
    grid = read_state(resolve_checkpoint(path)).get("config", {}).get("grid")
    return list(grid) if grid else None


def heldout_samples(
    data: str | Path, adapter: Any, grid: Sequence[int] | None, queries: str, max_sequences: int, workers: int
) -> Iterable[dict[str, Any]]:
    """The first ``max_sequences`` sequences of a prepared folder (index order) as samples for
    ``adapter``'s token grid (``grid``, default the model's) and frame size, built in ``workers``
    DataLoader worker processes."""
    from gasp.data.loader import iter_samples, model_frame_size, open_prepared

    grid_, image_hw = model_frame_size(adapter, grid or None)
    count = min(max_sequences, len(open_prepared(data).index))
    return iter_samples(str(data), grid_, image_hw, queries, range(count), num_workers=workers)
