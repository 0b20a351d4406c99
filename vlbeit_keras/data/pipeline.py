"""tf.data input pipelines: pretraining batches (MLM / MIM / MVLM) and task batches.

All pipelines are built the same way, which makes them deterministic and
resumable:

1. a stream of global element positions ``g = start, start + 1, ...``;
2. ``g`` -> record index through a seeded permutation per epoch
   (``tf.random.experimental.index_shuffle``: a full shuffle, no buffer,
   computed per element), epoch = g // num_records;
3. a parallel ``map`` that loads, decodes, augments and masks the record with
   randomness derived only from ``(seed, stream, g)`` (stateless TF ops; the
   block masks use a NumPy generator seeded with the same triple);
4. ``batch(drop_remainder=True)``; text is then tokenized, packed and masked
   per batch (vectorised WordPiece; the masking seed comes from the batch's
   first position); for pretraining a ``zip`` of the three streams; then
   ``prefetch``.

**Resuming**: pass ``start_step=k``; stream s starts at element
k * batch_size_s. The batches produced are exactly batches k, k+1, ... of an
uninterrupted run with the same seed: same records, same augmentations, same
masks, with no replay of the skipped elements (the position stream simply
starts later). This is "deterministic order by seed + a skip count"; no
tf.data iterator checkpoint is needed, so it works the same whichever Keras
backend iterates the dataset. (Records whose image cannot be decoded are
dropped from the stream, so each one before the resume point shifts the later
batches by one element relative to an uninterrupted run; drop bad files up
front with :func:`check_image_sources` for an exact replay.)

Every pipeline yields nested dicts of tensors that Keras converts to NumPy /
JAX / torch arrays, so ``model.fit(dataset)`` works on all three backends.
When the backend is not TensorFlow, TensorFlow is kept off the GPUs.
"""

import dataclasses
import math
import os
import warnings

import numpy as np
import tensorflow as tf

from vlbeit_keras.data.image_preprocessing import ImagePreprocessingConfig
from vlbeit_keras.data.image_preprocessing import allow_flip_for_text
from vlbeit_keras.data.image_preprocessing import image_size_pair
from vlbeit_keras.data.image_preprocessing import preprocess_image
from vlbeit_keras.data.masking import BlockMaskGenerator
from vlbeit_keras.data.masking import TextMasker

AUTOTUNE = tf.data.AUTOTUNE
STREAMS = ("text", "image", "image_text")
_STREAM_IDS = {"text": 1, "image": 2, "image_text": 3, "task": 4}
_MAX_POSITION = 2**62
IMAGE_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "png",
    b"\xff\xd8\xff": "jpeg",
    b"GIF87a": "gif",
    b"GIF89a": "gif",
    b"BM": "bmp",
}


# ---------------------------------------------------------------------------
# Backend hygiene
# ---------------------------------------------------------------------------


def hide_gpus_from_tensorflow():
    """Keep TensorFlow (used only for tf.data) off the GPUs under JAX / torch.

    Otherwise TF reserves most GPU memory at start-up (keras-core PR #473).
    No-op on the TensorFlow backend, and when TF's runtime is already
    initialised (then it only warns once).
    """
    import keras

    if keras.backend.backend() == "tensorflow":
        return
    try:
        if tf.config.list_physical_devices("GPU"):
            tf.config.set_visible_devices([], "GPU")
    except RuntimeError as error:  # runtime already initialised
        warnings.warn(f"Could not hide GPUs from TensorFlow: {error}", RuntimeWarning, 2)


# ---------------------------------------------------------------------------
# Image sources
# ---------------------------------------------------------------------------


def _image_ref(value, where):
    """A record's image value -> (tf.string value, is_path)."""
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value), True
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), False
    if isinstance(value, np.ndarray):
        from vlbeit_keras.data.demo_corpus import encode_png

        array = value
        if array.dtype != np.uint8:
            raise TypeError(
                f"{where}: in-memory image arrays must be uint8 (h, w[, c]); got {array.dtype}."
            )
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
            raise TypeError(f"{where}: image array of shape {array.shape} is not (h, w[, 3|4]).")
        return encode_png(array), False
    raise TypeError(
        f"{where}: an image must be a file path (str), encoded bytes (PNG/JPEG) or a "
        f"uint8 array; got {type(value).__name__}."
    )


def record_images(record, index, image_key=None):
    """The image value(s) of a record as a list (``image`` or ``images`` key).

    Raises:
        KeyError: the record has neither key (names the record index).
    """
    if image_key is not None:
        keys = (image_key,)
    else:
        keys = ("image", "images")
    for key in keys:
        if key in record and record[key] is not None:
            value = record[key]
            if isinstance(value, (list, tuple)):
                return list(value), key
            return [value], key
    raise KeyError(f"record {index}: no image field ({' or '.join(keys)}); keys: {sorted(record)}")


def _sniff(head):
    for magic, kind in IMAGE_MAGIC.items():
        if head.startswith(magic):
            return kind
    return None


