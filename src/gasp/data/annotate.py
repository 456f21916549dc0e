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
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from gasp.data.annotate_fit import (
    DEFAULT_MAX_RESIDUAL,
    DEFAULT_MIN_POINTS,
    DEFAULT_WINDOW,
    SETTINGS,
    _Annotator,
    choose_neighbours,
)
from gasp.data.depth_align import (
    DEPTH_KINDS,
)
from gasp.data.sfm import DEPTH_DIR, FRAMES_LOG, REPORT, UNIT_KEY, SfMScene, encode_depth_png
from gasp.errors import ConfigError

log = logging.getLogger(__name__)


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
