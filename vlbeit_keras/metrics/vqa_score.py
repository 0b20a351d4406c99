"""Training-time VQA score metric (Keras), VLMo ``gadgets/my_metrics.py`` ``VQAScore``."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="vlbeit_keras")
class VQAScore(keras.metrics.Metric):
    """Mean soft score of the arg-max answer.

    For each question the predicted answer is ``argmax(logits)`` and its
    score is the soft target of that answer (``y_true[argmax]``). With
    targets built by :func:`vlbeit_keras.metrics.vqa.vqa_soft_scores` this
    equals the official VQA accuracy of in-vocabulary predictions; questions
    whose answers are all out of vocabulary score 0 (as in evaluation).

    Args:
        name: metric name (``"vqa_score"``).
        dtype: accumulator dtype (float32).

    ``update_state(y_true, y_pred, sample_weight=None)``: ``y_true`` float
    (batch, num_answers) soft scores, ``y_pred`` (batch, num_answers) logits.
    """

    def __init__(self, name="vqa_score", dtype="float32", **kwargs):
        super().__init__(name=name, dtype=dtype, **kwargs)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "float32")
        index = ops.argmax(ops.cast(y_pred, "float32"), axis=-1)
        score = ops.take_along_axis(y_true, ops.expand_dims(index, -1), axis=-1)[..., 0]
        if sample_weight is None:
            weight = ops.ones_like(score)
        else:
            weight = ops.cast(ops.reshape(sample_weight, ops.shape(score)), "float32")
        self.total.assign_add(ops.sum(score * weight))
        self.count.assign_add(ops.sum(weight))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)
