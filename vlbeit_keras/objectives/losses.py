"""Masked-position losses and accuracies (float32)."""

from keras import ops


def masked_cross_entropy(logits, targets, weights):
    """Softmax cross-entropy averaged over masked positions, in float32.

    Args:
        logits: float (batch, P, classes), gathered at masked positions.
        targets: int (batch, P) class ids.
        weights: float (batch, P), 1 for real masked positions, 0 for padding
            entries of the fixed-size position list.

    Returns:
        (loss, accuracy, count): float32 scalars; loss and accuracy are
        averaged over sum(weights) (0 when no position is masked).
    """
    logits = ops.cast(logits, "float32")
    weights = ops.cast(weights, "float32")
    targets = ops.cast(targets, "int32")
    ce = ops.sparse_categorical_crossentropy(targets, logits, from_logits=True)
    count = ops.sum(weights)
    denom = ops.maximum(count, 1.0)
    loss = ops.sum(ce * weights) / denom
    predicted = ops.cast(ops.argmax(logits, axis=-1), "int32")
    correct = ops.cast(ops.equal(predicted, targets), "float32")
    accuracy = ops.sum(correct * weights) / denom
    return loss, accuracy, count
