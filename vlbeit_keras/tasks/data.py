"""Shared pieces of the task data adapters: records -> tf.data model inputs.

Record schema (what the dataset readers yield; one dict per example):

==============  ==========================================================
key             value
==============  ==========================================================
``image``       an image file path (str / PathLike) or an HxWx3 uint8 array
``images``      NLVR2: a pair of the above (left image first)
``text``        the sentence, question or caption (str)
``image_id``    retrieval: hashable id of the image (str or int)
``label``       classification: int class id, or "true"/"false" / bool
``answers``     VQA: list of the annotators' answer strings
``question_id`` VQA: id written to the results file
``identifier``  NLVR / NLVR2: the dataset's example identifier
==============  ==========================================================

A *text preprocessor* maps a batch of strings (tf.string, shape (B,)) to
``{"token_ids": int32 (B, T), "padding_mask": int32 (B, T)}``, usable inside
``tf.data.Dataset.map``; :func:`as_text_preprocessor` builds one from a
keras-hub WordPiece tokenizer. An *image preprocessor* maps one image (a
tf.string path or a uint8 (H0, W0, 3) tensor) to float32 (H, W, 3) in
[-1, 1]; :class:`ImagePreprocessor` is the minimal evaluation transform
(decode, bicubic resize, normalise, MODEL_SPEC §2.1, §9.5). Training
augmentation belongs to the data pipeline (``vlbeit_keras.data``) and plugs
in through the same callable.
"""

import os

import numpy as np
import tensorflow as tf


class RecordError(ValueError):
    """A record is missing a field or has a malformed one (names both)."""


def field(record, key, index, source=None):
    """``record[key]`` or a :class:`RecordError` naming source, record, field."""
    try:
        return record[key]
    except (KeyError, TypeError):
        where = f"{source}, " if source else ""
        raise RecordError(
            f"{where}record {index}: missing field {key!r} "
            f"(record keys: {sorted(record) if isinstance(record, dict) else type(record).__name__})."
        ) from None


