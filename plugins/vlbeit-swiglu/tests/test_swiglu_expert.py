"""Tests of the vlbeit-swiglu plugin (run by `make test` from the repository root,
or `pytest plugins/vlbeit-swiglu` after `pip install -e plugins/vlbeit-swiglu`)."""

import importlib.metadata

import keras
import numpy as np
import pytest

# Not installed: every test fails with the setup command (a collection error
# would stop the whole session; a skip would hide the missing package).
MISSING = None
try:
    importlib.metadata.distribution("vlbeit-swiglu")
    import vlbeit_swiglu
    from vlbeit_swiglu import SwiGLUExpert
    from vlbeit_swiglu import swiglu_hidden_dim
except (ImportError, importlib.metadata.PackageNotFoundError) as exc:  # pragma: no cover
    MISSING = (
        f"vlbeit-swiglu is not installed ({exc}); run the README setup (`make setup`, "
        "or `pip install -e plugins/vlbeit-swiglu`)."
    )

import vlbeit_keras


@pytest.fixture(autouse=True)
def _seed():
    if MISSING:
        pytest.fail(MISSING, pytrace=False)
    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")


@pytest.mark.parametrize(
    "intermediate, expected", [(3072, 2048), (4096, 2736), (64, 48), (12, 8), (2048, 1368)]
)
def test_hidden_width_is_two_thirds_rounded_up_to_8(intermediate, expected):
    assert swiglu_hidden_dim(intermediate) == expected


def test_hidden_width_bad_arguments():
    with pytest.raises(ValueError, match="intermediate_dim=0"):
        swiglu_hidden_dim(0)


def test_base_size_has_the_gelu_experts_kernel_parameters():
    # Base: d=768, intermediate 3072: 3 * 768 * 2048 == 2 * 768 * 3072.
    expert = SwiGLUExpert(768, 3072)
    expert.build((None, None, 768))
    kernels = sum(int(np.prod(w.shape)) for w in expert.weights if w.path.endswith("kernel"))
    assert kernels == 2 * 768 * 3072


def _np_layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def test_matches_numpy_swiglu():
    rng = np.random.default_rng(0)
    expert = SwiGLUExpert(8, 12, layer_norm_epsilon=1e-6)
    expert.build((None, None, 8))
    for w in expert.weights:
        w.assign(rng.normal(size=w.shape).astype("float32") * 0.5 + (1.0 if w.path.endswith("gamma") else 0.0))
    x = rng.normal(size=(2, 3, 8)).astype("float32")
    got = keras.ops.convert_to_numpy(expert(x))

    def get(layer, name):
        return keras.ops.convert_to_numpy(getattr(layer, name))

    n = _np_layer_norm(x, get(expert.norm, "gamma"), get(expert.norm, "beta"), 1e-6)
    g = n @ get(expert.fc1_g, "kernel") + get(expert.fc1_g, "bias")
    v = n @ get(expert.fc1_x, "kernel") + get(expert.fc1_x, "bias")
    silu = g / (1.0 + np.exp(-g))
    want = (silu * v) @ get(expert.fc2, "kernel") + get(expert.fc2, "bias")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert got.shape == x.shape


def test_no_bias_option_and_sublayer_names():
    expert = SwiGLUExpert(16, 64, use_bias=False)
    expert.build((None, None, 16))
    assert sorted(w.path.split("/", 1)[1] for w in expert.weights) == [
        "fc1_g/kernel", "fc1_x/kernel", "fc2/kernel", "norm/beta", "norm/gamma",
    ]


def test_registered_through_the_entry_point():
    entry = vlbeit_keras.get_registry("experts").entry("swiglu")
    assert entry.obj is SwiGLUExpert
    assert entry.plugin.name == "swiglu"
    assert entry.plugin.module == "vlbeit_swiglu.plugin"
    assert entry.plugin.distribution == f"vlbeit-swiglu {vlbeit_swiglu.__version__}"


def test_backbone_uses_swiglu_in_every_expert_slot():
    backbone = vlbeit_keras.VLBEiTBackbone.from_preset(
        "vlbeit_tiny", load_weights=False, expert_type="swiglu"
    )
    experts = [
        block.expert(slot)
        for block in backbone.transformer.blocks
        for slot in block.expert_slots
    ]
    assert len(experts) == 5  # 2 layers x (text, image) + 1 VL-FFN
    assert all(isinstance(e, SwiGLUExpert) and e.swiglu_dim == 48 for e in experts)
    out = backbone.encode_image(np.zeros((2, 32, 32, 3), "float32"))
    assert tuple(out["image_sequence_output"].shape) == (2, 17, 32)
    assert backbone.get_config()["expert_type"] == "swiglu"


def test_config_round_trip():
    expert = SwiGLUExpert(16, 64, layer_norm_epsilon=1e-5, multiple_of=16, use_bias=False, name="e")
    config = expert.get_config()
    again = SwiGLUExpert.from_config(config)
    assert again.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(expert))
    assert type(restored) is SwiGLUExpert and restored.get_config() == config


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision(policy):
    expert = SwiGLUExpert(16, 64, dtype=policy)
    y = expert(np.ones((1, 2, 16), "float32"))
    assert keras.backend.standardize_dtype(y.dtype) == keras.DTypePolicy(policy).compute_dtype
    assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in expert.weights)
    assert all(layer.dtype_policy.name == policy for layer in (expert.norm, expert.fc1_g, expert.fc1_x, expert.fc2))
