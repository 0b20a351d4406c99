"""Frozen random-projection quantizer (a baseline and test tokenizer)."""

import keras
import numpy as np
from keras import ops

from vlbeit_keras.data.visual_tokenizers.base import VisualTokenizer
from vlbeit_keras.data.visual_tokenizers.base import patchify


@keras.saving.register_keras_serializable(package="vlbeit_keras")
class RandomProjectionTokenizer(VisualTokenizer):
    """Seeded random projection + random unit codebook, nearest code by cosine.

    No training (MODEL_SPEC §7, the "frozen random-projection quantizer"; the
    idea of BEST-RQ, Chiu et al. 2022, applied to image patches). Each patch's
    raw pixels (p * p * 3 values in [-1, 1], row-major) are centred (the patch
    mean is subtracted from every value) and concatenated with the patch mean
    colour (3 values, weight ``sqrt(p * p)`` so colour counts as much as
    texture), projected with a fixed Gaussian matrix to ``embedding_dim``,
    L2-normalised, and assigned to the most cosine-similar of ``codebook_size``
    random unit vectors. Deterministic given ``seed``, on every backend.

    Args:
        patch_size: int, the backbone's patch size.
        codebook_size: int K.
        embedding_dim: int, projection width (32, as VQ-KD's code dimension).
        seed: int, seeds the projection and the codebook (NumPy PCG64).
        dtype: dtype policy (float32 by default).

    Call: float (B, H, W, 3) in [-1, 1] -> int32 (B, N).

    Example:
    ```python
    tokenizer = RandomProjectionTokenizer(patch_size=8, codebook_size=64, seed=0)
    ids = tokenizer(np.zeros((2, 32, 32, 3), "float32"))  # int32 (2, 16)
    ```
    """

    def __init__(self, patch_size=16, codebook_size=1024, embedding_dim=32, seed=0, **kwargs):
        super().__init__(patch_size=patch_size, codebook_size=codebook_size, **kwargs)
        self.embedding_dim = int(embedding_dim)
        self.seed = int(seed)
        in_dim = self.patch_size * self.patch_size * 3 + 3
        rng = np.random.default_rng(self.seed)
        projection = rng.standard_normal((in_dim, self.embedding_dim)) / np.sqrt(in_dim)
        codebook = rng.standard_normal((self.codebook_size, self.embedding_dim))
        codebook /= np.linalg.norm(codebook, axis=1, keepdims=True)
        self.projection = self.add_weight(
            shape=(in_dim, self.embedding_dim), initializer="zeros", trainable=False,
            name="projection",
        )
        self.codebook = self.add_weight(
            shape=(self.codebook_size, self.embedding_dim), initializer="zeros",
            trainable=False, name="codebook",
        )
        self.projection.assign(projection.astype("float32"))
        self.codebook.assign(codebook.astype("float32"))
        self.built = True

    def features(self, images):
        patches = patchify(ops.cast(images, "float32"), self.patch_size)
        num_patches = patches.shape[1]
        flat = ops.reshape(patches, (-1, num_patches, self.patch_size * self.patch_size, 3))
        mean = ops.mean(flat, axis=2)  # (B, N, 3)
        centred = ops.reshape(flat - mean[:, :, None, :], (-1, num_patches,
                                                          self.patch_size * self.patch_size * 3))
        return ops.concatenate([centred, mean * float(self.patch_size)], axis=-1)

    def tokenize_features(self, features):
        z = ops.matmul(features, ops.cast(self.projection, "float32"))
        z = z / ops.maximum(ops.norm(z, axis=-1, keepdims=True), 1e-6)
        scores = ops.matmul(z, ops.transpose(ops.cast(self.codebook, "float32")))
        return ops.cast(ops.argmax(scores, axis=-1), "int32")

    def get_config(self):
        config = super().get_config()
        config.update({"embedding_dim": self.embedding_dim, "seed": self.seed})
        return config
