"""Shared adapter pieces: record checks, evaluation in record order."""

import numpy as np
import pytest

from vlbeit_keras.data import pipeline
from vlbeit_keras.tasks import data


def test_record_errors_name_source_record_and_field():
    with pytest.raises(data.RecordError, match=r"train.jsonl, a.json:3, record 3: missing field 'text'"):
        data.field({"image": "x", "source": "a.json:3"}, "text", 3, "train.jsonl")
    with pytest.raises(data.RecordError, match=r"record 2: field 'label' is not true/false"):
        data.binary_label("maybe", 2)
    assert data.binary_label("TRUE", 0) == 1 and data.binary_label(False, 0) == 0
    with pytest.raises(data.RecordError, match="record 1: field 'text' must be a str"):
        data.check_text([{"text": "a"}, {"text": 3}])
    with pytest.raises(ValueError, match="No records"):
        data.require([], "empty.json")


def test_image_config_must_match_the_model(tiny_backbone, image_config):
    from vlbeit_keras.data.image_preprocessing import ImagePreprocessingConfig
    from vlbeit_keras.tasks.image_text_classification import VLBEiTImageTextClassifier

    model = VLBEiTImageTextClassifier(tiny_backbone, num_classes=2)
    data.check_image_config(model, image_config)
    with pytest.raises(ValueError, match=r"image_size=\(48, 48\)"):
        data.check_image_config(model, ImagePreprocessingConfig(48))


def test_predictions_are_placed_by_record_index(tmp_path, tokenizer, image_config, rng):
    from PIL import Image

    good = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png at all")
    records = [{"image": good, "text": "a red circle"},
               {"image": str(bad), "text": "a blue square"},
               {"image": good, "text": "two"}]
    ds = data.image_text_dataset(records, tokenizer=tokenizer, image_config=image_config,
                                 text_length=8, batch_size=2, labels=np.arange(3))
    with pytest.warns(UserWarning):
        with pytest.raises(ValueError, match=r"1 of 3 records were left out.*\[1\]"):
            data.predict_in_record_order(lambda x: x["token_ids"][:, 1], ds, 3)
    Image.fromarray(good).save(bad)
    ds = data.image_text_dataset(records, tokenizer=tokenizer, image_config=image_config,
                                 text_length=8, batch_size=2, labels=np.arange(3))
    out = data.predict_in_record_order(lambda x: x["token_ids"][:, 1], ds, 3)
    assert out.tolist() == [tokenizer.token_to_id(w) for w in ("a", "a", "two")]


def test_training_datasets_are_infinite_and_seeded(tokenizer, image_config, rng):
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    records = [{"image": image, "text": t} for t in ("one", "two", "three")]

    def first_ids(seed):
        ds = data.image_text_dataset(records, tokenizer=tokenizer, image_config=image_config,
                                     text_length=8, batch_size=2, training=True, seed=seed)
        return [np.asarray(x["token_ids"][:, 1]).tolist() for x in ds.take(4)]

    assert first_ids(0) == first_ids(0)
    assert len(first_ids(0)) == 4  # 4 batches from 3 records: repeats
    assert pipeline.steps_per_epoch(3, 2) >= 1
