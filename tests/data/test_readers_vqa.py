"""VQA answer normalisation against the official evaluator's test vectors."""

import json

import pytest

from vlbeit_keras.data.readers import VQA_EVAL_REVISION
from vlbeit_keras.data.readers import normalize_vqa_answer


def _official_accuracy(prediction, gt_answers):
    """Per-question accuracy at the pinned revision, from our normaliser.

    The gate: if the whitespace-cleaned GT answers are all identical, nothing
    is normalised; otherwise prediction and GT answers are normalised.
    """
    clean = lambda s: s.replace("\n", " ").replace("\t", " ").strip()  # noqa: E731
    gts = [clean(a) for a in gt_answers]
    pred = clean(prediction)
    if len(set(gts)) > 1:
        gts = [normalize_vqa_answer(a) for a in gts]
        pred = normalize_vqa_answer(pred)
    total = 0.0
    for i in range(len(gts)):
        matches = sum(1 for j, a in enumerate(gts) if j != i and a == pred)
        total += min(1, matches / 3)
    return total / len(gts)


def test_pinned_revision():
    assert VQA_EVAL_REVISION == "a013f0043c1e2cdc995922dfe257f7149aa9af06"


def test_normalisation_reproduces_official_vqa_accuracy(shared):
    path = shared("fixtures", "vqa_eval", "cases.jsonl")
    cases = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    assert len(cases) >= 100
    wrong = [
        (c["id"], _official_accuracy(c["prediction"], c["gt_answers"]), c["expected_accuracy"])
        for c in cases
        if abs(_official_accuracy(c["prediction"], c["gt_answers"]) - c["expected_accuracy"]) > 1e-9
    ]
    assert not wrong, wrong[:5]


@pytest.mark.parametrize(
    "raw, normalised",
    [
        ("Two dogs.", "2 dogs"),
        ("t-shirt", "t shirt"),
        ("1,000", "1000"),
        ("1, 000", "1 000"),
        ("10,000-20,000", "1000020000"),
        ("x,y", "x y"),
        ("a.m.", "am"),
        ("1.5", "1.5"),
        ("5.", "5"),
        ("The Cat", "cat"),
        ("dont", "don't"),
        ("isnt it", "isn't it"),
        ("none", "0"),
        ("eleven", "eleven"),
        ("  yes\n", "yes"),
        ("somebody'd", "somebodyd"),
        ("Im", "im"),
        ("garbage_bin", "garbage bin"),
        ("table, chair", "table chair"),
        ("what?!", "what"),
        ("50%", "50%"),
        ("." * 40, "." * 8),
    ],
)
def test_normalisation_rules(raw, normalised):
    assert normalize_vqa_answer(raw) == normalised
