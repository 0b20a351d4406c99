"""Synthetic pretraining batches and a stand-in visual tokenizer for tests."""

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="vlbeit_keras_tests")
class PatchIntensityTokenizer(keras.layers.Layer):
    """Test stand-in: visual token = quantised mean intensity of each patch."""

    def __init__(self, patch_size, codebook_size=16, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = patch_size
        self.codebook_size = codebook_size

    def call(self, images):
        pooled = ops.average_pool(ops.mean(images, axis=-1, keepdims=True), self.patch_size, self.patch_size)
        ids = ops.floor((pooled[..., 0] + 1.0) / 2.0 * self.codebook_size)
        ids = ops.clip(ops.cast(ids, "int32"), 0, self.codebook_size - 1)
        return ops.reshape(ids, (ops.shape(images)[0], -1))

    def get_config(self):
        return {**super().get_config(), "patch_size": self.patch_size, "codebook_size": self.codebook_size}


def _text(rng, batch, length, vocab, n_mask, specials=5):
    ids = np.zeros((batch, length), "int32")
    mask = np.zeros((batch, length), "int32")
    positions = np.zeros((batch, n_mask), "int32")
    targets = np.zeros((batch, n_mask), "int32")
    weights = np.zeros((batch, n_mask), "float32")
    for b in range(batch):
        n = int(rng.integers(4, length + 1))
        ids[b, :n] = rng.integers(specials, vocab, n)
        ids[b, 0], ids[b, n - 1] = 2, 3
        mask[b, :n] = 1
        k = min(n_mask, n - 2)
        pos = np.sort(rng.choice(np.arange(1, n - 1), k, replace=False))
        positions[b, :k] = pos
        targets[b, :k] = ids[b, pos]
        weights[b, :k] = 1.0
        ids[b, pos] = 4  # [MASK]
    return {"token_ids": ids, "padding_mask": mask, "text_mask_positions": positions,
            "text_mask_ids": targets, "text_mask_weights": weights}


def _image(rng, batch, image_size, grid, n_mask):
    n = grid[0] * grid[1]
    images = rng.uniform(-1, 1, (batch, *image_size, 3)).astype("float32")
    patch_mask = np.zeros((batch, n), bool)
    positions = np.zeros((batch, n_mask), "int32")
    weights = np.zeros((batch, n_mask), "float32")
    for b in range(batch):
        k = int(rng.integers(1, n_mask + 1))
        pos = np.sort(rng.choice(n, k, replace=False))
        patch_mask[b, pos] = True
        positions[b, :k] = pos
        weights[b, :k] = 1.0
    return {"images": images, "patch_mask": patch_mask, "image_mask_positions": positions,
            "image_mask_weights": weights}


def synthetic_batch(backbone, rng, batch=2, text_length=None):
    """A three-stream pretraining batch for ``backbone`` (tiny sizes)."""
    t = backbone.max_text_length
    vocab = backbone.vocabulary_size
    grid = backbone.grid_size
    n_img = max(1, round(0.4 * grid[0] * grid[1]))
    return {
        "text": _text(rng, batch, text_length or t, vocab, max(1, round(0.15 * (text_length or t)) + 1)),
        "image": _image(rng, batch, backbone.image_size, grid, n_img),
        "image_text": {**_text(rng, batch, t, vocab, (t + 1) // 2),
                       **_image(rng, batch, backbone.image_size, grid, n_img)},
    }
