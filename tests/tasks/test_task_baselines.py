"""The tasks' trivial baselines (spec.baseline) score with the task's own metric."""

import itertools

import numpy as np
import pytest

import vlbeit_keras
from vlbeit_keras.metrics.retrieval import retrieval_recall
from vlbeit_keras.tasks import retrieval
from vlbeit_keras.tasks import vqa


def test_every_built_in_task_has_a_baseline():
    registry = vlbeit_keras.get_registry("heads")
    for name in ("vqa", "nlvr2", "nlvr", "retrieval", "image_classification", "image_text_classification"):
        assert callable(registry.get(name).baseline)


@pytest.mark.parametrize("text_keys", [None, ["x", "y", "z", "x"]])
def test_chance_recall_is_the_exact_expectation_over_all_rankings(text_keys):
    # 3 images with 1, 2 and 1 captions: every ranking of the 4 texts and of
    # the 3 images, averaged, must give chance_recall exactly (with
    # text_keys: texts 0 and 3 are the same caption of images a and c).
    image_ids = ["a", "b", "c"]
    text_ids = ["a", "b", "b", "c"]
    expected = retrieval.chance_recall(image_ids, text_ids, ks=(1, 2, 3), text_keys=text_keys)
    totals, count = {}, 0
    for text_order in itertools.permutations(range(4)):
        for image_order in itertools.permutations(range(3)):
            # Scores that rank the texts in text_order for every image and the
            # images in image_order for every text.
            i2t = np.tile(-np.argsort(text_order).astype(float), (3, 1))
            t2i = np.tile(-np.argsort(image_order).astype(float), (4, 1))
            recall = retrieval_recall(i2t, image_ids, text_ids, ks=(1, 2, 3), t2i_scores=t2i,
                                      text_keys=text_keys)
            for key, value in recall.items():
                totals[key] = totals.get(key, 0.0) + value
            count += 1
    for key, value in expected.items():
        assert value == pytest.approx(totals[key] / count, abs=1e-12), key


def test_chance_recall_on_flickr_sized_gallery():
    ids = [f"i{k}" for k in range(1000)]
    chance = retrieval.chance_recall(ids, [i for i in ids for _ in range(5)])
    assert chance["ir_r1"] == pytest.approx(0.001) and chance["ir_r10"] == pytest.approx(0.01)
    # 1 - C(4995, 10) / C(5000, 10)
    assert chance["tr_r10"] == pytest.approx(1 - np.prod([(4995 - j) / (5000 - j) for j in range(10)]))


def test_vqa_most_frequent_answer_baseline():
    train = [{"answers": ["two"] * 10}, {"answers": ["2"] * 10}, {"answers": ["red"] * 10}]
    test = [{"answers": ["2"] * 6 + ["3"] * 4, "question_id": 7}, {"answers": ["blue"], "question_id": 8},
            {"answers": ["Two"], "question_id": 9}]
    result = vqa.baseline(train, test)
    assert result["answer"] == "2"  # "two" and "2" normalise together
    # q7: "2" matches 6 of 10 -> 1.0; q8: exact match 0; q9: "Two" -> "2" exact match 1.
    assert result["vqa_accuracy"] == pytest.approx(2 / 3)
    assert result["num_questions"] == 3


def test_majority_class_baselines():
    registry = vlbeit_keras.get_registry("heads")
    train = [{"label": 1}, {"label": 1}, {"label": 0}]
    test = [{"label": 1}, {"label": 0}, {"label": 0}, {"label": 0}]
    assert registry.get("image_text_classification").baseline(train, test)["accuracy"] == 0.25
    assert registry.get("image_classification").baseline(train, test, num_classes=2)["accuracy"] == 0.25
    pairs = [{"label": "False", "identifier": f"dev-{i}-0-0"} for i in range(3)]
    pairs.append({"label": "True", "identifier": "dev-9-1-0"})
    result = registry.get("nlvr2").baseline(pairs[:3], pairs)
    assert result["label"] == "False" and result["accuracy"] == 0.75
