"""NLVR2: a sentence and a pair of images -> true / false.

VLMo ``objectives.py`` ``compute_nlvr2`` (MODEL_SPEC §9.2): two fused passes
with the same sentence, image 0 with modality-type row 1 and image 1 with a
third modality-type row (initialised by copying row 1); the two pooled
[T_CLS] vectors are concatenated in fixed order (2d) -> Dense(2d -> 2d) ->
LayerNorm(1e-5) -> GELU -> Dense(2d -> 2); softmax cross-entropy.

Input layout: ``images`` float32 (B, 2, H, W, 3), the left image (``img0``)
at index 0. The two passes are two backbone calls (they differ in the
modality row of the image).

Metrics: accuracy over examples and consistency over sentences as
``lil-lab/nlvr`` ``nlvr2/eval/metrics.py`` defines them; predictions CSV
``identifier,True|False``. Records: ``images`` (pair of paths/arrays),
``text``, ``label`` ("True"/"False"/bool), ``identifier``.
"""

import math

import keras
import numpy as np
from keras import ops

from vlbeit_keras.layers.classifier_head import MLPClassifierHead
from vlbeit_keras.metrics.nlvr import nlvr2_metrics
from vlbeit_keras.tasks import data as task_data
from vlbeit_keras.tasks.base import check_inputs
from vlbeit_keras.tasks.base import head_initializer
from vlbeit_keras.tasks.base import DEFAULT_RESIZE_METHOD
from vlbeit_keras.tasks.base import maybe_resize_backbone
from vlbeit_keras.tasks.base import random_image
from vlbeit_keras.tasks.base import random_sentence
from vlbeit_keras.tasks.base import TaskSpec
from vlbeit_keras.tasks.base import VLBEiTTaskModel

SECOND_IMAGE_MODALITY = 2
INPUT_KEYS = ("token_ids", "padding_mask", "images")


@keras.saving.register_keras_serializable(package="vlbeit_keras")
class VLBEiTNLVR2(VLBEiTTaskModel):
    """Sentence + image pair -> 2 logits (VLMo NLVR2).

    Args:
        backbone: ``VLBEiTBackbone`` with ``num_modality_types >= 3``. A
            pretrained 2-row backbone is adapted with
            ``vlbeit_keras.utils.resize.rebuild_backbone(backbone,
            num_modality_types=3)`` (row 2 = copy of row 1), which
            :func:`build_model` does.
        num_classes: 2.
        head_hidden_dim: MLP width (default 2d).
        head_layer_norm_epsilon: 1e-5.

    Inputs (dict): ``token_ids`` int32 (B, T), ``padding_mask`` (B, T),
    ``images`` float32 (B, 2, H, W, 3) (pair axis 1: img0, img1).

    Returns:
        float logits (B, 2); class 1 = "True".

    Default compile: sparse CE from logits, accuracy, AdamW lr 5e-5 (VLMo
    NLVR2 base), wd 0.01.

    Raises:
        ValueError: the backbone has fewer than 3 modality rows.
    """

    def __init__(self, backbone, num_classes=2, head_hidden_dim=None,
                 head_layer_norm_epsilon=1e-5, **kwargs):
        super().__init__(backbone, **kwargs)
        if self.backbone.num_modality_types <= SECOND_IMAGE_MODALITY:
            raise ValueError(
                f"NLVR2 needs a backbone with >= 3 modality-type rows (the second image "
                f"uses row 2); this one has {self.backbone.num_modality_types}. Use "
                "vlbeit_keras.utils.resize.rebuild_backbone(backbone, num_modality_types=3)."
            )
        d = self.backbone.hidden_dim
        self.num_classes = int(num_classes)
        self.head_hidden_dim = int(head_hidden_dim or 2 * d)
        self.head_layer_norm_epsilon = float(head_layer_norm_epsilon)
        self.classifier = MLPClassifierHead(
            self.head_hidden_dim, self.num_classes,
            layer_norm_epsilon=self.head_layer_norm_epsilon,
            kernel_initializer=head_initializer(self.backbone),
            dtype=self.dtype_policy, name="classifier",
        )
        self.classifier.build((None, 2 * d))
        self.built = True

    def call(self, inputs, training=None):
        check_inputs(inputs, INPUT_KEYS, type(self).__name__)
        images = inputs["images"]
        if len(images.shape) != 5 or images.shape[1] != 2:
            raise ValueError(
                f"NLVR2 `images` must have shape (batch, 2, H, W, 3); got {tuple(images.shape)}."
            )
        return self.classifier(ops.concatenate(self.pooled_pair(inputs, training), axis=-1))

    def pooled_pair(self, inputs, training=None):
        """The two fused passes' ``pooled_output`` (B, d) each, [img0, img1]."""
        images = inputs["images"]
        return [
            self.backbone.encode_image_text(
                inputs["token_ids"], inputs["padding_mask"], images[:, k],
                image_modality_type=modality, training=training,
            )["pooled_output"]
            for k, modality in ((0, 1), (1, SECOND_IMAGE_MODALITY))
        ]

    def health_features(self, inputs):
        """``pooled_output_0`` / ``pooled_output_1``: the two passes (B, d)."""
        first, second = self.pooled_pair(inputs)
        return {"pooled_output_0": first, "pooled_output_1": second}

    def chance_losses(self, batch_size=None):
        """``loss``: ln 2."""
        return {"loss": math.log(self.num_classes)}

    def default_loss(self):
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def default_metrics(self):
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]

    def default_optimizer(self):
        from vlbeit_keras.tasks.optimization import finetune_optimizer

        return finetune_optimizer(self, learning_rate=5e-5)

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


