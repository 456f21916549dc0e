"""The `gasp prepare` summary: what was written and what was skipped, grouped by reason, each group
shown with the exact text of one example and the file it came from."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

LOW_OVERLAP = "low overlap with the anchor"
NO_USABLE_SEQUENCE = "no usable sequence"


def _strip_parentheses(text: str) -> str:
    """``text`` without parenthesised parts, nested ones included."""
    while True:
        stripped = re.sub(r"\s*\([^()]*\)", "", text)
        if stripped == text:
            return re.sub(r"[()]", "", stripped)  # an unbalanced leftover (a cut-off message)
        text = stripped


def reason_key(reason: str) -> str:
    """The group of a skip reason (for counting only; the summary shows an exact example): without
    parenthesised details or text after a colon, numbers as N."""
    text = _strip_parentheses(reason).split(":")[0]
    return re.sub(r"-?\d+(\.\d+)?(e[+-]?\d+)?", "N", text).strip() or reason


@dataclass
class PrepareSummary:
    """What a `gasp prepare` run produced and skipped (also stored in the manifest's ``summary``).

    Attributes:
        output: the output folder.
        scenes: scenes given; scenes_used: scenes that gave at least one sequence.
        scenes_skipped: reason group -> scenes without any sequence.
        sequences: sequences in the index; sequences_skipped: reason -> sampled sequences left out.
        frames: frames summed over sequences; frames_stored: distinct frames stored (once per scene).
        frames_skipped: reason group -> count: unreadable frames once per distinct frame, frames a
            reader dropped while indexing its scene, and low-overlap drops once per drop.
        examples: reason group -> ``{"file": ..., "reason": exact text}`` of one example.
        scenes_reused: scenes finished by an earlier run (kept as they were).
        seconds: wall time of this run.
    """

    output: str
    scenes: int
    scenes_used: int
    scenes_skipped: dict[str, int]
    sequences: int
    sequences_skipped: dict[str, int]
    frames: int
    frames_stored: int
    frames_skipped: dict[str, int]
    examples: dict[str, dict[str, str]] = field(default_factory=dict)
    bytes: int = 0
    scenes_reused: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON form without run-dependent fields (time, reuse, output), so manifests are reproducible."""
        d = dataclasses.asdict(self)
        for key in ("seconds", "scenes_reused", "output"):
            d.pop(key)
        return d

    def format(self) -> str:
        """Human-readable multi-line report."""

        def reasons(counts: dict[str, int]) -> str:
            lines = []
            for key, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
                ex = self.examples.get(key)
                if ex is None:
                    lines.append(f"\n    {n:6d}  {key}")
                else:
                    lines.append(f"\n    {n:6d}  {ex['reason']}\n            e.g. {ex['file']}")
            return "".join(lines)

        rate = self.sequences / self.seconds if self.seconds > 0 else float("nan")
        return (
            f"prepared {self.output}: {self.sequences} sequences ({self.frames} frames, "
            f"{self.frames_stored} stored once, {self.bytes / 1e6:.1f} MB) from "
            f"{self.scenes_used}/{self.scenes} scenes ({self.scenes_reused} reused), "
            f"{self.seconds:.1f} s ({rate:.2f} sequences/s)"
            f"\n  scenes skipped: {sum(self.scenes_skipped.values())}{reasons(self.scenes_skipped)}"
            f"\n  sequences skipped: {sum(self.sequences_skipped.values())}{reasons(self.sequences_skipped)}"
            f"\n  frames skipped: {sum(self.frames_skipped.values())}{reasons(self.frames_skipped)}"
        )


def new_stats() -> dict[str, Any]:
    """Per-scene statistics a scene job fills (stored in the scene's manifest entry)."""
    return {
        "sequences_skipped": Counter(),
        "low_overlap": 0,
        "frames": 0,
        "bad_frames": [],  # [reader position, reason, file]
        "dropped": [],  # [file, reason]: left out by the reader while indexing
        "scene_error": None,
    }


def summarize(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over scene entries (reproducible: no timings), with one exact example per reason."""
    seq_skipped: Counter = Counter()
    frames_skipped: Counter = Counter()
    scenes_skipped: Counter = Counter()
    examples: dict[str, dict[str, str]] = {}

    def count(counter: Counter, reason: str, file: str, prefix: str = "") -> None:
        key = prefix + reason_key(reason)
        counter[key] += 1
        examples.setdefault(key, {"file": file, "reason": prefix + reason})

    for e in entries:
        stats = e["stats"]
        seq_skipped.update(stats["sequences_skipped"])
        for _, reason, path in stats["bad_frames"]:
            count(frames_skipped, reason, path)
        for path, reason in stats["dropped"]:
            count(frames_skipped, reason, path, prefix="dropped by the reader: ")
        if stats["low_overlap"]:
            frames_skipped[LOW_OVERLAP] += stats["low_overlap"]
        if stats["scene_error"]:
            count(scenes_skipped, stats["scene_error"], e["spec"], prefix="could not be opened: ")
        elif e["num_sequences"] == 0:
            scenes_skipped[NO_USABLE_SEQUENCE] += 1
    return {
        "scenes": len(entries),
        "scenes_used": sum(1 for e in entries if e["num_sequences"] > 0),
        "scenes_skipped": dict(sorted(scenes_skipped.items())),
        "sequences": sum(e["num_sequences"] for e in entries),
        "sequences_skipped": dict(sorted(seq_skipped.items())),
        "frames": sum(e["stats"]["frames"] for e in entries),
        "frames_stored": sum(e["num_frames"] for e in entries),
        "frames_skipped": dict(sorted(frames_skipped.items())),
        "examples": dict(sorted(examples.items())),
        "bytes": sum(e.get("bytes", 0) for e in entries),
    }
