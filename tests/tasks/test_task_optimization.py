"""Per-variable lr multipliers (layer decay, head lr) on every backend."""

import keras
import numpy as np
import pytest

from vlbeit_keras.tasks import optimization as opt
from vlbeit_keras.tasks.image_text_classification import VLBEiTImageTextClassifier


def _toy_model():
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, name="a")(inputs)
    outputs = keras.layers.Dense(2, name="b")(hidden)
    return keras.Model(inputs, outputs)


def _grads(weights, x, y):
    """Analytic gradients of MSE(mean over all entries) for the toy model."""
    (ka, ba, kb, bb) = weights
    h = x @ ka + ba
    out = h @ kb + bb
    d_out = 2 * (out - y) / out.size
    d_h = d_out @ kb.T
    return [x.T @ d_h, d_h.sum(0), h.T @ d_out, d_out.sum(0)]


def _adamw_reference(weights, x, y, lrs, steps, wd, b1=0.9, b2=0.999, eps=1e-7):
    """Keras AdamW with per-variable learning rates (and weight decays)."""
    wds = wd if isinstance(wd, (list, tuple)) else [wd] * len(weights)
    weights = [w.astype(np.float64).copy() for w in weights]
    m = [np.zeros_like(w) for w in weights]
    v = [np.zeros_like(w) for w in weights]
    for t in range(1, steps + 1):
        grads = _grads(weights, x, y)
        for i, (w, g, lr, wd_i) in enumerate(zip(weights, grads, lrs, wds)):
            w -= w * wd_i * lr  # decoupled decay, as keras AdamW (before the step)
            m[i] += (g - m[i]) * (1 - b1)
            v[i] += (g * g - v[i]) * (1 - b2)
            alpha = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
            w -= alpha * m[i] / (np.sqrt(v[i]) + eps)
    return weights


@pytest.mark.parametrize("wrap_twice", [False, True])
def test_multipliers_equal_per_variable_learning_rates_under_fit(rng, wrap_twice):
    model = _toy_model()
    x = rng.normal(size=(8, 3)).astype("float32")
    y = rng.normal(size=(8, 2)).astype("float32")
    initial = [np.asarray(w) for w in model.get_weights()]
    multipliers = {"a/kernel": 0.25, "a/bias": 0.5, "b/kernel": 3.0}
    inner = keras.optimizers.AdamW(learning_rate=0.01, weight_decay=0.1)
    optimizer = opt.LRMultiplierOptimizer(inner, multipliers)
    if wrap_twice:  # serialised and restored before training
        optimizer = opt.LRMultiplierOptimizer.from_config(optimizer.get_config())
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    lrs = [0.01 * multipliers.get(p, 1.0) for p in ("a/kernel", "a/bias", "b/kernel", "b/bias")]
    expected = _adamw_reference(initial, x.astype(np.float64), y.astype(np.float64), lrs, 3, 0.1)
    for got, want in zip(model.get_weights(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == 3


def test_no_weight_decay_paths_are_applied(rng):
    model = _toy_model()
    x = rng.normal(size=(8, 3)).astype("float32")
    y = rng.normal(size=(8, 2)).astype("float32")
    initial = [np.asarray(w) for w in model.get_weights()]
    inner = keras.optimizers.AdamW(learning_rate=0.01, weight_decay=0.5)
    model.compile(optimizer=opt.LRMultiplierOptimizer(inner, no_weight_decay=["a/bias", "b/bias"]), loss="mse")
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    expected = _adamw_reference(initial, x.astype(np.float64), y.astype(np.float64), [0.01] * 4, 2,
                                [0.5, 0.0, 0.5, 0.0])
    for got, want in zip(model.get_weights(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_unknown_paths_raise_at_build():
    model = _toy_model()
    optimizer = opt.LRMultiplierOptimizer(keras.optimizers.SGD(0.1), {"c/kernel": 2.0})
    with pytest.raises(ValueError, match="c/kernel"):
        optimizer.build(model.trainable_variables)


def test_layer_ids_and_head_multiplier(tiny_backbone):
    assert opt.backbone_layer_id("patch_embed/proj/kernel", 2) == 0
    assert opt.backbone_layer_id("text_embeddings/word_embeddings/embeddings", 2) == 0
    assert opt.backbone_layer_id("transformer/blocks_1/mlp_vl/fc1/kernel", 2) == 2
    assert opt.backbone_layer_id("transformer/relative_position_bias/relative_position_bias_table", 2) == 3
    assert opt.backbone_layer_id("pooler/kernel", 2) == 3
    model = VLBEiTImageTextClassifier(tiny_backbone, num_classes=2)
    mults = opt.lr_multipliers(model, layer_decay=0.8, head_multiplier=20.0)
    assert mults["classifier/fc1/kernel"] == 20.0
    assert mults["modality_type_embeddings/embeddings"] == pytest.approx(0.8 ** 3)
    assert mults["transformer/blocks_0/norm1/gamma"] == pytest.approx(0.8 ** 2)
    assert "pooler/kernel" not in mults  # top layer id: multiplier 1
    with pytest.raises(ValueError, match="layer_decay"):
        opt.lr_multipliers(model, layer_decay=1.5)


def test_weight_decay_exclusions(tiny_backbone):
    model = VLBEiTImageTextClassifier(tiny_backbone, num_classes=2)
    excluded = {v.path for v in opt.no_weight_decay_variables(model)}
    for path in ("patch_embed/cls_token", "transformer/blocks_0/gamma_1",
                 "transformer/blocks_0/attn/q_bias", "transformer/blocks_0/mlp_text/norm/gamma",
                 "transformer/relative_position_bias/relative_position_bias_table",
                 "classifier/fc1/bias"):
        assert path in excluded, path
    for path in ("transformer/blocks_0/attn/qkv/kernel", "text_embeddings/word_embeddings/embeddings",
                 "classifier/fc2/kernel"):
        assert path not in excluded, path
