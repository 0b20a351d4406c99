"""Visual tokenizers: image batch -> one discrete visual-token id per patch (MIM targets).

Built-ins (registered by ``vlbeit_keras.default_plugins.visual_tokenizers``):

- ``"random_projection"``: :class:`RandomProjectionTokenizer`, frozen, no training;
- ``"kmeans"``: :class:`KMeansTokenizer`, a k-means patch codebook trained on
  your images (``recipes/train_visual_tokenizer.py``).

Plugins add more through the ``register_visual_tokenizers`` hook; look them up
by name with :func:`get_visual_tokenizer`.
"""

from vlbeit_keras.data.visual_tokenizers.base import VisualTokenizer
from vlbeit_keras.data.visual_tokenizers.base import codebook_usage
from vlbeit_keras.data.visual_tokenizers.base import format_usage
from vlbeit_keras.data.visual_tokenizers.base import load_visual_tokenizer
from vlbeit_keras.data.visual_tokenizers.base import patchify
from vlbeit_keras.data.visual_tokenizers.base import save_visual_tokenizer
from vlbeit_keras.data.visual_tokenizers.kmeans import KMeansTokenizer
from vlbeit_keras.data.visual_tokenizers.kmeans import kmeans
from vlbeit_keras.data.visual_tokenizers.random_projection import RandomProjectionTokenizer


def get_visual_tokenizer(name):
    """The visual-tokenizer class registered as ``name`` (raises listing known names)."""
    from vlbeit_keras.plugins import get_registry

    return get_registry("visual_tokenizers").get(name)


def build_visual_tokenizer(name, **kwargs):
    """Instantiate the tokenizer registered as ``name`` with ``kwargs``."""
    return get_visual_tokenizer(name)(**kwargs)


__all__ = [
    "KMeansTokenizer",
    "RandomProjectionTokenizer",
    "VisualTokenizer",
    "build_visual_tokenizer",
    "codebook_usage",
    "format_usage",
    "get_visual_tokenizer",
    "kmeans",
    "load_visual_tokenizer",
    "patchify",
    "save_visual_tokenizer",
]
