"""Task models under mixed precision: heads follow the backbone's policy."""

import keras
import numpy as np

from vlbeit_keras.models.vlbeit_backbone import VLBEiTBackbone
from vlbeit_keras.tasks.image_classification import VLBEiTImageClassifier
from vlbeit_keras.tasks.retrieval import VLBEiTRetrieval
from vlbeit_keras.tasks.vqa import VLBEiTVQA
from vlbeit_keras.tasks.vqa import VQASoftScoreLoss


def test_mixed_bfloat16(tiny_config, rng, pair_inputs):
    backbone = VLBEiTBackbone(**dict(tiny_config, dtype="mixed_bfloat16"))
    x = pair_inputs(rng, 2)
    vqa = VLBEiTVQA(backbone, num_answers=5)
    logits = vqa.predict_on_batch(x)  # compiled: fast on every backend
    assert keras.backend.standardize_dtype(logits.dtype) == "bfloat16"
    assert all(v.dtype == "float32" for v in vqa.weights)
    loss = VQASoftScoreLoss()(np.zeros((2, 5), "float32"), logits)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    assert np.isfinite(float(keras.ops.convert_to_numpy(loss)))
    retrieval = VLBEiTRetrieval(backbone, seed=0)
    out = retrieval.predict_on_batch(x)
    assert keras.backend.standardize_dtype(out["logits_per_image"].dtype) == "float32"
    assert retrieval.logit_scale.dtype == "float32"
    classifier = VLBEiTImageClassifier(backbone, num_classes=3)
    assert keras.backend.standardize_dtype(
        classifier.predict_on_batch(x["images"]).dtype) == "bfloat16"
    assert classifier.head.dtype_policy.name == "mixed_bfloat16"
