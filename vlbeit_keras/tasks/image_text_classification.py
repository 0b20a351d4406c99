"""Single-pass image-text classification (NLVR v1, SNLI-VE-style tasks).

One fused image-text pass; the pooled [T_CLS] (the backbone's
``pooled_output``) goes through the VLMo MLP head (Dense(d -> 2d) ->
LayerNorm(1e-5) -> GELU -> Dense(2d -> C)); softmax cross-entropy
(MODEL_SPEC §9.2, "NLVR (v1)": the NLVR2 head with a single pass).
"""

import math

import keras
import numpy as np

from vlbeit_keras.layers.classifier_head import MLPClassifierHead
from vlbeit_keras.tasks import data as task_data
from vlbeit_keras.tasks.base import check_inputs
from vlbeit_keras.tasks.base import head_initializer
from vlbeit_keras.tasks.base import DEFAULT_RESIZE_METHOD
from vlbeit_keras.tasks.base import maybe_resize_backbone
from vlbeit_keras.tasks.base import random_image
from vlbeit_keras.tasks.base import random_sentence
from vlbeit_keras.tasks.base import TaskSpec
from vlbeit_keras.tasks.base import VLBEiTTaskModel

PAIR_INPUTS = ("token_ids", "padding_mask", "images")


@keras.saving.register_keras_serializable(package="vlbeit_keras")
class VLBEiTImageTextClassifier(VLBEiTTaskModel):
    """Image + text -> class logits from one fused pass.

    Args:
        backbone: ``VLBEiTBackbone``.
        num_classes: int >= 1 (2 for NLVR's true/false, 3 for SNLI-VE).
        head_hidden_dim: MLP width (default 2d, as VLMo).
        head_layer_norm_epsilon: 1e-5 (PyTorch default in VLMo's heads).
        name: model name.

    Inputs (dict): ``token_ids`` int32 (B, T), ``padding_mask`` int (B, T),
    ``images`` float32 (B, H, W, 3) in [-1, 1]; T and (H, W) are the
    backbone's ``max_text_length`` and ``image_size``.

    Returns:
        float logits (B, num_classes), compute dtype.

    Default compile: ``SparseCategoricalCrossentropy(from_logits=True)``,
    ``SparseCategoricalAccuracy``, AdamW (VLMo NLVR2: lr 5e-5, wd 0.01).

    Example:
    ```python
    backbone = VLBEiTBackbone.from_preset("vlbeit_tiny", load_weights=False)
    model = VLBEiTImageTextClassifier(backbone, num_classes=2)
    model.compile()
    model.fit({"token_ids": t, "padding_mask": m, "images": x}, labels)
    ```
    """

    default_learning_rate = 5e-5
    default_head_lr_multiplier = 1.0

    def __init__(
        self,
        backbone,
        num_classes,
        head_hidden_dim=None,
        head_layer_norm_epsilon=1e-5,
        **kwargs,
    ):
        super().__init__(backbone, **kwargs)
        d = self.backbone.hidden_dim
        self.num_classes = int(num_classes)
        self.head_hidden_dim = int(head_hidden_dim or 2 * d)
        self.head_layer_norm_epsilon = float(head_layer_norm_epsilon)
        self.classifier = MLPClassifierHead(
            self.head_hidden_dim,
            self.num_classes,
            layer_norm_epsilon=self.head_layer_norm_epsilon,
            kernel_initializer=head_initializer(self.backbone),
            dtype=self.dtype_policy,
            name="classifier",
        )
        self.classifier.build((None, self._head_input_dim()))
        self.built = True

    def _head_input_dim(self):
        return self.backbone.hidden_dim

    def pooled_features(self, inputs, training=None):
        """(B, d) ``pooled_output`` of the fused pass (by the backbone's ``pooling``)."""
        return self.backbone.encode_image_text(
            inputs["token_ids"], inputs["padding_mask"], inputs["images"], training=training
        )["pooled_output"]

    def call(self, inputs, training=None):
        check_inputs(inputs, PAIR_INPUTS, type(self).__name__)
        return self.classifier(self.pooled_features(inputs, training=training))

    def health_features(self, inputs):
        """``pooled_output``: the head's input (B, d)."""
        return {"pooled_output": self.pooled_features(inputs)}

    def chance_losses(self, batch_size=None):
        """``loss``: ln(num_classes), cross-entropy of a uniform prediction."""
        return {"loss": math.log(self.num_classes)} if self.num_classes > 1 else {}

    def default_loss(self):
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def default_metrics(self):
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]

    def default_optimizer(self):
        from vlbeit_keras.tasks.optimization import finetune_optimizer

        return finetune_optimizer(
            self,
            learning_rate=self.default_learning_rate,
            head_multiplier=self.default_head_lr_multiplier,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "head_hidden_dim": self.head_hidden_dim,
                "head_layer_norm_epsilon": self.head_layer_norm_epsilon,
            }
        )
        return config


# ---------------------------------------------------------------------------
# Task functions (generic integer labels)
def build_model(backbone, num_classes=2, image_size=None, head_hidden_dim=None,
                resize_method=DEFAULT_RESIZE_METHOD, **unused):
    """Image-text classifier on ``backbone`` (resized to ``image_size``), compiled."""
    backbone = maybe_resize_backbone(
        backbone, image_size=image_size, method=resize_method
    )
    model = VLBEiTImageTextClassifier(backbone, num_classes, head_hidden_dim=head_hidden_dim)
    model.compile()
    return model


