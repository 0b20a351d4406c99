"""The plugin manager: discovery, loading order, errors, environment switches, hooks.

Entry-point discovery is tested with test-only distributions (a ``*.dist-info``
folder with ``entry_points.txt`` on a temporary ``sys.path`` entry, see
``tests/helpers/fake_plugins.py``) loaded by a fresh ``PluginManager``; no pip.
The three real packages under ``plugins/`` are tested in
``tests/test_plugin_packages.py``.

Every hook has a ``test_hook_<hook name>`` here (checked by
``test_every_hook_has_a_test``) and a section in ``docs/plugins.md`` (checked by
``test_every_hook_is_documented``).
"""

import json
import os
import re
import subprocess
import sys
import types

import keras
import numpy as np
import pytest

import vlbeit_keras
from tests.conftest import REPO
from tests.helpers.fake_plugins import expert_plugin_source
from tests.helpers.fake_plugins import write_distribution
from vlbeit_keras import hookimpl
from vlbeit_keras import hookspecs
from vlbeit_keras.cli import main as cli_main
from vlbeit_keras.plugins import BUILTIN_DISTRIBUTION
from vlbeit_keras.plugins import DEFAULT_PLUGINS
from vlbeit_keras.plugins import DISABLE_ENV
from vlbeit_keras.plugins import KINDS
from vlbeit_keras.plugins import LOAD_ENV
from vlbeit_keras.plugins import DuplicateRegistrationError
from vlbeit_keras.plugins import PluginError
from vlbeit_keras.plugins import PluginManager
from vlbeit_keras.plugins import UnknownNameError
from vlbeit_keras.plugins import get_registry
from vlbeit_keras.plugins import manager

