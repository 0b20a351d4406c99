"""The plugin packages under ``plugins/``, as installed distributions.

``make test`` (``make setup``) installs every ``plugins/*/pyproject.toml``
editable next to vlbeit_keras, so these tests require the three distributions
and fail (never skip) with the setup command when one is missing. They check
what installing a plugin package must give a user: its parts in the listing
with their distribution, usable by name in a recipe config, and a model using
a plugin part that saves and loads in a fresh Python process after only
``import vlbeit_keras``.
"""

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import vlbeit_keras
from tests.conftest import REPO
from tests.helpers.pretraining import synthetic_batch
from vlbeit_keras.cli import main as cli_main
from vlbeit_keras.plugins import ENTRY_POINT_GROUP
from vlbeit_keras.plugins import LOAD_ENV
from vlbeit_keras.plugins import get_registry

# distribution -> (entry-point name, plugin module, {(kind, registered name), ...})
PACKAGES = {
    "vlbeit-swiglu": ("swiglu", "vlbeit_swiglu.plugin", {("experts", "swiglu")}),
    "vlbeit-mae-pixel": ("mae_pixel", "vlbeit_mae_pixel.plugin", {("objectives", "mim_pixel")}),
    "vlbeit-snli-ve": ("snli_ve", "vlbeit_snli_ve.plugin", {("heads", "snli_ve"), ("datasets", "snli_ve")}),
}


def require(distribution):
    """The installed distribution, or a failure telling how to install it."""
    try:
        return importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        folder = f"plugins/{distribution}"
        pytest.fail(
            f"Plugin distribution {distribution!r} is not installed in this environment "
            f"({sys.executable}). Run the README setup (`make setup`; it installs every "
            f"plugins/*/pyproject.toml editable) or `pip install -e {folder}`.",
            pytrace=False,
        )


@pytest.mark.parametrize("distribution", sorted(PACKAGES))
def test_plugin_distribution_is_installed_with_its_entry_point(distribution):
    dist = require(distribution)
    ep_name, module, _ = PACKAGES[distribution]
    eps = [ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP]
    assert [(ep.name, ep.value) for ep in eps] == [(ep_name, module)]
    assert (REPO / "plugins" / distribution / "README.md").is_file()
    assert (REPO / "plugins" / distribution / "pyproject.toml").is_file()


@pytest.mark.parametrize("distribution", sorted(PACKAGES))
def test_installed_plugin_parts_appear_in_the_listing(distribution, capsys):
    dist = require(distribution)
    ep_name, module, parts = PACKAGES[distribution]
    assert cli_main(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    label = f"{distribution} {dist.version}"
    assert {"name": ep_name, "module": module, "distribution": label, "source": "entry_point"} in data["plugins"]
    for kind, name in parts:
        [entry] = [e for e in data["registries"][kind] if e["name"] == name]
        assert (entry["plugin"], entry["distribution"], entry["module"]) == (ep_name, label, module)
    assert not [f for f in data["failures"] if f["name"] == ep_name]


def test_plugin_parts_are_usable_by_name_in_the_pretraining_recipe(tmp_path):
    """recipes/pretrain.py (smoke size) with the plugin expert and objective named in its config."""
    for distribution in PACKAGES:
        require(distribution)
    spec = importlib.util.spec_from_file_location("pretrain_recipe", REPO / "recipes" / "pretrain.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    summary = recipe.main(["--smoke", "--workdir", str(tmp_path), "verbose=0",
                           "model.expert_type=swiglu", "objectives=mlm,mim_pixel"])
    assert summary["steps"] == summary["total_steps"]
    last = summary["last_epoch"]
    assert {"mlm_loss", "mim_pixel_loss"} <= set(last) and "mim_loss" not in last
    assert all(np.isfinite(last[k]) for k in ("mlm_loss", "mim_pixel_loss"))
    assert not (tmp_path / "visual_tokenizer.keras").exists()  # mim_pixel needs none
    backbone = keras.saving.load_model(tmp_path / "backbone.keras")
    assert backbone.get_config()["expert_type"] == "swiglu"
    assert type(backbone.transformer.blocks[0].mlp_text).__module__ == "vlbeit_swiglu.swiglu_expert"


def test_plugin_task_and_data_source_are_found_by_name():
    require("vlbeit-snli-ve")
    config = {"task": "snli_ve", "data": {"source": "snli_ve"}}  # what a fine-tuning config names
    task = vlbeit_keras.tasks.get_task(config["task"])
    reader = get_registry("datasets").get(config["data"]["source"])
    assert task.name == "snli_ve" and task.model_cls.__module__ == "vlbeit_snli_ve.task"
    assert reader.__module__ == "vlbeit_snli_ve.reader"


def test_plugin_models_save_and_load_in_a_fresh_process(tmp_path, rng):
    for distribution in PACKAGES:
        require(distribution)
    backbone = vlbeit_keras.VLBEiTBackbone.from_preset("vlbeit_tiny", load_weights=False, expert_type="swiglu")
    pretrainer = vlbeit_keras.VLBEiTPretrainer(backbone, objectives=("mim_pixel",))
    batch = {"image": synthetic_batch(backbone, rng)["image"]}
    want = keras.ops.convert_to_numpy(pretrainer(batch)["mim_pixel"]["pixels"])
    pretrainer.save(tmp_path / "pretrainer.keras")
    backbone.save(tmp_path / "backbone.keras")
    np.savez(tmp_path / "batch.npz", **batch["image"])
    np.save(tmp_path / "want.npy", want)
    script = f"""
import sys, keras, numpy as np
import vlbeit_keras   # the only import: it loads the installed plugins
backbone = keras.saving.load_model({str(tmp_path / 'backbone.keras')!r})
pretrainer = keras.saving.load_model({str(tmp_path / 'pretrainer.keras')!r})
assert type(backbone.transformer.blocks[1].mlp_vl).__name__ == "SwiGLUExpert"
assert type(pretrainer.objectives["mim_pixel"]).__module__ == "vlbeit_mae_pixel.pixel_regression"
batch = {{"image": dict(np.load({str(tmp_path / 'batch.npz')!r}))}}
got = keras.ops.convert_to_numpy(pretrainer(batch)["mim_pixel"]["pixels"])
np.testing.assert_allclose(got, np.load({str(tmp_path / 'want.npy')!r}), rtol=1e-5, atol=1e-5)
print("LOADED", sorted(m for m in sys.modules if m.startswith(("vlbeit_swiglu", "vlbeit_mae_pixel"))))
"""
    env = dict(os.environ)
    env.pop(LOAD_ENV, None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LOADED" in result.stdout and "vlbeit_swiglu.plugin" in result.stdout
