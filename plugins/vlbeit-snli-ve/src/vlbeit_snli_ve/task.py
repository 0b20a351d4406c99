"""SNLI-VE visual entailment as a vlbeit_keras fine-tuning task (``"snli_ve"``).

Visual entailment (Xie et al. 2019): given an image (the premise) and a
sentence (the hypothesis), predict entailment, neutral or contradiction. The
model is the single-pass image-text classifier of vlbeit_keras (UNITER / VLMo
style: one fused image-text pass, the pooled [T_CLS] through an MLP head,
Dense(d -> 2d) -> LayerNorm -> GELU -> Dense(2d -> 3)), trained with softmax
cross-entropy; the benchmark metric is accuracy (reported per class too).

The task follows the ``vlbeit_keras.tasks.base.TaskSpec`` contract, so the
fine-tuning recipe drives it by name (``--task snli_ve``).
"""

import json

import keras
import numpy as np

from vlbeit_keras.tasks import image_text_classification as itc
from vlbeit_keras.tasks.base import DEFAULT_RESIZE_METHOD
from vlbeit_keras.tasks.base import TaskSpec
from vlbeit_keras.tasks.base import maybe_resize_backbone
from vlbeit_keras.tasks.base import random_image
from vlbeit_keras.tasks.base import random_sentence
from vlbeit_keras.tasks.data import RecordError
from vlbeit_keras.tasks.data import field
from vlbeit_keras.tasks.data import require

from vlbeit_snli_ve.reader import LABEL_IDS
from vlbeit_snli_ve.reader import LABELS

NUM_CLASSES = len(LABELS)


