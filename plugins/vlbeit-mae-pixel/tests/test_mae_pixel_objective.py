"""Tests of the vlbeit-mae-pixel plugin (run by `make test` from the repository root,
or `pytest plugins/vlbeit-mae-pixel` after `pip install -e plugins/vlbeit-mae-pixel`)."""

import importlib.metadata

import keras
import numpy as np
import pytest

# Not installed: every test fails with the setup command (a collection error
# would stop the whole session; a skip would hide the missing package).
MISSING = None
try:
    importlib.metadata.distribution("vlbeit-mae-pixel")
    import vlbeit_mae_pixel
    from vlbeit_mae_pixel import MaskedPixelRegression
    from vlbeit_mae_pixel import masked_mse
    from vlbeit_mae_pixel import normalized_pixel_targets
    from vlbeit_mae_pixel import patchify
except (ImportError, importlib.metadata.PackageNotFoundError) as exc:  # pragma: no cover
    MISSING = (
        f"vlbeit-mae-pixel is not installed ({exc}); run the README setup (`make setup`, "
        "or `pip install -e plugins/vlbeit-mae-pixel`)."
    )

import vlbeit_keras


@pytest.fixture(autouse=True)
def _seed():
    if MISSING:
        pytest.fail(MISSING, pytrace=False)
    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy("float32")


def np_(x):
    return keras.ops.convert_to_numpy(x)


def image_batch(rng, backbone, batch=2, n_mask=6):
    """Fields of the "image" stream: fixed-size mask positions, weight 0 = padding entry."""
    n = backbone.grid_size[0] * backbone.grid_size[1]
    images = rng.uniform(-1, 1, (batch, *backbone.image_size, 3)).astype("float32")
    patch_mask = np.zeros((batch, n), bool)
    positions = np.zeros((batch, n_mask), "int32")
    weights = np.zeros((batch, n_mask), "float32")
    for b in range(batch):
        k = n_mask - b  # the second row has a padding entry
        pos = np.sort(rng.choice(n, k, replace=False))
        patch_mask[b, pos] = True
        positions[b, :k] = pos
        weights[b, :k] = 1.0
    return {"images": images, "patch_mask": patch_mask,
            "image_mask_positions": positions, "image_mask_weights": weights}