def _check_one(value, mode):
    """None if the image looks fine, else the reason it is skipped."""
    if isinstance(value, np.ndarray):
        return None
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        if not os.path.exists(path):
            return "missing file"
        if os.path.getsize(path) == 0:
            return "zero-byte file"
        with open(path, "rb") as f:
            head = f.read(16)
        source = path
    else:
        head = bytes(value[:16])
        if not head:
            return "empty bytes"
        source = _io_bytes(value)
    if _sniff(head) is None:
        return f"not a PNG/JPEG/GIF/BMP file (starts with {head[:8]!r})"
    if mode == "decode":
        from PIL import Image

        try:
            with Image.open(source) as image:
                image.load()
        except Exception as error:  # PIL raises many types for corrupt data
            return f"undecodable ({type(error).__name__}: {error})"
    return None


def _io_bytes(value):
    import io

    return io.BytesIO(bytes(value))


@dataclasses.dataclass
class ImageCheckReport:
    """Records dropped by :func:`check_image_sources`.

    Attributes:
        checked: int, records checked.
        skipped: list of (record index, image (path or "<bytes>"), reason).
    """

    checked: int = 0
    skipped: list = dataclasses.field(default_factory=list)

    def summary(self):
        """One line, then one line per skipped image (at most 20)."""
        lines = [f"image check: {self.checked} records checked, {len(self.skipped)} skipped"]
        for index, image, reason in self.skipped[:20]:
            lines.append(f"  record {index}: {image}: {reason}")
        if len(self.skipped) > 20:
            lines.append(f"  ... and {len(self.skipped) - 20} more")
        return "\n".join(lines)


def check_image_sources(records, mode="header", strict=False, image_key=None, report=None):
    """Drop records whose image is missing, empty or not an image.

    Runs in Python before the pipeline starts, so a bad file is reported by
    name instead of stopping a run hours later.

    Args:
        records: list of dict records (``image`` or ``images`` field).
        mode: ``"header"`` (exists, non-empty, PNG/JPEG/GIF/BMP signature;
            cheap) or ``"decode"`` (also fully decodes with PIL: finds
            truncated and corrupt files; costs about one decode per image).
        strict: raise instead of skipping.
        image_key: field to read (default ``image`` then ``images``).
        report: optional readers' ``SkipReport`` (anything with its ``skip``
            method): each skip is also reported there (stage ``"check"``,
            source = the record's ``source`` field or ``"record <i>"``), so a
            run prints one summary.

    Returns:
        (kept records, :class:`ImageCheckReport`). Each skip also emits a
        ``UserWarning`` naming the record and the file.

    Raises:
        ValueError: ``strict`` and a record is bad (names record, file, reason).
    """
    if mode not in ("header", "decode"):
        raise ValueError(f"`mode` must be 'header' or 'decode'; received {mode!r}.")
    shared_report = report
    report = ImageCheckReport()
    kept = []
    for index, record in enumerate(records):
        report.checked += 1
        values, key = record_images(record, index, image_key)
        problem = None
        for value in values:
            reason = _check_one(value, mode)
            if reason is not None:
                name = os.fspath(value) if isinstance(value, (str, os.PathLike)) else "<bytes>"
                problem = (index, name, reason)
                break
        if problem is None:
            kept.append(record)
            continue
        message = f"record {problem[0]} field '{key}': {problem[1]}: {problem[2]}"
        if strict:
            raise ValueError(f"Bad image in {message}.")
        warnings.warn(f"Skipping {message}.", UserWarning, stacklevel=2)
        report.skipped.append(problem)
        if shared_report is not None:
            source = record.get("source") or f"record {index}"
            shared_report.skip(source, key, problem[2], problem[1], stage="check")
    return kept, report


def decodable_image_bytes(data):
    """Cheap validity check of encoded image bytes: (ok, reason).

    PNG / GIF / BMP: PIL ``verify()`` (chunk structure and CRCs, no pixel
    decoding); JPEG: start and end-of-image markers (a truncated JPEG has no
    end marker). Catches what the TensorFlow decoder would fail on, so the
    pipeline can skip the record by name instead of stopping.
    """
    data = bytes(data)
    if not data:
        return False, "empty image data"
    kind = _sniff(data[:16])
    if kind is None:
        return False, f"not a PNG/JPEG/GIF/BMP image (starts with {data[:8]!r})"
    if kind == "jpeg":
        if b"\xff\xd9" not in data[-4096:]:
            return False, "truncated JPEG (no end-of-image marker)"
        return True, ""
    from PIL import Image

    try:
        with Image.open(_io_bytes(data)) as image:
            image.verify()
    except Exception as error:  # PIL raises many types for corrupt data
        return False, f"corrupt {kind.upper()} ({type(error).__name__}: {error})"
    return True, ""


def _default_report():
    from vlbeit_keras.data.readers.report import SkipReport

    return SkipReport()


