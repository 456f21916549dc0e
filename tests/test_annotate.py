"""`gasp annotate`: transformers depth models from tiny configs (random weights), the pipeline on a
COLMAP scene (points fit, multi-view fit, poor fits dropped, resume, settings check, lock, report)."""

import json
import types

import numpy as np
import pytest
import torch
import transformers as T
from scene_writers import save_rgb, write_colmap_model

from gasp.cli import main
from gasp.data import annotate as annotate_mod
from gasp.data import open_scene
from gasp.data.depth_model import DepthModel, depth_kind
from gasp.data.synthetic import SyntheticScene
from gasp.errors import ConfigError, GaspError
from gasp.locks import FolderBusyError, folder_lock

H, W = 48, 64


def _dino():
    return T.Dinov2Config(
        image_size=28, patch_size=14, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
        intermediate_size=32, out_features=["stage1", "stage2", "stage3", "stage4"],
        reshape_hidden_states=False,
    )  # fmt: skip


def tiny_depth_anything(kind="relative"):
    return T.DepthAnythingConfig(
        backbone_config=_dino(), reassemble_hidden_size=16, neck_hidden_sizes=[8, 8, 16, 16],
        fusion_hidden_size=8, head_hidden_size=8, patch_size=14, depth_estimation_type=kind, max_depth=20,
    )  # fmt: skip


def tiny_dpt():
    return T.DPTConfig(
        image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
        intermediate_size=32, neck_hidden_sizes=[8, 8, 16, 16], fusion_hidden_size=8,
        backbone_out_indices=[0, 1, 2, 3],
    )  # fmt: skip


def save_tiny(folder, config, processor):
    torch.manual_seed(0)
    T.AutoModelForDepthEstimation.from_config(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    small = {"height": 28, "width": 28}
    return {
        "depth-anything": save_tiny(
            root / "da",
            tiny_depth_anything(),
            T.DPTImageProcessor(size=small, keep_aspect_ratio=True, ensure_multiple_of=14),
        ),
        "depth-anything-metric": save_tiny(
            root / "dam", tiny_depth_anything("metric"), T.DPTImageProcessor(size=small)
        ),
        "dpt": save_tiny(root / "dpt", tiny_dpt(), T.DPTImageProcessor(size={"height": 32, "width": 32})),
    }


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("depth-anything", "disparity-affine"),
        ("depth-anything-metric", "depth-scale"),
        ("dpt", "disparity-affine"),
    ],
)
def test_tiny_models_load_and_predict_at_image_size(tiny_models, name, kind):
    model = DepthModel(tiny_models[name], device="cpu")
    assert model.kind == kind
    images = [np.zeros((H, W, 3), np.uint8), np.full((H, W, 3), 200, np.uint8)]
    preds = model.predict(images)
    assert len(preds) == 2 and preds[0].shape == (H, W) and preds[0].dtype == torch.float32
    assert torch.isfinite(preds[1]).all()


def test_model_kinds_and_errors(tmp_path):
    assert depth_kind(T.ZoeDepthConfig()) == "depth-scale"
    assert depth_kind(T.DepthProConfig()) == "depth-scale"
    assert depth_kind(
        types.SimpleNamespace(model_type="depth_anything", depth_estimation_type="relative")
    ) == ("disparity-affine")
    with pytest.raises(ConfigError, match="--depth-kind"):
        depth_kind(types.SimpleNamespace(model_type="mystery"))
    with pytest.raises(GaspError, match="cannot load depth model"):
        DepthModel(str(tmp_path / "nothing"), device="cpu")


# ------------------------------------------------------------------------------ the pipeline ----
@pytest.fixture(scope="module")
def views():
    scene = SyntheticScene(1, num_frames=8, height=72, width=96, path_length=2.0)
    return [scene.view(i) for i in range(8)]


class TruthModel:
    """Stands in for a depth model: returns each frame's exact inverse depth under a known affine map
    (found by the image), or noise for frames listed in ``garbage``; counts calls."""

    kind = "disparity-affine"

    def __init__(self, views, garbage=(), fail_after=None):
        self.by_image = {v.image.tobytes(): v for v in views}
        self.garbage, self.calls, self.fail_after = set(garbage), 0, fail_after

    def predict(self, images):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt
        out = []
        for im in images:
            v = self.by_image[im.tobytes()]
            if v.index in self.garbage:
                out.append(torch.rand(im.shape[:2]) + 0.1)
            else:
                out.append(torch.from_numpy(((1 / v.depth) - 0.05) / 2.0).float())
        return out


