"""Registry-wide contract tests (the timm ``test_models.py`` style).

Parametrized over everything registered when the suite is collected: the
built-ins plus every installed plugin (``make test`` installs ``plugins/*``),
so a new expert, objective or task is tested without writing a test. Each
part builds into a tiny model, runs forward, takes one ``fit`` step,
round-trips ``get_config`` and a ``.keras`` save/load, on the backend of the
run (the suite runs on TensorFlow, JAX and PyTorch). Sizes are tiny
(``vlbeit_tiny``: d=32, 2 layers, 32 px images, text 8).

Contract of each kind: ``docs/plugins.md``.
"""

import keras
import numpy as np
import pytest

import vlbeit_keras
from tests.helpers.pretraining import PatchIntensityTokenizer
from tests.helpers.pretraining import synthetic_batch
from vlbeit_keras.objectives.base import PretrainingObjective
from vlbeit_keras.plugins import get_registry

EXPERTS = get_registry("experts").names()
OBJECTIVES = get_registry("objectives").names()


def np_(x):
    return keras.ops.convert_to_numpy(x)


def assert_finite(tree, what):
    for leaf in keras.tree.flatten(tree):
        value = np_(leaf)
        if np.issubdtype(value.dtype, np.floating):
            assert np.all(np.isfinite(value)), f"{what}: non-finite values"


def tiny_backbone(**overrides):
    return vlbeit_keras.VLBEiTBackbone.from_preset("vlbeit_tiny", load_weights=False, **overrides)