class _ImageTable:
    """Image refs of all records as tensors, plus names for error messages.

    ``values`` (n, k) tf.string (paths or encoded bytes), ``is_path`` (n, k).
    """

    def __init__(self, records, image_key=None, report=None, validate=True):
        values, is_path, counts, names = [], [], set(), []
        for index, record in enumerate(records):
            images, key = record_images(record, index, image_key)
            refs = [_image_ref(v, f"record {index} field '{key}'") for v in images]
            values.append([r[0] for r in refs])
            is_path.append([r[1] for r in refs])
            counts.add(len(refs))
            source = record.get("source") if isinstance(record, dict) else None
            names.append((source or f"record {index}", key, [
                r[0] if r[1] else "<in-memory image>" for r in refs
            ]))
        if len(counts) > 1:
            raise ValueError(
                f"All records must have the same number of images; found counts {sorted(counts)}."
            )
        self.num_images = counts.pop() if counts else 1
        self.values = tf.constant(values, tf.string)
        self.is_path = tf.constant(is_path, tf.bool)
        self.names = names
        self.report = report if report is not None else _default_report()
        self.validate = validate
        self._reported = set()

    def contents(self, index, k=0):
        ref = self.values[index, k]
        return tf.cond(self.is_path[index, k], lambda: tf.io.read_file(ref), lambda: ref)

    def _check(self, data, index, k):
        ok, reason = decodable_image_bytes(data)
        if not ok:
            index, k = int(index), int(k)
            if (index, k) not in self._reported:  # once per image, not once per epoch
                self._reported.add((index, k))
                source, key, files = self.names[index]
                self.report.skip(source, key, "undecodable image", f"{files[k]}: {reason}",
                                 stage="decode")
        return np.bool_(ok)

    def checked_contents(self, index, k=0):
        """(contents, ok): ``ok`` is False (and the skip reported) when undecodable."""
        data = self.contents(index, k)
        if not self.validate:
            return data, tf.constant(True)
        ok = tf.numpy_function(self._check, [data, index, k], tf.bool, stateful=False)
        ok.set_shape([])
        return data, ok


def _guarded_image(table, index, k, image_config, seed, allow_flip):
    """Preprocessed image (H, W, 3) and ok flag; a zero image when not ok."""
    data, ok = table.checked_contents(index, k)
    height, width = image_config.image_size

    def good():
        return preprocess_image(data, image_config, seed=seed, allow_flip=allow_flip)

    def bad():
        return tf.zeros([height, width, 3], tf.float32)

    image = tf.cond(ok, good, bad)
    image.set_shape([height, width, 3])
    return image, ok


@tf.autograph.experimental.do_not_convert
def _ok_flag(element, ok):
    return ok


@tf.autograph.experimental.do_not_convert
def _strip_flag(element, ok):
    return element


def _drop_bad(ds):
    """Keep elements whose ``ok`` flag is True; strip the flag."""
    return ds.filter(_ok_flag).map(_strip_flag)


# ---------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------


def special_token_ids(tokenizer):
    """``{"pad", "unk", "cls", "sep", "mask"}`` ids of a WordPiece tokenizer.

    Reads ``<name>_token_id`` attributes when the tokenizer has them (keras-hub
    ``BertTokenizer``), else ``token_to_id("[PAD]")`` etc.

    Raises:
        ValueError: a special token is missing from the vocabulary.
    """
    out = {}
    for name in ("pad", "unk", "cls", "sep", "mask"):
        value = getattr(tokenizer, f"{name}_token_id", None)
        if value is None:
            try:
                value = tokenizer.token_to_id(f"[{name.upper()}]")
            except Exception:  # keras-hub raises KeyError/ValueError by version
                value = None
        if value is None:
            raise ValueError(f"The tokenizer's vocabulary has no [{name.upper()}] token.")
        out[name] = int(value)
    return out


class TextPacker:
    """Tokenize one string and pack it as ``[CLS] tokens [SEP] [PAD]...`` (tf.data op).

    ``tokenizer(string) -> int ids`` (the project's
    :class:`vlbeit_keras.data.text_tokenizer.VLBEiTTokenizer` or any keras-hub
    tokenizer), then keras-hub's ``StartEndPacker`` owned by this packer (the
    same packing as ``VLBEiTTokenizer.pack``). Over-long texts are truncated,
    keeping [SEP] (MODEL_SPEC §2.2).

    Args:
        tokenizer: the project's ``VLBEiTTokenizer`` (or a keras-hub tokenizer
            with [PAD]/[CLS]/[SEP]/[MASK] in its vocabulary).
        sequence_length: int T.

    Call: tf.string scalar or (B,) -> ``(token_ids, padding_mask)``, int32
    (T,) or (B, T).
    """

    def __init__(self, tokenizer, sequence_length):
        import keras_hub

        self.tokenizer = tokenizer
        self.sequence_length = int(sequence_length)
        self.special = special_token_ids(tokenizer)
        self.packer = keras_hub.layers.StartEndPacker(
            sequence_length=self.sequence_length,
            start_value=self.special["cls"],
            end_value=self.special["sep"],
            pad_value=self.special["pad"],
            return_padding_mask=True,
        )

    def vocabulary_size(self):
        return int(self.tokenizer.vocabulary_size())

    def __call__(self, text):
        text = tf.convert_to_tensor(text)
        ids = self.tokenizer(text)
        if text.shape.rank == 0 and isinstance(ids, tf.RaggedTensor):
            ids = ids.flat_values
        token_ids, mask = self.packer(tf.cast(ids, tf.int32))
        token_ids = tf.cast(token_ids, tf.int32)
        mask = tf.cast(mask, tf.int32)
        shape = [self.sequence_length] if text.shape.rank == 0 else [None, self.sequence_length]
        token_ids.set_shape(shape)
        mask.set_shape(shape)
        return token_ids, mask


def record_text(record, index):
    """``record["text"]`` (or the record itself when it is a str)."""
    if isinstance(record, str):
        return record
    try:
        text = record["text"]
    except (KeyError, TypeError):
        raise KeyError(f"record {index}: no 'text' field") from None
    if not isinstance(text, str):
        raise TypeError(f"record {index} field 'text': expected str, got {type(text).__name__}.")
    return text


