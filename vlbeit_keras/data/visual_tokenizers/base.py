"""The visual-tokenizer interface (MIM targets) and codebook statistics."""

import math
import os

import keras
import numpy as np
from keras import ops


def patchify(images, patch_size):
    """(B, H, W, C) -> (B, Hp * Wp, p, p, C), patches row-major over the grid.

    Raises:
        ValueError: H or W is not static or not a multiple of ``patch_size``.
    """
    shape = images.shape
    height, width, channels = shape[1], shape[2], shape[3]
    if height is None or width is None:
        raise ValueError("Visual tokenizers need static image height and width.")
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"Image size {height}x{width} is not a multiple of the tokenizer's "
            f"patch_size {patch_size}."
        )
    grid_h, grid_w = height // patch_size, width // patch_size
    x = ops.reshape(images, (-1, grid_h, patch_size, grid_w, patch_size, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, grid_h * grid_w, patch_size, patch_size, channels))


def pooled_patch_features(images, patch_size, pool_size):
    """Average-pool each patch to ``pool_size`` x ``pool_size`` and flatten.

    Args:
        images: float (B, H, W, 3) in [-1, 1].
        patch_size: int p; ``pool_size`` must divide it.
        pool_size: int s.

    Returns:
        float32 (B, N, s * s * 3).
    """
    if patch_size % pool_size:
        raise ValueError(f"pool_size {pool_size} must divide patch_size {patch_size}.")
    patches = patchify(ops.cast(images, "float32"), patch_size)  # (B, N, p, p, C)
    channels = patches.shape[-1]
    num_patches = patches.shape[1]
    cell = patch_size // pool_size
    x = ops.reshape(patches, (-1, num_patches, pool_size, cell, pool_size, cell, channels))
    x = ops.mean(x, axis=(3, 5))
    return ops.reshape(x, (-1, num_patches, pool_size * pool_size * channels))


class VisualTokenizer(keras.Model):
    """Base class: an image batch -> one discrete visual-token id per patch.

    The MIM target maker of VL-BEiT (MODEL_SPEC §7): the pretrainer calls a
    tokenizer on the *unmasked* normalised image, under ``stop_gradient``, in
    float32, and predicts the ids at the masked patches. Subclasses define
    :meth:`call` with ``keras.ops`` only (so they run on TensorFlow, JAX and
    PyTorch), hold their codebook as non-trainable weights, and implement
    ``get_config`` so that ``.keras`` files and ``get_config``/``from_config``
    round-trip.

    It is a ``keras.Model`` (hence a layer) so that ``save("x.keras")``,
    ``save_weights`` and ``keras.saving.load_model`` work on it directly, and
    it can be a sub-model of the pretrainer.

    Args:
        patch_size: int, must equal the backbone's patch size.
        codebook_size: int K, the number of visual tokens (the MIM head's
            classes): 64-1024 for small data, 8192 for Base-scale runs.
        dtype: dtype policy; default ``"float32"`` whatever the global policy,
            so ids do not depend on mixed precision.

    Call:
        images: float (B, H, W, 3) normalised to [-1, 1]; H and W multiples
        of ``patch_size``. Returns int32 (B, (H / p) * (W / p)), row-major over
        the patch grid, values in [0, K).

    Registration: subclasses are registered through the
    ``register_visual_tokenizers`` plugin hook and looked up with
    :func:`vlbeit_keras.data.visual_tokenizers.get_visual_tokenizer`.
    """

    def __init__(self, patch_size, codebook_size, dtype="float32", **kwargs):
        super().__init__(dtype=dtype, **kwargs)
        if int(patch_size) < 1:
            raise ValueError(f"`patch_size` must be >= 1; received {patch_size!r}.")
        if int(codebook_size) < 2:
            raise ValueError(f"`codebook_size` must be >= 2; received {codebook_size!r}.")
        self.patch_size = int(patch_size)
        self.codebook_size = int(codebook_size)
        self.trainable = False

    def features(self, images):
        """Per-patch feature vectors (B, N, F) that the codebook quantizes."""
        raise NotImplementedError

    def tokenize_features(self, features):
        """(B, N, F) features -> int32 (B, N) ids."""
        raise NotImplementedError

    def call(self, images):
        return self.tokenize_features(self.features(images))

    def compute_output_spec(self, images):
        shape = images.shape
        num = None
        if shape[1] is not None and shape[2] is not None:
            num = (shape[1] // self.patch_size) * (shape[2] // self.patch_size)
        return keras.KerasTensor((shape[0], num), dtype="int32")

    def get_config(self):
        config = super().get_config()
        config.update({"patch_size": self.patch_size, "codebook_size": self.codebook_size})
        for key in ("trainable",):
            config.pop(key, None)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("trainable", None)
        return cls(**config)


def codebook_usage(token_ids, codebook_size):
    """Usage statistics of visual-token ids.

    Args:
        token_ids: int array of any shape, values in [0, codebook_size).
        codebook_size: int K.

    Returns:
        dict: ``num_tokens`` (int), ``used_codes`` (int, codes seen at least
        once), ``used_fraction`` (float), ``dead_codes`` (int, K - used),
        ``perplexity`` (float, exp of the entropy of the id histogram, in
        [1, K]; K when usage is uniform), ``normalized_perplexity``
        (perplexity / K), ``max_code_share`` (float, share of the most
        frequent code).
    """
    ids = np.asarray(token_ids).reshape(-1).astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= codebook_size):
        raise ValueError(f"token ids outside [0, {codebook_size}).")
    counts = np.bincount(ids, minlength=codebook_size).astype(np.float64)
    total = counts.sum()
    probs = counts / max(total, 1.0)
    nonzero = probs[probs > 0]
    entropy = float(-(nonzero * np.log(nonzero)).sum())
    used = int((counts > 0).sum())
    return {
        "num_tokens": int(total),
        "used_codes": used,
        "used_fraction": used / codebook_size,
        "dead_codes": codebook_size - used,
        "perplexity": math.exp(entropy),
        "normalized_perplexity": math.exp(entropy) / codebook_size,
        "max_code_share": float(probs.max()) if total else 0.0,
    }


def format_usage(stats):
    """One line of :func:`codebook_usage` output."""
    return (
        f"tokens {stats['num_tokens']}, codes used {stats['used_codes']} "
        f"({100 * stats['used_fraction']:.1f}%), dead {stats['dead_codes']}, "
        f"perplexity {stats['perplexity']:.1f} "
        f"({100 * stats['normalized_perplexity']:.1f}% of K), "
        f"top code share {100 * stats['max_code_share']:.1f}%"
    )


def save_visual_tokenizer(tokenizer, path):
    """Save to a ``.keras`` file (config + codebook).

    Raises:
        ValueError: ``path`` does not end with ``.keras``.
    """
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(f"Save visual tokenizers to a '.keras' file; received {path!r}.")
    tokenizer.save(path)
    return path


def load_visual_tokenizer(path):
    """Load a tokenizer saved with :func:`save_visual_tokenizer` / ``.save``.

    Plugin tokenizer classes must be importable (``import vlbeit_keras``
    loads the plugins first).

    Raises:
        FileNotFoundError: no file at ``path``.
        TypeError: the file holds something else than a :class:`VisualTokenizer`.
    """
    import vlbeit_keras  # noqa: F401  (loads plugins: registers their classes)

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No visual tokenizer file at {path!r}.")
    model = keras.saving.load_model(path, compile=False)
    if not isinstance(model, VisualTokenizer):
        raise TypeError(f"{path!r} holds a {type(model).__name__}, not a VisualTokenizer.")
    return model
