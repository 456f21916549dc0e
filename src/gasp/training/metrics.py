"""Per-step logs of a run: ``metrics.jsonl`` (one JSON line per step) and TensorBoard."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

METRICS = "metrics.jsonl"


def tb_name(key: str) -> str:
    """TensorBoard tag of a metrics key."""
    if key in ("loss", "lm", "corr", "depth"):
        return f"loss/{key}"
    if "/" in key:
        return f"layers/{key}"
    return f"train/{key}"


def read_history(path: Path, upto: int) -> list[dict[str, float]]:
    """Rows of an earlier invocation up to step ``upto`` (later rows were not checkpointed)."""
    if upto == 0 or not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["step"] <= upto]


def write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    """Replace ``path`` with ``rows`` atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, path)


class MetricsLog:
    """Main process: appends rows to ``metrics.jsonl`` and TensorBoard; other processes: no-op."""

    def __init__(self, out: Path, resumed_step: int, enabled: bool, log_every: int) -> None:
        self.path = out / METRICS
        self.enabled = enabled
        self.log_every = log_every
        self.history: list[dict[str, float]] = read_history(self.path, resumed_step) if enabled else []
        self.writer = None
        if enabled:
            write_history(self.path, self.history)
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "logs"))

    def append(self, row: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.history.append(row)
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        step = int(row["step"])
        if self.writer is not None and step % self.log_every == 0:
            for k, v in row.items():
                if k != "step":
                    self.writer.add_scalar(tb_name(k), v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