# ---------------------------------------------------------------------------
# Position streams and seeds
# ---------------------------------------------------------------------------


def _fold(seed, *values):
    seed = tf.cast(seed, tf.int64)
    for value in values:
        seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(value, tf.int64))
    return seed


def _positions(num_records, seed, stream, start, shuffle, repeat):
    """Dataset of (g, record index) for g = start, start + 1, ..."""
    if num_records <= 0:
        raise ValueError("The record list is empty.")
    stop = _MAX_POSITION if repeat else num_records
    if start > stop:
        raise ValueError(f"start position {start} is past the end ({stop}).")
    n = tf.constant(num_records, tf.int64)
    base = tf.constant([int(seed), _STREAM_IDS[stream]], tf.int64)

    def to_index(g):
        if not shuffle:
            return g, g % n
        epoch_seed = _fold(base, g // n)
        return g, tf.random.experimental.index_shuffle(g % n, epoch_seed, n - 1)

    return tf.data.Dataset.range(start, stop).map(_no_autograph(to_index))


def shard_positions(positions, batch_size, num_shards=1, shard_index=0):
    """This host's share of a position stream: ``batch_size / num_shards`` of every batch.

    Global batch k covers positions ``start + k * batch_size ...``; shard i
    keeps the i-th contiguous slice of ``batch_size / num_shards`` positions
    of every batch (``batch -> shard -> unbatch`` on the cheap position
    stream, before any image is read), so hosts decode disjoint examples and
    together cover exactly the global batch. Multi-host training
    (``vlbeit_keras.distribution.data_shard``) passes the process's shard.

    Args:
        positions: dataset of (g, record index) (see ``_positions``).
        batch_size: int, the *global* batch size of the stream.
        num_shards, shard_index: ints, 0 <= shard_index < num_shards.

    Returns:
        (dataset of (g, index), per-shard batch size).

    Raises:
        ValueError: ``batch_size`` not divisible by ``num_shards`` or a bad index.
    """
    num_shards, shard_index = int(num_shards), int(shard_index)
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(f"Need 0 <= shard_index < num_shards; received {shard_index}, {num_shards}.")
    if batch_size % num_shards:
        raise ValueError(
            f"The global batch size {batch_size} is not divisible by the {num_shards} data "
            "shards (hosts); choose a multiple."
        )
    local = batch_size // num_shards
    if num_shards == 1:
        return positions, local
    return positions.batch(local, drop_remainder=True).shard(num_shards, shard_index).unbatch(), local


def _no_autograph(fn):
    """Element functions are plain TF code: skip AutoGraph (seconds of tracing)."""
    return tf.autograph.experimental.do_not_convert(fn)


def _options(dataset):
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_optimization.map_parallelization = True
    return dataset.with_options(options)


def steps_per_epoch(num_records, batch_size):
    """Full batches per pass over ``num_records`` records (drop_remainder)."""
    return num_records // batch_size


# ---------------------------------------------------------------------------
# Pretraining
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class PretrainingInputConfig:
    """Input of VL-BEiT pretraining: three streams mixed in fixed per-step proportions.

    Each step holds ``text_batch_size`` texts (MLM), ``image_batch_size``
    images (MIM) and ``pair_batch_size`` image-text pairs (MVLM); a stream is
    off when its batch size is 0 or it gets no records (MODEL_SPEC §6.1, §6.4:
    BEiT-3 uses equal parts).

    Attributes:
        image_size: int or (height, width); multiples of ``patch_size``.
        patch_size: int.
        text_length: int, length of text-only inputs (MLM); <= the backbone's
            relative text span L0 (128 for Base, MODEL_SPEC §6.1).
        pair_text_length: int, text length of pairs = ``backbone.max_text_length`` (40).
        text_batch_size, image_batch_size, pair_batch_size: ints (0 = off).
        mlm_probability: float, share of real tokens masked for MLM (0.15).
        mvlm_text_probability: float, share for MVLM text (0.5).
        mask_token_rate, random_token_rate: BERT 80/10/10 (0.8, 0.1).
        text_mask_count_rule: :class:`~vlbeit_keras.data.masking.TextMasker`
            ``count_rule`` (``"stochastic"``: unbiased ratio).
        image_mask_ratio: float, block-mask target K = round(ratio * N) (0.4).
        num_masking_patches: int or None, K directly (BEiT: 75 of 196).
        min_mask_patches_per_block: int or None (None: 16 scaled to the grid).
        image_crop_scale: random-resized-crop scale of the image-only stream
            ((0.2, 1.0): BEiT v2 pretraining scripts).
        pair_crop_scale: crop scale of the pair stream ((0.5, 1.0)).
        image_flip: flip policy of image-only inputs (``"always"``).
        pair_flip: flip policy of pairs (``"auto"``: not when the text says
            left/right).
        interpolation: resampling (``"bicubic"``).
        seed: int, the only source of randomness.
        num_parallel_calls: parallel map calls (``tf.data.AUTOTUNE``).
        prefetch: batches to prefetch (``tf.data.AUTOTUNE``; None = no prefetch).
        skip_decode_errors: last line of defence: drop elements whose image
            still fails in TensorFlow (e.g. a file deleted during the run;
            TensorFlow logs each) instead of stopping the run. Images that fail
            the per-element check (:func:`decodable_image_bytes`) are always
            skipped and reported by name.
    """

    image_size: object = 224
    patch_size: int = 16
    text_length: int = 128
    pair_text_length: int = 40
    text_batch_size: int = 32
    image_batch_size: int = 32
    pair_batch_size: int = 32
    mlm_probability: float = 0.15
    mvlm_text_probability: float = 0.5
    mask_token_rate: float = 0.8
    random_token_rate: float = 0.1
    text_mask_count_rule: str = "stochastic"
    image_mask_ratio: float = 0.4
    num_masking_patches: object = None
    min_mask_patches_per_block: object = None
    image_crop_scale: tuple = (0.2, 1.0)
    pair_crop_scale: tuple = (0.5, 1.0)
    image_flip: str = "always"
    pair_flip: str = "auto"
    interpolation: str = "bicubic"
    seed: int = 0
    num_parallel_calls: int = AUTOTUNE
    prefetch: object = AUTOTUNE
    skip_decode_errors: bool = True

    def __post_init__(self):
        self.image_size = image_size_pair(self.image_size)
        height, width = self.image_size
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"`image_size` {self.image_size} must be a multiple of `patch_size` "
                f"{self.patch_size}."
            )
        for name in ("text_batch_size", "image_batch_size", "pair_batch_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0; received {getattr(self, name)}.")

    @classmethod
    def from_backbone(cls, backbone, **overrides):
        """Sizes taken from a ``VLBEiTBackbone``: image size, patch, text lengths.

        ``text_length`` = min(128, L0) for relative positions (text-only
        inputs may be up to L0 long), ``max_text_length`` for absolute ones.
        """
        if getattr(backbone, "position_mode", "relative") == "relative":
            text_length = min(128, int(backbone.relative_text_length))
        else:
            text_length = int(backbone.max_text_length)
        values = dict(
            image_size=tuple(backbone.image_size),
            patch_size=int(backbone.patch_size),
            text_length=text_length,
            pair_text_length=int(backbone.max_text_length),
        )
        values.update(overrides)
        return cls(**values)

    @property
    def grid_size(self):
        return (self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size)

    @property
    def num_patches(self):
        return self.grid_size[0] * self.grid_size[1]

    def block_mask_generator(self):
        """The :class:`BlockMaskGenerator` of the image and pair streams."""
        return BlockMaskGenerator(
            self.grid_size,
            num_masking_patches=self.num_masking_patches,
            mask_ratio=self.image_mask_ratio,
            min_num_patches=self.min_mask_patches_per_block,
        )

    def text_masker(self, vocabulary_size, special, rate, length):
        return TextMasker(
            vocabulary_size=vocabulary_size,
            mask_selection_rate=rate,
            mask_token_id=special["mask"],
            mask_selection_length=int(math.ceil(rate * length)),
            unselectable_token_ids=sorted({special["pad"], special["cls"], special["sep"]}),
            mask_token_rate=self.mask_token_rate,
            random_token_rate=self.random_token_rate,
            count_rule=self.text_mask_count_rule,
        )

    def image_config(self, stream):
        return ImagePreprocessingConfig(
            image_size=self.image_size,
            augment=True,
            crop_scale=self.image_crop_scale if stream == "image" else self.pair_crop_scale,
            flip=self.image_flip if stream == "image" else self.pair_flip,
            interpolation=self.interpolation,
        )


