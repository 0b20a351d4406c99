"""The training-health monitor: fires on a collapsed model, stays quiet on a
healthy one, stops cleanly on a non-finite loss (all three backends)."""

import json
import math

import keras
import numpy as np
import pytest

from vlbeit_keras.models.vlbeit_backbone import VLBEiTBackbone
from vlbeit_keras.tasks.image_text_classification import VLBEiTImageTextClassifier
from vlbeit_keras.training.health import feature_spread
from vlbeit_keras.training.health import gradient_norms
from vlbeit_keras.training.health import layer_group
from vlbeit_keras.training.health import mean_cosine
from vlbeit_keras.training.health import NonFiniteLossError
from vlbeit_keras.training.health import TrainingHealthMonitor
from vlbeit_keras.training.health import TrainingHealthWarning


def pair_batch(rng, config, n):
    t = config["max_text_length"]
    ids = rng.integers(5, config["vocabulary_size"], (n, t)).astype("int32")
    mask = np.ones((n, t), "int32")
    mask[:, t // 2:] = rng.integers(0, 2, (n, t - t // 2))
    ids[:, 0] = 2
    size = config["image_size"]
    images = rng.uniform(-1, 1, (n, size, size, 3)).astype("float32")
    return {"token_ids": ids, "padding_mask": mask, "images": images}


def kinds(monitor):
    return [e["kind"] for e in monitor.events]


# ------------------------------------------------------------------ measures
def test_feature_spread_and_cosine():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 16))
    assert feature_spread(np.tile(x[:1], (8, 1))) < 1e-12
    assert 0.9 < feature_spread(x) < 1.1
    assert feature_spread(1000.0 * x) == pytest.approx(feature_spread(x))
    # A constant vector plus a 1 % perturbation: collapsed by both measures.
    nearly = 5.0 + 0.05 * x
    assert feature_spread(nearly) < 0.02 and mean_cosine(nearly) > 0.999
    assert mean_cosine(x) < 0.2
    with pytest.raises(ValueError, match="batch >= 2"):
        feature_spread(x[:1])


def test_layer_groups(tiny_config):
    model = VLBEiTImageTextClassifier(VLBEiTBackbone(**tiny_config), num_classes=2)
    paths = {v.path for v in model.backbone.weights}
    groups = {layer_group(v.path, paths) for v in model.trainable_variables}
    assert {"embeddings", "block_0", "block_1", "backbone_shared", "classifier"} <= groups


def test_gradient_norms_leave_state_untouched(tiny_config, rng):
    model = VLBEiTImageTextClassifier(VLBEiTBackbone(**tiny_config), num_classes=2)
    model.compile(optimizer="sgd")
    x = pair_batch(rng, tiny_config, 8)
    y = rng.integers(0, 2, 8)
    model.evaluate(x, y, verbose=0)  # metrics hold values now
    before = [keras.ops.convert_to_numpy(v).copy() for v in model.variables + model.metrics_variables]
    norms = gradient_norms(model, x, y)
    after = [keras.ops.convert_to_numpy(v) for v in model.variables + model.metrics_variables]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    assert set(norms) >= {"embeddings", "block_0", "block_1", "classifier"}
    assert all(math.isfinite(n) and n > 0 for n in norms.values()), norms


# -------------------------------------------------------------- the monitor
def test_fires_on_a_collapsed_model(tiny_config, rng, tmp_path):
    """Pooler kernel zeroed: every input gets the same pooled vector, so the
    loss sits at ln 2 and the feature spread is 0."""
    model = VLBEiTImageTextClassifier(VLBEiTBackbone(**tiny_config), num_classes=2)
    pooler = model.backbone.pooler
    pooler.kernel.assign(np.zeros(pooler.kernel.shape, "float32"))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0))
    x = pair_batch(rng, tiny_config, 32)
    y = np.arange(32) % 2
    probe = ({k: v[:8] for k, v in x.items()}, y[:8])
    monitor = TrainingHealthMonitor(probe_batch=probe, patience_steps=6, probe_every=4,
                                    min_batches=1, log_dir=str(tmp_path / "tb"))
    with pytest.warns(TrainingHealthWarning) as record:
        model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[monitor])
    found = kinds(monitor)
    assert "feature_collapse" in found and "loss_at_chance" in found, monitor.events
    collapse = next(e for e in monitor.events if e["kind"] == "feature_collapse")
    assert collapse["step"] == 0 and collapse["name"] == "pooled_output" and collapse["value"] < 1e-6
    chance = next(e for e in monitor.events if e["kind"] == "loss_at_chance")
    assert chance["step"] == 6 and chance["name"] == "loss"
    assert "ln" not in chance["message"] and "0.6931" in chance["message"]
    assert any("collapsed" in str(w.message) for w in record)
    # Numbers went to TensorBoard and the history.
    assert any((tmp_path / "tb").iterdir())
    assert monitor.history[0]["step"] == 0 and "grad_norm/classifier" in monitor.history[0]
    json.dumps(monitor.summary())


