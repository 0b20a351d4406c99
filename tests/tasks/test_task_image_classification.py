"""Vision-only image classifier."""

import numpy as np
import pytest

from vlbeit_keras.tasks import image_classification as ic


def test_head_pools_patches_without_cls(tiny_backbone, rng, to_numpy):
    model = ic.VLBEiTImageClassifier(tiny_backbone, num_classes=4)
    images = rng.uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    tokens = to_numpy(tiny_backbone.encode_image(images)["image_sequence_output"])
    pooled = tokens[:, 1:].mean(1)
    normed = (pooled - pooled.mean(-1, keepdims=True)) / np.sqrt(pooled.var(-1, keepdims=True) + 1e-6)
    normed = normed * to_numpy(model.fc_norm.gamma) + to_numpy(model.fc_norm.beta)
    expected = normed @ to_numpy(model.head.kernel) + to_numpy(model.head.bias)
    np.testing.assert_allclose(to_numpy(model(images)), expected, atol=1e-6)
    np.testing.assert_allclose(to_numpy(model({"images": images})), expected, atol=1e-6)
    assert model.fc_norm.epsilon == 1e-6


def test_head_kernel_is_scaled_down(tiny_config):
    from vlbeit_keras.models.vlbeit_backbone import VLBEiTBackbone

    backbone = VLBEiTBackbone(**dict(tiny_config, hidden_dim=64, num_heads=2, intermediate_dim=64))
    model = ic.VLBEiTImageClassifier(backbone, num_classes=500)
    kernel = np.asarray(model.head.kernel.numpy())
    # The backbone's initializer_range x 0.001; truncated normal std ~0.88 sigma.
    assert kernel.std() == pytest.approx(backbone.initializer_range * 0.001 * 0.88, rel=0.1)
    assert np.abs(kernel).max() <= 2 * backbone.initializer_range * 0.001 + 1e-12
    assert not np.asarray(model.head.bias.numpy()).any()


def test_layer_decay_optimizer_is_default(tiny_backbone):
    model = ic.build_model(tiny_backbone, num_classes=3, layer_decay=0.5)
    multipliers = model.optimizer.multipliers
    assert multipliers["patch_embed/proj/kernel"] == pytest.approx(0.5 ** 3)
    assert multipliers["transformer/blocks_0/attn/qkv/kernel"] == pytest.approx(0.5 ** 2)
    assert multipliers["transformer/blocks_1/attn/qkv/kernel"] == pytest.approx(0.5)
    assert "head/kernel" not in multipliers and "transformer/norm/gamma" not in multipliers


def test_labels_are_validated(image_config, rng):
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="record 1: field 'label'"):
        ic.make_dataset([{"image": image, "label": 0}, {"image": image, "label": 7}],
                        image_config=image_config, batch_size=2, num_classes=3)
