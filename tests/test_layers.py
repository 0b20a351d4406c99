"""Layer-level tests: relative-position indices, attention masking, experts, block routing."""

import keras
import numpy as np
import pytest
from keras import ops

from vlbeit_keras.layers import FeedForwardExpert
from vlbeit_keras.layers import MoMEBlock
from vlbeit_keras.layers import MultiHeadSelfAttention
from vlbeit_keras.layers import RelativePositionBias
from vlbeit_keras.layers.relative_position_bias import image_relative_position_index


def np_(x):
    return ops.convert_to_numpy(x)


def test_relative_index_matches_official_vlmo(shared):
    out = np.load(shared("fixtures", "vlmo_reference", "config_a", "outputs.npz"))
    rpb = RelativePositionBias(num_heads=4, num_layers=4, grid_size=(4, 4), relative_text_length=196)
    assert rpb.num_rows == 446
    np.testing.assert_array_equal(rpb.index("image"), out["relative_position_index"])
    np.testing.assert_array_equal(rpb.index("text", 8), out["text_relative_position_index"])
    np.testing.assert_array_equal(
        rpb.index("image_text", 8), out["text_imag_relative_position_index"]
    )


def test_relative_table_rows_for_base_resolution():
    rpb = RelativePositionBias(num_heads=12, num_layers=12, grid_size=(14, 14), relative_text_length=196)
    assert (rpb.num_image_offsets, rpb.num_image_rows, rpb.num_rows) == (729, 732, 1126)


def test_non_square_grid_index_rule():
    # 400x96 NLVR images with patch 16 -> 6 rows x 25 columns.
    hp, wp = 6, 25
    index = image_relative_position_index((hp, wp))
    n = hp * wp
    assert index.shape == (n + 1, n + 1)
    m = (2 * hp - 1) * (2 * wp - 1)
    patch = index[1:, 1:]
    assert patch.min() == 0 and patch.max() == m - 1
    # Query minus key: patch (r1, c1) -> (r2, c2).
    r1, c1, r2, c2 = 5, 24, 0, 3
    i, j = r1 * wp + c1, r2 * wp + c2
    assert patch[i, j] == (r1 - r2 + hp - 1) * (2 * wp - 1) + (c1 - c2 + wp - 1)
    # Every distinct offset gets its own row; equal offsets share it.
    assert len(np.unique(patch)) == m
    assert index[0, 1:].tolist() == [m] * n and index[1:, 0].tolist() == [m + 1] * n
    assert index[0, 0] == m + 2


def test_relative_bias_layout_per_layer():
    rpb = RelativePositionBias(num_heads=2, num_layers=3, grid_size=(2, 3), relative_text_length=5)
    rpb.build()
    table = np.arange(rpb.num_rows * 6, dtype="float32").reshape(rpb.num_rows, 6)
    rpb.relative_position_bias_table.assign(table)
    bias = np_(rpb.bias("image_text", 4))  # (layers, heads, T+N+1, T+N+1)
    index = rpb.index("image_text", 4)
    assert bias.shape == (3, 2, 4 + 7, 4 + 7)
    for layer in range(3):
        for head in range(2):
            np.testing.assert_array_equal(bias[layer, head], table[index, layer * 2 + head])


def test_text_longer_than_table_raises():
    rpb = RelativePositionBias(num_heads=2, num_layers=1, grid_size=(2, 2), relative_text_length=6)
    with pytest.raises(ValueError, match="relative_text_length=6"):
        rpb.index("text", 7)


def test_attention_fully_masked_row_is_finite_and_masks_keys(rng):
    attn = MultiHeadSelfAttention(hidden_dim=8, num_heads=2)
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], bool)
    out = np_(attn(x, padding_mask=mask))
    assert np.isfinite(out).all()
    # Changing a masked key's content does not change the output of row 0.
    x2 = x.copy()
    x2[0, 3:] += 10.0
    out2 = np_(attn(x2, padding_mask=mask))
    np.testing.assert_allclose(out2[0, :3], out[0, :3], atol=1e-6)


def test_attention_softmax_in_float32_under_mixed_precision(rng):
    attn = MultiHeadSelfAttention(hidden_dim=8, num_heads=2, dtype="mixed_bfloat16")
    x = rng.normal(size=(1, 4, 8)).astype("float32")
    out = attn(ops.cast(x, "bfloat16"), attention_bias=np.zeros((2, 4, 4), "float32"))
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    assert attn.q_bias.dtype == "float32"
    assert np.isfinite(np_(ops.cast(out, "float32"))).all()


def test_feed_forward_expert_uses_exact_gelu_and_eps(rng):
    expert = FeedForwardExpert(hidden_dim=4, intermediate_dim=8)
    x = rng.normal(size=(1, 3, 4)).astype("float32")
    y = np_(expert(x))
    assert expert.norm.epsilon == 1e-6
    n = np_(expert.norm(x))
    h = n @ np_(expert.fc1.kernel) + np_(expert.fc1.bias)
    from scipy.special import erf

    h = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)))
    expected = h @ np_(expert.fc2.kernel) + np_(expert.fc2.bias)
    np.testing.assert_allclose(y, expected, atol=1e-5)


def _perturb(layer, scale=1.0):
    for v in layer.trainable_weights:
        v.assign(v + scale)


@pytest.mark.parametrize("expert_slot, changed, unchanged", [("image", "image", "text"), ("text", "text", "image")])
def test_split_route_sends_text_and_image_positions_to_their_experts(rng, expert_slot, changed, unchanged):
    block = MoMEBlock(hidden_dim=8, num_heads=2, intermediate_dim=16, has_vl_expert=False)
    t, n = 3, 5
    x = rng.normal(size=(2, t + n, 8)).astype("float32")
    before = np_(block(x, route="split", num_image_tokens=n))
    _perturb(block.expert(expert_slot))
    after = np_(block(x, route="split", num_image_tokens=n))
    parts = {"text": slice(0, t), "image": slice(t, t + n)}
    assert np.abs(after[:, parts[changed]] - before[:, parts[changed]]).max() > 1e-3
    np.testing.assert_array_equal(after[:, parts[unchanged]], before[:, parts[unchanged]])


def test_vl_route_needs_a_vl_expert(rng):
    block = MoMEBlock(hidden_dim=8, num_heads=2, intermediate_dim=16, has_vl_expert=False)
    with pytest.raises(ValueError, match="VL-FFN"):
        block(rng.normal(size=(1, 3, 8)).astype("float32"), route="vl")


def test_drop_path_is_per_sample_and_off_in_inference(rng):
    block = MoMEBlock(hidden_dim=8, num_heads=2, intermediate_dim=16, drop_path_rate=0.5)
    x = rng.normal(size=(64, 3, 8)).astype("float32")
    eval_out = np_(block(x, route="text", training=False))
    np.testing.assert_array_equal(eval_out, np_(block(x, route="text", training=False)))
    train_out = np_(block(x, route="text", training=True))
    assert not np.allclose(train_out, eval_out)
