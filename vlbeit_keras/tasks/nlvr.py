"""NLVR (v1): one 400x100 three-box image + a sentence -> true / false.

Model: :class:`VLBEiTImageTextClassifier` with 2 classes (the NLVR2 head
with a single fused pass, MODEL_SPEC §9.2). Keep the aspect ratio with a
non-square grid: ``image_size=(96, 400)`` with patch 16 is a 6 x 25 grid
(the 100 px height resized to 96). Class 1 = "true".

Metrics as the dataset defines them (``../shared/data/nlvr1/SOURCE.md``,
``lil-lab/nlvr`` ``nlvr/metrics_images.py``): accuracy over images and
consistency over sentences (:func:`vlbeit_keras.metrics.nlvr.nlvr_metrics`).
Predictions are written in the dataset's own CSV format, one line per PNG:
``dev-12-3-4.png,true``.

Records: one per image: ``image`` (path to ``<split>-n-m-k.png``, or an
array together with ``identifier`` = ``"n-m-k"``), ``text``, ``label``
(``"true"``/``"false"``/bool).
"""

import os

import numpy as np

from vlbeit_keras.metrics.nlvr import nlvr_image_key
from vlbeit_keras.metrics.nlvr import nlvr_metrics
from vlbeit_keras.tasks import data as task_data
from vlbeit_keras.tasks import image_text_classification as itc_task
from vlbeit_keras.tasks.base import DEFAULT_RESIZE_METHOD
from vlbeit_keras.tasks.base import maybe_resize_backbone
from vlbeit_keras.tasks.base import random_image
from vlbeit_keras.tasks.base import random_sentence
from vlbeit_keras.tasks.base import TaskSpec
from vlbeit_keras.tasks.image_text_classification import VLBEiTImageTextClassifier

IMAGES_PER_EXAMPLE = 6


def build_model(backbone, image_size=(96, 400), head_hidden_dim=None,
                resize_method=DEFAULT_RESIZE_METHOD, **unused):
    """Binary image-text classifier, backbone resized to ``image_size``, compiled."""
    backbone = maybe_resize_backbone(
        backbone, image_size=image_size, method=resize_method
    )
    model = VLBEiTImageTextClassifier(backbone, num_classes=2, head_hidden_dim=head_hidden_dim)
    model.compile()
    return model


def per_image_records(records, source=None):
    """One record per PNG: example records with an ``images`` list (the NLVR
    reader's default: the six box orderings) are expanded, each image
    getting ``image_index`` k; per-image records pass through."""
    out = []
    for i, r in enumerate(records):
        if r.get("image") is None and isinstance(r.get("images"), (list, tuple)):
            for k, image in enumerate(r["images"]):
                out.append({**{key: v for key, v in r.items() if key != "images"},
                            "image": image, "image_index": k})
        else:
            task_data.field(r, "image", i, source)
            out.append(r)
    return out


def make_dataset(records, *, tokenizer, image_config, text_length, batch_size, training=False,
                 seed=0, start_step=0, report=None, source=None, **unused):
    """NLVR records (per image, or per example with six ``images``) ->
    (x, y int32 (B,)); y = 1 for "true". Common arguments: see
    :mod:`vlbeit_keras.tasks.data`."""
    return itc_task.make_dataset(
        per_image_records(task_data.require(records, source), source), tokenizer=tokenizer,
        image_config=image_config, text_length=text_length, batch_size=batch_size,
        training=training, seed=seed, start_step=start_step, report=report, num_classes=2,
        source=source,
    )


def image_name(record, index, split="dev"):
    """The PNG file name of a per-image record: the image path's base name,
    or ``<split>-n-m-k.png`` from ``identifier`` (``n-m`` with
    ``image_index`` k, or ``n-m-k``) for in-memory images."""
    image = record.get("image")
    if isinstance(image, (str, os.PathLike)):
        return os.path.basename(os.fspath(image))
    identifier = str(record.get("identifier"))
    if identifier.count("-") == 1 and record.get("image_index") is not None:
        identifier = f"{identifier}-{int(record['image_index'])}"
    if identifier.count("-") != 2:
        raise task_data.RecordError(
            f"record {index}: an in-memory NLVR image needs `identifier` 'n-m' with "
            f"`image_index`, or 'n-m-k', to name its PNG; got {record.get('identifier')!r}."
        )
    return f"{split}-{identifier}.png"


