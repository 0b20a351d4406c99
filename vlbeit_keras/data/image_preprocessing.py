"""Image decoding, resizing, normalisation and augmentation, as tf.data ops.

Everything here runs inside a ``tf.data`` pipeline (TensorFlow ops only, no
Python per image), whatever Keras backend trains the model. Randomness is
*stateless*: every random op takes an explicit ``seed`` (int32/int64 tensor of
shape (2,)), so an element's augmentation depends only on the pipeline seed
and the element's position in the stream. That is what makes the pipelines of
:mod:`vlbeit_keras.data.pipeline` deterministic and resumable.

Normalisation follows MODEL_SPEC §2.1 (VLMo, BEiT): pixels / 255, then
(x - 0.5) / 0.5, i.e. float32 in [-1, 1]. Fine-tuning augmentation follows
MODEL_SPEC §9.5 (VLMo ``square_transform.py``): random resized crop with scale
0.5-1.0 and bicubic resampling, horizontal flip only where the text allows it.
"""

import dataclasses
import re

import tensorflow as tf

RESIZE_MODES = ("squash", "crop", "pad")
FLIP_POLICIES = ("never", "always", "auto")
INTERPOLATIONS = ("bicubic", "bilinear", "area", "nearest", "lanczos3")

_LEFT_RIGHT = re.compile(r"\b(left|right)(most|ward|wards|side|hand)?\b", re.IGNORECASE)


def image_size_pair(value, field="image_size"):
    """``int`` or ``(height, width)`` -> ``(height, width)`` tuple of ints.

    Raises:
        ValueError: ``value`` is neither, or a side is not positive.
    """
    if isinstance(value, int):
        value = (value, value)
    try:
        height, width = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(
            f"`{field}` must be an int or a (height, width) pair; received {value!r}."
        ) from None
    if height <= 0 or width <= 0:
        raise ValueError(f"`{field}` must be positive; received {value!r}.")
    return (height, width)


def mentions_left_or_right(text):
    """True when ``text`` mentions a horizontal direction (left/right).

    Used to disable horizontal flips per record (MODEL_SPEC §9.5): flipping an
    image whose text says "the circle left of the square" makes the label
    wrong. Matches whole words ``left``/``right`` and the forms ``leftmost``,
    ``rightward(s)``, ``left-hand``, ``rightside`` (case-insensitive).

    Args:
        text: str, or a list of str (True if any mentions left/right), or None.
    """
    if text is None:
        return False
    if isinstance(text, (list, tuple)):
        return any(mentions_left_or_right(t) for t in text)
    return bool(_LEFT_RIGHT.search(str(text)))


def allow_flip_for_text(text, flip="auto"):
    """Per-record flip decision for a task-level ``flip`` policy.

    Args:
        text: the record's text (str, list of str, or None).
        flip: ``"never"`` (no flips), ``"always"`` (flip regardless of text) or
            ``"auto"`` (flip unless the text mentions left/right).

    Returns:
        bool.

    Raises:
        ValueError: unknown policy.
    """
    if flip not in FLIP_POLICIES:
        raise ValueError(f"`flip` must be one of {FLIP_POLICIES}; received {flip!r}.")
    if flip == "never":
        return False
    if flip == "always":
        return True
    return not mentions_left_or_right(text)