_TEXT = "_text"
_POSITION = "_position"


def _batch_text_fields(batch, packer, masker, base_seed):
    """Batched strings -> packed, masked text fields; seed from the batch position."""
    batch = dict(batch)
    texts = batch.pop(_TEXT)
    positions = batch.pop(_POSITION)
    token_ids, padding_mask = packer(texts)
    masked = masker(token_ids, _fold(base_seed, positions[0]))
    fields = {
        "token_ids": masked["token_ids"],
        "padding_mask": padding_mask,
        "text_mask_positions": masked["mask_positions"],
        "text_mask_ids": masked["mask_ids"],
        "text_mask_weights": masked["mask_weights"],
    }
    for value in fields.values():  # keep the static batch size of drop_remainder
        value.set_shape([positions.shape[0], value.shape[1]])
    batch.update(fields)
    return batch


def _single_image_table(records, report, stream):
    table = _ImageTable(records, report=report)
    if table.num_images != 1:
        raise ValueError(
            f"The {stream} pretraining stream takes one image per record; these records have "
            f"{table.num_images} ('images' lists). Make one record per image "
            "(e.g. read_nlvr(..., per_image=True))."
        )
    return table


def _image_fields(table, index, image_config, mask_gen, seed, numpy_seed, allow_flip):
    image, ok = _guarded_image(table, index, 0, image_config, seed, allow_flip)
    out = {"images": image}
    out.update(mask_gen.tf_sample(numpy_seed))
    return out, ok


def _texts_tensor(records):
    return tf.constant([record_text(r, i) for i, r in enumerate(records)], tf.string)


def _flip_tensor(records, policy):
    texts = [None if isinstance(r, str) else r.get("text") for r in records]
    return tf.constant([allow_flip_for_text(t, policy) for t in texts], tf.bool)


