"""Visual inputs of the benchmarks: N evenly spaced video frames (PyAV) and multi-view image sets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gasp.errors import BadInputError

DEFAULT_NUM_FRAMES = 32


def frame_indices(total: int, num_frames: int = DEFAULT_NUM_FRAMES) -> list[int]:
    """Indices of ``num_frames`` evenly spaced frames of a ``total``-frame video, first and last included.

    Rounded ``linspace(0, total - 1, num_frames)``, deduplicated, so a video shorter than
    ``num_frames`` gives each of its frames once.
    """
    if total <= 0:
        return []
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    return sorted({int(round(x)) for x in np.linspace(0, total - 1, num_frames)})


def read_video_frames(path: str | Path, num_frames: int = DEFAULT_NUM_FRAMES) -> np.ndarray:
    """Decode ``num_frames`` evenly spaced frames of a video (``frame_indices``).

    Returns:
        (F, H, W, 3) uint8 RGB, F = min(num_frames, number of frames in the video).

    Raises:
        BadInputError: the file is missing, undecodable, or has no video frame.
    """
    return _decode(path, lambda total: frame_indices(total, num_frames))[0]


def read_video_clip(path: str | Path, num_frames: int) -> Any:
    """A `gasp.models.video.VideoClip` of ``num_frames`` frames sampled as lmms-eval does.

    Indices ``linspace(0, n_frames - 1, num_frames)`` truncated to integers (deduplicated), with
    the video's frame rate, for the model's video input (timestamps, temporal positions).

    Raises:
        BadInputError: the file is missing, undecodable, or has no video frame.
    """
    from gasp.models.video import VideoClip, sample_indices

    frames, indices, total, fps = _decode(path, lambda n: sample_indices(n, num_frames))
    return VideoClip(frames, tuple(indices), total, fps)


def _decode(
    path: str | Path, pick: Callable[[int], list[int]]
) -> tuple[np.ndarray, list[int], int, float | None]:
    """(frames, their indices, frame count, fps) of the frames ``pick(frame count)`` of a video."""
    import av

    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: video not found")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise BadInputError(f"{path}: no video stream")
            stream = container.streams.video[0]
            total = stream.frames or sum(1 for p in container.demux(stream) if p.size)
            fps = float(stream.average_rate) if stream.average_rate else None
        wanted = pick(total)
        frames: list[np.ndarray] = []
        taken: list[int] = []
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            targets = iter(wanted)
            target = next(targets, None)
            last, last_index = None, -1
            for i, frame in enumerate(container.decode(stream)):
                last, last_index = frame, i
                if i == target:
                    frames.append(frame.to_ndarray(format="rgb24"))
                    taken.append(i)
                    target = next(targets, None)
                    if target is None:
                        break
            # Containers can announce more frames than they decode: fill with the last one.
            if target is not None and last is not None:
                frames.append(last.to_ndarray(format="rgb24"))
                taken.append(last_index)
    except av.error.FFmpegError as exc:
        raise BadInputError(f"{path}: cannot decode video ({exc})") from None
    if not frames:
        raise BadInputError(f"{path}: no decodable video frame")
    return np.stack(frames), taken, total, fps


def read_images(paths: list[str | Path]) -> np.ndarray:
    """Load a set of views as one (F, H, W, 3) uint8 array, each resized to the first view's size."""
    from PIL import Image, UnidentifiedImageError

    views = []
    size = None
    for path in paths:
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB")
        except FileNotFoundError:
            raise BadInputError(f"{path}: image not found") from None
        except (UnidentifiedImageError, OSError) as exc:
            raise BadInputError(f"{path}: cannot read image ({exc})") from None
        size = size or rgb.size
        if rgb.size != size:
            rgb = rgb.resize(size, Image.BILINEAR)
        views.append(np.asarray(rgb, dtype=np.uint8))
    if not views:
        raise BadInputError("no image paths given")
    return np.stack(views)
