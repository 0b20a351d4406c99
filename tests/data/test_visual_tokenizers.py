"""Visual tokenizers: interface contract over the registry, k-means training, usage stats."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import vlbeit_keras
from vlbeit_keras.data.visual_tokenizers import KMeansTokenizer
from vlbeit_keras.data.visual_tokenizers import RandomProjectionTokenizer
from vlbeit_keras.data.visual_tokenizers import VisualTokenizer
from vlbeit_keras.data.visual_tokenizers import build_visual_tokenizer
from vlbeit_keras.data.visual_tokenizers import codebook_usage
from vlbeit_keras.data.visual_tokenizers import get_visual_tokenizer
from vlbeit_keras.data.visual_tokenizers import kmeans
from vlbeit_keras.data.visual_tokenizers import load_visual_tokenizer
from vlbeit_keras.data.visual_tokenizers import patchify
from vlbeit_keras.data.visual_tokenizers import save_visual_tokenizer
from vlbeit_keras.data.visual_tokenizers.kmeans import nearest_centroids

NAMES = vlbeit_keras.get_registry("visual_tokenizers").names()


def _images(rng, n=3, h=16, w=24):
    return rng.uniform(-1, 1, (n, h, w, 3)).astype("float32")


def _fitted_kmeans(rng, **kwargs):
    tok = KMeansTokenizer(patch_size=8, codebook_size=8, pool_size=2, **kwargs)
    tok.fit_codebook(_images(rng, 8), iterations=5, seed=0)
    return tok


def _make(name, rng):
    if name == "kmeans":
        return _fitted_kmeans(rng)
    return build_visual_tokenizer(name, patch_size=8, codebook_size=8)


def test_builtins_registered():
    assert {"random_projection", "kmeans"} <= set(NAMES)
    assert get_visual_tokenizer("kmeans") is KMeansTokenizer
    with pytest.raises(KeyError, match="random_projection"):
        get_visual_tokenizer("dall_e")


@pytest.mark.parametrize("name", NAMES)
def test_contract(name, rng, tmp_path):
    """Every registered tokenizer: shape/dtype/range, frozen, config and .keras round trips."""
    tok = _make(name, rng)
    assert isinstance(tok, VisualTokenizer)
    images = _images(rng)  # non-square: 2 x 3 grid
    ids = keras.ops.convert_to_numpy(tok(images))
    assert ids.shape == (3, 6) and ids.dtype == np.int32
    assert ids.min() >= 0 and ids.max() < tok.codebook_size
    assert tok.trainable_weights == [] and len(tok.non_trainable_weights) >= 1
    # config round trip (JSON-identical), then the keras serialization path
    config = tok.get_config()
    clone = tok.__class__.from_config(config)
    assert json.dumps(clone.get_config(), sort_keys=True) == json.dumps(config, sort_keys=True)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(tok))
    assert type(restored) is type(tok)
    # weights and .keras
    path = save_visual_tokenizer(tok, tmp_path / "tok.keras")
    loaded = load_visual_tokenizer(path)
    assert np.array_equal(keras.ops.convert_to_numpy(loaded(images)), ids)
    tok.save_weights(str(tmp_path / "tok.weights.h5"))
    clone.load_weights(str(tmp_path / "tok.weights.h5"))
    assert np.array_equal(keras.ops.convert_to_numpy(clone(images)), ids)
    # a symbolic call (inside a functional model) gives (B, N) int32
    inp = keras.Input((16, 24, 3))
    out = tok(inp)
    assert tuple(out.shape) == (None, 6) and out.dtype == "int32"


@pytest.mark.parametrize("name", NAMES)
def test_float32_under_mixed_precision(name, rng):
    tok = _make(name, rng)
    images = _images(rng)
    ids = keras.ops.convert_to_numpy(tok(images))
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        again = _make(name, rng) if name != "kmeans" else tok
        assert again.compute_dtype == "float32"
        assert np.array_equal(keras.ops.convert_to_numpy(again(images)), ids)
    finally:
        keras.config.set_dtype_policy("float32")


def test_bad_sizes(rng):
    tok = RandomProjectionTokenizer(patch_size=8, codebook_size=8)
    with pytest.raises(ValueError, match="multiple"):
        tok(np.zeros((1, 12, 16, 3), "float32"))
    with pytest.raises(ValueError, match="pool_size"):
        KMeansTokenizer(patch_size=8, pool_size=3)
    with pytest.raises(ValueError, match="codebook_size"):
        RandomProjectionTokenizer(patch_size=8, codebook_size=1)
    with pytest.raises(ValueError, match=".keras"):
        save_visual_tokenizer(tok, "tok.h5")
    with pytest.raises(FileNotFoundError):
        load_visual_tokenizer("/nonexistent/tok.keras")


def test_patchify_order():
    images = np.arange(2 * 4 * 6 * 1, dtype="float32").reshape(2, 4, 6, 1)
    patches = keras.ops.convert_to_numpy(patchify(images, 2))
    assert patches.shape == (2, 6, 2, 2, 1)
    assert np.array_equal(patches[0, 1, :, :, 0], images[0, 0:2, 2:4, 0])  # row-major
    assert np.array_equal(patches[1, 3, :, :, 0], images[1, 2:4, 0:2, 0])


def test_random_projection_is_seeded(rng):
    images = _images(rng)
    a = RandomProjectionTokenizer(patch_size=8, codebook_size=16, seed=1)
    b = RandomProjectionTokenizer(patch_size=8, codebook_size=16, seed=1)
    c = RandomProjectionTokenizer(patch_size=8, codebook_size=16, seed=2)
    ids = keras.ops.convert_to_numpy(a(images))
    assert np.array_equal(ids, keras.ops.convert_to_numpy(b(images)))
    assert not np.array_equal(ids, keras.ops.convert_to_numpy(c(images)))


def _cluster_images(rng, colors, n=32):
    """Images of 8x8 patches, each patch one of ``colors`` plus small noise."""
    idx = rng.integers(len(colors), size=(n, 2, 3))
    images = colors[idx].repeat(8, axis=1).repeat(8, axis=2)
    return (images + rng.normal(0, 0.02, images.shape)).astype("float32"), idx.reshape(n, -1)


def test_kmeans_recovers_clusters(rng):
    colors = rng.uniform(-0.9, 0.9, (6, 3))
    images, truth = _cluster_images(rng, colors)
    tok = KMeansTokenizer(patch_size=8, codebook_size=6, pool_size=2)
    stats = tok.fit_codebook(images, iterations=10, seed=0)
    ids = keras.ops.convert_to_numpy(tok(images))
    # Codes match the true colours one to one.
    pairs = set(zip(truth.reshape(-1).tolist(), ids.reshape(-1).tolist()))
    assert len(pairs) == 6
    assert stats["dead_codes"] == 0 and stats["used_codes"] == 6
    assert stats["perplexity"] > 5.0 and stats["inertia"] < 0.01
    # The Keras tokenizer and the NumPy assignment agree.
    feats = keras.ops.convert_to_numpy(tok.features(images)).reshape(-1, tok.feature_dim)
    ref, _ = nearest_centroids(feats, keras.ops.convert_to_numpy(tok.codebook))
    assert np.array_equal(ref, ids.reshape(-1))


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_dead_codes_are_restarted(rng, metric):
    colors = rng.uniform(-0.9, 0.9, (4, 3))
    images, _ = _cluster_images(rng, colors, n=64)
    tok = KMeansTokenizer(patch_size=8, codebook_size=8, pool_size=1, metric=metric)
    # Four codes start on the clusters, four far away on the other side of
    # the origin, where no patch ever goes: they are dead after iteration 0.
    far = -np.sign(colors.mean(axis=0)) * 50.0 + rng.normal(0, 1.0, (4, 3))
    init = np.concatenate([colors, far]).astype("float32")
    stats = tok.fit_codebook(images, iterations=8, init=init, seed=1)
    no_restart = KMeansTokenizer(patch_size=8, codebook_size=8, pool_size=1, metric=metric)
    base = no_restart.fit_codebook(images, iterations=8, init=init, seed=1,
                                   restart_dead_codes=False)
    assert stats["history"][0]["dead_codes"] == 4 and base["history"][0]["dead_codes"] == 4
    assert stats["restarts"] >= 4 and base["restarts"] == 0
    assert base["dead_codes"] == 4
    assert stats["dead_codes"] == 0
    assert stats["perplexity"] > base["perplexity"]


def test_kmeans_needs_enough_patches(rng):
    tok = KMeansTokenizer(patch_size=8, codebook_size=64, pool_size=1)
    with pytest.raises(ValueError, match="codebook of 64"):
        tok.fit_codebook(_images(rng, 2), iterations=2)
    with pytest.raises(ValueError, match="init"):
        kmeans(np.zeros((10, 2), "float32"), 2, init="pca")
    with pytest.raises(ValueError, match="shape"):
        kmeans(np.zeros((10, 2), "float32"), 2, init=np.zeros((3, 2)))


def test_codebook_usage_numbers():
    stats = codebook_usage(np.array([[0, 0, 1, 1], [2, 2, 3, 3]]), 8)
    assert stats["used_codes"] == 4 and stats["dead_codes"] == 4
    assert stats["used_fraction"] == 0.5
    assert abs(stats["perplexity"] - 4.0) < 1e-9 and abs(stats["max_code_share"] - 0.25) < 1e-12
    assert abs(codebook_usage(np.zeros(10, int), 4)["perplexity"] - 1.0) < 1e-12
    with pytest.raises(ValueError):
        codebook_usage(np.array([4]), 4)


def test_fit_from_pipeline_dataset():
    from vlbeit_keras.data.demo_corpus import demo_records
    from vlbeit_keras.data.image_preprocessing import ImagePreprocessingConfig
    from vlbeit_keras.data.pipeline import make_image_dataset

    ds = make_image_dataset(demo_records("images", 24, image_size=32),
                            image_config=ImagePreprocessingConfig(32), batch_size=8)
    tok = KMeansTokenizer(patch_size=8, codebook_size=16, pool_size=2)
    stats = tok.fit_codebook(ds, iterations=5)
    assert stats["num_patches"] == 24 * 16
    assert stats["used_codes"] == 16 - stats["dead_codes"] and stats["used_codes"] >= 12


def test_load_in_fresh_process(rng, tmp_path):
    tok = _fitted_kmeans(rng)
    images = _images(rng)
    path = save_visual_tokenizer(tok, tmp_path / "tok.keras")
    np.save(tmp_path / "images.npy", images)
    code = (
        "import numpy as np, keras\n"
        "from vlbeit_keras.data.visual_tokenizers import load_visual_tokenizer\n"
        f"tok = load_visual_tokenizer({str(path)!r})\n"
        f"ids = keras.ops.convert_to_numpy(tok(np.load({str(tmp_path / 'images.npy')!r})))\n"
        "print(type(tok).__name__, ids.tolist())\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    name, ids = out.stdout.strip().splitlines()[-1].split(" ", 1)
    assert name == "KMeansTokenizer"
    assert json.loads(ids) == keras.ops.convert_to_numpy(tok(images)).tolist()
