"""Every folder of ../shared/data loads with the counts its SOURCE.md states."""

import collections

import pytest

from vlbeit_keras.data import readers as R


def _no_skips(records):
    assert records.report.count == 0, records.report.summary()


@pytest.mark.parametrize(
    "split, examples, sentences, images",
    [("dev", 989, 267, 5934), ("hidden", 985, 266, 5910)],
)
def test_nlvr1(shared, split, examples, sentences, images):
    root = shared("data", "nlvr1", split)
    records = R.read_nlvr(root / f"{split}.json")
    _no_skips(records)
    assert len(records) == examples
    assert len({r["sentence_id"] for r in records}) == sentences
    paths = [p for r in records for p in r["images"]]
    assert len(paths) == len(set(paths)) == images
    assert all(len(r["images"]) == 6 for r in records)
    assert len(R.read_nlvr(root / f"{split}.json", per_image=True)) == images
    if split == "dev":  # the majority class, "true", is about 55 % on dev
        share = sum(r["label"] for r in records) / len(records)
        assert 0.5 < share < 0.6


@pytest.mark.parametrize("split, images, captions", [("train2017", 80, 400), ("val2017", 159, 795)])
def test_coco_mini_captions(shared, split, images, captions):
    root = shared("data", "coco_mini_captions")
    records = R.read_coco_captions(
        root / "annotations" / f"captions_{split}.json", root / split, verify_images=True
    )
    _no_skips(records)
    assert len(records) == captions and records.info["num_images"] == images
    per_image = collections.Counter(r["image_id"] for r in records)
    assert set(per_image.values()) == {5}
    assert all(r["split"] == split for r in records)


def test_flickr8k_test1k(shared):
    root = shared("data", "flickr8k_test1k_224")
    records = R.read_flickr8k(
        root / "Flickr8k.token.txt", root / "images",
        split_file=root / "Flickr_8k.testImages.txt",
    )
    _no_skips(records)
    assert len(records) == 5000 and records.info["num_images"] == 1000
    assert records.info["missing_captions"] == [] and records[0]["split"] == "test"
    assert set(collections.Counter(r["image_id"] for r in records).values()) == {5}
    lemma = R.read_flickr8k(root / "Flickr8k.lemma.token.txt", root / "images")
    assert len(lemma) == 5000


def test_daquar_subset(shared):
    root = shared("data", "daquar_subset")
    records = R.read_daquar(
        root / "all_qa_pairs.txt", root / "images", image_list=root / "test_images_list.txt"
    )
    _no_skips(records)
    assert len(records) == 959
    image_list = R.read_split_list(root / "test_images_list.txt")
    assert len(image_list) == len(list((root / "images").glob("image*.png"))) == 123
    # One listed image (image190) is asked no question: 122 images carry the 959 pairs.
    assert records.info["num_images"] == 122
    assert records.info["images_without_questions"] == ["image190"]
    assert records[0]["image_id"] == "image1" and records[0]["answer"] == "garbage_bin"
    assert all("image ?" in r["text"] or r["text"].endswith("?") for r in records)
    parts = R.split_records(records, {"train": 0.8, "test": 0.2}, seed=0)
    train_ids = {r["image_id"] for r in parts["train"]}
    test_ids = {r["image_id"] for r in parts["test"]}
    assert (len(train_ids), len(test_ids)) == (98, 24) and not train_ids & test_ids
    assert parts == R.split_records(records, {"train": 0.8, "test": 0.2}, seed=0)
