"""Shared adapter pieces: text packing, image loading, record errors."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from vlbeit_keras.tasks import data


def test_text_preprocessor_packs_cls_tokens_sep_pad(text_preprocessor, tokenizer):
    out = text_preprocessor(tf.constant(["a red circle", "what color is the shape of the left one"]))
    ids = np.asarray(out["token_ids"])
    mask = np.asarray(out["padding_mask"])
    cls, sep, pad = (tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]"))
    assert ids.shape == (2, 8) and ids.dtype == np.int32
    assert ids[0].tolist()[:5] == [cls, tokenizer.token_to_id("a"), tokenizer.token_to_id("red"),
                                    tokenizer.token_to_id("circle"), sep]
    assert (ids[0, 5:] == pad).all() and mask[0].tolist() == [1] * 5 + [0] * 3
    assert ids[1, 0] == cls and ids[1, -1] == sep and mask[1].all()  # truncated to T


def test_image_preprocessor_decodes_files_and_normalises(tmp_path):
    pixels = np.zeros((10, 20, 3), np.uint8)
    pixels[:, 10:] = 255
    Image.fromarray(pixels).save(tmp_path / "x.png")
    Image.fromarray(pixels[..., 0], mode="L").save(tmp_path / "gray.png")
    prep = data.ImagePreprocessor((10, 20), resize="none")
    out = np.asarray(prep(tf.constant(str(tmp_path / "x.png"))))
    assert out.shape == (10, 20, 3)
    assert out[:, :10].max() == -1.0 and out[:, 10:].min() == 1.0
    gray = np.asarray(prep(tf.constant(str(tmp_path / "gray.png"))))
    assert gray.shape == (10, 20, 3)
    resized = np.asarray(data.ImagePreprocessor((16, 8))(tf.constant(pixels)))
    assert resized.shape == (16, 8, 3) and -1.0 <= resized.min() and resized.max() <= 1.0


def test_record_errors_name_source_record_and_field():
    with pytest.raises(data.RecordError, match=r"train.jsonl, record 3: missing field 'text'"):
        data.field({"image": "x"}, "text", 3, "train.jsonl")
    with pytest.raises(data.RecordError, match=r"record 2: field 'label' is not true/false"):
        data.binary_label("maybe", 2)
    assert data.binary_label("TRUE", 0) == 1 and data.binary_label(False, 0) == 0


def test_in_memory_images_of_different_sizes_are_rejected():
    with pytest.raises(data.RecordError, match="different shapes"):
        data.columns_dataset({"image": [np.zeros((2, 2, 3)), np.zeros((3, 2, 3))]}, image_keys=("image",))


def test_training_dataset_smaller_than_a_batch_raises(text_preprocessor, image_preprocessor):
    ds = data.columns_dataset({"image": [np.zeros((32, 32, 3), np.uint8)], "text": ["a"]},
                              image_keys=("image",))
    with pytest.raises(ValueError, match="would be empty"):
        data.batch_and_map(ds, text_preprocessor=text_preprocessor,
                           image_preprocessor=image_preprocessor, image_keys=("image",),
                           to_inputs=lambda b: b, batch_size=2, training=True)
