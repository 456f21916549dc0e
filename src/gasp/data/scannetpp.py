"""ScanNet++ reader: the iPhone capture of a scene.

```
<scene_id>/iphone/                   (the scene folder or its iphone/ folder may be given)
  rgb.mkv                            colour video, 1920x1440 (or extracted rgb/frame_XXXXXX.jpg)
  depth.bin                          LiDAR depth, 256x192 per frame (or extracted depth/frame_XXXXXX.png,
                                     uint16 millimetres)
  pose_intrinsic_imu.json            {"frame_XXXXXX": {"aligned_pose": 4x4, "intrinsic": 3x3, ...}, ...}
```
``aligned_pose`` is camera-to-world in the laser scan's frame (OpenCV axes, metres: the data set's own
back-projection uses it with K directly); ``intrinsic`` is K of the 1920x1440 colour image and is
scaled to the depth image (depth is the same camera at a lower resolution). Frame ``XXXXXX`` is frame
number XXXXXX of the video and of ``depth.bin``.

``depth.bin`` comes in the two layouts the data set's extraction script reads, detected per file:
the whole file one raw-deflate (zlib, no header) stream of float32 metres, or a sequence of frames
each prefixed by its byte length (uint32 little-endian) and compressed with lz4 (block format) or
raw deflate; a frame decompressing to 2 bytes per pixel is uint16 millimetres, to 4 bytes float32
metres. Random access: per-frame files are indexed by their length prefixes; a whole-file stream is
decompressed once and checkpointed every 64 frames.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

from gasp.data.video import VideoFrames
from gasp.data.views import BadFrame, SceneReader, View, read_depth_png, read_image

DEPTH_HW = (192, 256)
COLOUR_HW = (1440, 1920)
POSES = "pose_intrinsic_imu.json"
_CHECKPOINT_EVERY = 64
_CHUNK = 1 << 20


def _iphone_dir(root: Path) -> Path:
    return root / "iphone" if (root / "iphone" / POSES).is_file() else root


def is_scannetpp(root: Path) -> bool:
    """Whether ``root`` (a scene folder or its iphone/ folder) holds a ScanNet++ iPhone capture."""
    return (_iphone_dir(root) / POSES).is_file()


def _to_metres(raw: bytes, path: Path, i: int) -> np.ndarray:
    n = DEPTH_HW[0] * DEPTH_HW[1]
    if len(raw) == 2 * n:
        return np.frombuffer(raw, dtype="<u2").reshape(DEPTH_HW).astype(np.float32) / 1000.0
    if len(raw) == 4 * n:
        return np.frombuffer(raw, dtype="<f4").reshape(DEPTH_HW).copy()
    raise BadFrame(
        f"depth frame {i} decompresses to {len(raw)} bytes, expected {2 * n} (uint16 mm) "
        f"or {4 * n} (float32 m) for {DEPTH_HW[1]}x{DEPTH_HW[0]}",
        path,
    )


class DepthBin:
    """Frames of a ScanNet++ ``depth.bin`` by index (see module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offsets: list[tuple[int, int]] | None = None  # per-frame layout: (offset, length)
        self._stream: list[tuple[int, object]] | None = None  # whole-file layout: checkpoints
        self._frames = 0

    def _index(self) -> None:
        if self._offsets is not None or self._stream is not None:
            return
        if not self.path.is_file():
            raise BadFrame("depth.bin is missing", self.path)
        size = self.path.stat().st_size
        offsets, pos = [], 0
        with self.path.open("rb") as f:
            while pos + 4 <= size:
                f.seek(pos)
                n = int.from_bytes(f.read(4), "little")
                if n == 0 or pos + 4 + n > size:
                    break
                offsets.append((pos + 4, n))
                pos += 4 + n
            framed = pos == size and offsets and self._decodes(f, offsets[0])
        if framed:
            self._offsets, self._frames = offsets, len(offsets)
        else:
            self._index_stream(size)

    def _decodes(self, f, entry: tuple[int, int]) -> bool:
        f.seek(entry[0])
        try:
            _to_metres(self._decompress(f.read(entry[1])), self.path, 0)
            return True
        except (BadFrame, zlib.error):
            return False

    @staticmethod
    def _decompress(data: bytes) -> bytes:
        import lz4.block

        try:
            return lz4.block.decompress(data, uncompressed_size=4 * DEPTH_HW[0] * DEPTH_HW[1])
        except lz4.block.LZ4BlockError:
            return zlib.decompress(data, wbits=-zlib.MAX_WBITS)

    def _index_stream(self, size: int) -> None:
        """One pass over a whole-file deflate stream: frame count and decompressor checkpoints."""
        frame_bytes = 4 * DEPTH_HW[0] * DEPTH_HW[1]
        d = zlib.decompressobj(wbits=-zlib.MAX_WBITS)
        checkpoints, produced, consumed = [(0, 0, d.copy())], 0, 0
        try:
            with self.path.open("rb") as f:
                while chunk := f.read(_CHUNK):
                    consumed += len(chunk)
                    out = d.decompress(chunk)
                    before = produced // frame_bytes
                    produced += len(out)
                    after = produced // frame_bytes
                    if after // _CHECKPOINT_EVERY > before // _CHECKPOINT_EVERY:
                        checkpoints.append((consumed, produced, d.copy()))
        except zlib.error as e:
            raise BadFrame(
                f"depth.bin is neither length-prefixed frames nor a deflate stream ({e})", self.path
            ) from e
        if not d.eof or produced % frame_bytes:
            raise BadFrame(
                f"depth.bin stream is truncated or not float32 {DEPTH_HW[1]}x{DEPTH_HW[0]} frames "
                f"({produced} bytes decompressed)",
                self.path,
            )
        self._stream, self._frames = checkpoints, produced // frame_bytes

    def __len__(self) -> int:
        self._index()
        return self._frames

    def frame(self, i: int) -> np.ndarray:
        """Depth frame ``i`` in metres (float32, 0 = invalid).

        Raises:
            BadFrame: no such frame, or it does not decompress to a depth image.
        """
        self._index()
        if not 0 <= i < self._frames:
            raise BadFrame(f"depth.bin has {self._frames} frames, frame {i} does not exist", self.path)
        if self._offsets is not None:
            offset, n = self._offsets[i]
            with self.path.open("rb") as f:
                f.seek(offset)
                data = f.read(n)
            try:
                return _to_metres(self._decompress(data), self.path, i)
            except zlib.error as e:
                raise BadFrame(f"depth frame {i} is neither lz4 nor deflate data ({e})", self.path) from e
        return self._stream_frame(i)

    def _stream_frame(self, i: int) -> np.ndarray:
        frame_bytes = 4 * DEPTH_HW[0] * DEPTH_HW[1]
        start, end = i * frame_bytes, (i + 1) * frame_bytes
        consumed, produced, state = max((c for c in self._stream if c[1] <= start), key=lambda c: c[1])
        d = state.copy()
        buf = bytearray()
        with self.path.open("rb") as f:
            f.seek(consumed)
            while produced + len(buf) < end and (chunk := f.read(_CHUNK)):
                buf += d.decompress(chunk)
        data = bytes(buf[start - produced : end - produced])
        return _to_metres(data, self.path, i)


class ScanNetPP(SceneReader):
    """The iPhone capture of a ScanNet++ scene (see module docstring).

    Args:
        root: the scene folder or its ``iphone/`` folder.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = _iphone_dir(Path(root))
        scene = self.root.parent.name if self.root.name == "iphone" else self.root.name
        self.name = f"scannetpp/{scene}"
        path = self.root / POSES
        try:
            meta = json.loads(path.read_text())
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            raise BadFrame(f"cannot read the per-frame poses ({e})", path) from e
        self.meta = {k: v for k, v in meta.items() if k.startswith("frame_") and k[6:].isdigit()}
        if not self.meta:
            raise BadFrame("no 'frame_XXXXXX' entries", path)
        self.frame_ids = sorted(self.meta, key=lambda k: int(k[6:]))
        self.video = None if (self.root / "rgb").is_dir() else VideoFrames(self.root / "rgb.mkv")
        self.depth_bin = None if (self.root / "depth").is_dir() else DepthBin(self.root / "depth.bin")

    def _matrix(self, fid: str, key: str, shape: tuple[int, int]) -> np.ndarray:
        try:
            return np.array(self.meta[fid][key], dtype=np.float64).reshape(shape)
        except (KeyError, TypeError, ValueError) as e:
            raise BadFrame(
                f"{fid}: {key!r} must be a {shape[0]}x{shape[1]} matrix ({e!r})", self.root / POSES
            ) from e

    def _load_view(self, i: int) -> View:
        fid = self.frame_ids[i]
        n = int(fid[6:])
        if self.video is None:
            colour = self.root / "rgb" / f"{fid}.jpg"
            image = read_image(colour)
        else:
            colour = self.video.path
            image = self.video.frame(n)
        if self.depth_bin is None:
            depth_src = self.root / "depth" / f"{fid}.png"
            depth = read_depth_png(depth_src, 1000.0)
        else:
            depth_src = self.depth_bin.path
            depth = self.depth_bin.frame(n)
        return View(
            image=image,
            depth=depth,
            K=self._matrix(fid, "intrinsic", (3, 3)),
            cam_to_world=self._matrix(fid, "aligned_pose", (4, 4)),
            frame_id=fid,
            index=n,
            source=f"{depth_src} frame {n} (+ {colour}, {self.root / POSES} {fid})",
            intrinsics_hw=COLOUR_HW,
            scale_intrinsics=True,
        )
