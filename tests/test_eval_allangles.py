"""All-Angles Bench: VLMEvalKit answer inference (exact_matching, no judge), categories and pairs."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gasp.errors import BadInputError
from gasp.eval import allangles
from gasp.eval.parsing import infer_option

QUESTIONS = "all_angles_bench/data.derived.json"
NUMBERS = {"A": "2", "B": "3", "C": "4"}
PHRASES = {"A": "The red chair", "B": "The blue chair", "C": "A table"}


@pytest.mark.parametrize(
    ("answer", "options", "expected"),
    [
        ("A", NUMBERS, "A"),
        ("A.", NUMBERS, "A"),
        ("The answer is A", NUMBERS, "A"),  # one option letter among the words
        ("(B)", NUMBERS, "B"),
        ("**C**", NUMBERS, "C"),
        ("A A", NUMBERS, "A"),  # letters are counted once
        ("A or B", NUMBERS, None),  # two letters, and no option text
        ("a", NUMBERS, None),  # letters are case-sensitive
        ("", NUMBERS, None),
        ("Ａ", NUMBERS, None),
        ("2", NUMBERS, "A"),  # no letter: the unique option text contained in the answer
        ("24", NUMBERS, None),  # two option texts contained
        ("the blue chair, clearly", PHRASES, "B"),  # case-insensitive text match
        ("THE RED CHAIR", PHRASES, "A"),
        ("A table", PHRASES, "A"),
        ("Z", NUMBERS, "Z"),
        ("Cannot determine the answer", NUMBERS, "Z"),  # refusal phrases map to Z (never right)
        ("Sorry, I can't help with images of people yet. A", NUMBERS, "Z"),
        ("cannot determine the answer", NUMBERS, None),  # refusal match is case-sensitive
        ("Failed to obtain answer via API 3", NUMBERS, "B"),  # API failure skips letters, not text
    ],
)
def test_infer_option(answer, options, expected):
    assert infer_option(answer, dict(options)) == expected


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_garbage_never_crashes(text):
    assert infer_option(text, dict(PHRASES)) in {None, "A", "B", "C", "Z"}


def _q(index, category, answer="A", pair=None):
    return allangles.AAQuestion(index, category, "Q?", dict(NUMBERS), answer, ("a.jpg",), pair)


def test_pairs_and_categories_hand_computed():
    qs = [
        _q(0, "counting", pair="1"),
        _q(1, "counting", pair="0"),
        _q(2, "manipulation", pair="3"),
        _q(3, "manipulation", pair="2"),
        _q(4, "counting"),
        _q(5, "manipulation", pair="6"),
        _q(6, "manipulation", pair="5"),
    ]
    preds = {"0": "A", "1": "2", "2": "A", "3": "B", "4": "C", "5": "B", "6": "C"}
    scored = allangles.score(qs, preds)
    m = scored.metrics
    assert m["overall"] == pytest.approx(100 * 3 / 7)
    assert m["counting"] == pytest.approx(100 * 2 / 3)
    assert m["manipulation"] == pytest.approx(100 * 1 / 4)
    assert m["pairs"] == {
        "counting": {"CC": 1.0, "WW": 0.0, "IC": 0.0, "n": 1},
        "manipulation": {"CC": 0.0, "WW": 0.5, "IC": 0.5, "n": 2},
    }


def test_missing_predictions_and_absent_twins():
    qs = [_q(0, "counting", pair="9"), _q(1, "counting")]
    scored = allangles.score(qs, {"0": "A"})
    assert scored.missing == ["1"]
    assert scored.metrics["overall"] == pytest.approx(50.0)
    assert scored.metrics["pairs"] == {}
    assert any("pair_idx" in w for w in scored.warnings)


@pytest.fixture(scope="module")
def real(shared_data):
    path = shared_data / QUESTIONS
    return allangles.load_questions(path), json.loads(path.read_text())


def test_real_file_perfect_predictions_score_100(real):
    questions, records = real
    assert len(questions) == len(records) == 2132
    scored = allangles.score(questions, {str(r["index"]): r["answer"] for r in records})
    m = scored.metrics
    categories = sorted({r["category"] for r in records})
    assert [k for k in m if k not in ("overall", "pairs")] == categories
    assert all(m[k] == 100.0 for k in ["overall", *categories])
    n_pairs = sum(1 for r in records if r["pair_idx"] != "") // 2
    assert sum(p["n"] for p in m["pairs"].values()) == n_pairs
    assert all(p["CC"] == 1.0 and p["WW"] == 0.0 and p["IC"] == 0.0 for p in m["pairs"].values())


def test_real_file_all_wrong_answers(real):
    questions, records = real
    wrong = {str(r["index"]): next(x for x in "ABC" if x != r["answer"]) for r in records}
    m = allangles.score(questions, wrong).metrics
    assert m["overall"] == 0.0
    assert all(p["WW"] == 1.0 for p in m["pairs"].values())


def test_real_prompt_snapshot(real):
    questions, _ = real
    assert questions[0].prompt() == (
        "Considering the multiple camera views provided, can you count the total number of bicycles "
        "hanging on the bike stand in the scene?\nA. 2\nB. 3\nC. 4\n"
        "Answer with the option's letter from the given choices directly."
    )


def _record(**kw):
    r = dict(
        index=5,
        folder="f",
        category="counting",
        pair_idx="",
        sourced_dataset="x",
        image_path=["f/a.jpg"],
        question="Q?",
        A="1",
        B="2",
        C="3",
        answer="B",
    )
    r.update(kw)
    return r


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([_record(answer="D")], r"record 0 \(index 5\): answer 'D' is not one of its options A, B, C"),
        ([_record(image_path=[])], r"record 0 \(index 5\): image_path"),
        ([{"index": 5}], r"record 0 \(index 5\): missing field\(s\) category, question, answer, image_path"),
        ([_record(), _record()], r"record 1 \(index 5\): duplicate index 5"),
    ],
)
def test_loading_errors_name_file_and_record(tmp_path, records, message):
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records))
    with pytest.raises(BadInputError, match=message) as info:
        allangles.load_questions(path)
    assert str(path) in str(info.value)
