"""VSI-Bench scoring against hand-computed values of the official rules (thinking-in-space utils.py)."""

import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gasp.errors import BadInputError
from gasp.eval import vsibench
from gasp.eval.prompts import vsibench_prompt
from gasp.eval.vsibench import VSIQuestion, mean_relative_accuracy, score_answer

QUESTIONS = "vsibench/test-00000-of-00001.parquet"
OFFICIAL_KEYS = [
    "overall",
    "object_counting_MRA:.5:.95:.05",
    "object_abs_distance_MRA:.5:.95:.05",
    "object_size_estimation_MRA:.5:.95:.05",
    "room_size_estimation_MRA:.5:.95:.05",
    "object_rel_distance_accuracy",
    "object_rel_direction_accuracy",
    "route_planning_accuracy",
    "obj_appearance_order_accuracy",
]


def mca(gt="A", qtype="object_rel_distance", qid=0):
    return VSIQuestion(qid, "scannet", "scene0", qtype, "Which?", gt, ("A. x", "B. y", "C. z", "D. w"))


def na(gt="4", qtype="object_counting", qid=0):
    return VSIQuestion(qid, "scannet", "scene0", qtype, "How many?", gt, None)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("A", 1.0),
        ("a", 1.0),  # case-insensitive
        ("A.", 1.0),  # trailing '.' stripped
        ("A..", 1.0),
        ("A. The chair", 1.0),  # first space-separated token
        ("A\n", 1.0),  # strip() after the split
        ("The answer is A", 0.0),  # first token is "The"
        ("", 0.0),
        (" A", 0.0),  # split(" ") gives "" first
        ("A\nB", 0.0),  # newline is not a separator in split(" ")
        ("(A)", 0.0),
        ("A,", 0.0),
        ("B", 0.0),
        ("Ａ", 0.0),  # full-width letter
    ],
)
def test_multiple_choice_official(answer, expected):
    assert score_answer(mca("A"), answer)[0] == expected


@pytest.mark.parametrize(
    ("answer", "gt", "expected"),
    [
        ("4", "4", 1.0),
        ("4.", "4", 1.0),
        ("4.0 tables", "4", 1.0),
        ("12.6", "10", 0.5),  # rel. err 0.26 <= 1 - theta for theta in .50..70 -> 5/10
        ("10.6", "10", 0.9),  # 0.06 -> theta <= .94 -> 9/10
        ("10.4", "10", 1.0),  # 0.04 -> all 10
        ("2.3", "2.0", 0.8),  # 0.15 -> theta <= .85 -> 8/10
        ("4", "10", 0.0),  # 0.6 > 0.5
        ("-10", "10", 0.0),
        ("1e1", "10", 1.0),  # Python float() syntax
        ("1_0", "10", 1.0),  # float("1_0") == 10.0 in Python
        ("４", "4", 1.0),  # float() accepts Unicode digits
        ("10\u00a0m", "10", 0.0),  # no-break space does not split: float fails
        ("NaN", "4", 0.0),
        ("inf", "4", 0.0),
        ("-inf", "4", 0.0),
        ("", "4", 0.0),
        ("four", "4", 0.0),
        ("3 meters", "2.0", 0.1),  # first token "3": |3 - 2| / 2 = 0.5 <= 1 - theta only for theta = .50
    ],
)
def test_numeric_official(answer, gt, expected):
    assert score_answer(na(gt), answer)[0] == pytest.approx(expected)


