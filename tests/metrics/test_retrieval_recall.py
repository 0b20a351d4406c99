"""Retrieval recall against the shared test vectors; id-based matching."""

import json

import numpy as np
import pytest

from vlbeit_keras.metrics import retrieval


def _cases(shared):
    path = shared("fixtures", "retrieval_eval", "cases.jsonl")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_every_fixture_case(shared):
    cases = _cases(shared)
    assert len(cases) >= 10
    wrong = []
    for case in cases:
        sim = np.array(case["similarity"], dtype=np.float64)
        got = retrieval.retrieval_recall(sim, np.arange(sim.shape[0]), case["text_to_image"])
        for key, expected in case["expected"].items():
            if abs(got[key] - expected) > 1e-9:
                wrong.append((case["id"], key, got[key], expected))
    assert not wrong, wrong


def test_fixture_cases_in_float32_and_with_string_ids_in_shuffled_order(shared):
    # Ownership comes from ids: renaming images and permuting rows/columns
    # (keeping the tie order of equal scores) must not change any recall.
    for case in _cases(shared):
        sim = np.array(case["similarity"], dtype=np.float32)
        owners = np.array(case["text_to_image"])
        names = np.array([f"image-{i * 7 % 101}" for i in range(sim.shape[0])])
        got = retrieval.retrieval_recall(sim, names, names[owners])
        for key, expected in case["expected"].items():
            assert abs(got[key] - expected) <= 1e-9, (case["id"], key)


def test_permuting_gallery_without_ties_keeps_recall():
    rng = np.random.default_rng(0)
    sim = rng.normal(size=(6, 14))
    owners = np.concatenate([np.arange(6), rng.integers(0, 6, 8)])
    ids = np.array([100 + i for i in range(6)])
    base = retrieval.retrieval_recall(sim, ids, ids[owners])
    perm_i, perm_t = rng.permutation(6), rng.permutation(14)
    moved = retrieval.retrieval_recall(sim[perm_i][:, perm_t], ids[perm_i], ids[owners][perm_t])
    assert moved == pytest.approx(base)


def test_tie_rule_lower_index_first():
    sim = np.array([[0.5, 0.5]])  # both texts tie; text 1 is the image's own
    got = retrieval.retrieval_recall(np.vstack([sim, [[0.9, 0.0]]]), [0, 1], [1, 0])
    # image 0 owns text 1, which ties with text 0 and loses on index.
    assert got["tr_r1"] == 0.5


def test_errors_name_the_problem():
    sim = np.zeros((2, 2))
    with pytest.raises(ValueError, match="twice"):
        retrieval.retrieval_recall(sim, ["a", "a"], ["a", "a"])
    with pytest.raises(ValueError, match="absent"):
        retrieval.retrieval_recall(sim, ["a", "b"], ["a", "c"])
    with pytest.raises(ValueError, match="own no text"):
        retrieval.retrieval_recall(sim, ["a", "b"], ["a", "a"])
    with pytest.raises(ValueError, match="shape"):
        retrieval.retrieval_recall(np.zeros((2, 3)), ["a", "b"], ["a", "b"])


def test_unique_images_keeps_first_occurrence():
    ids, first = retrieval.unique_images(["b", "a", "b", "c", "a"])
    assert ids == ["b", "a", "c"]
    assert first.tolist() == [0, 1, 3]


def test_text_keys_merge_duplicate_captions():
    """Images a and b share the caption "one circle" (texts 0 and 2): with
    text_keys either text is a correct answer for either image, so the tie
    between the identical texts no longer decides R@1."""
    image_ids = ["a", "b"]
    text_image_ids = ["a", "a", "b", "b"]
    keys = ["one circle", "a red circle", "one circle", "a blue circle"]
    # Image b ranks text 0 first (the duplicate of its own text 2, scored
    # equally, lower index wins); text 2 ranks image a first.
    i2t = np.array([[0.9, 0.1, 0.9, 0.3], [0.9, 0.0, 0.9, 0.2]])
    retrieval_recall = retrieval.retrieval_recall
    standard = retrieval_recall(i2t, image_ids, text_image_ids, ks=(1,))
    merged = retrieval_recall(i2t, image_ids, text_image_ids, ks=(1,), text_keys=keys)
    assert standard["tr_r1"] == 0.5 and merged["tr_r1"] == 1.0
    # IR: texts 0 and 2 rank image a first (ties by index): text 2 is a miss
    # by id, a hit with keys; text 3 ("a blue circle", unique) stays a miss.
    assert standard["ir_r1"] == 0.5 and merged["ir_r1"] == 0.75
    unique = ["k0", "k1", "k2", "k3"]
    assert retrieval_recall(i2t, image_ids, text_image_ids, text_keys=unique) == \
        retrieval_recall(i2t, image_ids, text_image_ids)
    with pytest.raises(ValueError, match="text_keys"):
        retrieval_recall(i2t, image_ids, text_image_ids, text_keys=keys[:3])
