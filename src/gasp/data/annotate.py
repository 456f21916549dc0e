"""`gasp annotate SCENE`: depth maps for a scene without depth (DL3DV, COLMAP) from a monocular model.

For every frame: the transformers depth model predicts (batched, on the GPU when there is one); a
scale (plus a shift for affine-invariant models) brings the prediction into the poses' unit, fitted
to the reconstruction's 3D points seen in the frame when the scene has them (at least --min-points),
else by multi-view consistency with neighbouring frames (their images warped through the frame's
depth must agree; known camera motion fixes the scale). A frame whose robust residual (median relative
depth error against the points, or median relative disagreement with its neighbours' aligned depth)
exceeds --max-residual gets no depth, and the reason is recorded and counted. Aligned depth beyond
20x the frame's median (sky, far background) is left invalid.

Output (into SCENE, or --output DIR so that the scene folder stays read-only):

  gasp_depth/depth/<frame_id>.png   16-bit depth; unit in the PNG text field gasp-depth-unit
  gasp_depth/frames.jsonl           one record per finished frame: method, scale, shift, residual,
                                    points used, or the reason it was dropped
  gasp_depth/report.json            scene, settings, and at the end a summary and every frame's fit

Then ``open_scene(SCENE)`` (or ``open_scene(DIR)``) yields RGB-D views, e.g. for ``gasp prepare``.
An interrupted run resumes at the first unfinished frame (files are written atomically); a rerun
with other settings into the same folder is refused. The folder is locked against a second writer.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gasp.data.depth_align import (
    DEPTH_KINDS,
    Fit,
    Frame,
    _bilinear,
    apply_fit,
    consistency_residual,
    fit_multiview,
    fit_to_points,
)
from gasp.data.sfm import DEPTH_DIR, FRAMES_LOG, REPORT, UNIT_KEY, PosedImage, SfMScene, encode_depth_png
from gasp.data.views import BadFrame
from gasp.errors import ConfigError

log = logging.getLogger(__name__)

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


def _write_depth(path: Path, depth: np.ndarray) -> None:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    counts, unit = encode_depth_png(depth)
    info = PngInfo()
    info.add_text(UNIT_KEY, repr(unit))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        Image.fromarray(counts).save(f, format="PNG", pnginfo=info)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=False, default=float))
    os.replace(tmp, path)


def _reason_key(reason: str) -> str:
    return reason.split(":")[0] if reason.startswith("poor ") else reason.split(" (")[0]


def annotate(args: argparse.Namespace) -> dict[str, Any]:
    """Run `gasp annotate` (see the module docstring); returns the report's summary."""
    from gasp.data.registry import open_sfm_scene
    from gasp.locks import folder_lock

    dest = Path(args.output) if args.output else None
    scene = open_sfm_scene(args.scene, depth_root=(dest / DEPTH_DIR) if dest else None)
    out = scene.depth_root
    with folder_lock(out, "annotate"):
        return _annotate_locked(scene, out, args)


