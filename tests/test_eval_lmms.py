"""lmms-eval plugin: discovery of the `gasp` model and the All-Angles task, and agreement with
lmms-eval's own VSI-Bench code. Skipped when lmms-eval is not importable."""

import json
import random

import numpy as np
import pytest

lmms_eval = pytest.importorskip("lmms_eval", reason="lmms-eval is not installed (pip install lmms-eval)")
pytest.importorskip("lmms_eval.api.model", reason="lmms-eval's model API does not import (missing deps)")

from gasp.eval import allangles, vsibench  # noqa: E402
from gasp.eval.lmms_plugin import MODEL_CLASS_PATH, TASKS_DIR, model_manifests  # noqa: E402

ENTRY_POINT = "gasp.eval.lmms_plugin:model_manifests"  # pyproject [project.entry-points."lmms_eval.models"]


def test_model_manifest_resolves_to_an_lmms_class():
    from lmms_eval.api.model import lmms
    from lmms_eval.models.registry_v2 import ModelRegistryV2

    registry = ModelRegistryV2()
    for manifest in model_manifests():
        registry.register_manifest(manifest)
    cls = registry.get_model_class("gasp")
    assert issubclass(cls, lmms) and f"{cls.__module__}.{cls.__name__}" == MODEL_CLASS_PATH


def test_legacy_plugin_variable_finds_model(monkeypatch):
    import lmms_eval.models as models
    from lmms_eval.models.registry_v2 import ModelRegistryV2

    monkeypatch.setenv("LMMS_EVAL_PLUGINS", "gasp.eval.lmms_plugin")
    monkeypatch.setattr(models, "AVAILABLE_SIMPLE_MODELS", dict(models.AVAILABLE_SIMPLE_MODELS))
    registry = ModelRegistryV2()
    with pytest.warns(DeprecationWarning):
        models._merge_legacy_plugin_models(registry)
    assert registry.resolve("gasp").class_path == MODEL_CLASS_PATH


def test_declared_entry_point_is_discovered(tmp_path, monkeypatch):
    """The entry point the project declares, installed in a throwaway dist-info, registers `gasp`."""
    from lmms_eval.models.registry_v2 import ModelRegistryV2

    dist = tmp_path / "gasp_lmms_probe-0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: gasp-lmms-probe\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text(f"[lmms_eval.models]\ngasp = {ENTRY_POINT}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = ModelRegistryV2()
    registry.load_entrypoint_manifests()
    assert registry.get_model_class("gasp").__name__ == "GaspLMM"


def test_entry_point_discovery():
    from importlib.metadata import entry_points

    if not [ep for ep in entry_points(group="lmms_eval.models") if ep.name == "gasp"]:
        pytest.skip(
            "the lmms_eval.models entry point is not installed (reinstall gasp after pyproject change)"
        )
    from lmms_eval.models import get_model

    assert get_model("gasp").__name__ == "GaspLMM"


@pytest.fixture(scope="module")
def manager():
    """lmms-eval's task index with our task folder (what ``--include_path`` does)."""
    from lmms_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS_DIR))


@pytest.fixture
def aa_task(shared_data, tmp_path, monkeypatch, manager):
    from lmms_eval.tasks import get_task_dict

    (tmp_path / "All-Angles-Bench").mkdir()
    records = json.loads((shared_data / "all_angles_bench/data.derived.json").read_text())
    (tmp_path / "All-Angles-Bench/data.json").write_text(json.dumps(records))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert "all_angles_bench" in manager.all_tasks
    return get_task_dict(["all_angles_bench"], manager)["all_angles_bench"], records


def test_all_angles_task_discovered_and_scores_like_gasp(aa_task):
    task, records = aa_task
    docs = task.test_docs()
    assert len(docs) == len(records)
    questions = [allangles.from_record(r) for r in records]
    assert task.doc_to_text(docs[0]) == questions[0].prompt()
    rng = random.Random(0)
    answers = [rng.choice(["A", "B.", "(C)", "The answer is B", "", "3", "no idea"]) for _ in docs]
    per_question = [task.process_results(d, [a])["all_angles_score"] for d, a in zip(docs, answers)]
    via_lmms = task.aggregation()["all_angles_score"](per_question)
    ours = allangles.score(questions, {q.key: a for q, a in zip(questions, answers)}).metrics
    assert via_lmms == ours


def test_vsibench_official_task_discovered_and_scores_like_gasp(shared_data, manager):
    import pyarrow.parquet as pq

    assert {"vsibench_official", "all_angles_bench"} <= set(manager.all_tasks)
    config = manager._get_config("vsibench_official")
    process = config["process_results"]
    aggregation = config["metric_list"][0]["aggregation"]
    path = shared_data / "vsibench/test-00000-of-00001.parquet"
    rows = pq.read_table(path).to_pylist()
    answers = ["A" if r["options"] else "2" for r in rows]
    via_lmms = aggregation([process(dict(r), [a])["vsibench_score"] for r, a in zip(rows, answers)])
    ours = vsibench.score(vsibench.load_questions(path), {str(r["id"]): a for r, a in zip(rows, answers)})
    assert via_lmms == ours.metrics
    assert config["doc_to_text"](rows[0]) == vsibench.load_questions(path)[0].prompt()


