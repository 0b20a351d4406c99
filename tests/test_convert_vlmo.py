"""VLMo checkpoint conversion: parity with the official code (API and CLI),
round trips, the full VLMo-Base key sets, .pt loading, resizing, and errors
that name the file/key and leave no output behind."""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import ops

import vlbeit_keras
from tests.conftest import REPO
from tests.conftest import shared_path
from tests.helpers.vlmo_state_dicts import random_state_dict
from vlbeit_keras.cli import main as cli_main
from vlbeit_keras.converters import CheckpointError
from vlbeit_keras.converters import Conversion
from vlbeit_keras.converters import convert_checkpoint
from vlbeit_keras.converters import export_checkpoint
from vlbeit_keras.converters import get_converter
from vlbeit_keras.converters import load_conversion
from vlbeit_keras.converters import load_task
from vlbeit_keras.converters import read_state_dict
from vlbeit_keras.converters.parity import OUTPUT_SOURCES
from vlbeit_keras.converters.parity import vlmo_outputs
from vlbeit_keras.converters.vlmo import VLMoConverter
from vlbeit_keras.plugins import get_registry
from vlbeit_keras.utils import resize

FIXTURE = ("fixtures", "vlmo_reference", "config_a")
KEY_FILES = {
    "base": ("fixtures", "vlmo_reference", "vlmo_base_keys.json"),
    "large": ("fixtures", "vlmo_reference", "vlmo_large_keys.json"),
}
# (layers, heads, VL-FFN layers) of the official constructors.
ARCHS = {"base": (12, 12, 2), "large": (24, 16, 3)}
LAYOUTS = ("pretrain_mlm_itm_itc", "finetune_vqa", "finetune_nlvr2", "finetune_irtr")
LAYOUT_TASKS = {
    "pretrain_mlm_itm_itc": {"pretraining", "retrieval"},
    "finetune_vqa": {"vqa"},
    "finetune_nlvr2": {"nlvr2"},
    "finetune_irtr": {"retrieval"},
}
# Fixture README: float32 re-implementations match within atol 5e-5; 1e-4 is the bound.
ATOL, RTOL = 1e-4, 1e-5


def np_(x):
    return np.asarray(ops.convert_to_numpy(x))


ALL_OUTPUTS = set(OUTPUT_SOURCES)


def our_outputs(backbone, tasks, extras, inputs):
    """Our arrays under the fixture's output names (all 15 of them)."""
    conversion = Conversion(backbone, tasks, extras, {}, "vlmo")
    out = vlmo_outputs(conversion, inputs["text_ids"], inputs["text_masks"], inputs["image_nhwc"])
    assert set(out) == ALL_OUTPUTS
    return out


def assert_matches_fixture(ours, folder):
    ref = np.load(folder / "outputs.npz")
    worst = {}
    for name, value in ours.items():
        np.testing.assert_allclose(value, ref[name], atol=ATOL, rtol=RTOL, err_msg=name)
        worst[name] = float(np.abs(value - ref[name]).max())
    return worst


@pytest.fixture(scope="module")
def fixture_dir():
    return shared_path(*FIXTURE)


@pytest.fixture(scope="module")
def converted_dir(fixture_dir, tmp_path_factory):
    """The fixture converted through the command line (once per module)."""
    out = tmp_path_factory.mktemp("cli") / "vlmo_config_a"
    status = cli_main(["convert", "--from", "vlmo", str(fixture_dir / "weights.npz"),
                       "--out", str(out)])
    assert status == 0
    return out


_SHRUNK = {}


def shrunk(layout, model="base"):
    """(state dict, conversion) of a proportionally shrunk VLMo layout (cached)."""
    if (model, layout) not in _SHRUNK:
        state = random_state_dict(shared_path(*KEY_FILES[model]), layout, shrink=True)
        _SHRUNK[model, layout] = (state, VLMoConverter().convert(state, source=layout))
    return _SHRUNK[model, layout]