def make_pretraining_dataset(
    config,
    tokenizer=None,
    *,
    text_records=None,
    image_records=None,
    pair_records=None,
    start_step=0,
    report=None,
    num_shards=1,
    shard_index=0,
):
    """The infinite pretraining dataset: one dict per step (see the layout below).

    Args:
        config: :class:`PretrainingInputConfig`.
        tokenizer: keras-hub-style WordPiece tokenizer (needed by the text and
            pair streams); special ids are read with :func:`special_token_ids`.
        text_records: list of str or ``{"text"}`` dicts (MLM stream).
        image_records: list of ``{"image"}`` dicts: path, PNG/JPEG bytes or
            uint8 array (MIM stream).
        pair_records: list of ``{"image", "text"}`` dicts (MVLM stream).
        start_step: int, resume at this step (see the module docstring).
        report: where undecodable images are reported: an object with the
            readers' ``SkipReport.skip(source, field, reason, detail,
            stage=...)`` method (e.g. the report the readers filled, so one
            summary covers the run); default: a new ``SkipReport`` (counted
            ``DataSkipWarning``s). Each bad image is reported once (stage
            ``"decode"``), names its file, and its record is left out of every
            batch.
        num_shards, shard_index: multi-host input sharding: this host builds
            only its slice of every global batch (batch sizes in ``config``
            are global and must divide by ``num_shards``; see
            :func:`shard_positions`). Records, image augmentations and patch
            masks are seeded per global position, so the hosts' slices
            together equal the single-host batch; text masks are drawn per
            slice (seeded by the slice's first position), so they differ from
            a single-host run's draws but stay deterministic and resumable.

    Returns:
        ``tf.data.Dataset`` of dicts, for each enabled stream (Bt, Bi, Bp the
        batch sizes, Tt = ``text_length``, T = ``pair_text_length``, N =
        patches, Pt = ceil(0.15 Tt), Pp = ceil(0.5 T), Pi = K)::

            {"text":       {"token_ids": int32 (Bt, Tt), "padding_mask": int32 (Bt, Tt),
                            "text_mask_positions": int32 (Bt, Pt),
                            "text_mask_ids": int32 (Bt, Pt),
                            "text_mask_weights": float32 (Bt, Pt)},
             "image":      {"images": float32 (Bi, H, W, 3), "patch_mask": bool (Bi, N),
                            "image_mask_positions": int32 (Bi, Pi),
                            "image_mask_weights": float32 (Bi, Pi)},
             "image_text": {"token_ids", "padding_mask", "text_mask_positions",
                            "text_mask_ids", "text_mask_weights"   (length T, Pp),
                            "images", "patch_mask", "image_mask_positions",
                            "image_mask_weights"}}

        ``token_ids`` are already corrupted (80/10/10); ``text_mask_ids``
        hold the original ids (MLM targets). ``images`` are the *unmasked*
        normalised images in [-1, 1] (the model swaps masked patch embeddings
        for its [MASK] vector using ``patch_mask``, and tokenizes the unmasked
        image for MIM targets). Positions index patches 0..N-1 (no [I_CLS])
        and text tokens 0..T-1 ([CLS] at 0 is never masked).

    Raises:
        ValueError: no stream enabled; a stream without its tokenizer; sizes
            inconsistent.
    """
    hide_gpus_from_tensorflow()
    seed = int(config.seed)
    streams = {}
    need_text = (text_records and config.text_batch_size) or (
        pair_records and config.pair_batch_size
    )
    if need_text and tokenizer is None:
        raise ValueError("The text and image_text streams need a `tokenizer`.")
    if need_text:
        special = special_token_ids(tokenizer)
        vocab = int(tokenizer.vocabulary_size())
    mask_gen = config.block_mask_generator()

    # Text is tokenized, packed and masked per *batch* (vectorised WordPiece
    # is several times faster than per element); its seed comes from the
    # batch's first stream position, so resuming at a step boundary replays
    # the same masks.
    if text_records and config.text_batch_size:
        packer = TextPacker(tokenizer, config.text_length)
        masker = config.text_masker(vocab, special, config.mlm_probability, config.text_length)
        texts = _texts_tensor(text_records)

        def text_element(g, index):
            return {_TEXT: texts[index], _POSITION: g}, tf.constant(True)

        def text_batch(batch):
            return _batch_text_fields(batch, packer, masker, [seed, _STREAM_IDS["text"]])

        streams["text"] = (text_element, text_batch, len(text_records), config.text_batch_size)

    if image_records and config.image_batch_size:
        table = _single_image_table(image_records, report, "image")
        image_config = config.image_config("image")

        def image_element(g, index):
            element_seed = _fold([seed, _STREAM_IDS["image"]], g)
            numpy_seed = tf.stack([tf.constant(seed, tf.int64), _STREAM_IDS["image"], g])
            return _image_fields(table, index, image_config, mask_gen, element_seed,
                                 numpy_seed, True)

        streams["image"] = (image_element, None, len(image_records), config.image_batch_size)

    if pair_records and config.pair_batch_size:
        pair_table = _single_image_table(pair_records, report, "image_text")
        pair_config = config.image_config("image_text")
        pair_packer = TextPacker(tokenizer, config.pair_text_length)
        pair_masker = config.text_masker(
            vocab, special, config.mvlm_text_probability, config.pair_text_length
        )
        pair_texts = _texts_tensor(pair_records)
        pair_flips = _flip_tensor(pair_records, config.pair_flip)

        def pair_element(g, index):
            element_seed = _fold([seed, _STREAM_IDS["image_text"]], g)
            numpy_seed = tf.stack([tf.constant(seed, tf.int64), _STREAM_IDS["image_text"], g])
            out, ok = _image_fields(pair_table, index, pair_config, mask_gen, element_seed,
                                    numpy_seed, pair_flips[index])
            out[_TEXT] = pair_texts[index]
            out[_POSITION] = g
            return out, ok

        def pair_batch(batch):
            return _batch_text_fields(batch, pair_packer, pair_masker,
                                      [seed, _STREAM_IDS["image_text"]])

        streams["image_text"] = (pair_element, pair_batch, len(pair_records),
                                 config.pair_batch_size)

    if not streams:
        raise ValueError(
            "No pretraining stream is enabled: give text_records, image_records or "
            "pair_records with a positive batch size."
        )
    datasets = {}
    for name, (fn, batch_fn, num_records, batch_size) in streams.items():
        ds = _positions(num_records, seed, name, int(start_step) * batch_size, True, True)
        ds, batch_size = shard_positions(ds, batch_size, num_shards, shard_index)
        ds = ds.map(_no_autograph(fn), num_parallel_calls=config.num_parallel_calls,
                    deterministic=True)
        if name != "text":
            ds = _drop_bad(ds)
            if config.skip_decode_errors:
                ds = ds.ignore_errors(log_warning=True)
        else:
            ds = ds.map(_strip_flag)
        ds = ds.batch(batch_size, drop_remainder=True)
        if batch_fn is not None:
            ds = ds.map(_no_autograph(batch_fn), num_parallel_calls=config.num_parallel_calls,
                        deterministic=True)
        datasets[name] = ds
    ds = tf.data.Dataset.zip(datasets)
    if config.prefetch is not None:
        ds = ds.prefetch(config.prefetch)
    return _options(ds)