def test_gasp_model_generate_until_with_fake_adapter(tmp_path):
    from lmms_eval.api.instance import Instance
    from PIL import Image

    from gasp.eval.lmms_plugin.models.gasp import GaspLMM

    class Fake:
        def generate(self, frames_list, prompts, max_new_tokens=16):
            return [f"{f.shape[0]} views, {max_new_tokens}" for f in frames_list]

    model = GaspLMM(pretrained="unused", adapter=Fake(), batch_size=2)
    docs = {0: [Image.new("RGB", (16, 8)), Image.new("RGB", (24, 8))], 1: [Image.new("RGB", (8, 8))] * 3}
    model.task_dict = {"t": {"test": docs}}
    requests = [
        Instance(
            "generate_until",
            (f"q{i}", {"max_new_tokens": 5}, lambda d: d, i, "t", "test"),
            idx=0,
            metadata={"task": "t", "doc_id": i, "repeats": 1},
        )
        for i in docs
    ]
    assert model.generate_until(requests) == ["2 views, 5", "3 views, 5"]


@pytest.mark.parametrize("mode", ["auto", "images"])
def test_gasp_model_sends_videos_through_the_video_input(tmp_path, monkeypatch, mode):
    """Like `gasp eval run`: a video doc reaches a Qwen adapter's video input (input=auto) with the
    published protocol's frame count, or N separate frames with input=images."""
    from lmms_eval.api.instance import Instance
    from test_eval_run import write_video

    from gasp.eval.lmms_plugin.models.gasp import GaspLMM
    from gasp.models import from_preset
    from gasp.models.video import VideoClip, VideoInputMixin

    adapter = from_preset("tiny-qwen2.5-vl")
    calls = {"video": [], "images": []}
    video_path, image_path = VideoInputMixin.generate_video, type(adapter).generate
    monkeypatch.setattr(
        VideoInputMixin, "generate_video", lambda m, c, *a: calls["video"].append(c) or video_path(m, c, *a)
    )
    monkeypatch.setattr(
        type(adapter), "generate", lambda m, f, *a: calls["images"].append(f) or image_path(m, f, *a)
    )
    write_video(tmp_path / "scene.mp4", 12)
    model = GaspLMM(pretrained="unused", adapter=adapter, num_frames="4", input=mode)
    model.task_dict = {"t": {"test": {0: [str(tmp_path / "scene.mp4")]}}}
    request = Instance(
        "generate_until",
        ("How many chairs?", {"max_new_tokens": 3}, lambda d: d, 0, "t", "test"),
        idx=0,
        metadata={"task": "t", "doc_id": 0, "repeats": 1},
    )
    assert len(model.generate_until([request])) == 1
    if mode == "auto":
        assert model.generation["input"] == "video" and model.generation["num_frames"] == 4
        assert not calls["images"] and isinstance(calls["video"][0][0], VideoClip)
        assert len(calls["video"][0][0].indices) == 4
    else:
        assert model.generation["input"] == "images"
        assert not calls["video"] and calls["images"][0][0].shape[0] == 4


def test_vsibench_agrees_with_official_functions(shared_data):
    """Our scores equal the thinking-in-space pipeline rebuilt from lmms-eval's own vsibench functions.

    lmms-eval 0.7 parses numeric answers with ``extract_number`` (first number or number word
    anywhere); the published VSI-Bench numbers used thinking-in-space's ``to_float(fuzzy_matching)``,
    which we reproduce: same ``fuzzy_matching``, ``exact_match``, ``mean_relative_accuracy``,
    ``to_float`` and aggregation, taken from the installed lmms-eval.
    """
    import pyarrow.parquet as pq

    official = pytest.importorskip("lmms_eval.tasks.vsibench.utils", reason="lmms-eval vsibench task missing")
    path = shared_data / "vsibench/test-00000-of-00001.parquet"
    rows = pq.read_table(path).to_pylist()
    rng = random.Random(0)
    odd = ["A.", "The answer is A", "3 meters", "", "NaN", "inf", " B", "c", "D\n", "1e1", "x" * 500, "४"]
    preds = {}
    for r in rows:
        choice = rng.random()
        if choice < 0.3:
            preds[r["id"]] = r["ground_truth"]
        elif choice < 0.6 and r["options"] is None:
            preds[r["id"]] = f"{float(r['ground_truth']) * rng.uniform(0.3, 1.8):.3f} m"
        else:
            preds[r["id"]] = rng.choice(odd)
    docs = []
    for r in rows:
        doc = dict(r)
        token = official.fuzzy_matching(preds[r["id"]])
        if r["question_type"] in official.MCA_QUESTION_TYPES:
            doc["accuracy"] = official.exact_match(token, r["ground_truth"])
        else:
            try:
                doc["MRA:.5:.95:.05"] = official.mean_relative_accuracy(
                    official.to_float(token), official.to_float(r["ground_truth"]), 0.5, 0.95, 0.05
                )
            except TypeError:
                doc["MRA:.5:.95:.05"] = 0.0
        docs.append(doc)
    expected = official._compute_all_subscores(docs)
    ours = vsibench.score(vsibench.load_questions(path), {str(k): v for k, v in preds.items()}).metrics
    assert sorted(ours) == sorted(expected)
    for key, value in expected.items():
        assert ours[key] == pytest.approx(100.0 * value, abs=1e-9), key
    assert np.isfinite(list(ours.values())).all()
    assert 5.0 < ours["overall"] < 95.0  # a mix, not a degenerate all-right / all-wrong case
