"""Official evaluation metrics of the downstream tasks.

- :mod:`vlbeit_keras.metrics.vqa`: VQA accuracy exactly as the official
  evaluator (pinned revisions), answer normalisation, soft scores.
- :mod:`vlbeit_keras.metrics.retrieval`: TR/IR recall@K matched by image id.
- :mod:`vlbeit_keras.metrics.nlvr`: NLVR / NLVR2 accuracy and consistency.
- :class:`VQAScore`: the Keras training-time VQA score.
"""

from vlbeit_keras.metrics.nlvr import nlvr2_metrics
from vlbeit_keras.metrics.nlvr import nlvr_metrics
from vlbeit_keras.metrics.retrieval import retrieval_recall
from vlbeit_keras.metrics.vqa import evaluate_vqa
from vlbeit_keras.metrics.vqa import normalize_answer
from vlbeit_keras.metrics.vqa import vqa_accuracy
from vlbeit_keras.metrics.vqa import vqa_soft_scores
from vlbeit_keras.metrics.vqa_score import VQAScore

__all__ = [
    "VQAScore",
    "evaluate_vqa",
    "nlvr2_metrics",
    "nlvr_metrics",
    "normalize_answer",
    "retrieval_recall",
    "vqa_accuracy",
    "vqa_soft_scores",
]
