"""Dataset readers on small files written in each official format, and bad input."""

import csv
import json
import warnings

import pytest

from vlbeit_keras.data import readers as R
from vlbeit_keras.data.readers import DataError
from vlbeit_keras.data.readers import DataSkipWarning
from vlbeit_keras.data.readers import SkipReport


def png(path, size=(4, 4), color=(255, 0, 0)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def write_lines(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataSkipWarning)
        return fn(*args, **kwargs)


def reasons(records):
    return {reason: n for (_, reason), n in records.report.counts().items()}


# ---------------------------------------------------------------- COCO captions
def coco_file(tmp_path, annotations=None):
    png(tmp_path / "val2017" / "000000000001.jpg")
    png(tmp_path / "val2017" / "000000000002.jpg")
    return write_json(
        tmp_path / "annotations" / "captions_val2017.json",
        {
            "info": {"description": "COCO 2017 Dataset"},
            "licenses": [],
            "images": [
                {"id": 1, "file_name": "000000000001.jpg", "width": 4, "height": 4},
                {"id": 2, "file_name": "000000000002.jpg", "width": 4, "height": 4},
                {"id": 3, "file_name": "000000000003.jpg", "width": 4, "height": 4},
            ],
            "annotations": annotations
            or [
                {"image_id": 1, "id": 10, "caption": "A red square. "},
                {"image_id": 2, "id": 11, "caption": "Another red square."},
                {"image_id": 1, "id": 12, "caption": "A small red image."},
            ],
        },
    )


def test_coco_captions(tmp_path):
    path = coco_file(tmp_path)
    records = R.read_coco_captions(path, tmp_path / "val2017")
    assert len(records) == 3 and records.report.count == 0
    assert records[0] == {
        "image": str(tmp_path / "val2017" / "000000000001.jpg"),
        "text": "A red square.",
        "image_id": "1",
        "caption_id": 10,
        "split": "val2017",
        "source": f"{path}#annotations[0]",
    }
    assert records.info["num_images"] == 2


def test_coco_captions_bad_records_are_skipped_with_warnings(tmp_path):
    path = coco_file(tmp_path, [
        {"image_id": 1, "id": 10, "caption": "fine"},
        {"image_id": 1, "id": 11, "caption": "   "},
        {"image_id": 9, "id": 12, "caption": "unknown image"},
        {"image_id": 3, "id": 13, "caption": "image file is missing"},
        {"image_id": 2, "id": 14, "caption": "x" * 3000},
        {"image_id": 2, "id": 15},
    ])
    with pytest.warns(DataSkipWarning) as caught:
        records = R.read_coco_captions(path, tmp_path / "val2017")
    assert [r["caption_id"] for r in records] == [10]
    assert reasons(records) == {
        "empty text": 1, "unknown image_id": 1, "missing file": 1, "text too long": 1,
        "missing field": 1,
    }
    messages = [str(w.message) for w in caught]
    assert any(f"{path}#annotations[1]: field 'caption': empty text" in m for m in messages)
    assert any("annotations[3]: field 'image': missing file" in m and "000000000003.jpg" in m
               for m in messages)
    assert records.info["num_skipped"] == 5
    with pytest.raises(DataError, match=r"annotations\[1\]: field 'caption': empty text.*strict"):
        R.read_coco_captions(path, tmp_path / "val2017", strict=True)


def test_missing_zero_byte_and_malformed_annotation_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="COCO captions file not found"):
        R.read_coco_captions(tmp_path / "nope.json", tmp_path)
    (tmp_path / "empty.json").write_bytes(b"")
    with pytest.raises(DataError, match="zero-byte"):
        R.read_coco_captions(tmp_path / "empty.json", tmp_path)
    (tmp_path / "broken.json").write_text('{"images": [1, 2,\n  ]}')
    with pytest.raises(DataError, match=r"broken.json is not valid JSON.*line 2"):
        R.read_coco_captions(tmp_path / "broken.json", tmp_path)
    write_json(tmp_path / "wrong.json", {"images": []})
    with pytest.raises(DataError, match="'annotations'"):
        R.read_coco_captions(tmp_path / "wrong.json", tmp_path)


