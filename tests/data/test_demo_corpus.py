"""The embedded demo corpus: determinism, vocabulary, balance, learnability."""

import collections
import io

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

import vlbeit_keras
from vlbeit_keras.data import demo_corpus as demo
from vlbeit_keras.data.image_preprocessing import mentions_left_or_right


def _pixels(png):
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.int32)


def test_deterministic_and_prefix_stable():
    a = demo.demo_records("vqa", 20, seed=3)
    b = demo.demo_records("vqa", 40, seed=3)
    assert a == b[:20]
    assert a != demo.demo_records("vqa", 20, seed=4)
    assert demo.demo_records("nlvr2", 5, split="val") != demo.demo_records("nlvr2", 5)
    with pytest.raises(ValueError, match="Unknown demo task"):
        demo.demo_records("segmentation")


@pytest.mark.parametrize("size", [32, (96, 400), (40, 24)])
def test_images_render_at_any_size(size):
    records = demo.demo_records("captions", 3, image_size=size)
    expected = (size, size) if isinstance(size, int) else size
    for r in records:
        assert isinstance(r["image"], bytes) and r["image"].startswith(b"\x89PNG")
        assert _pixels(r["image"]).shape == (*expected, 3)
    assert len(records) == 9  # three captions per image


def test_record_schema():
    vqa = demo.demo_records("vqa", 7)
    assert {"image", "text", "answers", "label", "question_id", "image_id", "question_type",
            "source"} <= set(vqa[0])
    assert len(vqa[0]["answers"]) == 10 and set(vqa[0]["answers"]) == {vqa[0]["label"]}
    pair = demo.demo_records("nlvr2", 2)[0]
    assert len(pair["images"]) == 2 and pair["label"] in (0, 1)
    assert pair["identifier"].endswith("-0")
    assert isinstance(demo.demo_text_corpus(5)[0], str)


def test_vocabulary_covers_every_text():
    vocab = demo.demo_vocabulary()
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert len(vocab) <= 100 and len(set(vocab)) == len(vocab)  # fits the tiny preset
    tokenizer = demo.demo_tokenizer()
    texts = [r["text"] for task in ("captions", "vqa", "nlvr2", "nlvr", "text")
             for r in demo.demo_records(task, 150)]
    unk = tokenizer.token_to_id("[UNK]")
    for text in texts:
        ids = np.asarray(tokenizer(text))
        assert unk not in ids, text
    assert set(demo.demo_answer_vocabulary()) >= {"yes", "no", "0", "4", "red", "triangle"}


def test_answers_balanced_and_text_uninformative():
    """Answers are uniform within each question type, and a text-only model
    (the majority answer per exact question string, fit on one split and
    scored on another) does no better than chance."""
    train = demo.demo_records("vqa", 2800, split="train")
    test = demo.demo_records("vqa", 1400, split="test")
    by_type = collections.defaultdict(collections.Counter)
    for r in train:
        by_type[r["question_type"]][r["label"]] += 1
    for qtype, counts in by_type.items():
        expected = sum(counts.values()) / len(demo._QUESTION_ANSWERS[qtype])
        assert set(counts) == set(demo._QUESTION_ANSWERS[qtype]), qtype
        # chi-square with <= 4 degrees of freedom, p ~ 0.001
        chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
        assert chi2 < 18.5, (qtype, counts)

    majority = collections.defaultdict(collections.Counter)
    for r in train:
        majority[r["text"]][r["label"]] += 1
    hits, chance = [], []
    for r in test:
        guess = majority[r["text"]].most_common(1)[0][0] if r["text"] in majority else None
        hits.append(guess == r["label"])
        chance.append(1.0 / len(demo._QUESTION_ANSWERS[r["question_type"]]))
    print(f"\ntext-only accuracy {np.mean(hits):.3f}, chance {np.mean(chance):.3f}")
    assert np.mean(hits) < np.mean(chance) + 0.05