def backbone_inputs(backbone, rng, batch=2):
    t = backbone.max_text_length
    ids = rng.integers(5, backbone.vocabulary_size, (batch, t)).astype("int32")
    mask = np.ones((batch, t), "int32")
    mask[0, t // 2:] = 0
    images = rng.uniform(-1, 1, (batch, *backbone.image_size, 3)).astype("float32")
    return {"token_ids": ids, "padding_mask": mask, "images": images}


def snapshot(variables):
    return {v.path: np_(v).copy() for v in variables}


def changed(before, variables):
    return {v.path for v in variables if not np.array_equal(before[v.path], np_(v))}


# ---------------------------------------------------------------------------
# Experts


@pytest.mark.parametrize("name", EXPERTS)
def test_expert_contract(name, tmp_path, rng):
    expert_cls = get_registry("experts").get(name)
    # The constructor contract of the register_experts hook.
    layer = expert_cls(
        hidden_dim=32, intermediate_dim=64, layer_norm_epsilon=1e-6,
        kernel_initializer="glorot_uniform",
        output_kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.01),
        dtype="float32", name="expert",
    )
    x = rng.normal(size=(2, 5, 32)).astype("float32")
    y = layer(x, training=False)
    assert tuple(y.shape) == x.shape
    config = layer.get_config()
    assert expert_cls.from_config(config).get_config() == config

    backbone = tiny_backbone(expert_type=name)
    assert all(isinstance(b.expert(s), expert_cls) for b in backbone.transformer.blocks for s in b.expert_slots)
    inputs = backbone_inputs(backbone, rng)
    out = backbone(inputs)
    assert tuple(out["pooled_output"].shape) == (2, 32)
    assert_finite(out, f"{name} forward")
    config = backbone.get_config()
    assert vlbeit_keras.VLBEiTBackbone.from_config(config).get_config() == config

    # One fit step over all three experts (MVLM: L-FFN and V-FFN below, VL-FFN on top).
    pretrainer = vlbeit_keras.VLBEiTPretrainer(
        backbone, objectives=("mvlm",), visual_tokenizer=PatchIntensityTokenizer(8, 16))
    pretrainer.compile(optimizer=keras.optimizers.SGD(0.1), run_eagerly=True)
    experts = [v for v in backbone.trainable_variables if "/mlp_" in v.path]
    before = snapshot(experts)
    batch = synthetic_batch(backbone, rng)
    history = pretrainer.fit({"image_text": batch["image_text"]}, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    for slot in ("mlp_text", "mlp_imag", "mlp_vl"):
        assert any(f"/{slot}/" in p for p in changed(before, experts)), f"{name}: {slot} not trained"

    path = tmp_path / f"backbone_{name}.keras"
    backbone.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored.transformer.blocks[0].mlp_text) is expert_cls
    np.testing.assert_allclose(
        np_(restored(inputs)["pooled_output"]), np_(backbone(inputs)["pooled_output"]), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------
# Pretraining objectives


@pytest.mark.parametrize("name", OBJECTIVES)
def test_objective_contract(name, tmp_path, rng):
    objective_cls = get_registry("objectives").get(name)
    assert issubclass(objective_cls, PretrainingObjective)
    assert objective_cls.stream in ("text", "image", "image_text")
    assert "loss" in objective_cls.metric_names
    objective = objective_cls()
    assert objective_cls.from_config(objective.get_config()).get_config() == objective.get_config()

    backbone = tiny_backbone()
    # A stand-in visual tokenizer for objectives with tokenizer targets; others ignore it.
    pretrainer = vlbeit_keras.VLBEiTPretrainer(
        backbone, objectives=(name,), visual_tokenizer=PatchIntensityTokenizer(8, 16))
    batch = synthetic_batch(backbone, rng)
    stream = {objective_cls.stream: batch[objective_cls.stream]}
    y_pred = pretrainer(stream, training=False)
    assert set(y_pred) == {name}
    assert_finite(y_pred, f"{name} forward")
    values = pretrainer.objectives[name].compute_loss(pretrainer, stream[objective_cls.stream], y_pred[name])
    for metric in objective_cls.metric_names:
        value = values[metric]
        assert keras.backend.standardize_dtype(value.dtype) == "float32" and tuple(value.shape) == (), metric
        assert np.isfinite(np_(value)), metric

    pretrainer.compile(optimizer=keras.optimizers.SGD(0.1), run_eagerly=True)
    before = snapshot(pretrainer.trainable_variables)
    history = pretrainer.fit(stream, batch_size=2, epochs=1, verbose=0)
    logs = {k: v[0] for k, v in history.history.items()}
    assert set(logs) == {"loss"} | {f"{name}_{m}" for m in objective_cls.metric_names}
    assert all(np.isfinite(v) for v in logs.values()), logs
    assert changed(before, pretrainer.trainable_variables), f"{name}: fit changed no weight"

    path = tmp_path / f"pretrainer_{name}.keras"
    pretrainer.save(path)
    restored = keras.saving.load_model(path)
    assert restored.objective_specs == pretrainer.objective_specs
    assert type(restored.objectives[name]) is objective_cls
    keras.tree.map_structure(
        lambda a, b: np.testing.assert_allclose(np_(a), np_(b), rtol=1e-5, atol=1e-5),
        restored(stream, training=False), pretrainer(stream, training=False),
    )


# ---------------------------------------------------------------------------
# Heads / tasks: the full contract (build from a tiny backbone, fit on a
# dataset and on arrays, evaluate, export, get_config and `.keras` round trip)
# runs for every registered task in tests/tasks/test_task_contract.py, which
# skips a task without `example`; here such a task fails instead.

HEADS = get_registry("heads").names()


@pytest.mark.parametrize("name", HEADS)
def test_head_is_complete_for_the_task_contract(name):
    from vlbeit_keras.tasks.base import TaskSpec
    from vlbeit_keras.tasks.base import VLBEiTTaskModel

    spec = get_registry("heads").get(name)
    assert isinstance(spec, TaskSpec) and spec.name == name
    assert spec.example is not None, f"task {name!r} has no `example`: the task contract test cannot run it"
    for fn in (spec.build_model, spec.make_dataset, spec.evaluate, spec.export_predictions):
        assert callable(fn)
    assert spec.metric_names and spec.record_keys
    assert issubclass(spec.model_cls, VLBEiTTaskModel)
    # Keras can find the model class by its registered name when a `.keras` file loads.
    registered = keras.saving.get_registered_name(spec.model_cls)
    assert keras.saving.get_registered_object(registered) is spec.model_cls, registered