# ---------------------------------------------------------------------------
# Task pipelines (fine-tuning and evaluation)
# ---------------------------------------------------------------------------


def _labels_tensor(records, labels, label_key):
    if labels is None and label_key is None:
        return None
    if labels is None:
        labels = [r[label_key] for r in records]
    array = np.asarray(labels)
    if len(array) != len(records):
        raise ValueError(f"{len(array)} labels for {len(records)} records.")
    return tf.constant(array)


def make_image_text_dataset(
    records,
    tokenizer,
    *,
    text_length,
    image_config,
    batch_size,
    labels=None,
    label_key=None,
    training=True,
    seed=0,
    start_step=0,
    image_key=None,
    report=None,
    num_parallel_calls=AUTOTUNE,
    prefetch=AUTOTUNE,
    skip_decode_errors=None,
    num_shards=1,
    shard_index=0,
):
    """Batches of image-text pairs for fine-tuning / evaluation (VQA, NLVR, ITM...).

    Args:
        records: list of dicts with ``text`` and ``image`` (one image: path,
            bytes or uint8 array) or ``images`` (a list of the same length in
            every record, e.g. NLVR2's two images).
        tokenizer: keras-hub-style WordPiece tokenizer.
        text_length: int T (= ``backbone.max_text_length``).
        image_config: :class:`ImagePreprocessingConfig` (image size,
            augmentation, flip policy; flips are decided per record from its
            text with ``image_config.flip``).
        batch_size: int.
        labels: optional array-like (num_records, ...) aligned with records,
            e.g. class ids or VQA soft-score vectors.
        label_key: alternatively, the record field holding the label.
        training: True: shuffled per epoch, infinite (use ``steps_per_epoch``),
            full batches only, augmentation as configured. False: record order,
            one pass, last batch may be smaller, no augmentation.
        seed: int.
        start_step: int, resume position (training).
        image_key: image field (default ``image`` then ``images``).
        report: skip reporter for undecodable images (see
            :func:`make_pretraining_dataset`). Their records are left out,
            also in evaluation: compare the report's count when scoring.
        num_parallel_calls, prefetch: tf.data settings.
        skip_decode_errors: also drop elements that fail later inside
            TensorFlow (TF logs each) instead of raising; default: True when
            training, False for evaluation.
        num_shards, shard_index: multi-host training: this host reads only
            its slice of every global batch (``batch_size`` is global; see
            :func:`shard_positions`). Ignored for evaluation.

    Returns:
        ``tf.data.Dataset`` of ``x`` or ``(x, y)``; ``x`` = ``{"token_ids":
        int32 (B, T), "padding_mask": int32 (B, T), "images": float32 (B, H, W,
        3)}`` or ``(B, k, H, W, 3)`` for records with an ``images`` list of k;
        ``y`` = labels (B, ...).
    """
    hide_gpus_from_tensorflow()
    if not training and image_config.augment:
        image_config = dataclasses.replace(image_config, augment=False)
    table = _ImageTable(records, image_key, report=report)
    multi = _is_multi(records, image_key)
    packer = TextPacker(tokenizer, text_length)
    texts = _texts_tensor(records)
    flips = _flip_tensor(records, image_config.flip)
    label_tensor = _labels_tensor(records, labels, label_key)

    def element(g, index):
        x = {_TEXT: texts[index]}
        x["images"], ok = _task_images(table, index, multi, image_config, seed, g, flips[index])
        return (x if label_tensor is None else (x, label_tensor[index])), ok

    return _task_dataset(records, element, batch_size, training, seed, start_step,
                         num_parallel_calls, prefetch, skip_decode_errors,
                         batch_fn=_pack_batch(packer), num_shards=num_shards,
                         shard_index=shard_index)


