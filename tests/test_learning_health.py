"""Regression tests of the optimisation pathologies of docs/training_health.md:
each runs in seconds on the tiny preset and fails if the mend is undone."""

import math

import keras
import numpy as np
import pytest

from vlbeit_keras.models.presets import BACKBONE_PRESETS
from vlbeit_keras.models.vlbeit_backbone import VLBEiTBackbone
from vlbeit_keras.tasks.retrieval import VLBEiTRetrieval
from vlbeit_keras.training.health import feature_spread

NUM_CONCEPTS = 8


def concept_pairs(rng, config, n):
    """n image-text pairs over 8 concepts: the image is a solid colour plus
    noise, the text names the concept with one word; pairs of one concept
    share an image id (all positives of each other)."""
    concept = rng.integers(0, NUM_CONCEPTS, n)
    palette = np.random.default_rng(7).uniform(-0.9, 0.9, (NUM_CONCEPTS, 3))
    size = config["image_size"]
    images = palette[concept][:, None, None, :] + rng.normal(0, 0.2, (n, size, size, 3))
    t = config["max_text_length"]
    ids = np.zeros((n, t), "int32")
    mask = np.zeros((n, t), "int32")
    ids[:, 0], ids[:, 1], ids[:, 2] = 2, 10 + concept, 3
    mask[:, :3] = 1
    return {"token_ids": ids, "padding_mask": mask, "images": images.astype("float32"),
            "image_ids": concept.astype("int32")}


@pytest.mark.parametrize("preset", ["vlbeit_tiny", "vlbeit_small"])
def test_pooled_features_of_the_presets_vary_with_the_input(preset, rng):
    """MEASURED §1: with [CLS] pooling a fresh backbone's pooled features are
    ~99.99 % one constant vector (spread 0.0007 for text); the presets' mean
    pooling gives every encoding a spread well above the monitor's 0.02."""
    config = dict(BACKBONE_PRESETS[preset]["config"])
    backbone = VLBEiTBackbone(**config)
    x = concept_pairs(rng, config, 16)
    text = backbone.encode_text(x["token_ids"], x["padding_mask"])["text_pooled_output"]
    image = backbone.encode_image(x["images"])["image_pooled_output"]
    fused = backbone.encode_image_text(x["token_ids"], x["padding_mask"], x["images"])["pooled_output"]
    for name, f in (("text", text), ("image", image), ("fused", fused)):
        assert feature_spread(f) > 0.05, (name, feature_spread(f))


def test_contrastive_loss_leaves_ln_batch(tiny_config, rng):
    """ITC from random initialisation must leave ln(B) within a few dozen
    steps (with [CLS] pooling it stayed at ln B for hundreds of steps)."""
    model = VLBEiTRetrieval(VLBEiTBackbone(**tiny_config), use_itm=False)
    model.compile(optimizer=keras.optimizers.AdamW(3e-3, weight_decay=0.01))
    batch = 16
    data = concept_pairs(rng, tiny_config, 40 * batch)
    history = model.fit(data, batch_size=batch, epochs=1, shuffle=False, verbose=0)
    first = model.evaluate(concept_pairs(np.random.default_rng(1), tiny_config, batch),
                           batch_size=batch, verbose=0, return_dict=True)["itc_loss"]
    # The ITC chance value with 8 concepts in a batch of 16 is below ln 16;
    # the trained model must be far below both.
    assert first < 0.6 * math.log(batch), (first, history.history)
