"""Tests of the vlbeit-snli-ve plugin (run by `make test` from the repository root,
or `pytest plugins/vlbeit-snli-ve` after `pip install -e plugins/vlbeit-snli-ve`).

Data files are written in the official SNLI-VE JSON-lines format under tmp_path
(no SNLI-VE data ships with the repository)."""

import importlib.metadata
import json

import keras
import numpy as np
import pytest

# Not installed: every test fails with the setup command (a collection error
# would stop the whole session; a skip would hide the missing package).
MISSING = None
try:
    importlib.metadata.distribution("vlbeit-snli-ve")
    import vlbeit_snli_ve
    from vlbeit_snli_ve import LABELS
    from vlbeit_snli_ve import TASK
    from vlbeit_snli_ve import SmoothedSparseCrossEntropy
    from vlbeit_snli_ve import SNLIVEClassifier
    from vlbeit_snli_ve import read_snli_ve
    from vlbeit_snli_ve.task import accuracy_metrics
    from vlbeit_snli_ve.task import label_id
    from vlbeit_snli_ve.task import predictions_from_logits
except (ImportError, importlib.metadata.PackageNotFoundError) as exc:  # pragma: no cover
    MISSING = (
        f"vlbeit-snli-ve is not installed ({exc}); run the README setup (`make setup`, "
        "or `pip install -e plugins/vlbeit-snli-ve`)."
    )

import vlbeit_keras
from vlbeit_keras.data.readers import DataError
from vlbeit_keras.data.readers import SkipReport
from vlbeit_keras.data.image_preprocessing import ImagePreprocessingConfig
from vlbeit_keras.tasks.data import RecordError

WORDS = "two women are embracing the sisters hugging a man sleeping people outside dog".split()


@pytest.fixture(autouse=True)
def _seed():
    if MISSING:
        pytest.fail(MISSING, pytrace=False)
    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy("float32")


def snli_line(image_id, hypothesis, gold, pair):
    """One record as in snli_ve_dev.jsonl (SNLI fields + Flickr30K_ID)."""
    return {
        "annotator_labels": [gold] * 5 if gold in LABELS else ["neutral", "entailment"],
        "captionID": f"{image_id}.jpg#2",
        "gold_label": gold,
        "pairID": f"{image_id}.jpg#2r1{pair}",
        "sentence1": "Two women are embracing while holding to go packages.",
        "sentence1_binary_parse": "( ( Two women ) ( ( are ( embracing ... ) ) . ) )",
        "sentence2": hypothesis,
        "Flickr30K_ID": image_id,
    }


@pytest.fixture
def snli_files(tmp_path):
    from PIL import Image

    images = tmp_path / "flickr30k-images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for image_id in ("4705552913", "3637013", "2248275918"):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(images / f"{image_id}.jpg")
    lines = [
        snli_line("4705552913", "The sisters are hugging goodbye.", "neutral", "n"),
        snli_line("4705552913", "Two women are embracing.", "entailment", "e"),
        snli_line("4705552913", "The men are fighting outside a deli.", "contradiction", "c"),
        snli_line("3637013", "A man is sleeping.", "-", "n"),                 # no gold label
        snli_line("999999", "A dog is outside.", "entailment", "e"),          # image missing
        snli_line("2248275918", "   ", "neutral", "n"),                       # empty hypothesis
        snli_line("2248275918", "People are outside.", "Entailment", "e"),    # case-insensitive
    ]
    text = "\n".join(json.dumps(line) for line in lines[:3]) + "\n{not json\n"
    text += "\n".join(json.dumps(line) for line in lines[3:]) + "\n"
    path = tmp_path / "snli_ve_dev.jsonl"
    path.write_text(text)
    return path, images


def test_reader_parses_the_official_format_and_skips_bad_records(snli_files):
    path, images = snli_files
    report = SkipReport(max_warnings=0)
    records = read_snli_ve(path, images, report=report)
    assert [r["label"] for r in records] == [1, 0, 2, 0]
    assert [r["gold_label"] for r in records] == ["neutral", "entailment", "contradiction", "entailment"]
    first = records[0]
    assert first["image"] == str(images / "4705552913.jpg")
    assert first["text"] == "The sisters are hugging goodbye."
    assert (first["image_id"], first["pair_id"], first["split"]) == ("4705552913", "4705552913.jpg#2r1n", "dev")
    assert first["premise"].startswith("Two women") and first["source"] == f"{path}:1"
    assert records.info == {"class_names": list(LABELS), "num_skipped": 4}
    assert report.counts() == {("read", "malformed JSON line"): 1, ("read", "bad label"): 1,
                               ("read", "missing file"): 1, ("read", "empty text"): 1}
    [bad] = report.examples(reason="bad label")
    assert (bad.source, bad.field) == (f"{path}:5", "gold_label")


def test_reader_strict_mode_names_file_line_and_field(snli_files):
    path, images = snli_files
    with pytest.raises(DataError, match=rf"{path}:4: malformed JSON line"):
        read_snli_ve(path, images, strict=True)
    with pytest.raises(FileNotFoundError, match="SNLI-VE file not found"):
        read_snli_ve(path.parent / "snli_ve_test.jsonl", images)