HOOK_NAMES = sorted(n for n in dir(hookspecs) if n.startswith("register_"))
DOCS = REPO / "docs" / "plugins.md"


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A temporary site directory on sys.path for fake distributions.

    Returns ``add(name, version, entry_points, files)``; modules written there
    are removed from ``sys.modules`` afterwards. ``VLBEIT_KERAS_*`` variables
    are cleared (a test sets what it needs).
    """
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    monkeypatch.delenv(LOAD_ENV, raising=False)
    written = []

    def add(name, version="0.1", entry_points=None, files=None):
        written.extend(files or {})
        write_distribution(root, name, version, entry_points, files)
        return root

    add.root = root
    yield add
    for rel in written:
        module = rel.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
            del sys.modules[name]


def fresh_manager(allow=None, monkeypatch=None):
    if allow is not None:
        monkeypatch.setenv(LOAD_ENV, ",".join(allow))
    m = PluginManager()
    m.load()
    return m


# ---------------------------------------------------------------------------
# Built-ins and discovery


def test_builtins_go_through_the_same_hooks():
    plugins = manager.plugins()
    builtins = [p for p in plugins if p.builtin]
    assert [p.name for p in builtins] == list(DEFAULT_PLUGINS)
    assert all(p.distribution == BUILTIN_DISTRIBUTION and p.module == p.name for p in builtins)
    # Built-ins come first, then entry-point plugins sorted by name.
    assert plugins[: len(builtins)] == builtins
    external = [p.name for p in plugins if p.source == "entry_point"]
    assert external == sorted(external)
    assert sorted(KINDS.values()) == HOOK_NAMES
    for kind, default_name in [("experts", "ffn"), ("objectives", "mlm"), ("datasets", "coco_captions")]:
        entry = get_registry(kind).entry(default_name)
        assert entry.plugin.builtin and entry.plugin.module.startswith("vlbeit_keras.default_plugins.")


def test_entry_point_plugin_is_discovered_from_its_distribution(site, monkeypatch):
    site("vlbeit-fake-expert", "1.2", {"fake_relu": "fake_relu_plugin"},
         {"fake_relu_plugin.py": expert_plugin_source("relu_ffn", "ReluExpertA", "fake_relu_a")})
    m = fresh_manager(["fake_relu"], monkeypatch)
    entry = m.registry("experts").entry("relu_ffn")
    assert entry.obj.__name__ == "ReluExpertA"
    assert (entry.plugin.name, entry.plugin.module, entry.plugin.distribution) == (
        "fake_relu", "fake_relu_plugin", "vlbeit-fake-expert 1.2")
    assert "ffn" in m.registry("experts")  # built-ins unaffected
    assert m.failures == []


def test_loading_order_builtins_then_entry_points_by_name(site, monkeypatch):
    for name in ("zeta", "alpha", "mid"):
        site(f"vlbeit-order-{name}", "0.1", {f"order_{name}": f"order_{name}_plugin"},
             {f"order_{name}_plugin.py": f"""
                 from vlbeit_keras import hookimpl
                 CALLS = []

                 @hookimpl
                 def register_checkpoint_converters(register):
                     register("conv_{name}", print)
             """})
    m = fresh_manager(["order_zeta", "order_alpha", "order_mid"], monkeypatch)
    names = [p.name for p in m.plugins()]
    assert names == [*DEFAULT_PLUGINS, "order_alpha", "order_mid", "order_zeta"]


def test_plugin_package_imported_before_the_manager_loads_is_deferred(site, monkeypatch):
    # A user imports the plugin package first; the package imports vlbeit_keras,
    # whose loading finds the package half-initialised: the plugin is loaded on
    # the next registry lookup instead of failing.
    site("vlbeit-deferred", "0.3", {"deferred": "deferred_pkg.plugin"}, {
        "deferred_pkg/__init__.py": """
            import builtins
            builtins._vlbeit_test_manager.load()   # stands for `import vlbeit_keras`
            from deferred_pkg.parts import LATE
        """,
        "deferred_pkg/parts.py": "LATE = object()\n",
        "deferred_pkg/plugin.py": """
            from vlbeit_keras import hookimpl
            from deferred_pkg.parts import LATE

            @hookimpl
            def register_checkpoint_converters(register):
                register("late", LATE)
        """,
    })
    monkeypatch.setenv(LOAD_ENV, "deferred")
    m = PluginManager()
    monkeypatch.setattr("builtins._vlbeit_test_manager", m, raising=False)
    import deferred_pkg

    assert m.registry("checkpoint_converters").get("late") is deferred_pkg.LATE
    assert m.failures == []
    assert [p.name for p in m.plugins()][-1] == "deferred"


# ---------------------------------------------------------------------------
# Errors


def test_duplicate_name_across_distributions_names_both_plugins(site, monkeypatch):
    for suffix in ("one", "two"):
        site(f"vlbeit-dup-{suffix}", "2.0", {f"dup_{suffix}": f"dup_{suffix}_plugin"},
             {f"dup_{suffix}_plugin.py": expert_plugin_source("dup_ffn", f"Dup{suffix.title()}", f"dup_{suffix}")})
    monkeypatch.setenv(LOAD_ENV, "dup_one,dup_two")
    with pytest.warns(RuntimeWarning, match="experts registry is unusable"):
        m = PluginManager()
        m.load()
    with pytest.raises(DuplicateRegistrationError) as info:
        m.registry("experts")
    message = str(info.value)
    for text in ("'dup_ffn'", "plugin 'dup_one'", "module dup_one_plugin", "distribution vlbeit-dup-one 2.0",
                 "plugin 'dup_two'", "module dup_two_plugin", "distribution vlbeit-dup-two 2.0", LOAD_ENV):
        assert text in message, (text, message)
    assert (info.value.first.name, info.value.second.name) == ("dup_one", "dup_two")
    assert "mlm" in m.registry("objectives")  # other registries still work
    summary = m.summary()
    assert "dup_ffn" in summary["errors"]["experts"]
    assert {e["name"] for e in summary["registries"]["experts"]} >= {"ffn", "dup_ffn"}


def test_duplicate_of_a_builtin_at_runtime_raises_and_leaves_nothing():
    plugin = types.SimpleNamespace()

    @hookimpl
    def register_experts(register):
        register("ffn", object)

    plugin.register_experts = register_experts
    with pytest.raises(DuplicateRegistrationError) as info:
        manager.register_plugin(plugin, "shadow_ffn", distribution="my-notebook 0")
    message = str(info.value)
    assert "plugin 'vlbeit_keras.default_plugins.experts'" in message
    assert f"distribution {BUILTIN_DISTRIBUTION}" in message
    assert "plugin 'shadow_ffn'" in message and "distribution my-notebook 0" in message
    assert "shadow_ffn" not in [p.name for p in manager.plugins()]
    assert get_registry("experts").entry("ffn").plugin.builtin


def test_unknown_names_list_the_known_ones(tiny_config):
    with pytest.raises(UnknownNameError, match=r"Unknown experts name 'moe'\. Known experts: .*ffn"):
        get_registry("experts").get("moe")
    with pytest.raises(KeyError):  # also a KeyError and a ValueError
        get_registry("objectives").get("itc")
    with pytest.raises(UnknownNameError, match="Known kinds: experts, objectives, heads"):
        get_registry("optimizers")
    with pytest.raises(UnknownNameError, match="Known experts: .*ffn"):
        vlbeit_keras.VLBEiTBackbone(**{**tiny_config, "expert_type": "moe"})
    backbone = vlbeit_keras.VLBEiTBackbone(**tiny_config)
    with pytest.raises(UnknownNameError, match="Known objectives: .*mlm.*mvlm"):
        vlbeit_keras.VLBEiTPretrainer(backbone, objectives=("mlm", "itc"))


def test_broken_plugin_is_reported_with_its_traceback_and_builtins_work(site, monkeypatch):
    site("vlbeit-broken", "0.9", {"broken": "broken_plugin"}, {"broken_plugin.py": """
        import definitely_missing_dependency_xyz  # the original error
    """})
    monkeypatch.setenv(LOAD_ENV, "broken")
    with pytest.warns(RuntimeWarning) as record:
        m = PluginManager()
        m.load()
    [failure] = m.failures
    assert (failure.name, failure.distribution, failure.stage) == ("broken", "vlbeit-broken 0.9", "import")
    assert "broken_plugin.py" in failure.traceback
    assert "import definitely_missing_dependency_xyz" in failure.traceback
    assert failure.summary == "ModuleNotFoundError: No module named 'definitely_missing_dependency_xyz'"
    warned = str(record[0].message)
    assert "'broken' (vlbeit-broken 0.9) failed during import" in warned and "broken_plugin.py" in warned
    # Built-ins are intact and usable.
    assert m.registry("experts").names()[:1] == ["ffn"] and "mvlm" in m.registry("objectives")


def test_a_raising_hook_contributes_nothing_and_is_reported(site, monkeypatch):
    site("vlbeit-half", "0.1", {"half": "half_plugin"}, {"half_plugin.py": """
        from vlbeit_keras import hookimpl

        @hookimpl
        def register_checkpoint_converters(register):
            register("half_ok", print)

        @hookimpl
        def register_visual_tokenizers(register):
            register("half_partial", print)
            raise RuntimeError("codebook file missing")
    """})
    monkeypatch.setenv(LOAD_ENV, "half")
    with pytest.warns(RuntimeWarning, match="failed during register_visual_tokenizers"):
        m = PluginManager()
        m.load()
    assert "half_ok" in m.registry("checkpoint_converters")
    assert "half_partial" not in m.registry("visual_tokenizers")
    [failure] = m.failures
    assert failure.stage == "register_visual_tokenizers"
    assert "RuntimeError: codebook file missing" in failure.traceback


def test_a_misspelt_hook_is_rejected_not_ignored(site, monkeypatch):
    site("vlbeit-typo", "0.1", {"typo": "typo_plugin"}, {"typo_plugin.py": """
        from vlbeit_keras import hookimpl

        @hookimpl
        def register_expert(register):
            register("never", print)
    """})
    monkeypatch.setenv(LOAD_ENV, "typo")
    with pytest.warns(RuntimeWarning):
        m = fresh_manager()
    [failure] = m.failures
    assert failure.stage == "validate"
    assert "unknown hook(s) ['register_expert']" in failure.traceback
    assert "typo" not in [p.name for p in m.plugins()]


def test_invalid_registered_name_is_a_plugin_error():
    plugin = types.SimpleNamespace()

    @hookimpl
    def register_datasets(register):
        register("", print)

    plugin.register_datasets = register_datasets
    with pytest.raises(PluginError, match="invalid name ''"):
        manager.register_plugin(plugin, "empty_name")
    assert "empty_name" not in [p.name for p in manager.plugins()]


# ---------------------------------------------------------------------------
# Environment switches


@pytest.fixture
def two_plugins(site):
    for name in ("env_a", "env_b"):
        site(f"vlbeit-{name}", "0.1", {name: f"{name}_plugin"}, {f"{name}_plugin.py": f"""
            from vlbeit_keras import hookimpl

            @hookimpl
            def register_checkpoint_converters(register):
                register("{name}_converter", print)
        """})


def _converters(m):
    return {n for n in m.registry("checkpoint_converters").names() if n.startswith("env_")}


@pytest.mark.parametrize("value, loaded", [
    ("1", set()), ("true", set()), ("YES", set()), ("0", {"env_a_converter", "env_b_converter"}),
    ("", {"env_a_converter", "env_b_converter"}),
])
def test_disable_autoload(two_plugins, monkeypatch, value, loaded):
    monkeypatch.setenv(DISABLE_ENV, value)
    m = fresh_manager()
    assert _converters(m) == loaded
    assert "ffn" in m.registry("experts")  # built-ins always load


@pytest.mark.parametrize("value, loaded", [
    ("env_a", {"env_a_converter"}),
    (" env_b , nonexistent ", {"env_b_converter"}),
    ("env_a,env_b", {"env_a_converter", "env_b_converter"}),
    ("", set()),
])
def test_allow_list(two_plugins, monkeypatch, value, loaded):
    monkeypatch.setenv(LOAD_ENV, value)
    m = fresh_manager()
    assert _converters(m) == loaded
    assert "mlm" in m.registry("objectives")


def test_disable_wins_over_allow_list(two_plugins, monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, "1")
    monkeypatch.setenv(LOAD_ENV, "env_a")
    assert _converters(fresh_manager()) == set()


# ---------------------------------------------------------------------------
# One test per hook (datasette style): register through the hook, use the part
# the way the host does.


@pytest.fixture
def runtime_plugin():
    """Register a throwaway plugin on the package manager; always unregistered."""
    names = []

    def register(hooks, name):
        plugin = types.SimpleNamespace(**{f.__name__: f for f in hooks})
        manager.register_plugin(plugin, name, distribution="tests")
        names.append(name)
        return plugin

    yield register
    loaded = {p.name for p in manager.plugins()}
    for name in names:
        if name in loaded:
            manager.unregister_plugin(name)


def test_hook_register_experts(runtime_plugin, tiny_config, rng):
    from vlbeit_keras.layers.feed_forward_expert import FeedForwardExpert

    class ZeroExpert(FeedForwardExpert):
        def call(self, x, training=None):
            return super().call(x) * 0.0

    @hookimpl
    def register_experts(register):
        register("zero_ffn", ZeroExpert)

    runtime_plugin([register_experts], "zero_plugin")
    backbone = vlbeit_keras.VLBEiTBackbone(**{**tiny_config, "expert_type": "zero_ffn"})
    block = backbone.transformer.blocks[0]
    assert isinstance(block.mlp_text, ZeroExpert) and isinstance(block.mlp_imag, ZeroExpert)
    x = rng.normal(size=(1, 3, 32)).astype("float32")
    assert np.allclose(keras.ops.convert_to_numpy(block.mlp_text(x)), 0.0)


def test_hook_register_objectives(runtime_plugin, rng):
    from tests.helpers.pretraining import synthetic_batch
    from vlbeit_keras.objectives.base import PretrainingObjective

    class TextLength(PretrainingObjective):
        """Regress nothing: loss = mean squared [T_CLS] state (exercises the contract)."""

        stream = "text"
        metric_names = ("loss",)

        def call(self, pretrainer, inputs, training=False):
            out = pretrainer.backbone.encode_text(inputs["token_ids"], inputs["padding_mask"], training=training)
            return {"cls": out["text_cls_output"]}

        def compute_loss(self, pretrainer, inputs, predictions):
            return {"loss": keras.ops.mean(keras.ops.square(keras.ops.cast(predictions["cls"], "float32")))}

    @hookimpl
    def register_objectives(register):
        register("cls_energy", TextLength)

    runtime_plugin([register_objectives], "cls_energy_plugin")
    backbone = vlbeit_keras.VLBEiTBackbone.from_preset("vlbeit_tiny", load_weights=False)
    pretrainer = vlbeit_keras.VLBEiTPretrainer(backbone, objectives=("mlm", "cls_energy"))
    pretrainer.compile(run_eagerly=True)
    logs = pretrainer.train_on_batch(synthetic_batch(backbone, rng), return_dict=True)
    assert set(logs) == {"loss", "mlm_loss", "mlm_accuracy", "cls_energy_loss"}
    assert logs["loss"] == pytest.approx(logs["mlm_loss"] + logs["cls_energy_loss"], rel=1e-5)


def test_hook_register_heads(runtime_plugin):
    task = types.SimpleNamespace(name="caption_length", model_cls=keras.Model)

    @hookimpl
    def register_heads(register):
        register("caption_length", task)

    runtime_plugin([register_heads], "caption_length_plugin")
    entry = get_registry("heads").entry("caption_length")
    assert entry.obj is task and entry.plugin.name == "caption_length_plugin"
    assert entry.object_path == "SimpleNamespace(keras.src.models.model.Model)"


def test_hook_register_datasets(runtime_plugin, tmp_path):
    from vlbeit_keras.data.readers import read_dataset

    def read_lines(path, strict=False, report=None):
        return [{"text": line, "source": f"{path}:{i + 1}"}
                for i, line in enumerate(open(path).read().splitlines())]

    @hookimpl
    def register_datasets(register):
        register("plain_lines", read_lines)

    runtime_plugin([register_datasets], "plain_lines_plugin")
    path = tmp_path / "corpus.txt"
    path.write_text("a cat\na dog\n")
    records = read_dataset("plain_lines", path=str(path))
    assert [r["text"] for r in records] == ["a cat", "a dog"]


def test_hook_register_visual_tokenizers(runtime_plugin, rng):
    from tests.helpers.pretraining import PatchIntensityTokenizer
    from tests.helpers.pretraining import synthetic_batch

    @hookimpl
    def register_visual_tokenizers(register):
        register("patch_intensity", PatchIntensityTokenizer)

    runtime_plugin([register_visual_tokenizers], "patch_intensity_plugin")
    tokenizer_cls = get_registry("visual_tokenizers").get("patch_intensity")
    backbone = vlbeit_keras.VLBEiTBackbone.from_preset("vlbeit_tiny", load_weights=False)
    pretrainer = vlbeit_keras.VLBEiTPretrainer(
        backbone, objectives=("mim",), visual_tokenizer=tokenizer_cls(8, codebook_size=16))
    out = pretrainer(synthetic_batch(backbone, rng))
    assert tuple(out["mim"]["logits"].shape)[-1] == 16


def test_hook_register_checkpoint_converters(runtime_plugin, tmp_path, tiny_config, rng, capsys):
    from vlbeit_keras.converters import CheckpointConverter
    from vlbeit_keras.converters import CheckpointError
    from vlbeit_keras.converters import Conversion

    class PathNpzConverter(CheckpointConverter):
        """Toy format: an .npz of our own weights keyed by variable path."""

        name = "path_npz"
        description = "variable path -> array"

        def convert(self, state_dict, *, preset=None, overrides=None, tasks=None, **options):
            backbone = vlbeit_keras.VLBEiTBackbone(**{**tiny_config, **(overrides or {})})
            missing = [v.path for v in backbone.weights if v.path not in state_dict]
            if missing:
                raise CheckpointError(f"missing keys: {missing[:3]}")
            for v in backbone.weights:
                v.assign(state_dict[v.path])
            return Conversion(backbone=backbone, tasks={}, extras={}, source=self.name,
                              report={"source": self.name, "num_keys": len(state_dict),
                                      "num_converted_keys": len(backbone.weights),
                                      "backbone_config": backbone.get_config()})

    @hookimpl
    def register_checkpoint_converters(register):
        register("path_npz", PathNpzConverter)

    runtime_plugin([register_checkpoint_converters], "path_npz_plugin")
    source = vlbeit_keras.VLBEiTBackbone(**tiny_config)
    for v in source.weights:
        v.assign(rng.normal(size=v.shape).astype("float32") * 0.02)
    np.savez(tmp_path / "ckpt.npz", **{v.path: keras.ops.convert_to_numpy(v) for v in source.weights})
    # The registered name works in the real command.
    status = cli_main(["convert", "--from", "path_npz", str(tmp_path / "ckpt.npz"), "--out", str(tmp_path / "out")])
    assert status == 0, capsys.readouterr()
    converted = vlbeit_keras.VLBEiTBackbone.from_preset(str(tmp_path / "out"))
    for a, b in zip(source.weights, converted.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_runtime_plugins_are_unregistered_cleanly(runtime_plugin):
    @hookimpl
    def register_checkpoint_converters(register):
        register("temporary", print)

    runtime_plugin([register_checkpoint_converters], "temporary_plugin")
    assert "temporary" in get_registry("checkpoint_converters")
    manager.unregister_plugin("temporary_plugin")
    assert "temporary" not in get_registry("checkpoint_converters")
    with pytest.raises(PluginError, match="already loaded"):
        manager.register_plugin(types.SimpleNamespace(), DEFAULT_PLUGINS[0])
    with pytest.raises(UnknownNameError, match="Loaded plugins: vlbeit_keras.default_plugins.experts"):
        manager.unregister_plugin("temporary_plugin")


# ---------------------------------------------------------------------------
# Hooks have tests and documentation (datasette style)


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_every_hook_has_a_test(hook):
    assert callable(globals().get(f"test_hook_{hook}")), f"no test_hook_{hook} in {__file__}"


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_every_hook_is_documented(hook):
    spec = getattr(manager.pm.hook, hook).spec
    assert spec is not None and (spec.function.__doc__ or "").strip(), f"{hook} has no docstring"
    text = DOCS.read_text()
    signature = f"{hook}({', '.join(spec.argnames)})"
    match = re.search(rf"^### `{re.escape(signature)}`$(.*?)(?=^### |^## |\Z)", text, re.M | re.S)
    assert match, f"docs/plugins.md has no '### `{signature}`' section"
    section = match.group(1)
    assert "Called" in section and "register(" in section, f"{hook}: say when it is called and what register takes"
    for arg in spec.argnames:
        assert f"`{arg}" in section


def test_docs_name_every_environment_variable_and_example_package():
    text = DOCS.read_text()
    for needle in (DISABLE_ENV, LOAD_ENV, "plugins/vlbeit-swiglu", "plugins/vlbeit-mae-pixel",
                   "plugins/vlbeit-snli-ve", "[project.entry-points.vlbeit_keras]", "python -m vlbeit_keras plugins"):
        assert needle in text, needle


# ---------------------------------------------------------------------------
# The listing command


def test_cli_lists_every_kind_with_its_plugin(capsys):
    assert cli_main(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["registries"]) == set(KINDS)
    ffn = next(e for e in data["registries"]["experts"] if e["name"] == "ffn")
    assert ffn == {
        "name": "ffn",
        "object": "vlbeit_keras.layers.feed_forward_expert.FeedForwardExpert",
        "plugin": "vlbeit_keras.default_plugins.experts",
        "distribution": BUILTIN_DISTRIBUTION,
        "module": "vlbeit_keras.default_plugins.experts",
    }
    assert [p["name"] for p in data["plugins"]][: len(DEFAULT_PLUGINS)] == list(DEFAULT_PLUGINS)
    assert cli_main(["plugins", "--kind", "objectives"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("Pretraining objectives (register_objectives):")
    assert re.search(r"^  mvlm +vlbeit_keras\.objectives\.masked_modeling\.MaskedVisionLanguageModeling +"
                     r"vlbeit_keras\.default_plugins\.objectives", text, re.M)
    assert "Failed plugins:" in text and "Experts" not in text


def test_cli_in_a_fresh_process_shows_entry_point_plugins_and_failures(site):
    site("vlbeit-cli-good", "3.1", {"cli_good": "cli_good_plugin"},
         {"cli_good_plugin.py": expert_plugin_source("cli_relu", "CliRelu", "cli_good")})
    site("vlbeit-cli-bad", "0.0.1", {"cli_bad": "cli_bad_plugin"},
         {"cli_bad_plugin.py": "raise ImportError('needs libfoo')\n"})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site.root), str(REPO)]),
               **{LOAD_ENV: "cli_good,cli_bad"})
    cmd = [sys.executable, "-m", "vlbeit_keras", "plugins"]
    result = subprocess.run([*cmd, "--json", "--strict"], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]  # --strict: a plugin failed
    data = json.loads(result.stdout)
    relu = next(e for e in data["registries"]["experts"] if e["name"] == "cli_relu")
    assert relu == {"name": "cli_relu", "object": "cli_good_plugin.CliRelu", "plugin": "cli_good",
                    "distribution": "vlbeit-cli-good 3.1", "module": "cli_good_plugin"}
    [failure] = data["failures"]
    assert failure["name"] == "cli_bad" and failure["stage"] == "import"
    assert failure["summary"] == "ImportError: needs libfoo"
    result = subprocess.run([*cmd, "--tracebacks"], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"^  cli_relu +cli_good_plugin\.CliRelu +cli_good +vlbeit-cli-good 3\.1 +cli_good_plugin$",
                     result.stdout, re.M), result.stdout
    assert "cli_bad (vlbeit-cli-bad 0.0.1) failed during import: ImportError: needs libfoo" in result.stdout
    assert "cli_bad_plugin.py" in result.stdout  # the original traceback


def test_cli_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as info:
        cli_main(["--help"])
    assert info.value.code == 0
    assert "plugins" in capsys.readouterr().out


# ---------------------------------------------------------------------------
# Plugins load before Keras deserialization


def test_load_model_in_a_fresh_process_needs_only_import_vlbeit_keras(site, tmp_path, rng, tiny_config):
    """A `.keras` file of a backbone using an entry-point expert loads in a new
    process after `import vlbeit_keras` alone (the plugin package is never
    imported by the script); without that import Keras cannot find the classes."""
    site("vlbeit-fresh", "1.0", {"fresh_expert": "fresh_expert_plugin"},
         {"fresh_expert_plugin.py": expert_plugin_source("fresh_relu", "FreshRelu", "fresh_expert")})
    # Here the plugin module is registered at runtime to build and save the model.
    import fresh_expert_plugin

    manager.register_plugin(fresh_expert_plugin, "fresh_runtime")
    try:
        backbone = vlbeit_keras.VLBEiTBackbone(**{**tiny_config, "expert_type": "fresh_relu"})
    finally:
        manager.unregister_plugin("fresh_runtime")
    images = rng.uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    want = keras.ops.convert_to_numpy(backbone.encode_image(images)["image_cls_output"])
    path = tmp_path / "relu_backbone.keras"
    backbone.save(path)
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "want.npy", want)
    script = f"""
import sys, numpy as np, keras
{{imports}}
model = keras.saving.load_model({str(path)!r})
assert "fresh_expert_plugin" in sys.modules  # loaded through its entry point, not by this script
assert type(model.transformer.blocks[0].mlp_text).__name__ == "FreshRelu"
got = keras.ops.convert_to_numpy(model.encode_image(np.load({str(tmp_path / 'images.npy')!r}))["image_cls_output"])
np.testing.assert_allclose(got, np.load({str(tmp_path / 'want.npy')!r}), rtol=1e-5, atol=1e-5)
print("LOADED")
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site.root), str(REPO)]), **{LOAD_ENV: "fresh_expert"})
    ok = subprocess.run([sys.executable, "-c", script.replace("{imports}", "import vlbeit_keras")],
                        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and "LOADED" in ok.stdout, ok.stderr[-3000:]
    bare = subprocess.run([sys.executable, "-c", script.replace("{imports}", "")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert bare.returncode != 0 and "VLBEiTBackbone" in bare.stderr, bare.stderr[-3000:]