def test_image_checks_zero_byte_corrupt_and_unchecked(tmp_path):
    path = coco_file(tmp_path)
    (tmp_path / "val2017" / "000000000002.jpg").write_bytes(b"")
    records = quiet(R.read_coco_captions, path, tmp_path / "val2017")
    assert reasons(records) == {"zero-byte file": 1} and len(records) == 2
    (tmp_path / "val2017" / "000000000002.jpg").write_bytes(b"this is not a JPEG file at all")
    assert len(quiet(R.read_coco_captions, path, tmp_path / "val2017")) == 3  # cheap check only
    records = quiet(R.read_coco_captions, path, tmp_path / "val2017", verify_images=True)
    assert reasons(records) == {"corrupt image": 1} and len(records) == 2
    assert "000000000002.jpg" in records.report.examples()[0].detail
    unchecked = R.read_coco_captions(path, tmp_path / "nowhere", check_images=False)
    assert len(unchecked) == 3


# --------------------------------------------------------------------- Karpathy
def test_karpathy_coco_and_flickr30k(tmp_path):
    png(tmp_path / "coco" / "val2014" / "COCO_val2014_000000391895.jpg")
    png(tmp_path / "coco" / "train2014" / "COCO_train2014_000000000009.jpg")
    coco = write_json(tmp_path / "dataset_coco.json", {"dataset": "coco", "images": [
        {"filepath": "val2014", "filename": "COCO_val2014_000000391895.jpg", "imgid": 0,
         "split": "test", "cocoid": 391895, "sentids": [0, 1],
         "sentences": [{"tokens": ["a", "man"], "raw": "A man with a red helmet.", "imgid": 0,
                        "sentid": 0},
                       {"tokens": ["a", "man"], "raw": "A man on a bike.", "imgid": 0, "sentid": 1}]},
        {"filepath": "train2014", "filename": "COCO_train2014_000000000009.jpg", "imgid": 1,
         "split": "restval", "cocoid": 9, "sentids": [2],
         "sentences": [{"tokens": ["food"], "raw": "Food in bowls.", "imgid": 1, "sentid": 2}]},
    ]})
    records = R.read_karpathy(coco, tmp_path / "coco")
    assert [(r["image_id"], r["caption_id"], r["split"]) for r in records] == [
        ("391895", 0, "test"), ("391895", 1, "test"), ("9", 2, "restval")]
    assert records[0]["image"] == str(tmp_path / "coco" / "val2014" / "COCO_val2014_000000391895.jpg")
    assert records[1]["source"] == f"{coco}#images[0].sentences[1]"
    assert len(R.read_karpathy(coco, tmp_path / "coco", split=["train", "restval"])) == 1
    assert len(R.read_karpathy(coco, tmp_path / "coco", split="test")) == 2
    with pytest.raises(ValueError, match="Unknown Karpathy split"):
        R.read_karpathy(coco, tmp_path / "coco", split="testing")

    png(tmp_path / "flickr30k-images" / "1000092795.jpg")
    f30k = write_json(tmp_path / "dataset_flickr30k.json", {"dataset": "flickr30k", "images": [
        {"filename": "1000092795.jpg", "imgid": 0, "split": "train", "sentids": [0, 1],
         "sentences": [{"raw": "Two young guys with shaggy hair.", "sentid": 0},
                       {"raw": "", "sentid": 1}]},
        {"filename": "missing.jpg", "imgid": 1, "split": "train", "sentences": []},
    ]})
    records = quiet(R.read_karpathy, f30k, tmp_path / "flickr30k-images")
    assert [(r["image_id"], r["text"]) for r in records] == [
        ("1000092795", "Two young guys with shaggy hair.")]
    assert reasons(records) == {"empty text": 1, "missing file": 1}
    assert records.info["dataset"] == "flickr30k"


