"""Paper frame sampling: an anchor frame plus F-1 frames drawn around it, and an overlap measure.

Frame indices are positions in the source video (0-based). Randomness comes from a
``numpy.random.Generator`` so a seed reproduces a whole prepared data set.
"""

from __future__ import annotations

import numpy as np
import torch

from gasp.geometry.token_grid import TokenTargets


def draw_num_frames(rng: np.random.Generator, lo: int = 8, hi: int = 24) -> int:
    """Sequence length F drawn uniformly from ``[lo, hi]`` (inclusive; paper: 8..24)."""
    if not 1 <= lo <= hi:
        raise ValueError(f"need 1 <= lo <= hi, got lo={lo}, hi={hi}")
    return int(rng.integers(lo, hi + 1))


def sample_sequence(
    num_video_frames: int, anchor: int, num_frames: int, radius: int = 48, *, rng: np.random.Generator
) -> list[int]:
    """Frame indices of one training sequence (paper sampling).

    The anchor ``t_a`` comes first; the other ``num_frames - 1`` indices are drawn uniformly with
    replacement from ``[t_a - radius, t_a + radius]`` clipped to ``[0, num_video_frames - 1]`` (so they
    may repeat, or equal the anchor) and sorted by time.

    Args:
        num_video_frames: number of frames in the video.
        anchor: anchor frame index ``t_a``.
        num_frames: sequence length F (>= 1), anchor included.
        radius: half-width R of the window around the anchor, in frames.
        rng: source of randomness.

    Returns:
        ``[anchor, t_1, ..., t_{F-1}]`` with ``t_1 <= ... <= t_{F-1}``.
    """
    if num_video_frames <= 0:
        raise ValueError(f"num_video_frames must be positive, got {num_video_frames}")
    if not 0 <= anchor < num_video_frames:
        raise ValueError(f"anchor={anchor} is outside the video's frames 0..{num_video_frames - 1}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    lo, hi = max(0, anchor - radius), min(num_video_frames - 1, anchor + radius)
    others = np.sort(rng.integers(lo, hi + 1, size=num_frames - 1))
    return [int(anchor)] + [int(t) for t in others]


def overlap_fraction(targets: TokenTargets) -> torch.Tensor:
    """Per-frame fraction of the anchor's ``gh * gw`` cells with a valid match, ``(F,)`` float32.

    The denominator is all anchor cells (cells without valid anchor depth count as unmatched), so the
    anchor frame's own value is its fraction of cells with valid depth. ``gasp prepare`` uses it as a
    minimum-overlap filter: frames (other than the anchor) whose overlap is below the configured
    minimum are redrawn or the sequence is skipped, so every sequence carries enough supervision.
    """
    return targets.valid.to(torch.float32).mean(dim=-1)