def _load_recipe(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def leftovers(parent, name):
    return [p.name for p in pathlib.Path(parent).iterdir() if p.name.startswith(f".{name}.")]


# ---------------------------------------------------------------------------
# Parity with the official VLMo outputs
def test_api_conversion_matches_official_outputs(fixture_dir):
    converter = get_converter("vlmo")
    conversion = converter.convert(converter.read_checkpoint(fixture_dir / "weights.npz"))
    report = conversion.report
    assert set(conversion.tasks) == {"pretraining", "retrieval"}
    assert report["unexpected"] == [] and report["ignored"] == []
    assert set(report["unused"]) == {
        "itc_vl_text_proj.fc.weight", "itc_vl_image_proj.fc.weight", "logit_vl_scale",
        "text_embeddings.position_embeddings.weight",
    }
    assert report["source_config"] == {
        "vocabulary_size": 100, "num_layers": 4, "hidden_dim": 64, "intermediate_dim": 256,
        "num_vl_layers": 2, "patch_size": 16, "num_modality_types": 2, "layerscale_init": 0.1,
        "position_mode": "relative", "num_heads": 4, "relative_text_length": 196,
        "image_size": [64, 64], "max_text_length": 8,
    }
    ours = our_outputs(conversion.backbone, conversion.tasks, conversion.extras,
                       np.load(fixture_dir / "inputs.npz"))
    assert_matches_fixture(ours, fixture_dir)
    # Epsilons are below what the output tolerance resolves (fixture README): check them.
    assert conversion.tasks["pretraining"].mlm_head._intermediate_layer_norm.epsilon == 1e-12
    assert conversion.backbone.transformer.norm.epsilon == 1e-6


def test_cli_conversion_matches_official_outputs(converted_dir, fixture_dir):
    files = sorted(p.name for p in converted_dir.iterdir())
    assert files == sorted([
        "config.json", "metadata.json", "model.weights.h5", "conversion.json",
        "task_pretraining.json", "task_pretraining.weights.h5",
        "task_retrieval.json", "task_retrieval.weights.h5", "vlmo_unmapped.npz",
    ])
    backbone = vlbeit_keras.VLBEiTBackbone.from_preset(str(converted_dir))
    tasks = {name: load_task(converted_dir, name, backbone=backbone)
             for name in ("pretraining", "retrieval")}
    assert type(tasks["pretraining"]).__name__ == "VLBEiTPretrainer"
    assert tasks["retrieval"].use_itm
    extras = dict(np.load(converted_dir / "vlmo_unmapped.npz"))
    ours = our_outputs(backbone, tasks, extras, np.load(fixture_dir / "inputs.npz"))
    assert_matches_fixture(ours, fixture_dir)
    # The verification recipe reads the same folder.
    recipe = _load_recipe("verify_vlmo_parity")
    assert recipe.main([str(converted_dir), str(fixture_dir)]) == 0
    # A task loaded on its own brings its own backbone with the same weights.
    alone = load_task(converted_dir, "retrieval")
    for a, b in zip(alone.backbone.weights, backbone.weights):
        np.testing.assert_array_equal(np_(a), np_(b))


def test_export_round_trip_is_identical(converted_dir, fixture_dir, tmp_path):
    original = dict(np.load(fixture_dir / "weights.npz"))
    out = tmp_path / "roundtrip.npz"
    assert cli_main(["export", "--to", "vlmo", str(converted_dir), "--out", str(out)]) == 0
    exported = dict(np.load(out))
    assert set(exported) == set(original) | {"text_embeddings.position_ids"}
    for key, value in original.items():
        assert exported[key].dtype == value.dtype, key
        np.testing.assert_array_equal(exported[key], value, err_msg=key)
    np.testing.assert_array_equal(exported["text_embeddings.position_ids"], np.arange(8)[None])
    # Existing output is kept unless --overwrite.
    assert cli_main(["export", "--to", "vlmo", str(converted_dir), "--out", str(out)]) == 1
    # .pt export reads back through torch.load(weights_only=True).
    pt = tmp_path / "roundtrip.pt"
    export_checkpoint(converted_dir, pt, tasks=["retrieval"])
    again = read_state_dict(pt)
    assert "mlm_score.bias" not in again and "itm_score.fc.weight" in again
    for key in ("relative_position_bias_table", "itc_text_proj.fc.weight", "logit_scale",
                "transformer.blocks.3.mlp_vl.fc2.weight"):
        np.testing.assert_array_equal(again[key], original[key], err_msg=key)


# ---------------------------------------------------------------------------
# The full VLMo-Base (and -Large) key sets
def _check_layout(layout, state, conversion, model="base"):
    report = conversion.report
    assert set(conversion.tasks) == LAYOUT_TASKS[layout]
    assert report["unexpected"] == []
    assert report["ignored"] == ["text_embeddings.position_ids"]
    expected_unused = {"text_embeddings.position_embeddings.weight"}
    if layout == "pretrain_mlm_itm_itc":
        expected_unused |= {"itc_vl_text_proj.fc.weight", "itc_vl_image_proj.fc.weight",
                            "logit_vl_scale"}
    assert set(report["unused"]) == expected_unused
    config = conversion.backbone.get_config()
    assert (config["num_layers"], config["num_heads"], config["num_vl_layers"]) == ARCHS[model]
    assert (config["image_size"], config["patch_size"]) == ([224, 224], 16)
    assert (config["max_text_length"], config["relative_text_length"]) == (40, 196)
    assert config["num_modality_types"] == (3 if layout == "finetune_nlvr2" else 2)
    if layout == "finetune_irtr":
        assert not conversion.tasks["retrieval"].use_itm
    # Export gives back every key exactly (buffers regenerated, same values here).
    exported = VLMoConverter().export(conversion)
    assert set(exported) == set(state)
    for key, value in state.items():
        np.testing.assert_array_equal(exported[key], value, err_msg=key)


@pytest.mark.parametrize("model", ("base", "large"))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_shrunk_official_key_sets_convert_and_round_trip(layout, model):
    """Every official key name, every dimension shrunk (d 768 -> 24, 1024 -> 32, ...)."""
    state, conversion = shrunk(layout, model)
    _check_layout(layout, state, conversion, model)


# Backbone parameters of the conversion (VLMo's count minus its unused 40 x d text table).
FULL_PARAMS = {("base", False): 175990368, ("base", True): 175991136, ("large", False): 562553088}


@pytest.mark.large
@pytest.mark.parametrize("model, layout", [("base", layout) for layout in LAYOUTS]
                         + [("large", "pretrain_mlm_itm_itc")])
def test_full_official_key_sets_convert_and_round_trip(model, layout):
    state = random_state_dict(shared_path(*KEY_FILES[model]), layout)
    conversion = VLMoConverter().convert(state, source=layout)
    assert conversion.backbone.count_params() == FULL_PARAMS[model, layout == "finetune_nlvr2"]
    _check_layout(layout, state, conversion, model)


def _mlp_head(x, state, prefix):
    """VLMo's nn.Sequential(Linear, LayerNorm(eps 1e-5), GELU(erf), Linear) in NumPy."""
    from scipy.special import erf

    h = x @ state[f"{prefix}.0.weight"].T + state[f"{prefix}.0.bias"]
    mu, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
    h = (h - mu) / np.sqrt(var + 1e-5) * state[f"{prefix}.1.weight"] + state[f"{prefix}.1.bias"]
    h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
    return h @ state[f"{prefix}.3.weight"].T + state[f"{prefix}.3.bias"]


@pytest.mark.parametrize("layout", ("finetune_vqa", "finetune_nlvr2"))
def test_classifier_heads_compute_vlmo_formula(layout, rng):
    state, conversion = shrunk(layout)
    backbone = conversion.backbone
    model = conversion.tasks["vqa" if layout == "finetune_vqa" else "nlvr2"]
    t = backbone.max_text_length
    ids = rng.integers(5, backbone.vocabulary_size, (2, t)).astype("int32")
    mask = np.ones((2, t), "int32")
    mask[1, 10:] = 0
    images = rng.uniform(-1, 1, (2, 2, 224, 224, 3)).astype("float32")
    if layout == "finetune_vqa":
        logits = np_(model({"token_ids": ids, "padding_mask": mask, "images": images[:, 0]}))
        pooled = np_(backbone({"token_ids": ids, "padding_mask": mask, "images": images[:, 0]})["pooled_output"])
        expected = _mlp_head(pooled, state, "vqa_classifier")
        assert logits.shape == (2, 7)
    else:
        logits = np_(model({"token_ids": ids, "padding_mask": mask, "images": images}))
        pooled = [np_(backbone.encode_image_text(ids, mask, images[:, k], image_modality_type=k + 1)
                      ["pooled_output"]) for k in (0, 1)]
        expected = _mlp_head(np.concatenate(pooled, -1), state, "nlvr2_classifier")
        assert logits.shape == (2, 2)
        np.testing.assert_array_equal(np_(backbone.modality_type_embeddings.embeddings),
                                      state["token_type_embeddings.weight"])
    np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=1e-4)


