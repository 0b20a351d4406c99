"""VQA head, loss, targets, metric and results format."""

import json
import math

import keras
import numpy as np
import pytest

from vlbeit_keras.metrics.vqa import vqa_accuracy
from vlbeit_keras.metrics.vqa_score import VQAScore
from vlbeit_keras.tasks import vqa


def _gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / np.sqrt(2)))


def _layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def test_head_is_dense_layernorm_exact_gelu_dense(tiny_backbone, rng, pair_inputs, to_numpy):
    model = vqa.VLBEiTVQA(tiny_backbone, answer_vocabulary=["yes", "no", "2", "red", "blue"])
    head = model.classifier
    assert head.fc1.kernel.shape == (32, 64) and head.fc2.kernel.shape == (64, 5)
    assert head.norm.epsilon == 1e-5
    x = pair_inputs(rng, 3)
    pooled = to_numpy(tiny_backbone.encode_image_text(x["token_ids"], x["padding_mask"], x["images"])["pooled_output"])
    h = pooled @ to_numpy(head.fc1.kernel) + to_numpy(head.fc1.bias)
    h = _layer_norm(h, to_numpy(head.norm.gamma), to_numpy(head.norm.beta), 1e-5)
    expected = _gelu(h) @ to_numpy(head.fc2.kernel) + to_numpy(head.fc2.bias)
    np.testing.assert_allclose(to_numpy(model(x)), expected, atol=1e-5)


def test_loss_is_bce_mean_times_num_answers(rng):
    logits = rng.normal(size=(4, 7)).astype("float32") * 3
    targets = rng.choice([0.0, 0.3, 0.6, 0.9, 1.0], size=(4, 7)).astype("float32")
    # VLMo: F.binary_cross_entropy_with_logits(logits, targets) * targets.shape[1]
    bce = np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))
    expected = bce.mean() * 7
    got = float(keras.ops.convert_to_numpy(vqa.VQASoftScoreLoss()(targets, logits)))
    assert got == pytest.approx(expected, rel=1e-5)


def test_vqa_score_metric_scores_the_argmax_answer():
    metric = VQAScore()
    y_true = np.array([[0.0, 0.3, 1.0], [0.6, 0.0, 0.0]], "float32")
    y_pred = np.array([[0.0, 5.0, 1.0], [2.0, 0.0, 0.0]], "float32")
    metric.update_state(y_true, y_pred)
    assert float(metric.result()) == pytest.approx((0.3 + 0.6) / 2)


def test_targets_use_the_official_accuracy():
    answers = ["Two", "2", "2", "two ", "yes", "yes", "no", "no", "no", "blue"]
    vocabulary = ["2", "yes", "no", "red"]
    labels, scores = vqa.answer_targets(answers, {a: i for i, a in enumerate(vocabulary)})
    got = dict(zip(labels, scores))
    for i, answer in enumerate(vocabulary):
        assert got.get(i, 0.0) == pytest.approx(vqa_accuracy(answer, answers)), answer
    assert got[0] == pytest.approx(1.0)  # four annotators say 2 after normalisation
    # A single answer (DAQUAR): leave-one-out gives 0, so the target is 1.0.
    assert vqa.answer_targets(["Chair."], {"chair": 0}) == ([0], [1.0])


def test_vocabulary_from_normalised_majority_answers():
    lists = [["Yes"] * 6 + ["no"] * 4, ["yes"] * 10, ["2"] * 5 + ["two"] * 5, ["red"] * 10]
    # "Yes"/"yes" are one answer; "2"/"two" too (one question each way).
    assert vqa.build_answer_vocabulary(lists, min_count=2) == ["yes"]
    assert vqa.build_answer_vocabulary(lists, min_count=1) == ["yes", "2", "red"]
    assert vqa.build_answer_vocabulary(lists, min_count=1, max_size=1) == ["yes"]


def test_dataset_soft_scores_and_unanswerable_questions(io, rng):
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    records = [
        {"image": image, "text": "what color", "answers": ["red"] * 2 + ["blue"] * 8, "question_id": 1},
        {"image": image, "text": "how many", "answers": ["7"] * 10, "question_id": 2},
    ]
    vocabulary = ["blue", "red"]
    with pytest.warns(UserWarning, match="dropped 1 of 2"):
        ds = vqa.make_dataset(records, batch_size=1, answer_vocabulary=vocabulary,
                              training=True, seed=0, **io)
    x, y = next(iter(ds))
    np.testing.assert_allclose(np.asarray(y), [[1.0, 0.6]])
    assert x["images"].shape == (1, 32, 32, 3) and x["token_ids"].shape == (1, 8)
    ds = vqa.make_dataset(records, batch_size=2, answer_vocabulary=vocabulary,
                          training=False, **io)
    _, y = next(iter(ds))
    np.testing.assert_allclose(np.asarray(y), [[1.0, 0.6], [0.0, 0.0]])
    with pytest.raises(ValueError, match="record 0: missing field 'answers'"):
        vqa.make_dataset([{"image": image, "text": "q"}], batch_size=1,
                         answer_vocabulary=vocabulary, **io)


def test_results_file_is_the_official_format(tmp_path):
    path = vqa.export_predictions(
        [{"question_id": np.int64(5), "answer": "yes"}, {"question_id": 7, "answer": "2"}],
        str(tmp_path / "results.json"),
    )
    with open(path) as f:
        results = json.load(f)
    assert results == [{"question_id": 5, "answer": "yes"}, {"question_id": 7, "answer": "2"}]


def test_vocabulary_validation(tiny_backbone):
    with pytest.raises(ValueError, match="Duplicate"):
        vqa.VLBEiTVQA(tiny_backbone, answer_vocabulary=["yes", "yes"])
    with pytest.raises(ValueError, match="answer_vocabulary"):
        vqa.VLBEiTVQA(tiny_backbone)
    model = vqa.VLBEiTVQA(tiny_backbone, num_answers=3129)
    assert model.classifier.fc2.kernel.shape == (64, 3129)
