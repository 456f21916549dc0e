"""`gasp eval score / compare` end to end, and predictions-file errors."""

import json

import pytest
from test_eval_allangles import _record

from gasp.cli import main
from gasp.errors import BadInputError
from gasp.eval.common import load_predictions


def _score(benchmark, questions, predictions, output_dir):
    args = ["--benchmark", benchmark, "--questions", str(questions), "--predictions", str(predictions)]
    return main(["eval", "score", *args, "--output-dir", str(output_dir)])


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def aa_questions(tmp_path):
    records = [
        _record(index=i, category=c, pair_idx=p, answer="A")
        for i, c, p in [(0, "counting", "1"), (1, "counting", "0"), (2, "manipulation", "")]
    ]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records))
    return path


def test_score_writes_outputs_and_compare_prints_deltas(tmp_path, aa_questions, capsys):
    good = _jsonl(tmp_path / "good.jsonl", [{"index": i, "prediction": "A"} for i in range(3)])
    half = _jsonl(
        tmp_path / "half.jsonl", [{"index": 0, "prediction": "A"}, {"index": 1, "prediction": "B."}]
    )
    for name, preds in (("a", good), ("b", half)):
        rc = _score("all-angles", aa_questions, preds, tmp_path / name)
        assert rc == 0
    for f in ("results.json", "results.md", "results.png", "per_question.jsonl"):
        assert (tmp_path / "b" / f).stat().st_size > 0
    assert (tmp_path / "b" / "results.png").read_bytes()[:4] == b"\x89PNG"
    b = json.loads((tmp_path / "b" / "results.json").read_text())
    assert b["overall"] == pytest.approx(100 / 3)
    assert b["missing"] == {"count": 1, "ids": ["2"]}
    assert b["pairs"]["counting"] == {"CC": 0.0, "WW": 0.0, "IC": 1.0, "n": 1}
    assert "| manipulation | 0.0 |" in (tmp_path / "b" / "results.md").read_text()
    capsys.readouterr()
    assert main(["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b" / "results.json")]) == 0
    out = capsys.readouterr().out
    assert "| overall | 100.0 | 33.3 | -66.7 |" in out
    assert "| pairs/counting/IC | 0.0 | 100.0 | +100.0 |" in out


def test_score_errors_are_reported_without_traceback(tmp_path, aa_questions, capsys):
    dup = _jsonl(
        tmp_path / "dup.jsonl",
        [
            {"index": 1, "prediction": "A"},
            {"index": "1", "prediction": "B"},
            {"index": 2, "prediction": "A"},
            {"index": 2, "prediction": "A"},
        ],
    )
    rc = _score("all-angles", aa_questions, dup, tmp_path / "o")
    assert rc == 2
    assert "dup.jsonl, line 2: duplicate index '1' (first seen on line 1)" in capsys.readouterr().err
    assert not (tmp_path / "o" / "results.json").exists()


def test_load_predictions_errors(tmp_path):
    known = {"0", "1"}
    cases = [
        (
            '{"id": 0, "prediction": "A"}\n{"id": 5, "prediction": "A"}\n',
            r"'id' values not in the question file: 5",
        ),
        ('{"id": 0, "prediction": "A"}\n{"id": 0,\n', r"line 2: not valid JSON"),
        ('{"id": 0}\n', r"line 1: expected an object with 'id' and 'prediction'"),
        ('{"id": 0, "prediction": ["A"]}\n', r"line 1: 'prediction' must be a string"),
        ('{"id": 0, "prediction": "A"}\n{"id": 1, "prediction": NaN}\n', r"line 2: not valid JSON \(NaN "),
        ('{"id": 0, "prediction": Infinity}\n', r"line 1: not valid JSON \(Infinity "),
        ('{"id": -Infinity, "prediction": "A"}\n', r"line 1: not valid JSON \(-Infinity "),
        (
            '{"id": 0, "prediction": "A"}\n\n{"id": 1, "prediction": "B"}\n{"id": "0", "prediction": "C"}\n',
            r"p.jsonl, line 4: duplicate id '0' \(first seen on line 1\)",
        ),
    ]
    for text, message in cases:
        path = tmp_path / "p.jsonl"
        path.write_text(text)
        with pytest.raises(BadInputError, match=message):
            load_predictions(path, "id", known)
    path.write_text('{"id": 0.0, "prediction": 3}\n\n{"id": "1", "prediction": null}\n')
    assert load_predictions(path, "id", known) == {"0": "3"}
    path.write_text(json.dumps({"id": 1, "prediction": "A\u2028B ✓"}, ensure_ascii=False) + "\n")
    assert load_predictions(path, "id", known) == {"1": "A\u2028B ✓"}  # U+2028 is not a line break
    path.write_bytes(b"\xff\xfe\n")
    with pytest.raises(BadInputError, match="p.jsonl: not UTF-8 text"):
        load_predictions(path, "id", known)


def test_vsibench_score_cli_real_file(tmp_path, shared_data):
    import pyarrow.parquet as pq

    questions = shared_data / "vsibench/test-00000-of-00001.parquet"
    rows = pq.read_table(questions, columns=["id", "ground_truth"]).to_pylist()
    preds = _jsonl(
        tmp_path / "p.jsonl", [{"id": r["id"], "prediction": r["ground_truth"]} for r in rows[:-10]]
    )
    rc = _score("vsibench", questions, preds, tmp_path / "o")
    assert rc == 0
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert results["missing"]["count"] == 10
    assert results["missing"]["ids"] == [str(r["id"]) for r in rows[-10:]]
    assert 99.0 < results["overall"] < 100.0