def test_vqa_and_nlvr2_folders_load_back(tmp_path, rng):
    # VQA through the command line, with VLMo's answer2label dictionary.
    state, _ = shrunk("finetune_vqa")
    answers = {f"answer {i}": i for i in (3, 0, 6, 1, 5, 2, 4)}
    (tmp_path / "answer2label.json").write_text(json.dumps(answers))
    out = tmp_path / "vqa"
    assert cli_main(["convert", str(_npz(tmp_path / "vqa.npz", state)), "--out", str(out),
                     "--answer-vocabulary", str(tmp_path / "answer2label.json")]) == 0
    vqa = load_task(out)
    assert vqa.answer_vocabulary == [f"answer {i}" for i in range(7)]
    np.testing.assert_array_equal(np_(vqa.classifier.fc2.kernel), state["vqa_classifier.3.weight"].T)
    bad = tmp_path / "short.json"
    bad.write_text(json.dumps(["yes", "no"]))
    assert cli_main(["convert", str(tmp_path / "vqa.npz"), "--out", str(tmp_path / "vqa2"),
                     "--answer-vocabulary", str(bad)]) == 1
    assert not (tmp_path / "vqa2").exists()
    # NLVR2 through save_conversion: 3 modality rows and the head survive the folder.
    state, conversion = shrunk("finetune_nlvr2")
    vlbeit_keras.converters.save_conversion(conversion, tmp_path / "nlvr2")
    model = load_task(tmp_path / "nlvr2", "nlvr2")
    assert model.backbone.num_modality_types == 3
    t = model.backbone.max_text_length
    inputs = {"token_ids": rng.integers(5, 50, (1, t)).astype("int32"),
              "padding_mask": np.ones((1, t), "int32"),
              "images": rng.uniform(-1, 1, (1, 2, 224, 224, 3)).astype("float32")}
    np.testing.assert_allclose(np_(model(inputs)), np_(conversion.tasks["nlvr2"](inputs)), atol=1e-6)