def test_registered_through_the_entry_point():
    label = f"vlbeit-snli-ve {vlbeit_snli_ve.__version__}"
    heads = vlbeit_keras.get_registry("heads").entry("snli_ve")
    datasets = vlbeit_keras.get_registry("datasets").entry("snli_ve")
    assert heads.obj is TASK and datasets.obj is read_snli_ve
    assert heads.plugin.distribution == datasets.plugin.distribution == label
    assert heads.plugin.module == "vlbeit_snli_ve.plugin"


def test_labels_by_name_or_id():
    assert [label_id(v, 0) for v in ("entailment", " NEUTRAL ", "contradiction", 0, 2)] == [0, 1, 2, 0, 2]
    for bad in ("-", 3, True, None):
        with pytest.raises(RecordError, match=r"snli.jsonl, record 7: field 'label'"):
            label_id(bad, 7, "snli.jsonl")


def test_smoothed_cross_entropy_matches_numpy():
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 0.3, -0.2]], "float32")
    labels = np.array([0, 2], "int32")
    s = 0.1
    target = np.eye(3)[labels] * (1 - s) + s / 3
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = -(target * logp).sum(-1).mean()
    got = SmoothedSparseCrossEntropy(s)(labels, logits)
    assert float(got) == pytest.approx(want, rel=1e-5)
    plain = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    assert float(SmoothedSparseCrossEntropy(0.0)(labels, logits)) == pytest.approx(float(plain), rel=1e-6)


def test_model_has_three_classes_only():
    backbone = vlbeit_keras.VLBEiTBackbone.from_preset("vlbeit_tiny", load_weights=False)
    with pytest.raises(ValueError, match="SNLI-VE has 3 classes"):
        SNLIVEClassifier(backbone, num_classes=2)
    with pytest.raises(ValueError, match="label_smoothing"):
        SNLIVEClassifier(backbone, label_smoothing=1.0)


def test_accuracy_per_class_predictions_and_export(snli_files, tmp_path):
    path, images = snli_files
    records = read_snli_ve(path, images, report=SkipReport(max_warnings=0))  # gold: n, e, c, e
    logits = np.array([[0, 1, 0], [1, 0, 0], [1, 0, 0], [0, 0, 1]], "float32")  # predicted: n, e, e, c
    gold = [r["label"] for r in records]
    metrics = accuracy_metrics(logits, gold)
    assert metrics == {"accuracy": 0.5, "accuracy_entailment": 0.5, "accuracy_neutral": 1.0,
                       "accuracy_contradiction": 0.0}
    assert set(metrics) <= set(TASK.metric_names)
    predictions = predictions_from_logits(records, logits)
    assert predictions[2]["prediction"] == "entailment" and predictions[2]["gold_label"] == "contradiction"
    assert predictions[0]["pair_id"] == "4705552913.jpg#2r1n" and predictions[0]["image_id"] == "4705552913"
    np.testing.assert_allclose(predictions[0]["probabilities"], np.exp([0, 1, 0]) / np.exp([0, 1, 0]).sum(),
                               rtol=1e-5)
    out = TASK.export_predictions(predictions, tmp_path / "snli_ve_dev_predictions.jsonl")
    assert [json.loads(line) for line in open(out)] == predictions


def keras_tokenizer():
    import keras_hub

    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(WORDS))
    return keras_hub.tokenizers.WordPieceTokenizer(vocabulary=vocabulary, lowercase=True)


def test_reads_trains_evaluates_and_reloads(snli_files, tmp_path):
    path, images = snli_files
    records = vlbeit_keras.get_registry("datasets").get("snli_ve")(
        jsonl_file=path, image_root=images, report=SkipReport(max_warnings=0))
    backbone = vlbeit_keras.VLBEiTBackbone.from_preset("vlbeit_tiny", load_weights=False)
    config = TASK.config(label_smoothing=0.1)
    model = TASK.build_model(backbone, **config)
    assert isinstance(model, SNLIVEClassifier) and model.compiled
    io = {"tokenizer": keras_tokenizer(), "text_length": backbone.max_text_length,
          "image_config": ImagePreprocessingConfig(image_size=backbone.image_size)}
    train = TASK.make_dataset(records, batch_size=2, training=True, seed=0, **io, **config)
    x, y = next(iter(train))
    assert tuple(x["images"].shape) == (2, 32, 32, 3) and y.dtype == "int32"
    before = [np.array(v) for v in model.classifier.weights]
    history = model.fit(train, steps_per_epoch=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(a, np.array(b)) for a, b in zip(before, model.classifier.weights))
    metrics, predictions = TASK.evaluate(model, records, batch_size=3, **io, **config)
    assert 0.0 <= metrics["accuracy"] <= 1.0 and len(predictions) == len(records)
    assert [p["gold_label"] for p in predictions] == [r["gold_label"] for r in records]
    model.save(tmp_path / "snli_ve.keras")
    loaded = keras.saving.load_model(tmp_path / "snli_ve.keras")
    assert type(loaded) is SNLIVEClassifier and loaded.label_smoothing == 0.1
    x = {k: np.asarray(v) for k, v in x.items()}
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)),
                               rtol=1e-5, atol=1e-5)
