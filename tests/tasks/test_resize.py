"""Resolution change of pretrained weights (MODEL_SPEC §4.3)."""

import keras
import numpy as np
import pytest
from scipy.interpolate import make_interp_spline

from vlbeit_keras.models.vlbeit_backbone import VLBEiTBackbone
from vlbeit_keras.utils import resize

TABLE = "transformer/relative_position_bias/relative_position_bias_table"


def _independent_resize(grid, dst_shape):
    """Tensor-product not-a-knot cubic interpolation (scipy make_interp_spline,
    axis by axis) on the BEiT geometric grid, targets clamped to the source
    range: an independent route to the same interpolant."""
    rows, rows_t = resize.beit_geometric_offsets(grid.shape[0], dst_shape[0])
    cols, cols_t = resize.beit_geometric_offsets(grid.shape[1], dst_shape[1])
    rows_t = np.clip(rows_t, rows[0], rows[-1])
    cols_t = np.clip(cols_t, cols[0], cols[-1])
    tmp = make_interp_spline(rows, grid, k=3, axis=0)(rows_t)
    return make_interp_spline(cols, tmp, k=3, axis=1)(cols_t)


def test_beit_ratio_for_224_to_384():
    # BEiT's run_class_finetuning.py notes q = 1.090307 for 14x14 -> 24x24.
    assert resize.beit_geometric_ratio(13, 23) == pytest.approx(1.090307, abs=1e-6)
    src, dst = resize.beit_geometric_offsets(27, 47)
    assert src[0] == -src[-1] and src[13] == 0 and src[-1] == pytest.approx(23, abs=1e-4)
    assert dst.tolist() == list(range(-23, 24))


@pytest.mark.parametrize("src, dst", [((7, 7), (11, 11)), ((7, 9), (9, 13)), ((27, 27), (47, 47)),
                                      ((11, 49), (11, 29))])
def test_grid_matches_independent_spline(src, dst):
    grid = np.random.default_rng(0).normal(size=src)
    ours = resize.resize_relative_offset_grid(grid, dst)
    assert ours.shape == dst
    np.testing.assert_allclose(ours, _independent_resize(grid, dst), atol=1e-9, rtol=0)


def test_axis_order_is_rows_then_columns():
    # A bias varying only along the row-offset axis must stay constant along columns.
    rows, _ = resize.beit_geometric_offsets(7, 9)
    grid = np.repeat((rows ** 2)[:, None], 11, axis=1)
    out = resize.resize_relative_offset_grid(grid, (9, 15))
    assert np.ptp(out, axis=1).max() < 1e-12
    assert np.ptp(out[:, 0]) > 1.0


def test_cubic_polynomials_are_reproduced():
    rows, rows_t = resize.beit_geometric_offsets(7, 9)
    cols, cols_t = resize.beit_geometric_offsets(9, 13)

    def f(y, x):
        return 1 + 2 * y - 0.5 * x + 0.25 * x * y + 0.1 * y ** 3

    out = resize.resize_relative_offset_grid(f(rows[:, None], cols[None, :]), (9, 13))
    rows_t = np.clip(rows_t, rows[0], rows[-1])
    cols_t = np.clip(cols_t, cols[0], cols[-1])
    np.testing.assert_allclose(out, f(rows_t[:, None], cols_t[None, :]), atol=1e-10)


def test_table_keeps_cls_cross_modal_and_text_rows():
    l0, heads = 8, 6
    m_src, m_dst = 7 * 7, 11 * 11
    table = np.random.default_rng(1).normal(size=(m_src + 2 * l0 + 5, heads))
    out = resize.resize_relative_position_bias_table(table, (4, 4), (6, 6), l0)
    assert out.shape == (m_dst + 2 * l0 + 5, heads)
    np.testing.assert_array_equal(out[m_dst:], table[m_src:])
    for c in range(heads):
        np.testing.assert_allclose(
            out[:m_dst, c].reshape(11, 11),
            _independent_resize(table[:m_src, c].reshape(7, 7), (11, 11)), atol=1e-9)
    np.testing.assert_array_equal(resize.resize_relative_position_bias_table(table, (4, 4), (4, 4), l0), table)
    with pytest.raises(ValueError, match="rows"):
        resize.resize_relative_position_bias_table(table[:-1], (4, 4), (6, 6), l0)