@pytest.mark.parametrize("task", ["nlvr", "nlvr2"])
def test_statements_half_true_and_text_uninformative(task):
    train = demo.demo_records(task, 2000)
    test = demo.demo_records(task, 1000, split="test")
    share = np.mean([r["label"] for r in train])
    assert 0.46 < share < 0.54
    majority = collections.defaultdict(collections.Counter)
    for r in train:
        majority[r["text"]][r["label"]] += 1
    hits = [majority[r["text"]].most_common(1)[0][0] == r["label"]
            for r in test if r["text"] in majority]
    print(f"\n{task}: true {share:.3f}; text-only accuracy {np.mean(hits):.3f}")
    assert np.mean(hits) < 0.56


def _parse_scene(pixels):
    """Recover (colour, shape, x) of every shape from the pixels alone."""
    colors = {name: np.array(rgb) for name, rgb in demo.COLORS.items()}
    found = []
    for name, rgb in colors.items():
        close = np.abs(pixels - rgb).sum(-1) < 60
        labels, n = ndimage.label(close)
        for k in range(1, n + 1):
            ys, xs = np.nonzero(labels == k)
            if len(ys) < 4:
                continue
            h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
            fill = len(ys) / (h * w)
            shape = "square" if fill > 0.88 else "circle" if fill > 0.66 else "triangle"
            found.append((name, shape, xs.mean()))
    return sorted(found, key=lambda f: f[2])


def test_scenes_recoverable_from_pixels():
    """Learnable: a pixel-only parser recovers every scene exactly (colours,
    shapes, left-to-right order), so every answer is determined by the image."""
    records = demo.demo_records("vqa", 210, image_size=64)
    exact = 0
    for r in records:
        parsed = [(c, s) for c, s, _ in _parse_scene(_pixels(r["image"]))]
        truth = [(o["color"], o["shape"]) for o in r["scene"]]
        exact += parsed == truth
    print(f"\nscenes parsed exactly from 64 px pixels: {exact}/{len(records)}")
    assert exact >= 0.97 * len(records)


def test_position_questions_disable_flips():
    records = demo.demo_records("vqa", 70)
    for r in records:
        if r["question_type"] == "position":
            assert mentions_left_or_right(r["text"])
        elif r["question_type"] in ("count_all", "color", "shape", "exist"):
            assert not mentions_left_or_right(r["text"])


def test_registered_as_data_source():
    reader = vlbeit_keras.get_registry("datasets").get("demo")
    records = reader(task="nlvr", num_examples=3, image_size=32)
    assert len(records) == 3 and records[0]["source"] == "demo"


def test_nlvr2_labels_agree_with_the_scene_annotations():
    """Each NLVR2 statement, re-read here from its text (independently of the
    generator's predicates), is true of the two annotated scenes exactly when
    the label says so; every statement form occurs."""
    import re

    number = {w: i for i, w in enumerate(demo.NUMBER_WORDS)}

    def count(scene, color=None, shape=None):
        return sum((color is None or o["color"] == color) and (shape is None or o["shape"] == shape)
                   for o in scene)

    forms = collections.Counter()
    for r in demo.demo_records("nlvr2", 300):
        left, right = r["scenes"]
        text = r["text"]
        if m := re.fullmatch(r"there is a (\w+) (\w+) in the (left|right) image", text):
            form, truth = "exists", count(left if m[3] == "left" else right, m[1], m[2]) > 0
        elif m := re.fullmatch(r"the (left|right) image contains exactly (\w+) (\w+) shapes?", text):
            form, truth = "exactly", count(left if m[1] == "left" else right, color=m[3]) == number[m[2]]
        elif m := re.fullmatch(r"both images contain a (\w+) shape", text):
            form, truth = "both", count(left, color=m[1]) > 0 and count(right, color=m[1]) > 0
        elif m := re.fullmatch(r"both images contain a (\w+)", text):
            form, truth = "both", count(left, shape=m[1]) > 0 and count(right, shape=m[1]) > 0
        elif m := re.fullmatch(r"the left image contains more (\w+)s than the right image", text):
            form, truth = "more", count(left, shape=m[1]) > count(right, shape=m[1])
        elif m := re.fullmatch(r"there are (\w+) shapes in total in the two images", text):
            form, truth = "total", len(left) + len(right) == number[m[1]]
        else:
            raise AssertionError(f"unexpected NLVR2 demo statement {text!r}")
        forms[form] += 1
        assert truth == bool(r["label"]), (text, r["scenes"], r["label"])
    assert len(forms) == 5, forms
