"""Downstream tasks: task models, data adapters, evaluation and prediction export.

Each task module defines a Keras model taking a ``VLBEiTBackbone`` and a
:class:`~vlbeit_keras.tasks.base.TaskSpec` named ``TASK``, registered through
the ``register_heads`` hook by ``vlbeit_keras.default_plugins.tasks``:

=========================  ==============================================
registry name              model
=========================  ==============================================
``vqa``                    :class:`VLBEiTVQA`
``nlvr2``                  :class:`VLBEiTNLVR2`
``nlvr``                   :class:`VLBEiTImageTextClassifier` (2 classes)
``retrieval``              :class:`VLBEiTRetrieval`
``image_classification``   :class:`VLBEiTImageClassifier`
``image_text_classification``  :class:`VLBEiTImageTextClassifier`
=========================  ==============================================

See ``docs/finetuning.md``.
"""

from vlbeit_keras.tasks.base import TaskSpec
from vlbeit_keras.tasks.base import VLBEiTTaskModel
from vlbeit_keras.tasks.image_classification import VLBEiTImageClassifier
from vlbeit_keras.tasks.image_text_classification import VLBEiTImageTextClassifier
from vlbeit_keras.tasks.nlvr2 import VLBEiTNLVR2
from vlbeit_keras.tasks.optimization import LRMultiplierOptimizer
from vlbeit_keras.tasks.retrieval import VLBEiTRetrieval
from vlbeit_keras.tasks.vqa import VLBEiTVQA
from vlbeit_keras.tasks.vqa import VQASoftScoreLoss


def get_task(name):
    """The :class:`TaskSpec` registered as ``name`` (plugins included)."""
    from vlbeit_keras.plugins import get_registry

    return get_registry("heads").get(name)


__all__ = [
    "LRMultiplierOptimizer",
    "TaskSpec",
    "VLBEiTImageClassifier",
    "VLBEiTImageTextClassifier",
    "VLBEiTNLVR2",
    "VLBEiTRetrieval",
    "VLBEiTTaskModel",
    "VLBEiTVQA",
    "VQASoftScoreLoss",
    "get_task",
]