def _is_multi(records, image_key):
    if image_key == "image":
        return False
    first = records[0] if records else {}
    key = image_key or ("image" if first.get("image") is not None else "images")
    return isinstance(first.get(key), (list, tuple))


def _task_images(table, index, multi, image_config, seed, g, allow_flip):
    element_seed = _fold([seed, _STREAM_IDS["task"]], g)
    images, oks = [], []
    for k in range(table.num_images):
        image_seed = _fold(element_seed, k) if image_config.augment else None
        image, ok = _guarded_image(table, index, k, image_config, image_seed, allow_flip)
        images.append(image)
        oks.append(ok)
    ok = tf.reduce_all(tf.stack(oks))
    return (tf.stack(images) if multi else images[0]), ok


def _pack_batch(packer):
    """Batch map: ``x["_text"]`` (B,) strings -> ``token_ids``, ``padding_mask`` (B, T)."""

    def pack(x, *rest):
        x = dict(x)
        texts = x.pop(_TEXT)
        x["token_ids"], x["padding_mask"] = packer(texts)
        for key in ("token_ids", "padding_mask"):
            x[key].set_shape([texts.shape[0], packer.sequence_length])
        x = {k: x[k] for k in ("token_ids", "padding_mask", *sorted(set(x) - {
            "token_ids", "padding_mask"}))}
        return (x, *rest) if rest else x

    return pack


def _task_dataset(records, element, batch_size, training, seed, start_step,
                  num_parallel_calls, prefetch, skip_decode_errors=None, batch_fn=None,
                  num_shards=1, shard_index=0):
    start = int(start_step) * batch_size if training else 0
    ds = _positions(len(records), seed, "task", start, shuffle=training, repeat=training)
    if training:  # evaluation reads the whole set on every host
        ds, batch_size = shard_positions(ds, batch_size, num_shards, shard_index)
    ds = ds.map(_no_autograph(element), num_parallel_calls=num_parallel_calls,
                deterministic=True)
    ds = _drop_bad(ds)
    if training if skip_decode_errors is None else skip_decode_errors:
        ds = ds.ignore_errors(log_warning=True)
    ds = ds.batch(batch_size, drop_remainder=training)
    if batch_fn is not None:
        ds = ds.map(_no_autograph(batch_fn), num_parallel_calls=num_parallel_calls,
                    deterministic=True)
    if prefetch is not None:
        ds = ds.prefetch(prefetch)
    return _options(ds)


def make_image_dataset(
    records,
    *,
    image_config,
    batch_size,
    labels=None,
    label_key=None,
    training=False,
    seed=0,
    start_step=0,
    image_key=None,
    report=None,
    num_parallel_calls=AUTOTUNE,
    prefetch=AUTOTUNE,
    skip_decode_errors=None,
    num_shards=1,
    shard_index=0,
):
    """Batches of images: ``{"images": float32 (B, H, W, 3)}`` (+ labels).

    Same options as :func:`make_image_text_dataset` (no text). For image
    classification, retrieval galleries and visual-tokenizer training.
    """
    hide_gpus_from_tensorflow()
    if not training and image_config.augment:
        image_config = dataclasses.replace(image_config, augment=False)
    table = _ImageTable(records, image_key, report=report)
    multi = _is_multi(records, image_key)
    flips = _flip_tensor(records, image_config.flip)
    label_tensor = _labels_tensor(records, labels, label_key)

    def element(g, index):
        images, ok = _task_images(table, index, multi, image_config, seed, g, flips[index])
        x = {"images": images}
        return (x if label_tensor is None else (x, label_tensor[index])), ok

    return _task_dataset(records, element, batch_size, training, seed, start_step,
                         num_parallel_calls, prefetch, skip_decode_errors,
                         num_shards=num_shards, shard_index=shard_index)


def make_text_dataset(
    records,
    tokenizer,
    *,
    text_length,
    batch_size,
    labels=None,
    label_key=None,
    training=False,
    seed=0,
    start_step=0,
    num_parallel_calls=AUTOTUNE,
    prefetch=AUTOTUNE,
    num_shards=1,
    shard_index=0,
):
    """Batches of texts: ``{"token_ids": int32 (B, T), "padding_mask": int32 (B, T)}``.

    ``records``: list of str or ``{"text"}`` dicts (retrieval queries, text
    classification). Options as :func:`make_image_text_dataset`.
    """
    hide_gpus_from_tensorflow()
    packer = TextPacker(tokenizer, text_length)
    texts = _texts_tensor(records)
    label_tensor = _labels_tensor(records, labels, label_key)

    def element(g, index):
        x = {_TEXT: texts[index]}
        return (x if label_tensor is None else (x, label_tensor[index])), tf.constant(True)

    return _task_dataset(records, element, batch_size, training, seed, start_step,
                         num_parallel_calls, prefetch, skip_decode_errors=False,
                         batch_fn=_pack_batch(packer), num_shards=num_shards,
                         shard_index=shard_index)