def class_label(value, index, num_classes, source=None):
    """int label in [0, num_classes), or true/false -> 1/0 for 2 classes."""
    if isinstance(value, (bool, np.bool_)) or (
        num_classes == 2 and not isinstance(value, (int, np.integer))
    ):
        return task_data.binary_label(value, index, source)
    try:
        label = int(value)
    except (TypeError, ValueError):
        label = None
    if label is None or not 0 <= label < num_classes or label != value:
        where = f"{source}, " if source else ""
        raise task_data.RecordError(
            f"{where}record {index}: field 'label' must be an int in [0, {num_classes}); got {value!r}."
        )
    return label


def make_dataset(
    records,
    *,
    tokenizer,
    image_config,
    text_length,
    batch_size,
    training=False,
    seed=0,
    start_step=0,
    report=None,
    num_classes=2,
    source=None,
    **unused,
):
    """Records (``image``, ``text``, ``label``) -> batches of (x, y).

    ``x`` = ``token_ids``, ``padding_mask`` (B, T) and ``images`` (B, H, W, 3);
    ``y`` int32 (B,). Labels are ints in [0, num_classes) (or true/false
    for two classes). Common arguments: see :mod:`vlbeit_keras.tasks.data`.
    """
    records = task_data.require(records, source)
    task_data.check_text(records, source)
    labels = np.array(
        [class_label(task_data.field(r, "label", i, source), i, num_classes, source)
         for i, r in enumerate(records)],
        dtype=np.int32,
    )
    return task_data.image_text_dataset(
        records, tokenizer=tokenizer, image_config=image_config, text_length=text_length,
        batch_size=batch_size, labels=labels, training=training, seed=seed,
        start_step=start_step, report=report, image_key="image",
    )


def predict_logits(model, records, *, tokenizer, image_config, batch_size, report=None,
                   image_key="image", source=None):
    """Logits (N, C) in record order (NumPy float32) for single-pass models."""
    records = task_data.require(records, source)
    task_data.check_text(records, source)
    task_data.check_image_config(model, image_config)
    ds = task_data.image_text_dataset(
        records, tokenizer=tokenizer, image_config=image_config,
        text_length=model.backbone.max_text_length, batch_size=batch_size,
        labels=np.arange(len(records)), training=False, report=report, image_key=image_key,
    )
    logits = task_data.predict_in_record_order(model.predict_on_batch, ds, len(records), source)
    return np.asarray(logits, dtype=np.float32)


def evaluate(model, records, *, tokenizer, image_config, batch_size=32, report=None,
             source=None, **config):
    """Accuracy over records; predictions ``[{"index", "label", "probabilities"}]``."""
    records = task_data.require(records, source)
    logits = predict_logits(model, records, tokenizer=tokenizer, image_config=image_config,
                            batch_size=batch_size, report=report, source=source)
    num_classes = logits.shape[-1]
    labels = np.array(
        [class_label(r["label"], i, num_classes) for i, r in enumerate(records)], dtype=np.int64
    )
    predicted = logits.argmax(-1)
    probabilities = _softmax(logits)
    predictions = [
        {"index": i, "label": int(p), "probabilities": probabilities[i].round(6).tolist()}
        for i, p in enumerate(predicted)
    ]
    return {"accuracy": float(np.mean(predicted == labels))}, predictions


def majority_class(labels):
    """Most frequent int label (ties: the smallest)."""
    values, counts = np.unique(np.asarray(labels), return_counts=True)
    return int(values[np.argmax(counts)])


def baseline(train_records, eval_records, num_classes=2, **config):
    """Majority-class baseline: the most frequent training label for every
    evaluation record. Returns ``accuracy`` and ``label``."""
    train_records = task_data.require(train_records, "training records")
    eval_records = task_data.require(eval_records, "evaluation records")
    train = [class_label(task_data.field(r, "label", i), i, num_classes)
             for i, r in enumerate(train_records)]
    label = majority_class(train)
    truth = np.array([class_label(task_data.field(r, "label", i), i, num_classes)
                      for i, r in enumerate(eval_records)])
    return {"accuracy": float(np.mean(truth == label)), "label": label}


def export_predictions(predictions, path):
    """JSON list of ``{"index", "label", "probabilities"}``."""
    return task_data.write_json(list(predictions), path)


def example(num_records, image_size, seed=0):
    """Synthetic (image, text, label) records with 3 classes."""
    rng = np.random.default_rng(seed)
    records = [
        {"image": random_image(rng, image_size), "text": random_sentence(rng), "label": i % 3}
        for i in range(num_records)
    ]
    return records, {"num_classes": 3, "image_size": tuple(image_size)}


def _softmax(logits):
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


TASK = TaskSpec(
    name="image_text_classification",
    description="Generic single-pass image-text classifier (e.g. SNLI-VE): pooled [T_CLS] -> MLP -> C.",
    model_cls=VLBEiTImageTextClassifier,
    build_model=build_model,
    make_dataset=make_dataset,
    evaluate=evaluate,
    export_predictions=export_predictions,
    record_keys=("image", "text", "label"),
    metric_names=("accuracy",),
    default_config={"num_classes": 2, "image_size": None, "head_hidden_dim": None,
                    "resize_method": DEFAULT_RESIZE_METHOD},
    example=example,
    baseline=baseline,
)