def binary_label(value, index, source=None, key="label"):
    """true/false label (bool, 0/1, "true"/"false" any case) -> int 1/0."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)) and int(value) in (0, 1):
        return int(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return int(value.strip().lower() == "true")
    where = f"{source}, " if source else ""
    raise RecordError(f"{where}record {index}: field {key!r} is not true/false: {value!r}.")


def _image_column(values, key, source):
    """Stack an image column: all paths -> tf.string, all arrays -> uint8."""
    first = values[0]
    if isinstance(first, (str, bytes, os.PathLike)):
        out = []
        for i, v in enumerate(values):
            if not isinstance(v, (str, bytes, os.PathLike)):
                raise RecordError(f"{source or 'records'}, record {i}: field {key!r} mixes paths and arrays.")
            out.append(os.fspath(v) if not isinstance(v, bytes) else v.decode())
        return np.array(out, dtype=object)
    arrays = [np.asarray(v) for v in values]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise RecordError(
            f"{source or 'records'}: in-memory images in field {key!r} have different "
            f"shapes {sorted(shapes)[:4]}; pass file paths or resize them first."
        )
    return np.stack(arrays)


def columns_dataset(columns, image_keys=(), source=None):
    """A tf.data dataset of per-record dicts from equal-length columns.

    Args:
        columns: dict name -> list/array (one entry per record).
        image_keys: names of the image columns (paths or uint8 arrays).
        source: optional name of the data source, used in error messages.

    Returns:
        ``tf.data.Dataset`` of dicts (unbatched).
    """
    tensors = {}
    for name, values in columns.items():
        if name in image_keys:
            values = _image_column(list(values), name, source)
        tensors[name] = values if isinstance(values, np.ndarray) else np.asarray(values)
        if tensors[name].dtype == object:
            tensors[name] = tensors[name].astype(str)
    return tf.data.Dataset.from_tensor_slices(tensors)


class ImagePreprocessor:
    """Decode, bicubic-resize and normalise one image (evaluation transform).

    Args:
        image_size: int or (height, width) in pixels (non-square allowed,
            e.g. (96, 400) for NLVR's 400x100 images with a 6x25 grid).
        resize: ``"bicubic"`` (VLMo ``square_transform``), ``"bilinear"``,
            or ``"none"`` (the images must already have ``image_size``).

    Call:
        image: tf.string path or uint8/float (H0, W0, 3) tensor in [0, 255].

    Returns:
        float32 (height, width, 3) = (x / 255 - 0.5) / 0.5.
    """

    def __init__(self, image_size, resize="bicubic"):
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        if resize not in ("bicubic", "bilinear", "none"):
            raise ValueError(f"`resize` must be 'bicubic', 'bilinear' or 'none'; got {resize!r}.")
        self.resize = resize

    def __call__(self, image):
        if image.dtype == tf.string:
            image = tf.io.decode_image(tf.io.read_file(image), channels=3, expand_animations=False)
        image = tf.cast(image, "float32")
        if self.resize != "none":
            image = tf.image.resize(image, self.image_size, method=self.resize, antialias=True)
            image = tf.clip_by_value(image, 0.0, 255.0)
        image = tf.ensure_shape(image, (*self.image_size, 3))
        return (image / 255.0 - 0.5) / 0.5


def as_text_preprocessor(tokenizer, sequence_length):
    """A text preprocessor (strings (B,) -> token_ids / padding_mask (B, T)).

    Args:
        tokenizer: either a callable already returning a dict with
            ``token_ids`` and ``padding_mask`` (used as is), or a keras-hub
            WordPiece-style tokenizer with ``[CLS]``, ``[SEP]`` and ``[PAD]``
            in its vocabulary (``token_to_id``); it is wrapped in a
            ``keras_hub.layers.StartEndPacker`` producing
            ``[CLS] tokens [SEP] [PAD]...`` truncated / padded to T.
        sequence_length: int T (the backbone's ``max_text_length`` for pair
            inputs).

    Returns:
        callable usable in ``tf.data.Dataset.map``.

    Raises:
        ValueError: the tokenizer lacks the special tokens.
    """
    import keras_hub

    if not hasattr(tokenizer, "token_to_id"):
        if not callable(tokenizer):
            raise TypeError(
                "`tokenizer` must be a keras-hub tokenizer or a callable returning "
                f"token_ids/padding_mask; got {type(tokenizer).__name__}."
            )
        return tokenizer  # already a packed-inputs text preprocessor
    try:
        cls_id = tokenizer.token_to_id("[CLS]")
        sep_id = tokenizer.token_to_id("[SEP]")
        pad_id = tokenizer.token_to_id("[PAD]")
    except Exception as e:  # keras-hub raises KeyError / ValueError variants
        raise ValueError(
            "The tokenizer's vocabulary needs [CLS], [SEP] and [PAD] to pack "
            f"VL-BEiT text inputs: {e}"
        ) from None
    packer = keras_hub.layers.StartEndPacker(
        sequence_length=sequence_length,
        start_value=cls_id,
        end_value=sep_id,
        pad_value=pad_id,
        return_padding_mask=True,
    )

    def preprocess(strings):
        token_ids, mask = packer(tokenizer(strings))
        return {
            "token_ids": tf.cast(token_ids, "int32"),
            "padding_mask": tf.cast(mask, "int32"),
        }

    return preprocess


def batch_and_map(
    ds,
    *,
    text_preprocessor,
    image_preprocessor,
    image_keys,
    to_inputs,
    batch_size,
    training=False,
    seed=None,
    shuffle_buffer=None,
    drop_remainder=None,
    num_parallel_calls=tf.data.AUTOTUNE,
):
    """Shared tail of the adapters: shuffle, decode images, batch, tokenize.

    Args:
        ds: dataset of per-record dicts (from :func:`columns_dataset`).
        text_preprocessor: see module docstring (None: no ``text`` column).
        image_preprocessor: one-image callable; applied to every key of
            ``image_keys`` (a pair column (2,) of images is mapped per image).
        image_keys: names of the image columns.
        to_inputs: ``fn(batch_dict) -> (x, y)`` or ``(x, y, sample_weight)``
            or ``x``, run after tokenization; the batch dict holds the
            columns plus ``token_ids`` / ``padding_mask``.
        batch_size: int.
        training: shuffle (seeded) and drop the last partial batch by default.
        seed: int shuffle seed (deterministic order for a given seed).
        shuffle_buffer: default: the whole dataset when its size is known.
        drop_remainder: default ``training``.

    Returns:
        ``tf.data.Dataset`` ready for ``model.fit`` / ``predict``.
    """
    size = int(ds.cardinality().numpy())
    drop = training if drop_remainder is None else drop_remainder
    if drop and 0 <= size < batch_size:
        raise ValueError(
            f"Only {size} records for batch_size={batch_size} with the last partial batch "
            "dropped: the dataset would be empty. Lower the batch size."
        )
    if training:
        buffer = shuffle_buffer or size
        if buffer < 1:
            buffer = 10_000
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)

    def load_images(record):
        record = dict(record)
        for key in image_keys:
            value = record[key]
            if value.shape.rank in (1, 4):  # a pair of paths / of arrays
                record[key] = tf.stack(
                    [image_preprocessor(value[i]) for i in range(value.shape[0])]
                )
            else:
                record[key] = image_preprocessor(value)
        return record

    ds = ds.map(load_images, num_parallel_calls=num_parallel_calls, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=drop)

    def finish(batch):
        batch = dict(batch)
        if text_preprocessor is not None and "text" in batch:
            packed = text_preprocessor(batch["text"])
            batch["token_ids"] = tf.cast(packed["token_ids"], "int32")
            batch["padding_mask"] = tf.cast(packed["padding_mask"], "int32")
        return to_inputs(batch)

    ds = ds.map(finish, num_parallel_calls=num_parallel_calls, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def predict_batches(model_fn, dataset):
    """Run ``model_fn(x)`` over a dataset of x (or (x, ...)) and concatenate.

    Returns:
        NumPy array, or dict of arrays when ``model_fn`` returns a dict.
    """
    outputs = []
    for batch in dataset:
        x = batch[0] if isinstance(batch, tuple) else batch
        x = {k: np.asarray(v) for k, v in x.items()} if isinstance(x, dict) else np.asarray(x)
        out = model_fn(x)
        if isinstance(out, dict):
            outputs.append({k: np.asarray(v) for k, v in out.items()})
        else:
            outputs.append(np.asarray(out))
    if not outputs:
        return np.zeros((0,))
    if isinstance(outputs[0], dict):
        return {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
    return np.concatenate(outputs)
