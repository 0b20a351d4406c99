"""VLBEiTBackbone: parity with official VLMo, cross-backend numerics, routing,
padding invariance, presets, configuration errors and serialization."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import ops

import vlbeit_keras
from tests.conftest import REPO
from tests.helpers.backbone_outputs import encode_all
from vlbeit_keras import VLBEiTBackbone
from vlbeit_keras.converters.vlmo import load_vlmo_state_dict_into_backbone

FIXTURE_CONFIG_A = dict(
    vocabulary_size=100, num_layers=4, num_heads=4, hidden_dim=64, intermediate_dim=256,
    num_vl_layers=2, image_size=64, patch_size=16, max_text_length=8, relative_text_length=196,
)


def np_(x):
    return ops.convert_to_numpy(x)


def tiny_inputs(rng, config, batch=3):
    t = config["max_text_length"]
    lengths = [t, 5, 3][:batch]
    ids = np.zeros((batch, t), "int32")
    mask = np.zeros((batch, t), "int32")
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(5, config["vocabulary_size"], n)
        ids[i, 0], ids[i, n - 1] = 2, 3
        mask[i, :n] = 1
    h, w = (config["image_size"],) * 2 if isinstance(config["image_size"], int) else config["image_size"]
    images = rng.uniform(-1, 1, (batch, h, w, 3)).astype("float32")
    return {"token_ids": ids, "padding_mask": mask, "images": images}


def randomize(backbone, seed=0):
    """Non-default weights so that mistakes show (zero tables, unit norms hide bugs)."""
    rng = np.random.default_rng(seed)
    for v in backbone.weights:
        scale = 0.5 if "relative_position_bias_table" in v.path else 0.1
        base = 1.0 if v.path.endswith("gamma") else 0.0
        v.assign((base + scale * rng.normal(size=v.shape)).astype("float32"))


# ---------------------------------------------------------------- parity
def test_matches_official_vlmo_outputs(shared):
    folder = shared("fixtures", "vlmo_reference", "config_a")
    weights = dict(np.load(folder / "weights.npz"))
    inputs = np.load(folder / "inputs.npz")
    ref = np.load(folder / "outputs.npz")
    backbone = VLBEiTBackbone(**FIXTURE_CONFIG_A)
    load_vlmo_state_dict_into_backbone(backbone, weights)
    ids = inputs["text_ids"].astype("int32")
    mask = inputs["text_masks"].astype("int32")
    images = inputs["image_nhwc"]
    fused = backbone({"token_ids": ids, "padding_mask": mask, "images": images})
    text = backbone.encode_text(ids, mask)
    text_vl = backbone.encode_text(ids, mask, use_vl_expert=True)
    image = backbone.encode_image(images)
    image_vl = backbone.encode_image(images, use_vl_expert=True)
    pairs = {
        "vl_text_feats": fused["text_sequence_output"],
        "vl_image_feats": fused["image_sequence_output"],
        "vl_cls_feats": fused["pooled_output"],
        "text_feats": text["text_sequence_output"],
        "text_vlffn_feats": text_vl["text_sequence_output"],
        "image_feats": image["image_sequence_output"],
        "image_vlffn_feats": image_vl["image_sequence_output"],
    }
    for name, ours in pairs.items():
        # Fixture README: float32 re-implementations match within atol 5e-5.
        np.testing.assert_allclose(np_(ours), ref[name], atol=5e-5, rtol=1e-5, err_msg=name)
    # Layer epsilons are not resolvable by output tolerance alone (README): check them.
    assert backbone.text_embeddings.layer_norm.epsilon == 1e-12
    assert backbone.transformer.norm.epsilon == 1e-6
    assert all(b.norm1.epsilon == 1e-6 for b in backbone.transformer.blocks)
    bias = backbone.transformer.relative_position_bias.bias("image_text", 8)
    np.testing.assert_allclose(np_(bias), ref["vl_relative_position_bias"], atol=1e-6)


def test_same_weights_same_outputs_on_all_backends(tmp_path, tiny_config, rng):
    backbone = VLBEiTBackbone(**tiny_config)
    randomize(backbone)
    inputs = tiny_inputs(rng, tiny_config)
    ours = encode_all(backbone, inputs)
    json.dump(backbone.get_config() | {"name": "b"}, open(tmp_path / "config.json", "w"))
    np.savez(tmp_path / "weights.npz", **{v.path: np_(v) for v in backbone.weights})
    np.savez(tmp_path / "inputs.npz", **inputs)
    current = keras.backend.backend()
    for other in ("tensorflow", "jax", "torch"):
        if other == current:
            continue
        out_path = tmp_path / f"{other}.npz"
        env = dict(os.environ, KERAS_BACKEND=other, PYTHONPATH=str(REPO))
        result = subprocess.run(
            [sys.executable, "-m", "tests.helpers.backbone_outputs", str(tmp_path / "config.json"),
             str(tmp_path / "weights.npz"), str(tmp_path / "inputs.npz"), str(out_path)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        theirs = np.load(out_path)
        assert set(theirs.keys()) == set(ours)
        for key, value in ours.items():
            diff = np.abs(theirs[key] - value).max()
            assert diff <= 1e-5, f"{key}: {current} vs {other} differ by {diff}"


# --------------------------------------------------------------- padding
def test_padding_invariance_text_and_pair(tiny_config, rng):
    backbone = VLBEiTBackbone(**tiny_config)
    randomize(backbone)
    t = tiny_config["max_text_length"]
    ids = np.array([[2, 17, 42, 9, 3]], "int32")
    n = ids.shape[1]
    alone = np_(backbone.encode_text(ids)["text_sequence_output"])
    padded_ids = np.zeros((2, t), "int32")
    padded_ids[0, :n] = ids[0]
    padded_ids[1] = rng.integers(5, 100, t)
    padded_mask = np.zeros((2, t), "int32")
    padded_mask[0, :n] = 1
    padded_mask[1] = 1
    padded = np_(backbone.encode_text(padded_ids, padded_mask)["text_sequence_output"])
    np.testing.assert_allclose(padded[0, :n], alone[0], atol=1e-5)

    # Pair path: the same sentence with different amounts of padding (T fixed for pairs,
    # so compare two padded layouts whose real tokens agree but padding content differs).
    images = rng.uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    ids2 = padded_ids.copy()
    ids2[0, n:] = rng.integers(5, 100, t - n)  # garbage in padded slots
    a = backbone({"token_ids": padded_ids, "padding_mask": padded_mask, "images": images})
    b = backbone({"token_ids": ids2, "padding_mask": padded_mask, "images": images})
    np.testing.assert_allclose(np_(a["text_sequence_output"])[0, :n], np_(b["text_sequence_output"])[0, :n], atol=1e-5)
    np.testing.assert_allclose(np_(a["image_sequence_output"])[0], np_(b["image_sequence_output"])[0], atol=1e-5)
    np.testing.assert_allclose(np_(a["pooled_output"])[0], np_(b["pooled_output"])[0], atol=1e-5)


def test_fully_padded_text_row_is_finite(tiny_config, rng):
    backbone = VLBEiTBackbone(**tiny_config)
    randomize(backbone)
    ids = np.zeros((2, 8), "int32")
    mask = np.zeros((2, 8), "int32")
    mask[1, :3] = 1
    out = backbone.encode_text(ids, mask)
    assert np.isfinite(np_(out["text_sequence_output"])).all()
    fused = backbone({"token_ids": ids, "padding_mask": mask, "images": np.zeros((2, 32, 32, 3), "float32")})
    assert all(np.isfinite(np_(v)).all() for v in fused.values())


# --------------------------------------------------------------- routing
def _snapshot(backbone, inputs):
    return encode_all(backbone, inputs)


def _perturb(layer):
    for v in layer.trainable_weights:
        v.assign(v + 0.5)


def test_v_ffn_changes_image_only_not_text_only(tiny_config, rng):
    backbone = VLBEiTBackbone(**tiny_config)
    randomize(backbone)
    inputs = tiny_inputs(rng, tiny_config)
    before = _snapshot(backbone, inputs)
    for block in backbone.transformer.blocks:
        _perturb(block.mlp_imag)
    after = _snapshot(backbone, inputs)
    assert np.abs(after["image_image_sequence_output"] - before["image_image_sequence_output"]).max() > 1e-3
    np.testing.assert_array_equal(after["text_text_sequence_output"], before["text_text_sequence_output"])


def test_top_layers_use_only_vl_ffn_for_pairs(tiny_config, rng):
    backbone = VLBEiTBackbone(**tiny_config)
    randomize(backbone)
    inputs = tiny_inputs(rng, tiny_config)
    top = backbone.transformer.blocks[-1]
    assert top.has_vl_expert and not backbone.transformer.blocks[0].has_vl_expert
    before = _snapshot(backbone, inputs)
    _perturb(top.mlp_text)
    _perturb(top.mlp_imag)
    mid = _snapshot(backbone, inputs)
    for key in ("fused_text_sequence_output", "fused_image_sequence_output", "fused_pooled_output"):
        np.testing.assert_array_equal(mid[key], before[key])
    _perturb(top.mlp_vl)
    after = _snapshot(backbone, inputs)
    assert np.abs(after["fused_pooled_output"] - mid["fused_pooled_output"]).max() > 1e-3
    # Single-modality encodings never touch the VL-FFN by default.
    np.testing.assert_array_equal(after["text_text_sequence_output"], mid["text_text_sequence_output"])
    np.testing.assert_array_equal(after["image_image_sequence_output"], mid["image_image_sequence_output"])


def test_pair_routes_by_position_below_vl_layers(tiny_config, rng):
    backbone = VLBEiTBackbone(**tiny_config)
    randomize(backbone)
    inputs = tiny_inputs(rng, tiny_config)
    x = backbone.embed_text(inputs["token_ids"])
    img = backbone.embed_image(inputs["images"])
    seq = ops.concatenate([x, img], axis=1)
    mask = np.concatenate([inputs["padding_mask"], np.ones((3, 17), "int32")], 1).astype(bool)
    block0 = backbone.transformer.blocks[0]
    bias = backbone.transformer.relative_position_bias.bias("image_text", 8)[0]
    before = np_(block0(seq, attention_bias=bias, padding_mask=mask, route="split", num_image_tokens=17))
    _perturb(block0.mlp_text)
    after = np_(block0(seq, attention_bias=bias, padding_mask=mask, route="split", num_image_tokens=17))
    assert np.abs(after[:, :8] - before[:, :8]).max() > 1e-3  # text positions -> L-FFN
    np.testing.assert_array_equal(after[:, 8:], before[:, 8:])  # image positions -> V-FFN


def test_shorter_pair_text_still_routes_image_tokens_to_v_ffn(tiny_config, rng):
    # The split is taken from the end (N + 1 image tokens), so a pair whose text is
    # shorter than max_text_length still sends every image token to the V-FFN.
    backbone = VLBEiTBackbone(**tiny_config)
    randomize(backbone)
    ids = np.array([[2, 7, 8, 3, 0]], "int32")
    mask = np.array([[1, 1, 1, 1, 0]], "int32")
    images = rng.uniform(-1, 1, (1, 32, 32, 3)).astype("float32")
    out = backbone.encode_image_text(ids, mask, images)
    assert out["text_sequence_output"].shape == (1, 5, 32)
    assert out["image_sequence_output"].shape == (1, 17, 32)
    assert backbone.transformer.routes("image_text") == ["split", "vl"]


# ---------------------------------------------------------- presets, errors
@pytest.mark.parametrize("preset, layout", [("vlbeit_base", "vlmo_base_keys.json"), ("vlbeit_large", "vlmo_large_keys.json")])
def test_preset_parameter_counts_match_vlmo(shared, preset, layout):
    keys = json.load(open(shared("fixtures", "vlmo_reference", layout)))
    expected = keys["layouts"]["pretrain_mlm_itm_itc"]["param_counts"]["total_parameters_excluding_heads"]
    backbone = VLBEiTBackbone.from_preset(preset, load_weights=False)  # no optimizer state
    count = backbone.count_params()
    assert abs(count - expected) / expected < 0.005, (count, expected)
    # The only difference: VLMo's unused absolute text position table (max_text_len x d).
    assert expected - count == 40 * backbone.hidden_dim


def test_tiny_preset_count_and_presets_listing():
    backbone = VLBEiTBackbone.from_preset("vlbeit_tiny", load_weights=False)
    assert backbone.count_params() == 40_920  # MODEL_SPEC §5
    assert set(vlbeit_keras.BACKBONE_PRESETS) >= {"vlbeit_tiny", "vlbeit_small", "vlbeit_base", "vlbeit_large"}


def test_unknown_preset_and_weights_request_raise():
    with pytest.raises(ValueError, match="Unknown preset 'vlbeit_huge'.*vlbeit_base"):
        VLBEiTBackbone.from_preset("vlbeit_huge", load_weights=False)
    with pytest.raises(ValueError, match="load_weights=False"):
        VLBEiTBackbone.from_preset("vlbeit_tiny")


@pytest.mark.parametrize(
    "override, field",
    [
        ({"image_size": 30}, "image_size"),
        ({"num_heads": 3}, "num_heads"),
        ({"num_vl_layers": 3}, "num_vl_layers"),
        ({"max_text_length": 9}, "max_text_length"),
        ({"position_mode": "rope"}, "position_mode"),
        ({"expert_type": "nope"}, "nope"),
        ({"pooling": "max"}, "pooling"),
        ({"initializer_range": 0.0}, "initializer_range"),
    ],
)
def test_bad_configuration_names_field_and_value(tiny_config, override, field):
    with pytest.raises(ValueError, match=field):
        VLBEiTBackbone(**{**tiny_config, **override})


@pytest.mark.parametrize("pooling", ["cls", "mean", "text_mean"])
def test_pooling_modes(tiny_config, rng, pooling):
    """``cls``: the first row (VLMo); ``mean``: the mean of the real tokens
    (padding excluded); ``text_mean``: the same, but the fused input pools
    its real text rows only; the fused ``pooled_output`` = tanh(Dense(pooled))."""
    backbone = VLBEiTBackbone(**{**tiny_config, "pooling": pooling})
    randomize(backbone)
    x = tiny_inputs(rng, tiny_config)
    mask = x["padding_mask"].astype("float32")[..., None]
    text = backbone.encode_text(x["token_ids"], x["padding_mask"])
    image = backbone.encode_image(x["images"])
    fused = backbone(x)
    seq_t, seq_i = np_(text["text_sequence_output"]), np_(image["image_sequence_output"])
    fused_seq = np.concatenate([np_(fused["text_sequence_output"]), np_(fused["image_sequence_output"])], 1)
    fused_mask = np.concatenate([mask, np.ones((len(mask), seq_i.shape[1], 1), "float32")], 1)
    if pooling == "cls":
        want_t, want_i, want_f = seq_t[:, 0], seq_i[:, 0], fused_seq[:, 0]
    else:
        want_t = (seq_t * mask).sum(1) / mask.sum(1)
        want_i = seq_i.mean(1)
        want_f = (fused_seq * fused_mask).sum(1) / fused_mask.sum(1)
        if pooling == "text_mean":
            text_rows = np_(fused["text_sequence_output"])
            want_f = (text_rows * mask).sum(1) / mask.sum(1)
    np.testing.assert_allclose(np_(text["text_pooled_output"]), want_t, atol=1e-5)
    np.testing.assert_allclose(np_(image["image_pooled_output"]), want_i, atol=1e-5)
    np.testing.assert_allclose(np_(fused["pooled_output"]), np_(backbone.pooler(want_f)), atol=1e-5)
    assert backbone.get_config()["pooling"] == pooling


def test_pooling_defaults():
    """The class default is VLMo's [CLS] pooling (checkpoint parity, configs
    saved before the field existed); the CPU presets use mean pooling, the
    fused input pooling its text rows."""
    from vlbeit_keras.models.presets import BACKBONE_PRESETS

    assert BACKBONE_PRESETS["vlbeit_small"]["config"]["pooling"] == "text_mean"
    assert BACKBONE_PRESETS["vlbeit_tiny"]["config"]["pooling"] == "text_mean"
    assert "pooling" not in BACKBONE_PRESETS["vlbeit_base"]["config"]
    config = dict(BACKBONE_PRESETS["vlbeit_tiny"]["config"])
    del config["pooling"]
    assert VLBEiTBackbone(**config).pooling == "cls"


def test_non_square_images(tiny_config, rng):
    config = {**tiny_config, "image_size": (16, 40)}  # grid 2 x 5
    backbone = VLBEiTBackbone(**config)
    assert backbone.grid_size == (2, 5)
    out = backbone(tiny_inputs(rng, config))
    assert out["image_sequence_output"].shape == (3, 11, 32)


# --------------------------------------------------------- serialization
def test_config_round_trip(tiny_config):
    backbone = VLBEiTBackbone(**tiny_config)
    config = backbone.get_config()
    clone = VLBEiTBackbone.from_config(config)
    assert json.dumps(clone.get_config(), sort_keys=True) == json.dumps(config, sort_keys=True)
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(backbone))
    assert isinstance(revived, VLBEiTBackbone)
    assert revived.get_config() == config


def test_keras_save_load_same_outputs(tmp_path, tiny_config, rng):
    backbone = VLBEiTBackbone(**tiny_config)
    randomize(backbone)
    inputs = tiny_inputs(rng, tiny_config)
    path = tmp_path / "backbone.keras"
    backbone.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, VLBEiTBackbone)
    a, b = encode_all(backbone, inputs), encode_all(restored, inputs)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-6, err_msg=key)


def test_preset_directory_round_trip(tmp_path, tiny_config, rng):
    backbone = VLBEiTBackbone(**tiny_config)
    randomize(backbone)
    backbone.save_to_preset(str(tmp_path / "preset"))
    restored = VLBEiTBackbone.from_preset(str(tmp_path / "preset"))
    inputs = tiny_inputs(rng, tiny_config)
    np.testing.assert_allclose(
        np_(restored(inputs)["pooled_output"]), np_(backbone(inputs)["pooled_output"]), atol=1e-6
    )


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16", "bfloat16"])
def test_dtype_policy_reaches_every_sublayer(tiny_config, rng, policy):
    backbone = VLBEiTBackbone(**tiny_config, dtype=policy)
    compute = keras.DTypePolicy(policy).compute_dtype
    variable = keras.DTypePolicy(policy).variable_dtype
    for layer in backbone._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        assert layer.dtype_policy.name == policy, layer.path
    for v in backbone.weights:
        assert v.dtype == variable, v.path
    out = backbone(tiny_inputs(rng, tiny_config))
    for key, value in out.items():
        assert keras.backend.standardize_dtype(value.dtype) == compute, key
        assert np.isfinite(np_(ops.cast(value, "float32"))).all(), key