# ------------------------------------------------------------------------ VQA v2
def vqa_files(tmp_path, subtype="val2014", with_answers=True):
    for image_id in (42, 7):
        png(tmp_path / subtype.replace("test-dev", "test") /
            f"COCO_{subtype.replace('test-dev', 'test')}_{image_id:012d}.jpg")
    q = write_json(tmp_path / f"v2_OpenEnded_mscoco_{subtype}_questions.json", {
        "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": subtype,
        "questions": [
            {"image_id": 42, "question": "What color is the square?", "question_id": 42000},
            {"image_id": 7, "question": "How many squares?", "question_id": 7001},
            {"image_id": 7, "question": "", "question_id": 7002},
            {"image_id": 7, "question": "Is there an annotation?", "question_id": 7003},
        ]})
    if not with_answers:
        return q, None
    answers = lambda values: [  # noqa: E731
        {"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(values)]
    a = write_json(tmp_path / f"v2_mscoco_{subtype}_annotations.json", {
        "data_subtype": subtype, "annotations": [
            {"question_id": 7001, "image_id": 7, "question_type": "how many",
             "answer_type": "number", "multiple_choice_answer": "2",
             "answers": answers(["2", "two", "2", "3", "2 ", "2", "Two", "2", "1", "2"])},
            {"question_id": 42000, "image_id": 42, "question_type": "what color",
             "answer_type": "other", "multiple_choice_answer": "red",
             "answers": answers(["red"] * 9 + ["Red."])},
        ]})
    return q, a


def test_vqa_v2_questions_and_annotations(tmp_path):
    q, a = vqa_files(tmp_path)
    records = quiet(R.read_vqa_v2, q, a, tmp_path / "val2014")
    assert [r["question_id"] for r in records] == [42000, 7001]
    first = records[0]
    assert first["image"] == str(tmp_path / "val2014" / "COCO_val2014_000000000042.jpg")
    assert first["text"] == "What color is the square?" and first["image_id"] == "42"
    assert first["answers"] == ["red"] * 9 + ["Red."] and first["answer"] == "red"
    assert first["split"] == "val2014" and first["answer_type"] == "other"
    assert first["source"] == f"{q}#questions[0]"
    assert reasons(records) == {"empty text": 1, "missing annotation": 1}


def test_vqa_v2_test_dev_without_annotations(tmp_path):
    q, _ = vqa_files(tmp_path, "test-dev2015", with_answers=False)
    records = quiet(R.read_vqa_v2, q, None, tmp_path / "test2015")
    assert len(records) == 3 and "answers" not in records[0]
    assert records[0]["image"].endswith("test2015/COCO_test2015_000000000042.jpg")
    assert records[0]["split"] == "test-dev2015"


def test_vqa_answer_vocabulary_and_soft_targets(tmp_path):
    q, a = vqa_files(tmp_path)
    records = quiet(R.read_vqa_v2, q, a, tmp_path / "val2014")
    vocab = R.build_answer_vocab(records, min_count=1)
    assert vocab == ["2", "red"]
    targets = R.attach_answer_targets(records, vocab)
    by_id = {r["question_id"]: r for r in targets}
    # "2" x6 + "2 " + "two" + "Two" all normalise to "2": 9 -> 1.0. "3","1" not in vocab.
    assert by_id[7001]["labels"] == [0] and by_id[7001]["scores"] == [1.0]
    assert by_id[42000]["labels"] == [1] and by_id[42000]["scores"] == [1.0]
    vector = R.answer_target_vector(by_id[7001]["labels"], by_id[7001]["scores"], len(vocab))
    assert vector.tolist() == [1.0, 0.0] and vector.dtype == "float32"
    assert [R.vqa_soft_score(n) for n in range(6)] == [0.0, 0.3, 0.6, 0.9, 1.0, 1.0]
    labels, scores = R.answer_targets(["x", "y", "y", "z", "z", "z"], {"y": 0, "z": 1, "x": 2})
    assert labels == [0, 1, 2] and scores == [0.6, 0.9, 0.3]


def test_unknown_answer_is_skipped_or_kept(tmp_path):
    q, a = vqa_files(tmp_path)
    records = quiet(R.read_vqa_v2, q, a, tmp_path / "val2014")
    with pytest.warns(DataSkipWarning, match=r"questions\[1\]: field 'answers': unknown answer"):
        targets = R.attach_answer_targets(records, ["red"])
    assert [r["question_id"] for r in targets] == [42000]
    assert targets.report.counts() == {("targets", "unknown answer"): 1}
    kept = R.attach_answer_targets(records, ["red"], drop_unknown=False)
    assert len(kept) == 2 and kept[1]["labels"] == [] and kept[1]["scores"] == []
    with pytest.raises(DataError, match="unknown answer"):
        R.attach_answer_targets(records, ["red"], strict=True)


# ------------------------------------------------------------------------- NLVR2
def test_nlvr2_train_subfolders_and_flat_dev(tmp_path):
    for name in ("train-10171-0-img0.png", "train-10171-0-img1.png"):
        png(tmp_path / "images" / "train" / "21" / name)
    for name in ("dev-850-0-img0.png", "dev-850-0-img1.png"):
        png(tmp_path / "dev" / name)
    train = write_lines(tmp_path / "train.json", [
        json.dumps({"sentence": "One image shows a dog.", "label": "True",
                    "identifier": "train-10171-0-0", "directory": 21}),
        json.dumps({"sentence": "Two dogs.", "label": "False",
                    "identifier": "train-10171-0-1", "directory": 21}),
        '{"sentence": "broken", "label": "True", ',
        json.dumps({"sentence": "No images.", "label": "True",
                    "identifier": "train-99-1-0", "directory": 3}),
        json.dumps({"sentence": "Odd label.", "label": "maybe",
                    "identifier": "train-10171-0-2", "directory": 21}),
    ])
    with pytest.warns(DataSkipWarning) as caught:
        records = R.read_nlvr2(train, tmp_path / "images" / "train")
    assert any("train.json:3: malformed JSON line" in str(w.message) for w in caught)
    assert len(records) == 2
    r = records[0]
    assert r["images"] == [str(tmp_path / "images" / "train" / "21" / f"train-10171-0-img{k}.png")
                           for k in (0, 1)]
    assert r["label"] is True and records[1]["label"] is False
    assert r["identifier"] == "train-10171-0-0" and r["image_id"] == "train-10171-0"
    assert r["split"] == "train" and r["source"] == f"{train}:1"
    assert reasons(records) == {"malformed JSON line": 1, "missing file": 1, "bad label": 1}
    dev = write_lines(tmp_path / "dev.json", [json.dumps(
        {"sentence": "A dog.", "label": "False", "identifier": "dev-850-0-3"})])
    records = R.read_nlvr2(dev, tmp_path / "dev")
    assert records[0]["images"][1] == str(tmp_path / "dev" / "dev-850-0-img1.png")


# ---------------------------------------------------------------------- NLVR v1
def test_nlvr_v1_six_images_per_example(tmp_path):
    for m in (0, 1):
        for k in range(6):
            png(tmp_path / "dev" / "images" / "2" / f"dev-1572-{m}-{k}.png", size=(40, 10))
    for k in range(5):  # one image of 1572-2 is missing
        png(tmp_path / "dev" / "images" / "0" / f"dev-1572-2-{k}.png", size=(40, 10))
    rep = {"structured_rep": [[{"x_loc": 1, "y_loc": 2, "type": "circle", "color": "Yellow",
                                "size": 10}], [], []]}
    path = write_lines(tmp_path / "dev" / "dev.json", [
        json.dumps(dict(rep, sentence="There is a yellow circle.", label="true",
                        identifier="1572-0", directory="2")),
        json.dumps(dict(rep, sentence="There is a yellow circle.", label="false",
                        identifier="1572-1")),  # no "directory": found by search
        json.dumps(dict(rep, sentence="There is a yellow circle.", label="true",
                        identifier="1572-2", directory="0")),
    ])
    records = quiet(R.read_nlvr, path)
    assert len(records) == 2
    first = records[0]
    assert first["images"] == [str(tmp_path / "dev" / "images" / "2" / f"dev-1572-0-{k}.png")
                               for k in range(6)]
    assert (first["label"], first["identifier"], first["sentence_id"], first["image_id"],
            first["split"]) == (True, "1572-0", "1572", "dev-1572-0", "dev")
    assert first["structured_rep"] == rep["structured_rep"]
    assert records[1]["images"][0].endswith("images/2/dev-1572-1-0.png")
    assert records[1]["label"] is False
    assert reasons(records) == {"missing file": 1}
    assert "dev-1572-2-5.png" in records.report.examples()[0].detail
    per_image = quiet(R.read_nlvr, path, per_image=True)
    assert len(per_image) == 12
    assert per_image[7]["image"].endswith("dev-1572-1-1.png") and per_image[7]["image_index"] == 1
    assert per_image[7]["image_id"] == "dev-1572-1-1" and "images" not in per_image[7]


# ---------------------------------------------------------------------- Flickr8k
def test_flickr8k_token_file_and_split_list(tmp_path):
    png(tmp_path / "Flicker8k_Dataset" / "1000268201_693b08cb0e.jpg")
    png(tmp_path / "Flicker8k_Dataset" / "1001773457_577c3a7d70.jpg")
    tokens = write_lines(tmp_path / "Flickr8k.token.txt", [
        "1000268201_693b08cb0e.jpg#0\tA child in a pink dress is climbing up a set of stairs .",
        "1000268201_693b08cb0e.jpg#1\tA girl going into a wooden building .",
        "1001773457_577c3a7d70.jpg#0\tA black dog and a spotted dog are fighting",
        "no tab on this line",
        "1000268201_693b08cb0e.jpg#2\t ",
    ])
    split = write_lines(tmp_path / "Flickr_8k.trainImages.txt",
                        ["1000268201_693b08cb0e.jpg", "2513260012_03d33305cf.jpg"])
    records = quiet(R.read_flickr8k, tokens, tmp_path / "Flicker8k_Dataset", split_file=split)
    assert [r["caption_id"] for r in records] == [
        "1000268201_693b08cb0e.jpg#0", "1000268201_693b08cb0e.jpg#1"]
    assert records[0]["image_id"] == "1000268201_693b08cb0e" and records[0]["split"] == "train"
    assert records[1]["source"] == f"{tokens}:2"
    assert reasons(records) == {"malformed line": 1, "empty text": 1}
    assert records.info["missing_captions"] == ["2513260012_03d33305cf.jpg"]
    assert len(quiet(R.read_flickr8k, tokens, tmp_path / "Flicker8k_Dataset")) == 3


# ------------------------------------------------------------------------ DAQUAR
def test_daquar_question_answer_lines(tmp_path):
    png(tmp_path / "images" / "image1.png")
    png(tmp_path / "images" / "image2.png")
    qa = write_lines(tmp_path / "qa.txt", [
        "what is on the left side of the fire extinguisher in the image1 ?",
        "table",
        "how many chairs are there in the image2 ?",
        "2",
        "this line is not a question",
        "what is the object in blue colour in the image1 ?",
        "bookshelf, chair",
        "what is behind the door in the image2 ?",
    ])
    images = write_lines(tmp_path / "test_images_list.txt", ["image1", "image3"])
    with pytest.warns(DataSkipWarning):
        records = R.read_daquar(qa, tmp_path / "images")
    assert [(r["question_id"], r["image_id"], r["answer"]) for r in records] == [
        (0, "image1", "table"), (1, "image2", "2"), (2, "image1", "bookshelf, chair")]
    assert records[0]["text"] == "what is on the left side of the fire extinguisher in the image ?"
    assert records[2]["answers"] == ["bookshelf, chair"] and records[2]["source"] == f"{qa}:6"
    assert reasons(records) == {"malformed line": 1, "missing answer": 1}
    raw = quiet(R.read_daquar, qa, tmp_path / "images", strip_image_reference=False,
                image_list=images)
    assert [r["question_id"] for r in raw] == [0, 2] and raw[0]["text"].endswith("image1 ?")
    assert raw[0]["split"] == "test" and raw.info["images_without_questions"] == ["image3"]
    vocab = R.build_answer_vocab(records, min_count=1)
    assert vocab == ["2", "bookshelf chair", "table"]


def test_split_records_grouped_deterministic(tmp_path):
    records = [{"image_id": f"image{i % 10}", "n": i} for i in range(50)]
    parts = R.split_records(records, {"train": 0.8, "test": 0.2}, seed=3)
    assert len({r["image_id"] for r in parts["train"]}) == 8
    assert len({r["image_id"] for r in parts["test"]}) == 2
    assert not {r["image_id"] for r in parts["train"]} & {r["image_id"] for r in parts["test"]}
    assert len(parts["train"]) + len(parts["test"]) == 50
    assert all(r["split"] == "test" for r in parts["test"])
    assert [r["n"] for r in parts["train"]] == sorted(r["n"] for r in parts["train"])
    again = R.split_records(list(reversed(records)), {"train": 0.8, "test": 0.2}, seed=3)
    assert {r["image_id"] for r in again["test"]} == {r["image_id"] for r in parts["test"]}
    other = [R.split_records(records, {"train": 0.8, "test": 0.2}, seed=s) for s in range(6)]
    assert len({frozenset(r["image_id"] for r in p["test"]) for p in other}) > 1
    counted = R.split_records(records, {"minival": 3, "train": None}, seed=0)
    assert len({r["image_id"] for r in counted["minival"]}) == 3
    assert len(R.split_records(records, {"a": 0.5, "b": 0.5}, key=None)["a"]) == 25
    with pytest.raises(ValueError, match="ask for 11 groups"):
        R.split_records(records, {"a": 11, "b": 0})
    with pytest.raises(ValueError, match="fraction"):
        R.split_records(records, {"a": 1.5, "b": 0})
    with pytest.raises(KeyError):
        R.split_records([{"x": 1}], {"a": 1.0})


# ------------------------------------------------------------------ image folder
def test_image_folder_classes_flat_and_bad_files(tmp_path):
    root = tmp_path / "train"
    png(root / "cat" / "a.jpg")
    png(root / "cat" / "nested" / "b.png")
    png(root / "dog" / "c.JPEG")
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "dog" / "empty.jpg").write_bytes(b"")
    png(root / "stray.png")
    with pytest.warns(DataSkipWarning):
        records = R.read_image_folder(root, split="train")
    assert [(r["image_id"], r["label"], r["class_name"]) for r in records] == [
        ("cat/a", 0, "cat"), ("cat/nested/b", 0, "cat"), ("dog/c", 1, "dog")]
    assert records.info["class_names"] == ["cat", "dog"] and records[0]["split"] == "train"
    assert reasons(records) == {"image outside class folder": 1, "zero-byte file": 1}
    val = quiet(R.read_image_folder, root, class_names=["dog", "bird"])
    assert [(r["class_name"], r["label"]) for r in val] == [("dog", 0)]
    assert ("read", "unknown class") in val.report.counts()
    flat = tmp_path / "flat"
    png(flat / "x.png")
    png(flat / "y.jpg")
    records = R.read_image_folder(flat)
    assert [r["image_id"] for r in records] == ["x", "y"] and "label" not in records[0]
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        R.read_image_folder(tmp_path / "missing")


# ------------------------------------------------------------------- text corpus
def test_text_corpus(tmp_path):
    write_lines(tmp_path / "a.txt", ["First document line.", "", "  ", "Second document."])
    (tmp_path / "b.txt").write_bytes("Bad byte \xff here.\n".encode("latin-1"))
    records = R.read_text_corpus(str(tmp_path / "*.txt"))
    assert [r["text"] for r in records] == ["First document line.", "Second document.",
                                            "Bad byte \ufffd here."]
    assert records[1]["source"] == f"{tmp_path / 'a.txt'}:4"
    assert records.info["blank_lines"] == 2 and records.report.count == 0
    long = quiet(R.read_text_corpus, [tmp_path / "a.txt"], max_text_chars=18)
    assert [r["text"] for r in long] == ["Second document."]
    with pytest.raises(FileNotFoundError):
        R.read_text_corpus(tmp_path / "missing.txt")
    with pytest.raises(FileNotFoundError, match="matched no file"):
        R.read_text_corpus(str(tmp_path / "*.md"))


# ------------------------------------------------------- generic JSONL / CSV / TSV
def test_image_text_jsonl(tmp_path):
    png(tmp_path / "imgs" / "a.png")
    png(tmp_path / "imgs" / "b.png")
    path = write_lines(tmp_path / "data.jsonl", [
        json.dumps({"image": "imgs/a.png", "text": "A red square.", "split": "train",
                    "label": True, "extra": {"k": 1}}),
        json.dumps({"images": ["imgs/a.png", "imgs/b.png"], "text": "Two squares.",
                    "split": "val", "image_id": 7}),
        json.dumps({"image": "imgs/a.png", "text": "", "split": "train"}),
        json.dumps({"image": "imgs/zzz.png", "text": "missing", "split": "train"}),
        json.dumps({"text": "no image"}),
        "[1, 2]",
        json.dumps({"image": "imgs/b.png", "text": "What colour?", "answers": ["red", "red"]}),
    ])
    records = quiet(R.read_image_text, path)
    assert len(records) == 3
    assert records[0] == {"image": str(tmp_path / "imgs" / "a.png"), "text": "A red square.",
                          "split": "train", "label": True, "extra": {"k": 1},
                          "image_id": "imgs/a", "source": f"{path}:1"}
    assert records[1]["images"] == [str(tmp_path / "imgs" / "a.png"), str(tmp_path / "imgs" / "b.png")]
    assert records[1]["image_id"] == "7" and records[2]["answers"] == ["red", "red"]
    assert reasons(records) == {"empty text": 1, "missing file": 1, "missing field": 1,
                                "malformed JSON line": 1}
    train = quiet(R.read_image_text, path, split="train")
    assert [r["text"] for r in train] == ["A red square.", "What colour?"]
    assert train[1]["split"] == "train"


def test_image_text_csv_and_tsv(tmp_path):
    png(tmp_path / "imgs" / "a.png")
    png(tmp_path / "imgs" / "b.png")
    path = tmp_path / "data.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "images", "text", "label", "answers", "note"])
        w.writerow(["imgs/a.png", "", "A red square, small.", "true", "red|crimson", "x"])
        w.writerow(["", "imgs/a.png|imgs/b.png", "Two squares.", "3", "", ""])
        w.writerow(["imgs/b.png", "", "Too many", "cells", "here", "!", "extra"])
        w.writerow(["imgs/b.png", "", "   ", "", "", ""])
    records = quiet(R.read_image_text, path)
    assert len(records) == 2
    assert records[0]["label"] is True and records[0]["answers"] == ["red", "crimson"]
    assert records[0]["text"] == "A red square, small." and records[0]["note"] == "x"
    assert records[1]["label"] == 3 and len(records[1]["images"]) == 2
    assert reasons(records) == {"malformed line": 1, "empty text": 1}
    tsv = write_lines(tmp_path / "data.tsv", ["image\tcaption", "imgs/a.png\tA red square."])
    records = R.read_image_text(tsv, text_field="caption")
    assert records[0]["text"] == "A red square."
    image_only = R.read_image_text(tsv, text_field=None)
    assert "text" not in image_only[0] and image_only[0]["caption"] == "A red square."
    with pytest.raises(ValueError, match="format"):
        R.read_image_text(tmp_path / "data.parquet")


# ------------------------------------------------------------------ skip report
def test_skip_report_warns_counts_summarises_and_merges():
    report = SkipReport(max_warnings=2)
    with pytest.warns(DataSkipWarning) as caught:
        for i in range(5):
            report.skip(f"f.json:{i + 1}", "text", "empty text")
        report.skip("img.png", "image", "decode failed", "truncated JPEG", stage="decode")
    assert len(caught) == 3  # two skips, then one "further skips are counted" notice
    assert "Skipped record #1: f.json:1: field 'text': empty text" in str(caught[0].message)
    assert "further skips are counted" in str(caught[2].message)
    assert report.count == len(report) == 6
    assert report.counts() == {("read", "empty text"): 5, ("decode", "decode failed"): 1}
    summary = report.summary()
    assert "6 record(s) skipped" in summary and "[decode] decode failed: 1" in summary
    assert "img.png: field 'image': decode failed (truncated JPEG)" in summary
    assert report.to_dict()["by_reason"]["read/empty text"]["count"] == 5
    other = SkipReport(max_warnings=0)
    other.skip("x:1", None, "malformed JSON line")
    report.merge(other)
    assert report.count == 7
    assert SkipReport().summary() == "Data: no records skipped."
    with pytest.raises(DataError, match="x:1: field 'answers': unknown answer.*strict=True"):
        SkipReport(strict=True).skip("x:1", "answers", "unknown answer")


def test_shared_report_across_readers_and_strict_mismatch(tmp_path):
    report = SkipReport(max_warnings=0)
    path = coco_file(tmp_path, [{"image_id": 1, "id": 1, "caption": ""}])
    R.read_coco_captions(path, tmp_path / "val2017", report=report)
    write_lines(tmp_path / "c.txt", ["ok"])
    records = R.read_text_corpus(tmp_path / "c.txt", max_text_chars=1, report=report)
    assert records.report is report and report.count == 2
    assert records.info["num_skipped"] == 1
    with pytest.raises(ValueError, match="non-strict SkipReport"):
        R.read_text_corpus(tmp_path / "c.txt", strict=True, report=report)


# --------------------------------------------------------------------- registry
def test_every_reader_is_registered(tmp_path):
    from vlbeit_keras import get_registry
    from vlbeit_keras.plugins import UnknownNameError

    registry = get_registry("datasets")
    expected = {"coco_captions", "karpathy", "vqa_v2", "nlvr2", "nlvr", "flickr8k", "daquar",
                "image_folder", "text_corpus", "image_text"}
    assert expected <= set(registry.names())
    assert registry.entry("nlvr2").plugin.module == "vlbeit_keras.default_plugins.datasets"
    write_lines(tmp_path / "c.txt", ["hello"])
    records = R.read_dataset("text_corpus", paths=tmp_path / "c.txt")
    assert records[0]["text"] == "hello"
    with pytest.raises(UnknownNameError, match="coco_captions"):
        R.read_dataset("coco_capitons")


def test_every_reader_is_documented():
    import pathlib

    doc = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "data.md").read_text()
    for name, reader in R.READERS.items():
        assert f"### `{name}`" in doc, name
        assert f"{reader.__name__}(" in doc, reader.__name__