@keras.saving.register_keras_serializable(package="vlbeit_snli_ve")
class SNLIVEClassifier(itc.VLBEiTImageTextClassifier):
    """VL-BEiT visual-entailment model: image + hypothesis -> 3 logits.

    A ``VLBEiTImageTextClassifier`` with ``num_classes=3`` in the order of
    :attr:`class_names` (entailment, neutral, contradiction).

    Args:
        backbone: ``VLBEiTBackbone``.
        head_hidden_dim: MLP width (default 2d, as VLMo's heads).
        head_layer_norm_epsilon: 1e-5.
        label_smoothing: float in [0, 1), of the default loss (0).
        num_classes: accepted for config compatibility; must be 3.

    Inputs (dict): ``token_ids`` int32 (B, T), ``padding_mask`` int (B, T),
    ``images`` float32 (B, H, W, 3) in [-1, 1].

    Returns:
        float logits (B, 3) in the compute dtype.

    Default compile: softmax cross-entropy (from logits, float32) and
    accuracy; AdamW as the parent (lr 5e-5, wd 0.01).

    Raises:
        ValueError: ``num_classes`` other than 3, bad ``label_smoothing``.
    """

    class_names = LABELS

    def __init__(self, backbone, head_hidden_dim=None, head_layer_norm_epsilon=1e-5,
                 label_smoothing=0.0, num_classes=NUM_CLASSES, **kwargs):
        if int(num_classes) != NUM_CLASSES:
            raise ValueError(f"SNLI-VE has {NUM_CLASSES} classes {LABELS}; got num_classes={num_classes}.")
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"`label_smoothing` must be in [0, 1); got {label_smoothing!r}.")
        self.label_smoothing = float(label_smoothing)
        super().__init__(backbone, NUM_CLASSES, head_hidden_dim=head_hidden_dim,
                         head_layer_norm_epsilon=head_layer_norm_epsilon, **kwargs)

    def default_loss(self):
        if self.label_smoothing:
            return SmoothedSparseCrossEntropy(self.label_smoothing)
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="vlbeit_snli_ve")
class SmoothedSparseCrossEntropy(keras.losses.Loss):
    """Softmax cross-entropy with integer labels and label smoothing, float32.

    Args:
        label_smoothing: float in [0, 1): the target is
            ``(1 - s) * one_hot + s / C``.

    Call: ``y_true`` int (B,), ``y_pred`` logits (B, C). Returns (B,) float32.
    """

    def __init__(self, label_smoothing=0.1, name="smoothed_sparse_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        logits = keras.ops.cast(y_pred, "float32")
        num_classes = keras.ops.shape(logits)[-1]
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        target = keras.ops.one_hot(labels, num_classes, dtype="float32")
        target = target * (1.0 - self.label_smoothing) + self.label_smoothing / num_classes
        return keras.ops.categorical_crossentropy(target, logits, from_logits=True)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def label_id(value, index, source=None):
    """A record's label as a class id: a class name (any case) or an int 0..2.

    Raises:
        RecordError: anything else, naming source, record and field.
    """
    if isinstance(value, str) and value.strip().lower() in LABEL_IDS:
        return LABEL_IDS[value.strip().lower()]
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= int(value) < NUM_CLASSES:
        return int(value)
    where = f"{source}, " if source else ""
    raise RecordError(
        f"{where}record {index}: field 'label' must be one of {list(LABELS)} or an int "
        f"in [0, {NUM_CLASSES}); got {value!r}."
    )


def build_model(backbone, image_size=None, head_hidden_dim=None, label_smoothing=0.0,
                resize_method=DEFAULT_RESIZE_METHOD, **unused):
    """An :class:`SNLIVEClassifier` on ``backbone``, compiled.

    ``image_size`` (int or (H, W)) resizes the backbone first (position
    tables interpolated with ``resize_method``, see ``docs/finetuning.md``).
    """
    backbone = maybe_resize_backbone(backbone, image_size=image_size, method=resize_method)
    model = SNLIVEClassifier(backbone, head_hidden_dim=head_hidden_dim, label_smoothing=label_smoothing)
    model.compile()
    return model


def make_dataset(records, *, tokenizer, image_config, text_length, batch_size, training=False,
                 seed=0, start_step=0, report=None, source=None, **unused):
    """Records (``image``, ``text``, ``label``) -> ``tf.data`` batches of (x, y).

    ``label`` is a class name or id (:func:`label_id`); ``y`` is int32 (B,);
    ``x``: ``token_ids``, ``padding_mask`` (B, T), ``images`` (B, H, W, 3).
    Built on the project input pipeline (``vlbeit_keras.tasks.data``: the
    common adapter arguments, infinite training datasets, ``start_step``
    resumption, undecodable images reported to ``report``).

    Raises:
        RecordError: a record lacks a field or has a bad label.
    """
    records = [
        dict(r, label=label_id(field(r, "label", i, source), i, source))
        for i, r in enumerate(require(records, source))
    ]
    return itc.make_dataset(
        records, tokenizer=tokenizer, image_config=image_config, text_length=text_length,
        batch_size=batch_size, training=training, seed=seed, start_step=start_step, report=report,
        num_classes=NUM_CLASSES, source=source,
    )


def accuracy_metrics(logits, gold):
    """``accuracy`` and per gold class ``accuracy_<class>`` (fractions).

    Args:
        logits: float (N, 3); gold: int (N,) class ids. A class absent from
            ``gold`` gets no per-class entry.
    """
    predicted = np.asarray(logits).argmax(-1)
    gold = np.asarray(gold)
    correct = predicted == gold
    metrics = {"accuracy": float(correct.mean())}
    for k, name in enumerate(LABELS):
        if np.any(gold == k):
            metrics[f"accuracy_{name}"] = float(correct[gold == k].mean())
    return metrics


def predictions_from_logits(records, logits):
    """One dict per record, in order: ``index``, ``pair_id`` and ``image_id``
    (when the record has them), ``prediction`` and ``gold_label`` (class
    names; ``gold_label`` only when the record is labelled) and
    ``probabilities`` (3 floats, class order :data:`LABELS`)."""
    logits = np.asarray(logits, dtype=np.float64)
    probabilities = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    predictions = []
    for i, record in enumerate(records):
        item = {"index": i}
        for key in ("pair_id", "image_id"):
            if record.get(key) is not None:
                item[key] = record[key]
        item["prediction"] = LABELS[int(logits[i].argmax())]
        if record.get("label") is not None:
            item["gold_label"] = LABELS[label_id(record["label"], i)]
        item["probabilities"] = probabilities[i].round(6).tolist()
        predictions.append(item)
    return predictions


def evaluate(model, records, *, tokenizer, image_config, batch_size=32, report=None, source=None,
             **config):
    """Accuracy, overall and per gold class, and per-record predictions.

    Returns:
        ``(metrics, predictions)``: :func:`accuracy_metrics` and
        :func:`predictions_from_logits` of the model's logits.

    Raises:
        RecordError: a record lacks ``label`` or has a bad one.
    """
    records = require(records, source)
    gold = np.array([label_id(field(r, "label", i, source), i, source) for i, r in enumerate(records)])
    logits = itc.predict_logits(model, records, tokenizer=tokenizer, image_config=image_config,
                                batch_size=batch_size, report=report, source=source)
    return accuracy_metrics(logits, gold), predictions_from_logits(records, logits)


def export_predictions(predictions, path):
    """Write one JSON object per line (the SNLI-VE files' JSON-lines layout)."""
    with open(path, "w", encoding="utf-8") as f:
        for item in predictions:
            f.write(json.dumps(item) + "\n")
    return path


def example(num_records, image_size, seed=0):
    """Synthetic records (uint8 images, short hypotheses, class-name labels)."""
    rng = np.random.default_rng(seed)
    records = [
        {"image": random_image(rng, image_size), "text": random_sentence(rng),
         "label": LABELS[i % NUM_CLASSES], "pair_id": f"example-{i}"}
        for i in range(num_records)
    ]
    return records, {"image_size": tuple(image_size)}


TASK = TaskSpec(
    name="snli_ve",
    description="SNLI-VE visual entailment: image + hypothesis -> entailment / neutral / contradiction.",
    model_cls=SNLIVEClassifier,
    build_model=build_model,
    make_dataset=make_dataset,
    evaluate=evaluate,
    export_predictions=export_predictions,
    record_keys=("image", "text", "label"),
    metric_names=("accuracy", *(f"accuracy_{name}" for name in LABELS)),
    default_config={"image_size": None, "head_hidden_dim": None, "label_smoothing": 0.0,
                    "resize_method": DEFAULT_RESIZE_METHOD},
    example=example,
)
