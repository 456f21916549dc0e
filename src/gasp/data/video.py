"""Random access to the frames of a video file (PyAV): frame ``i`` of the stream, in presentation order.

The packets are indexed once (no decoding); a frame is then reached by seeking to the key frame at or
before it and decoding forward. Frames decoded on the way are kept in a small cache, so reading a
video in order decodes every frame once. The container is opened per process (readers are used by
pool workers).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from gasp.data.views import BadFrame

_CACHE = 16


class VideoFrames:
    """Frames of one video stream by index.

    Args:
        path: the video file (any container/codec FFmpeg decodes, e.g. ScanNet++'s ``rgb.mkv``).

    Raises:
        BadFrame: (when first used) the file is missing, undecodable or has no video stream.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._pid = None
        self._container = None
        self._pts: list[int] | None = None
        self._keys: list[int] = []
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])

    def _open(self):
        import av

        if self._container is not None and self._pid == os.getpid():
            return self._container
        if not self.path.is_file():
            raise BadFrame("video file is missing", self.path)
        try:
            self._container = av.open(str(self.path))
            stream = self._container.streams.video[0]
            if self._pts is None:
                packets = [(p.pts, p.is_keyframe) for p in self._container.demux(stream) if p.pts is not None]
                order = sorted(packets)
                self._pts = [p for p, _ in order]
                self._keys = [p for p, key in order if key]
                self._container.seek(0)
        except (av.FFmpegError, IndexError, OSError) as e:
            raise BadFrame(f"video cannot be decoded ({e})", self.path) from e
        self._pid = os.getpid()
        return self._container

    def __len__(self) -> int:
        self._open()
        return len(self._pts or [])

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` as (H, W, 3) uint8 RGB.

        Raises:
            BadFrame: no such frame, or decoding failed (the message names the file and frame).
        """
        import av

        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        container = self._open()
        assert self._pts is not None
        if not 0 <= i < len(self._pts):
            raise BadFrame(f"video has {len(self._pts)} frames, frame {i} does not exist", self.path)
        target = self._pts[i]
        stream = container.streams.video[0]
        key = max((k for k in self._keys if k <= target), default=self._pts[0])
        index_of = {p: n for n, p in enumerate(self._pts)}
        try:
            container.seek(key, stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                n = index_of.get(frame.pts)
                if n is None:
                    continue
                self._remember(n, frame.to_ndarray(format="rgb24"))
                if frame.pts >= target:
                    break
        except av.FFmpegError as e:
            raise BadFrame(f"frame {i} cannot be decoded ({e})", self.path) from e
        if i not in self._cache:
            raise BadFrame(f"frame {i} was not found when decoding", self.path)
        return self._cache[i]

    def _remember(self, n: int, image: np.ndarray) -> None:
        self._cache[n] = image
        self._cache.move_to_end(n)
        while len(self._cache) > _CACHE:
            self._cache.popitem(last=False)