def _annotate_locked(scene: SfMScene, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    from tqdm import tqdm

    from gasp.data.depth_model import DepthModel
    from gasp.data.sfm import read_frames_log

    settings = {
        "depth_model": str(args.depth_model),
        "depth_kind": args.depth_kind,
        "max_residual": args.max_residual,
        "min_points": args.min_points,
        "window": args.window,
    }
    report_path = out / REPORT
    if report_path.is_file():
        try:
            previous = json.loads(report_path.read_text()).get("settings", {})
        except ValueError:
            previous = {}
        changed = [k for k in SETTINGS if k in previous and previous[k] != settings[k]]
        if changed:
            was = ", ".join(f"--{k.replace('_', '-')} {previous[k]!r}" for k in changed)
            raise ConfigError(
                f"{out} was annotated with other settings ({was}); use the same settings to resume, "
                "or delete the folder to start over"
            )
    (out / "depth").mkdir(parents=True, exist_ok=True)
    model = DepthModel(args.depth_model, device=args.device, dtype=args.dtype, kind=args.depth_kind)
    report = {
        "scene": str(Path(scene.root).resolve()),
        "format": type(scene).__name__.lower(),
        "images": getattr(scene, "images", None),
        "settings": settings,
        "kind": model.kind,
        "alignment": "points" if scene.has_points() else "multi-view",
        "complete": False,
    }
    _write_json(report_path, report)
    log_path = out / FRAMES_LOG
    records = {r["frame"]: r for r in read_frames_log(log_path) if "frame" in r}
    done = {
        f
        for f, r in records.items()
        if r.get("status") == "dropped" or (out / "depth" / f"{f}.png").is_file()
    }
    todo = [i for i, f in enumerate(scene.frame_ids) if f not in done]
    annotator = _Annotator(scene, model, args)
    with (
        open(log_path, "a") as log_file,
        tqdm(total=len(todo), desc=f"annotate {scene.name}", unit="frame") as bar,
    ):
        for k in range(0, len(todo), args.batch_size):
            chunk = todo[k : k + args.batch_size]
            near = {j for i in chunk for j in choose_neighbours(annotator.poses, i, args.window)}
            annotator.predict(sorted(set(chunk) | near))
            for i in chunk:
                record = annotator.finish(i)
                depth = record.pop("_depth", None)
                if depth is not None:
                    _write_depth(out / "depth" / f"{record['frame']}.png", depth)
                log_file.write(json.dumps(record, allow_nan=False, default=float) + "\n")
                log_file.flush()
                os.fsync(log_file.fileno())
                records[record["frame"]] = record
                bar.update(1)
    frames = [records[f] for f in scene.frame_ids if f in records]
    ok = [r for r in frames if r.get("status") == "ok"]
    dropped = Counter(_reason_key(r["reason"]) for r in frames if r.get("status") == "dropped")
    residuals = [r["residual"] for r in ok]
    summary = {
        "frames": len(scene.frame_ids),
        "annotated": len(ok),
        "dropped": sum(dropped.values()),
        "dropped_reasons": dict(dropped),
        "methods": dict(Counter(r["method"] for r in ok)),
        "residual_median": float(np.median(residuals)) if residuals else None,
        "residual_max": float(np.max(residuals)) if residuals else None,
        "scale_median": float(np.median([r["scale"] for r in ok])) if ok else None,
    }
    report.update(complete=True, summary=summary, frames=frames)
    _write_json(report_path, report)
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gasp.data.depth_model import DEFAULT_MODEL

    parser.add_argument(
        "scene", help="scene folder (DL3DV or COLMAP; format detected) or dl3dv:PATH / colmap:PATH"
    )
    parser.add_argument(
        "--output",
        default=None,
        help="folder to write into (its gasp_depth/); default: the scene folder itself. open_scene(OUTPUT) "
        "then reads the scene with this depth",
    )
    parser.add_argument(
        "--depth-model",
        default=DEFAULT_MODEL,
        help=f"transformers depth model: hub id or local folder (default {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--depth-kind",
        choices=DEPTH_KINDS,
        default=None,
        help="what the model predicts; default from its config (relative Depth Anything and DPT: "
        "disparity-affine; metric models: depth-scale)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="frames per model call (default 8)")
    parser.add_argument("--device", default="auto", help="auto (GPU when there is one), cpu, cuda, cuda:N")
    parser.add_argument(
        "--dtype",
        default="auto",
        help="model dtype: auto (float16 on GPU, float32 on CPU), float32, float16, bfloat16",
    )
    parser.add_argument(
        "--max-residual",
        type=float,
        default=DEFAULT_MAX_RESIDUAL,
        help=f"frames whose robust residual (median relative depth error) exceeds this get no depth "
        f"(default {DEFAULT_MAX_RESIDUAL})",
    )
    parser.add_argument(
        "--min-points",
        type=int,
        default=DEFAULT_MIN_POINTS,
        help=f"reconstruction points a frame needs for the point fit; fewer: multi-view fit (default "
        f"{DEFAULT_MIN_POINTS})",
    )
    parser.add_argument(
        "--window",
        type=int,
        default=DEFAULT_WINDOW,
        help=f"frames on each side searched for neighbours of the multi-view fit (default {DEFAULT_WINDOW})",
    )


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1 or args.window < 1 or args.min_points < 2 or not args.max_residual > 0:
        raise ConfigError("--batch-size and --window must be >= 1, --min-points >= 2, --max-residual > 0")
    summary = annotate(args)
    print(json.dumps(summary, indent=1))
    if summary["annotated"] == 0:
        print("gasp annotate: no frame got depth (see the reasons above)")
        return 1
    return 0
