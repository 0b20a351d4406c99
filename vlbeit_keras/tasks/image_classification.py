"""Image classification on the vision-only path (BEiT fine-tuning recipe).

MODEL_SPEC §9.4 (BEiT ``modeling_finetune.py``, ``use_mean_pooling``):
image-only encoding (V-FFN in every block) -> mean of the patch tokens
(excluding [I_CLS]) -> LayerNorm(eps 1e-6) -> Dense(num_classes) whose
kernel is initialised truncated-normal(0.02) x ``head_init_scale`` (0.001)
with zero bias; softmax cross-entropy; optional layer-wise lr decay (BEiT-
base ImageNet: 0.65) through :func:`vlbeit_keras.tasks.optimization.lr_multipliers`.

Difference from BEiT: the backbone applies its final LayerNorm on every path
(MODEL_SPEC §3.1), so the pooled tokens are final-normed before ``fc_norm``;
BEiT replaces the final norm by ``fc_norm`` when mean pooling.
"""


import math

import keras
import numpy as np
from keras import ops

from vlbeit_keras.tasks import data as task_data
from vlbeit_keras.tasks.base import DEFAULT_RESIZE_METHOD
from vlbeit_keras.tasks.base import maybe_resize_backbone
from vlbeit_keras.tasks.base import random_image
from vlbeit_keras.tasks.base import TaskSpec
from vlbeit_keras.tasks.base import VLBEiTTaskModel


@keras.saving.register_keras_serializable(package="vlbeit_keras")
class ScaledInitializer(keras.initializers.Initializer):
    """``scale x base`` initializer (BEiT ``head.weight.data.mul_(init_scale)``).

    Args:
        base: a Keras initializer (or its config).
        scale: float multiplier.
    """

    def __init__(self, base, scale):
        self.base = keras.initializers.get(base)
        self.scale = float(scale)

    def __call__(self, shape, dtype=None):
        return self.base(shape, dtype=dtype) * self.scale

    def get_config(self):
        return {"base": keras.initializers.serialize(self.base), "scale": self.scale}


@keras.saving.register_keras_serializable(package="vlbeit_keras")
class VLBEiTImageClassifier(VLBEiTTaskModel):
    """Images -> class logits through the vision-only path.

    Args:
        backbone: ``VLBEiTBackbone``.
        num_classes: int >= 1.
        head_init_scale: float, head kernel init multiplier (0.001).
        layer_norm_epsilon: ``fc_norm`` epsilon (1e-6).
        layer_decay: optional float in (0, 1]: the default optimizer then
            trains block l at lr x decay^(L + 1 - (l + 1)) (embeddings
            decay^(L + 1), head 1).
        learning_rate: default optimizer lr (BEiT-base: 4e-3 at batch 1024;
            scale with batch size).
        weight_decay: default optimizer weight decay (BEiT: 0.05).

    Inputs: ``images`` float32 (B, H, W, 3) in [-1, 1], or a dict with key
    ``images``.

    Returns:
        float logits (B, num_classes).
    """

    def __init__(
        self,
        backbone,
        num_classes,
        head_init_scale=0.001,
        layer_norm_epsilon=1e-6,
        layer_decay=None,
        learning_rate=1e-3,
        weight_decay=0.05,
        **kwargs,
    ):
        super().__init__(backbone, **kwargs)
        d = self.backbone.hidden_dim
        self.num_classes = int(num_classes)
        self.head_init_scale = float(head_init_scale)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.layer_decay = None if layer_decay is None else float(layer_decay)
        self.learning_rate = float(learning_rate)
        self.weight_decay = float(weight_decay)
        self.fc_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="fc_norm"
        )
        self.head = keras.layers.Dense(
            self.num_classes,
            kernel_initializer=ScaledInitializer(
                keras.initializers.TruncatedNormal(stddev=self.backbone.initializer_range),
                self.head_init_scale
            ),
            bias_initializer="zeros",
            dtype=self.dtype_policy,
            name="head",
        )
        self.fc_norm.build((None, d))
        self.head.build((None, d))
        self.built = True

    def call(self, inputs, training=None):
        return self.head(self.fc_norm(self.pooled_features(inputs, training)))

    def pooled_features(self, inputs, training=None):
        """(B, d) mean of the patch tokens (no [I_CLS]), before ``fc_norm``."""
        images = inputs["images"] if isinstance(inputs, dict) else inputs
        tokens = self.backbone.encode_image(images, training=training)["image_sequence_output"]
        return ops.mean(tokens[:, 1:], axis=1)

    def health_features(self, inputs):
        """``pooled_output``: mean of the patch tokens (B, d)."""
        return {"pooled_output": self.pooled_features(inputs)}

    def chance_losses(self, batch_size=None):
        """``loss``: ln(num_classes)."""
        return {"loss": math.log(self.num_classes)} if self.num_classes > 1 else {}

    def default_loss(self):
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def default_metrics(self):
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        if self.num_classes > 5:
            metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5_accuracy"))
        return metrics

    def default_optimizer(self):
        from vlbeit_keras.tasks.optimization import finetune_optimizer

        return finetune_optimizer(
            self,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            layer_decay=self.layer_decay,
            beta_2=0.999,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "head_init_scale": self.head_init_scale,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "layer_decay": self.layer_decay,
                "learning_rate": self.learning_rate,
                "weight_decay": self.weight_decay,
            }
        )
        return config


