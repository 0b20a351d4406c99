"""VQA accuracy against the shared official-evaluator test vectors."""

import json

import pytest

from vlbeit_keras.metrics import vqa


def _cases(shared):
    path = shared("fixtures", "vqa_eval", "cases.jsonl")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_every_fixture_case_current_revision(shared):
    cases = _cases(shared)
    assert len(cases) > 100
    wrong = []
    for case in cases:
        got = vqa.vqa_accuracy(case["prediction"], case["gt_answers"], revision="current")
        if abs(got - case["expected_accuracy"]) > 1e-9:
            wrong.append((case["id"], got, case["expected_accuracy"]))
    assert not wrong, wrong


def test_every_fixture_case_pre2021_revision(shared):
    cases = _cases(shared)
    assert sum("expected_accuracy_pre2021" in c for c in cases) > 0
    wrong = []
    for case in cases:
        expected = case.get("expected_accuracy_pre2021", case["expected_accuracy"])
        got = vqa.vqa_accuracy(case["prediction"], case["gt_answers"], revision="pre2021")
        if abs(got - expected) > 1e-9:
            wrong.append((case["id"], got, expected))
    assert not wrong, wrong


def test_summing_in_annotator_order_is_bit_exact(shared):
    # The README says summing min(1, n/3) in annotator order gives exact equality.
    for case in _cases(shared):
        assert vqa.vqa_accuracy(case["prediction"], case["gt_answers"]) == case["expected_accuracy"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Two dogs.", "2 dogs"),
        ("t-shirt", "t shirt"),
        ("1,000", "1000"),
        ("a.m.", "am"),
        ("1.5", "1.5"),
        ("The cat's toy", "cat's toy"),
        ("dont", "don't"),
        ("  yes\n", "yes"),
        ("none", "0"),
        ("eleven", "eleven"),
    ],
)
def test_normalize_answer(text, expected):
    assert vqa.normalize_answer(text) == expected


def test_revisions_are_pinned():
    assert vqa.REVISIONS["current"] == "a013f0043c1e2cdc995922dfe257f7149aa9af06"
    assert vqa.REVISIONS["pre2021"] == "a4f1afd59cfda2f1a7f7f720f40bfea2e338c6ad"
    with pytest.raises(ValueError, match="revision"):
        vqa.vqa_accuracy("yes", ["yes"] * 10, revision="2017")


def test_soft_scores_follow_annotator_counts():
    gts = ["Two"] * 1 + ["2"] * 2 + ["three"] * 3 + ["no"] * 4
    scores = vqa.vqa_soft_scores(gts)
    assert scores["2"] == pytest.approx(0.9)  # "Two" and "2" normalise to "2"
    assert scores["3"] == pytest.approx(0.9)
    assert scores["no"] == pytest.approx(1.0)
    assert "two" not in scores


def test_evaluate_vqa_dataset_level_and_errors():
    refs = {1: ["yes"] * 10, 2: ["red"] * 2 + ["blue"] * 8}
    out = vqa.evaluate_vqa([{"question_id": 1, "answer": "yes"}, {"question_id": 2, "answer": "red"}], refs)
    assert out["accuracy"] == pytest.approx((1.0 + 0.6) / 2)
    assert out["accuracy_percent"] == 80.0
    with pytest.raises(ValueError, match="no prediction"):
        vqa.evaluate_vqa({1: "yes"}, refs)
    with pytest.raises(ValueError, match="Duplicate"):
        vqa.evaluate_vqa([{"question_id": 1, "answer": "a"}, {"question_id": 1, "answer": "b"}], refs)
    with pytest.raises(TypeError):
        vqa.vqa_accuracy(3, ["3"] * 10)
