"""Shared pieces of the task data adapters (records -> tf.data model inputs).

The adapters build on the project's input pipeline
(:mod:`vlbeit_keras.data.pipeline`: ``make_image_text_dataset``,
``make_image_dataset``, ``make_text_dataset``), so fine-tuning gets its image
decoding, augmentation with the per-record flip policy, bad-image handling,
deterministic shuffling and resumption (``start_step``).

Record schema: the readers' (``docs/data.md``), one dict per example:

==============  ==========================================================
key             value
==============  ==========================================================
``image``       image path, encoded bytes or HxWx3 uint8 array
``images``      NLVR2: a pair (img0, img1); NLVR v1 reader: the six images
``text``        the sentence, question or caption
``image_id``    retrieval: id of the image (str or int)
``label``       bool (NLVR/NLVR2) or int class id
``answers``     VQA: list of the annotators' answers
``question_id`` VQA: id written to the results file
``identifier``  NLVR / NLVR2: the dataset's example identifier
==============  ==========================================================

Adapter arguments common to every task: ``tokenizer`` (the project's
``VLBEiTTokenizer`` or a keras-hub WordPiece tokenizer with [PAD], [UNK],
[CLS], [SEP], [MASK]), ``image_config``
(:class:`vlbeit_keras.data.image_preprocessing.ImagePreprocessingConfig`; its
``image_size`` must be the model's), ``text_length`` (the backbone's
``max_text_length``), ``batch_size``, ``training``, ``seed``, ``start_step``
and ``report`` (a readers' ``SkipReport`` collecting undecodable images).
Training datasets are infinite (pass ``steps_per_epoch`` to ``fit``, e.g.
``vlbeit_keras.data.pipeline.steps_per_epoch(len(records), batch_size)``).
"""

import csv
import json
import os

import numpy as np

from vlbeit_keras.data import pipeline


class RecordError(ValueError):
    """A record is missing a field or has a malformed one (names both)."""


def _where(index, source=None, record=None):
    origin = record.get("source") if isinstance(record, dict) else None
    parts = [p for p in (source, origin) if p]
    return (", ".join(parts) + ", " if parts else "") + f"record {index}"


def field(record, key, index, source=None):
    """``record[key]`` or a :class:`RecordError` naming source, record, field."""
    try:
        return record[key]
    except (KeyError, TypeError):
        keys = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise RecordError(
            f"{_where(index, source, record)}: missing field {key!r} (record keys: {keys})."
        ) from None


def binary_label(value, index, source=None, key="label"):
    """true/false label (bool, 0/1, "true"/"false" any case) -> int 1/0."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)) and int(value) in (0, 1):
        return int(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return int(value.strip().lower() == "true")
    raise RecordError(f"{_where(index, source)}: field {key!r} is not true/false: {value!r}.")


def require(records, source=None):
    """``records`` as a list; a clear error when there are none."""
    records = list(records)
    if not records:
        raise ValueError(f"No records to build a dataset from ({source or 'records'}).")
    return records


def check_text(records, source=None):
    """Every record has a string ``text`` (raises naming the record)."""
    for i, r in enumerate(records):
        text = field(r, "text", i, source)
        if not isinstance(text, str):
            raise RecordError(f"{_where(i, source, r)}: field 'text' must be a str; got {text!r:.60}.")


def check_image_config(model, image_config):
    """The pipeline's output size must be the model's image size."""
    size = tuple(image_config.image_size)
    if size != tuple(model.backbone.image_size):
        raise ValueError(
            f"image_config.image_size={size} but the model's backbone takes "
            f"{tuple(model.backbone.image_size)} images; use the model's size."
        )


def image_text_dataset(records, *, tokenizer, image_config, text_length, batch_size, labels=None,
                       training=False, seed=0, start_step=0, report=None, image_key=None):
    """``pipeline.make_image_text_dataset`` with the adapters' arguments."""
    return pipeline.make_image_text_dataset(
        records, tokenizer, text_length=text_length, image_config=image_config,
        batch_size=batch_size, labels=labels, training=training, seed=seed,
        start_step=start_step, report=report, image_key=image_key,
    )


def predict_in_record_order(predict_fn, dataset, num_records, source=None):
    """Run ``predict_fn`` over a dataset of ``(x, record_index)`` batches.

    Evaluation datasets carry each record's index as their label, so outputs
    are placed by index, not by position: the pipeline leaves out records
    whose image does not decode, and an evaluation must not score the wrong
    records or lose any silently.

    Args:
        predict_fn: ``fn(x dict of NumPy arrays) -> array or dict of arrays``
            (e.g. ``model.predict_on_batch``).
        dataset: batches of ``(x, index)``.
        num_records: expected number of records.

    Returns:
        array (num_records, ...) or dict of such arrays.

    Raises:
        ValueError: some records produced no output (names up to 10 indices);
            run ``vlbeit_keras.data.pipeline.check_image_sources`` first to
            drop unreadable images explicitly.
    """
    chunks, indices = [], []
    for x, index in dataset:
        out = predict_fn({k: np.asarray(v) for k, v in x.items()})
        chunks.append(out)
        indices.append(np.asarray(index))
    indices = np.concatenate(indices) if indices else np.zeros((0,), np.int64)
    missing = np.setdiff1d(np.arange(num_records), indices)
    if missing.size:
        raise ValueError(
            f"{missing.size} of {num_records} records were left out of the evaluation "
            f"({source or 'records'}; undecodable images?), e.g. record indices "
            f"{missing[:10].tolist()}. Drop them first with "
            "vlbeit_keras.data.pipeline.check_image_sources(records, mode='decode')."
        )

    def place(parts):
        parts = [np.asarray(p) for p in parts]
        out = np.empty((num_records,) + parts[0].shape[1:], dtype=parts[0].dtype)
        out[indices] = np.concatenate(parts)
        return out

    if isinstance(chunks[0], dict):
        return {k: place([c[k] for c in chunks]) for k in chunks[0]}
    return place(chunks)


def _write_atomically(path, write):
    """Write through ``<path>.tmp`` then rename: an interrupted export never
    leaves a half-written predictions file in place of a previous one."""
    path = os.fspath(path)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        write(f)
    os.replace(tmp, path)
    return path


def write_json(value, path):
    """Write ``value`` (JSON-serialisable: lists, dicts, str, int, float) to
    ``path`` atomically; returns ``path``. The predictions writer of the JSON
    tasks (VQA results, retrieval rankings, classification outputs)."""
    return _write_atomically(path, lambda f: json.dump(value, f))


def write_csv(rows, path):
    """Write ``rows`` (sequences of cells) as CSV lines ending in ``\\n``, no
    header, atomically; returns ``path``. The NLVR / NLVR2 predictions format."""
    def write(f):
        csv.writer(f, lineterminator="\n").writerows(rows)
    return _write_atomically(path, write)