# ---------------------------------------------------------------------------
# Reading files
def test_reads_torch_files_nested_and_prefixed(tmp_path):
    torch = pytest.importorskip("torch")
    state, _ = shrunk("finetune_irtr")
    tensors = {k: torch.from_numpy(v) for k, v in state.items()}
    variants = {
        "plain.pt": tensors,
        "lightning.ckpt": {"epoch": 3, "global_step": 10, "state_dict": tensors},
        "model_module.pth": {"model": {f"module.{k}": v for k, v in tensors.items()}},
        "module.bin": {"module": {"state_dict": tensors}, "args": [1, 2]},
    }
    for name, obj in variants.items():
        torch.save(obj, tmp_path / name)
        loaded = read_state_dict(tmp_path / name)
        assert set(loaded) == set(state), name
        for key, value in state.items():
            np.testing.assert_array_equal(loaded[key], value, err_msg=f"{name}: {key}")
        assert loaded["text_embeddings.position_ids"].dtype == np.int64
    # Half precision is widened to float32.
    torch.save({k: (v.half() if v.is_floating_point() else v) for k, v in tensors.items()},
               tmp_path / "half.pt")
    half = read_state_dict(tmp_path / "half.pt")
    assert half["pooler.dense.weight"].dtype == np.float32
    # End to end: a Lightning-style .ckpt through the command line.
    out = tmp_path / "converted"
    assert cli_main(["convert", str(tmp_path / "lightning.ckpt"), "--out", str(out),
                     "--task", "retrieval"]) == 0
    model = load_task(out)
    np.testing.assert_array_equal(np_(model.itc_text_proj.kernel), state["itc_text_proj.fc.weight"].T)
    assert json.loads((out / "conversion.json").read_text())["source_file"].endswith("lightning.ckpt")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_torch_load_runs_no_code(tmp_path):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "payload": _Exploit(str(marker))},
               tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"evil\.pt.*weights_only"):
        read_state_dict(tmp_path / "evil.pt")
    assert not marker.exists()