def build_model(backbone, num_classes, image_size=None, layer_decay=0.65, learning_rate=1e-3,
                weight_decay=0.05, resize_method=DEFAULT_RESIZE_METHOD, **unused):
    """Image classifier (layer decay 0.65 by default, BEiT-base), compiled."""
    backbone = maybe_resize_backbone(
        backbone, image_size=image_size, method=resize_method
    )
    model = VLBEiTImageClassifier(
        backbone, num_classes, layer_decay=layer_decay, learning_rate=learning_rate,
        weight_decay=weight_decay,
    )
    model.compile()
    return model


def _label(value, index, num_classes, source):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or not 0 <= int(value) < num_classes:
        raise task_data.RecordError(
            f"{source + ', ' if source else ''}record {index}: field 'label' must be an int "
            f"in [0, {num_classes}); got {value!r}."
        )
    return int(value)


def make_dataset(records, *, image_config, batch_size, num_classes, training=False, seed=0,
                 start_step=0, report=None, source=None, tokenizer=None, text_length=None,
                 **unused):
    """Records (``image``, ``label`` int) -> ({"images"}, y int32 (B,)).

    No text: ``tokenizer`` and ``text_length`` are accepted and ignored.
    Other arguments: see :mod:`vlbeit_keras.tasks.data`.
    """
    from vlbeit_keras.data import pipeline

    records = task_data.require(records, source)
    labels = np.array(
        [_label(task_data.field(r, "label", i, source), i, num_classes, source)
         for i, r in enumerate(records)], dtype=np.int32,
    )
    return pipeline.make_image_dataset(
        records, image_config=image_config, batch_size=batch_size, labels=labels,
        training=training, seed=seed, start_step=start_step, report=report, image_key="image",
    )


def evaluate(model, records, *, image_config, batch_size=64, report=None, source=None,
             tokenizer=None, **config):
    """Top-1 (and top-5) accuracy; predictions ``[{"index", "label", "score"}]``."""
    from vlbeit_keras.data import pipeline

    records = task_data.require(records, source)
    task_data.check_image_config(model, image_config)
    labels = np.array([_label(task_data.field(r, "label", i, source), i, model.num_classes, source)
                       for i, r in enumerate(records)])
    ds = pipeline.make_image_dataset(
        records, image_config=image_config, batch_size=batch_size,
        labels=np.arange(len(records)), training=False, report=report, image_key="image",
    )
    logits = np.asarray(
        task_data.predict_in_record_order(model.predict_on_batch, ds, len(records), source),
        dtype=np.float32,
    )
    ranked = np.argsort(-logits, axis=1, kind="stable")
    metrics = {"accuracy": float(np.mean(ranked[:, 0] == labels))}
    if logits.shape[1] > 5:
        metrics["top5_accuracy"] = float(np.mean((ranked[:, :5] == labels[:, None]).any(1)))
    z = np.exp(logits - logits.max(1, keepdims=True))
    probs = z / z.sum(1, keepdims=True)
    predictions = [
        {"index": i, "label": int(ranked[i, 0]), "score": float(probs[i, ranked[i, 0]])}
        for i in range(len(records))
    ]
    return metrics, predictions


def baseline(train_records, eval_records, num_classes=None, **config):
    """Majority-class baseline: the most frequent training label for every
    evaluation image. Returns ``accuracy`` (and ``top5_accuracy`` with more
    than 5 classes: the 5 most frequent training labels) and ``label``."""
    train_records = task_data.require(train_records, "training records")
    eval_records = task_data.require(eval_records, "evaluation records")
    if num_classes is None:
        raise ValueError("The image classification baseline needs `num_classes`.")
    train = np.array([_label(task_data.field(r, "label", i), i, num_classes, None)
                      for i, r in enumerate(train_records)])
    truth = np.array([_label(task_data.field(r, "label", i), i, num_classes, None)
                      for i, r in enumerate(eval_records)])
    counts = np.bincount(train, minlength=num_classes)
    ranked = np.argsort(-counts, kind="stable")
    metrics = {"accuracy": float(np.mean(truth == ranked[0])), "label": int(ranked[0])}
    if num_classes > 5:
        metrics["top5_accuracy"] = float(np.mean(np.isin(truth, ranked[:5])))
    return metrics


def export_predictions(predictions, path):
    """JSON list of ``{"index", "label", "score"}``."""
    return task_data.write_json(list(predictions), path)


def example(num_records, image_size, seed=0):
    """Synthetic (image, label) records with 3 classes."""
    rng = np.random.default_rng(seed)
    records = [{"image": random_image(rng, image_size), "label": i % 3} for i in range(num_records)]
    return records, {"num_classes": 3, "image_size": tuple(image_size)}


TASK = TaskSpec(
    name="image_classification",
    description="Vision-only classification: mean-pooled patches -> LayerNorm -> Dense; layer-wise lr decay.",
    model_cls=VLBEiTImageClassifier,
    build_model=build_model,
    make_dataset=make_dataset,
    evaluate=evaluate,
    export_predictions=export_predictions,
    record_keys=("image", "label"),
    metric_names=("accuracy", "top5_accuracy"),
    default_config={
        "num_classes": None,
        "image_size": None,
        "layer_decay": 0.65,
        "learning_rate": 1e-3,
        "weight_decay": 0.05,
        "resize_method": DEFAULT_RESIZE_METHOD,
    },
    example=example,
    baseline=baseline,
)