def test_quiet_on_a_healthy_model(tiny_config, rng):
    """Mean pooling, a learnable rule (the image colour): features spread,
    the loss leaves ln 2 within the patience, gradients stay finite."""
    model = VLBEiTImageTextClassifier(
        VLBEiTBackbone(**dict(tiny_config, pooling="mean")), num_classes=2)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    n = 64
    x = pair_batch(rng, tiny_config, n)
    y = rng.integers(0, 2, n)
    colours = np.where(y[:, None, None, None] == 1, [0.8, -0.6, 0.1], [-0.6, 0.8, 0.1])
    x["images"] = (colours + rng.normal(0, 0.3, x["images"].shape)).astype("float32")
    monitor = TrainingHealthMonitor(probe_batch=({k: v[:16] for k, v in x.items()}, y[:16]),
                                    patience_steps=24, probe_every=8)
    model.fit(x, y, batch_size=16, epochs=8, verbose=0, callbacks=[monitor])
    assert monitor.events == [], monitor.events
    assert monitor.history[-1]["spread/pooled_output"] > 0.1


def test_nonfinite_loss_stops_before_a_checkpoint(tiny_config, rng, tmp_path):
    model = VLBEiTImageTextClassifier(
        VLBEiTBackbone(**dict(tiny_config, pooling="mean")), num_classes=2)
    model.compile(optimizer=keras.optimizers.SGD(1e-3))
    x = pair_batch(rng, tiny_config, 32)
    y = np.arange(32) % 2
    x["images"][26] = np.nan  # the 7th batch of 4 (second epoch)
    backup = tmp_path / "backup"
    monitor = TrainingHealthMonitor(probe_batch=None)
    callbacks = [monitor, keras.callbacks.BackupAndRestore(str(backup), save_freq="epoch",
                                                           delete_checkpoint=False)]
    with pytest.raises(NonFiniteLossError, match="step 7"):
        model.fit(x, y, batch_size=4, epochs=2, steps_per_epoch=4, shuffle=False, verbose=0,
                  callbacks=callbacks)
    assert kinds(monitor) == ["nonfinite_loss"]
    # The epoch-1 checkpoint exists and is finite; the NaN state was not saved.
    meta = json.loads((backup / "training_metadata.json").read_text())
    assert meta["epoch"] == 1
    restored = VLBEiTImageTextClassifier(
        VLBEiTBackbone(**dict(tiny_config, pooling="mean")), num_classes=2)
    restored.compile(optimizer=keras.optimizers.SGD(1e-3))
    resumed = keras.callbacks.BackupAndRestore(str(backup), delete_checkpoint=False)
    resumed.set_model(restored)
    resumed.on_train_begin()
    assert all(np.isfinite(keras.ops.convert_to_numpy(v)).all() for v in restored.weights)


def test_chance_values_of_the_task_models(tiny_config):
    from vlbeit_keras.tasks.retrieval import VLBEiTRetrieval

    backbone = VLBEiTBackbone(**tiny_config)
    retrieval = VLBEiTRetrieval(backbone)
    chance = retrieval.chance_losses(32)
    assert chance["itc_loss"] == pytest.approx(math.log(32))
    assert chance["itm_loss"] == pytest.approx(0.6365, abs=1e-4)
    assert VLBEiTImageTextClassifier(backbone, num_classes=3).chance_losses()["loss"] == \
        pytest.approx(math.log(3))


def test_bad_arguments():
    with pytest.raises(ValueError, match="patience_steps"):
        TrainingHealthMonitor(patience_steps=0)
    with pytest.raises(ValueError, match="chance_tolerance"):
        TrainingHealthMonitor(chance_tolerance=1.5)


def test_visual_token_chance_uses_the_measured_marginal():
    """MIM chance: ln(perplexity) of the tokenizer's measured usage (kept
    across resumes in visual_tokenizer_usage.json), else ln K."""
    import types

    from vlbeit_keras.objectives.masked_modeling import visual_token_chance

    tokenizer = types.SimpleNamespace(codebook_size=256)
    pretrainer = types.SimpleNamespace(visual_tokenizer=tokenizer)
    assert visual_token_chance(pretrainer) == pytest.approx(math.log(256))
    tokenizer.usage_stats = {"perplexity": 18.7}
    assert visual_token_chance(pretrainer) == pytest.approx(math.log(18.7))