@dataclasses.dataclass(frozen=True)
class ImagePreprocessingConfig:
    """How images are decoded, resized, augmented and normalised.

    Attributes:
        image_size: int or (height, width) in pixels of the output. Non-square
            sizes are allowed, e.g. ``(96, 400)`` for NLVR's 400x100 images:
            a 6x25 patch grid at patch 16.
        resize_mode: evaluation resize, and the resize of training images when
            ``augment`` is False:
            ``"squash"``: resize to exactly (height, width), ignoring the
            aspect ratio (VLMo's evaluation transform);
            ``"crop"``: keep the aspect ratio, scale so the image covers the
            output, centre crop;
            ``"pad"``: keep the aspect ratio, scale so the image fits, pad the
            borders with black (-1 after normalisation).
        augment: bool, random resized crop (+ flip per ``flip``) for training.
        crop_scale: (min, max) fraction of the source area kept by the random
            crop. 0.5-1.0 for fine-tuning (MODEL_SPEC §9.5); BEiT v2
            pretraining scripts use 0.2-1.0 (``--min_crop_scale 0.2``).
        crop_ratio: (min, max) aspect ratio of the random crop *relative to
            the output aspect ratio* (width/height of the crop divided by
            width/height of ``image_size``); (3/4, 4/3) as torchvision. Relative,
            so that a 400x96 output from 400x100 images gets wide crops.
        flip: ``"never"``, ``"always"`` or ``"auto"`` (flip unless the
            record's text mentions left/right). Only used when ``augment``.
        interpolation: resampling for every resize; ``"bicubic"`` as VLMo.
        antialias: bool, low-pass filter when downscaling (as PIL does).
    """

    image_size: object = 224
    resize_mode: str = "squash"
    augment: bool = False
    crop_scale: tuple = (0.5, 1.0)
    crop_ratio: tuple = (3.0 / 4.0, 4.0 / 3.0)
    flip: str = "auto"
    interpolation: str = "bicubic"
    antialias: bool = True

    def __post_init__(self):
        object.__setattr__(self, "image_size", image_size_pair(self.image_size))
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(
                f"`resize_mode` must be one of {RESIZE_MODES}; received {self.resize_mode!r}."
            )
        if self.flip not in FLIP_POLICIES:
            raise ValueError(f"`flip` must be one of {FLIP_POLICIES}; received {self.flip!r}.")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"`interpolation` must be one of {INTERPOLATIONS}; "
                f"received {self.interpolation!r}."
            )
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(
                f"`crop_scale` must satisfy 0 < min <= max <= 1; received {self.crop_scale!r}."
            )
        lo, hi = self.crop_ratio
        if not 0.0 < lo <= hi:
            raise ValueError(
                f"`crop_ratio` must satisfy 0 < min <= max; received {self.crop_ratio!r}."
            )
        object.__setattr__(self, "crop_scale", (float(self.crop_scale[0]), float(self.crop_scale[1])))
        object.__setattr__(self, "crop_ratio", (float(self.crop_ratio[0]), float(self.crop_ratio[1])))


def decode_image(contents):
    """Decode PNG / JPEG / GIF / BMP bytes to RGB uint8 (h, w, 3).

    Grayscale is replicated to three channels; an alpha channel (RGBA, or
    grayscale + alpha) is composited over a white background, the way an
    image viewer shows it. Animated GIFs keep their first frame.

    Args:
        contents: scalar tf.string, the encoded file.

    Returns:
        uint8 tensor (h, w, 3).

    Raises:
        tf.errors.InvalidArgumentError (at run time): the bytes are not a
        decodable image. :func:`vlbeit_keras.data.pipeline.check_image_sources`
        finds such files before a run starts.
    """
    image = tf.io.decode_image(contents, channels=0, expand_animations=False)
    return to_rgb(image)


def to_rgb(image):
    """uint8 (h, w, c) with c in {1, 2, 3, 4} -> uint8 (h, w, 3).

    1 channel: replicated; 2 (gray + alpha) and 4 (RGBA): alpha-composited
    over white; 3: unchanged.
    """
    image = tf.convert_to_tensor(image)
    channels = tf.shape(image)[-1]

    def composite(color, alpha):
        color = tf.cast(color, tf.float32)
        alpha = tf.cast(alpha, tf.float32) / 255.0
        out = color * alpha + 255.0 * (1.0 - alpha)
        return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)

    def gray():
        return tf.tile(image[..., :1], [1, 1, 3])

    def gray_alpha():
        return composite(tf.tile(image[..., :1], [1, 1, 3]), image[..., 1:2])

    def rgb():
        return image[..., :3]

    def rgba():
        # Most RGBA files (e.g. NLVR's PNGs) are fully opaque: skip the blend.
        alpha = image[..., 3:4]
        return tf.cond(
            tf.reduce_all(tf.equal(alpha, 255)),
            lambda: image[..., :3],
            lambda: composite(image[..., :3], alpha),
        )

    out = tf.switch_case(
        tf.clip_by_value(channels - 1, 0, 3), branch_fns=[gray, gray_alpha, rgb, rgba]
    )
    out.set_shape([None, None, 3])
    return out


def normalize_image(image):
    """Pixel values in [0, 255] -> float32 in [-1, 1]: (x / 255 - 0.5) / 0.5."""
    image = tf.cast(image, tf.float32)
    return (image / 255.0 - 0.5) / 0.5