def test_patchify_follows_the_backbone_patch_order():
    # Image whose patch (r, c) of a 2 x 3 grid (patch 4) holds the value r * 3 + c,
    # channel k adds 100 * k: row-major grid order, channel last inside a patch.
    p, grid = 4, (2, 3)
    image = np.zeros((1, grid[0] * p, grid[1] * p, 3), "float32")
    for r in range(grid[0]):
        for c in range(grid[1]):
            image[0, r * p:(r + 1) * p, c * p:(c + 1) * p] = r * grid[1] + c + 100 * np.arange(3)
    patches = np_(patchify(image, p))
    assert patches.shape == (1, 6, p * p * 3)
    for i in range(6):
        np.testing.assert_array_equal(patches[0, i].reshape(p, p, 3), i + 100 * np.broadcast_to(np.arange(3), (p, p, 3)))
    # And the backbone's Conv2D patch embedding sees patches in that order.
    backbone = vlbeit_keras.VLBEiTBackbone.from_preset(
        "vlbeit_tiny", load_weights=False, image_size=(8, 12), patch_size=4)
    kernel = np.zeros((p, p, 3, backbone.hidden_dim), "float32")
    kernel[..., 0] = 1.0 / (p * p * 3)  # channel 0 of the embedding = patch mean
    backbone.patch_embed.proj.kernel.assign(kernel)
    backbone.patch_embed.proj.bias.assign(np.zeros(backbone.hidden_dim, "float32"))
    embedded = np_(backbone.patch_embed.proj(image)).reshape(1, 6, -1)[..., 0]
    np.testing.assert_allclose(embedded[0], patches[0].mean(-1), rtol=1e-5)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_targets_match_mae_norm_pix_loss_reference(rng):
    images = rng.uniform(-1, 1, (2, 16, 16, 3)).astype("float32")
    positions = np.array([[0, 3], [2, 2]], "int32")
    got = np_(normalized_pixel_targets(images, positions, 8))
    # MAE models_mae.py forward_loss: (t - mean) / (var + 1e-6) ** .5, torch var unbiased.
    patches = images.reshape(2, 2, 8, 2, 8, 3).transpose(0, 1, 3, 2, 4, 5).reshape(2, 4, 192)
    t = np.take_along_axis(patches, positions[..., None], axis=1)
    want = (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, ddof=1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    raw = np_(normalized_pixel_targets(images, positions, 8, norm_pix_loss=False))
    np.testing.assert_allclose(raw, t, rtol=1e-6)


def test_masked_mse_counts_only_weighted_patches(rng):
    pred = rng.normal(size=(2, 3, 5)).astype("float32")
    target = rng.normal(size=(2, 3, 5)).astype("float32")
    weights = np.array([[1, 1, 0], [1, 0, 0]], "float32")
    loss, count = masked_mse(pred, target, weights)
    per_patch = ((pred - target) ** 2).mean(-1)
    assert float(count) == 3.0
    assert float(loss) == pytest.approx((per_patch * weights).sum() / 3.0, rel=1e-5)
    moved = pred.copy()
    moved[0, 2] += 10.0  # a padding entry of the position list
    assert float(masked_mse(moved, target, weights)[0]) == pytest.approx(float(loss), rel=1e-6)
    zero, _ = masked_mse(pred, target, np.zeros_like(weights))
    assert float(zero) == 0.0


def test_registered_through_the_entry_point():
    entry = vlbeit_keras.get_registry("objectives").entry("mim_pixel")
    assert entry.obj is MaskedPixelRegression
    assert entry.plugin.name == "mae_pixel"
    assert entry.plugin.distribution == f"vlbeit-mae-pixel {vlbeit_mae_pixel.__version__}"


def test_pretrains_without_a_visual_tokenizer_and_learns(rng):
    backbone = vlbeit_keras.VLBEiTBackbone.from_preset("vlbeit_tiny", load_weights=False)
    pretrainer = vlbeit_keras.VLBEiTPretrainer(backbone, objectives=("mim_pixel",))
    assert pretrainer.visual_tokenizer is None
    pretrainer.compile(optimizer=keras.optimizers.Adam(3e-3))
    batch = {"image": image_batch(rng, backbone)}
    losses = [pretrainer.train_on_batch(batch, return_dict=True)["mim_pixel_loss"] for _ in range(8)]
    assert set(pretrainer.train_on_batch(batch, return_dict=True)) == {"loss", "mim_pixel_loss"}
    assert all(np.isfinite(losses))
    # Normalised targets have unit variance: an untrained head predicts ~0 -> loss ~1.
    assert 0.5 < losses[0] < 3.0
    assert losses[-1] < 0.8 * losses[0], losses


class PatchMeanTokenizer(keras.layers.Layer):
    """Stand-in visual tokenizer: quantised mean intensity of each patch."""

    def __init__(self, patch_size, codebook_size, **kwargs):
        super().__init__(**kwargs)
        self.patch_size, self.codebook_size = patch_size, codebook_size

    def call(self, images):
        mean = keras.ops.mean(patchify(images, self.patch_size), axis=-1)
        ids = keras.ops.floor((mean + 1.0) / 2.0 * self.codebook_size)
        return keras.ops.clip(keras.ops.cast(ids, "int32"), 0, self.codebook_size - 1)


def test_shares_the_mask_token_with_mim():
    backbone = vlbeit_keras.VLBEiTBackbone.from_preset("vlbeit_tiny", load_weights=False)
    pretrainer = vlbeit_keras.VLBEiTPretrainer(
        backbone, objectives=("mim", "mim_pixel"), visual_tokenizer=PatchMeanTokenizer(8, 16))
    names = [layer.name for layer in pretrainer._shared_layers.values()]
    assert sorted(names) == ["image_mask_token", "mim_head", "mim_pixel_head"]


def test_objective_config_round_trip():
    objective = MaskedPixelRegression(weight=0.5, norm_pix_loss=False, eps=1e-5)
    again = MaskedPixelRegression.from_config(objective.get_config())
    assert again.get_config() == {"weight": 0.5, "norm_pix_loss": False, "eps": 1e-5}