def evaluate(model, records, *, tokenizer, image_config, batch_size=32, report=None,
             images_per_example=IMAGES_PER_EXAMPLE, split="dev", source=None, **config):
    """NLVR accuracy over images and consistency over sentences.

    Returns:
        (metrics, predictions): ``metrics`` = ``accuracy``, ``consistency``,
        ``num_images``, ``num_sentences``; ``predictions`` = list of
        ``(png_file_name, "true"/"false")`` rows, one per image.

    Raises:
        ValueError: an example lacks some of its ``images_per_example``
            images (as the official script, which refuses to score).
    """
    records = per_image_records(task_data.require(records, source), source)
    logits = itc_task.predict_logits(model, records, tokenizer=tokenizer,
                                     image_config=image_config, batch_size=batch_size,
                                     report=report, source=source)
    return score_labels(records, logits.argmax(-1), images_per_example=images_per_example,
                        split=split, source=source)


def score_labels(records, predicted, images_per_example=IMAGES_PER_EXAMPLE, split="dev",
                 source=None):
    """Score per-image predictions as :func:`evaluate` does (no model needed).

    Args:
        records: per-image NLVR records (or examples with six ``images``,
            expanded in the same order as :func:`per_image_records`).
        predicted: int array (N,), 1 = "true", one per image.
        images_per_example, split: as :func:`evaluate`.

    Returns:
        (metrics, predictions) as :func:`evaluate`.
    """
    records = per_image_records(task_data.require(records, source), source)
    predicted = np.asarray(predicted)
    if predicted.shape != (len(records),):
        raise ValueError(f"{predicted.shape} predictions for {len(records)} images.")
    rows, examples = [], {}
    for i, (record, p) in enumerate(zip(records, predicted)):
        name = image_name(record, i, split)
        rows.append((name, "true" if p == 1 else "false"))
        example = "-".join(nlvr_image_key(name).split("-")[:2])
        label = "true" if task_data.binary_label(
            task_data.field(record, "label", i, source), i, source) else "false"
        if examples.setdefault(example, label) != label:
            raise task_data.RecordError(
                f"record {i}: example {example} has images with different labels."
            )
    metrics = nlvr_metrics(
        rows,
        [{"identifier": k, "label": v} for k, v in examples.items()],
        images_per_example=images_per_example,
    )
    return metrics, rows


def majority_label(records, source=None):
    """1 if most images of ``records`` are labelled true, else 0 (ties: true)."""
    records = per_image_records(task_data.require(records, source), source)
    labels = [task_data.binary_label(task_data.field(r, "label", i, source), i, source)
              for i, r in enumerate(records)]
    return int(2 * sum(labels) >= len(labels))


def baseline(train_records, eval_records, images_per_example=IMAGES_PER_EXAMPLE, split="dev",
             **config):
    """Majority baseline: the majority label of the training images for every
    evaluation image (on NLVR ``dev``: every sentence "true", accuracy 0.553),
    scored as :func:`evaluate`. Returns the metrics plus ``label``."""
    label = majority_label(train_records, "training records")
    eval_images = per_image_records(task_data.require(eval_records, "evaluation records"))
    metrics, _ = score_labels(eval_images, np.full(len(eval_images), label),
                              images_per_example=images_per_example, split=split)
    return {**metrics, "label": "true" if label else "false"}


def export_predictions(predictions, path):
    """The dataset's CSV: one ``file_name,true|false`` line per image."""
    return task_data.write_csv(([name, label] for name, label in predictions), path)


def example(num_records, image_size, seed=0):
    """Synthetic NLVR records: whole examples of 6 images (``num_records``
    rounded up to a multiple of 6), two per sentence, labels alternating."""
    rng = np.random.default_rng(seed)
    records = []
    num_examples = max(1, -(-num_records // IMAGES_PER_EXAMPLE))
    for e in range(num_examples):
        n, m = e // 2, e % 2
        text = random_sentence(rng)
        label = "true" if e % 2 else "false"
        for k in range(IMAGES_PER_EXAMPLE):
            records.append({"image": random_image(rng, image_size), "text": text,
                            "label": label, "identifier": f"{n}-{m}-{k}"})
    return records, {"image_size": tuple(image_size)}


TASK = TaskSpec(
    name="nlvr",
    description="NLVR v1: sentence + 400x100 image -> true/false; accuracy over images, consistency over sentences.",
    model_cls=VLBEiTImageTextClassifier,
    build_model=build_model,
    make_dataset=make_dataset,
    evaluate=evaluate,
    export_predictions=export_predictions,
    record_keys=("image", "text", "label", "identifier"),
    metric_names=("accuracy", "consistency", "num_images", "num_sentences"),
    default_config={
        "image_size": (96, 400),
        "head_hidden_dim": None,
        "images_per_example": IMAGES_PER_EXAMPLE,
        "split": "dev",
        "resize_method": DEFAULT_RESIZE_METHOD,
    },
    example=example,
    baseline=baseline,
    prediction_file="predictions.csv",
)
