"""Fixtures of the task tests: tiny backbone, text and image preprocessors."""

import keras_hub
import numpy as np
import pytest

from vlbeit_keras.data.image_preprocessing import ImagePreprocessingConfig
from vlbeit_keras.models.vlbeit_backbone import VLBEiTBackbone
from vlbeit_keras.tasks.base import EXAMPLE_WORDS

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture
def tiny_backbone(tiny_config):
    return VLBEiTBackbone(**tiny_config)


@pytest.fixture
def tokenizer():
    vocabulary = SPECIAL_TOKENS + sorted(set(EXAMPLE_WORDS))
    return keras_hub.tokenizers.WordPieceTokenizer(vocabulary=vocabulary, lowercase=True)


@pytest.fixture
def image_config(tiny_config):
    """Evaluation image transform at the tiny backbone's 32 x 32."""
    return ImagePreprocessingConfig(image_size=tiny_config["image_size"])


@pytest.fixture
def io(tokenizer, image_config, tiny_config):
    """The adapters' common keyword arguments for the tiny backbone."""
    return {"tokenizer": tokenizer, "image_config": image_config,
            "text_length": tiny_config["max_text_length"]}


def _pair_inputs(rng, batch, text_length=8, image_size=(32, 32), vocab=100):
    lengths = rng.integers(3, text_length + 1, size=batch)
    token_ids = rng.integers(5, vocab, size=(batch, text_length)).astype("int32")
    mask = (np.arange(text_length)[None, :] < lengths[:, None]).astype("int32")
    token_ids = np.where(mask == 1, token_ids, 0).astype("int32")
    images = rng.uniform(-1, 1, size=(batch, *image_size, 3)).astype("float32")
    return {"token_ids": token_ids, "padding_mask": mask, "images": images}


@pytest.fixture
def pair_inputs():
    """``pair_inputs(rng, batch, text_length=8, image_size=(32, 32))``: random
    fused-encoder inputs (token ids with padding, images in [-1, 1])."""
    return _pair_inputs


def _to_numpy(x):
    import keras

    if isinstance(x, dict):
        return {k: _to_numpy(v) for k, v in x.items()}
    return np.asarray(keras.ops.convert_to_numpy(x))


@pytest.fixture
def to_numpy():
    """Convert a backend tensor (or dict of them) to NumPy."""
    return _to_numpy
