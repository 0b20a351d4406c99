"""Decoding, resizing, normalisation and augmentation (tf.data ops)."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from vlbeit_keras.data.image_preprocessing import ImagePreprocessingConfig
from vlbeit_keras.data.image_preprocessing import allow_flip_for_text
from vlbeit_keras.data.image_preprocessing import decode_image
from vlbeit_keras.data.image_preprocessing import mentions_left_or_right
from vlbeit_keras.data.image_preprocessing import normalize_image
from vlbeit_keras.data.image_preprocessing import preprocess_image
from vlbeit_keras.data.image_preprocessing import resize_image


def _encode(array, fmt="PNG", mode=None):
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format=fmt)
    return buffer.getvalue()


def test_decode_formats_to_rgb(rng):
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert np.array_equal(decode_image(_encode(rgb)).numpy(), rgb)
    gray = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    out = decode_image(_encode(gray)).numpy()
    assert out.shape == (5, 7, 3) and np.array_equal(out[..., 1], gray)
    jpeg = decode_image(_encode(rgb, "JPEG")).numpy()
    assert jpeg.shape == (5, 7, 3)
    gif = decode_image(_encode(rgb, "GIF")).numpy()
    assert gif.shape == (5, 7, 3)


def test_rgba_and_gray_alpha_composite_over_white():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[0, 0, 3] = 255  # opaque red
    rgba[0, 1, 3] = 0  # transparent -> white
    rgba[1, :, 3] = 128  # half
    out = decode_image(_encode(rgba)).numpy().astype(int)
    assert list(out[0, 0]) == [200, 0, 0]
    assert list(out[0, 1]) == [255, 255, 255]
    assert abs(out[1, 0, 0] - round(200 * 128 / 255 + 255 * 127 / 255)) <= 1
    assert abs(out[1, 0, 1] - round(255 * 127 / 255)) <= 1
    la = np.stack([np.full((2, 2), 10, np.uint8), np.full((2, 2), 0, np.uint8)], -1)
    out = decode_image(_encode(la, mode="LA")).numpy()
    assert np.all(out == 255)


def test_normalisation_range():
    x = tf.constant([0.0, 127.5, 255.0])
    assert np.allclose(normalize_image(x).numpy(), [-1.0, 0.0, 1.0])
    assert normalize_image(tf.constant([255], tf.uint8)).dtype == tf.float32


@pytest.mark.parametrize("mode", ["squash", "crop", "pad"])
def test_resize_modes_non_square(mode):
    image = np.full((100, 400, 3), 200, np.uint8)
    image[:, :200] = 0  # left half black
    config = ImagePreprocessingConfig(image_size=(96, 400), resize_mode=mode)
    out = resize_image(image, config).numpy()
    assert out.shape == (96, 400, 3)
    assert out.min() >= 0 and out.max() <= 255
    assert out[48, 100, 0] < 5 and out[48, 300, 0] > 195
    if mode == "pad":  # 400x100 fits 384x96: 8 px borders of black
        assert np.all(out[:, :4] == 0) and out[48, 396, 0] == 0


def test_crop_mode_keeps_aspect():
    # A centred 20x20 square in a 100x400 image stays square after "crop".
    image = np.zeros((100, 400, 3), np.uint8)
    image[40:60, 190:210] = 255
    out = resize_image(image, ImagePreprocessingConfig(image_size=(48, 48), resize_mode="crop"))
    rows = np.flatnonzero(out.numpy()[:, 24, 0] > 127)
    cols = np.flatnonzero(out.numpy()[24, :, 0] > 127)
    assert abs(len(rows) - len(cols)) <= 1


def test_augmentation_is_seeded_and_varied(rng):
    data = _encode(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8))
    config = ImagePreprocessingConfig(image_size=32, augment=True, flip="always")
    a = preprocess_image(data, config, seed=tf.constant([1, 2])).numpy()
    b = preprocess_image(data, config, seed=tf.constant([1, 2])).numpy()
    c = preprocess_image(data, config, seed=tf.constant([1, 3])).numpy()
    assert a.shape == (32, 32, 3) and a.dtype == np.float32
    assert -1.0 <= a.min() and a.max() <= 1.0
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    with pytest.raises(ValueError, match="seed"):
        preprocess_image(data, config)


def test_random_resized_crop_scale_range():
    """A crop at scale >= 0.5 of a 2-colour image keeps a colour share consistent
    with the source's (sanity check of the crop area; never an empty crop)."""
    image = np.zeros((64, 64, 3), np.uint8)
    image[:, 32:] = 255
    data = _encode(image)
    config = ImagePreprocessingConfig(image_size=16, augment=True, crop_scale=(0.5, 1.0),
                                      flip="never")
    shares = []
    for s in range(40):
        out = preprocess_image(data, config, seed=tf.constant([s, 0])).numpy()
        shares.append((out[..., 0] > 0).mean())
    shares = np.array(shares)
    # The crop spans >= 50 % of the area, so >= ~half its width comes from a
    # side unless the box is narrow: white share stays in (0, 1) mostly.
    assert 0.3 < shares.mean() < 0.7
    assert len(np.unique(np.round(shares, 2))) > 5


