"""A third-party plugin adds a task through the same `register_heads` hook.

The inline task is named ``snli_ve_inline``: the real SNLI-VE plugin package
(``plugins/vlbeit-snli-ve``, installed by ``make setup``) owns ``snli_ve``.
"""

import dataclasses
import types

import numpy as np
import pytest

import vlbeit_keras
from tests.helpers.fake_plugins import registered_task
from vlbeit_keras.hookspecs import hookimpl
from vlbeit_keras.plugins import DuplicateRegistrationError
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
        itc.TASK, name="snli_ve_inline", description="SNLI-VE 3-way visual entailment",
        build_model=lambda backbone, **config: itc.build_model(backbone, **dict(config, num_classes=3)),
        make_dataset=make_dataset, example=example,
        default_config={"image_size": None, "head_hidden_dim": None},
    )
    with registered_task("snli_ve_inline", spec, "snli_ve_plugin", "snli-ve-plugin 0.1"):
        yield spec


def test_plugin_task_is_found_built_and_trained(snli_ve_plugin, tiny_backbone, io):
    registry = vlbeit_keras.get_registry("heads")
    spec = registry.get("snli_ve_inline")
    assert registry.entry("snli_ve_inline").plugin.distribution == "snli-ve-plugin 0.1"
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
    # Runtime registration raises at once and leaves nothing registered.
    with pytest.raises(DuplicateRegistrationError, match="Duplicate heads name 'vqa'"):
        manager.register_plugin(plugin, "dup_plugin")
    assert "dup_plugin" not in [p.name for p in manager.plugins()]
    assert vlbeit_keras.get_registry("heads").entry("vqa").plugin.builtin
