"""Registry-driven contract: every registered task (plugins included) builds
from a backbone, trains one step with `fit`, evaluates, exports predictions
and round-trips through get_config and `.keras` with identical outputs."""

import os

import keras
import numpy as np
import pytest

import vlbeit_keras
from vlbeit_keras.tasks.base import TaskSpec
from vlbeit_keras.tasks.base import VLBEiTTaskModel
from vlbeit_keras.data.image_preprocessing import ImagePreprocessingConfig

BUILT_INS = ("vqa", "nlvr2", "nlvr", "retrieval", "image_classification", "image_text_classification")


def test_built_in_tasks_are_registered():
    registry = vlbeit_keras.get_registry("heads")
    for name in BUILT_INS:
        spec = registry.get(name)
        assert isinstance(spec, TaskSpec) and spec.name == name
        assert issubclass(spec.model_cls, VLBEiTTaskModel)
        for fn in (spec.build_model, spec.make_dataset, spec.evaluate,
                   spec.export_predictions, spec.example):
            assert callable(fn)
    with pytest.raises(ValueError, match="Unknown config"):
        registry.get("vqa").config(answer_vocab=["yes"])


def _deterministic(name, outputs):
    """Outputs that must match after reloading (retrieval draws negatives)."""
    if isinstance(outputs, dict):
        keep = {k: v for k, v in outputs.items() if k not in ("itm_logits", "itm_weights")}
        if "itm_logits" in outputs:
            batch = outputs["logits_per_image"].shape[0]
            keep["itm_positive_logits"] = outputs["itm_logits"][:batch]
        return keep
    return {"logits": outputs}


@pytest.mark.parametrize("name", vlbeit_keras.get_registry("heads").names())
def test_task_contract(name, tiny_backbone, tokenizer, tmp_path, to_numpy):
    spec = vlbeit_keras.get_registry("heads").get(name)
    if spec.example is None:
        pytest.skip(f"task {name!r} provides no example records")
    records, overrides = spec.example(8, tiny_backbone.image_size, 0)
    config = spec.config(**overrides)
    model = spec.build_model(tiny_backbone, **config)
    assert isinstance(model, spec.model_cls)
    assert model.compiled
    image_config = ImagePreprocessingConfig(model.backbone.image_size, augment=True)
    io = {"tokenizer": tokenizer, "image_config": image_config,
          "text_length": model.backbone.max_text_length}

    train = spec.make_dataset(records, batch_size=4, training=True, seed=0, **io, **config)
    history = model.fit(train, steps_per_epoch=1, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][-1])

    io["image_config"] = ImagePreprocessingConfig(model.backbone.image_size)
    metrics, predictions = spec.evaluate(model, records, batch_size=4, **io, **config)
    assert set(metrics) <= set(spec.metric_names)
    assert all(np.isfinite(v) for v in metrics.values())
    path = spec.export_predictions(predictions, str(tmp_path / "predictions"))
    assert os.path.getsize(path) > 0

    batch = next(iter(spec.make_dataset(records, batch_size=4, training=False, **io, **config)))
    x = batch[0] if isinstance(batch, tuple) else batch
    x = {k: np.asarray(v) for k, v in x.items()}
    # Plain NumPy arrays train too.
    y = np.asarray(batch[1]) if isinstance(batch, tuple) else None
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][-1])
    before = _deterministic(name, to_numpy(model.predict_on_batch(x)))

    config_copy = type(model).from_config(model.get_config()).get_config()
    assert config_copy == model.get_config()

    model.save(str(tmp_path / "model.keras"))
    loaded = keras.saving.load_model(str(tmp_path / "model.keras"))
    assert type(loaded) is type(model)
    after = _deterministic(name, to_numpy(loaded.predict_on_batch(x)))
    for key in before:
        np.testing.assert_allclose(after[key], before[key], atol=1e-6, err_msg=key)
    # The reloaded model is compiled with the same optimizer (restored state).
    assert loaded.compiled and type(loaded.optimizer) is type(model.optimizer)
    assert int(keras.ops.convert_to_numpy(loaded.optimizer.iterations)) == int(
        keras.ops.convert_to_numpy(model.optimizer.iterations))
