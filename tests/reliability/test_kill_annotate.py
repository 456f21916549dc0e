"""kill -9 in the middle of `gasp annotate`, then the same command again: the output folder is
byte-identical to an uninterrupted run's."""

import random

import pytest
import transformers as T
from cli_harness import check_ok, kill_when, run_gasp, snapshot, start_gasp
from test_annotate import save_tiny, tiny_dpt, write_scene

from gasp.data.synthetic import SyntheticScene

FRAMES = 16


def _records(out) -> int:
    try:
        return len((out / "gasp_depth" / "frames.jsonl").read_bytes().splitlines())
    except OSError:
        return 0


@pytest.mark.slow
def test_annotate_killed_then_rerun_is_byte_identical(tmp_path):
    scene = SyntheticScene(1, num_frames=FRAMES, height=72, width=96, path_length=2.0)
    root = write_scene(tmp_path / "scene", [scene.view(i) for i in range(FRAMES)])
    model = save_tiny(tmp_path / "dpt", tiny_dpt(), T.DPTImageProcessor(size={"height": 32, "width": 32}))
    args = ("annotate", root, "--depth-model", model, "--device", "cpu", "--max-residual", "10")
    args += ("--batch-size", "2")
    check_ok(run_gasp(*args, "--output", tmp_path / "reference"))
    reference = snapshot(tmp_path / "reference")
    assert sum(k.endswith(".png") for k in reference) > FRAMES // 2

    out = tmp_path / "out"
    rng = random.Random(0)
    after = rng.randint(2, FRAMES - 4)  # frames finished before the kill
    proc = start_gasp(*args, "--output", out)
    # a short delay: the kill lands among the remaining frames (on an idle CPU they take well under 0.2 s)
    assert kill_when(proc, lambda: _records(out) >= after, rng.uniform(0.0, 0.02)), "annotate ended first"
    assert _records(out) < FRAMES
    check_ok(run_gasp(*args, "--output", out))
    assert snapshot(out) == reference