def _resize(image, size, config):
    image = tf.cast(image, tf.float32)

    def resize(antialias):
        return tf.image.resize(image, size, method=config.interpolation, antialias=antialias)

    if config.antialias:
        # The anti-aliasing filter only matters when downscaling; its kernel is
        # about twice as slow, so use it only then.
        shrinks = tf.reduce_any(tf.shape(image)[:2] > tf.convert_to_tensor(size))
        image = tf.cond(shrinks, lambda: resize(True), lambda: resize(False))
    else:
        image = resize(False)
    # Bicubic and Lanczos overshoot; keep the pixel range.
    return tf.clip_by_value(image, 0.0, 255.0)


def resize_image(image, config):
    """Deterministic resize of an (h, w, 3) image to ``config.image_size``.

    Args:
        image: uint8 or float (h, w, 3), values in [0, 255].
        config: :class:`ImagePreprocessingConfig` (``resize_mode``,
            ``interpolation``, ``antialias``).

    Returns:
        float32 (height, width, 3), values in [0, 255].
    """
    height, width = config.image_size
    if config.resize_mode == "squash":
        out = _resize(image, (height, width), config)
    else:
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scales = tf.stack([height / shape[0], width / shape[1]])
        scale = tf.reduce_max(scales) if config.resize_mode == "crop" else tf.reduce_min(scales)
        new_size = tf.cast(tf.math.round(shape * scale), tf.int32)
        if config.resize_mode == "crop":
            new_size = tf.maximum(new_size, [height, width])
        else:
            new_size = tf.clip_by_value(new_size, 1, [height, width])
        out = _resize(image, new_size, config)
        out = tf.image.resize_with_crop_or_pad(out, height, width)
    out.set_shape([height, width, 3])
    return out


def random_resized_crop(image, config, seed):
    """Random resized crop (torchvision ``RandomResizedCrop`` semantics), stateless.

    Draws a box covering ``config.crop_scale`` of the source area with an
    aspect ratio in ``config.crop_ratio`` times the output aspect ratio
    (``tf.image.stateless_sample_distorted_bounding_box``, 100 attempts;
    falls back to the whole image), crops it and resizes it to
    ``config.image_size``.

    Args:
        image: uint8 (h, w, 3).
        config: :class:`ImagePreprocessingConfig`.
        seed: int32/int64 tensor (2,), the stateless seed.

    Returns:
        float32 (height, width, 3), values in [0, 255].
    """
    height, width = config.image_size
    aspect = width / height
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.zeros([1, 0, 4], tf.float32),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=(config.crop_ratio[0] * aspect, config.crop_ratio[1] * aspect),
        area_range=config.crop_scale,
        max_attempts=100,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, size)
    out = _resize(crop, (height, width), config)
    out.set_shape([height, width, 3])
    return out


def preprocess_image(contents, config, seed=None, allow_flip=True):
    """Decode, resize or augment, and normalise one image.

    Args:
        contents: scalar tf.string, the encoded image file (PNG/JPEG/...).
        config: :class:`ImagePreprocessingConfig`.
        seed: int tensor (2,), required when ``config.augment`` is True.
        allow_flip: bool or scalar bool tensor: the record allows a horizontal
            flip (see :func:`allow_flip_for_text`). Only used when
            ``config.augment`` and ``config.flip != "never"``.

    Returns:
        float32 (height, width, 3) in [-1, 1].

    Raises:
        ValueError: ``config.augment`` without a ``seed``.
    """
    image = decode_image(contents)
    return preprocess_decoded_image(image, config, seed=seed, allow_flip=allow_flip)


def preprocess_decoded_image(image, config, seed=None, allow_flip=True):
    """As :func:`preprocess_image`, on an already decoded uint8 (h, w, 3) image."""
    if not config.augment:
        return normalize_image(resize_image(image, config))
    if seed is None:
        raise ValueError("`seed` is required when `config.augment` is True.")
    seed = tf.cast(seed, tf.int64)
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    out = random_resized_crop(image, config, crop_seed)
    if config.flip != "never":
        flipped = tf.image.stateless_random_flip_left_right(out, flip_seed)
        if config.flip == "always":
            out = flipped
        else:
            out = tf.where(tf.cast(allow_flip, tf.bool), flipped, out)
    return normalize_image(out)
