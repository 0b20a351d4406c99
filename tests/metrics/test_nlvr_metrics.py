"""NLVR / NLVR2 accuracy and consistency as the datasets define them."""

import json

import pytest

from vlbeit_keras.metrics import nlvr


def _examples():
    return [
        {"identifier": "1-0", "label": "true"},
        {"identifier": "1-1", "label": "false"},
        {"identifier": "2-0", "label": "True"},
    ]


def test_accuracy_over_images_consistency_over_sentences():
    preds = {f"dev-{e['identifier']}-{k}.png": e["label"].lower() for e in _examples() for k in range(6)}
    preds["dev-1-1-3.png"] = "true"  # one wrong image of sentence 1
    out = nlvr.nlvr_metrics(preds, _examples())
    assert out["accuracy"] == pytest.approx(17 / 18)
    assert out["consistency"] == pytest.approx(1 / 2)
    assert out["num_images"] == 18 and out["num_sentences"] == 2


def test_rows_with_paths_and_case_insensitive_labels():
    rows = [(f"/data/dev/images/3/dev-{e['identifier']}-{k}.png", e["label"].upper())
            for e in _examples() for k in range(6)]
    out = nlvr.nlvr_metrics(rows, _examples())
    assert out["accuracy"] == 1.0 and out["consistency"] == 1.0


def test_missing_prediction_raises_like_the_official_script():
    preds = {f"dev-{e['identifier']}-{k}.png": "true" for e in _examples() for k in range(5)}
    with pytest.raises(ValueError, match="missing"):
        nlvr.nlvr_metrics(preds, _examples())


def test_majority_baseline_on_real_dev_split(shared):
    # Predicting "true" for every image of nlvr1/dev: accuracy is the share
    # of "true" images, computed here independently from the JSON lines.
    path = shared("data", "nlvr1", "dev", "dev.json")
    with open(path, encoding="utf-8") as f:
        examples = [json.loads(line) for line in f if line.strip()]
    rows = [(f"dev-{e['identifier']}-{k}.png", "true") for e in examples for k in range(6)]
    out = nlvr.nlvr_metrics(rows, examples)
    share_true = sum(e["label"] == "true" for e in examples) / len(examples)
    assert out["num_images"] == 6 * len(examples) == 5934
    assert out["accuracy"] == pytest.approx(share_true)
    assert out["num_sentences"] == 267
    sentences_all_true = {}
    for e in examples:
        n = e["identifier"].split("-")[0]
        sentences_all_true[n] = sentences_all_true.get(n, True) and e["label"] == "true"
    assert out["consistency"] == pytest.approx(sum(sentences_all_true.values()) / 267)


def test_nlvr2_grouping_blanks_the_third_component():
    examples = [
        {"identifier": "dev-850-0-0", "label": "True"},
        {"identifier": "dev-850-1-0", "label": "False"},  # same sentence as above
        {"identifier": "dev-850-0-1", "label": "True"},  # another sentence
    ]
    assert nlvr.nlvr2_sentence_key("dev-850-1-0") == "dev-850--0"
    out = nlvr.nlvr2_metrics({"dev-850-0-0": True, "dev-850-1-0": True, "dev-850-0-1": "true"}, examples)
    assert out["accuracy"] == pytest.approx(2 / 3)
    assert out["consistency"] == pytest.approx(1 / 2)
    with pytest.raises(ValueError, match="true/false"):
        nlvr.nlvr2_metrics({"dev-850-0-0": "maybe"}, examples[:1])
