"""The per-frame depth fits of ``gasp annotate``: neighbour choice and the annotator that predicts,
aligns and checks each frame's depth, with caches shared by neighbouring frames (see
:mod:`gasp.data.annotate` for the method and the command)."""

from __future__ import annotations

import argparse
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from gasp.data.depth_align import (
    Fit,
    Frame,
    _bilinear,
    apply_fit,
    consistency_residual,
    fit_multiview,
    fit_to_points,
)
from gasp.data.sfm import PosedImage, SfMScene
from gasp.data.views import BadFrame

DEFAULT_MAX_RESIDUAL = 0.1
DEFAULT_MIN_POINTS = 20
DEFAULT_WINDOW = 6
FAR_RATIO = 20.0
MAX_NEIGHBOUR_ROTATION_DEG = 30.0
_CACHE = 48
SETTINGS = ("depth_model", "depth_kind", "max_residual", "min_points", "window")


def _rotation_deg(a: np.ndarray, b: np.ndarray) -> float:
    R = a[:3, :3].T @ b[:3, :3]
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))))


def choose_neighbours(poses: list[np.ndarray], i: int, window: int) -> list[int]:
    """Up to four frames to check frame ``i`` against: on each side within ``window`` frames, the
    farthest with a viewing direction within 30 degrees and camera motion, and one about half as far."""
    out = []
    for side in (-1, 1):
        cands = [
            j
            for j in range(i + side, i + side * (window + 1), side)
            if 0 <= j < len(poses)
            and np.isfinite(poses[j]).all()
            and _rotation_deg(poses[i], poses[j]) <= MAX_NEIGHBOUR_ROTATION_DEG
            and np.linalg.norm(poses[j][:3, 3] - poses[i][:3, 3]) > 0
        ]
        if cands:
            far = cands[-1]
            out.append(far)
            mid = min(cands, key=lambda j: abs(abs(j - i) - abs(far - i) / 2))
            if mid != far:
                out.append(mid)
    return sorted(out)


class _Annotator:
    """Per-frame fits with caches of posed images, predictions and fits (neighbours share them)."""

    def __init__(self, scene: SfMScene, model, args: argparse.Namespace) -> None:
        self.scene, self.model, self.args = scene, model, args
        self.kind = model.kind
        self.poses = [np.asarray(p, dtype=np.float64) for p in scene.poses]
        self._posed: OrderedDict[int, PosedImage | BadFrame] = OrderedDict()
        self._pred: OrderedDict[int, torch.Tensor] = OrderedDict()
        self.fits: dict[int, tuple[str, Fit] | str] = {}

    @staticmethod
    def _put(cache: OrderedDict, key: int, value: Any) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > _CACHE:
            cache.popitem(last=False)

    def posed(self, i: int) -> PosedImage:
        if i not in self._posed:
            try:
                self._put(self._posed, i, self.scene.posed_image(i))
            except BadFrame as e:
                self._put(self._posed, i, e)
        value = self._posed[i]
        if isinstance(value, BadFrame):
            raise value
        return value

    def predict(self, indices: list[int]) -> None:
        """Run the model on the frames of ``indices`` not cached yet.

        Batches are fixed groups of frame positions (``i // batch_size``): a frame is always predicted
        beside the same frames, so its prediction, to the last bit, does not depend on where a run
        started (a resumed run equals an uninterrupted one).
        """
        bs = self.args.batch_size
        for g in sorted({i // bs for i in indices if i not in self._pred}):
            batch = []
            for i in range(g * bs, min((g + 1) * bs, len(self.scene))):
                try:
                    self.posed(i)
                    batch.append(i)
                except BadFrame:
                    pass
            if not batch:
                continue
            for i, pred in zip(batch, self.model.predict([self.posed(i).image for i in batch])):
                self._put(self._pred, i, pred)

    def prediction(self, i: int) -> torch.Tensor:
        if i not in self._pred:
            self.predict([i])
        return self._pred[i]

    def fit(self, i: int) -> tuple[str, Fit] | str:
        """``(method, Fit)`` of frame i, or the reason it cannot be fitted (memoised)."""
        if i in self.fits:
            return self.fits[i]
        try:
            result = self._fit(i)
        except BadFrame as e:
            result = f"{e.reason} ({e.path})"
        self.fits[i] = result
        return result

    def _points_uvz(self, i: int, posed: PosedImage) -> tuple[np.ndarray, np.ndarray] | None:
        pts = self.scene.points(i)
        if pts is None or len(pts) == 0:
            return None
        T = np.linalg.inv(posed.cam_to_world)
        cam = pts @ T[:3, :3].T + T[:3, 3]
        cam = cam[cam[:, 2] > 0]
        uv = cam[:, :2] / cam[:, 2:] @ posed.K[:2, :2].T + posed.K[:2, 2]
        h, w = posed.image.shape[:2]
        inside = (uv[:, 0] >= 0) & (uv[:, 0] <= w - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= h - 1)
        return uv[inside], cam[inside, 2]

    def _fit(self, i: int) -> tuple[str, Fit] | str:
        posed = self.posed(i)
        pred = self.prediction(i)
        uvz = self._points_uvz(i, posed)
        if uvz is not None and len(uvz[1]) >= self.args.min_points:
            at = _bilinear(pred.double(), torch.from_numpy(uvz[0])).numpy()
            return "points", fit_to_points(at, uvz[1], self.kind, seed=i)
        neighbours = []
        for j in choose_neighbours(self.poses, i, self.args.window):
            try:
                p = self.posed(j)
            except BadFrame:
                continue
            neighbours.append(Frame(p.image, p.K, p.cam_to_world))
        if not neighbours:
            return (
                f"too few reconstruction points ({0 if uvz is None else len(uvz[1])} < "
                f"{self.args.min_points}) and no neighbouring frame with camera motion"
            )
        return "multi-view", fit_multiview(
            pred, Frame(posed.image, posed.K, posed.cam_to_world), neighbours, self.kind
        )

    def aligned(self, i: int) -> torch.Tensor | None:
        result = self.fit(i)
        if isinstance(result, str):
            return None
        depth = apply_fit(self.prediction(i), self.kind, result[1].scale, result[1].shift)
        valid = depth > 0
        if valid.any():
            depth[depth > FAR_RATIO * depth[valid].median()] = 0
        return depth

    def finish(self, i: int) -> dict[str, Any]:
        """The record of frame i: fit and residual, or why it gets no depth; the depth itself."""
        record: dict[str, Any] = {"frame": self.scene.frame_ids[i], "index": i}
        result = self.fit(i)
        if isinstance(result, str):
            return {**record, "status": "dropped", "reason": result}
        method, fit = result
        depth = self.aligned(i)
        record.update(method=method, scale=fit.scale, shift=fit.shift, num_points=fit.num_points)
        residual = fit.residual
        if method == "multi-view":
            posed = self.posed(i)
            others = []
            for j in choose_neighbours(self.poses, i, self.args.window):
                dj = self.aligned(j)
                if dj is not None:
                    pj = self.posed(j)
                    others.append((dj, pj.K, pj.cam_to_world))
            residual, compared = consistency_residual(depth, posed.K, posed.cam_to_world, others)
            record["num_compared"] = compared
        record["residual"] = residual
        if not np.isfinite(residual) or residual > self.args.max_residual:
            why = (
                "no overlap with neighbours to check it"
                if not np.isfinite(residual)
                else (f"robust residual {residual:.3g} > --max-residual {self.args.max_residual}")
            )
            return {**record, "status": "dropped", "reason": f"poor {method} fit: {why}"}
        record["status"] = "ok"
        record["_depth"] = depth.numpy()
        return record