def test_absolute_table_matches_torch_bicubic():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    table = rng.normal(size=(5 * 7 + 1, 8))
    out = resize.resize_absolute_position_embeddings(table, (5, 7), (9, 4))
    patches = torch.tensor(table[1:].reshape(5, 7, 8).transpose(2, 0, 1)[None])
    ref = torch.nn.functional.interpolate(patches, size=(9, 4), mode="bicubic", align_corners=False)
    np.testing.assert_allclose(out[1:].reshape(9, 4, 8), ref[0].numpy().transpose(1, 2, 0), atol=1e-12)
    np.testing.assert_array_equal(out[0], table[0])


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def test_rebuild_backbone_resizes_table_and_keeps_text_path(tiny_backbone, rng):
    table = tiny_backbone.transformer.relative_position_bias.relative_position_bias_table
    table.assign(rng.normal(size=table.shape).astype("float32"))
    bigger = resize.rebuild_backbone(tiny_backbone, image_size=(48, 64))  # 4x4 -> 6x8 grid
    assert bigger.grid_size == (6, 8)
    new_table = _numpy(bigger.transformer.relative_position_bias.relative_position_bias_table)
    expected = resize.resize_relative_position_bias_table(_numpy(table), (4, 4), (6, 8), 8)
    np.testing.assert_allclose(new_table, expected.astype("float32"), atol=1e-6)
    tokens = rng.integers(5, 100, (2, 8)).astype("int32")
    mask = np.ones((2, 8), "int32")
    a = _numpy(tiny_backbone.encode_text(tokens, mask)["text_sequence_output"])
    b = _numpy(bigger.encode_text(tokens, mask)["text_sequence_output"])
    np.testing.assert_allclose(a, b, atol=1e-6)
    images = rng.uniform(-1, 1, (2, 48, 64, 3)).astype("float32")
    out = bigger({"token_ids": tokens, "padding_mask": mask, "images": images})
    assert out["image_sequence_output"].shape == (2, 49, 32)
    same = resize.rebuild_backbone(tiny_backbone)
    small_images = images[:, :32, :32]
    np.testing.assert_allclose(
        _numpy(tiny_backbone.encode_image(small_images)["image_sequence_output"]),
        _numpy(same.encode_image(small_images)["image_sequence_output"]), atol=1e-6)


def test_rebuild_backbone_adds_modality_row_copied_from_image_row(tiny_backbone):
    three = resize.rebuild_backbone(tiny_backbone, num_modality_types=3)
    rows = _numpy(three.modality_type_embeddings.embeddings)
    src = _numpy(tiny_backbone.modality_type_embeddings.embeddings)
    np.testing.assert_array_equal(rows[:2], src)
    np.testing.assert_array_equal(rows[2], src[1])


def test_absolute_position_backbone_resizes_pos_embed(tiny_config):
    config = dict(tiny_config, position_mode="absolute")
    backbone = VLBEiTBackbone(**config)
    bigger = resize.rebuild_backbone(backbone, image_size=(40, 24))
    src = _numpy(backbone.patch_embed.pos_embed)
    np.testing.assert_allclose(
        _numpy(bigger.patch_embed.pos_embed),
        resize.resize_absolute_position_embeddings(src, (4, 4), (5, 3)).astype("float32"), atol=1e-6)


def test_incompatible_architectures_and_unknown_methods_raise(tiny_backbone, tiny_config):
    other = VLBEiTBackbone(**dict(tiny_config, num_heads=4))
    with pytest.raises(ValueError, match="num_heads"):
        resize.load_backbone_weights_resized(tiny_backbone, other)
    with pytest.raises(ValueError, match="resize method"):
        resize.rebuild_backbone(tiny_backbone, method="bilinear", image_size=48)


def test_source_can_be_a_preset_directory(tiny_backbone, tmp_path, tiny_config):
    tiny_backbone.save_to_preset(str(tmp_path / "preset"))
    target = VLBEiTBackbone(**dict(tiny_config, image_size=48))
    report = resize.load_backbone_weights_resized(str(tmp_path / "preset"), target)
    assert TABLE in report["resized"] and not report["missing"]


def test_source_can_be_a_mapping_with_its_config(tiny_backbone, tiny_config):
    arrays = {v.path: _numpy(v) for v in tiny_backbone.weights}
    target = VLBEiTBackbone(**dict(tiny_config, image_size=(32, 48)))
    with pytest.raises(ValueError, match="source_config"):
        resize.load_backbone_weights_resized(arrays, target)
    report = resize.load_backbone_weights_resized(arrays, target, source_config=tiny_config)
    assert report["resized"] == [TABLE]
    np.testing.assert_array_equal(_numpy(target.pooler.kernel), arrays["pooler/kernel"])
