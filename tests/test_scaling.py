"""Gradient checkpointing (remat) and mixed precision of the pretrainer, on every backend."""

import keras
import numpy as np
import pytest
from keras import ops

import vlbeit_keras
from tests.helpers.pretraining import PatchIntensityTokenizer
from tests.helpers.pretraining import synthetic_batch


def tiny_pretrainer(**overrides):
    backbone = vlbeit_keras.VLBEiTBackbone.from_preset("vlbeit_tiny", load_weights=False, **overrides)
    return vlbeit_keras.VLBEiTPretrainer(backbone, visual_tokenizer=PatchIntensityTokenizer(8, 16))


def random_weights(model, seed=0):
    rng = np.random.default_rng(seed)
    return {v.path: (float(v.path.endswith("gamma")) + 0.1 * rng.normal(size=v.shape)).astype("float32")
            for v in model.trainable_weights}


def sgd_step(pretrainer, weights, batch):
    for v in pretrainer.trainable_weights:
        v.assign(weights[v.path])
    pretrainer.compile(optimizer=keras.optimizers.SGD(0.5))
    logs = pretrainer.train_on_batch(batch, return_dict=True)
    return logs, {v.path: ops.convert_to_numpy(v) for v in pretrainer.trainable_weights}


def test_remat_keeps_outputs_and_gradients(rng, monkeypatch):
    from keras.src import backend as backend_module

    calls = []
    primitive = backend_module.core.remat  # jax.checkpoint / tf.recompute_grad / torch checkpoint

    def counting(f):
        calls.append(f)
        return primitive(f)

    monkeypatch.setattr(backend_module.core, "remat", counting)
    keras.utils.set_random_seed(3)  # same drop-path seed-generator states in both models
    plain = tiny_pretrainer(drop_path_rate=0.2)
    keras.utils.set_random_seed(3)
    remat = tiny_pretrainer(drop_path_rate=0.2, remat=True)
    assert remat.backbone.remat and all(b.remat for b in remat.backbone.transformer.blocks)
    assert keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(remat.backbone)).remat
    weights = random_weights(plain)
    batch = synthetic_batch(plain.backbone, rng, batch=2)
    # Forward: same outputs.
    for model in (plain, remat):
        for v in model.trainable_weights:
            v.assign(weights[v.path])
    out_plain = plain.backbone.encode_image_text(
        batch["image_text"]["token_ids"], batch["image_text"]["padding_mask"], batch["image_text"]["images"])
    out_remat = remat.backbone.encode_image_text(
        batch["image_text"]["token_ids"], batch["image_text"]["padding_mask"], batch["image_text"]["images"])
    for key in out_plain:
        np.testing.assert_allclose(ops.convert_to_numpy(out_remat[key]), ops.convert_to_numpy(out_plain[key]),
                                   atol=1e-6, err_msg=key)
    calls.clear()
    # One training step (with drop path): same losses, same updates (= lr * gradients).
    logs_plain, after_plain = sgd_step(plain, weights, batch)
    assert not calls
    logs_remat, after_remat = sgd_step(remat, weights, batch)
    assert len(calls) >= 2 * remat.backbone.num_layers  # the backend primitive was used
    for key, value in logs_plain.items():
        assert logs_remat[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    moved = 0
    for path, before in weights.items():
        np.testing.assert_allclose(after_remat[path] - before, after_plain[path] - before,
                                   rtol=1e-4, atol=1e-6, err_msg=path)
        moved += bool(np.abs(after_plain[path] - before).max() > 1e-4)
    assert moved > 50


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_pretraining_is_finite(rng, policy):
    keras.config.set_dtype_policy(policy)
    pretrainer = tiny_pretrainer()
    batch = synthetic_batch(pretrainer.backbone, rng, batch=2)
    # A fully padded text row (all keys masked) must stay finite: the masked
    # logits use a finite -1e9 in float32, never in float16.
    batch["text"]["padding_mask"][1] = 0
    batch["text"]["text_mask_weights"][1] = 0.0
    compute = policy.split("_")[1]
    backbone = pretrainer.backbone
    out = backbone.encode_text(batch["text"]["token_ids"], batch["text"]["padding_mask"])
    assert keras.backend.standardize_dtype(out["text_sequence_output"].dtype) == compute
    assert np.isfinite(ops.convert_to_numpy(ops.cast(out["text_sequence_output"], "float32"))).all()
    y_pred = pretrainer(batch)
    for name, values in y_pred.items():
        for key, value in values.items():
            if "logits" in key:  # softmax / losses read float32 logits
                assert keras.backend.standardize_dtype(value.dtype) == "float32", (name, key)
                assert np.isfinite(ops.convert_to_numpy(value)).all(), (name, key)
    for v in pretrainer.trainable_weights:
        assert keras.backend.standardize_dtype(v.dtype) == "float32", v.path
    pretrainer.compile()
    if policy == "mixed_float16":
        assert isinstance(pretrainer.optimizer, keras.optimizers.LossScaleOptimizer)
        # The no-decay groups reached the wrapped AdamW.
        assert pretrainer.optimizer.inner_optimizer._exclude_from_weight_decay
    for _ in range(2):
        logs = pretrainer.train_on_batch(batch, return_dict=True)
        assert all(np.isfinite(v) for v in logs.values()), logs
        assert logs["mlm_loss"] > 0 and logs["mvlm_image_loss"] > 0
    for v in pretrainer.trainable_weights:
        assert np.isfinite(ops.convert_to_numpy(v)).all(), v.path
