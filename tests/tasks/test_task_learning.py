"""Sanity of the whole training path: a task model learns a visual rule."""

import keras
import numpy as np

from vlbeit_keras.tasks.image_text_classification import VLBEiTImageTextClassifier
from vlbeit_keras.tasks.optimization import finetune_optimizer


def test_classifier_learns_a_visual_rule(tiny_backbone, rng, pair_inputs):
    # Label = which colour fills the image; the text is random noise, so only
    # the image path can solve it.
    n = 64
    x = pair_inputs(rng, n)
    labels = rng.integers(0, 2, n)
    colours = np.where(labels[:, None, None, None] == 1, [0.8, -0.6, 0.1], [-0.6, 0.8, 0.1])
    x["images"] = (colours + rng.normal(0, 0.3, x["images"].shape)).astype("float32")
    model = VLBEiTImageTextClassifier(tiny_backbone, num_classes=2)
    model.compile(optimizer=finetune_optimizer(model, learning_rate=2e-3, head_multiplier=5.0))
    before = model.evaluate(x, labels, verbose=0, return_dict=True)["accuracy"]
    model.fit(x, labels, batch_size=16, epochs=8, verbose=0)
    after = model.evaluate(x, labels, verbose=0, return_dict=True)
    assert after["accuracy"] >= 0.95, (before, after)
    assert after["loss"] < 0.3
