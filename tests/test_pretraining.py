"""VLBEiTPretrainer and the MLM / MIM / MVLM objectives."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import vlbeit_keras
from tests.conftest import REPO
from tests.helpers.pretrainer_losses import build_tiny_pretrainer
from tests.helpers.pretrainer_losses import flatten
from tests.helpers.pretrainer_losses import objective_values
from tests.helpers.pretrainer_losses import weights_by_path
from tests.helpers.pretraining import PatchIntensityTokenizer
from tests.helpers.pretraining import synthetic_batch
from vlbeit_keras.optimizers import no_weight_decay_variables
from vlbeit_keras.plugins import UnknownNameError

METRICS = {
    "loss", "mlm_loss", "mlm_accuracy", "mim_loss", "mim_accuracy", "mvlm_loss",
    "mvlm_text_loss", "mvlm_text_accuracy", "mvlm_image_loss", "mvlm_image_accuracy",
}


def randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    for v in model.trainable_weights:
        base = 1.0 if v.path.endswith("gamma") else 0.0
        v.assign((base + 0.1 * rng.normal(size=v.shape)).astype("float32"))


def test_one_step_finite_losses_and_all_metrics(rng):
    pretrainer = build_tiny_pretrainer()
    pretrainer.compile()
    batch = synthetic_batch(pretrainer.backbone, rng)
    logs = pretrainer.train_on_batch(batch, return_dict=True)
    assert set(logs) == METRICS
    assert all(np.isfinite(v) for v in logs.values()), logs
    # Total = MLM + MIM + MVLM_text + MVLM_image with unit weights.
    values = objective_values(pretrainer, batch)
    assert values["mvlm_loss"] == pytest.approx(values["mvlm_text_loss"] + values["mvlm_image_loss"], rel=1e-6)


def test_losses_match_across_backends(tmp_path, rng):
    pretrainer = build_tiny_pretrainer()
    randomize(pretrainer)
    batch = synthetic_batch(pretrainer.backbone, rng)
    ours = objective_values(pretrainer, batch)
    np.savez(tmp_path / "weights.npz", **weights_by_path(pretrainer))
    np.savez(tmp_path / "batch.npz", **flatten(batch))
    current = keras.backend.backend()
    for other in ("tensorflow", "jax", "torch"):
        if other == current:
            continue
        env = dict(os.environ, KERAS_BACKEND=other, PYTHONPATH=str(REPO))
        out = tmp_path / f"{other}.npz"
        result = subprocess.run(
            [sys.executable, "-m", "tests.helpers.pretrainer_losses", str(tmp_path / "weights.npz"),
             str(tmp_path / "batch.npz"), str(out)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        theirs = dict(np.load(out))
        assert set(theirs) == set(ours)
        for key, value in ours.items():
            assert abs(float(theirs[key]) - value) <= 1e-4, (key, current, value, other, float(theirs[key]))


def test_only_masked_positions_count(rng):
    pretrainer = build_tiny_pretrainer()
    randomize(pretrainer)
    batch = synthetic_batch(pretrainer.backbone, rng)
    weights = batch["text"]["text_mask_weights"].copy()
    weights[0, -1] = 0.0  # a padding entry of the fixed-size position list
    text = {**batch["text"], "text_mask_weights": weights}
    batch = {**batch, "text": text}
    base = objective_values(pretrainer, batch)["mlm_loss"]
    # A target entry whose weight is 0 has no effect.
    changed = {**text, "text_mask_ids": np.where(weights == 0, 77, text["text_mask_ids"]).astype("int32")}
    assert objective_values(pretrainer, {**batch, "text": changed})["mlm_loss"] == pytest.approx(base, abs=1e-7)
    # A real masked target changes the loss.
    flipped = text["text_mask_ids"].copy()
    b, p = np.argwhere(weights == 1)[0]
    flipped[b, p] = (flipped[b, p] + 13) % 100
    changed = {**text, "text_mask_ids": flipped}
    assert abs(objective_values(pretrainer, {**batch, "text": changed})["mlm_loss"] - base) > 1e-4


def test_mim_uses_mask_token_and_unmasked_targets(rng):
    pretrainer = build_tiny_pretrainer()
    randomize(pretrainer)
    batch = synthetic_batch(pretrainer.backbone, rng)
    image = batch["image"]
    out = pretrainer({"image": image})["mim"]
    # Targets come from the unmasked image: same ids as the tokenizer on the raw image.
    ids = ops.convert_to_numpy(pretrainer.visual_tokenizer(image["images"]))
    expected = np.take_along_axis(ids, image["image_mask_positions"], axis=1)
    np.testing.assert_array_equal(ops.convert_to_numpy(out["targets"]), expected)
    # Masked patches' pixels do not reach the encoder: change them, logits stay the same.
    images = image["images"].copy()
    p = 8
    for b in range(images.shape[0]):
        for idx in np.flatnonzero(image["patch_mask"][b]):
            r, c = divmod(idx, 4)
            images[b, r * p:(r + 1) * p, c * p:(c + 1) * p] = rng.uniform(-1, 1, (p, p, 3))
    out2 = pretrainer({"image": {**image, "images": images}})["mim"]
    np.testing.assert_allclose(ops.convert_to_numpy(out2["logits"]), ops.convert_to_numpy(out["logits"]), atol=1e-5)


def test_missing_stream_skips_its_objectives(rng):
    pretrainer = build_tiny_pretrainer()
    pretrainer.compile()
    batch = synthetic_batch(pretrainer.backbone, rng)
    logs = pretrainer.train_on_batch({"text": batch["text"]}, return_dict=True)
    assert np.isfinite(logs["mlm_loss"]) and logs["loss"] == pytest.approx(logs["mlm_loss"], rel=1e-5)


def test_fit_reduces_losses_on_a_fixed_batch(rng):
    pretrainer = build_tiny_pretrainer()
    pretrainer.compile(optimizer=vlbeit_keras.optimizers.pretraining_optimizer(pretrainer, learning_rate=3e-3))
    batch = synthetic_batch(pretrainer.backbone, rng)
    ds = tf.data.Dataset.from_tensors(batch).repeat(15)
    history = pretrainer.fit(ds, epochs=2, verbose=0).history
    for key in ("mlm_loss", "mim_loss", "mvlm_text_loss", "mvlm_image_loss"):
        assert history[key][-1] < history[key][0], (key, history[key])


def test_weight_decay_groups():
    pretrainer = build_tiny_pretrainer()
    excluded = {v.path for v in no_weight_decay_variables(pretrainer)}
    decayed = {v.path for v in pretrainer.trainable_variables} - excluded
    for path in ("transformer/relative_position_bias/relative_position_bias_table",
                 "patch_embed/cls_token", "image_mask_token/mask_token",
                 "transformer/blocks_0/gamma_1", "transformer/blocks_1/mlp_vl/norm/gamma",
                 "transformer/blocks_0/attn/q_bias", "pooler/bias"):
        assert path in excluded, path
    for path in ("transformer/blocks_0/attn/qkv/kernel", "transformer/blocks_1/mlp_vl/fc1/kernel",
                 "text_embeddings/word_embeddings/embeddings", "patch_embed/proj/kernel",
                 "modality_type_embeddings/embeddings"):
        assert path in decayed, path
    pretrainer.compile()
    opt = pretrainer.optimizer
    by_path = {v.path: v for v in pretrainer.trainable_variables}
    assert not opt._use_weight_decay(by_path["patch_embed/cls_token"])
    assert opt._use_weight_decay(by_path["transformer/blocks_0/attn/qkv/kernel"])


def test_warmup_cosine_schedule_shape():
    sched = vlbeit_keras.optimizers.warmup_cosine_schedule(1e-3, total_steps=100, warmup_steps=10)
    lr = [float(ops.convert_to_numpy(sched(s))) for s in (0, 5, 10, 55, 100)]
    assert lr[0] == pytest.approx(0.0, abs=1e-12)
    assert lr[1] == pytest.approx(5e-4, rel=1e-5)
    assert lr[2] == pytest.approx(1e-3, rel=1e-5)
    assert lr[3] == pytest.approx(5e-4, rel=1e-3)
    assert lr[4] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="warmup_steps"):
        vlbeit_keras.optimizers.warmup_cosine_schedule(1e-3, total_steps=10, warmup_steps=20)


def test_unknown_objective_lists_known_names():
    backbone = vlbeit_keras.VLBEiTBackbone.from_preset("vlbeit_tiny", load_weights=False)
    with pytest.raises(UnknownNameError, match="Unknown objectives name 'itc'.*mim, mlm, mvlm"):
        vlbeit_keras.VLBEiTPretrainer(backbone, objectives=("mlm", "itc"))


def test_mim_without_tokenizer_is_a_clear_error():
    backbone = vlbeit_keras.VLBEiTBackbone.from_preset("vlbeit_tiny", load_weights=False)
    with pytest.raises(ValueError, match="visual tokenizer"):
        vlbeit_keras.VLBEiTPretrainer(backbone, objectives=("mim",))


def test_save_load_round_trip(tmp_path, rng):
    pretrainer = build_tiny_pretrainer()
    randomize(pretrainer)
    pretrainer.compile()
    batch = synthetic_batch(pretrainer.backbone, rng)
    pretrainer.train_on_batch(batch)
    path = tmp_path / "pretrainer.keras"
    pretrainer.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, vlbeit_keras.VLBEiTPretrainer)
    assert restored.objective_specs == pretrainer.objective_specs
    a, b = objective_values(pretrainer, batch), objective_values(restored, batch)
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=1e-6), key
    # The optimizer state came back too (step count and no-decay groups).
    assert int(ops.convert_to_numpy(restored.optimizer.iterations)) == 1
    by_path = {v.path: v for v in restored.trainable_variables}
    assert not restored.optimizer._use_weight_decay(by_path["patch_embed/cls_token"])
