"""A third-party plugin adds a task through the same `register_heads` hook."""

import dataclasses
import types

import numpy as np
import pytest

import vlbeit_keras
from vlbeit_keras.hookspecs import hookimpl
from vlbeit_keras.plugins import manager
from vlbeit_keras.tasks import image_text_classification as itc


@pytest.fixture
def snli_ve_plugin():
    """SNLI-VE (entailment / neutral / contradiction) as an external plugin."""
    labels = {"entailment": 0, "neutral": 1, "contradiction": 2}

    def make_dataset(records, **kwargs):
        records = [dict(r, label=labels[r["label"]]) for r in records]
        return itc.make_dataset(records, **dict(kwargs, num_classes=3))

    def example(num_records, image_size, seed=0):
        records, config = itc.example(num_records, image_size, seed)
        names = list(labels)
        return [dict(r, label=names[r["label"]]) for r in records], {"image_size": config["image_size"]}

    spec = dataclasses.replace(
        itc.TASK, name="snli_ve", description="SNLI-VE 3-way visual entailment",
        build_model=lambda backbone, **config: itc.build_model(backbone, **dict(config, num_classes=3)),
        make_dataset=make_dataset, example=example,
        default_config={"image_size": None, "head_hidden_dim": None},
    )
    plugin = types.ModuleType("snli_ve_plugin")

    @hookimpl
    def register_heads(register):
        register("snli_ve", spec)

    plugin.register_heads = register_heads
    manager.register_plugin(plugin, "snli_ve_plugin", "snli-ve-plugin 0.1")
    try:
        yield spec
    finally:
        manager.unregister_plugin("snli_ve_plugin")


def test_plugin_task_is_found_built_and_trained(snli_ve_plugin, tiny_backbone, io):
    registry = vlbeit_keras.get_registry("heads")
    spec = registry.get("snli_ve")
    assert registry.entry("snli_ve").plugin.distribution == "snli-ve-plugin 0.1"
    records, config = spec.example(4, tiny_backbone.image_size)
    model = spec.build_model(tiny_backbone, **spec.config(**config))
    ds = spec.make_dataset(records, batch_size=2, training=True, seed=0, **io)
    x, y = next(iter(ds))
    assert model(dict(x)).shape == (2, 3)
    assert np.isfinite(model.fit(ds, steps_per_epoch=1, verbose=0).history["loss"][0])


def test_duplicate_task_name_is_rejected(tiny_backbone):
    plugin = types.ModuleType("dup_plugin")

    @hookimpl
    def register_heads(register):
        register("vqa", itc.TASK)

    plugin.register_heads = register_heads
    manager.register_plugin(plugin, "dup_plugin")
    try:
        with pytest.raises(ValueError, match="Duplicate heads name 'vqa'"):
            vlbeit_keras.get_registry("heads")
    finally:
        manager.unregister_plugin("dup_plugin")