def build_model(backbone, image_size=None, head_hidden_dim=None,
                resize_method=DEFAULT_RESIZE_METHOD, **unused):
    """NLVR2 model: backbone resized and given its third modality row, compiled."""
    backbone = maybe_resize_backbone(
        backbone, image_size=image_size, num_modality_types=3, method=resize_method
    )
    model = VLBEiTNLVR2(backbone, head_hidden_dim=head_hidden_dim)
    model.compile()
    return model


def _check_pairs(records, source):
    for i, r in enumerate(records):
        pair = task_data.field(r, "images", i, source)
        if isinstance(pair, (str, bytes)) or len(pair) != 2:
            raise task_data.RecordError(
                f"{source + ', ' if source else ''}record {i}: field 'images' must be a pair "
                f"(img0, img1); got {pair!r:.80}."
            )


def make_dataset(records, *, tokenizer, image_config, text_length, batch_size, training=False,
                 seed=0, start_step=0, report=None, source=None, **unused):
    """Records (``images`` pair, ``text``, ``label``) -> (x, y int32 (B,)).

    ``x["images"]`` is float32 (B, 2, H, W, 3). Common arguments: see
    :mod:`vlbeit_keras.tasks.data`.
    """
    records = task_data.require(records, source)
    task_data.check_text(records, source)
    _check_pairs(records, source)
    labels = np.array(
        [task_data.binary_label(task_data.field(r, "label", i, source), i, source)
         for i, r in enumerate(records)], dtype=np.int32,
    )
    return task_data.image_text_dataset(
        records, tokenizer=tokenizer, image_config=image_config, text_length=text_length,
        batch_size=batch_size, labels=labels, training=training, seed=seed,
        start_step=start_step, report=report, image_key="images",
    )


def evaluate(model, records, *, tokenizer, image_config, batch_size=32, report=None,
             source=None, **config):
    """NLVR2 accuracy and consistency (official definitions).

    Returns:
        (metrics, predictions): ``accuracy``, ``consistency``,
        ``num_examples``, ``num_sentences``; predictions = list of
        ``(identifier, "True"/"False")`` rows.
    """
    records = task_data.require(records, source)
    task_data.check_text(records, source)
    _check_pairs(records, source)
    task_data.check_image_config(model, image_config)
    ds = task_data.image_text_dataset(
        records, tokenizer=tokenizer, image_config=image_config,
        text_length=model.backbone.max_text_length, batch_size=batch_size,
        labels=np.arange(len(records)), training=False, report=report, image_key="images",
    )
    logits = task_data.predict_in_record_order(model.predict_on_batch, ds, len(records), source)
    return score_labels(records, np.asarray(logits).argmax(-1), source=source)


def score_labels(records, predicted, source=None):
    """Score predictions (int (N,), 1 = True) as :func:`evaluate` does."""
    records = task_data.require(records, source)
    predicted = np.asarray(predicted)
    if predicted.shape != (len(records),):
        raise ValueError(f"{predicted.shape} predictions for {len(records)} examples.")
    rows, examples = [], []
    for i, (r, p) in enumerate(zip(records, predicted)):
        identifier = str(task_data.field(r, "identifier", i, source))
        rows.append((identifier, "True" if p == 1 else "False"))
        label = task_data.binary_label(task_data.field(r, "label", i, source), i, source)
        examples.append({"identifier": identifier, "label": bool(label)})
    return nlvr2_metrics(rows, examples), rows


def baseline(train_records, eval_records, **config):
    """Majority baseline: the majority label of ``train_records`` for every
    example of ``eval_records`` (ties: True), scored as :func:`evaluate`.
    Returns the metrics plus ``label``."""
    train_records = task_data.require(train_records, "training records")
    labels = [task_data.binary_label(task_data.field(r, "label", i), i)
              for i, r in enumerate(train_records)]
    label = int(2 * sum(labels) >= len(labels))
    eval_records = task_data.require(eval_records, "evaluation records")
    metrics, _ = score_labels(eval_records, np.full(len(eval_records), label))
    return {**metrics, "label": "True" if label else "False"}


def export_predictions(predictions, path):
    """NLVR2 predictions CSV: one ``identifier,True|False`` line per example."""
    return task_data.write_csv(([identifier, label] for identifier, label in predictions), path)


def example(num_records, image_size, seed=0):
    """Synthetic NLVR2 records: pairs of images, identifiers dev-n-m-k."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(num_records):
        records.append({
            "images": [random_image(rng, image_size), random_image(rng, image_size)],
            "text": random_sentence(rng),
            "label": "True" if i % 2 else "False",
            "identifier": f"dev-{i // 4}-{(i // 2) % 2}-{i % 2}",
        })
    return records, {"image_size": tuple(image_size)}


TASK = TaskSpec(
    name="nlvr2",
    description="NLVR2: sentence + image pair, two fused passes (modality rows 1 and 2) -> MLP -> 2.",
    model_cls=VLBEiTNLVR2,
    build_model=build_model,
    make_dataset=make_dataset,
    evaluate=evaluate,
    export_predictions=export_predictions,
    record_keys=("images", "text", "label", "identifier"),
    metric_names=("accuracy", "consistency", "num_examples", "num_sentences"),
    default_config={"image_size": None, "head_hidden_dim": None,
                    "resize_method": DEFAULT_RESIZE_METHOD},
    example=example,
    baseline=baseline,
    prediction_file="predictions.csv",
)