def write_scene(root, views, with_points=True):
    names = [f"{i:03d}.png" for i in range(len(views))]
    for n, v in zip(names, views):
        save_rgb(root / "images" / n, v.image)
    pts = None if with_points else []
    write_colmap_model(root / "sparse" / "0", views, names, binary=True, points=pts)
    return root


def _args(root, out, **over):
    fields = dict(scene=str(root), output=str(out), depth_model="x", depth_kind=None, max_residual=0.1,
                  min_points=20, window=6, batch_size=4, device="cpu", dtype="auto")  # fmt: skip
    fields.update(over)
    return types.SimpleNamespace(**fields)


def run_annotate(monkeypatch, model, *argv):
    monkeypatch.setattr("gasp.data.depth_model.DepthModel", lambda *a, **k: model)
    return main(["annotate", *map(str, argv), "--batch-size", "4"])


def test_annotate_with_points_then_the_scene_reads_as_rgbd(tmp_path, views, monkeypatch):
    root = write_scene(tmp_path / "scene", views)
    model = TruthModel(views, garbage={7})
    assert run_annotate(monkeypatch, model, root) == 0
    report = json.loads((root / "gasp_depth" / "report.json").read_text())
    s = report["summary"]
    assert report["complete"] and s["annotated"] == 7 and s["dropped"] == 1 and s["methods"] == {"points": 7}
    assert list(s["dropped_reasons"]) == ["poor points fit"]
    fits = {f["frame"]: f for f in report["frames"]}
    assert abs(fits["003"]["scale"] / 2.0 - 1) < 1e-3 and abs(fits["003"]["shift"] / 0.05 - 1) < 1e-2
    scene = open_scene(root)
    v = scene.view(3)
    np.testing.assert_allclose(v.depth, views[3].depth, rtol=0.005)
    with pytest.raises(Exception, match="gasp annotate left this frame without depth: poor points fit"):
        scene.view(7)


def test_annotate_multiview_into_output_folder_resumes(tmp_path, monkeypatch):
    scene = SyntheticScene(1, num_frames=16, height=36, width=48, path_length=2.0)
    views = [scene.view(i) for i in range(16)]
    root = write_scene(tmp_path / "scene", views, with_points=False)
    out = tmp_path / "out"
    assert run_annotate(monkeypatch, TruthModel(views, fail_after=3), root, "--output", out) == 130
    first = (out / "gasp_depth" / "frames.jsonl").read_text().splitlines()
    assert 0 < len(first) < 16
    model = TruthModel(views)
    assert run_annotate(monkeypatch, model, root, "--output", out) == 0
    records = [json.loads(x) for x in (out / "gasp_depth" / "frames.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == [f"{i:03d}" for i in range(16)], "each frame exactly once"
    assert all(r["method"] == "multi-view" and r["status"] == "ok" for r in records)
    assert not (root / "gasp_depth").exists(), "the scene folder is not written"
    scene = open_scene(out)
    for i in (2, 6):
        d = scene.view(i).depth
        assert np.median(np.abs(d - views[i].depth) / views[i].depth) < 0.02
    with pytest.raises(ConfigError, match="other settings"):
        annotate_mod.annotate(_args(root, out, depth_model="other"))
    with folder_lock(out / "gasp_depth", "annotate"), pytest.raises(FolderBusyError):
        annotate_mod.annotate(_args(root, out, depth_model="x"))


def test_annotate_with_a_real_tiny_model_end_to_end(tmp_path, views, tiny_models, capsys):
    root = write_scene(tmp_path / "scene", views[:4])
    code = main(
        [
            "annotate",
            str(root),
            "--depth-model",
            tiny_models["dpt"],
            "--device",
            "cpu",
            "--max-residual",
            "10",
        ]
    )
    report = json.loads((root / "gasp_depth" / "report.json").read_text())
    assert report["kind"] == "disparity-affine" and report["complete"] and len(report["frames"]) == 4
    assert code == (0 if report["summary"]["annotated"] else 1)
    for f in report["frames"]:
        assert f["status"] == "ok" or f["reason"]


def test_annotate_refuses_scenes_with_depth(tmp_path, capsys):
    (tmp_path / "depth").mkdir()
    (tmp_path / "poses").mkdir()
    assert main(["annotate", str(tmp_path)]) == 2
    assert "has depth already" in capsys.readouterr().err