@pytest.mark.parametrize("suffix", (".npz", ".pt"))
def test_truncated_checkpoint_fails_and_writes_nothing(suffix, tmp_path, capsys):
    state, _ = shrunk("finetune_irtr")
    path = tmp_path / f"weights{suffix}"
    if suffix == ".npz":
        np.savez(path, **state)
    else:
        torch = pytest.importorskip("torch")
        torch.save({k: torch.from_numpy(v) for k, v in state.items()}, path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    out = tmp_path / "out"
    assert cli_main(["convert", "--from", "vlmo", str(path), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"weights{suffix}" in err and ("truncated" in err or "corrupt" in err)
    assert not out.exists() and leftovers(tmp_path, "out") == []


def test_mismatched_shape_names_the_key_and_writes_nothing(tmp_path, capsys):
    state, _ = shrunk("finetune_vqa")
    state = dict(state)
    state["transformer.blocks.7.mlp_imag.fc1.weight"] = np.zeros((95, 24), "float32")
    path = tmp_path / "bad.npz"
    np.savez(path, **state)
    out = tmp_path / "out"
    assert cli_main(["convert", str(path), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "transformer.blocks.7.mlp_imag.fc1.weight" in err and "(95, 24)" in err and "(96, 24)" in err
    assert not out.exists() and leftovers(tmp_path, "out") == []


def test_missing_and_unexpected_keys_are_named(tmp_path):
    state, _ = shrunk("finetune_irtr")
    missing = {k: v for k, v in state.items() if k != "transformer.blocks.4.attn.proj.bias"}
    with pytest.raises(CheckpointError, match=r"transformer\.blocks\.4\.attn\.proj\.bias"):
        VLMoConverter().convert(missing)
    incomplete = {k: v for k, v in state.items() if k != "logit_scale"}
    with pytest.raises(CheckpointError, match=r"retrieval head is incomplete.*logit_scale"):
        VLMoConverter().convert(incomplete)
    extra = {**state, "decoder.extra.weight": np.ones(3, "float32")}
    with pytest.raises(CheckpointError, match=r"unexpected key.*decoder\.extra\.weight"):
        VLMoConverter().convert(extra)
    with pytest.raises(CheckpointError, match=r"task 'vqa'.*vqa_classifier\.0\.weight"):
        VLMoConverter().convert(state, tasks=["vqa"])
    # Kept, reported and exported again when allowed.
    out = tmp_path / "out"
    conversion = convert_checkpoint(_npz(tmp_path / "extra.npz", extra), out, allow_unexpected=True)
    assert conversion.report["unexpected"] == ["decoder.extra.weight"]
    back = VLMoConverter().export(load_conversion(out))
    np.testing.assert_array_equal(back["decoder.extra.weight"], np.ones(3))


def _npz(path, arrays):
    np.savez(path, **arrays)
    return path


def test_existing_output_is_kept_unless_overwrite(tmp_path, capsys):
    state, _ = shrunk("finetune_irtr")
    path = _npz(tmp_path / "w.npz", state)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert cli_main(["convert", str(path), "--out", str(out)]) == 1
    assert "exists" in capsys.readouterr().err and (out / "keep.txt").exists()
    assert cli_main(["convert", str(path), "--out", str(out), "--overwrite", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tasks"] == {"retrieval": "VLBEiTRetrieval"}
    assert not (out / "keep.txt").exists() and (out / "config.json").exists()
    assert leftovers(tmp_path, "out") == []


# ---------------------------------------------------------------------------
# Architecture inference, presets, resizing
def test_preset_must_match_the_checkpoint(fixture_dir):
    state = read_state_dict(fixture_dir / "weights.npz")
    with pytest.raises(CheckpointError, match=r"hidden_dim: preset 'vlbeit_tiny' has 32, the checkpoint 64 \(from transformer\.cls_token\)"):
        VLMoConverter().convert(state, preset="vlbeit_tiny")
    with pytest.raises(CheckpointError, match=r"Unknown backbone field.*imagesize"):
        VLMoConverter().convert(state, overrides={"imagesize": 96})


def test_exported_tiny_backbone_converts_back_with_its_preset(tiny_config):
    # L0 = 8 (not 196) and a 4x4 grid of 8-px patches: the preset tells L0.
    backbone = vlbeit_keras.VLBEiTBackbone(**tiny_config)
    rng = np.random.default_rng(1)
    for v in backbone.weights:
        v.assign(rng.normal(size=v.shape).astype("float32"))
    conversion = vlbeit_keras.converters.Conversion(backbone, {}, {}, {}, "vlmo")
    state = VLMoConverter().export(conversion)
    again = VLMoConverter().convert(state, preset="vlbeit_tiny")
    assert again.report["source_config"]["relative_text_length"] == 8
    for a, b in zip(backbone.weights, again.backbone.weights):
        assert a.path == b.path
        np.testing.assert_array_equal(np_(a), np_(b), err_msg=a.path)
    # Without the preset, L0 = 196 does not fit the 70-row table: a clear error.
    assert state["relative_position_bias_table"].shape == (49 + 2 * 8 + 5, 4)
    with pytest.raises(CheckpointError, match=r"70 rows.*--source-image-size"):
        VLMoConverter().convert(state)
    assert VLMoConverter().convert(state, source_relative_text_length=8).backbone.image_size == (32, 32)


def test_absolute_position_checkpoint_round_trip_and_resize(tiny_config):
    # VLMo Base+ layout: absolute image/text positions, no layerscale, no relative table.
    config = dict(tiny_config, position_mode="absolute", layerscale_init=None)
    backbone = vlbeit_keras.VLBEiTBackbone(**config)
    rng = np.random.default_rng(2)
    for v in backbone.weights:
        v.assign(rng.normal(size=v.shape).astype("float32"))
    state = VLMoConverter().export(Conversion(backbone, {}, {}, {}, "vlmo"))
    assert state["transformer.pos_embed"].shape == (1, 17, 32)
    assert not any(k.endswith("gamma_1") for k in state) and "relative_position_bias_table" not in state
    with pytest.raises(CheckpointError, match=r"--set num_heads"):
        VLMoConverter().convert(state)
    again = VLMoConverter().convert(state, overrides={"num_heads": 2})
    assert again.report["source_config"]["layerscale_init"] is None
    for a, b in zip(backbone.weights, again.backbone.weights):
        np.testing.assert_array_equal(np_(a), np_(b), err_msg=a.path)
    # Another resolution resizes the patch rows (bicubic), shorter text keeps the first rows.
    moved = VLMoConverter().convert(state, overrides={"num_heads": 2, "image_size": 48,
                                                      "max_text_length": 6})
    pos = {v.path: np_(v) for v in moved.backbone.weights}
    np.testing.assert_allclose(
        pos["patch_embed/pos_embed"],
        resize.resize_absolute_position_embeddings(state["transformer.pos_embed"][0], (4, 4), (6, 6)),
        atol=1e-6)
    np.testing.assert_array_equal(pos["text_embeddings/position_embeddings/embeddings"],
                                  state["text_embeddings.position_embeddings.weight"][:6])
    with pytest.raises(CheckpointError, match="exceeds the 8 absolute text positions"):
        VLMoConverter().convert(state, overrides={"num_heads": 2, "max_text_length": 9})


def test_non_square_grid_needs_the_image_size():
    # A table made for 400x96 px (25x6 patches, NLVR-style) fits no square grid.
    state, _ = shrunk("finetune_irtr")
    state = dict(state)
    rows = (2 * 25 - 1) * (2 * 6 - 1) + 2 * 196 + 5
    state["relative_position_bias_table"] = np.zeros((rows, 144), "float32")
    with pytest.raises(CheckpointError, match=rf"{rows} rows.*--source-image-size"):
        VLMoConverter().convert(state)
    conversion = VLMoConverter().convert(state, source_image_size=(400, 96))
    assert conversion.backbone.image_size == (400, 96)
    # The target size also disambiguates when it fits the table exactly.
    conversion = VLMoConverter().convert(state, overrides={"image_size": [400, 96]})
    assert conversion.report["resized"] == {}


def test_conversion_at_another_resolution_and_text_length(fixture_dir):
    state = read_state_dict(fixture_dir / "weights.npz")
    converter = VLMoConverter()
    native = converter.convert(state, tasks=[])
    resized = converter.convert(state, tasks=[], overrides={"image_size": 96, "max_text_length": 5})
    backbone = resized.backbone
    assert backbone.image_size == (96, 96) and backbone.max_text_length == 5
    table = "transformer/relative_position_bias/relative_position_bias_table"
    assert set(resized.report["resized"]) == {table}
    ours = {v.path: np_(v) for v in backbone.weights}
    expected = resize.resize_relative_position_bias_table(
        state["relative_position_bias_table"], (4, 4), (6, 6), 196)
    np.testing.assert_allclose(ours[table], expected, atol=1e-6)
    assert ours[table].shape == ((2 * 6 - 1) ** 2 + 2 * 196 + 5, 16)
    # Same as converting natively and resizing with the fine-tuning utility.
    rebuilt = resize.rebuild_backbone(native.backbone, image_size=[96, 96], max_text_length=5)
    for v in rebuilt.weights:
        np.testing.assert_allclose(ours[v.path], np_(v), atol=1e-6, err_msg=v.path)
    # Text rows are untouched: text-only outputs (any length <= L0) still match VLMo.
    inputs = np.load(fixture_dir / "inputs.npz")
    text = backbone.encode_text(inputs["text_ids"].astype("int32"), inputs["text_masks"].astype("int32"))
    np.testing.assert_allclose(np_(text["text_sequence_output"]),
                               np.load(fixture_dir / "outputs.npz")["text_feats"], atol=ATOL, rtol=RTOL)
    # The fused graph takes the new sizes.
    out = backbone({"token_ids": np.ones((1, 5), "int32"), "padding_mask": np.ones((1, 5), "int32"),
                    "images": np.zeros((1, 96, 96, 3), "float32")})
    assert tuple(out["image_sequence_output"].shape) == (1, 37, 64)
    with pytest.raises(ValueError, match="max_text_length"):
        converter.convert(state, tasks=[], overrides={"max_text_length": 197})


# ---------------------------------------------------------------------------
# Registry, export of saved models, import hygiene
def test_vlmo_converter_is_registered():
    assert get_registry("checkpoint_converters").get("vlmo") is VLMoConverter
    assert isinstance(get_converter("vlmo"), VLMoConverter)


def test_export_from_a_keras_file(tmp_path):
    state, conversion = shrunk("finetune_vqa")
    path = tmp_path / "vqa.keras"
    conversion.tasks["vqa"].save(path)
    exported = export_checkpoint(path, tmp_path / "vqa.npz")
    for key in ("vqa_classifier.3.weight", "vqa_classifier.1.bias", "transformer.blocks.11.attn.qkv.weight",
                "relative_position_bias_table", "token_type_embeddings.weight"):
        np.testing.assert_array_equal(exported[key], state[key], err_msg=key)
    # Not in a .keras file: VLMo's unused text position table, exported as zeros.
    assert not exported["text_embeddings.position_embeddings.weight"].any()


def test_import_does_not_load_torch():
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=str(REPO))
    code = ("import sys, vlbeit_keras, vlbeit_keras.converters, vlbeit_keras.cli.convert;"
            "vlbeit_keras.get_registry('checkpoint_converters');"
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "False"