def test_mra_boundary_uses_less_or_equal():
    # |3 - 4| / 4 = 0.25 == 1 - 0.75: the 0.75 threshold counts (<=): thresholds .50 .. .75 -> 6/10.
    assert mean_relative_accuracy(3.0, 4.0) == pytest.approx(0.6)
    assert mean_relative_accuracy(4.0, 4.0) == 1.0
    np.testing.assert_allclose(
        vsibench.MRA_THRESHOLDS, [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    )


@pytest.mark.parametrize(
    ("answer", "question", "expected"),
    [
        ("The answer is A", mca("A"), 1.0),
        ("I think (B).", mca("B"), 1.0),
        ("I think (B).", mca("A"), 0.0),
        ("about 3.5 meters", na("3.5", "object_abs_distance"), 1.0),
        ("It is 12.6", na("10"), 0.5),
        ("no idea", na("10"), 0.0),
    ],
)
def test_lenient_parser(answer, question, expected):
    assert score_answer(question, answer, parser="lenient")[0] == pytest.approx(expected)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_garbage_never_crashes(text):
    for question in (mca("C"), na("2.5", "room_size_estimation")):
        for parser in ("official", "lenient"):
            value, _ = score_answer(question, text, parser)
            assert 0.0 <= value <= 1.0


def test_long_garbage():
    garbage = "\x00\u202e💥" * 10_000 + " 1" * 1000
    assert score_answer(mca("A"), garbage)[0] == 0.0
    assert score_answer(na("1"), garbage)[0] == 0.0


def test_aggregation_hand_computed():
    qs = [
        na("10", "object_counting", 0),
        na("10", "object_counting", 1),
        mca("A", "object_rel_direction_easy", 2),
        mca("A", "object_rel_direction_medium", 3),
        mca("B", "object_rel_direction_medium", 4),
        mca("C", "object_rel_direction_hard", 5),
        mca("D", "route_planning", 6),
    ]
    preds = {"0": "10", "1": "4", "2": "A", "3": "A", "4": "C", "5": "A", "6": "D."}
    scored = vsibench.score(qs, preds)
    m = scored.metrics
    assert m["object_counting_MRA:.5:.95:.05"] == pytest.approx(50.0)  # (1 + 0) / 2
    assert m["object_rel_direction_accuracy"] == pytest.approx(50.0)  # (1 + 0.5 + 0) / 3
    assert m["route_planning_accuracy"] == pytest.approx(100.0)
    assert m["overall"] == pytest.approx((50.0 + 50.0 + 100.0) / 3)
    assert list(m) == [k for k in OFFICIAL_KEYS if k in m]
    assert scored.missing == []


def test_absent_direction_level_counts_zero_as_official():
    qs = [mca("A", "object_rel_direction_easy", 0), mca("A", "object_rel_direction_medium", 1)]
    scored = vsibench.score(qs, {"0": "A", "1": "A"})
    assert scored.metrics["object_rel_direction_accuracy"] == pytest.approx(200 / 3)  # (1 + 1 + 0) / 3
    assert any("object_rel_direction_hard" in w for w in scored.warnings)


def test_missing_predictions_are_wrong_and_listed():
    qs = [mca("A", qid=0), mca("A", qid=1)]
    scored = vsibench.score(qs, {"0": "A"})
    assert scored.metrics["object_rel_distance_accuracy"] == pytest.approx(50.0)
    assert scored.missing == ["1"]


# ------------------------------------------------------------------------- real question file
@pytest.fixture(scope="module")
def real(shared_data):
    path = shared_data / QUESTIONS
    return path, vsibench.load_questions(path), pq.read_table(path).to_pylist()


def test_real_file_perfect_predictions_score_100(real):
    _, questions, rows = real
    assert len(questions) == len(rows) == 5130
    scored = vsibench.score(questions, {str(r["id"]): r["ground_truth"] for r in rows})
    assert list(scored.metrics) == OFFICIAL_KEYS
    assert all(v == pytest.approx(100.0) for v in scored.metrics.values())
    assert scored.missing == [] and scored.warnings == []


def test_real_file_constant_answers(real):
    """All "A" on multiple choice and 1.27 x truth on numeric: expected values from counting rows."""
    _, questions, rows = real
    preds = {}
    for r in rows:
        preds[str(r["id"])] = "A" if r["options"] is not None else repr(1.27 * float(r["ground_truth"]))
    m = vsibench.score(questions, preds).metrics
    share_a = {}
    for qtype in vsibench.MCA_QUESTION_TYPES:
        gts = [r["ground_truth"] for r in rows if r["question_type"] == qtype]
        share_a[qtype] = 100.0 * Counter(gts)["A"] / len(gts)
    direction = sum(share_a[t] for t in vsibench.DIRECTION_LEVELS) / 3
    expected = {
        "object_counting_MRA:.5:.95:.05": 50.0,  # rel. err 0.27 -> thresholds .50 .. .70 -> 5/10
        "object_abs_distance_MRA:.5:.95:.05": 50.0,
        "object_size_estimation_MRA:.5:.95:.05": 50.0,
        "room_size_estimation_MRA:.5:.95:.05": 50.0,
        "object_rel_distance_accuracy": share_a["object_rel_distance"],
        "object_rel_direction_accuracy": direction,
        "route_planning_accuracy": share_a["route_planning"],
        "obj_appearance_order_accuracy": share_a["obj_appearance_order"],
    }
    expected["overall"] = sum(expected.values()) / 8
    for key, value in expected.items():
        assert m[key] == pytest.approx(value), key


def test_real_prompts_snapshot(real):
    _, questions, _ = real
    by_id = {q.id: q for q in questions}
    assert by_id[0].prompt() == (
        "These are frames of a video.\nHow many table(s) are in this room?\n"
        "Please answer the question using a single word or phrase."
    )
    assert by_id[962].prompt() == (
        "These are frames of a video.\n"
        "If I am standing by the stove and facing the refrigerator, is the table to my front-left, "
        "front-right, back-left, or back-right?\nThe directions refer to the quadrants of a Cartesian "
        "plane (if I am standing at the origin and facing along the positive y-axis).\n"
        "Options:\nA. back-right\nB. back-left\nC. front-right\nD. front-left\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert by_id[962].video == "arkitscenes/41159525.mp4"


def test_prompt_snapshot_synthetic():
    assert vsibench_prompt("Q?", None) == (
        "These are frames of a video.\nQ?\nPlease answer the question using a single word or phrase."
    )
    assert vsibench_prompt("Q?", ["A. a", "B. b"]) == (
        "These are frames of a video.\nQ?\nOptions:\nA. a\nB. b\n"
        "Answer with the option's letter from the given choices directly."
    )


# ------------------------------------------------------------------------- loading errors
def _write(tmp_path, rows, name="q.parquet"):
    path = tmp_path / name
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _row(**kw):
    row = dict(
        id=7,
        dataset="scannet",
        scene_name="s",
        question_type="object_counting",
        question="How many?",
        ground_truth="3",
        options=None,
    )
    row.update(kw)
    return row


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([_row(question_type="object_colour")], r"row 0 \(id 7\): unknown question_type 'object_colour'"),
        ([_row(ground_truth="zero")], r"id 7\).*not a positive number"),
        ([_row(ground_truth="0")], r"id 7\).*not a positive number"),
        ([_row(), _row()], r"row 1 \(id 7\): duplicate id 7"),
    ],
)
def test_loading_errors_name_file_and_record(tmp_path, rows, message):
    path = _write(tmp_path, rows)
    with pytest.raises(BadInputError, match=message) as info:
        vsibench.load_questions(path)
    assert str(path) in str(info.value)


def test_loading_errors_json(tmp_path):
    path = tmp_path / "q.json"
    path.write_text(json.dumps([_row(question_type="route_planning", options=None)]))
    with pytest.raises(
        BadInputError, match=r"q.json, row 0 \(id 7\): route_planning needs a list of options"
    ):
        vsibench.load_questions(path)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(BadInputError, match="bad.parquet: cannot read parquet"):
        vsibench.load_questions(bad)