def test_flip_policy_per_record():
    image = np.zeros((32, 32, 3), np.uint8)
    image[:, :16] = 255  # white left half
    data = _encode(image)
    config = ImagePreprocessingConfig(image_size=32, augment=True, crop_scale=(1.0, 1.0),
                                      flip="auto")
    flipped_allowed, flipped_denied = 0, 0
    for s in range(40):
        seed = tf.constant([s, 1])
        left_white = preprocess_image(data, config, seed, allow_flip=True).numpy()[16, 2, 0] > 0
        flipped_allowed += not left_white
        denied = preprocess_image(data, config, seed, allow_flip=False).numpy()[16, 2, 0] > 0
        flipped_denied += not denied
    assert flipped_denied == 0
    assert 8 <= flipped_allowed <= 32


def test_left_right_detection():
    assert mentions_left_or_right("The circle is LEFT of the square")
    assert mentions_left_or_right("the rightmost box has a triangle")
    assert mentions_left_or_right(["a dog", "on the left-hand side"])
    # Conservative: the verb "left" also disables flips (a lost augmentation,
    # never a wrong label).
    assert mentions_left_or_right("a dog left alone")
    assert not mentions_left_or_right("a bright light")
    assert not mentions_left_or_right("copyright notice")
    assert not mentions_left_or_right(None)
    assert allow_flip_for_text("a red circle", "auto")
    assert not allow_flip_for_text("left of the square", "auto")
    assert allow_flip_for_text("left of the square", "always")
    assert not allow_flip_for_text("a red circle", "never")
    with pytest.raises(ValueError, match="flip"):
        allow_flip_for_text("x", "sometimes")


def test_config_validation():
    with pytest.raises(ValueError, match="resize_mode"):
        ImagePreprocessingConfig(resize_mode="stretch")
    with pytest.raises(ValueError, match="crop_scale"):
        ImagePreprocessingConfig(crop_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="image_size"):
        ImagePreprocessingConfig(image_size=(0, 3))
    assert ImagePreprocessingConfig(image_size=[96, 400]).image_size == (96, 400)


def test_nlvr_image_keeps_aspect(shared):
    path = next((shared("data", "nlvr1") / "dev" / "images" / "0").glob("*.png"))
    data = tf.io.read_file(str(path))
    config = ImagePreprocessingConfig(image_size=(96, 400), resize_mode="crop")
    out = preprocess_image(data, config).numpy()
    assert out.shape == (96, 400, 3)
    raw = np.asarray(Image.open(path).convert("RGB"), np.float32)[2:98]
    assert np.abs((out + 1) * 127.5 - raw).max() < 1.0  # 100 -> 96 rows: a centre crop


def test_decode_error_on_garbage():
    with pytest.raises(tf.errors.InvalidArgumentError):
        decode_image(b"not an image at all")
